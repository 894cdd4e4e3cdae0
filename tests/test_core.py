"""The foundation through the facade, on SQLite and PostgreSQL: log, identity, catalog, 360."""

from __future__ import annotations

from typing import Any

import pytest

from concierge import Concierge
from concierge.errors import InputError, NotFoundError
from helpers import at, close, purchase, shoe


def test_same_event_id_is_stored_once_and_reported(cg: Concierge) -> None:
    ev = {
        "type": "view",
        "event_id": "e1",
        "customer_id": "ann",
        "product_id": "p1",
        "timestamp": at(0),
    }
    first = cg.ingest([ev])
    assert (first.accepted, first.duplicates) == (1, [])
    again = cg.ingest([ev, {**ev, "event_id": "e2"}, ev])
    assert again.accepted == 1
    assert sorted(again.duplicates) == ["e1", "e1"]
    assert cg.stats()["events"] == 2
    assert cg.customer("ann")["features"]["activity"]["view"] == 2


def test_generated_event_ids_and_received_at(cg: Concierge, clock: Any) -> None:
    res = cg.ingest(
        [{"type": "view", "customer_id": "ann", "product_id": "p1", "timestamp": at(0)}]
    )
    assert res.accepted == 1
    hist = cg.customer("ann")["history"]
    assert len(hist[0]["event_id"]) == 32
    assert hist[0]["received_at"] == clock.now().isoformat()


def test_out_of_order_events_are_placed_by_timestamp(cg: Concierge, tmp_path: Any) -> None:
    cg.upsert_products([shoe("p1"), shoe("p2", brand="Nike", price=90.0)])
    events = [
        purchase("o1", "ann", 1, [("p1", 1, 120.0)]),
        {
            "type": "view",
            "event_id": "v1",
            "customer_id": "ann",
            "product_id": "p2",
            "timestamp": at(5),
        },
        purchase("o2", "ann", 31, [("p2", 2, 90.0)]),
        purchase("o3", "ann", 91, [("p1", 1, 110.0)]),
    ]
    for ev in reversed(events):  # newest first, one at a time
        cg.ingest([ev])
    c = cg.customer("ann")
    assert [h["event_id"] for h in c["history"]] == ["o3", "o2", "v1", "o1"]
    f = c["features"]
    assert f["orders"] == 3
    assert f["revenue"] == pytest.approx(120 + 180 + 110)
    assert f["average_order_value"] == pytest.approx(410 / 3, abs=0.005)
    assert f["inter_purchase_days"]["intervals"] == [30.0, 60.0]
    assert f["first_order"] == at(1) and f["last_order"] == at(91)
    # the same events in order into a second store give the same aggregate
    other = Concierge(f"sqlite:///{tmp_path / 'ordered.db'}", clock=cg.clock)
    other.upsert_products([shoe("p1"), shoe("p2", brand="Nike", price=90.0)])
    other.ingest(events)
    assert close(other.profile_doc("ann"), cg.profile_doc("ann")) == []
    other.close()


