"""One row per person: the profile's figures flattened, plus every per-person model column.

This frame is what micro-segments are fitted on and what audience rules are evaluated over, so a
rule can name any of its columns (``orders``, ``consent.email``, ``lifecycle_stage``,
``top_brand``, ``churn_risk``, ``due_soon``, ``segment_id``, …). It is computed from the stored
profile aggregates at a given ``as_of`` (the same read-time rules as the customer 360, see
:mod:`concierge.profiles.view`) and from the newest version of every registry artifact that
declares ``per_person`` columns (the contract of ``../shared`` between the four parts).

The documents are read a chunk of 20,000 at a time (:func:`read_frame_chunks`) and decoded
straight into :class:`FrameDoc`, a typed view of only the parts of a profile document the frame
reads: the figures, order times, affinities, the nine message counts, consent, the stated
channel and the answers' ids. Recent views, searches, the cart, the other traits and the
consent history, about half of a 7.7 kB document, are skipped by the decoder without building
any object for them. That is `msgspec <https://jcristharif.com/msgspec/>`_ (pinned in
``pyproject.toml``): a small, well-kept C library for typed JSON decoding whose ``Struct``
decoder skips unknown fields at scanning speed and builds untracked (``gc=False``) objects for
the rest (orjson has no way to leave parts out). Measured on the simulated store, CPU time, best
of 5 in one process: 14 µs a document against 34 µs for building the whole document with
orjson. The frame's figures are then summarized column by column (:func:`profile_columns`): the
scalar figures are gathered into arrays, the affinities into one long (person, facet, weight)
table whose facets are coded once per distinct facet, and the top values, shares, price level,
lifecycle stage and preferred channel are NumPy over those arrays.

Where the time goes, on 100,000 people (the audience frame's build, about 45 µs a person of
CPU; 120-150 µs before the typed decoding): decoding 14 µs, of which the affinities (about 80
facets a person, every dimension, as stored) are two thirds; their coding and summary 9 µs;
reading the rows from SQLite 6 µs; freeing the chunk's objects 3 µs; the rest under 3 µs each.
Most of what is left is therefore the affinity dictionary, a Python object per facet; a
tokenizer of the affinities' raw JSON in NumPy would skip them, at the price of a JSON parser
of our own.
"""

from __future__ import annotations

import gc
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, cast

import msgspec
import numpy as np
import numpy.typing as npt
import polars as pl
from sqlalchemy import Connection, LargeBinary, select
from sqlalchemy import cast as cast_

from concierge.models.registry import Registry
from concierge.profiles import doc as pdoc
from concierge.profiles import view as pview
from concierge.profiles.doc import DAY_US
from concierge.store import tables as t

CHANNELS = ("email", "sms", "push")
STAGES = ("prospect", "new", "active", "lapsing", "lapsed")

# name -> (dtype, one-line meaning); dotted names read like the customer 360's sections
PROFILE_FIELDS: dict[str, tuple[pl.DataType, str]] = {
    "person_id": (pl.String(), "the profile's person id"),
    "known": (pl.Boolean(), "has a customer id (signed in at least once)"),
    "orders": (pl.Int64(), "number of purchases"),
    "items": (pl.Int64(), "units bought"),
    "revenue": (pl.Float64(), "gross revenue"),
    "net_revenue": (pl.Float64(), "revenue minus returns"),
    "average_order_value": (pl.Float64(), "revenue per order (0 without orders)"),
    "recency_days": (pl.Float64(), "days since the last purchase (null without orders)"),
    "days_since_seen": (pl.Float64(), "days since the last event"),
    "tenure_days": (pl.Float64(), "days since the first event"),
    "orders_per_year": (pl.Float64(), "orders per 365 days of tenure"),
    "return_share": (pl.Float64(), "returned value / revenue"),
    "listings": (pl.Int64(), "items listed for sale (marketplace seller)"),
    "sales": (pl.Int64(), "listed items sold"),
    "views": (pl.Int64(), "product views"),
    "lifecycle_stage": (pl.String(), "prospect | new | active | lapsing | lapsed"),
    "top_brand": (pl.String(), "strongest brand affinity"),
    "brand_loyalty": (pl.Float64(), "share of the top brand in the brand affinity"),
    "top_category": (pl.String(), "strongest most-specific category affinity"),
    "top_department": (pl.String(), "strongest department affinity"),
    "department_share": (pl.Float64(), "share of the top department"),
    "price_level": (pl.Float64(), "affinity-weighted price (geometric middle of the bands)"),
    "consent.email": (pl.Boolean(), "may be emailed"),
    "consent.sms": (pl.Boolean(), "may be texted"),
    "consent.push": (pl.Boolean(), "may get push messages"),
    "engagement.email": (pl.Float64(), "(opens + 2 clicks) / deliveries by email"),
    "engagement.sms": (pl.Float64(), "(opens + 2 clicks) / deliveries by SMS"),
    "engagement.push": (pl.Float64(), "(opens + 2 clicks) / deliveries by push"),
    "preferred_channel": (pl.String(), "stated or most engaged consented channel"),
    "questions_pending": (pl.Int64(), "clarifying questions not answered yet"),
}


