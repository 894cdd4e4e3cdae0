"""Ingest: validate, deduplicate, append to the log; then stitch identities and update profiles.

Two steps, each a write transaction of its own or both in one:

* **append** drops duplicates (ids already stored or repeated in the batch), checks the currency,
  and appends events and their items to the log. Once it commits, the events are acknowledged:
  in the log exactly once.
* **apply** takes every logged event past the ``applied_seq`` watermark, in log order, through
  the identity graph and into the profiles, and moves the watermark, in one transaction. So each
  event is counted exactly once whatever crashes in between, and a store opened after a crash
  catches up from the log.

:meth:`Ingestor.ingest` does both in one transaction (the library, importers, the CLI): an event
is in its profile when the call returns. The HTTP API acknowledges after the append and applies
a moment later (see :mod:`concierge.ingest.batcher`), which keeps per-request latency low.
Writers are serialised (``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL), which
makes the duplicate check, the sequence order and the identity graph race-free.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy import Connection, delete, func, select

from concierge.catalog import service as catalog
from concierge.errors import FieldError, InputError
from concierge.ingest import frames, identity
from concierge.ingest.small import (
    PRICED,
    SMALL,
    SQLITE_ITEMS,
    IngestResult,
    SmallAppend,
    event_rows,
    sqlite_events,
)
from concierge.profiles import doc as pdoc
from concierge.schema.events import ANON_PREFIX, Event
from concierge.store import log as eventlog
from concierge.store import tables as t
from concierge.store.engine import Store, among

log = logging.getLogger(__name__)

CHUNK = 500
EPOCH = "profiles_epoch"  # meta key: bumped by every change to profiles outside the applier
APPLIED = "applied_seq"  # meta key: the last log sequence counted in identities and profiles


def event_frames(events: Sequence[Event]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Turn validated events into the EVENTS and ITEMS frames."""
    ev_rows, it_rows = event_rows(events)
    ev = pl.DataFrame(ev_rows, schema=frames.EVENTS_SCHEMA, orient="row")
    it = pl.DataFrame(it_rows, schema=frames.ITEMS_SCHEMA, orient="row")
    return ev, it


AppliedHook = Callable[[Connection, pl.DataFrame, pl.DataFrame, int], None]