def test_customer_360_figures(cg: Concierge, clock: Any) -> None:
    cg.upsert_products(
        [
            shoe("p1", brand="Asics", price=120.0, colour="blue"),
            shoe("p2", brand="Nike", price=60.0, colour="red", sizes=("41",)),
        ]
    )
    cg.ingest(
        [
            {
                "type": "identify",
                "event_id": "i1",
                "customer_id": "ann",
                "timestamp": at(0),
                "traits": {
                    "email": "ann@example.com",
                    "first_name": "Ann",
                    "timezone": "Europe/Paris",
                    "locale": "fr-FR",
                    "location": {"country": "FR", "city": "Lyon"},
                },
            },
            {
                "type": "consent",
                "event_id": "k1",
                "customer_id": "ann",
                "timestamp": at(0),
                "channel": "email",
                "granted": True,
                "source": "signup",
            },
            {
                "type": "consent",
                "event_id": "k2",
                "customer_id": "ann",
                "timestamp": at(3),
                "channel": "sms",
                "granted": True,
            },
            {
                "type": "consent",
                "event_id": "k3",
                "customer_id": "ann",
                "timestamp": at(10),
                "channel": "sms",
                "granted": False,
                "source": "reply STOP",
            },
            {
                "type": "answer",
                "event_id": "q1",
                "customer_id": "ann",
                "timestamp": at(11),
                "question_id": "running_surface",
                "answer": "trail",
            },
            purchase("o1", "ann", 20, [("p1", 1, 120.0), ("p2", 1, 60.0)]),
            {
                "type": "return",
                "event_id": "r1",
                "customer_id": "ann",
                "timestamp": at(25),
                "order_id": "o-o1",
                "currency": "EUR",
                "lines": [{"product_id": "p2", "quantity": 1, "unit_price": 60.0}],
            },
            {
                "type": "list_item",
                "event_id": "l1",
                "customer_id": "ann",
                "timestamp": at(40),
                "listing_id": "L1",
                "product_id": "p1",
                "price": 70.0,
                "currency": "EUR",
                "condition": "good",
                "bought_order_id": "o-o1",
            },
            {
                "type": "sale",
                "event_id": "s1",
                "customer_id": "ann",
                "timestamp": at(45),
                "listing_id": "L1",
                "product_id": "p1",
                "price": 65.0,
                "currency": "EUR",
                "buyer_id": "bob",
            },
            {
                "type": "view",
                "event_id": "v1",
                "customer_id": "ann",
                "timestamp": at(19),
                "product_id": "p1",
                "variant_id": "p1-42",
            },
            {
                "type": "open",
                "event_id": "m1",
                "customer_id": "ann",
                "timestamp": at(46),
                "channel": "email",
                "message_id": "msg1",
            },
        ]
    )
    c = cg.customer("ann")
    assert c["known"] and c["customer_ids"] == ["ann"]
    assert c["traits"]["email"] == "ann@example.com"
    assert c["traits"]["location"] == {"country": "FR", "region": None, "city": "Lyon"}
    assert c["timezone"] == "Europe/Paris"
    assert c["consent"]["email"]["granted"] is True
    assert c["consent"]["sms"] == {"granted": False, "at": at(10), "source": "reply STOP"}
    assert c["consent"]["push"]["granted"] is False
    assert [(h["channel"], h["granted"]) for h in c["consent_history"]] == [
        ("email", True),
        ("sms", True),
        ("sms", False),
    ]
    assert c["preferred_channel"] == "email"
    assert c["answers"][0]["question_id"] == "running_surface"
    assert c["answers"][0]["answer"] == "trail"
    f = c["features"]
    assert f["orders"] == 1 and f["items"] == 2
    assert f["revenue"] == pytest.approx(180.0)
    assert f["returned_value"] == pytest.approx(60.0)
    assert f["net_revenue"] == pytest.approx(120.0)
    assert f["seller"] == {"listings": 1, "listing_value": 70.0, "sales": 1, "sales_revenue": 65.0}
    aff = f["affinities"]
    assert aff["brand"][0]["value"] == "Asics"  # the returned Nike counts against Nike
    assert {a["value"] for a in aff["colour"]} >= {"blue"}
    assert aff["dept"][0]["value"] == "men"
    assert aff["cat"][0]["value"] in {"shoes", "shoes>running"}
    assert {a["value"] for a in aff["price"]} >= {"64-128"}
    assert aff["size"][0]["value"] == "42"
    assert aff["attr:pronation"][0]["value"] == "neutral"
    assert f["first_seen"] == at(0) and f["last_seen"] == at(46)
    assert f["rfm"]["frequency"] == 1
    assert f["lifecycle_stage"] in {"new", "active", "lapsing", "lapsed"}


def test_cart_and_session_update_on_ingest(cg: Concierge, clock: Any) -> None:
    now = clock.now()
    t0 = now.isoformat()
    cg.upsert_products([shoe("p1"), shoe("p2")])
    cg.ingest(
        [
            {
                "type": "search",
                "customer_id": "ann",
                "timestamp": t0,
                "query": "trail shoes",
                "result_count": 12,
            },
            {"type": "view", "customer_id": "ann", "timestamp": t0, "product_id": "p1"},
            {
                "type": "add_to_cart",
                "customer_id": "ann",
                "timestamp": t0,
                "product_id": "p1",
                "variant_id": "p1-42",
                "quantity": 2,
                "unit_price": 120.0,
            },
            {
                "type": "add_to_cart",
                "customer_id": "ann",
                "timestamp": t0,
                "product_id": "p2",
                "variant_id": "p2-43",
            },
            {
                "type": "remove_from_cart",
                "customer_id": "ann",
                "timestamp": t0,
                "product_id": "p1",
                "variant_id": "p1-42",
                "quantity": 1,
            },
        ]
    )
    f = cg.customer("ann")["features"]
    assert f["cart"] == [
        {"product_id": "p1", "variant_id": "p1-42", "quantity": 1},
        {"product_id": "p2", "variant_id": "p2-43", "quantity": 1},
    ]
    assert f["session"]["active"] is True
    assert f["session"]["views"] == ["p1"]
    assert f["session"]["searches"] == [{"query": "trail shoes", "result_count": 12}]
    assert f["last_seen"] == t0
    # buying empties the cart
    cg.ingest([{**purchase("o1", "ann", 0, [("p1", 1, 120.0)]), "timestamp": t0}])
    assert cg.customer("ann")["features"]["cart"] == []


