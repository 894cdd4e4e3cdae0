"""The HTTP API on a real store (SQLite and PostgreSQL): auth, events, catalog, 360, privacy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from concierge import Concierge
from concierge.api.app import create_app
from helpers import at, purchase, shoe


@pytest.fixture
def api(cg: Concierge) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    keys = {}
    for role in ("ingest", "read", "admin"):
        _, secret = cg.create_api_key(f"{role} key", role)
        keys[role] = {"Authorization": f"Bearer {secret}"}
    with TestClient(create_app(concierge=cg)) as client:
        yield client, keys


def fields(resp: Any) -> list[str]:
    return [f["field"] for f in resp.json()["error"]["fields"]]


def test_no_anonymous_access_and_roles(api: Any) -> None:
    client, keys = api
    assert client.get("/health").json() == {"status": "ok"}
    r = client.get("/v1/customers/ann")
    assert r.status_code == 401 and fields(r) == ["authorization"]
    r = client.get("/v1/stats", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    ev = {"type": "view", "customer_id": "ann", "product_id": "p1", "timestamp": at(0)}
    assert client.post("/v1/events", json=ev, headers=keys["read"]).status_code == 403
    assert client.post("/v1/events", json=ev, headers=keys["ingest"]).status_code == 200
    assert client.get("/v1/customers/ann", headers=keys["ingest"]).status_code == 403
    assert client.get("/v1/customers/ann", headers=keys["read"]).status_code == 200
    x_key = {"X-API-Key": keys["read"]["Authorization"][7:]}
    assert client.get("/v1/stats", headers=x_key).status_code == 200
    assert client.get("/v1/customers/ann/export", headers=keys["read"]).status_code == 403
    assert client.get("/v1/keys", headers=keys["read"]).status_code == 403
    docs = client.get("/openapi.json").json()
    assert "/v1/events" in docs["paths"] and "/v1/customers/{customer_id}" in docs["paths"]


def test_events_single_batch_duplicates_and_the_360(api: Any, cg: Concierge) -> None:
    client, keys = api
    r = client.put(
        "/v1/products", json=[shoe("p1"), shoe("p2", brand="Nike")], headers=keys["ingest"]
    )
    assert r.status_code == 200 and r.json()["created"] == 2
    one = {
        "type": "view",
        "event_id": "v1",
        "anonymous_id": "dev-1",
        "product_id": "p1",
        "timestamp": at(0),
    }
    assert client.post("/v1/events", json=one, headers=keys["ingest"]).json() == {
        "accepted": 1,
        "duplicates": [],
    }
    batch = [
        one,
        {
            "type": "identify",
            "event_id": "i1",
            "customer_id": "ann",
            "anonymous_id": "dev-1",
            "timestamp": at(0, 5),
            "traits": {"email": "ann@example.com"},
        },
        purchase("o1", "ann", 1, [("p1", 1, 120.0), ("p2", 1, 90.0)]),
    ]
    r = client.post("/v1/events", json={"events": batch}, headers=keys["ingest"])
    assert r.json() == {"accepted": 2, "duplicates": ["v1"]}
    r = client.post("/v1/events", json=batch, headers=keys["ingest"])  # a plain array too
    assert r.json() == {"accepted": 0, "duplicates": ["v1", "i1", "o1"]}
    c = client.get("/v1/customers/ann", headers=keys["read"]).json()
    assert c["anonymous_ids"] == ["dev-1"] and c["features"]["orders"] == 1
    assert [h["event_id"] for h in c["history"]] == ["o1", "i1", "v1"]
    assert (
        client.get("/v1/customers/dev-1?anonymous=true", headers=keys["read"]).json()["person_id"]
        == "ann"
    )
    r = client.get("/v1/customers/nobody", headers=keys["read"])
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert cg.stats()["events"] == 3


def test_catalog_endpoints(api: Any) -> None:
    client, keys = api
    client.put(
        "/v1/products",
        json={"products": [shoe("p1", price=100.0, stock=0)]},
        headers=keys["ingest"],
    )
    assert client.get("/v1/products/p1", headers=keys["read"]).json()["available"] is False
    r = client.post(
        "/v1/stock",
        json=[{"product_id": "p1", "variant_id": "p1-42", "stock": 4}],
        headers=keys["ingest"],
    )
    assert r.status_code == 200
    r = client.post(
        "/v1/prices", json=[{"product_id": "p1", "price": 80.0}], headers=keys["ingest"]
    )
    assert r.status_code == 200
    p = client.get("/v1/products/p1", headers=keys["read"]).json()
    assert p["available"] is True and p["price"] == 80.0 and p["brand"] == "Asics"
    kinds = [e["type"] for e in client.get("/v1/catalog/events", headers=keys["read"]).json()]
    assert "back_in_stock" in kinds and "price_drop" in kinds
    assert len(client.get("/v1/products?limit=5", headers=keys["read"]).json()) == 1
    r = client.post("/v1/stock", json=[{"product_id": "p1", "stock": -1}], headers=keys["ingest"])
    assert r.status_code == 422 and fields(r) == ["stock"]
    r = client.get("/v1/products?limit=0", headers=keys["read"])
    assert r.status_code == 422 and fields(r) == ["limit"]


def test_export_erasure_and_keys(api: Any) -> None:
    client, keys = api
    client.post(
        "/v1/events",
        json=[
            {
                "type": "identify",
                "customer_id": "ann",
                "timestamp": at(0),
                "traits": {"email": "ann@example.com"},
            },
            purchase("o1", "ann", 1, [("p1", 1, 10.0)]),
        ],
        headers=keys["ingest"],
    )
    export = client.get("/v1/customers/ann/export", headers=keys["admin"]).json()
    assert export["traits"]["email"] == "ann@example.com" and len(export["history"]) == 2
    r = client.delete("/v1/customers/ann", headers=keys["admin"])
    assert r.json()["erased"] is True and r.json()["events_scrubbed"] == 2
    assert client.get("/v1/customers/ann", headers=keys["read"]).status_code == 404
    made = client.post("/v1/keys", json={"name": "shop", "role": "ingest"}, headers=keys["admin"])
    assert made.status_code == 201
    secret = {"Authorization": f"Bearer {made.json()['secret']}"}
    assert client.post("/v1/events", json=[], headers=secret).status_code == 200
    client.delete(f"/v1/keys/{made.json()['key_id']}", headers=keys["admin"])
    assert client.post("/v1/events", json=[], headers=secret).status_code == 401
    r = client.post("/v1/keys", json={"name": "x", "role": "root"}, headers=keys["admin"])
    assert r.status_code == 422 and fields(r) == ["role"]


GOOD = {"type": "view", "customer_id": "ann", "product_id": "p1", "timestamp": at(0)}


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b'{"type": "view", "customer_id": ', 400, "body"),
        (
            b'[{"type": "teleport", "customer_id": "a", "timestamp": "2026-01-01T00:00:00Z"}]',
            422,
            "events[0].type",
        ),
        (
            b'{"type": "view", "customer_id": "a", "product_id": 5, '
            b'"timestamp": "2026-01-01T00:00:00Z"}',
            422,
            "product_id",
        ),
        (
            b'{"type": "view", "customer_id": "a", "product_id": "p", '
            b'"timestamp": "2026-01-01T00:00:00"}',
            422,
            "timestamp",
        ),
        (
            b'{"events": [{"type": "add_to_cart", "customer_id": "a", "product_id": "p", '
            b'"quantity": -1, "timestamp": "2026-01-01T00:00:00Z"}]}',
            422,
            "events[0].quantity",
        ),
        (b'{"events": 7}', 422, "events"),
        (b'"a string"', 422, "events"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field_and_changes_nothing(
    api: Any, cg: Concierge, body: bytes, status: int, field: str
) -> None:
    client, keys = api
    client.post("/v1/events", json=GOOD, headers=keys["ingest"])
    # a read through the API waits until the applier has counted the good event (read your
    # writes); a snapshot taken before that would race the applier
    assert client.get("/v1/customers/ann", headers=keys["read"]).status_code == 200
    before = cg.stats(), cg.profile_docs()
    r = client.post(
        "/v1/events", content=body, headers={**keys["ingest"], "Content-Type": "application/json"}
    )
    assert r.status_code == status, r.text
    assert field in fields(r), r.json()
    assert (cg.stats(), cg.profile_docs()) == before


def test_size_limits_and_media_type(cg: Concierge) -> None:
    small = cg.settings.model_copy(update={"max_body_bytes": 50_000, "max_batch": 100})
    _, secret = cg.create_api_key("k", "ingest")
    h = {"Authorization": f"Bearer {secret}"}
    cg.settings = small
    with TestClient(create_app(settings=small, concierge=cg)) as client:
        r = client.post("/v1/events", json=[GOOD] * 101, headers=h)
        assert r.status_code == 413 and fields(r) == ["events"]
        r = client.post("/v1/events", json=[{**GOOD, "context": {"x": "y" * 60_000}}], headers=h)
        assert r.status_code == 413 and fields(r) == ["body"]
        r = client.post(
            "/v1/events",
            content=b"type=view",
            headers={**h, "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 415 and fields(r) == ["content-type"]
    assert cg.stats()["events"] == 0


def test_small_api_appends_match_the_library_path(cg: Concierge, tmp_path: Any) -> None:
    """The API's Python append path stores the same items, facets and profiles as ingest."""
    products = [
        shoe("p1"),
        shoe("p2", brand="Nike", price=64.0, sizes=("41",)),
        {**shoe("p3", price=8.0), "attributes": {}, "colour": None},
    ]
    events = [
        {
            "type": "view",
            "event_id": "v1",
            "customer_id": "ann",
            "product_id": "p1",
            "variant_id": "p1-42",
            "timestamp": at(0),
        },
        {
            "type": "view",
            "event_id": "v2",
            "anonymous_id": "d9",
            "product_id": "p404",
            "timestamp": at(0, 1),
        },
        {
            "type": "add_to_cart",
            "event_id": "a1",
            "customer_id": "ann",
            "product_id": "p2",
            "variant_id": "p2-41",
            "unit_price": 32.0,
            "timestamp": at(0, 2),
        },
        purchase("o1", "ann", 1, [("p2", 1, 64.0), ("p3", 3, 8.0)]),
        {
            "type": "list_item",
            "event_id": "l1",
            "customer_id": "ann",
            "listing_id": "L1",
            "product_id": "p1",
            "price": 70.0,
            "currency": "EUR",
            "timestamp": at(2),
        },
    ]
    other = Concierge(f"sqlite:///{tmp_path / 'lib.db'}", clock=cg.clock)
    for c in (cg, other):
        c.upsert_products(products)
    cg.append_events(Concierge.validate_events(events))
    assert cg.pending() == 5
    cg.apply_pending()
    other.ingest(events)
    query = (
        "SELECT event_id, line, product_id, variant_id, quantity, unit_price, facets "
        "FROM event_items ORDER BY event_id, line"
    )
    with cg.store.read() as a, other.store.read() as b:
        assert list(a.exec_driver_sql(query)) == list(b.exec_driver_sql(query))
    assert cg.profile_docs() == other.profile_docs()
    other.close()


def test_a_refused_request_does_not_fail_its_group(api: Any, cg: Concierge) -> None:
    client, keys = api
    client.put("/v1/products", json=[shoe("p1")], headers=keys["ingest"])  # the store is EUR
    import concurrent.futures

    good = [purchase(f"g{i}", "ann", 1, [("p1", 1, 10.0)]) for i in range(10)]
    bad = {**purchase("b1", "bob", 1, [("p1", 1, 10.0)]), "currency": "USD"}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [
            pool.submit(client.post, "/v1/events", json=e, headers=keys["ingest"])
            for e in [*good[:5], bad, *good[5:]]
        ]
        codes = [f.result().status_code for f in futures]
    assert codes.count(200) == 10 and codes.count(422) == 1
    assert cg.stats()["events"] == 10
