"""Why an item was recommended: a machine-readable code with its data, and a human sentence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CODES = (
    "viewed",  # you viewed X (the item itself, or X led to it)
    "bought_with",  # bought with Y (also-bought of an anchor, cart or past item)
    "viewed_with",  # viewed with Y (also-viewed)
    "bought_after",  # often bought after Y
    "your_brand",  # a brand the shopper favours
    "your_size",  # popular in your size
    "session",  # like what you are looking at today
    "searched",  # matches what you searched for today
    "repeat",  # you buy this regularly
    "for_you",  # the individual model, from the shopper's history
    "trending",  # rising against its own baseline
    "popular",  # popular with everyone (or in your country)
    "pinned",  # a merchandising pin
    "boosted",  # a merchandising boost
)


@dataclass(frozen=True)
class Reason:
    """One reason: ``code`` (one of :data:`CODES`), ``text`` for people, ``data`` for programs."""

    code: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "text": self.text, "data": self.data}


def _title(title: str, pid: str) -> str:
    return title or pid


def viewed(pid: str, title: str) -> Reason:
    return Reason("viewed", f"you viewed {_title(title, pid)}", {"product_id": pid})


def related(kind: str, pid: str, title: str, score: float) -> Reason:
    verb = {
        "also_bought": "bought with",
        "also_viewed": "viewed with",
        "bought_after": "often bought after",
    }[kind]
    code = {
        "also_bought": "bought_with",
        "also_viewed": "viewed_with",
        "bought_after": "bought_after",
    }[kind]
    return Reason(
        code, f"{verb} {_title(title, pid)}", {"product_id": pid, "similarity": round(score, 4)}
    )


def your_brand(brand: str, share: float) -> Reason:
    return Reason("your_brand", f"your brand: {brand}", {"brand": brand, "share": round(share, 4)})


def your_size(size: str) -> Reason:
    return Reason("your_size", f"popular in your size ({size})", {"size": size})


def session(category: str) -> Reason:
    return Reason(
        "session", f"like what you are looking at today ({category})", {"category": category}
    )


def searched(query: str) -> Reason:
    return Reason("searched", f"matches your search '{query}'", {"query": query})


def repeat(n_orders: int) -> Reason:
    return Reason("repeat", f"you buy this regularly ({n_orders} orders)", {"orders": n_orders})


def for_you(score: float) -> Reason:
    return Reason("for_you", "picked for you from your history", {"score": round(score, 4)})


def trending(ratio: float) -> Reason:
    return Reason(
        "trending", f"trending ({ratio:.1f}x its usual interest)", {"ratio": round(ratio, 3)}
    )


def popular(segment: str | None) -> Reason:
    if segment:
        return Reason("popular", f"popular in {segment}", {"segment": segment})
    return Reason("popular", "popular right now", {})


def pinned(rule_id: str, name: str) -> Reason:
    return Reason("pinned", f"featured: {name}", {"rule_id": rule_id})


def boosted(rule_id: str, name: str) -> Reason:
    return Reason("boosted", f"promoted: {name}", {"rule_id": rule_id})