class Ingestor:
    """Appends events to the log and keeps profiles and identities in step.

    ``on_applied`` hooks (campaign triggers) see every batch of events as it is applied, with
    each event's ``person_id``, inside the applying transaction: what they write commits with
    the watermark, exactly once. A failing hook is logged and rolled back to a savepoint; it
    never fails the ingest.
    """

    def __init__(self, store: Store, *, half_life_days: float) -> None:
        self.store = store
        self.half_life_days = half_life_days
        self.on_applied: list[AppliedHook] = []

    def _notify(
        self, conn: Connection, people: pl.DataFrame, items: pl.DataFrame, now_us: int
    ) -> None:
        for hook in self.on_applied:
            try:
                with conn.begin_nested():
                    hook(conn, people, items, now_us)
            except Exception:
                log.exception("an on_applied hook failed; the events are applied without it")

    def ingest(self, events: Sequence[Event], *, now_us: int) -> IngestResult:
        ev, items = event_frames(events)
        return self.ingest_frames(ev, items, now_us=now_us)

    def ingest_frames(
        self, events: pl.DataFrame, items: pl.DataFrame, *, now_us: int
    ) -> IngestResult:
        """Append a batch given as frames (see :mod:`concierge.ingest.frames`)."""
        events = frames.conform(events, frames.EVENTS_SCHEMA)
        items = frames.conform(items, frames.ITEMS_SCHEMA)
        with self.store.write() as conn:
            return self._write(conn, events, items, now_us=now_us)

    # -- the transaction -------------------------------------------------------------------

    def append(self, events: Sequence[Event], *, now_us: int) -> IngestResult:
        """Append to the log only (the profiles follow with :meth:`apply_pending`)."""
        if len(events) <= SMALL:
            with self.store.write() as conn:
                return self._append_small(conn, events, now_us=now_us)
        ev, items = event_frames(events)
        ev = frames.conform(ev, frames.EVENTS_SCHEMA)
        items = frames.conform(items, frames.ITEMS_SCHEMA)
        with self.store.write() as conn:
            self.store.lock_log(conn)
            result, _, _ = self._append(conn, ev, items, now_us=now_us)
            return result

    def _append_small(
        self, conn: Connection, events: Sequence[Event], *, now_us: int
    ) -> IngestResult:
        """:meth:`_append` for a few events, in plain Python (see :mod:`.small`)."""
        plan = SmallAppend(events, now_us)
        if self.store.backend == "postgresql":
            return self._append_small_pg(conn, plan)
        # SQLite: one multi-row VALUES stores what is new and says which ids those were (the
        # rest were stored before); its text is cached per row count
        self.store.lock_log(conn)
        params = [v for r in plan.ev_rows for v in (now_us, *r)]
        ids = set(conn.exec_driver_sql(sqlite_events(len(plan.ev_rows)), tuple(params)).scalars())
        store_cur = self.store.get_meta(conn, "currency") if plan.priced else None
        new_currency = plan.stored(ids, store_cur)  # a refused currency rolls all of it back
        if not plan.first:
            return plan.done()
        if new_currency is not None:
            self.store.set_meta(conn, "currency", new_currency)
        facets = catalog.item_facets_rows(conn, plan.it_rows)
        if plan.it_rows:
            conn.exec_driver_sql(
                SQLITE_ITEMS, [(*r, f) for r, f in zip(plan.it_rows, facets, strict=True)]
            )
        if plan.has_sale:
            catalog.mark_sold(conn, plan.sold(), now_us=now_us)
        return plan.done()

    def _append_small_pg(self, conn: Connection, plan: SmallAppend) -> IngestResult:
        """The two round trips of :mod:`.small` on SQLAlchemy's connection (pipeline mode).

        The second trip commits the transaction of ``conn`` on the driver, so it is the last
        thing the transaction does: SQLAlchemy's commit at the end of :meth:`Store.write` then
        finds no transaction open and sends nothing (psycopg's commit is a no-op then). A
        failure raises here and the caller's block rolls back as usual."""
        raw: Any = conn.connection.dbapi_connection  # a psycopg connection
        with raw.pipeline():
            curs = [raw.execute(q, p) for q, p in plan.pg_first_trip(self.store.log_lock_sql())]
        new_currency = plan.first_trip_done([c.fetchall() for c in curs])
        if not plan.first:
            return plan.done()
        if plan.has_sale:
            catalog.mark_sold(conn, plan.sold(), now_us=plan.now_us)
        with raw.pipeline():
            for q, p in plan.pg_last_trip(plan.facets(), new_currency):
                raw.execute(q, p)
            raw.commit()
        return plan.done()

    def apply_pending(self, *, now_us: int, limit: int = 50_000) -> int:
        """Apply logged events past the watermark to identities and profiles; how many.

        The heavy part (reading the log, stitching, aggregating) runs in a read transaction,
        outside the writers' lock, so appends go on meanwhile; the write transaction then
        checks that the watermark has not moved (else another applier got there first and this
        round is dropped: 0) and merges the result.
        """
        with self.store.read() as conn:
            self.store.prefer_indexes(conn)  # key lookups only (see Store.prefer_indexes)
            pending = self._pending_batch(conn, limit)
            if pending is None:
                return 0
            applied, last, logged, items = pending
            graph = identity.load(conn, identity.aliases_of(logged))
            epoch = self.store.get_meta(conn, EPOCH)
            people = identity.apply(graph, logged)
            deltas = pdoc.aggregate(people, items, half_life_days=self.half_life_days)
            merged, gone = self._merged(conn, graph, deltas)
        rows = profile_rows(merged, now_us=now_us)
        with self.store.write() as conn:
            self.store.lock_profiles(conn)  # not the log's: appends go on (see Store)
            _, now_applied, now_epoch = self._state(conn)
            if now_applied != applied or now_epoch != epoch:
                return 0  # profiles changed meanwhile (another applier, an erasure, a rebuild)
            if gone:
                conn.execute(delete(t.profiles).where(t.profiles.c.person_id.in_(gone)))
            upsert_profile_rows(conn, self.store, rows)
            identity.save(conn, graph, self.store.insert(t.identities), now_us)
            self.store.set_meta(conn, APPLIED, str(last))
            self._notify(conn, people, items, now_us)
        return logged.height

    def ensure_watermark(self) -> None:
        """Record the watermark of a store that has none yet (a new one, or one from before
        the watermark, whose events were all applied as they came)."""
        with self.store.read() as conn:
            if self.store.get_meta(conn, APPLIED) is not None:
                return
        with self.store.write() as conn:
            self.store.lock_writers(conn)
            if self.store.get_meta(conn, APPLIED) is None:
                top = conn.execute(select(func.max(t.events.c.seq))).scalar() or 0
                self.store.set_meta(conn, APPLIED, str(top))

    def apply_logged(self, conn: Connection, *, now_us: int) -> int:
        """Apply everything past the watermark inside the caller's locked transaction."""
        return self._apply_pending(conn, now_us=now_us, limit=None)

    def pending(self) -> int:
        """How many logged events the profiles do not count yet."""
        top, applied = self.watermark()
        return top - applied

    def watermark(self) -> tuple[int, int]:
        """(last sequence in the log, last sequence the profiles count)."""
        with self.store.read() as conn:
            top, applied, _ = self._state(conn)
            return top, applied

    def _state(self, conn: Connection) -> tuple[int, int, str | None]:
        """(last sequence in the log, the watermark, the profiles epoch) in one query."""
        top, value, epoch = conn.exec_driver_sql(_STATE).one()
        top = int(top or 0)
        # a store from before the watermark applied every event as it came
        return top, top if value is None else int(value), epoch

    def _applied(self, conn: Connection, top: int) -> int:
        value = self.store.get_meta(conn, APPLIED)
        # a store from before the watermark applied every event as it came
        return top if value is None else int(value)

    def _write(
        self, conn: Connection, ev: pl.DataFrame, items: pl.DataFrame, *, now_us: int
    ) -> IngestResult:
        self.store.lock_writers(conn)
        top = conn.execute(select(func.max(t.events.c.seq))).scalar() or 0
        behind = self._applied(conn, top) < top
        result, unique, items = self._append(conn, ev, items, now_us=now_us)
        if behind:  # events appended earlier wait: apply everything in log order
            self._apply_pending(conn, now_us=now_us, limit=None)
        elif result.accepted:
            result.people = self._apply(conn, unique, items, now_us=now_us)
            new_top = conn.execute(select(func.max(t.events.c.seq))).scalar() or 0
            self.store.set_meta(conn, APPLIED, str(new_top))
        return result

    def _pending_batch(
        self, conn: Connection, limit: int | None
    ) -> tuple[int, int, pl.DataFrame, pl.DataFrame] | None:
        """(watermark, last seq read, events, items) past the watermark, or None."""
        top = conn.execute(select(func.max(t.events.c.seq))).scalar() or 0
        applied = self._applied(conn, top)
        if applied >= top:
            return None
        # bounded on both sides, which the planner reads as a small range even without
        # statistics (a one-sided ``seq > applied`` was a parallel scan of the whole log then:
        # measured 17 ms instead of 0.14 ms at 90,000 events; see Store.prefer_indexes)
        ev, items = eventlog.read(
            conn, t.events.c.seq > applied, t.events.c.seq <= top, limit=limit
        )
        if ev.height == 0:
            return None
        last = int(ev.get_column("seq").max())  # type: ignore[arg-type]
        return applied, last, ev.drop("seq"), items

    def _apply_pending(self, conn: Connection, *, now_us: int, limit: int | None) -> int:
        pending = self._pending_batch(conn, limit)
        if pending is None:
            return 0
        _, last, logged, items = pending
        self._apply(conn, logged, items, now_us=now_us)
        self.store.set_meta(conn, APPLIED, str(last))
        return logged.height

    def _apply(
        self, conn: Connection, unique: pl.DataFrame, items: pl.DataFrame, *, now_us: int
    ) -> int:
        """Identities and profiles for events just logged (in log order), with item facets."""
        graph = identity.load(conn, identity.aliases_of(unique))
        people = identity.apply(graph, unique)
        deltas = pdoc.aggregate(people, items, half_life_days=self.half_life_days)
        self._merge_profiles(conn, graph, deltas, now_us=now_us)
        identity.save(conn, graph, self.store.insert(t.identities), now_us)
        self._notify(conn, people, items, now_us)
        return len(deltas)

    def _append(
        self, conn: Connection, ev: pl.DataFrame, items: pl.DataFrame, *, now_us: int
    ) -> tuple[IngestResult, pl.DataFrame, pl.DataFrame]:
        result = IngestResult()
        indexed = ev.with_row_index()
        unique = indexed.unique("event_id", keep="first", maintain_order=True)
        if unique.height < ev.height:
            repeats = indexed.join(unique.select("index"), on="index", how="anti")
            result.duplicates += repeats.get_column("event_id").to_list()
        unique = unique.drop("index")
        ids = unique.get_column("event_id").to_list()
        existing: set[str] = set()
        for clause in among(conn, t.events.c.event_id, ids):
            existing.update(conn.execute(select(t.events.c.event_id).where(clause)).scalars())
        if existing:
            result.duplicates += [i for i in ids if i in existing]
            unique = unique.filter(~pl.col("event_id").is_in(list(existing)))
        if unique.height == 0:
            return result, unique, items.clear()
        # an item may only belong to an event stored now (the first copy of a repeated id)
        items = items.join(unique.select("event_id"), on="event_id", how="semi").unique(
            ["event_id", "line"], keep="first", maintain_order=True
        )
        self._check_currency(conn, unique)
        items = catalog.item_facets(conn, items)
        self.store.bulk_insert(
            conn, t.events, unique.with_columns(pl.lit(now_us).alias("received_us"))
        )
        self.store.bulk_insert(conn, t.event_items, items)
        sold = unique.filter(pl.col("type") == "sale").get_column("event_id")
        if sold.len():
            pids = items.filter(pl.col("event_id").is_in(sold.implode())).get_column("product_id")
            catalog.mark_sold(conn, pids.drop_nulls().unique().to_list(), now_us=now_us)
        result.accepted = unique.height
        return result, unique, items

    def _check_currency(self, conn: Connection, ev: pl.DataFrame) -> None:
        priced = ev.filter(pl.col("type").is_in(PRICED))
        if priced.height == 0:
            return
        # Payloads are canonical (``model_dump_json`` order): the top-level currency is the
        # last ``"currency":"XXX"`` member written structurally (inside strings the quotes are
        # escaped; free-form objects such as ``context`` come before it). A regex over that is
        # 30x faster than parsing the JSON, which matters for bulk import.
        cur = priced.with_columns(
            pl.col("payload")
            .str.extract_all(r'"currency":"[A-Z]{3}"')
            .list.last()
            .str.slice(12, 3)
            .alias("currency")
        )
        store_cur = self.store.get_meta(conn, "currency")
        if store_cur is None:
            store_cur = cur.get_column("currency").mode().sort()[0]
            self.store.set_meta(conn, "currency", store_cur)
        bad = cur.filter(pl.col("currency") != store_cur)
        if bad.height:
            raise InputError(
                [
                    FieldError("currency", f"this store sells in {store_cur}, not {c}", None)
                    for c in bad.get_column("currency").unique().sort().to_list()[:5]
                ]
            )

    def _merge_profiles(
        self,
        conn: Connection,
        graph: identity.IdentityGraph,
        deltas: dict[str, pdoc.Doc],
        *,
        now_us: int,
    ) -> None:
        out, gone = self._merged(conn, graph, deltas)
        if gone:
            conn.execute(delete(t.profiles).where(t.profiles.c.person_id.in_(gone)))
        write_profiles(conn, self.store, out, now_us=now_us)

    def _merged(
        self, conn: Connection, graph: identity.IdentityGraph, deltas: dict[str, pdoc.Doc]
    ) -> tuple[dict[str, pdoc.Doc], list[str]]:
        """The profiles after this batch (stored + deltas, merges followed), and the profiles
        of people merged away."""
        losers = {loser for loser, _ in graph.merges}
        targets = {graph.resolve(loser) for loser in losers}
        wanted = sorted(set(deltas) | losers | targets)
        stored: dict[str, pdoc.Doc] = {}
        for clause in among(conn, t.profiles.c.person_id, wanted):
            for pid, text in conn.execute(
                select(t.profiles.c.person_id, t.profiles.c.doc).where(clause)
            ):
                stored[pid] = pdoc.loads(text)
        out: dict[str, pdoc.Doc] = {}
        for pid in set(deltas) | targets:
            if pid in losers:
                continue
            base = stored.get(pid)
            delta = deltas.get(pid)
            if base is not None and delta is not None:
                out[pid] = pdoc.merge(base, delta)
            elif base is not None or delta is not None:
                out[pid] = base if base is not None else delta  # type: ignore[assignment]
        gone = [loser for loser in losers if loser in stored]
        for loser in sorted(losers):
            doc = stored.get(loser)
            if doc is None:
                continue
            target = graph.resolve(loser)
            out[target] = pdoc.merge(out[target], doc) if target in out else doc
        return out, gone


