"""The CDNOW format (Fader & Hardie): whitespace-separated ``customer date cds dollars`` lines.

``CDNOW_master.txt`` has a header line and four columns; the 1/10 sample (``CDNOW_sample.txt``)
has no header and five (master id, sample id, date, cds, dollars): both are read. Each line is
one ``purchase`` of ``cds`` units of a single product ``cdnow-cd`` at ``dollars / cds`` each,
at midnight of its date in ``timezone`` (UTC by default), in USD. Several lines of one customer
on one day are distinct purchases (``cdnow:<customer>:<date>:<n>``). Refused rows: a line that
does not have four or five fields, a date that is not ``YYYYMMDD``, a count that is not a
positive whole number, an amount that is not a non-negative number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from concierge.errors import InputError
from concierge.ingest import frames
from concierge.ingest.importers.base import (
    Parsed,
    bad_rows,
    base_payload,
    json_value,
    to_bad_list,
)
from concierge.schema.catalog import Product

CURRENCY = "USD"
PRODUCT = "cdnow-cd"


def parse(path: Path, *, mapping: dict[str, Any] | None = None, timezone: str = "UTC") -> Parsed:
    if mapping:
        raise InputError.one("mapping", "the cdnow format takes no column mapping")
    lines = pl.read_csv(
        path,
        has_header=False,
        separator="\x1f",
        new_columns=["text"],
        infer_schema=False,
        quote_char=None,
    )
    first = lines.get_column("text").head(1).to_list()
    if first and first[0] is not None and "customer" in first[0].lower():
        lines = lines.slice(1)
    parts = pl.col("text").str.strip_chars().str.replace_all(r"\s+", " ").str.split(" ")
    df = lines.select(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("row"), parts.alias("f")
    ).with_columns(pl.col("f").list.len().alias("n"))
    five = pl.col("n") == 5
    df = df.with_columns(
        pl.col("f").list.get(0, null_on_oob=True).alias("customer"),
        pl.when(five)
        .then(pl.col("f").list.get(2, null_on_oob=True))
        .otherwise(pl.col("f").list.get(1, null_on_oob=True))
        .alias("date"),
        pl.when(five)
        .then(pl.col("f").list.get(3, null_on_oob=True))
        .otherwise(pl.col("f").list.get(2, null_on_oob=True))
        .alias("cds_text"),
        pl.when(five)
        .then(pl.col("f").list.get(4, null_on_oob=True))
        .otherwise(pl.col("f").list.get(3, null_on_oob=True))
        .alias("amount_text"),
    ).with_columns(
        pl.col("date")
        .str.strptime(pl.Datetime("us"), "%Y%m%d", strict=False)
        .dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
        .dt.convert_time_zone("UTC")
        .dt.epoch("us")
        .alias("ts_us"),
        pl.col("cds_text").cast(pl.Int64, strict=False).alias("cds"),
        pl.col("amount_text").cast(pl.Float64, strict=False).alias("amount"),
    )
    checks = [
        (~pl.col("n").is_in([4, 5]), "line", "expected 4 or 5 whitespace-separated fields"),
        (pl.col("ts_us").is_null(), "date", "not a date as YYYYMMDD"),
        (
            pl.col("cds").is_null() | (pl.col("cds") <= 0),
            "number_of_cds",
            "not a positive whole number",
        ),
        (
            pl.col("amount").is_null() | pl.col("amount").is_nan() | (pl.col("amount") < 0),
            "dollar_value",
            "not a non-negative number",
        ),
    ]
    bad = bad_rows(df, checks)
    good = (
        df.join(bad.select("row"), on="row", how="anti")
        .with_columns(
            (pl.col("amount") / pl.col("cds")).alias("unit_price"),
            pl.int_range(pl.len()).over("customer", "date").alias("k"),
        )
        .with_columns(
            pl.concat_str(
                pl.lit("cdnow:"),
                pl.col("customer"),
                pl.lit(":"),
                pl.col("date"),
                pl.lit(":"),
                pl.col("k").cast(pl.String),
            ).alias("event_id"),
            pl.col("customer").alias("customer_id"),
            pl.lit(None, pl.String).alias("anonymous_id"),
            pl.lit("purchase").alias("type"),
        )
    )
    head, type_member = base_payload("purchase")
    line = pl.struct(
        pl.lit(PRODUCT).alias("product_id"),
        pl.lit(None, pl.String).alias("variant_id"),
        pl.col("cds").alias("quantity"),
        pl.col("unit_price"),
    ).struct.json_encode()
    events = good.with_columns(
        pl.concat_str(
            head,
            pl.lit(","),
            type_member,
            pl.lit(',"order_id":'),
            json_value(pl.col("event_id")),
            pl.lit(f',"currency":"{CURRENCY}","lines":['),
            line,
            pl.lit('],"total":null}'),
        ).alias("payload")
    )
    items = good.select(
        "event_id",
        pl.lit(0, pl.Int32).alias("line"),
        pl.lit(PRODUCT).alias("product_id"),
        pl.lit(None, pl.String).alias("variant_id"),
        pl.col("cds").alias("quantity"),
        "unit_price",
    )
    median: Any = good.get_column("unit_price").median() if good.height else None
    price = float(median) if median is not None else 0.0
    return Parsed(
        events=frames.conform(events, frames.EVENTS_SCHEMA),
        items=frames.conform(items, frames.ITEMS_SCHEMA),
        products=[
            Product(
                product_id=PRODUCT,
                title="CD",
                price=round(price, 2),
                currency=CURRENCY,
                category=["music", "cd"],
            )
        ],
        bad_rows=to_bad_list(bad),
        n_rows=df.height,
    )
