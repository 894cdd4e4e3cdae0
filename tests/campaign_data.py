"""Builders for campaign tests: a small store with consenting customers and a catalog."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from concierge import Concierge
from concierge.clock import FrozenClock
from helpers import shoe


def iso(clock: FrozenClock, minutes: float = 0.0) -> str:
    return (clock.now() + timedelta(minutes=minutes)).isoformat()


def customer(
    cid: str,
    clock: FrozenClock,
    *,
    email: str | None = None,
    phone: str | None = None,
    consent: tuple[str, ...] = ("email",),
    first_name: str | None = "Ann",
    timezone: str | None = "UTC",
    minutes: float = -600,
) -> list[dict[str, Any]]:
    traits: dict[str, Any] = {"email": email or f"{cid}@example.com"}
    if phone:
        traits["phone"] = phone
    if first_name is not None:
        traits["first_name"] = first_name
    if timezone is not None:
        traits["timezone"] = timezone
    out: list[dict[str, Any]] = [
        {"type": "identify", "customer_id": cid, "timestamp": iso(clock, minutes), "traits": traits}
    ]
    for ch in consent:
        out.append(
            {
                "type": "consent",
                "customer_id": cid,
                "channel": ch,
                "granted": True,
                "timestamp": iso(clock, minutes + 1),
            }
        )
    return out


def store_with_catalog(cg: Concierge) -> None:
    cg.upsert_products(
        [shoe("p1"), shoe("p2", brand="Nike"), shoe("p3", stock=0), shoe("p4", brand="Hoka")]
    )


def cart_campaign(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "campaign_id": "cart",
        "name": "Cart abandonment",
        "kind": "triggered",
        "channel": "email",
        "status": "live",
        "priority": 5,
        "trigger": {"on": "cart_abandonment", "delay_minutes": 60, "reentry_days": 3},
        "template": {
            "subject": "{{ first_name }}, your cart is waiting",
            "text": "Hi {{ first_name }}, still thinking about {{ items[0].title }}? "
            "Unsubscribe: {{ unsubscribe_url }}",
            "html": "<html><body><p>Hi {{ first_name }}</p>{% for i in items %}"
            '<a href="{{ i.url }}">{{ i.title }}</a>{% endfor %}</body></html>',
            "variables": {"first_name": {"source": "traits.first_name", "fallback": "there"}},
            "blocks": {"items": {"source": "trigger_items", "k": 3, "min_items": 1}},
        },
    }
    body.update(over)
    return body