# -- the parts of a profile document the frame reads ------------------------------------------


class Register(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """A last-writer-wins register ``[ts_us, event_id, value, ...]`` (a consent register's
    trailing ``source`` is not read)."""

    ts_us: Any
    event_id: Any
    value: Any


class Counts(msgspec.Struct, gc=False, frozen=True):
    """The counts per kind of event the frame reads (views, deliveries, opens, clicks)."""

    view: int = 0
    delivered_email: int = msgspec.field(name="delivered:email", default=0)
    open_email: int = msgspec.field(name="open:email", default=0)
    click_email: int = msgspec.field(name="click:email", default=0)
    delivered_sms: int = msgspec.field(name="delivered:sms", default=0)
    open_sms: int = msgspec.field(name="open:sms", default=0)
    click_sms: int = msgspec.field(name="click:sms", default=0)
    delivered_push: int = msgspec.field(name="delivered:push", default=0)
    open_push: int = msgspec.field(name="open:push", default=0)
    click_push: int = msgspec.field(name="click:push", default=0)


class Consent(msgspec.Struct, gc=False, frozen=True):
    """The consent register of each channel (``None``: never asked)."""

    email: Register | None = None
    sms: Register | None = None
    push: Register | None = None


class Traits(msgspec.Struct, gc=False, frozen=True):
    """The one trait the frame reads."""

    preferred_channel: Register | None = None


class FrameDoc(msgspec.Struct, gc=False, frozen=True):
    """The parts of a profile document (:func:`concierge.profiles.doc.empty`) the frame reads.

    Every other part is skipped when decoding. A part missing from a document reads as in an
    empty document, as :func:`concierge.profiles.doc.merge` would make it; a part of the wrong
    type is an error naming it (``msgspec.ValidationError``, e.g. "Expected `int`, got `null` -
    at `$.n_orders`").
    """

    n_orders: int = 0
    n_items: int = 0
    revenue: float = 0.0
    returned_value: float = 0.0
    n_listings: int = 0
    n_sales: int = 0
    first_seen_us: int | None = None
    last_seen_us: int | None = None
    last_order_us: int | None = None
    order_times: list[int] = msgspec.field(default_factory=list)
    affinity: dict[str, float] = msgspec.field(default_factory=dict)
    counts: Counts = msgspec.field(default_factory=Counts)
    consent: Consent = msgspec.field(default_factory=Consent)
    traits: Traits = msgspec.field(default_factory=Traits)
    answers: dict[str, Any] = msgspec.field(default_factory=dict)


_DECODER = msgspec.json.Decoder(FrameDoc)


def decode(text: str | bytes) -> FrameDoc:
    """The frame's parts of one stored profile document."""
    return _DECODER.decode(text)


def frame_docs(docs: Sequence[pdoc.Doc]) -> list[FrameDoc]:
    """The frame's parts of parsed profile documents (what :func:`decode` gives for their
    JSON)."""
    return msgspec.convert(docs, list[FrameDoc])


def _band_mid(band: str) -> float | None:
    lo, _, hi = band.partition("-")
    try:
        a, b = float(lo), float(hi)
    except ValueError:
        return None
    return math.sqrt(max(a, 0.5) * b)


AFFINITY_DIMS = ("brand", "cat", "dept", "price")
F = npt.NDArray[np.float64]


def _column(items: Sequence[Any], name: str) -> list[Any]:
    return list(map(attrgetter(name), items))


def _affinity_columns(docs: Sequence[FrameDoc], factor: float) -> dict[str, Any]:
    """The affinity fields of everyone, from one long (person, facet, anchored) table.

    Per dimension the strongest value (ties: the smaller name) and the positive total above the
    noise floor, as :func:`concierge.profiles.view.affinities` ranks them (shares do not depend
    on the decay, one factor for all; only the noise floor does). Facets are coded once per
    distinct facet (a few thousand), everything else is NumPy on the codes; totals and the price
    level are summed by ``np.bincount`` in each document's own order, so they equal the sums
    taken person by person.
    """
    n = len(docs)
    affs = _column(docs, "affinity")
    sizes = np.fromiter(map(len, affs), dtype=np.int64, count=n)
    total_rows = int(sizes.sum())
    owner = np.repeat(np.arange(n, dtype=np.int64), sizes)
    # codes in order of first appearance, in one pass: a missing facet gets the next code
    vocab: defaultdict[str, int] = defaultdict(itertools.count().__next__)
    code = np.fromiter(
        map(vocab.__getitem__, itertools.chain.from_iterable(affs)),
        dtype=np.int64,
        count=total_rows,
    )
    anchored = np.fromiter(
        itertools.chain.from_iterable(map(dict.values, affs)), dtype=np.float64, count=total_rows
    )
    # per distinct facet: its dimension, value, rank of the value (ties), log of a band's middle
    parts = [f.partition("=") for f in vocab]
    values = [v for _d, _s, v in parts]
    rank = np.empty(len(values), dtype=np.int64)
    rank[sorted(range(len(values)), key=values.__getitem__)] = np.arange(len(values))
    dims = {d: i for i, d in enumerate(AFFINITY_DIMS)}
    dim_of = np.array([dims.get(d, -1) for d, _s, _v in parts] or [-1], dtype=np.int64)
    specific = np.array([">" in v for v in values] or [False], dtype=bool)
    mids = [_band_mid(v) if d == "price" else None for d, _s, v in parts]
    has_mid = np.array([m is not None for m in mids] or [False], dtype=bool)
    log_mid = np.array([math.log(m) if m is not None else 0.0 for m in mids] or [0.0])
    values_arr = np.array(values or [""], dtype=object)

    floor = pview.NOISE / factor if factor > 0 else math.inf
    keep = (anchored > floor) & (dim_of[code] >= 0)
    own, code, a = owner[keep], code[keep], anchored[keep]
    dim = dim_of[code]
    out: dict[str, Any] = {}

    by_rank = values_arr[np.argsort(rank)] if len(values) else values_arr

    def strongest(mask: npt.NDArray[np.bool_]) -> tuple[npt.NDArray[Any], F]:
        # rows are grouped by person (in order); per group the largest weight, then among the
        # rows holding it the smallest value (by rank)
        o, r, w = own[mask], rank[code[mask]], a[mask]
        value = np.full(n, None, dtype=object)
        weight = np.full(n, np.nan)
        if o.size == 0:
            return value, weight
        head = np.ones(o.size, dtype=bool)
        head[1:] = o[1:] != o[:-1]
        starts = np.flatnonzero(head)
        group = np.cumsum(head) - 1
        best = np.maximum.reduceat(w, starts)
        r = np.where(w == best[group], r, np.iinfo(np.int64).max)
        value[o[starts]] = by_rank[np.minimum.reduceat(r, starts)]
        weight[o[starts]] = best
        return value, weight

    brand, brand_a = strongest(dim == dims["brand"])
    dept, dept_a = strongest(dim == dims["dept"])
    cat, _ = strongest(dim == dims["cat"])
    spec, spec_a = strongest((dim == dims["cat"]) & specific[code])
    out["top_brand"], out["top_department"] = brand, dept
    out["top_category"] = np.where(np.isnan(spec_a), cat, spec)
    with np.errstate(invalid="ignore", divide="ignore"):
        for name, d, w in (
            ("brand_loyalty", "brand", brand_a),
            ("department_share", "dept", dept_a),
        ):
            m = dim == dims[d]
            out[name] = np.round(w / np.bincount(own[m], weights=a[m], minlength=n), 4)
        # price level: affinity-weighted geometric middle of the bands
        m = has_mid[code]
        weight = np.bincount(own[m], weights=a[m], minlength=n)
        logs = np.bincount(own[m], weights=a[m] * log_mid[code[m]], minlength=n)
        out["price_level"] = np.where(weight > 0, np.exp(logs / weight), np.nan)
    return out


def _lifecycle(
    owner: npt.NDArray[np.int64],
    times: npt.NDArray[np.int64],
    n_orders: npt.NDArray[np.int64],
    last_order: pl.Series,
    as_of_us: int,
) -> npt.NDArray[np.str_]:
    """:func:`concierge.profiles.view.lifecycle` of everyone: the median of each person's
    intervals between distinct order times (90 days without any, at least 7), from the long
    (owner, order time) table of everyone's order times.

    The median is ``statistics.median``'s: the middle interval, or the mean of the two middle
    ones, taken per person on the intervals sorted by (person, interval)."""
    n = n_orders.size
    order = np.lexsort((times, owner))
    o, ts = owner[order], times[order]
    distinct = np.ones(o.size, dtype=bool)
    distinct[1:] = (o[1:] != o[:-1]) | (ts[1:] != ts[:-1])
    o, ts = o[distinct], ts[distinct]
    follows = o[1:] == o[:-1]  # an interval between this order time and the one before
    gap_owner = o[1:][follows]
    gap = np.diff(ts)[follows] / DAY_US
    rhythm = np.full(n, 90.0)
    if gap.size:
        by = np.lexsort((gap, gap_owner))
        gap_owner, gap = gap_owner[by], gap[by]
        count = np.bincount(gap_owner, minlength=n)
        has = np.flatnonzero(count)
        start = np.concatenate(([0], np.cumsum(count)[:-1]))[has]
        size = count[has]
        rhythm[has] = (gap[start + (size - 1) // 2] + gap[start + size // 2]) / 2
    rhythm = np.maximum(rhythm, 7.0)
    since = (as_of_us - last_order.fill_null(as_of_us).to_numpy()) / DAY_US
    return np.select(
        [
            n_orders == 0,
            (n_orders == 1) & (since <= 2 * rhythm),
            since <= 2 * rhythm,
            since <= 4 * rhythm,
        ],
        ["prospect", "new", "active", "lapsing"],
        "lapsed",
    )


def order_times(docs: Sequence[FrameDoc]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Everyone's order times as one long table: (index of the document, order time)."""
    times = _column(docs, "order_times")
    sizes = np.fromiter(map(len, times), dtype=np.int64, count=len(times))
    owner = np.repeat(np.arange(len(times), dtype=np.int64), sizes)
    flat = np.fromiter(itertools.chain.from_iterable(times), dtype=np.int64, count=owner.size)
    return owner, flat


def _channel_columns(docs: Sequence[FrameDoc]) -> dict[str, Any]:
    """Consent, engagement and the preferred channel (:func:`~concierge.profiles.view.
    preferred_channel`: stated, else the most engaged consented one, else the first consented)."""
    n = len(docs)
    counts = _column(docs, "counts")
    consent = _column(docs, "consent")
    out: dict[str, Any] = {}
    engaged = np.zeros((n, len(CHANNELS)))
    granted = np.zeros((n, len(CHANNELS)), dtype=bool)

    def count(name: str) -> F:
        return np.fromiter(map(attrgetter(name), counts), dtype=np.float64, count=n)

    for j, ch in enumerate(CHANNELS):
        granted[:, j] = [r is not None and bool(r.value) for r in _column(consent, ch)]
        sent = count(f"delivered_{ch}")
        hits = count(f"open_{ch}") + 2 * count(f"click_{ch}")
        out[f"consent.{ch}"] = granted[:, j]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"engagement.{ch}"] = np.where(sent > 0, np.minimum(hits / sent, 3.0), 0.0)
        engaged[:, j] = hits
    # ties between engaged channels go to the alphabetically first (email, push, sms)
    alpha = sorted(range(len(CHANNELS)), key=lambda j: CHANNELS[j])
    masked = np.where(granted, engaged, -np.inf)[:, alpha]
    best = np.array(CHANNELS, dtype=object)[np.array(alpha)][masked.argmax(axis=1)]
    first = np.array(CHANNELS, dtype=object)[granted.argmax(axis=1)]
    chosen = np.where(masked.max(axis=1) > 0, best, np.where(granted.any(axis=1), first, None))
    stated = _column(_column(docs, "traits"), "preferred_channel")
    out["preferred_channel"] = [
        str(s.value) if s is not None else c for s, c in zip(stated, chosen.tolist(), strict=True)
    ]
    out["views"] = np.fromiter(map(attrgetter("view"), counts), dtype=np.int64, count=n)
    return out


def profile_columns(
    persons: Sequence[str],
    docs: Sequence[FrameDoc] | Sequence[pdoc.Doc],
    *,
    as_of_us: int,
    half_life_days: float,
) -> pl.DataFrame:
    """The flat profile figures of everyone at ``as_of_us`` (see :data:`PROFILE_FIELDS`), column
    by column: ``docs[i]`` is the aggregate of ``persons[i]`` (decoded by :func:`decode`, or a
    parsed document); ``questions_pending`` is 0 here."""
    schema = {k: v[0] for k, v in PROFILE_FIELDS.items()}
    if not docs:
        return pl.DataFrame(schema=schema)
    docs = (
        cast("Sequence[FrameDoc]", docs)
        if isinstance(docs[0], FrameDoc)
        else frame_docs(cast("Sequence[pdoc.Doc]", docs))
    )
    n = np.array(_column(docs, "n_orders"), dtype=np.int64)
    owner, times = order_times(docs)
    rev = np.array(_column(docs, "revenue"), dtype=np.float64)
    returned = np.array(_column(docs, "returned_value"), dtype=np.float64)
    first = pl.Series(_column(docs, "first_seen_us"), dtype=pl.Int64)
    last = pl.Series(_column(docs, "last_seen_us"), dtype=pl.Int64)
    last_order = pl.Series(_column(docs, "last_order_us"), dtype=pl.Int64)
    tenure = np.where(
        first.is_null().to_numpy(),
        0.0,
        np.maximum((as_of_us - first.fill_null(0).to_numpy()) / DAY_US, 1.0),
    )
    factor = 2.0 ** (-(as_of_us - pdoc.ANCHOR_US) / (half_life_days * DAY_US))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        cols: dict[str, Any] = {
            "person_id": list(persons),
            "known": [not p.startswith("anon:") for p in persons],
            "orders": n,
            "items": np.array(_column(docs, "n_items"), dtype=np.int64),
            "revenue": rev,
            "net_revenue": rev - returned,
            "average_order_value": np.where(n > 0, rev / np.maximum(n, 1), 0.0),
            "recency_days": pl.Series(
                (as_of_us - last_order.fill_null(as_of_us).to_numpy()) / DAY_US
            ).set(pl.Series(n == 0), None),
            "days_since_seen": pl.Series((as_of_us - last.fill_null(0).to_numpy()) / DAY_US).set(
                last.is_null(), None
            ),
            "tenure_days": tenure,
            "orders_per_year": n * 365.0 / np.maximum(tenure, 30.0),
            "return_share": np.where(rev > 0, returned / rev, 0.0),
            "listings": np.array(_column(docs, "n_listings"), dtype=np.int64),
            "sales": np.array(_column(docs, "n_sales"), dtype=np.int64),
            "lifecycle_stage": _lifecycle(owner, times, n, last_order, as_of_us),
            "questions_pending": np.zeros(len(docs), dtype=np.int64),
        }
    cols |= _affinity_columns(docs, factor)
    cols |= _channel_columns(docs)

    def series(name: str, v: Any) -> pl.Series:
        if isinstance(v, pl.Series):
            return v.alias(name).cast(schema[name])
        if isinstance(v, np.ndarray) and v.dtype == object:
            v = v.tolist()  # strings with gaps
        return pl.Series(name, v, dtype=schema[name], strict=False)

    frame = pl.DataFrame([series(k, v) for k, v in cols.items()])
    return frame.select(list(schema)).with_columns(
        pl.col("brand_loyalty", "department_share", "price_level").fill_nan(None)
    )


def read_docs(conn: Connection, people: Iterable[str] | None = None) -> dict[str, pdoc.Doc]:
    """Profile documents of ``people`` (all when ``None``)."""
    return dict(
        itertools.chain.from_iterable(zip(p, d, strict=True) for p, d in read_chunks(conn, people))
    )


def _chunks(conn: Connection, people: Iterable[str] | None, size: int) -> Iterator[Sequence[Any]]:
    """Rows ``(person_id, doc)`` of ``people`` (all when ``None``), ``size`` at a time."""
    from concierge.store.engine import among

    doc: Any = t.profiles.c.doc
    if conn.dialect.name == "sqlite":
        # the UTF-8 bytes as stored: both decoders take them, and making a str of each 7.7 kB
        # document first is a copy for nothing (measured: 5.1 µs a row read as text, 4.3 µs as
        # bytes, on the 48,611-person store)
        doc = cast_(doc, LargeBinary)
    q = select(t.profiles.c.person_id, doc)
    clauses: list[Any] = [None]
    if people is not None:
        clauses = list(among(conn, t.profiles.c.person_id, sorted(set(people))))
    for clause in clauses:
        stmt = (q if clause is None else q.where(clause)).execution_options(yield_per=size)
        result = conn.execute(stmt)  # a server-side cursor on PostgreSQL
        while rows := result.fetchmany(size):
            yield rows


def read_chunks(
    conn: Connection, people: Iterable[str] | None = None, *, size: int = 20_000
) -> Iterator[tuple[list[str], list[pdoc.Doc]]]:
    """Profile documents of ``people`` (all when ``None``), ``size`` at a time.

    A million parsed documents would not fit in memory (a 7.7 kB document is about 40 kB of
    Python objects): callers summarize each chunk and let it go.
    """
    for rows in _chunks(conn, people, size):
        # parsing builds many small containers; the cyclic collector would scan them again
        # and again while they are made (measured: 250 µs a document with it, 85 µs without)
        with paused_gc():
            docs = [pdoc.loads(d) for _p, d in rows]
        yield [p for p, _d in rows], docs


def read_frame_chunks(
    conn: Connection, people: Iterable[str] | None = None, *, size: int = 20_000
) -> Iterator[tuple[list[str], list[FrameDoc]]]:
    """The frame's parts (:class:`FrameDoc`) of the profiles of ``people`` (all when
    ``None``), ``size`` at a time, in the order of :func:`read_chunks`."""
    for rows in _chunks(conn, people, size):
        with paused_gc():  # as above: order times and answers are lists, tracked by it
            docs = list(map(_DECODER.decode, [d for _p, d in rows]))
        yield [p for p, _d in rows], docs


@contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector paused (and resumed if it ran before).

    For work that makes many containers and no reference cycles: the collector would walk the
    young ones again and again while they are made, and the old ones at each full collection
    (measured on the frame of 48,611 people: 4.5 µs a person of collections)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass
class PerPerson:
    """The newest per-person columns of every model, joined on ``person_id``."""

    frame: pl.DataFrame
    versions: dict[str, int] = field(default_factory=dict)
    docs: dict[str, str] = field(default_factory=dict)  # column -> meaning


def per_person(registry: Registry, *, skip: Sequence[str] = ()) -> PerPerson:
    """Join the ``per_person`` columns of the newest version of every model (the contract)."""
    frame = pl.DataFrame(schema={"person_id": pl.String})
    versions: dict[str, int] = {}
    docs: dict[str, str] = {}
    newest: dict[str, int] = {}
    for info in registry.versions():
        newest.setdefault(info.name, info.version)
    for name, version in sorted(newest.items()):
        if name in skip:
            continue
        art = registry.load(name, version)
        info = art.info
        if not info.meta.get("per_person"):
            continue
        cols = [c for c in info.meta["per_person"] if c in art.arrays]
        data: dict[str, Any] = {"person_id": art.arrays["person_id"].astype(str)}
        for c in cols:
            arr = art.arrays[c]
            data[c] = arr.astype(str) if arr.dtype.kind == "U" else arr
        part = pl.DataFrame(data).unique("person_id", keep="last")
        taken = [c for c in cols if c in frame.columns]
        if taken:
            part = part.drop(taken)  # the first model to claim a column keeps it
        frame = frame.join(part, on="person_id", how="full", coalesce=True)
        versions[name] = version
        docs.update(info.meta.get("per_person_doc", {}))
    return PerPerson(frame, versions, docs)


def numeric(frame: pl.DataFrame, columns: Sequence[str]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Columns as a float matrix (booleans as 0/1, nulls as NaN)."""
    return (
        np.column_stack(
            [frame.get_column(c).cast(pl.Float64).fill_null(np.nan).to_numpy() for c in columns]
        )
        if columns
        else np.zeros((frame.height, 0))
    )
