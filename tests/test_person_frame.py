"""The column-by-column person frame equals the per-person flatten it replaced, on real data.

The reference below is the implementation ``person_frame`` used before it was vectorized (one
profile document parsed whole by orjson and flattened at a time, commit 303f15b), kept here as
the oracle: on the bundled Online Retail sample (real purchases, no facets) and on a simulated
store (brands, departments, price bands, consent, message engagement, resale), both on SQLite
and PostgreSQL, every field must agree, strings and integers exactly and floats to 1e-12
relative (the price level's ``exp`` of NumPy may differ from ``math.exp`` by an ulp). The new
side reads the documents as the trainer does, decoding only the frame's parts
(:class:`~concierge.models.person_frame.FrameDoc`); hypothesis adds documents the simulator does
not write (parts missing, nulls, unicode and escapes in facets and channels, big and tiny
numbers, noise in the skipped parts).
"""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import orjson
import polars as pl
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from concierge import Concierge
from concierge.clock import FrozenClock, to_us
from concierge.ingest.bulk import import_file
from concierge.models.person_frame import (
    PROFILE_FIELDS,
    decode,
    profile_columns,
    read_chunks,
    read_docs,
    read_frame_chunks,
)
from concierge.profiles import doc as pdoc
from concierge.profiles import view
from concierge.profiles.doc import DAY_US

SAMPLE = Path(str(resources.files("concierge.data").joinpath("online_retail_sample.csv.gz")))

# -- the previous implementation (reference) -------------------------------------------------

CHANNELS = ("email", "sms", "push")


def _band_mid(band: str) -> float | None:
    lo, _, hi = band.partition("-")
    try:
        a, b = float(lo), float(hi)
    except ValueError:
        return None
    return math.sqrt(max(a, 0.5) * b)


def _affinity_summary(
    affinity: dict[str, float], factor: float
) -> tuple[dict[str, Any], dict[str, float]]:
    """Per dimension the strongest value (ties: the smaller name) and the positive total, as
    :func:`concierge.profiles.view.affinities` ranks them, in one pass over the facets (shares
    do not depend on the decay, one factor for all; only the noise floor does)."""
    top: dict[str, Any] = {}
    total: dict[str, float] = {}
    bands: list[tuple[str, float]] = []
    floor = view.NOISE / factor if factor > 0 else math.inf
    for facet, anchored in affinity.items():
        if anchored <= floor:
            continue
        dim, _, value = facet.partition("=")
        if dim not in ("brand", "cat", "dept", "price"):
            continue
        total[dim] = total.get(dim, 0.0) + anchored
        if dim == "price":
            bands.append((value, anchored))
            continue
        keys = [dim, "cat>"] if dim == "cat" and ">" in value else [dim]
        for key in keys:
            cur = top.get(key)
            if cur is None or anchored > cur[1] or (anchored == cur[1] and value < cur[0]):
                top[key] = (value, anchored)
    if bands:
        top["price_bands"] = bands
    return top, total


def profile_row(
    person: str, doc: pdoc.Doc, *, as_of_us: int, half_life_days: float
) -> dict[str, Any]:
    """The flat profile figures of one person at ``as_of_us`` (see :data:`PROFILE_FIELDS`)."""
    n = int(doc["n_orders"])
    rev = float(doc["revenue"])
    first, last = doc["first_seen_us"], doc["last_seen_us"]
    tenure = max((as_of_us - first) / DAY_US, 1.0) if first is not None else 0.0
    times = sorted(set(doc["order_times"]))
    intervals = [(b - a) / DAY_US for a, b in itertools.pairwise(times)]
    factor = 2.0 ** (-(as_of_us - pdoc.ANCHOR_US) / (half_life_days * DAY_US))
    top, total = _affinity_summary(doc["affinity"], factor)
    brand, cat, dept = top.get("brand"), top.get("cat>"), top.get("dept")
    bands = top.get("price_bands")
    price = None
    if bands:
        mids = [(m, w) for m, w in ((_band_mid(v), w) for v, w in bands) if m is not None]
        weight = sum(w for _m, w in mids)
        if weight > 0:
            price = math.exp(sum(w * math.log(m) for m, w in mids) / weight)
    counts = doc["counts"]
    row: dict[str, Any] = {
        "person_id": person,
        "known": not person.startswith("anon:"),
        "orders": n,
        "items": int(doc["n_items"]),
        "revenue": rev,
        "net_revenue": rev - float(doc["returned_value"]),
        "average_order_value": rev / n if n else 0.0,
        "recency_days": (as_of_us - doc["last_order_us"]) / DAY_US if n else None,
        "days_since_seen": (as_of_us - last) / DAY_US if last is not None else None,
        "tenure_days": tenure,
        "orders_per_year": n * 365.0 / max(tenure, 30.0),
        "return_share": float(doc["returned_value"]) / rev if rev > 0 else 0.0,
        "listings": int(doc["n_listings"]),
        "sales": int(doc["n_sales"]),
        "views": int(counts.get("view", 0)),
        "lifecycle_stage": view.lifecycle(doc, as_of_us=as_of_us, intervals_days=intervals),
        "top_brand": brand[0] if brand else None,
        "brand_loyalty": round(brand[1] / total["brand"], 4) if brand else None,
        "top_category": cat[0] if cat else top["cat"][0] if "cat" in top else None,
        "top_department": dept[0] if dept else None,
        "department_share": round(dept[1] / total["dept"], 4) if dept else None,
        "price_level": price,
        "preferred_channel": view.preferred_channel(doc),
        "questions_pending": 0,
    }
    for ch in CHANNELS:
        reg = doc["consent"].get(ch)
        row[f"consent.{ch}"] = bool(reg[2]) if reg else False
        sent = counts.get(f"delivered:{ch}", 0)
        hits = counts.get(f"open:{ch}", 0) + 2 * counts.get(f"click:{ch}", 0)
        row[f"engagement.{ch}"] = min(hits / sent, 3.0) if sent else 0.0
    return row


