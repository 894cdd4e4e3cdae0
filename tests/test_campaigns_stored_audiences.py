"""Campaigns whose audience is a stored rule-based audience or a micro-segment (issue 4, with
the audiences of issue 3): membership comes from ``audience_members`` refreshed before the run,
"audience entry" occasions from ``audience_changes`` (each person once per entry), segments
from the newest ``segments`` artifact; inline conditions still combine with both. Run on both
backends, delivered to a real SMTP server."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from campaign_data import customer
from concierge import Concierge
from concierge.channels.smtp import SmtpChannel, SmtpConfig
from concierge.clock import FrozenClock, to_us
from concierge.errors import InputError
from delivery_servers import smtp_server


def _save(
    cg: Concierge, clock: FrozenClock, name: str, days: int, **cols: dict[str, object]
) -> None:
    now = to_us(clock.now() + timedelta(days=days))
    people = sorted({p for c in cols.values() for p in c})
    arrays = {k: np.array([v.get(p, np.nan) for p in people]) for k, v in cols.items()}
    cg.registry.save(
        name,
        {"person_id": np.array(people), **arrays},
        config={},
        metrics={},
        as_of_us=now,
        log_seq=0,
        created_us=now,
        meta={"per_person": list(cols)},
    )


BASE = {
    "kind": "lifecycle",
    "channel": "email",
    "status": "live",
    "template": {
        "subject": "Hello {{ name }}",
        "text": "Hi {{ name }}",
        "variables": {"name": {"source": "traits.first_name"}},
    },
}


def test_audience_entry_once_per_entry(cg: Concierge, clock: FrozenClock) -> None:
    for cid in ("ann", "bob", "cyd"):
        cg.ingest(customer(cid, clock, first_name=cid.title()))
    cg.ingest(customer("dan", clock, first_name=None))
    _save(cg, clock, "risk_scores", 0, risk={"ann": 0.9, "bob": 0.1, "cyd": 0.7, "dan": 0.8})
    cg.set_contact_policy({"quiet_start_hour": 0, "quiet_end_hour": 0, "max_per_day": {"email": 5}})
    cg.create_audience("at risk", "risk > 0.6")
    cg.save_campaign(
        {
            **BASE,
            "campaign_id": "winback",
            "caps": {"per_person": 5, "per_days": 1},
            "audience": {
                "stored": "at risk",
                "occasion_by": "entry",
                "all": [{"field": "traits.first_name", "op": "exists"}],
            },
        }
    )
    first = cg.schedule_campaign("winback")
    assert first["audience"] == 2 and first["queued"] == 2  # ann, cyd (dan has no first name)
    later = clock.now() + timedelta(days=1)
    assert cg.schedule_campaign("winback", at=later)["queued"] == 0  # still in: same entry
    # a new version of the scores: ann leaves, bob enters
    _save(cg, clock, "risk_scores", 1, risk={"ann": 0.2, "bob": 0.95, "cyd": 0.7, "dan": 0.8})
    second = cg.schedule_campaign("winback", at=later + timedelta(days=1))
    assert second["queued"] == 1
    # ann comes back: a new entry, a new occasion
    _save(cg, clock, "risk_scores", 2, risk={"ann": 0.99, "bob": 0.95, "cyd": 0.7, "dan": 0.8})
    assert cg.schedule_campaign("winback", at=later + timedelta(days=2))["queued"] == 1
    entered = [c for c in cg.audience_changes("at risk", since=0) if c["change"] == "entered"]
    assert sorted(c["person_id"] for c in entered) == ["ann", "ann", "bob", "cyd", "dan"]
    with smtp_server() as (box, port):
        w = cg.worker({"email": SmtpChannel(SmtpConfig(port=port))})
        clock.at += timedelta(days=3)
        sent = 0
        for _ in range(5):
            sent += w.tick().sent
    assert sent == 4
    assert sorted(m["To"] for m in box.messages) == [
        "ann@example.com",
        "ann@example.com",
        "bob@example.com",
        "cyd@example.com",
    ]
    msgs = cg.customer("ann")["messages"]
    assert {m["explain"]["why"]["stored_audience"] for m in msgs} == {"at risk"}
    assert len({m["explain"]["why"]["occasion"] for m in msgs}) == 2


def test_broadcast_to_a_segment(cg: Concierge, clock: FrozenClock) -> None:
    for cid in ("ann", "bob", "cyd"):
        cg.ingest(customer(cid, clock, first_name=cid.title()))
    _save(cg, clock, "segments", 0, segment_id={"ann": 4, "bob": 2, "cyd": 4})
    cg.set_contact_policy({"quiet_start_hour": 0, "quiet_end_hour": 0})
    cg.save_campaign(
        {
            **BASE,
            "kind": "broadcast",
            "campaign_id": "seg4",
            "audience": {"segment_id": 4},
        }
    )
    assert cg.preflight("seg4")["audience"] == 2
    assert cg.schedule_campaign("seg4")["queued"] == 2
    with smtp_server() as (box, port):
        w = cg.worker({"email": SmtpChannel(SmtpConfig(port=port))})
        assert w.tick().sent == 2
    assert sorted(m["To"] for m in box.messages) == ["ann@example.com", "cyd@example.com"]
    [msg] = cg.customer("cyd")["messages"]
    assert msg["explain"]["why"]["segment_id"] == 4


def test_stored_audience_with_run_occasions_and_bad_names(
    cg: Concierge, clock: FrozenClock
) -> None:
    for cid in ("ann", "bob"):
        cg.ingest(customer(cid, clock, first_name=cid.title()))
    aud = cg.create_audience("everyone with mail", "consent.email")
    body = {
        **BASE,
        "kind": "broadcast",
        "campaign_id": "all",
        "audience": {"stored": aud["audience_id"]},
    }
    cg.save_campaign(body)
    assert cg.preflight("all")["audience"] == 2
    assert cg.schedule_campaign("all")["queued"] == 2
    # an unknown stored audience is refused at creation, naming the field
    with pytest.raises(InputError) as err:
        cg.save_campaign({**body, "campaign_id": "x", "audience": {"stored": "nobody"}})
    assert err.value.errors[0].field == "audience.stored"
    # "entry" without a stored audience means nothing
    with pytest.raises(InputError) as err:
        cg.save_campaign({**body, "campaign_id": "y", "audience": {"occasion_by": "entry"}})
    assert err.value.errors[0].field.startswith("audience")