def test_anonymous_visitor_who_identifies_keeps_the_history(cg: Concierge) -> None:
    cg.upsert_products([shoe("p1"), shoe("p2")])
    cg.ingest(
        [
            {
                "type": "view",
                "event_id": "a1",
                "anonymous_id": "dev-9",
                "product_id": "p1",
                "timestamp": at(0),
            },
            {
                "type": "add_to_cart",
                "event_id": "a2",
                "anonymous_id": "dev-9",
                "product_id": "p2",
                "timestamp": at(0, 5),
            },
        ]
    )
    anon = cg.customer(anonymous_id="dev-9")
    assert anon["known"] is False and anon["features"]["activity"]["view"] == 1
    cg.ingest(
        [
            {
                "type": "identify",
                "event_id": "i1",
                "customer_id": "ann",
                "anonymous_id": "dev-9",
                "timestamp": at(0, 10),
                "traits": {"email": "ann@example.com"},
            }
        ]
    )
    cg.ingest(
        [
            {
                "type": "view",
                "event_id": "a3",
                "anonymous_id": "dev-9",
                "product_id": "p2",
                "timestamp": at(1),
            }
        ]
    )  # still the same device, later
    c = cg.customer("ann")
    assert c["anonymous_ids"] == ["dev-9"]
    assert {h["event_id"] for h in c["history"]} == {"a1", "a2", "i1", "a3"}
    assert c["features"]["activity"]["view"] == 2
    assert cg.person_of(anonymous_id="dev-9") == "ann"
    assert cg.customer(anonymous_id="dev-9")["person_id"] == "ann"
    assert "anon:dev-9" not in cg.profile_docs()


def test_merge_two_known_ids_combines_every_figure(cg: Concierge) -> None:
    cg.upsert_products([shoe("p1"), shoe("p2", brand="Nike")])
    cg.ingest(
        [
            purchase("o1", "ann", 1, [("p1", 1, 100.0)]),
            purchase("o2", "ann-work", 11, [("p2", 1, 50.0)]),
            {
                "type": "identify",
                "event_id": "i2",
                "customer_id": "ann-work",
                "timestamp": at(12),
                "traits": {"first_name": "Annie"},
            },
        ]
    )
    cg.ingest(
        [
            {
                "type": "merge",
                "event_id": "m",
                "customer_id": "ann",
                "merged_customer_id": "ann-work",
                "timestamp": at(20),
            }
        ]
    )
    c = cg.customer("ann")
    assert c["customer_ids"] == ["ann", "ann-work"]
    assert c["features"]["orders"] == 2
    assert c["features"]["revenue"] == pytest.approx(150.0)
    assert c["features"]["inter_purchase_days"]["intervals"] == [10.0]
    assert c["traits"]["first_name"] == "Annie"
    assert cg.customer("ann-work")["person_id"] == "ann"
    assert set(cg.profile_docs()) == {"ann"}
    # later events of the merged id land on the survivor
    cg.ingest([purchase("o3", "ann-work", 30, [("p1", 1, 100.0)])])
    assert cg.customer("ann")["features"]["orders"] == 3
    # and a rebuild from the log agrees with what ingest maintained
    before = cg.profile_docs()
    cg.rebuild()
    assert close(cg.profile_docs(), before) == []


