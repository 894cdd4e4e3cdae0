"""Replenishment per category: the trained cadence model's category priors with each person's
own intervals *in that category*, read from the log at run time. A person who buys socks
every ~20 days and shoes every ~60 is prompted for socks, with the socks they bought in the
message; once per category cycle; a purchase in the category since training restarts it."""

from __future__ import annotations

from typing import Any

from concierge import Concierge
from concierge.channels.smtp import SmtpChannel, SmtpConfig
from concierge.clock import FrozenClock
from delivery_servers import smtp_server
from helpers import at, purchase, shoe


def _sock(pid: str) -> dict[str, Any]:
    return {**shoe(pid, price=12.0), "title": f"Socks {pid}", "category": ["accessories", "socks"]}


def _person(cid: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "identify",
            "customer_id": cid,
            "timestamp": at(1),
            "traits": {"email": f"{cid}@example.com", "first_name": cid.title()},
        },
        {
            "type": "consent",
            "customer_id": cid,
            "channel": "email",
            "granted": True,
            "timestamp": at(1),
        },
    ]


# days of the purchases; "now" (the test clock) is day 147 of helpers.at
RHYTHMS = {
    "ann": {"socks": [5, 25, 45, 65, 85, 105, 125], "shoes": [10, 70, 130]},
    "bob": {"shoes": [20, 50, 80, 110, 140], "socks": [100, 140]},
    "cyd": {"shoes": [10, 40, 70, 100, 130]},
}


def _store(cg: Concierge) -> None:
    cg.upsert_products([shoe("p1"), shoe("p2", brand="Nike"), _sock("s1"), _sock("s2")])
    ev: list[dict[str, Any]] = []
    for cid, cats in RHYTHMS.items():
        ev += _person(cid)
        for cat, days in cats.items():
            for k, d in enumerate(days):
                pid = ("s1" if k % 2 else "s2") if cat == "socks" else ("p1" if k % 2 else "p2")
                ev.append(purchase(f"{cid}-{cat}-{k}", cid, d, [(pid, 1, 20.0)]))
    # filler buyers so each category has a prior of its own
    for i in range(10):
        cid = f"f{i}"
        ev += _person(cid)
        ev += [purchase(f"{cid}-{k}", cid, 3 + 25 * k + i, [("s1", 1, 12.0)]) for k in range(3)]
        ev += [purchase(f"{cid}-x{k}", cid, 2 + 50 * k + i, [("p1", 1, 90.0)]) for k in range(2)]
    cg.ingest(ev)


REFILL = {
    "campaign_id": "refill",
    "kind": "lifecycle",
    "channel": "email",
    "status": "live",
    "audience": {"replenishment": {"categories": ["accessories", "shoes"]}},
    "template": {
        "subject": "Running low on {{ category }}, {{ name }}?",
        "text": "{{ why }}: {% for i in items %}{{ i.title }} {% endfor %}",
        "variables": {
            "name": {"source": "traits.first_name"},
            "category": {"source": "trigger.replenish.name"},
            "why": {"source": "trigger.why"},
        },
        "blocks": {"items": {"source": "trigger_items", "k": 2, "min_items": 1}},
    },
}


def test_replenishment_per_category_over_smtp(cg: Concierge, clock: FrozenClock) -> None:
    _store(cg)
    assert {r.name for r in cg.train(only=["cadence"]) if r.skipped is None} == {"cadence"}
    cg.set_contact_policy({"quiet_start_hour": 0, "quiet_end_hour": 0})
    cg.save_campaign(REFILL)
    pre = cg.preflight("refill")
    assert pre["would_send"] == pre["audience"] and pre["held"] == 0
    out = cg.schedule_campaign("refill")
    assert cg.schedule_campaign("refill")["queued"] == 0  # the same cycle: once
    with smtp_server() as (box, port):
        w = cg.worker({"email": SmtpChannel(SmtpConfig(port=port))})
        try:
            w.drain()
        finally:
            w.close()
    got = {str(m["To"]).split("@")[0]: m for m in box.messages}
    assert len(got) == out["queued"]
    # ann's socks (~20 days, 22 since the last) are due, her shoes (~60, 17 since) are not;
    # bob's shoes came 7 days ago, his two socks purchases are no rhythm yet; cyd: shoes
    assert {"ann", "cyd"} <= set(got) and "bob" not in got
    assert str(got["ann"]["Subject"]) == "Running low on socks, Ann?"
    text = got["ann"].get_body(("plain",)).get_content()
    assert "Socks s1" in text and "Socks s2" in text and "runner" not in text
    assert text.startswith("you buy socks about every")
    assert str(got["cyd"]["Subject"]).startswith("Running low on running")
    [msg] = cg.customer("ann")["messages"]
    why = msg["explain"]["why"]
    assert why["occasion"].startswith("lifecycle:replenish:accessories>socks@")
    assert why["replenish"]["category"] == "accessories>socks" and why["product_ids"]
    # a socks purchase since training restarts ann's socks cycle: not due any more
    cg.ingest([purchase("ann-new", "ann", 147, [("s1", 1, 12.0)])])
    cg.save_campaign({**REFILL, "campaign_id": "refill2"})
    assert cg.preflight("refill2")["audience"] == pre["audience"] - 1
