"""The profile aggregate: what the log says about one person, as a commutative monoid.

Every derived figure of a profile is kept as an *aggregate* that two halves of a history can be
combined into: sums, minima and maxima, sorted multisets, top-N lists ordered by (time, event id),
and last-writer-wins registers ordered by (time, event id). Because :func:`merge` is associative
and commutative, and :func:`aggregate` of a whole log equals the :func:`merge` of the aggregates of
any partition of it:

* live ingest stores ``merge(stored, aggregate(batch))``;
* ``concierge rebuild`` stores ``aggregate(whole log)``;
* a merge of two people stores ``merge(profile_a, profile_b)``;

and all three agree whatever the arrival order, duplicates (dropped before aggregation) or
out-of-order timestamps. There is one implementation of the features (Polars, :func:`aggregate`)
and one small combination rule (:func:`merge`), tested against each other with hypothesis.

Time decay of affinities is kept exact under this scheme by *anchoring*: an interaction of weight
``w`` at time ``t`` adds ``w * 2 ** ((t - ANCHOR) / half_life)`` to its facet. The decayed value at
any ``as_of`` is the stored sum times ``2 ** (-(as_of - ANCHOR) / half_life)``, a single factor, so
sums never need rewriting as time passes. Read-time views (RFM, decayed affinities, cart, session)
are computed by :mod:`concierge.profiles.view`.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import polars as pl

Doc = dict[str, Any]

ANCHOR_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z
DAY_US = 86_400_000_000

RECENT_VIEWS = 50
RECENT_SEARCHES = 20
CART_EVENTS = 200

# how strongly each kind of interaction speaks for a taste (per line, not per unit)
AFFINITY_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "add_to_cart": 3.0,
    "remove_from_cart": -1.0,
    "purchase": 5.0,
    "return": -5.0,
    "cancellation": -3.0,
}

_SUMS = (
    "n_events",
    "n_orders",
    "n_items",
    "revenue",
    "n_returned_items",
    "returned_value",
    "n_listings",
    "listing_value",
    "n_sales",
    "sales_revenue",
)
_MAP_SUMS = ("counts", "affinity")


def empty() -> Doc:
    return {
        "n_events": 0,
        "first_seen_us": None,
        "last_seen_us": None,
        "counts": {},
        "n_orders": 0,
        "n_items": 0,
        "revenue": 0.0,
        "n_returned_items": 0,
        "returned_value": 0.0,
        "first_order_us": None,
        "last_order_us": None,
        "order_times": [],
        "n_listings": 0,
        "listing_value": 0.0,
        "n_sales": 0,
        "sales_revenue": 0.0,
        "affinity": {},
        "traits": {},
        "consent": {},
        "consent_history": [],
        "answers": {},
        "recent_views": [],
        "recent_searches": [],
        "cart": [],
    }


# -- the combination rule ----------------------------------------------------------------


def _opt(f: Any, a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return f(a, b)


def _lww(a: dict[str, list[Any]], b: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Last writer wins per key; a register is ``[ts_us, event_id, *value]``."""
    out = dict(a)
    for key, reg in b.items():
        cur = out.get(key)
        if cur is None or (reg[0], reg[1]) > (cur[0], cur[1]):
            out[key] = reg
    return out


def _key(r: list[Any]) -> tuple[Any, Any, str]:
    return (r[0], r[1], str(r[2:3]))


def _top(a: list[list[Any]], b: list[list[Any]], n: int | None) -> list[list[Any]]:
    """Union of two lists of ``[ts_us, event_id, ...]`` (newest first), deduplicated, top ``n``.

    Both inputs are sorted newest first without repeats (every list this module builds is).
    The usual case of live ingest, new rows all newer than the stored ones, is a concatenation.
    """
    if not b or not a:
        rows = a or b
        return rows if n is None else rows[:n]
    if _key(b[-1]) > _key(a[0]):
        return b + a if n is None else (b + a)[:n]
    if _key(a[-1]) > _key(b[0]):
        return a + b if n is None else (a + b)[:n]
    seen: dict[tuple[Any, ...], list[Any]] = {}
    for row in a + b:
        seen[(row[0], row[1], *row[2:3])] = row
    rows = sorted(seen.values(), key=lambda r: (r[0], r[1], str(r[2:3])), reverse=True)
    return rows if n is None else rows[:n]