def test_catalog_products_stock_price_and_catalog_events(cg: Concierge) -> None:
    res = cg.upsert_products(
        [
            shoe("p1", price=120.0, stock=0, sizes=("42", "43")),
            shoe(
                "L9",
                price=45.0,
                seller_id="bob",
                condition="good",
                one_of_a_kind=True,
                sizes=("44",),
                stock=1,
                images=["https://img.example/L9.jpg"],
            ),
        ]
    )
    assert res["created"] == 2
    p = cg.product("L9")
    assert p.seller_id == "bob" and p.one_of_a_kind and p.condition == "good"
    assert p.attributes == {"drop": "8 mm", "pronation": "neutral"}
    assert cg.available("p1") is False
    cg.set_stock([{"product_id": "p1", "variant_id": "p1-43", "stock": 3}])
    assert cg.available("p1") is True
    assert cg.available("p1", size="43") is True
    assert cg.available("p1", size="42") is False
    cg.set_price([{"product_id": "p1", "price": 99.0}])
    cg.set_price([{"product_id": "p1", "price": 109.0}])
    cg.upsert_products([shoe("p1", price=89.0, stock=0, sizes=("42", "43"))])
    kinds = [(e["type"], e["product_id"]) for e in cg.catalog_events()]
    assert ("back_in_stock", "p1") in kinds
    assert kinds.count(("price_drop", "p1")) == 2
    assert ("price_rise", "p1") in kinds
    assert ("out_of_stock", "p1") in kinds
    drop = next(e for e in cg.catalog_events() if e["type"] == "price_drop")
    assert (drop["old_value"], drop["new_value"]) == (120.0, 99.0)
    seqs = [e["seq"] for e in cg.catalog_events()]
    assert cg.catalog_events(since_seq=seqs[1]) == cg.catalog_events()[2:]
    with pytest.raises(NotFoundError):
        cg.product("nope")


def test_store_currency_is_fixed_by_first_priced_data(cg: Concierge) -> None:
    cg.upsert_products([shoe("p1")])
    with pytest.raises(InputError) as err:
        cg.upsert_products([{**shoe("p2"), "currency": "USD"}])
    assert err.value.errors[0].field == "currency"
    with pytest.raises(InputError) as err:
        cg.ingest([{**purchase("o1", "ann", 1, [("p1", 1, 10.0)]), "currency": "USD"}])
    assert "currency" in err.value.errors[0].field
    assert cg.stats()["events"] == 0


BAD_EVENTS: list[tuple[dict[str, Any], str]] = [
    ({"type": "teleport", "customer_id": "a", "timestamp": at(0)}, "type"),
    (
        {"type": "view", "customer_id": "a", "product_id": "p", "timestamp": "2026-01-01T10:00:00"},
        "timestamp",
    ),
    ({"type": "view", "customer_id": "a", "product_id": 7, "timestamp": at(0)}, "product_id"),
    ({"type": "view", "product_id": "p", "timestamp": at(0)}, "customer_id"),
    (
        {
            "type": "add_to_cart",
            "customer_id": "a",
            "product_id": "p",
            "quantity": -2,
            "timestamp": at(0),
        },
        "quantity",
    ),
    ({**purchase("x", "a", 0, [("p", 0, 1.0)])}, "lines.0.quantity"),
    ({**purchase("x", "a", 0, [("p", 1, -1.0)])}, "lines.0.unit_price"),
    ({**purchase("x", "a", 0, [("p", 1, 1.0)]), "total": 5.0}, "total"),
    (
        {
            "type": "view",
            "customer_id": "a",
            "product_id": "p",
            "timestamp": at(0),
            "colour": "red",
        },
        "colour",
    ),
    (
        {
            "type": "identify",
            "customer_id": "a",
            "timestamp": at(0),
            "traits": {"timezone": "Mars/Olympus"},
        },
        "traits.timezone",
    ),
    (
        {
            "type": "identify",
            "customer_id": "a",
            "timestamp": at(0),
            "traits": {"email": "not-an-email"},
        },
        "traits.email",
    ),
    (
        {"type": "view", "customer_id": "anon:x", "product_id": "p", "timestamp": at(0)},
        "customer_id",
    ),
    (
        {
            "type": "consent",
            "customer_id": "a",
            "timestamp": at(0),
            "channel": "pigeon",
            "granted": True,
        },
        "channel",
    ),
    (
        {"type": "view", "customer_id": "a", "product_id": "p" * 5000, "timestamp": at(0)},
        "product_id",
    ),
]


@pytest.mark.parametrize(("bad", "field"), BAD_EVENTS, ids=[f for _, f in BAD_EVENTS])
def test_bad_events_name_the_field_and_leave_the_store_unchanged(
    cg: Concierge, bad: dict[str, Any], field: str
) -> None:
    cg.ingest(
        [
            {
                "type": "view",
                "event_id": "ok0",
                "customer_id": "a",
                "product_id": "p",
                "timestamp": at(0),
            }
        ]
    )
    before_stats, before_docs = cg.stats(), cg.profile_docs()
    good = {
        "type": "view",
        "event_id": "ok1",
        "customer_id": "a",
        "product_id": "p",
        "timestamp": at(1),
    }
    with pytest.raises(InputError) as err:
        cg.ingest([good, bad])
    fields = [(e.field, e.index) for e in err.value.errors]
    assert any(f.endswith(field) and i == 1 for f, i in fields), fields
    assert all(e.reason for e in err.value.errors)
    assert cg.stats() == before_stats
    assert cg.profile_docs() == before_docs


