"""Audience rules evaluated over every profile at once (Polars), then over documents.

Conditions on the typed profile columns and on per-person predictions are evaluated as one
vectorised filter over the whole store: ``features.orders``, ``features.revenue``,
``features.days_since_last_order``, ``features.days_since_last_seen``, ``features.first_seen_days``,
and ``predictions.<column>`` of any per-person artifact. Anything else (``traits.*``,
``features.lifecycle_stage``, ``consent.<channel>``) needs the profile document and is checked
afterwards, only for the people the vectorised part kept.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import polars as pl
from sqlalchemy import func, select

from concierge.campaigns.definitions import AudienceSpec, Condition, ReplenishmentSpec
from concierge.campaigns.predictions import Predictions
from concierge.profiles import doc as pdoc
from concierge.profiles import view as pview
from concierge.profiles.doc import DAY_US
from concierge.store import tables as t
from concierge.store.engine import Store, among

COLUMN = {
    "features.orders": pl.col("n_orders"),
    "features.revenue": pl.col("revenue"),
    "features.days_since_last_order": (pl.col("now") - pl.col("last_order_us")) / DAY_US,
    "features.days_since_last_seen": (pl.col("now") - pl.col("last_seen_us")) / DAY_US,
    "features.first_seen_days": (pl.col("now") - pl.col("first_seen_us")) / DAY_US,
}
_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def _expr(c: Condition, expr: pl.Expr) -> pl.Expr:
    if c.op == "exists":
        return expr.is_not_null()
    if c.op == "in":
        values = c.value if isinstance(c.value, list) else [c.value]
        return expr.is_in(values)
    out: pl.Expr = _OPS[c.op](expr, c.value)
    return out.fill_null(False)


def _py(c: Condition, value: Any) -> bool:
    if c.op == "exists":
        return value is not None
    if value is None:
        return False
    if c.op == "in":
        values = c.value if isinstance(c.value, list) else [c.value]
        return value in values
    try:
        return bool(_OPS[c.op](value, c.value))
    except TypeError:
        return False


def vectorised(c: Condition) -> bool:
    return c.field in COLUMN or c.field.startswith("predictions.")


def evaluate(
    store: Store,
    spec: AudienceSpec,
    *,
    predictions: Predictions,
    now_us: int,
    half_life_days: float,
    session_gap_minutes: float,
) -> pl.DataFrame:
    """``person_id``, ``last_seen_us`` and ``occasion_value`` (the value of the audience's
    ``occasion_by`` column, else null) of every known person matching all conditions."""
    p = t.profiles
    q = select(
        p.c.person_id,
        p.c.n_orders,
        p.c.revenue,
        p.c.first_seen_us,
        p.c.last_seen_us,
        p.c.last_order_us,
    ).where(p.c.known.is_(True))
    with store.read() as conn:
        frame = pl.read_database(
            q,
            conn,
            schema_overrides={
                "person_id": pl.String,
                "n_orders": pl.Int64,
                "revenue": pl.Float64,
                "first_seen_us": pl.Int64,
                "last_seen_us": pl.Int64,
                "last_order_us": pl.Int64,
            },
        )
    frame = frame.with_columns(pl.lit(now_us, dtype=pl.Int64).alias("now"))
    if spec.stored is not None:
        frame = frame.join(stored_members(store, spec.stored), on="person_id", how="inner")
    fast = [c for c in spec.all if vectorised(c)]
    if spec.segment_id is not None:
        fast.append(Condition(field="predictions.segment_id", op="==", value=spec.segment_id))
    slow = [c for c in spec.all if not vectorised(c)]
    by = spec.occasion_by.split(".", 1)[1] if spec.occasion_by.startswith("predictions.") else None
    if by is not None or any(c.field.startswith("predictions.") for c in fast):
        preds = predictions.refresh()
        frame = frame.join(preds, on="person_id", how="left")
    if spec.occasion_by == "entry":
        frame = frame.with_columns(pl.col("entered_seq").cast(pl.String).alias("occasion_value"))
    elif by is not None:
        if by not in frame.columns:
            return (
                frame.clear()
                .select("person_id", "last_seen_us")
                .with_columns(pl.lit(None, dtype=pl.String).alias("occasion_value"))
            )
        frame = frame.filter(pl.col(by).is_not_null()).with_columns(
            pl.col(by).cast(pl.String).alias("occasion_value")
        )
    else:
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias("occasion_value"))
    for c in fast:
        if c.field in COLUMN:
            frame = frame.filter(_expr(c, COLUMN[c.field]))
        else:
            col = c.field.split(".", 1)[1]
            if col not in frame.columns:
                return frame.clear().select("person_id", "last_seen_us", "occasion_value")
            frame = frame.filter(_expr(c, pl.col(col)))
    if spec.replenishment is not None and frame.height:
        frame = _replenishment(
            store, spec.replenishment, frame, predictions=predictions, now_us=now_us
        )
    if spec.resale and frame.height:
        frame = _resale(store, frame, predictions=predictions, now_us=now_us)
    if slow and frame.height:
        keep: list[str] = []
        ids = frame.get_column("person_id").to_list()
        with store.read() as conn:
            for clause in among(conn, p.c.person_id, ids):
                for pid, text in conn.execute(select(p.c.person_id, p.c.doc).where(clause)):
                    doc = pdoc.loads(text)
                    if all(
                        _py(
                            c, _doc_value(c.field, doc, now_us, half_life_days, session_gap_minutes)
                        )
                        for c in slow
                    ):
                        keep.append(pid)
        frame = frame.filter(pl.col("person_id").is_in(keep))
    extra = [c for c in (*REPLENISHMENT_COLUMNS, *RESALE_COLUMNS) if c in frame.columns]
    return frame.select("person_id", "last_seen_us", "occasion_value", *extra)


REPLENISHMENT_COLUMNS = ("category", "product_ids", "cadence_days")
RESALE_COLUMNS = ("resale_order_id", "resale_product_id", "sell_delay_days", "age_days")


def _resale(
    store: Store, frame: pl.DataFrame, *, predictions: Predictions, now_us: int
) -> pl.DataFrame:
    """Keep the resellers holding an item ready to resell; the occasion is the item."""
    from concierge.campaigns import resale

    with store.read() as conn:
        ready = resale.ready(conn, predictions.registry, now_us=now_us)
    return frame.drop("occasion_value").join(
        ready.select(
            "person_id",
            pl.concat_str(
                [pl.col("order_id").fill_null(""), pl.col("product_id")], separator=":"
            ).alias("occasion_value"),
            pl.col("order_id").alias("resale_order_id"),
            pl.col("product_id").alias("resale_product_id"),
            "sell_delay_days",
            "age_days",
        ),
        on="person_id",
        how="inner",
    )


def _replenishment(
    store: Store,
    rep: ReplenishmentSpec,
    frame: pl.DataFrame,
    *,
    predictions: Predictions,
    now_us: int,
) -> pl.DataFrame:
    """Keep the people due in a category; the occasion is that category's cycle."""
    from concierge.campaigns import replenishment

    with store.read() as conn:
        due = replenishment.due(
            conn,
            predictions.registry,
            now_us=now_us,
            when=rep.when,
            categories=rep.categories or None,
            min_purchases=rep.min_purchases,
        )
    return frame.drop("occasion_value").join(
        due.select(
            "person_id",
            pl.concat_str(
                [pl.col("category"), pl.col("last_us").cast(pl.String)], separator="@"
            ).alias("occasion_value"),
            *REPLENISHMENT_COLUMNS,
        ),
        on="person_id",
        how="inner",
    )


