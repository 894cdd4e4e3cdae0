"""The columnar shape of events, used by bulk import and by the rebuild.

Importers turn a file into two Polars frames of this shape and hand them to
``Ingestor.ingest_frames``; the single-event path turns pydantic events into the same shape. One
shape, so that live ingest, bulk import and ``concierge rebuild`` share one feature code path.

``EVENTS`` - one row per event
    event_id      str   unique; importers derive it from the source (e.g. ``or:536365``) so a
                        second import of the same file is reported as duplicates, not stored twice
    type          str   one of ``concierge.schema.events.EVENT_TYPES``
    customer_id   str?  at least one of customer_id / anonymous_id
    anonymous_id  str?
    ts_us         i64   event time, microseconds since the Unix epoch, UTC
    payload       str   the whole event as JSON, exactly as ``Event.model_dump_json()`` would write
                        it (it must validate against ``concierge.schema.events.EventAdapter``)

``ITEMS`` - one row per product an event is about (view, cart events: one; purchase, return,
cancellation: one per line; list_item, sale: one when product_id is set)
    event_id      str   the event it belongs to
    line          i32   0-based line number within the event
    product_id    str
    variant_id    str?
    quantity      i64   > 0 (the event type says whether it adds or removes)
    unit_price    f64?
"""

from __future__ import annotations

import polars as pl

EVENTS_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "type": pl.String(),
    "customer_id": pl.String(),
    "anonymous_id": pl.String(),
    "ts_us": pl.Int64(),
    "payload": pl.String(),
}

ITEMS_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "line": pl.Int32(),
    "product_id": pl.String(),
    "variant_id": pl.String(),
    "quantity": pl.Int64(),
    "unit_price": pl.Float64(),
}

ITEM_EVENT_TYPES = frozenset(
    {
        "view",
        "add_to_cart",
        "remove_from_cart",
        "purchase",
        "return",
        "cancellation",
        "list_item",
        "sale",
    }
)


def empty_events() -> pl.DataFrame:
    return pl.DataFrame(schema=EVENTS_SCHEMA)


def empty_items() -> pl.DataFrame:
    return pl.DataFrame(schema=ITEMS_SCHEMA)


def conform(df: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Select and cast the columns of ``schema`` (missing nullable columns become nulls)."""
    cols = []
    for name, dtype in schema.items():
        if name in df.columns:
            cols.append(pl.col(name).cast(dtype))
        else:
            cols.append(pl.lit(None, dtype=dtype).alias(name))
    return df.select(cols)
