"""Property-based tests of the log's invariants (hypothesis).

* Any delivery of a history — shuffled, split into batches, with duplicates, with anonymous
  visits stitched and known ids merged in any order — gives the same identities and profiles as
  a clean replay in time order, and as a rebuild from the log.
* The profile aggregate is a commutative monoid: aggregating two parts and merging equals
  aggregating the whole, in either order, with ``empty()`` as the identity.

The identity rule the generator respects is the documented one: an anonymous id belongs to the
first customer it is seen with (each anonymous id here has one owner), and merges form a forest
(each merged id has one survivor), so the final person of every alias is order-independent.
"""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from concierge import Concierge
from concierge.clock import FrozenClock
from concierge.ingest.service import event_frames
from concierge.profiles import doc as pdoc
from helpers import BASE, close, shoe

CUSTOMERS = [f"c{i}" for i in range(4)]
ANONS = [f"a{i}" for i in range(4)]
PRODUCTS = [
    shoe("p0", brand="Asics", price=120.0),
    shoe("p1", brand="Nike", price=60.0, colour="red", department="women", sizes=("38", "39")),
    shoe("p2", brand="Hoka", price=150.0, colour="black"),
]
CLOCK = FrozenClock(BASE + timedelta(days=90))


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    owner = {a: draw(st.sampled_from(CUSTOMERS)) for a in ANONS}
    # merge forest: each customer but the first may be merged into an earlier one
    parent = {
        c: draw(st.sampled_from([None, *CUSTOMERS[:i]])) for i, c in enumerate(CUSTOMERS) if i
    }
    n = draw(st.integers(1, 25))
    # a small pool of times, so equal timestamps (ties) are common
    pool = draw(st.lists(st.integers(0, 120), min_size=1, max_size=8))
    events: list[dict[str, Any]] = []
    for i in range(n):
        ts = (BASE + timedelta(hours=12 * draw(st.sampled_from(pool)))).isoformat()
        who = draw(st.sampled_from(CUSTOMERS + ANONS))
        ident = {"customer_id": who} if who in CUSTOMERS else {"anonymous_id": who}
        kind = draw(
            st.sampled_from(
                [
                    "view",
                    "view",
                    "purchase",
                    "add_to_cart",
                    "search",
                    "identify",
                    "consent",
                    "stitch",
                    "merge",
                    "return",
                    "open",
                ]
            )
        )
        base = {"event_id": f"e{i}", "timestamp": ts, **ident}
        pid = draw(st.sampled_from(PRODUCTS))["product_id"]
        if kind == "view":
            events.append({**base, "type": "view", "product_id": pid})
        elif kind == "add_to_cart":
            events.append(
                {
                    **base,
                    "type": "add_to_cart",
                    "product_id": pid,
                    "quantity": draw(st.integers(1, 3)),
                }
            )
        elif kind == "search":
            events.append(
                {
                    **base,
                    "type": "search",
                    "query": f"q{i}",
                    "result_count": draw(st.integers(0, 5)),
                }
            )
        elif kind in ("purchase", "return"):
            lines = [
                {
                    "product_id": p["product_id"],
                    "quantity": draw(st.integers(1, 2)),
                    "unit_price": p["price"],
                }
                for p in draw(st.lists(st.sampled_from(PRODUCTS), min_size=1, max_size=2))
            ]
            events.append(
                {**base, "type": kind, "order_id": f"o{i}", "currency": "EUR", "lines": lines}
            )
        elif kind == "identify":
            events.append(
                {
                    **base,
                    "type": "identify",
                    "traits": {"first_name": draw(st.sampled_from(["Ann", "Bo", "Cy"]))},
                }
            )
        elif kind == "consent":
            events.append(
                {
                    **base,
                    "type": "consent",
                    "channel": draw(st.sampled_from(["email", "sms"])),
                    "granted": draw(st.booleans()),
                }
            )
        elif kind == "open":
            events.append({**base, "type": "open", "channel": "email"})
        elif kind == "stitch":
            a = draw(st.sampled_from(ANONS))
            events.append(
                {
                    **base,
                    "type": "identify",
                    "customer_id": owner[a],
                    "anonymous_id": a,
                    "traits": {},
                }
            )
        elif kind == "merge":
            child = draw(st.sampled_from(CUSTOMERS[1:]))
            if parent[child] is not None:
                events.append(
                    {
                        "event_id": f"e{i}",
                        "timestamp": ts,
                        "type": "merge",
                        "customer_id": parent[child],
                        "merged_customer_id": child,
                    }
                )
    return events


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
    events = draw(histories())
    order = draw(st.permutations(events))
    dupes = draw(st.lists(st.sampled_from(events), max_size=5)) if events else []
    stream = list(order)
    for d in dupes:
        stream.insert(draw(st.integers(0, len(stream))), d)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    batches, start = [], 0
    for c in [*cuts, len(stream)]:
        if c > start:
            batches.append(stream[start:c])
            start = c
    return events, batches