def test_batch_limit(cg: Concierge) -> None:
    many = [{"type": "view", "customer_id": "a", "product_id": "p", "timestamp": at(0)}] * (
        cg.settings.max_batch + 1
    )
    with pytest.raises(InputError) as err:
        cg.ingest(many)
    assert err.value.errors[0].field == "events"
    assert cg.stats()["events"] == 0


def test_bad_products_name_the_field(cg: Concierge) -> None:
    with pytest.raises(InputError) as err:
        cg.upsert_products([shoe("p1"), {**shoe("p2"), "price": -3}])
    assert (err.value.errors[0].field, err.value.errors[0].index) == ("price", 1)
    with pytest.raises(InputError) as err:
        cg.upsert_products([{**shoe("p3"), "variants": [{"variant_id": "v", "stock": -1}]}])
    assert err.value.errors[0].field == "variants.0.stock"
    assert cg.stats()["products"] == 0


def test_export_and_erasure(cg: Concierge) -> None:
    cg.upsert_products([shoe("p1")])
    cg.ingest(
        [
            {
                "type": "view",
                "event_id": "a1",
                "anonymous_id": "dev-1",
                "product_id": "p1",
                "timestamp": at(0),
                "context": {"ip": "10.0.0.1"},
            },
            {
                "type": "identify",
                "event_id": "i1",
                "customer_id": "ann",
                "anonymous_id": "dev-1",
                "timestamp": at(0, 1),
                "traits": {"email": "ann@example.com", "first_name": "Ann"},
            },
            {
                "type": "search",
                "event_id": "s1",
                "customer_id": "ann",
                "timestamp": at(0, 2),
                "query": "ann's wedding shoes",
                "result_count": 3,
            },
            purchase("o1", "ann", 1, [("p1", 2, 120.0)]),
            purchase("o2", "bob", 2, [("p1", 1, 120.0)]),
        ]
    )
    export = cg.export_customer("ann")
    assert export["traits"]["email"] == "ann@example.com"
    assert {h["event_id"] for h in export["history"]} == {"a1", "i1", "s1", "o1"}

    result = cg.erase_customer("ann")
    assert result["events_scrubbed"] == 4
    pseudonym = result["pseudonym"]
    with pytest.raises(NotFoundError):
        cg.customer("ann")
    with pytest.raises(NotFoundError):
        cg.customer(anonymous_id="dev-1")
    with cg.store.read() as conn:
        payloads = [r[0] for r in conn.exec_driver_sql("SELECT payload FROM events")]
    blob = "\n".join(payloads)
    for secret in ("ann@example.com", "Ann", "dev-1", "10.0.0.1", "wedding", '"ann"'):
        assert secret not in blob, secret
    # behaviour stays, under the pseudonym, so model counts are unchanged
    doc = cg.profile_doc(pseudonym)
    assert doc is not None and doc["n_orders"] == 1 and doc["n_items"] == 2
    assert doc["traits"] == {} and doc["recent_searches"][0][2] == ""
    assert cg.stats()["events"] == 5
    assert cg.customer("bob")["features"]["orders"] == 1
    # the rebuild agrees with the erased state
    before = cg.profile_docs()
    cg.rebuild()
    assert close(cg.profile_docs(), before) == []
    with pytest.raises(NotFoundError):
        cg.erase_customer("ann")


def test_api_keys_roles_and_revocation(cg: Concierge) -> None:
    key, secret = cg.create_api_key("shop frontend", "ingest")
    assert key.role == "ingest"
    found = cg.authenticate(secret)
    assert found is not None and found.key_id == key.key_id
    assert cg.authenticate(secret + "x") is None
    with cg.store.read() as conn:
        stored = [r[0] for r in conn.exec_driver_sql("SELECT secret_sha256 FROM api_keys")]
    assert secret not in stored
    cg.revoke_api_key(key.key_id)
    assert cg.authenticate(secret) is None
    with pytest.raises(InputError) as err:
        cg.create_api_key("x", "superuser")
    assert err.value.errors[0].field == "role"