def bump_epoch(conn: Connection, store: Store) -> None:
    """Mark that profiles changed outside the applier (erasure, rebuild): an applier round
    computed before this is dropped and done again."""
    old = store.get_meta(conn, EPOCH)
    store.set_meta(conn, EPOCH, str(int(old or 0) + 1))


def write_profiles(
    conn: Connection, store: Store, docs: dict[str, pdoc.Doc], *, now_us: int
) -> None:
    upsert_profile_rows(conn, store, profile_rows(docs, now_us=now_us))


def profile_rows(docs: dict[str, pdoc.Doc], *, now_us: int) -> list[dict[str, Any]]:
    return [
        {
            "person_id": pid,
            "known": not pid.startswith(ANON_PREFIX),
            "doc": pdoc.dumps(d),
            **pdoc.typed_columns(d),
            "updated_us": now_us,
        }
        for pid, d in docs.items()
    ]


def upsert_profile_rows(conn: Connection, store: Store, rows: list[dict[str, Any]]) -> None:
    """Insert or replace profile rows: one statement of fixed text (binary arrays through
    unnest on PostgreSQL, ``executemany`` on SQLite). SQLAlchemy's upsert built a multi-row
    VALUES per batch size, which cost most of the applier's write phase on PostgreSQL (the
    phase appends wait behind; measured: 5 ms per round of 50 people)."""
    if not rows:
        return
    cols = tuple(rows[0])
    if store.backend == "postgresql":
        conn.exec_driver_sql(_pg_upsert_profiles(cols), tuple([r[c] for r in rows] for c in cols))
    else:
        conn.exec_driver_sql(_sqlite_upsert_profiles(cols), [tuple(r.values()) for r in rows])


