"""RFM summaries of the event log: the inputs of the lifetime models.

A *transaction* is a day (UTC calendar day) on which a person bought something: several orders of
one person on one day count as one transaction whose value is their sum. This is the convention of
Fader, Hardie & Lee (2005), whose CDNOW data has one record per customer and day, and of the
``lifetimes`` library (``summary_data_from_transaction_data(freq="D")``).

For each person with a purchase up to ``as_of`` (inclusive):

``frequency``
    x, the number of *repeat* transactions (transactions after the first).
``recency``
    t_x, the time from the first to the last transaction, in periods.
``T``
    the time from the first transaction to ``as_of``, in periods.
``monetary_value``
    the mean value of the repeat transactions (0 when x = 0), as Gamma-Gamma wants it.

Periods are ``period_days`` long: 1 (days, the unit of the stored models) or 7 (weeks, the unit of
the CDNOW papers). ``as_of`` is always an argument; the last date in the data is never used.

Everything is a Polars group-by over the whole log: no Python loop per person or per row.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from concierge.clock import to_us
from concierge.errors import InputError

DAY_US = 86_400_000_000

TRANSACTIONS_SCHEMA: dict[str, pl.DataType] = {
    "person_id": pl.String(),
    "ts_us": pl.Int64(),
    "value": pl.Float64(),
}


def _as_us(value: datetime | int, field: str) -> int:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InputError.one(field, "give a timezone-aware datetime")
        return to_us(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise InputError.one(field, "expected a timezone-aware datetime or microseconds since 1970")


def purchases(events: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    """The purchases of the log as ``person_id, ts_us, value`` (value = Σ quantity × unit price).

    ``events`` must carry ``person_id`` (see :func:`concierge.ingest.identity.apply`),
    ``event_id``, ``type`` and ``ts_us``; ``items`` is the item frame of
    :func:`concierge.store.log.read`.
    Returns and cancellations are not subtracted: the models describe the buying process.
    """
    for col in ("person_id", "event_id", "type", "ts_us"):
        if col not in events.columns:
            raise InputError.one(col, "the events frame has no such column")
    bought = events.filter(pl.col("type") == "purchase").select("event_id", "person_id", "ts_us")
    value = (
        items.join(bought.select("event_id"), on="event_id", how="semi")
        .group_by("event_id")
        .agg((pl.col("quantity") * pl.col("unit_price").fill_null(0.0)).sum().alias("value"))
    )
    return (
        bought.join(value, on="event_id", how="left")
        .select(
            pl.col("person_id").cast(pl.String),
            pl.col("ts_us").cast(pl.Int64),
            pl.col("value").fill_null(0.0).cast(pl.Float64),
        )
        .filter(pl.col("person_id").is_not_null())
    )


def _daily(transactions: pl.DataFrame) -> pl.DataFrame:
    for col in TRANSACTIONS_SCHEMA:
        if col not in transactions.columns:
            raise InputError.one(col, "the transactions frame has no such column")
    if transactions.get_column("value").is_nan().any():
        raise InputError.one("value", "NaN purchase value")
    return transactions.group_by("person_id", (pl.col("ts_us") // DAY_US).alias("day")).agg(
        pl.col("value").sum()
    )


def _summarise(daily: pl.DataFrame, as_of_us: int, period_days: float) -> pl.DataFrame:
    period_us = period_days * DAY_US
    gaps = pl.col("day").sort().diff().drop_nulls()
    return (
        daily.group_by("person_id")
        .agg(
            (pl.len() - 1).cast(pl.Int64).alias("frequency"),
            pl.col("day").min().alias("first_day"),
            pl.col("day").max().alias("last_day"),
            pl.col("value").sort_by("day").slice(1).mean().alias("monetary_value"),
            pl.col("value").sort_by("day").first().alias("first_value"),
            gaps.median().alias("median_gap_days"),
        )
        .with_columns(
            ((pl.col("last_day") - pl.col("first_day")) / period_days).alias("recency"),
            ((as_of_us - pl.col("first_day") * DAY_US) / period_us).alias("T"),
            ((as_of_us - pl.col("last_day") * DAY_US) / DAY_US).alias("days_since_last"),
            pl.col("monetary_value").fill_null(0.0),
        )
        .select(
            "person_id",
            "frequency",
            "recency",
            "T",
            "monetary_value",
            "first_value",
            "days_since_last",
            "median_gap_days",
            (pl.col("first_day") * DAY_US).alias("first_us"),
            (pl.col("last_day") * DAY_US).alias("last_us"),
        )
        .sort("person_id")
    )


def rfm_summary(
    transactions: pl.DataFrame, *, as_of: datetime | int, period_days: float = 1.0
) -> pl.DataFrame:
    """One row per person who bought up to ``as_of`` (inclusive), sorted by ``person_id``.

    Parameters
    ----------
    transactions
        ``person_id, ts_us, value`` (see :func:`purchases`).
    as_of
        The end of observation (aware datetime or microseconds since 1970); later rows are ignored.
    period_days
        Length of the time unit of ``recency`` and ``T`` in days (7 for weeks).

    Returns
    -------
    polars.DataFrame
        ``person_id, frequency, recency, T, monetary_value, first_value, days_since_last,
        median_gap_days, first_us, last_us`` (``median_gap_days`` is null when x = 0).

    Examples
    --------
    >>> import polars as pl
    >>> day = 86_400_000_000
    >>> tx = pl.DataFrame({"person_id": ["a", "a", "a", "b"],
    ...                    "ts_us": [0, day // 2, 10 * day, 3 * day],
    ...                    "value": [1.0, 2.0, 5.0, 4.0]})
    >>> s = rfm_summary(tx, as_of=20 * day)
    >>> s.select("person_id", "frequency", "recency", "T", "monetary_value").rows()
    [('a', 1, 10.0, 20.0, 5.0), ('b', 0, 0.0, 17.0, 0.0)]
    """
    if period_days <= 0:
        raise InputError.one("period_days", "must be positive")
    as_of_us = _as_us(as_of, "as_of")
    kept = transactions.filter(pl.col("ts_us") <= as_of_us)
    return _summarise(_daily(kept), as_of_us, period_days)


def calibration_holdout(
    transactions: pl.DataFrame,
    *,
    calibration_end: datetime | int,
    holdout_end: datetime | int,
    period_days: float = 1.0,
) -> pl.DataFrame:
    """The summary at ``calibration_end`` plus what each of those people did after it.

    Transactions in ``(calibration_end, holdout_end]`` give ``frequency_holdout`` (transaction
    days), ``monetary_value_holdout`` (their mean value, 0 if none) and ``duration_holdout`` (the
    holdout length in periods). People whose first purchase is in the holdout are not included:
    the models predict only for people already seen.
    """
    cal_us = _as_us(calibration_end, "calibration_end")
    hold_us = _as_us(holdout_end, "holdout_end")
    if hold_us <= cal_us:
        raise InputError.one("holdout_end", "must be after calibration_end")
    if period_days <= 0:
        raise InputError.one("period_days", "must be positive")
    cal = rfm_summary(transactions, as_of=cal_us, period_days=period_days)
    later = _daily(transactions.filter((pl.col("ts_us") > cal_us) & (pl.col("ts_us") <= hold_us)))
    hold = later.group_by("person_id").agg(
        pl.len().cast(pl.Int64).alias("frequency_holdout"),
        pl.col("value").mean().alias("monetary_value_holdout"),
    )
    return (
        cal.join(hold, on="person_id", how="left")
        .with_columns(
            pl.col("frequency_holdout").fill_null(0),
            pl.col("monetary_value_holdout").fill_null(0.0),
            pl.lit((hold_us - cal_us) / (period_days * DAY_US)).alias("duration_holdout"),
        )
        .sort("person_id")
    )
