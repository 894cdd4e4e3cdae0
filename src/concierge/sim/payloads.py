"""From typed columns to the EVENTS and ITEMS frames of :mod:`concierge.ingest.frames`.

Payloads are written column-wise: the members of each event type, in the order pydantic
serializes them (read from the models, so a schema change cannot leave the simulator behind),
are encoded with Polars' ``struct.json_encode`` (the same escaping and float formatting as
pydantic). Timestamps carry the shopper's local offset. ``tests/test_sim.py`` checks a sample of
every type byte for byte against ``EventAdapter.validate_json(p).model_dump_json()``.

Event ids are ``sim-<config digest>-<position>``, numbered in time order, so a second run of the
same config is reported as duplicates by ingest, and two configs never collide.
"""

from __future__ import annotations

from typing import get_args

import polars as pl

from concierge.ingest import frames
from concierge.schema.events import EVENT_TYPES, Event
from concierge.sim.behaviour import Behaviour
from concierge.sim.timing import OffsetGrid, iso_local
from concierge.sim.world import ZONE_NAMES, Shoppers, SimConfig

HEAD = ("event_id", "customer_id", "anonymous_id", "timestamp", "received_at", "session_id")


def _field_order() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for model in get_args(get_args(Event)[0]):
        for name in get_args(model.model_fields["type"].annotation):
            out[name] = list(model.model_fields)
    return out


FIELD_ORDER = _field_order()


def payload(df: pl.DataFrame, typ: str) -> pl.Expr:
    """The canonical JSON of events of type ``typ`` whose members are columns of ``df``."""
    order = FIELD_ORDER[typ]
    cut = order.index("context")
    if tuple(order[:cut]) != HEAD:
        raise RuntimeError(f"the event envelope changed: {order[:cut]}")

    def member(name: str) -> pl.Expr:
        if name == "type":
            return pl.lit(typ).alias(name)
        if name in df.columns:
            return pl.col(name)
        return pl.lit(None, pl.String).alias(name)

    head = pl.struct([member(n) for n in order[:cut]]).struct.json_encode()
    body = pl.struct([member(n) for n in order[cut + 1 :]]).struct.json_encode()
    return head.str.strip_suffix("}") + pl.lit(',"context":{},') + body.str.strip_prefix("{")


def _items(df: pl.DataFrame, typ: str) -> pl.DataFrame | None:
    """The ITEMS rows of one part (as ``concierge.ingest.service.event_frames`` makes them)."""
    one = pl.lit(0, pl.Int32).alias("line")
    if typ == "view":
        return df.select(
            "event_id",
            one,
            "product_id",
            "variant_id",
            pl.lit(1, pl.Int64).alias("quantity"),
            pl.lit(None, pl.Float64).alias("unit_price"),
        )
    if typ in ("add_to_cart", "remove_from_cart"):
        return df.select("event_id", one, "product_id", "variant_id", "quantity", "unit_price")
    if typ in ("purchase", "return", "cancellation"):
        return (
            df.select("event_id", "lines")
            .explode("lines")
            .unnest("lines")
            .with_columns(pl.int_range(pl.len(), dtype=pl.Int32).over("event_id").alias("line"))
        )
    if typ in ("list_item", "sale"):
        return df.select(
            "event_id",
            one,
            "product_id",
            pl.lit(None, pl.String).alias("variant_id"),
            pl.lit(1, pl.Int64).alias("quantity"),
            pl.col("price").alias("unit_price"),
        )
    return None


def assemble(
    cfg: SimConfig, shoppers: Shoppers, behaviour: Behaviour
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The EVENTS and ITEMS frames, events in time order (ties: shopper, type)."""
    rank = {t: i for i, t in enumerate(EVENT_TYPES)}
    parts = behaviour.parts
    keys = pl.concat(
        [
            df.select(
                "ts_us",
                "who",
                pl.lit(rank[typ], pl.Int32).alias("rank"),
                pl.lit(i, pl.Int32).alias("part"),
                pl.int_range(pl.len(), dtype=pl.Int64).alias("row"),
            )
            for i, (typ, df) in enumerate(parts)
        ]
    )
    keys = keys.sort("ts_us", "who", "rank", "part", "row").with_row_index("pos")
    width = max(9, len(str(keys.height)))
    prefix = f"sim-{cfg.digest()}-"
    customer = pl.Series(shoppers.ids, dtype=pl.String)
    device = pl.Series(shoppers.anonymous_ids, dtype=pl.String)
    ts_all = keys.get_column("ts_us").to_numpy()
    grid = OffsetGrid(ZONE_NAMES, int(ts_all.min()), int(ts_all.max()))
    by_part = keys.partition_by("part", as_dict=True, include_key=False)
    ev_parts, it_parts = [], []
    for i, (typ, df) in enumerate(parts):
        pos = by_part[(i,)].sort("row").get_column("pos")
        who = df.get_column("who").to_numpy()
        ts = df.get_column("ts_us").to_numpy()
        offset = grid.offset_us(shoppers.zone[who], ts)
        who_s = pl.Series(who, dtype=pl.Int64)
        full = df.with_columns(pl.Series("offset_us", offset, dtype=pl.Int64)).with_columns(
            (prefix + pos.cast(pl.String).str.zfill(width)).alias("event_id"),
            pl.when(pl.col("known")).then(customer.gather(who_s)).alias("customer_id"),
            pl.when(pl.col("device")).then(device.gather(who_s)).alias("anonymous_id"),
            iso_local(pl.col("ts_us"), pl.col("offset_us")).alias("timestamp"),
            pl.lit(None, pl.String).alias("received_at"),
            pl.when(pl.col("session") >= 0)
            .then("s" + (pl.col("session") + 1).cast(pl.String).str.zfill(7))
            .alias("session_id"),
        )
        full = full.with_columns(payload(full, typ).alias("payload"), pl.lit(typ).alias("type"))
        ev_parts.append(frames.conform(full, frames.EVENTS_SCHEMA))
        items = _items(full, typ)
        if items is not None:
            it_parts.append(frames.conform(items, frames.ITEMS_SCHEMA))
    # event ids are the zero-padded position: their text order is the time order
    events = pl.concat(ev_parts).sort("event_id")
    items = pl.concat(it_parts).sort("event_id", "line")
    return events, items


__all__ = ["FIELD_ORDER", "assemble", "payload"]