def reference_frame(
    docs: dict[str, pdoc.Doc], *, as_of_us: int, half_life_days: float
) -> pl.DataFrame:
    schema = {k: v[0] for k, v in PROFILE_FIELDS.items()}
    rows = [
        profile_row(p, docs[p], as_of_us=as_of_us, half_life_days=half_life_days)
        for p in sorted(docs)
    ]
    return pl.DataFrame(rows, schema=schema, orient="row")


# -- the comparison --------------------------------------------------------------------------


def assert_same(old: pl.DataFrame, new: pl.DataFrame) -> None:
    assert new.columns == old.columns
    assert new.schema == old.schema
    assert new.height == old.height
    for c in old.columns:
        a, b = old.get_column(c), new.get_column(c)
        if a.dtype == pl.Float64:
            assert a.is_null().equals(b.is_null()), c
            x, y = a.to_numpy(), b.to_numpy()
            assert np.allclose(x, y, rtol=1e-12, atol=0.0, equal_nan=True), c
        else:
            assert a.equals(b), (
                c,
                old.filter(a.ne_missing(b)).head(3),
                new.filter(a.ne_missing(b)).head(3),
            )


def both(c: Concierge, as_of: datetime) -> tuple[pl.DataFrame, pl.DataFrame]:
    with c.store.read() as conn:
        docs = read_docs(conn)
        chunks = list(read_frame_chunks(conn, size=97))  # several chunks, as a million get
        full = list(read_chunks(conn, size=97))
    assert [p for p, _d in chunks] == [p for p, _d in full]  # the same rows in the same order
    persons = [p for ps, _d in chunks for p in ps]
    parsed = [d for _p, ds in chunks for d in ds]
    order = sorted(range(len(persons)), key=persons.__getitem__)
    new = pl.concat(
        [
            profile_columns(
                [persons[i] for i in order[k : k + 97]],
                [parsed[i] for i in order[k : k + 97]],
                as_of_us=to_us(as_of),
                half_life_days=c.settings.affinity_half_life_days,
            )
            for k in range(0, len(order), 97)
        ]
    )
    old = reference_frame(
        docs, as_of_us=to_us(as_of), half_life_days=c.settings.affinity_half_life_days
    )
    return old, new


def test_online_retail_sample_frame_equals_the_per_person_flatten(db_url: str) -> None:
    as_of = datetime(2011, 9, 1, tzinfo=UTC)
    with Concierge(db_url, clock=FrozenClock(as_of)) as c:
        import_file(c, "online-retail", SAMPLE)
        old, new = both(c, as_of)
    assert old.height > 500
    assert old["orders"].sum() > 0
    assert_same(old, new)


def test_simulated_store_frame_equals_the_per_person_flatten(db_url: str, tmp_path: Path) -> None:
    from concierge.demo import load_simulation

    as_of = datetime(2026, 6, 1, tzinfo=UTC)
    with Concierge(db_url, clock=FrozenClock(as_of)) as c:
        load_simulation(c, shoppers=300, days=365, seed=11, truth_path=tmp_path / "truth.json")
        old, new = both(c, as_of)
    assert old.height > 250
    for col in ("top_brand", "top_department", "price_level", "preferred_channel"):
        assert old[col].null_count() < old.height, col  # the facets are exercised
    assert old["lifecycle_stage"].n_unique() >= 3
    assert_same(old, new)


