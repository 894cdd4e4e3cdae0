"""Replenishment per category: who is due to buy *in a category* again, on their own rhythm there.

A person who buys running shoes every ~60 days and socks every ~20 has two cadences; the
overall one (``predictions.due_soon``, any purchase) mixes them. Here each (person, category)
is scored with the category's prior of the trained :class:`~concierge.models.cadence.CadenceModel`
and the person's own intervals *in that category*, read from the purchase log at run time, so
a purchase made since the model was trained restarts that category's cycle at once.

The whole log of purchases is read once and scored with array operations (no per-person SQL):
``occasions`` → ``interval_table`` → :meth:`CadenceModel.windows`. Per person the most due
category is kept (the smallest expected time to the next purchase), with the products they
bought in it, most recent first, which fill the message's ``trigger_items`` block. The occasion
is the category and the time of its last purchase: one message per person per category
cycle, whatever the number of runs.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl
from sqlalchemy import Connection

from concierge.models import cadence
from concierge.models.people import deepest
from concierge.models.people import read as read_log
from concierge.models.registry import Registry
from concierge.store import tables as t

SCHEMA: dict[str, pl.DataType] = {
    "person_id": pl.String(),
    "category": pl.String(),
    "last_us": pl.Int64(),
    "cadence_days": pl.Float64(),
    "next_purchase_due_days": pl.Float64(),
    "product_ids": pl.List(pl.String()),
}


def due(
    conn: Connection,
    registry: Registry,
    *,
    now_us: int,
    when: Literal["due_soon", "overdue", "due"] = "due",
    categories: list[str] | None = None,
    min_purchases: int = 2,
    k: int = 5,
) -> pl.DataFrame:
    """One row per person with a category due: ``person_id``, ``category``, ``last_us``,
    ``cadence_days``, ``next_purchase_due_days`` and ``product_ids`` (up to ``k``).

    ``when``: ``due_soon`` (the expected next purchase within the model's ``due_soon_days``),
    ``overdue`` (later than the 80% window of their rhythm there) or ``due`` (either).
    ``categories`` keeps those categories and their sub-categories (``shoes`` keeps
    ``shoes>running``); ``min_purchases`` in the category before it has a rhythm of its own.
    No trained cadence model: nobody."""
    from concierge.audiences.frame import cadence_model

    empty = pl.DataFrame(schema=SCHEMA)
    model, _version = cadence_model(registry)
    if model is None:
        return empty
    ev, items = read_log(conn, t.events.c.type == "purchase", t.events.c.ts_us <= now_us)
    occ = cadence.occasions(ev, items).filter(pl.col("category") != cadence.ALL)
    if categories:
        keep = pl.lit(False)
        for c in categories:
            keep = keep | (pl.col("category") == c) | pl.col("category").str.starts_with(c + ">")
        occ = occ.filter(keep)
    if occ.height == 0:
        return empty
    tab = cadence.interval_table(occ).filter(pl.col("purchases") >= min_purchases)
    if tab.height == 0:
        return empty
    w = model.windows(
        tab["category"].to_numpy().astype(np.str_),
        tab["n"].to_numpy().astype(np.float64),
        tab["s1"].to_numpy().astype(np.float64),
        tab["s2"].to_numpy().astype(np.float64),
        tab["last_us"].to_numpy().astype(np.int64),
        as_of_us=now_us,
    )
    flag = (
        w["due_soon"]
        if when == "due_soon"
        else w["overdue"]
        if when == "overdue"
        else w["due_soon"] | w["overdue"]
    )
    scored = tab.select("person_id", "category", "last_us").with_columns(
        pl.Series("cadence_days", w["cadence_days"]),
        pl.Series("next_purchase_due_days", w["next_purchase_due_days"]),
        pl.Series("flag", np.asarray(flag, dtype=bool)),
    )
    best = (
        scored.filter(pl.col("flag"))
        .sort("next_purchase_due_days", "category")
        .unique("person_id", keep="first", maintain_order=True)
        .drop("flag")
    )
    if best.height == 0:
        return empty
    buys = ev.select("event_id", "person_id", "ts_us")
    bought = (
        items.join(buys, on="event_id")
        .with_columns(deepest("cat", pl.col("facets")).alias("category"))
        .join(best.select("person_id", "category"), on=["person_id", "category"])
        .sort("ts_us", descending=True)
        .group_by("person_id", "category")
        .agg(pl.col("product_id").unique(maintain_order=True).head(k).alias("product_ids"))
    )
    return best.join(bought, on=["person_id", "category"], how="left").select(list(SCHEMA))
