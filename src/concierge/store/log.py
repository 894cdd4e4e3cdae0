"""Reading the event log back as frames: the one query behind rebuild, apply and erasure."""

from __future__ import annotations

from typing import Any

import polars as pl
from sqlalchemy import Connection, String, any_, bindparam, select
from sqlalchemy.dialects.postgresql import ARRAY

from concierge.ingest import frames
from concierge.store import tables as t

# full schemas, so an empty or all-null column still has its type
EVENT_COLUMNS: dict[str, pl.DataType] = {"seq": pl.Int64(), **frames.EVENTS_SCHEMA}
ITEM_COLUMNS: dict[str, pl.DataType] = {**frames.ITEMS_SCHEMA, "facets": pl.String()}


ANY_IDS = 50_000  # PostgreSQL: up to this many events, their items are looked up by id


def _ids_param(ids: list[str]) -> Any:
    return bindparam("ids", value=ids, type_=ARRAY(String))


def read(
    conn: Connection, *where: Any, limit: int | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Events (with ``seq``, in log order) matching ``where`` and their items with facets."""
    q = select(
        t.events.c.seq,
        t.events.c.event_id,
        t.events.c.type,
        t.events.c.customer_id,
        t.events.c.anonymous_id,
        t.events.c.ts_us,
        t.events.c.payload,
    ).order_by(t.events.c.seq)
    if where:
        q = q.where(*where)
    if limit is not None:
        q = q.limit(limit)
    ev = pl.read_database(q, conn, schema_overrides=EVENT_COLUMNS)
    items_q = select(
        t.event_items.c.event_id,
        t.event_items.c.line,
        t.event_items.c.product_id,
        t.event_items.c.variant_id,
        t.event_items.c.quantity,
        t.event_items.c.unit_price,
        t.event_items.c.facets,
    )
    if where or limit is not None:
        if ev.height == 0:
            return ev, pl.DataFrame(schema=ITEM_COLUMNS)
        if conn.dialect.name == "postgresql" and ev.height <= ANY_IDS:
            # the ids themselves, one array: an index lookup each whatever the statistics. The
            # subquery below was planned as a hash join over all of event_items when the table
            # had no statistics yet (a new or fast-growing store before autovacuum's ANALYZE):
            # measured 27-30 ms instead of 2-3 ms for 150 events among 90,000
            ids = ev.get_column("event_id").to_list()
            items_q = items_q.where(t.event_items.c.event_id == any_(_ids_param(ids)))
        else:
            lo, hi = ev.get_column("seq").min(), ev.get_column("seq").max()
            owners = select(t.events.c.event_id).where(
                t.events.c.seq >= lo, t.events.c.seq <= hi, *where
            )
            items_q = items_q.where(t.event_items.c.event_id.in_(owners))
    items = pl.read_database(items_q, conn, schema_overrides=ITEM_COLUMNS)
    return ev, items