@pytest.mark.parametrize("as_of_days", [0.0, 400.0, 20_000.0])
def test_noise_floor_ties_and_empty_documents(as_of_days: float) -> None:
    """Hand-made documents: ties between values, facets under the noise floor, no facets, no
    orders, a stated channel, a band that does not parse."""
    base = pdoc.empty()
    tie = pdoc.empty() | {
        "n_orders": 2,
        "n_items": 3,
        "revenue": 90.0,
        "returned_value": 10.0,
        "first_seen_us": pdoc.ANCHOR_US,
        "last_seen_us": pdoc.ANCHOR_US + 40 * DAY_US,
        "first_order_us": pdoc.ANCHOR_US,
        "last_order_us": pdoc.ANCHOR_US + 40 * DAY_US,
        "order_times": [pdoc.ANCHOR_US + 40 * DAY_US, pdoc.ANCHOR_US, pdoc.ANCHOR_US],
        "affinity": {
            "brand=Zeta": 2.0,
            "brand=Alpha": 2.0,
            "cat=Shoes": 5.0,
            "cat=Shoes>Running": 1.0,
            "dept=men": 1e-300,
            "price=50-100": 1.0,
            "price=abc": 3.0,
            "size=42": 9.0,
        },
        "counts": {"delivered:email": 4, "open:email": 3, "click:sms": 1, "view": 7},
        "consent": {"email": [1, "e1", True, "web"], "sms": [2, "e2", True, None]},
    }
    stated = tie | {"traits": {"preferred_channel": [3, "e3", "push"]}, "consent": {}}
    docs = {"anon:x": base, "c1": tie, "c2": stated}
    as_of = pdoc.ANCHOR_US + int(as_of_days * DAY_US)
    old = reference_frame(docs, as_of_us=as_of, half_life_days=90.0)
    new = profile_columns(
        sorted(docs), [docs[p] for p in sorted(docs)], as_of_us=as_of, half_life_days=90.0
    )
    assert_same(old, new)
    if as_of_days < 1000:  # later, every facet is under the noise floor (both agree on nulls)
        assert new.row(1, named=True)["top_brand"] == "Alpha"


# -- documents the simulator does not write ---------------------------------------------------

EVERY_PART = tuple(pdoc.empty())
TS = st.integers(min_value=-(2**52), max_value=2**56)  # µs: about 1827 to 4253
JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
WEIGHT = st.one_of(
    st.floats(min_value=-1e300, max_value=1e300, allow_nan=False),
    st.sampled_from([0.0, 1.0, 2.0, 1e-300, 5e32, 1e300]),  # ties, the noise floor, overflow
    st.integers(-(2**53), 2**53),  # an integral weight written without a fraction
)
BAND = st.one_of(
    st.builds(
        lambda a, b: f"{a:g}-{b:g}",
        st.floats(min_value=0.0, max_value=1e6),
        st.floats(min_value=1e-3, max_value=1e6),
    ),
    st.sampled_from(["abc", "5-", "-5", "8-16", "16-32"]),  # bands that do not parse
)
VALUE = st.one_of(
    st.sampled_from(["Nike", "Nike ", "nike", "Shoes", "Shoes>Running", "men", "Ünïcødé", "é"]),
    st.text(min_size=0, max_size=6),  # quotes, backslashes, control characters, "=", ">"
    st.builds("{}>{}".format, st.text(max_size=3), st.text(max_size=3)),
)
FACET = st.one_of(
    st.builds("{}={}".format, st.sampled_from(["brand", "cat", "dept"]), VALUE),
    st.builds("price={}".format, BAND),
    st.builds("{}={}".format, st.sampled_from(["size", "colour", "attr:fit", "brand>x"]), VALUE),
    st.text(max_size=6),  # no dimension at all
)
COUNT_KEY = st.one_of(
    st.sampled_from(["view", "purchase", "search"]),
    st.builds(
        "{}:{}".format,
        st.sampled_from(["delivered", "open", "click", "bounce"]),
        st.sampled_from(["email", "sms", "push", "mail"]),
    ),
)
CHANNEL = st.sampled_from(["email", "sms", "push", "fax"])


def register(value: st.SearchStrategy[Any], *, source: bool) -> st.SearchStrategy[list[Any]]:
    head = st.tuples(TS, st.text(max_size=4), value)
    if source:
        return st.builds(lambda h, s: [*h, s], head, st.none() | st.text(max_size=4))
    return head.map(list)


