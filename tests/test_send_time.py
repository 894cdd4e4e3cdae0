"""Best send time per person in their own time zone, from opens and clicks by local hour,
shrunk toward the population (issue 4, scheduled broadcasts with ``best_time``); both
backends, the real worker and a real SMTP server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from campaign_data import customer
from concierge import Concierge
from concierge.channels.smtp import SmtpChannel, SmtpConfig
from concierge.clock import FrozenClock, to_us
from concierge.store import tables as t
from delivery_servers import smtp_server


def _engage(cid: str, kind: str, at: datetime, n: int) -> dict[str, Any]:
    return {
        "type": kind,
        "event_id": f"{kind}:{cid}:{n}",
        "customer_id": cid,
        "channel": "email",
        "message_id": f"m-{cid}-{n}",
        "campaign_id": "earlier",
        "timestamp": at.isoformat(),
    }


def test_best_local_hour_shrunk_toward_the_population(cg: Concierge, clock: FrozenClock) -> None:
    now = clock.now()  # 2026-06-01 12:00 UTC
    for cid in ("ann", "bob", "cyd", "dan"):
        cg.ingest(customer(cid, clock, first_name=cid.title()))
    # newest timezone trait wins: ann moved to Berlin, bob lives in New York
    for cid, tz in (("ann", "Europe/Berlin"), ("bob", "America/New_York")):
        cg.ingest(
            [
                {
                    "type": "identify",
                    "customer_id": cid,
                    "timestamp": (now - timedelta(minutes=100)).isoformat(),
                    "traits": {"timezone": tz},
                }
            ]
        )
    events = []
    day = now.replace(hour=0) - timedelta(days=10)
    for i in range(6):  # ann opens at 19:10 Berlin time (17:10 UTC in summer)
        events.append(_engage("ann", "open", day + timedelta(days=i, hours=17, minutes=10), i))
    for i in range(4):  # dan clicks at 09:30 UTC (a click weighs two opens)
        events.append(_engage("dan", "click", day + timedelta(days=i, hours=9, minutes=30), i))
    events.append(_engage("cyd", "open", day + timedelta(hours=7, minutes=5), 0))  # once, 07:05
    cg.ingest(events)
    cg.set_contact_policy({"quiet_start_hour": 0, "quiet_end_hour": 0})
    cg.save_campaign(
        {
            "campaign_id": "news",
            "kind": "broadcast",
            "channel": "email",
            "status": "live",
            "audience": {"all": []},
            "schedule": {"at": now.isoformat(), "best_time": True},
            "template": {"subject": "News", "text": "Hello"},
        }
    )
    assert cg.schedule_campaign("news")["queued"] == 4
    q = t.due_queue
    with cg.store.read() as conn:
        due = dict(conn.execute(select(q.c.person_id, q.c.due_us)).all())
    # population: 19h x6, 9h x8, 7h x1 -> its best hour is 9 local
    assert due["ann"] == to_us(datetime(2026, 6, 1, 17, tzinfo=UTC))  # her own 19:00 Berlin
    assert due["dan"] == to_us(datetime(2026, 6, 2, 9, tzinfo=UTC))  # 09:00 passed today
    # one open at 7 is not enough against the population: shrunk to 9
    assert due["cyd"] == to_us(datetime(2026, 6, 2, 9, tzinfo=UTC))
    # no engagement: the population's 9:00, in New York (EDT, UTC-4)
    assert due["bob"] == to_us(datetime(2026, 6, 1, 13, tzinfo=UTC))
    with smtp_server() as (box, port):
        w = cg.worker({"email": SmtpChannel(SmtpConfig(port=port))})
        clock.at = datetime(2026, 6, 1, 13, 30, tzinfo=UTC)
        assert w.tick().sent == 1  # only bob is due yet
        assert [m["To"] for m in box.messages] == ["bob@example.com"]
        clock.at = datetime(2026, 6, 2, 9, 1, tzinfo=UTC)
        assert w.tick().sent == 3
    assert sorted(m["To"] for m in box.messages) == [
        "ann@example.com",
        "bob@example.com",
        "cyd@example.com",
        "dan@example.com",
    ]


def test_without_any_engagement_the_hour_of_last_activity_is_kept(
    cg: Concierge, clock: FrozenClock
) -> None:
    now = clock.now()
    cg.ingest(customer("ann", clock, first_name="Ann", minutes=-60 * 5))  # seen at 07:00 UTC
    cg.set_contact_policy({"quiet_start_hour": 0, "quiet_end_hour": 0})
    cg.save_campaign(
        {
            "campaign_id": "news",
            "kind": "broadcast",
            "channel": "email",
            "status": "live",
            "audience": {"all": []},
            "schedule": {"at": now.isoformat(), "best_time": True},
            "template": {"subject": "News", "text": "Hello"},
        }
    )
    assert cg.schedule_campaign("news")["queued"] == 1
    with cg.store.read() as conn:
        [due] = conn.execute(select(t.due_queue.c.due_us)).scalars().all()
    assert due == to_us(datetime(2026, 6, 2, 7, tzinfo=UTC))
