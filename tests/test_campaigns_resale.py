""" "Sell your item", end to end: purchases and listings ingested, the cadence model trained,
a lifecycle campaign over ``audience.resale`` scheduled, and the worker delivering to a real
SMTP server (aiosmtpd on loopback). A reseller holding an item inside their own resale window
gets the prompt naming that item; a buyer who never resells, a reseller whose item is too
recent, and one who has already listed it get nothing; one prompt per item."""

from __future__ import annotations

from typing import Any

from concierge import Concierge
from concierge.channels.smtp import SmtpChannel, SmtpConfig
from concierge.clock import FrozenClock
from delivery_servers import smtp_server
from helpers import at, purchase, shoe


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


def _listing(cid: str, order: str, day: float) -> dict[str, Any]:
    return {
        "type": "list_item",
        "customer_id": cid,
        "listing_id": f"L-{order}",
        "price": 60.0,
        "currency": "EUR",
        "bought_order_id": order,
        "timestamp": at(day),
    }


def _reseller(cid: str, jitter: float, *, lists: bool = True) -> list[dict[str, Any]]:
    """Buys three items and (a reseller) lists each about 60 days later."""
    ev = _person(cid)
    for k, day in enumerate((2.0, 30.0, 50.0)):
        ev.append(purchase(f"{cid}-{k}", cid, day, [("p1", 1, 120.0)]))
        if lists:
            ev.append(_listing(cid, f"o-{cid}-{k}", day + 59 + jitter))
    return ev


# "now" (the test clock) is day 147 of helpers.at
def _store(cg: Concierge) -> None:
    cg.upsert_products([shoe("p1"), shoe("p4", brand="Hoka"), shoe("p5", brand="Nike")])
    ev: list[dict[str, Any]] = []
    for i in range(6):  # other resellers: the population's resale delays
        ev += _reseller(f"r{i}", (i % 3) - 1.0)
    # (jitter, lists, day and product of the item still held)
    held = {"ann": (0.5, True, 87, "p4"), "bob": (0.0, False, 87, "p4")}
    held |= {"cyd": (-0.5, True, 145, "p5"), "dan": (1.0, True, 87, "p4")}
    for cid, (jitter, lists, day, pid) in held.items():
        ev += _reseller(cid, jitter, lists=lists)
        ev.append(purchase(f"{cid}-x", cid, day, [(pid, 1, 140.0)]))
    ev.append(_listing("dan", "o-dan-x", 146))  # dan has listed it already
    cg.ingest(ev)


SELL = {
    "campaign_id": "sell",
    "kind": "lifecycle",
    "channel": "email",
    "status": "live",
    "audience": {"resale": True},
    "template": {
        "subject": "{{ name }}, ready to sell your {{ items[0].title }}?",
        "text": "{{ why }}. List it in one click: {{ items[0].url }}",
        "variables": {
            "name": {"source": "traits.first_name"},
            "why": {"source": "trigger.why"},
        },
        "blocks": {"items": {"source": "trigger_items", "k": 1, "min_items": 1}},
    },
}


def test_sell_your_item_reaches_the_reseller_holding_it(cg: Concierge, clock: FrozenClock) -> None:
    _store(cg)
    assert {r.name for r in cg.train(only=["cadence"]) if r.skipped is None} == {"cadence"}
    cg.set_contact_policy({"quiet_start_hour": 0, "quiet_end_hour": 0})
    cg.save_campaign(SELL)
    out = cg.schedule_campaign("sell")
    assert out["queued"] == 1
    assert cg.schedule_campaign("sell")["queued"] == 0  # one prompt per item
    with smtp_server() as (box, port):
        w = cg.worker({"email": SmtpChannel(SmtpConfig(port=port))})
        try:
            assert w.drain().sent == 1
        finally:
            w.close()
    [mail] = box.messages
    assert str(mail["To"]) == "ann@example.com"
    assert str(mail["Subject"]) == "Ann, ready to sell your Hoka runner p4?"
    text = mail.get_body(("plain",)).get_content()
    head = "you often resell what you buy after about "
    assert text.startswith(head) and 55 <= int(text[len(head) :].split()[0]) <= 65
    [msg] = cg.customer("ann")["messages"]
    why = msg["explain"]["why"]
    assert why["resale"]["order_id"] == "o-ann-x" and why["product_ids"] == ["p4"]
    assert why["occasion"] == "lifecycle:resale:o-ann-x:p4"
    assert msg["explain"]["items"]["items"][0]["product_id"] == "p4"
    # once ann lists it, she is no longer prompted for it
    cg.ingest([_listing("ann", "o-ann-x", 147)])
    cg.save_campaign({**SELL, "campaign_id": "sell2"})
    assert cg.preflight("sell2")["audience"] == 0