def _store(directory: str, name: str) -> Concierge:
    c = Concierge(f"sqlite:///{Path(directory) / name}", clock=CLOCK)
    c.upsert_products(PRODUCTS)
    return c


def _identities(c: Concierge) -> dict[str, str]:
    out = {f"c:{x}": c.person_of(x) for x in CUSTOMERS}
    out.update({f"a:{x}": c.person_of(anonymous_id=x) for x in ANONS})
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deliveries())
def test_any_delivery_equals_a_clean_replay_and_a_rebuild(
    case: tuple[list[dict[str, Any]], list[list[dict[str, Any]]]],
) -> None:
    events, batches = case
    with tempfile.TemporaryDirectory() as tmp:
        messy, clean = _store(tmp, "messy.db"), _store(tmp, "clean.db")
        try:
            delivered = 0
            for batch in batches:
                res = messy.ingest(batch)
                delivered += res.accepted
            assert delivered == len(events)
            assert messy.stats()["events"] == len(events)
            clean.ingest(sorted(events, key=lambda e: (e["timestamp"], e["event_id"])))
            assert _identities(messy) == _identities(clean)
            assert close(messy.profile_docs(), clean.profile_docs()) == []
            incremental = messy.profile_docs()
            messy.rebuild()
            assert _identities(messy) == _identities(clean)
            assert close(messy.profile_docs(), incremental) == []
        finally:
            messy.close()
            clean.close()


def _aggregate(events: list[dict[str, Any]]) -> dict[str, pdoc.Doc]:
    models = Concierge.validate_events(events)
    ev, items = event_frames(models)
    ev = ev.with_columns(pl.coalesce("customer_id", "anonymous_id").alias("person_id"))
    facets = pl.DataFrame(
        {
            "product_id": [p["product_id"] for p in PRODUCTS],
            "facets": [f"brand={p['brand']}|colour={p['colour']}" for p in PRODUCTS],
        }
    )
    items = items.join(facets, on="product_id", how="left").with_columns(
        pl.col("facets").fill_null("")
    )
    return pdoc.aggregate(ev, items, half_life_days=90.0)


def _merge_all(a: dict[str, pdoc.Doc], b: dict[str, pdoc.Doc]) -> dict[str, pdoc.Doc]:
    out = dict(a)
    for k, d in b.items():
        out[k] = pdoc.merge(out[k], d) if k in out else d
    return out


@settings(max_examples=80, deadline=None)
@given(histories(), st.data())
def test_profile_aggregate_is_a_commutative_monoid(
    events: list[dict[str, Any]], data: st.DataObject
) -> None:
    events = [e for e in events if e["type"] != "merge"]
    mask = data.draw(st.lists(st.booleans(), min_size=len(events), max_size=len(events)))
    left = [e for e, m in zip(events, mask, strict=True) if m]
    right = [e for e, m in zip(events, mask, strict=True) if not m]
    whole = _aggregate(events)
    a, b = _aggregate(left), _aggregate(right)
    assert close(_merge_all(a, b), whole) == []
    assert close(_merge_all(b, a), whole) == []
    for d in whole.values():
        assert close(pdoc.merge(d, pdoc.empty()), d) == []
        assert close(pdoc.merge(pdoc.empty(), d), d) == []


def test_equal_timestamps_resolve_by_event_id_whatever_the_arrival_order(tmp_path: Path) -> None:
    def ident(eid: str, name: str) -> dict[str, Any]:
        return {
            "event_id": eid,
            "timestamp": BASE.isoformat(),
            "customer_id": "c0",
            "type": "identify",
            "traits": {"first_name": name},
        }

    results = []
    for order in ([ident("e0", "Bo"), ident("e1", "Ann")], [ident("e1", "Ann"), ident("e0", "Bo")]):
        with tempfile.TemporaryDirectory() as tmp:
            c = _store(tmp, "tie.db")
            for e in order:
                c.ingest([e])
            results.append(c.customer("c0")["traits"]["first_name"])
            c.close()
    assert results == ["Ann", "Ann"]
