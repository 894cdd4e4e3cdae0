"""The campaign routes over HTTP: CRUD with roles, preview, tracking pixel and click redirect
coming back as events, one-click unsubscribe, the preference center, provider webhooks and
on-site pulls; the messages come from the real worker through a real SMTP server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from campaign_data import cart_campaign, customer, iso, store_with_catalog
from concierge import Concierge
from concierge.api.app import create_app
from concierge.channels.smtp import SmtpChannel, SmtpConfig
from concierge.clock import FrozenClock
from delivery_servers import smtp_server


@pytest.fixture
def api(cg: Concierge) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    keys = {}
    for role in ("ingest", "read", "admin"):
        _, secret = cg.create_api_key(f"{role} key", role)
        keys[role] = {"Authorization": f"Bearer {secret}"}
    with TestClient(create_app(concierge=cg)) as client:
        yield client, keys


def _send_one(cg: Concierge, clock: FrozenClock) -> Any:
    with smtp_server() as (box, port):
        cg.ingest(
            [
                {
                    "type": "add_to_cart",
                    "customer_id": "ann",
                    "product_id": "p1",
                    "timestamp": iso(clock),
                }
            ]
        )
        clock.at += timedelta(minutes=61)
        w = cg.worker({"email": SmtpChannel(SmtpConfig(port=port))})
        assert w.tick().sent == 1
        w.close()
    return box.messages[0]


def test_campaign_crud_roles_and_validation(api: Any, cg: Concierge, clock: FrozenClock) -> None:
    client, keys = api
    body = cart_campaign(status="draft")
    assert client.post("/v1/campaigns", json=body, headers=keys["read"]).status_code == 403
    r = client.post("/v1/campaigns", json=body, headers=keys["admin"])
    assert r.status_code == 201 and r.json() == {
        "campaign_id": "cart",
        "version": 1,
        "status": "draft",
    }
    bad = cart_campaign(channel="fax")
    r = client.post("/v1/campaigns", json=bad, headers=keys["admin"])
    assert r.status_code == 422 and [f["field"] for f in r.json()["error"]["fields"]] == ["channel"]
    r = client.post("/v1/campaigns/cart/status", json={"status": "live"}, headers=keys["admin"])
    assert r.json()["status"] == "live"
    got = client.get("/v1/campaigns/cart", headers=keys["read"]).json()
    assert got["version"] == 2 and got["versions"] == [1, 2]
    assert client.get("/v1/campaigns/nope", headers=keys["read"]).status_code == 404
    store_with_catalog(cg)
    cg.ingest(customer("ann", clock))
    r = client.post(
        "/v1/campaigns/cart/preview",
        json={"customer_id": "ann", "trigger": {"product_ids": ["p2"]}},
        headers=keys["read"],
    )
    assert r.status_code == 200 and r.json()["subject"] == "Ann, your cart is waiting"
    assert r.json()["blocks"]["items"][0]["product_id"] == "p2"


def test_tracking_and_one_click_unsubscribe(api: Any, cg: Concierge, clock: FrozenClock) -> None:
    client, _keys = api
    store_with_catalog(cg)
    cg.ingest(customer("ann", clock))
    cg.save_campaign(cart_campaign())
    msg = _send_one(cg, clock)
    html = msg.get_body(("html",)).get_content()
    pixel = re.search(r'src="http://127\.0\.0\.1:8000(/t/o/[^"]+)"', html).group(1)
    link = re.search(r'href="http://127\.0\.0\.1:8000(/t/c/[^"]+)"', html).group(1)
    unsub = re.search(r"<http://127\.0\.0\.1:8000(/t/u/[^>]+)>", msg["List-Unsubscribe"]).group(1)
    r = client.get(pixel)
    assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
    r = client.get(link, follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "https://shop.example/products/p1"
    assert client.get(link[:-3] + "xyz", follow_redirects=False).status_code == 404
    activity = cg.customer("ann")["features"]["activity"]
    assert activity["open:email"] == 1 and activity["click:email"] == 1
    client.get(pixel)  # a second open of the same message is one open
    assert cg.customer("ann")["features"]["activity"]["open:email"] == 1
    assert client.get(unsub).status_code == 200  # a GET (a link scanner) changes nothing
    assert cg.customer("ann")["consent"]["email"]["granted"] is True
    r = client.post(
        unsub,
        content="List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200 and "unsubscribed" in r.text
    person = cg.customer("ann")
    assert person["consent"]["email"]["granted"] is False
    assert person["features"]["activity"]["unsubscribe:email"] == 1


def test_preference_center_page(api: Any, cg: Concierge, clock: FrozenClock) -> None:
    client, _keys = api
    from concierge.campaigns import service

    cg.ingest(customer("ann", clock))
    with cg.store.write() as conn:
        token = service.signer(conn, cg.store).sign(
            "p", {"k": "x", "p": "ann", "c": "c", "ch": "email"}
        )
    page = client.get(f"/t/p/{token}")
    assert page.status_code == 200 and "checked" in page.text and "max_per_week" in page.text
    r = client.post(
        f"/t/p/{token}",
        content="sms=on&max_per_week=2",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200
    person = cg.customer("ann")
    assert person["consent"]["email"]["granted"] is False
    assert person["consent"]["sms"]["granted"] is True
    assert {a["question_id"]: a["answer"] for a in person["answers"]} == {
        "preferences.max_per_week": 2
    }
    assert client.get("/t/p/forged.token").status_code == 404


def test_webhook_bounce_suppresses_and_comes_back_as_event(
    api: Any, cg: Concierge, clock: FrozenClock
) -> None:
    client, keys = api
    store_with_catalog(cg)
    cg.ingest(customer("ann", clock))
    cg.save_campaign(cart_campaign())
    msg = _send_one(cg, clock)
    r = client.post("/v1/webhooks/email", json=[{"type": "unknown"}], headers=keys["ingest"])
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "type"
    r = client.post(
        "/v1/webhooks/email",
        json={
            "events": [
                {"type": "bounce", "message_id": msg["Message-ID"], "hard": True, "reason": "5.1.1"}
            ]
        },
        headers=keys["ingest"],
    )
    assert r.status_code == 200 and r.json() == {"received": 1, "events": 1, "suppressed": 1}
    assert cg.customer("ann")["features"]["activity"]["bounce:email"] == 1
    out = client.get("/v1/outbox", headers=keys["read"]).json()
    assert out["counts"]["outbox"] == {"sent": 1}


def test_onsite_pull_needs_a_key(api: Any, cg: Concierge, clock: FrozenClock) -> None:
    client, keys = api
    assert client.get("/v1/customers/ann/onsite-messages").status_code == 401
    cg.ingest(customer("ann", clock))
    r = client.get("/v1/customers/ann/onsite-messages", headers=keys["ingest"])
    assert r.status_code == 200 and r.json() == []


def test_the_worker_runs_in_the_api_process(cg: Concierge, clock: FrozenClock) -> None:
    import time

    _, secret = cg.create_api_key("shop", "ingest")
    store_with_catalog(cg)
    cg.ingest(customer("ann", clock))
    cg.save_campaign(cart_campaign(trigger={"on": "cart_abandonment", "delay_minutes": 0}))
    with smtp_server() as (box, port):
        app = create_app(
            concierge=cg, worker_channels=lambda c: {"email": SmtpChannel(SmtpConfig(port=port))}
        )
        with TestClient(app) as client:
            r = client.post(
                "/v1/events",
                json={
                    "type": "add_to_cart",
                    "customer_id": "ann",
                    "product_id": "p1",
                    "timestamp": iso(clock),
                },
                headers={"Authorization": f"Bearer {secret}"},
            )
            assert r.status_code == 200
            deadline = time.monotonic() + 15
            while not box.messages and time.monotonic() < deadline:
                time.sleep(0.05)
        assert len(box.messages) == 1
