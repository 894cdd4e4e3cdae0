"""Each trigger kind, end to end through ingest (or the catalog) and the worker."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from campaign_data import cart_campaign, customer, iso, store_with_catalog
from concierge import Concierge
from concierge.campaigns import due_queue
from concierge.channels.smtp import SmtpChannel, SmtpConfig
from concierge.clock import FrozenClock
from delivery_servers import Mailbox, smtp_server


@pytest.fixture
def mail() -> Iterator[tuple[Mailbox, int]]:
    with smtp_server() as got:
        yield got


def _trigger(on: str, **over: Any) -> dict[str, Any]:
    return cart_campaign(campaign_id=on, trigger={"on": on, "delay_minutes": 0, **over})


def _drain(cg: Concierge, port: int) -> Any:
    w = cg.worker({"email": SmtpChannel(SmtpConfig(port=port))})
    try:
        return w.drain()
    finally:
        w.close()  # releases the SQLite lease for the next worker


def test_back_in_stock_reaches_who_wanted_that_size(
    cg: Concierge, clock: FrozenClock, mail: tuple[Mailbox, int]
) -> None:
    box, port = mail
    store_with_catalog(cg)  # p3 has no stock in 42 or 43
    for cid in ("ann", "bob", "cyd"):
        cg.ingest(customer(cid, clock))
    cg.ingest(
        [
            {
                "type": "view",
                "customer_id": "ann",
                "product_id": "p3",
                "variant_id": "p3-42",
                "timestamp": iso(clock, -60),
            },
            {
                "type": "add_to_cart",
                "customer_id": "bob",
                "product_id": "p3",
                "variant_id": "p3-43",
                "timestamp": iso(clock, -50),
            },
            {
                "type": "view",
                "customer_id": "cyd",
                "product_id": "p1",
                "timestamp": iso(clock, -40),
            },
        ]
    )
    cg.save_campaign(_trigger("back_in_stock"))
    assert _drain(cg, port).claimed == 0
    cg.set_stock([{"product_id": "p3", "variant_id": "p3-42", "stock": 2}])
    report = _drain(cg, port)
    assert report.sent == 1
    [msg] = box.messages
    assert msg["To"] == "ann@example.com"  # bob wanted 43, cyd another product
    [row] = cg.customer("ann")["messages"]
    assert row["explain"]["why"]["why"] == "back in stock"
    assert row["explain"]["items"]["items"][0]["product_id"] == "p3"
    assert _drain(cg, port).claimed == 0  # the catalog event is used once


def test_price_drop_for_viewers(
    cg: Concierge, clock: FrozenClock, mail: tuple[Mailbox, int]
) -> None:
    _box, port = mail
    store_with_catalog(cg)
    view = {"type": "view", "customer_id": "ann", "product_id": "p2", "timestamp": iso(clock, -5)}
    cg.ingest([*customer("ann", clock), view])
    cg.save_campaign(_trigger("price_drop"))
    cg.set_price([{"product_id": "p2", "price": 80.0}])
    assert _drain(cg, port).sent == 1
    [row] = cg.customer("ann")["messages"]
    assert row["explain"]["why"]["why"] == "now 80 instead of 120"


def test_welcome_on_a_new_email_consent_once(
    cg: Concierge, clock: FrozenClock, mail: tuple[Mailbox, int]
) -> None:
    box, port = mail
    store_with_catalog(cg)
    body = _trigger("welcome", reentry_days=365)
    body["template"] = {"subject": "Welcome", "text": "Hello"}
    cg.save_campaign(body)
    cg.ingest(customer("ann", clock, minutes=0, consent=("sms",)))  # sms: no welcome email
    assert _drain(cg, port).claimed == 0
    cg.ingest(
        [
            {
                "type": "consent",
                "customer_id": "ann",
                "channel": "email",
                "granted": True,
                "timestamp": iso(clock),
            }
        ]
    )
    cg.ingest(
        [
            {
                "type": "consent",
                "customer_id": "ann",
                "channel": "email",
                "granted": True,
                "timestamp": iso(clock, 1),
            }
        ]
    )  # again: the re-entry rule keeps one
    clock.at += timedelta(minutes=2)
    assert _drain(cg, port).sent == 1
    assert [m["Subject"] for m in box.messages] == ["Welcome"]


def test_search_abandonment_exits_when_they_view(
    cg: Concierge, clock: FrozenClock, mail: tuple[Mailbox, int]
) -> None:
    box, port = mail
    store_with_catalog(cg)
    for cid in ("ann", "bob"):
        cg.ingest(customer(cid, clock))
    body = _trigger("search_abandonment", delay_minutes=30)
    body["template"] = {
        "subject": "Still looking for {{ q }}?",
        "text": "{{ q }}",
        "variables": {"q": {"source": "trigger.query"}},
    }
    cg.save_campaign(body)
    cg.ingest(
        [
            {
                "type": "search",
                "customer_id": c,
                "query": "trail shoes",
                "result_count": 4,
                "timestamp": iso(clock),
            }
            for c in ("ann", "bob")
        ]
    )
    cg.ingest(
        [{"type": "view", "customer_id": "bob", "product_id": "p1", "timestamp": iso(clock, 5)}]
    )
    clock.at += timedelta(minutes=31)
    report = _drain(cg, port)
    assert report.sent == 1 and report.exited == 1
    assert [m["Subject"] for m in box.messages] == ["Still looking for trail shoes?"]


def test_your_item_sold(cg: Concierge, clock: FrozenClock, mail: tuple[Mailbox, int]) -> None:
    box, port = mail
    cg.ingest(customer("ann", clock))
    body = _trigger("item_sold")
    body["template"] = {
        "subject": "Sold for {{ price }}",
        "text": "Congratulations",
        "variables": {"price": {"source": "trigger.price"}},
    }
    cg.save_campaign(body)
    cg.ingest(
        [
            {
                "type": "sale",
                "customer_id": "ann",
                "listing_id": "l1",
                "price": 35.0,
                "currency": "EUR",
                "timestamp": iso(clock),
            }
        ]
    )
    assert _drain(cg, port).sent == 1
    assert box.messages[0]["Subject"] == "Sold for 35.0"


def test_history_imported_later_starts_nothing(
    cg: Concierge, clock: FrozenClock, mail: tuple[Mailbox, int]
) -> None:
    _box, port = mail
    store_with_catalog(cg)
    cg.ingest(customer("ann", clock))
    cg.save_campaign(_trigger("cart_abandonment"))
    cg.ingest(
        [
            {
                "type": "add_to_cart",
                "customer_id": "ann",
                "product_id": "p1",
                "timestamp": iso(clock, -60 * 24 * 30),
            }
        ]
    )  # a month old
    assert _drain(cg, port).claimed == 0


def test_the_ingest_hook_knows_which_event_types_start_a_live_campaign(
    cg: Concierge, clock: FrozenClock
) -> None:
    """The hook's look-up set follows the live campaigns at once in this process (saving or
    pausing a campaign rebuilds it): a view starts nothing while only a cart campaign is live."""
    store_with_catalog(cg)
    cg.ingest(customer("ann", clock))
    hook = cg._triggers
    with cg.store.read() as conn:
        assert hook.starting_types(conn) == frozenset()
    cg.save_campaign(_trigger("cart_abandonment"))
    with cg.store.read() as conn:
        assert hook.starting_types(conn) == {"add_to_cart"}
    view = {"type": "view", "customer_id": "ann", "product_id": "p1"}
    cg.ingest([{**view, "timestamp": iso(clock)}])
    cart = {**view, "type": "add_to_cart"}
    cg.ingest([{**cart, "timestamp": iso(clock)}])
    with cg.store.read() as conn:
        assert due_queue.counts(conn) == {"pending": 1}
    cg.set_campaign_status("cart_abandonment", "paused")
    with cg.store.read() as conn:
        assert hook.starting_types(conn) == frozenset()
