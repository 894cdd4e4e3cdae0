"""Lifecycle campaigns over per-person prediction artifacts (the contracts): artifacts saved
through the registry are joined generically by person_id; audiences, templates and the
explain records use their columns without knowing which model wrote them."""

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


def _artifacts(cg: Concierge, clock: FrozenClock) -> None:
    now = to_us(clock.now())
    cg.registry.save(
        "scores_lifetime",  # not the real models' names: the 360 loads those as models
        {
            "person_id": np.array(["ann", "bob", "cyd"]),
            "churn_risk": np.array([0.8, 0.2, 0.65]),
            "clv": np.array([420.0, 90.0, 55.5]),
        },
        config={},
        metrics={},
        as_of_us=now,
        log_seq=0,
        created_us=now,
        meta={
            "per_person": ["churn_risk", "clv"],
            "per_person_doc": {"churn_risk": "probability", "clv": "EUR, 1 year"},
        },
    )
    cg.registry.save(
        "scores_cadence",
        {"person_id": np.array(["bob", "cyd"]), "due_soon": np.array([True, False])},
        config={},
        metrics={},
        as_of_us=now,
        log_seq=0,
        created_us=now,
        meta={"per_person": ["due_soon"]},
    )


WINBACK = {
    "campaign_id": "winback",
    "kind": "lifecycle",
    "channel": "email",
    "status": "live",
    "priority": 3,
    "expected_value": 12.0,
    "audience": {
        "all": [
            {"field": "predictions.churn_risk", "op": ">=", "value": 0.6},
            {"field": "traits.first_name", "op": "exists"},
        ]
    },
    "template": {
        "subject": "We miss you, {{ name }}",
        "text": "Worth {{ clv }} to us",
        "variables": {
            "name": {"source": "traits.first_name"},
            "clv": {"source": "predictions.clv"},
        },
    },
}


def test_win_back_audience_from_churn_risk(cg: Concierge, clock: FrozenClock) -> None:
    for cid, name in (("ann", "Ann"), ("bob", "Bob"), ("cyd", None), ("dan", "Dan")):
        cg.ingest(customer(cid, clock, first_name=name))
    _artifacts(cg, clock)
    cg.set_contact_policy({"quiet_start_hour": 0, "quiet_end_hour": 0})
    cg.save_campaign(WINBACK)
    out = cg.schedule_campaign("winback")
    assert out["audience"] == 1 and out["queued"] == 1  # ann (cyd has no first name)
    assert cg.schedule_campaign("winback")["queued"] == 0  # the same occasion, once
    with smtp_server() as (box, port):
        w = cg.worker({"email": SmtpChannel(SmtpConfig(port=port))})
        assert w.tick().sent == 1
    assert [m["To"] for m in box.messages] == ["ann@example.com"]
    assert box.messages[0].get_body(("plain",)).get_content().strip() == "Worth 420.0 to us"
    [msg] = cg.customer("ann")["messages"]
    assert msg["explain"]["why"]["audience"][0]["field"] == "predictions.churn_risk"


def test_replenishment_due_and_preflight(cg: Concierge, clock: FrozenClock) -> None:
    for cid in ("ann", "bob", "cyd"):
        cg.ingest(customer(cid, clock))
    _artifacts(cg, clock)
    due = {
        **WINBACK,
        "campaign_id": "refill",
        "audience": {"all": [{"field": "predictions.due_soon", "op": "==", "value": True}]},
        "template": {"subject": "Time for a refill", "text": "Hi"},
    }
    cg.save_campaign(due)
    pre = cg.preflight("refill")
    assert pre["audience"] == 1 and pre["would_send"] == 1
    # a newer version of an artifact replaces the old one in every join
    now = to_us(clock.now() + timedelta(days=1))
    cg.registry.save(
        "scores_cadence",
        {"person_id": np.array(["ann", "bob"]), "due_soon": np.array([True, True])},
        config={},
        metrics={},
        as_of_us=now,
        log_seq=0,
        created_us=now,
        meta={"per_person": ["due_soon"]},
    )
    assert cg.preflight("refill")["audience"] == 2


def test_unknown_prediction_column_gives_an_empty_audience_not_an_error(
    cg: Concierge, clock: FrozenClock
) -> None:
    cg.ingest(customer("ann", clock))
    _artifacts(cg, clock)
    body = {
        **WINBACK,
        "campaign_id": "x",
        "audience": {"all": [{"field": "predictions.nope", "op": ">", "value": 1}]},
    }
    cg.save_campaign(body)
    assert cg.preflight("x")["audience"] == 0
    with pytest.raises(InputError) as err:
        cg.save_campaign(
            {
                **WINBACK,
                "campaign_id": "y",
                "audience": {"all": [{"field": "predictions.clv", "op": "~", "value": 1}]},
            }
        )
    assert err.value.errors[0].field == "audience.all.0.op"


def test_segment_entry_is_one_occasion_per_value(cg: Concierge, clock: FrozenClock) -> None:
    for cid in ("ann", "bob"):
        cg.ingest(customer(cid, clock))

    def segments(version_day: int, ann: int, bob: int) -> None:
        now = to_us(clock.now() + timedelta(days=version_day))
        cg.registry.save(
            "segments",
            {"person_id": np.array(["ann", "bob"]), "segment_id": np.array([ann, bob])},
            config={},
            metrics={},
            as_of_us=now,
            log_seq=0,
            created_us=now,
            meta={"per_person": ["segment_id"]},
        )

    segments(0, 1, 2)
    body = {
        **WINBACK,
        "campaign_id": "entry",
        "audience": {
            "all": [{"field": "predictions.segment_id", "op": "exists"}],
            "occasion_by": "predictions.segment_id",
        },
    }
    cg.save_campaign(body)
    assert cg.schedule_campaign("entry")["queued"] == 2
    later = clock.now() + timedelta(days=7)
    assert cg.schedule_campaign("entry", at=later)["queued"] == 0  # still in the same segments
    segments(8, 3, 2)  # ann moves to segment 3
    assert cg.schedule_campaign("entry", at=later + timedelta(days=7))["queued"] == 1
    once = {**body, "campaign_id": "once", "audience": {"all": [], "occasion_by": "person"}}
    cg.save_campaign(once)
    assert cg.schedule_campaign("once")["queued"] == 2
    assert cg.schedule_campaign("once", at=later)["queued"] == 0