def merge(a: Doc, b: Doc) -> Doc:
    """Combine the aggregates of two disjoint parts of one person's history."""
    out: Doc = {}
    for k in _SUMS:
        out[k] = a[k] + b[k]
    for k in _MAP_SUMS:
        m = dict(a[k])
        for key, v in b[k].items():
            m[key] = m.get(key, 0) + v
        out[k] = m
    out["first_seen_us"] = _opt(min, a["first_seen_us"], b["first_seen_us"])
    out["last_seen_us"] = _opt(max, a["last_seen_us"], b["last_seen_us"])
    out["first_order_us"] = _opt(min, a["first_order_us"], b["first_order_us"])
    out["last_order_us"] = _opt(max, a["last_order_us"], b["last_order_us"])
    out["order_times"] = sorted(a["order_times"] + b["order_times"])
    out["traits"] = _lww(a["traits"], b["traits"])
    out["consent"] = _lww(a["consent"], b["consent"])
    out["answers"] = _lww(a["answers"], b["answers"])
    # kept oldest first; _top wants newest first
    hist = _top(a["consent_history"][::-1], b["consent_history"][::-1], None)
    out["consent_history"] = hist[::-1]
    out["recent_views"] = _top(a["recent_views"], b["recent_views"], RECENT_VIEWS)
    out["recent_searches"] = _top(a["recent_searches"], b["recent_searches"], RECENT_SEARCHES)
    out["cart"] = _top(a["cart"], b["cart"], CART_EVENTS)
    return out


def dumps(doc: Doc) -> str:
    return orjson.dumps(doc).decode()


def loads(text: str | bytes) -> Doc:
    doc: Doc = orjson.loads(text)
    return doc


# -- the features, from the log ----------------------------------------------------------


