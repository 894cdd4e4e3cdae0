"""Invariants 2, 4 and 5 as a hypothesis property, on the real worker, a real SMTP server and a
real HTTP SMS provider: for any sequence of events, consents, unsubscribes and worker runs,

* no message reaches a person without consent on that channel at send time;
* no frequency cap is exceeded (per channel per day, across channels per week);
* no (campaign, step, person, occasion) is sent twice.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaign_data import customer, store_with_catalog
from concierge import Concierge
from concierge.campaigns import service
from concierge.campaigns.definitions import ContactPolicy
from concierge.campaigns.policy import quiet_until
from concierge.channels.http_provider import HttpProviderConfig
from concierge.channels.sms_http import SmsChannel
from concierge.channels.smtp import SmtpChannel, SmtpConfig
from concierge.clock import FrozenClock, to_us
from concierge.settings import Settings
from delivery_servers import Mailbox, Provider, http_provider, smtp_server

PEOPLE = ["a", "b", "c"]
PHONES = {"a": "+33600000001", "b": "+33600000002", "c": "+33600000003"}
START = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
POLICY = {
    "max_per_day": {"email": 1, "sms": 1, "push": 1, "onsite": 5},
    "max_per_week": 3,
    "quiet_start_hour": 22,
    "quiet_end_hour": 6,
    "learn_frequency": False,
}


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Mailbox, int, Provider, str]]:
    with smtp_server() as (box, port), http_provider() as (prov, url):
        yield box, port, prov, url


def _campaign(cid: str, on: str, channel: str, delay: float, priority: int) -> dict[str, Any]:
    return {
        "campaign_id": cid,
        "kind": "triggered",
        "channel": channel,
        "status": "live",
        "priority": priority,
        "trigger": {"on": on, "delay_minutes": delay, "exit_on": [], "reentry_days": 0},
        "caps": {"per_person": 10, "per_days": 7},
        "template": {
            "subject": "Hi {{ n }}",
            "text": "Hi {{ n }}",
            "variables": {"n": {"source": "traits.first_name", "fallback": "you"}},
        },
    }


person = st.sampled_from(PEOPLE)
channel = st.sampled_from(["email", "sms"])
shopper = st.tuples(st.sampled_from(["add_to_cart", "view", "search"]), person)
wait = st.tuples(st.just("advance"), st.sampled_from([1, 9, 31, 240, 600, 1440]))
ops = st.lists(
    st.one_of(  # shopping and waiting weighted up, so that most runs send something
        st.tuples(st.just("consent"), person, channel, st.booleans()),
        st.tuples(st.just("acknowledged_consent"), person, channel, st.booleans()),
        st.tuples(st.just("unsubscribe"), person, channel),
        shopper,
        shopper,
        shopper,
        wait,
        wait,
        st.tuples(st.just("tick")),
    ),
    min_size=4,
    max_size=40,
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=ops, initial=st.dictionaries(st.tuples(person, channel), st.booleans()))
def test_consent_caps_and_keys_hold_for_any_sequence(
    servers: tuple[Mailbox, int, Provider, str],
    steps: list[tuple[Any, ...]],
    initial: dict[tuple[str, str], bool],
) -> None:
    box, port, prov, url = servers
    mail0, sms0 = len(box.messages), len(prov.posts)
    clock = FrozenClock(START)
    tmp = Path(tempfile.mkdtemp())
    cg = Concierge(settings=Settings(database_url=f"sqlite:///{tmp / 's.db'}"), clock=clock)
    try:
        store_with_catalog(cg)
        consent: dict[tuple[str, str], bool] = {}
        for p in PEOPLE:
            cg.ingest(customer(p, clock, phone=PHONES[p], consent=()))
        start = {(p, ch): True for p in PEOPLE for ch in ("email", "sms")} | initial
        cg.ingest(
            [
                {
                    "type": "consent",
                    "customer_id": p,
                    "channel": ch,
                    "granted": g,
                    "timestamp": (clock.now() - timedelta(minutes=5)).isoformat(),
                }
                for (p, ch), g in start.items()
            ]
        )
        consent.update(start)
        cg.set_contact_policy(POLICY)
        cg.save_campaign(_campaign("cart", "cart_abandonment", "email", 30, 1))
        cg.save_campaign(_campaign("browse", "browse_abandonment", "email", 10, 5))
        cg.save_campaign(_campaign("search", "search_abandonment", "sms", 0, 3))
        w = cg.worker(
            {
                "email": SmtpChannel(SmtpConfig(port=port)),
                "sms": SmsChannel(HttpProviderConfig(url, retries=0)),
            }
        )
        sends: list[tuple[datetime, str, str]] = []  # (at, person, channel)
        seen_mail, seen_sms = mail0, sms0
        by_email = {f"{p}@example.com": p for p in PEOPLE}
        by_phone = {v: k for k, v in PHONES.items()}
        n = 0
        # the sequence, then half a day of waiting in steps, so that what is due goes out
        for step in [*steps, *[("advance", 180)] * 4]:
            n += 1
            now = clock.now().isoformat()
            kind = step[0]
            if kind in ("consent", "acknowledged_consent"):
                _, p, ch, granted = step
                ev = {
                    "type": "consent",
                    "event_id": f"e{n:04d}",  # ties at one timestamp go by event id
                    "customer_id": p,
                    "channel": ch,
                    "granted": granted,
                    "timestamp": now,
                }
                if kind == "consent":
                    cg.ingest([ev])
                else:  # acknowledged (logged), applied by the worker before it sends
                    cg.append_events(cg.validate_events([ev]))
                consent[(p, ch)] = granted
            elif kind == "unsubscribe":
                _, p, ch = step
                with cg.store.write() as conn:
                    token = service.signer(conn, cg.store).sign(
                        "u", {"k": f"x{n}", "p": p, "c": "cart", "ch": ch}
                    )
                assert cg.track("u", token) is not None
                consent[(p, ch)] = False
            elif kind in ("add_to_cart", "view"):
                cg.ingest(
                    [{"type": kind, "customer_id": step[1], "product_id": "p1", "timestamp": now}]
                )
            elif kind == "search":
                cg.ingest(
                    [
                        {
                            "type": "search",
                            "customer_id": step[1],
                            "query": "shoes",
                            "result_count": 3,
                            "timestamp": now,
                        }
                    ]
                )
            elif kind == "advance":
                clock.at += timedelta(minutes=step[1])
            if kind in ("advance", "tick"):
                w.tick()
                at = clock.now()
                for m in box.messages[seen_mail:]:
                    p = by_email[str(m["To"])]
                    assert consent.get((p, "email")), f"email to {p} without consent at {at}"
                    sends.append((at, p, "email"))
                for post in prov.posts[seen_sms:]:
                    p = by_phone[post["to"]]
                    assert consent.get((p, "sms")), f"sms to {p} without consent at {at}"
                    sends.append((at, p, "sms"))
                if box.messages[seen_mail:] or prov.posts[seen_sms:]:
                    pol = ContactPolicy.model_validate(POLICY)
                    assert quiet_until(pol, "UTC", to_us(at)) is None, "sent in quiet hours"
                seen_mail, seen_sms = len(box.messages), len(prov.posts)
        for at, p, ch in sends:
            day = [s for s in sends if s[1] == p and s[2] == ch and at - DAY < s[0] <= at]
            assert len(day) <= 1, f"{ch} cap per day exceeded for {p}"
            week = [s for s in sends if s[1] == p and at - 7 * DAY < s[0] <= at]
            assert len(week) <= 3, f"weekly cap exceeded for {p}"
        mail_ids = [str(m["Message-ID"]) for m in box.messages[mail0:]]
        assert len(mail_ids) == len(set(mail_ids))
        keys = prov.keys[sms0:]
        assert len(keys) == len(set(keys))
        w.close()
    finally:
        cg.close()
