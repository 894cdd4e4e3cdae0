"""Lifecycle campaigns over the *real* predictions (issue 4 with issue 3): the lifetime and
cadence models are trained on a small store with ``Concierge.train(only=[...])``, then win-back
(``churn_risk``), VIP (``clv``) and replenishment (``overdue`` / ``due_soon``) campaigns are
scheduled and the worker delivers them to a real SMTP server. The expected recipients are
computed from the stored artifacts themselves, so the test checks the whole join (artifact ->
audience -> queue -> policy -> render -> SMTP) without guessing model outputs."""

from __future__ import annotations

from typing import Any

import numpy as np

from concierge import Concierge
from concierge.channels.smtp import SmtpChannel, SmtpConfig
from concierge.clock import FrozenClock
from delivery_servers import smtp_server
from helpers import at, purchase, shoe


def _store(cg: Concierge) -> list[str]:
    cg.upsert_products([shoe("p1"), shoe("p2", brand="Nike", price=60.0)])
    ev: list[dict[str, Any]] = []
    people = []
    for i in range(24):
        cid = f"c{i:02d}"
        people.append(cid)
        ev += [
            {
                "type": "identify",
                "customer_id": cid,
                "timestamp": at(1),
                "traits": {"email": f"{cid}@example.com", "first_name": f"N{i}"},
            },
            {
                "type": "consent",
                "customer_id": cid,
                "channel": "email",
                "granted": True,
                "timestamp": at(1),
            },
        ]
        kind = i % 3
        if kind == 0:  # steady, recent: every 10 days up to now
            days = [5 + 10 * k for k in range(15)]
        elif kind == 1:  # bought often early, then stopped
            days = [2 + 6 * k + i % 2 for k in range(6)]
        else:  # a slower rhythm that has just come due
            days = [5 + 30 * k + i % 4 for k in range(4)]
        ev += [
            purchase(f"{cid}-{k}", cid, d, [("p1" if k % 2 else "p2", 1, 40.0 + 10 * kind)])
            for k, d in enumerate(days)
        ]
    cg.ingest(ev)
    return people


def _campaign(cid: str, subject: str, cond: dict[str, Any]) -> dict[str, Any]:
    return {
        "campaign_id": cid,
        "kind": "lifecycle",
        "channel": "email",
        "status": "live",
        "audience": {"all": [cond]},
        "template": {
            "subject": subject,
            "text": "Hi {{ name }}",
            "variables": {"name": {"source": "traits.first_name"}},
        },
    }


def _where(art: dict[str, Any], column: str, keep: Any) -> set[str]:
    return {str(p) for p, v in zip(art["person_id"], art[column], strict=True) if keep(v)}


def test_lifecycle_campaigns_over_trained_models(cg: Concierge, clock: FrozenClock) -> None:
    _store(cg)
    reports = cg.train(only=["lifetime", "cadence"])
    assert {r.name for r in reports if r.skipped is None} == {"lifetime", "cadence"}
    arts: dict[str, dict[str, Any]] = {}
    for name in ("lifetime", "cadence"):
        art = cg.registry.load(name)
        arts[name] = {c: np.asarray(art.arrays[c]) for c in ["person_id", *art.meta["per_person"]]}
    churn = arts["lifetime"]["churn_risk"]
    clv = arts["lifetime"]["clv"]
    risk_cut = float(np.quantile(churn, 0.6))
    vip_cut = float(np.quantile(clv, 0.75))
    expect = {
        "We miss you": _where(arts["lifetime"], "churn_risk", lambda v: v >= risk_cut),
        "For our best customers": _where(arts["lifetime"], "clv", lambda v: v >= vip_cut),
        "Time to restock": _where(arts["cadence"], "overdue", bool),
        "Running low?": _where(arts["cadence"], "due_soon", bool),
    }
    # each campaign reaches some of the 24, not all
    assert all(0 < len(v) < 24 for v in expect.values()), expect
    assert expect["We miss you"] != expect["For our best customers"]
    cg.set_contact_policy(
        {
            "quiet_start_hour": 0,
            "quiet_end_hour": 0,
            "max_per_day": {"email": 10},
            "max_per_week": 10,
        }
    )
    cg.save_campaign(
        _campaign(
            "winback",
            "We miss you",
            {"field": "predictions.churn_risk", "op": ">=", "value": risk_cut},
        )
    )
    cg.save_campaign(
        _campaign(
            "vip",
            "For our best customers",
            {"field": "predictions.clv", "op": ">=", "value": vip_cut},
        )
    )
    cg.save_campaign(
        _campaign(
            "refill", "Time to restock", {"field": "predictions.overdue", "op": "==", "value": True}
        )
    )
    cg.save_campaign(
        _campaign(
            "due", "Running low?", {"field": "predictions.due_soon", "op": "==", "value": True}
        )
    )
    for cid, subject in (
        ("due", "Running low?"),
        ("winback", "We miss you"),
        ("vip", "For our best customers"),
        ("refill", "Time to restock"),
    ):
        out = cg.schedule_campaign(cid)
        assert out["queued"] == len(expect[subject]), (cid, out)
    with smtp_server() as (box, port):
        w = cg.worker({"email": SmtpChannel(SmtpConfig(port=port))})
        w.drain(max_ticks=20)
    got: dict[str, set[str]] = {}
    for m in box.messages:
        got.setdefault(str(m["Subject"]), set()).add(str(m["To"]).split("@")[0])
    assert got == expect
    # the explain record names the prediction that chose the person
    someone = sorted(expect["We miss you"])[0]
    msgs = cg.customer(someone)["messages"]
    fields = {m["explain"]["why"]["audience"][0]["field"] for m in msgs}
    assert "predictions.churn_risk" in fields
