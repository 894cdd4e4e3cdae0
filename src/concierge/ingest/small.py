"""Small appends: the few events of one group commit, in plain Python, on both paths.

The API's group commits append a few to a few hundred events at a time. For those, a dozen
Polars queries cost more than the work (measured), so :class:`SmallAppend` does it in plain
Python, in steps that two drivers share:

* :meth:`Ingestor.append <concierge.ingest.service.Ingestor.append>`, on a worker thread
  through SQLAlchemy's connection (SQLite, and PostgreSQL outside the server);
* :class:`AsyncPgAppender`, on the server's event loop through psycopg's ``AsyncConnection``
  (PostgreSQL). On the thread, each round trip to the server released the GIL and took it back
  from a busy event loop; on the loop the statements are awaited like any other I/O (measured
  at 2,000 single-event requests/s on 2 cores: p99 13.0-14.1 ms against 18.4-21.5 ms, and 0.23
  against 0.26-0.28 ms of CPU per request in the API process, bench_http_ingest).

Both send the same statements in the same two round trips (pipeline mode): first the log's lock,
the events (which answers with the ids it stored), the catalog rows of their items' facets and,
when an event carries a price, the store's currency; then the items and the commit. A group with
a sale takes the thread path (a sold one-of-a-kind also updates the catalog, see
:func:`concierge.catalog.service.mark_sold`).
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from concierge.catalog import service as catalog
from concierge.clock import to_us
from concierge.errors import FieldError, InputError
from concierge.schema.events import Event

log = logging.getLogger(__name__)

SMALL = 256  # batches up to this size are appended without Polars

# Single events on PostgreSQL: the rows go as one array per column through unnest, so the
# statement text is the same for any number of rows, and the arrays go in binary. SQLAlchemy's
# multi-row VALUES renders a new text per row count, which psycopg converts afresh each time, and
# text arrays escape every element with a regex (measured: 6.3 ms per group of 24 events with
# VALUES, 4.1 ms with unnest in text, see below with binary). unnest yields the rows in array
# order, so the log sequence keeps the order of arrival.
PG_EVENTS = (
    "INSERT INTO events (received_us, event_id, type, customer_id, anonymous_id, ts_us, payload)"
    " SELECT %s, * FROM unnest(%b::varchar[], %b::varchar[], %b::varchar[], %b::varchar[],"
    " %b::bigint[], %b::text[]) ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)

PG_ITEMS = (
    "INSERT INTO event_items (event_id, line, product_id, variant_id, quantity, unit_price,"
    " facets) SELECT * FROM unnest(%b::varchar[], %b::integer[], %b::varchar[], %b::varchar[],"
    " %b::integer[], %b::float8[], %b::text[])"
)
PG_CURRENCY = "SELECT value FROM meta WHERE key = 'currency'"
PG_SET_CURRENCY = (
    "INSERT INTO meta (key, value) VALUES ('currency', %s)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
# Single events on SQLite: plain SQL on the driver. SQLAlchemy's insert with RETURNING built,
# cached and bound a statement per group, which cost as much CPU as the writes (measured:
# 1.7 ms against 0.7 ms on PostgreSQL per group of 24 events before this).
SQLITE_ITEMS = (
    "INSERT INTO event_items (event_id, line, product_id, variant_id, quantity, unit_price,"
    " facets) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
PRICED = ("purchase", "return", "cancellation", "list_item", "sale")


@functools.lru_cache(maxsize=SMALL + 1)
def sqlite_events(n: int) -> str:
    """Append ``n`` events and return the ids stored (those not stored before), in one
    statement; multi-row VALUES keeps the order of arrival in the log sequence."""
    row = "(?, ?, ?, ?, ?, ?, ?)"
    return (
        "INSERT INTO events (received_us, event_id, type, customer_id, anonymous_id, ts_us,"
        f" payload) VALUES {', '.join([row] * n)}"
        " ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
    )


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: list[str] = field(default_factory=list)
    people: int = 0  # profiles touched

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "people": self.people}


def event_rows(
    events: Sequence[Event],
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Validated events as rows of the EVENTS and ITEMS shapes."""
    ev_rows: list[tuple[Any, ...]] = []
    it_rows: list[tuple[Any, ...]] = []
    for e in events:
        ts = to_us(e.timestamp)
        ev_rows.append((e.event_id, e.type, e.customer_id, e.anonymous_id, ts, e.model_dump_json()))
        typ = e.type
        if typ == "view":
            it_rows.append((e.event_id, 0, e.product_id, e.variant_id, 1, None))  # type: ignore[union-attr]
        elif typ in ("add_to_cart", "remove_from_cart"):
            it_rows.append(
                (e.event_id, 0, e.product_id, e.variant_id, e.quantity, e.unit_price)  # type: ignore[union-attr]
            )
        elif typ in ("purchase", "return", "cancellation"):
            for i, line in enumerate(e.lines):  # type: ignore[union-attr]
                it_rows.append(
                    (
                        e.event_id,
                        i,
                        line.product_id,
                        line.variant_id,
                        line.quantity,
                        line.unit_price,
                    )
                )
        elif typ in ("list_item", "sale") and e.product_id is not None:  # type: ignore[union-attr]
            it_rows.append((e.event_id, 0, e.product_id, None, 1, e.price))  # type: ignore[union-attr]
    return ev_rows, it_rows


