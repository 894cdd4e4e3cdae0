"""The customer 360 as read at a given time: figures derived from the stored aggregate.

Everything here is a pure function of (aggregate document, ``as_of``, settings): recency, RFM,
inter-purchase intervals, decayed affinities, cart contents, the current session, consent and
lifecycle stage. Nothing is stored, so nothing here can drift from the log.
"""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict
from typing import Any

from concierge.clock import from_us
from concierge.profiles.doc import ANCHOR_US, DAY_US, Doc

CHANNELS = ("email", "sms", "push")

# Anchored sums carry rounding noise of about 1e-16 of their largest term when interactions
# cancel (a purchase and its return); decayed, that is below 1e-14. Anything under NOISE is zero:
# a real interaction that small is more than 30 half-lives old.
NOISE = 1e-9


def _iso(us: int | None) -> str | None:
    return None if us is None else from_us(us).isoformat()


def affinities(
    doc: Doc,
    *,
    as_of_us: int,
    half_life_days: float,
    top: int = 10,
    dims: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Decayed affinity per dimension, as shares of the positive mass, strongest first
    (only the dimensions ``dims`` when given: the request path of recommendations reads two)."""
    factor = 2.0 ** (-(as_of_us - ANCHOR_US) / (half_life_days * DAY_US))
    by_dim: dict[str, dict[str, float]] = defaultdict(dict)
    prefixes = None if dims is None else tuple(d + "=" for d in dims)
    for facet, anchored in doc["affinity"].items():
        if prefixes is not None and not facet.startswith(prefixes):
            continue
        dim, _, value = facet.partition("=")
        by_dim[dim][value] = anchored * factor
    out: dict[str, Any] = {}
    for dim, values in sorted(by_dim.items()):
        positive = {k: v for k, v in values.items() if v > NOISE}
        total = sum(positive.values())
        if total <= 0:
            continue
        ranked = sorted(positive.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        out[dim] = [
            {"value": k, "score": round(v, 6), "share": round(v / total, 4)} for k, v in ranked
        ]
    return out


def cart(doc: Doc) -> list[dict[str, Any]]:
    """Net quantity per item added since the last purchase."""
    since = doc["last_order_us"] or -1
    qty: dict[tuple[str, str | None], int] = defaultdict(int)
    for ts, _eid, pid, vid, q in doc["cart"]:
        if ts > since:
            qty[(pid, vid)] += q
    return [
        {"product_id": pid, "variant_id": vid, "quantity": q}
        for (pid, vid), q in sorted(qty.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))
        if q > 0
    ]


def session(doc: Doc, *, as_of_us: int, gap_minutes: float) -> dict[str, Any]:
    """The current session: the run of activity with no gap longer than ``gap_minutes``."""
    gap = int(gap_minutes * 60_000_000)
    last = doc["last_seen_us"]
    active = last is not None and 0 <= as_of_us - last <= gap
    stamps = sorted(
        {r[0] for r in doc["recent_views"]} | {r[0] for r in doc["recent_searches"]}, reverse=True
    )
    start = stamps[0] if stamps else None
    for a, b in itertools.pairwise(stamps):
        if a - b > gap:
            break
        start = b

    def in_session(ts: int) -> bool:
        return active and start is not None and ts >= start

    return {
        "active": active,
        "started_at": _iso(start) if active else None,
        "views": [r[2] for r in doc["recent_views"] if in_session(r[0])],
        "searches": [
            {"query": r[2], "result_count": r[3]}
            for r in doc["recent_searches"]
            if in_session(r[0])
        ],
    }


def consent(doc: Doc) -> dict[str, Any]:
    return {
        ch: {"granted": bool(reg[2]), "at": _iso(reg[0]), "source": reg[3]}
        for ch, reg in sorted(doc["consent"].items())
    } | {
        ch: {"granted": False, "at": None, "source": None}
        for ch in CHANNELS
        if ch not in doc["consent"]
    }


def preferred_channel(doc: Doc) -> str | None:
    stated = doc["traits"].get("preferred_channel")
    if stated:
        return str(stated[2])
    engaged = {
        ch: doc["counts"].get(f"open:{ch}", 0) + 2 * doc["counts"].get(f"click:{ch}", 0)
        for ch in CHANNELS
        if doc["consent"].get(ch, [0, "", False])[2]
    }
    if engaged and max(engaged.values()) > 0:
        return max(sorted(engaged), key=lambda ch: engaged[ch])
    granted = [ch for ch in CHANNELS if doc["consent"].get(ch, [0, "", False])[2]]
    return granted[0] if granted else None


def lifecycle(doc: Doc, *, as_of_us: int, intervals_days: list[float]) -> str:
    """prospect → new → active → lapsing → lapsed, from purchases and the person's own rhythm."""
    if doc["n_orders"] == 0:
        return "prospect"
    since = (as_of_us - doc["last_order_us"]) / DAY_US
    rhythm = statistics.median(intervals_days) if intervals_days else 90.0
    rhythm = max(rhythm, 7.0)
    if doc["n_orders"] == 1 and since <= 2 * rhythm:
        return "new"
    if since <= 2 * rhythm:
        return "active"
    if since <= 4 * rhythm:
        return "lapsing"
    return "lapsed"


def view(
    doc: Doc, *, as_of_us: int, half_life_days: float, session_gap_minutes: float
) -> dict[str, Any]:
    """The derived part of the customer 360."""
    times = sorted(set(doc["order_times"]))
    intervals = [(b - a) / DAY_US for a, b in itertools.pairwise(times)]
    n = doc["n_orders"]
    net = doc["revenue"] - doc["returned_value"]
    last_order = doc["last_order_us"]
    return {
        "first_seen": _iso(doc["first_seen_us"]),
        "last_seen": _iso(doc["last_seen_us"]),
        "orders": n,
        "items": doc["n_items"],
        "revenue": round(doc["revenue"], 2),
        "returned_value": round(doc["returned_value"], 2),
        "net_revenue": round(net, 2),
        "average_order_value": round(doc["revenue"] / n, 2) if n else None,
        "first_order": _iso(doc["first_order_us"]),
        "last_order": _iso(last_order),
        "rfm": {
            "recency_days": None
            if last_order is None
            else round((as_of_us - last_order) / DAY_US, 2),
            "frequency": n,
            "monetary": round(net / n, 2) if n else 0.0,
        },
        "inter_purchase_days": {
            "intervals": [round(x, 3) for x in intervals[-50:]],
            "mean": round(statistics.fmean(intervals), 3) if intervals else None,
            "median": round(statistics.median(intervals), 3) if intervals else None,
        },
        "affinities": affinities(doc, as_of_us=as_of_us, half_life_days=half_life_days),
        "seller": {
            "listings": doc["n_listings"],
            "listing_value": round(doc["listing_value"], 2),
            "sales": doc["n_sales"],
            "sales_revenue": round(doc["sales_revenue"], 2),
        },
        "activity": dict(sorted(doc["counts"].items())),
        "cart": cart(doc),
        "session": session(doc, as_of_us=as_of_us, gap_minutes=session_gap_minutes),
        "lifecycle_stage": lifecycle(doc, as_of_us=as_of_us, intervals_days=intervals),
        "recent_views": [{"product_id": r[2], "at": _iso(r[0])} for r in doc["recent_views"][:20]],
        "recent_searches": [
            {"query": r[2], "result_count": r[3], "at": _iso(r[0])} for r in doc["recent_searches"]
        ],
    }


def traits(doc: Doc) -> dict[str, Any]:
    return {k: reg[2] for k, reg in sorted(doc["traits"].items())}


def answers(doc: Doc) -> list[dict[str, Any]]:
    return [
        {"question_id": q, "answer": reg[2], "about_product_id": reg[3], "at": _iso(reg[0])}
        for q, reg in sorted(doc["answers"].items())
    ]


def timezone(doc: Doc) -> str | None:
    reg = doc["traits"].get("timezone")
    return None if reg is None else str(reg[2])