@st.composite
def documents(draw: st.DrawFn) -> pdoc.Doc:
    times = draw(st.lists(TS, max_size=8))
    doc: pdoc.Doc = {
        "n_events": draw(st.integers(0, 2**40)),
        "n_orders": draw(st.integers(0, 2**53)),
        "n_items": draw(st.integers(-(2**53), 2**53)),
        "revenue": draw(st.floats(min_value=-1e300, max_value=1e300, allow_nan=False)),
        "returned_value": draw(st.floats(min_value=-1e300, max_value=1e300, allow_nan=False)),
        "n_listings": draw(st.integers(0, 2**62)),
        "n_sales": draw(st.integers(0, 2**62)),
        "first_seen_us": draw(st.none() | TS),
        "last_seen_us": draw(st.none() | TS),
        "first_order_us": draw(st.none() | TS),
        "last_order_us": draw(st.none() | TS),
        "order_times": times,
        "affinity": draw(st.dictionaries(FACET, WEIGHT, max_size=12)),
        "counts": draw(st.dictionaries(COUNT_KEY, st.integers(0, 10**12), max_size=8)),
        "consent": draw(
            st.dictionaries(CHANNEL, register(st.booleans() | JSONISH, source=True), max_size=4)
        ),
        "traits": draw(
            st.dictionaries(
                st.sampled_from(["preferred_channel", "email", "first_name"]),
                register(
                    st.sampled_from(["email", "sms", "push", "pigeon"]) | JSONISH, source=False
                ),
                max_size=3,
            )
        ),
        "answers": draw(
            st.dictionaries(st.text(max_size=4), register(JSONISH, source=True), max_size=2)
        ),
        "consent_history": draw(st.lists(JSONISH, max_size=3)),
        "recent_views": draw(st.lists(JSONISH, max_size=3)),
        "recent_searches": draw(st.lists(JSONISH, max_size=3)),
        "cart": draw(st.lists(JSONISH, max_size=3)),
        "gift_affinity": draw(st.dictionaries(FACET, WEIGHT, max_size=2)),  # a part not read
    }
    if doc["n_orders"] and doc["last_order_us"] is None:  # kept by the monoid: orders have times
        doc["last_order_us"] = draw(TS)
    # parts missing (a document written before a part existed) read as in an empty document
    gone = draw(st.sets(st.sampled_from(sorted(doc)), max_size=4))
    if doc["n_orders"]:
        gone.discard("last_order_us")
    return {k: v for k, v in doc.items() if k not in gone}


@hsettings(max_examples=300, deadline=None)
@given(
    docs=st.lists(documents(), min_size=1, max_size=6),
    as_of=st.sampled_from([pdoc.ANCHOR_US, pdoc.ANCHOR_US + 9_600 * DAY_US, 2**55]),
    half_life=st.sampled_from([1.0, 90.0, 1e6]),
)
def test_decoded_documents_give_the_frame_of_the_whole_documents(
    docs: list[pdoc.Doc], as_of: int, half_life: float
) -> None:
    texts = {f"{'anon:' if i % 2 else 'c'}{i}": pdoc.dumps(d) for i, d in enumerate(docs)}
    persons = sorted(texts)
    whole = {p: pdoc.empty() | orjson.loads(texts[p]) for p in persons}
    try:
        old = reference_frame(whole, as_of_us=as_of, half_life_days=half_life)
    except (ValueError, OverflowError, ZeroDivisionError) as exc:
        # the old flatten's domain errors (the log of a band's middle of 0, a rate of 0/0):
        # the new frame must not pass them silently either
        with pytest.raises(type(exc)):
            profile_columns(
                persons,
                [decode(texts[p]) for p in persons],
                as_of_us=as_of,
                half_life_days=half_life,
            )
        return
    new = profile_columns(
        persons, [decode(texts[p]) for p in persons], as_of_us=as_of, half_life_days=half_life
    )
    assert_same(old, new)
    # and from parsed documents, as the 360's tests call it
    assert_same(
        old,
        profile_columns(
            persons, [whole[p] for p in persons], as_of_us=as_of, half_life_days=half_life
        ),
    )


@pytest.mark.parametrize(
    ("part", "value"),
    [("n_orders", None), ("revenue", "12"), ("order_times", [1.5]), ("affinity", {"a": None})],
)
def test_a_part_of_the_wrong_type_is_an_error_naming_it(part: str, value: Any) -> None:
    text = pdoc.dumps(pdoc.empty() | {part: value})
    with pytest.raises(msgspec.ValidationError, match=rf"\$\.{part}"):
        decode(text)