_STATE = (
    "SELECT (SELECT max(seq) FROM events),"
    f" (SELECT value FROM meta WHERE key = '{APPLIED}'),"
    f" (SELECT value FROM meta WHERE key = '{EPOCH}')"
)


def _pg_array_type(column: str) -> str:
    kind = t.profiles.c[column].type
    if isinstance(kind, sa.Boolean):
        return "boolean"
    if isinstance(kind, sa.BigInteger):
        return "bigint"
    if isinstance(kind, sa.Integer):
        return "integer"
    if isinstance(kind, sa.Float):
        return "float8"
    return "text"


def _upsert_tail(cols: tuple[str, ...]) -> str:
    sets = ", ".join(f"{c} = excluded.{c}" for c in cols if c != "person_id")
    return f" ON CONFLICT (person_id) DO UPDATE SET {sets}"


@functools.lru_cache(maxsize=8)
def _pg_upsert_profiles(cols: tuple[str, ...]) -> str:
    arrays = ", ".join(f"%b::{_pg_array_type(c)}[]" for c in cols)
    return (
        f"INSERT INTO profiles ({', '.join(cols)}) SELECT * FROM unnest({arrays})"
        + _upsert_tail(cols)
    )


@functools.lru_cache(maxsize=8)
def _sqlite_upsert_profiles(cols: tuple[str, ...]) -> str:
    marks = ", ".join("?" * len(cols))
    return f"INSERT INTO profiles ({', '.join(cols)}) VALUES ({marks})" + _upsert_tail(cols)