class SmallAppend:
    """One small append in the steps both drivers share (see the module docstring)."""

    def __init__(self, events: Sequence[Event], now_us: int) -> None:
        self.now_us = now_us
        self.result = IngestResult()
        seen: set[str] = set()
        self.first: list[Event] = []  # the events to store: first occurrence of each id
        for e in events:
            if e.event_id in seen:
                self.result.duplicates.append(e.event_id)
            else:
                seen.add(e.event_id)
                self.first.append(e)
        self.ev_rows, self.it_rows = event_rows(self.first)
        self.priced = any(e.type in PRICED for e in self.first)
        self.has_sale = any(e.type == "sale" for e in self.first)
        self.found: Sequence[Sequence[Any]] = []  # catalog rows of the facets (PostgreSQL)

    def pg_first_trip(self, lock_sql: str) -> list[tuple[str, tuple[Any, ...]]]:
        """The first round trip on PostgreSQL: lock, events, facets[, currency]."""
        pids = catalog.item_products(self.it_rows)
        cols = [list(c) for c in zip(*self.ev_rows, strict=True)]
        trip = [
            (lock_sql, ()),
            (PG_EVENTS, (self.now_us, *cols)),
            (catalog.PG_FACETS, (pids, pids)),
        ]
        if self.priced:
            trip.append((PG_CURRENCY, ()))
        return trip

    def first_trip_done(self, results: Sequence[Sequence[Sequence[Any]]]) -> str | None:
        """Take the rows of :meth:`pg_first_trip`'s statements, in order: see :meth:`stored`
        (what it returns); the facets' catalog rows are kept for :meth:`facets`."""
        self.found = results[2]
        currency = results[3] if self.priced else None
        return self.stored({r[0] for r in results[1]}, currency[0][0] if currency else None)

    def facets(self) -> list[str]:
        """The facets of the items still to store, from the rows of the first trip."""
        return catalog.facets_of(self.it_rows, self.found)

    def stored(self, ids: set[str], store_currency: str | None) -> str | None:
        """Keep what the log took (``ids``; the rest was stored before) and check the
        currencies of priced events against the store's; returns the currency to record when
        the store has none yet. Raises :class:`InputError` (nothing may be committed then)."""
        if len(ids) < len(self.first):
            self.result.duplicates += [e.event_id for e in self.first if e.event_id not in ids]
            self.first = [e for e in self.first if e.event_id in ids]
            self.it_rows = [r for r in self.it_rows if r[0] in ids]
        currencies = [e.currency for e in self.first if e.type in PRICED]  # type: ignore[union-attr]
        if not currencies:
            return None
        new = None
        if store_currency is None:
            counts = Counter(currencies)
            store_currency = new = min(c for c in counts if counts[c] == max(counts.values()))
        bad = sorted({c for c in currencies if c != store_currency})
        if bad:
            raise InputError(
                [
                    FieldError("currency", f"this store sells in {store_currency}, not {c}", None)
                    for c in bad[:5]
                ]
            )
        return new

    def sold(self) -> list[str]:
        """Products sold by this append's sale events."""
        return sorted({e.product_id for e in self.first if e.type == "sale" and e.product_id})

    def pg_last_trip(
        self, facets: list[str], new_currency: str | None
    ) -> list[tuple[str, tuple[Any, ...]]]:
        """The second round trip on PostgreSQL, before the commit: [currency,] items."""
        trip: list[tuple[str, tuple[Any, ...]]] = []
        if new_currency is not None:
            trip.append((PG_SET_CURRENCY, (new_currency,)))
        if self.it_rows:
            cols = [list(c) for c in zip(*self.it_rows, strict=True)]
            trip.append((PG_ITEMS, (*cols, facets)))
        return trip

    def done(self) -> IngestResult:
        self.result.accepted = len(self.first)
        return self.result


class AsyncPgAppender:
    """Small appends on PostgreSQL from the event loop, on one connection of its own.

    ``append`` returns ``None`` for a group it leaves to the thread path (more than ``SMALL``
    events, or a sale). A failed append rolls back (nothing of the group is stored) and raises;
    a connection found broken is dropped and the next append connects afresh.
    """

    def __init__(self, conninfo: str, lock_sql: str, now_us: Callable[[], int]) -> None:
        self.conninfo = conninfo
        self.lock_sql = lock_sql
        self.now_us = now_us
        self._conn: Any = None

    async def append(self, events: Sequence[Event]) -> IngestResult | None:
        if len(events) > SMALL or any(e.type == "sale" for e in events):
            return None
        if self._conn is None or self._conn.closed:
            import psycopg  # PostgreSQL stores only

            self._conn = await psycopg.AsyncConnection.connect(
                self.conninfo, prepare_threshold=None
            )
        conn = self._conn
        plan = SmallAppend(events, self.now_us())
        try:
            async with conn.pipeline():
                curs = [await conn.execute(q, p) for q, p in plan.pg_first_trip(self.lock_sql)]
            new_currency = plan.first_trip_done([await c.fetchall() for c in curs])
            if not plan.first:
                await conn.rollback()  # all stored before: nothing was written
                return plan.done()
            async with conn.pipeline():
                for q, p in plan.pg_last_trip(plan.facets(), new_currency):
                    await conn.execute(q, p)
                await conn.commit()
        except BaseException:
            await self._abandon()
            raise
        return plan.done()

    async def _abandon(self) -> None:
        """Roll back after a failure; drop the connection if that fails too."""
        conn = self._conn
        if conn is None or conn.closed:
            self._conn = None
            return
        try:
            await conn.rollback()
        except Exception:
            log.warning("the ingest connection is broken; connecting afresh next time")
            await self.close()

    async def close(self) -> None:
        if self._conn is not None:
            try:
                await self._conn.close()
            finally:
                self._conn = None
