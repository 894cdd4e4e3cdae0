""" "Sell your item": the buyers whose own resale rhythm says an item they bought is ready to go.

The seller side of :class:`~concierge.models.cadence.CadenceModel` gives each person a posterior
buy-to-list delay (median and 80% window) and a resale share. A person is prompted for an item
when they are a reseller (at least one listing matched to a purchase, and a posterior share of
at least the model's ``likely_to_sell_share``), bought the item as a single unit, have not
listed it yet (no ``list_item`` names its order, nor its product), and its age today is inside
their window. The purchases and listings are read from the log at run time in one query and
scored with array operations, so a listing made since the model was trained stops the prompt
at once. One row per person: the item whose age is nearest their median delay. The occasion is
the (order, product): one prompt per item, whatever the number of runs.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from sqlalchemy import Connection

from concierge.models.people import read as read_log
from concierge.models.registry import Registry
from concierge.profiles.doc import DAY_US
from concierge.store import tables as t

SCHEMA: dict[str, pl.DataType] = {
    "person_id": pl.String(),
    "order_id": pl.String(),
    "product_id": pl.String(),
    "age_days": pl.Float64(),
    "sell_delay_days": pl.Float64(),
    "resale_share": pl.Float64(),
}


def ready(conn: Connection, registry: Registry, *, now_us: int) -> pl.DataFrame:
    """``person_id``, ``order_id``, ``product_id``, ``age_days``, ``sell_delay_days`` and
    ``resale_share`` of each person with an item ready to resell (none without a trained
    cadence model)."""
    from concierge.audiences.frame import cadence_model

    empty = pl.DataFrame(schema=SCHEMA)
    model, _version = cadence_model(registry)
    if model is None:
        return empty
    ev, items = read_log(
        conn, t.events.c.type.in_(["purchase", "list_item"]), t.events.c.ts_us <= now_us
    )
    buys = ev.filter(pl.col("type") == "purchase").select(
        "event_id",
        "person_id",
        "ts_us",
        pl.col("payload").str.json_path_match("$.order_id").alias("order_id"),
    )
    if buys.height == 0:
        return empty
    listed = ev.filter(pl.col("type") == "list_item").select(
        "person_id",
        pl.col("payload").str.json_path_match("$.bought_order_id").alias("order_id"),
        pl.col("payload").str.json_path_match("$.product_id").alias("product_id"),
    )
    lines = (
        items.filter(pl.col("quantity") == 1)
        .join(buys, on="event_id")
        .select("person_id", "order_id", "product_id", "ts_us")
        .join(
            listed.filter(pl.col("order_id").is_not_null()).select("person_id", "order_id"),
            on=["person_id", "order_id"],
            how="anti",
        )
        .join(
            listed.filter(pl.col("product_id").is_not_null()).select("person_id", "product_id"),
            on=["person_id", "product_id"],
            how="anti",
        )
    )
    if lines.height == 0:
        return empty
    persons = lines.get_column("person_id").unique().sort()
    s = model.sell(persons.to_numpy().astype(np.str_))
    per = pl.DataFrame(
        {
            "person_id": persons,
            "low": s["sell_window_low_days"],
            "high": s["sell_window_high_days"],
            "sell_delay_days": s["sell_delay_days"],
            "resale_share": s["resale_share"],
            "seller": (s["listed"] >= 1) & (s["resale_share"] >= model.config.likely_to_sell_share),
        }
    )
    age = (pl.lit(now_us) - pl.col("ts_us")).cast(pl.Float64) / DAY_US
    out = (
        lines.join(per.filter(pl.col("seller")), on="person_id")
        .with_columns(age.alias("age_days"))
        .filter(pl.col("age_days").is_between(pl.col("low"), pl.col("high")))
        .with_columns((pl.col("age_days") - pl.col("sell_delay_days")).abs().alias("_gap"))
        .sort("_gap", "order_id", "product_id")
        .unique("person_id", keep="first", maintain_order=True)
    )
    return out.select(list(SCHEMA))
