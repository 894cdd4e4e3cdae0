"""Small builders shared by the tests (plain data, no fakes of our own parts)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from concierge.clock import to_us
from concierge.profiles.doc import ANCHOR_US, DAY_US

BASE = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
# the anchored weight of an interaction at the end of 2026 (90-day half-life)
AFFINITY_SCALE = 2.0 ** ((to_us(datetime(2027, 1, 1, tzinfo=UTC)) - ANCHOR_US) / (90 * DAY_US))


def at(days: float = 0.0, minutes: float = 0.0) -> str:
    return (BASE + timedelta(days=days, minutes=minutes)).isoformat()


def shoe(
    pid: str,
    *,
    brand: str = "Asics",
    price: float = 120.0,
    colour: str = "blue",
    department: str = "men",
    sizes: tuple[str, ...] = ("42", "43"),
    stock: int = 5,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "product_id": pid,
        "title": f"{brand} runner {pid}",
        "brand": brand,
        "category": ["shoes", "running"],
        "department": department,
        "price": price,
        "currency": "EUR",
        "colour": colour,
        "attributes": {"drop": "8 mm", "pronation": "neutral"},
        "variants": [{"variant_id": f"{pid}-{s}", "size": s, "stock": stock} for s in sizes],
        **extra,
    }


def purchase(
    eid: str,
    cid: str | None,
    days: float,
    lines: list[tuple[str, int, float]],
    *,
    anon: str | None = None,
    order: str | None = None,
) -> dict[str, Any]:
    return {
        "type": "purchase",
        "event_id": eid,
        "customer_id": cid,
        "anonymous_id": anon,
        "timestamp": at(days),
        "order_id": order or f"o-{eid}",
        "currency": "EUR",
        "lines": [{"product_id": p, "quantity": q, "unit_price": u} for p, q, u in lines],
    }


def close(a: Any, b: Any, path: str = "") -> list[str]:
    """Differences between two JSON-like values, floats compared with a relative tolerance."""
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, int | float) and isinstance(b, int | float):
            return [] if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9) else [f"{path}: {a} != {b}"]
        return [f"{path}: {a!r} != {b!r}"]
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}.{k}: missing on one side" for k in sorted(set(a) ^ set(b))]
        if path.endswith(".affinity"):
            # anchored sums of terms that cancel (a purchase and its return) keep rounding
            # noise of ~1e-16 of a term; compare in decayed units, where a term is <= 5
            tol = 1e-9 * AFFINITY_SCALE
            return out + [
                f"{path}.{k}: {a[k]} != {b[k]}"
                for k in sorted(set(a) & set(b))
                if not math.isclose(a[k], b[k], rel_tol=1e-9, abs_tol=tol)
            ]
        for k in sorted(set(a) & set(b)):
            out += close(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        out = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            out += close(x, y, f"{path}[{i}]")
        return out
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]