def aggregate(
    events: pl.DataFrame, items: pl.DataFrame, *, half_life_days: float
) -> dict[str, Doc]:
    """Aggregate events into one document per person.

    Parameters
    ----------
    events
        The EVENTS frame of :mod:`concierge.ingest.frames` plus a ``person_id`` column.
    items
        The ITEMS frame plus ``facets`` (``"brand=X|cat=Y|size=42"``, may be empty).
    half_life_days
        Half-life of affinity decay; the anchored weights depend on it.
    """
    docs: dict[str, Doc] = {}
    if events.height == 0:
        return docs
    hl_us = half_life_days * DAY_US
    ev = events.select("event_id", "type", "person_id", "ts_us", "payload")

    def doc_of(person: str) -> Doc:
        d = docs.get(person)
        if d is None:
            d = docs[person] = empty()
        return d

    # activity span and counts per kind (message events per kind and channel)
    for p, n, lo, hi in (
        ev.group_by("person_id")
        .agg(pl.len(), pl.col("ts_us").min().alias("lo"), pl.col("ts_us").max().alias("hi"))
        .iter_rows()
    ):
        d = doc_of(p)
        d["n_events"], d["first_seen_us"], d["last_seen_us"] = n, lo, hi
    msg_types = ["delivered", "open", "click", "bounce", "unsubscribe", "complaint"]
    keyed = ev.with_columns(
        pl.when(pl.col("type").is_in(msg_types))
        .then(pl.col("type") + ":" + pl.col("payload").str.json_path_match("$.channel"))
        .otherwise(pl.col("type"))
        .alias("key")
    )
    for p, key, n in keyed.group_by("person_id", "key").len().iter_rows():
        doc_of(p)["counts"][key] = n

    # orders
    buys = ev.filter(pl.col("type") == "purchase")
    if buys.height:
        lines = items.join(buys.select("event_id", "person_id"), on="event_id")
        money = lines.group_by("person_id").agg(
            pl.col("quantity").sum().alias("n_items"),
            (pl.col("quantity") * pl.col("unit_price").fill_null(0.0)).sum().alias("revenue"),
        )
        for p, n_items, revenue in money.iter_rows():
            d = doc_of(p)
            d["n_items"], d["revenue"] = int(n_items), float(revenue)
        for p, n, lo, hi, times in (
            buys.group_by("person_id")
            .agg(
                pl.len(),
                pl.col("ts_us").min().alias("lo"),
                pl.col("ts_us").max().alias("hi"),
                pl.col("ts_us").sort().alias("times"),
            )
            .iter_rows()
        ):
            d = doc_of(p)
            d["n_orders"], d["first_order_us"], d["last_order_us"] = n, lo, hi
            d["order_times"] = list(times)
    backs = ev.filter(pl.col("type").is_in(["return", "cancellation"]))
    if backs.height:
        lines = items.join(backs.select("event_id", "person_id"), on="event_id")
        for p, q, v in (
            lines.group_by("person_id")
            .agg(
                pl.col("quantity").sum(),
                (pl.col("quantity") * pl.col("unit_price").fill_null(0.0)).sum().alias("v"),
            )
            .iter_rows()
        ):
            d = doc_of(p)
            d["n_returned_items"], d["returned_value"] = int(q), float(v)

    # seller side
    sell = ev.filter(pl.col("type").is_in(["list_item", "sale"]))
    if sell.height:
        priced = sell.with_columns(
            pl.col("payload").str.json_path_match("$.price").cast(pl.Float64).alias("price")
        )
        for p, typ, n, v in (
            priced.group_by("person_id", "type").agg(pl.len(), pl.col("price").sum()).iter_rows()
        ):
            d = doc_of(p)
            if typ == "list_item":
                d["n_listings"], d["listing_value"] = n, float(v)
            else:
                d["n_sales"], d["sales_revenue"] = n, float(v)

    # affinities (anchored time decay), from the facets captured at ingest
    weights = pl.DataFrame({"type": list(AFFINITY_WEIGHTS), "w": list(AFFINITY_WEIGHTS.values())})
    inter = (
        items.filter(pl.col("facets") != "")
        .join(ev.select("event_id", "type", "person_id", "ts_us"), on="event_id")
        .join(weights, on="type")
    )
    if inter.height:
        aff = (
            inter.with_columns(
                (
                    pl.col("w")
                    * (((pl.col("ts_us") - ANCHOR_US).cast(pl.Float64) / hl_us) * math.log(2)).exp()
                ).alias("a"),
                pl.col("facets").str.split("|").alias("facet"),
            )
            .explode("facet")
            .group_by("person_id", "facet")
            .agg(pl.col("a").sum())
        )
        for p, facet, a in aff.iter_rows():
            doc_of(p)["affinity"][facet] = a

    # recent views, searches and cart moves (top-N newest, ties by event id)
    views = (
        ev.filter(pl.col("type") == "view")
        .join(items.select("event_id", "product_id"), on="event_id")
        .sort(["ts_us", "event_id"], descending=True)
        .group_by("person_id", maintain_order=True)
        .head(RECENT_VIEWS)
    )
    for p, ts, eid, pid in views.select("person_id", "ts_us", "event_id", "product_id").iter_rows():
        doc_of(p)["recent_views"].append([ts, eid, pid])
    searches = (
        ev.filter(pl.col("type") == "search")
        .sort(["ts_us", "event_id"], descending=True)
        .group_by("person_id", maintain_order=True)
        .head(RECENT_SEARCHES)
        .with_columns(
            pl.col("payload").str.json_path_match("$.query").alias("q"),
            pl.col("payload").str.json_path_match("$.result_count").cast(pl.Int64).alias("n"),
        )
    )
    for p, ts, eid, q, n in searches.select("person_id", "ts_us", "event_id", "q", "n").iter_rows():
        doc_of(p)["recent_searches"].append([ts, eid, q or "", n])
    cart = (
        ev.filter(pl.col("type").is_in(["add_to_cart", "remove_from_cart"]))
        .join(items.select("event_id", "product_id", "variant_id", "quantity"), on="event_id")
        .sort(["ts_us", "event_id"], descending=True)
        .group_by("person_id", maintain_order=True)
        .head(CART_EVENTS)
    )
    for p, ts, eid, typ, pid, vid, q in cart.select(
        "person_id", "ts_us", "event_id", "type", "product_id", "variant_id", "quantity"
    ).iter_rows():
        doc_of(p)["cart"].append([ts, eid, pid, vid, q if typ == "add_to_cart" else -q])

    # what people told us: few events, parsed whole
    told = ev.filter(pl.col("type").is_in(["identify", "consent", "answer"]))
    for p, typ, ts, eid, payload in told.select(
        "person_id", "type", "ts_us", "event_id", "payload"
    ).iter_rows():
        body = orjson.loads(payload)
        d = doc_of(p)
        if typ == "identify":
            for field, value in (body.get("traits") or {}).items():
                if value is not None:
                    d["traits"] = _lww(d["traits"], {field: [ts, eid, value]})
        elif typ == "consent":
            reg = [ts, eid, body["granted"], body.get("source")]
            d["consent"] = _lww(d["consent"], {body["channel"]: reg})
            d["consent_history"].append(
                [ts, eid, body["channel"], body["granted"], body.get("source")]
            )
        else:
            reg = [ts, eid, body["answer"], body.get("about_product_id")]
            d["answers"] = _lww(d["answers"], {body["question_id"]: reg})
    for d in docs.values():
        if len(d["consent_history"]) > 1:
            d["consent_history"].sort(key=lambda r: (r[0], r[1]))
    return docs


def typed_columns(doc: Doc) -> dict[str, Any]:
    """The figures copied into typed columns of the ``profiles`` table."""
    return {
        "n_orders": doc["n_orders"],
        "revenue": doc["revenue"],
        "first_seen_us": doc["first_seen_us"],
        "last_seen_us": doc["last_seen_us"],
        "last_order_us": doc["last_order_us"],
    }