def stored_members(store: Store, key: str) -> pl.DataFrame:
    """The current members of a stored audience (by id or name): ``person_id`` and
    ``entered_seq``, the sequence number of the ``audience_changes`` row of their current entry
    (the newest ``entered`` change; members from before changes were recorded get 0).

    One query each for the membership and for the entries, joined in Polars."""
    from concierge.audiences import service as aservice

    m, ch = t.audience_members, t.audience_changes
    with store.read() as conn:
        aid = aservice.get(conn, key)["audience_id"]
        members = pl.read_database(
            select(m.c.person_id).where(m.c.audience_id == aid),
            conn,
            schema_overrides={"person_id": pl.String},
        )
        entries = pl.read_database(
            select(ch.c.person_id, func.max(ch.c.seq).label("entered_seq"))
            .where(ch.c.audience_id == aid, ch.c.change == "entered")
            .group_by(ch.c.person_id),
            conn,
            schema_overrides={"person_id": pl.String, "entered_seq": pl.Int64},
        )
    return members.join(entries, on="person_id", how="left").with_columns(
        pl.col("entered_seq").fill_null(0)
    )


def _doc_value(field: str, doc: pdoc.Doc, now_us: int, half_life_days: float, gap: float) -> Any:
    head, _, rest = field.partition(".")
    if head == "traits":
        reg = doc["traits"].get(rest.split(".")[0])
        return None if reg is None else reg[2]
    if head == "consent":
        reg = doc["consent"].get(rest)
        return bool(reg is not None and reg[2])
    if head == "features":
        value: Any = pview.view(
            doc, as_of_us=now_us, half_life_days=half_life_days, session_gap_minutes=gap
        )
        for part in rest.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value
    return None
