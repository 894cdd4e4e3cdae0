"""What every importer returns, and the vectorized pieces they share.

An importer turns a file into the EVENTS and ITEMS frames of :mod:`concierge.ingest.frames`
(with payloads in the canonical form ``Event.model_dump_json()`` writes), a list of catalog
products, and the rows it refused, each with its row number, the field at fault and the reason.
Everything is done with Polars expressions over whole columns; payload JSON is written with
``struct.json_encode`` (the same escaping and float formatting as pydantic's serializer, which
``tests/test_importers.py`` checks byte for byte).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from concierge.errors import InputError
from concierge.ingest import frames
from concierge.schema.catalog import Product

MAX_ID = 128


@dataclass(frozen=True)
class BadRow:
    """A refused row: ``row`` is the 1-based data row (the first row after the header is 1)."""

    row: int
    field: str
    reason: str


@dataclass
class Parsed:
    events: pl.DataFrame
    items: pl.DataFrame
    products: list[Product] = field(default_factory=list)
    bad_rows: list[BadRow] = field(default_factory=list)
    n_rows: int = 0


def read_table(path: Path, *, columns_as_strings: bool = True) -> pl.DataFrame:
    """A CSV (optionally gzipped) or Parquet file; CSV columns are read as text.

    A file that cannot be read at all (malformed quoting, rows longer than the header, not
    Parquet) is an :class:`InputError` on ``path`` with the reader's first line of explanation.
    """
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            return pl.read_parquet(path)
        if name.endswith((".csv", ".csv.gz", ".txt", ".tsv", ".tsv.gz")):
            sep = "\t" if ".tsv" in name else ","
            return pl.read_csv(path, separator=sep, infer_schema=not columns_as_strings)
    except (pl.exceptions.PolarsError, OSError) as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise InputError.one("path", f"{path.name}: cannot be read ({first})") from None
    raise InputError.one("path", f"{path.name}: expected a .csv, .csv.gz or .parquet file")


def as_text(col: str) -> pl.Expr:
    """A column as stripped text, whatever its type (floats holding ids lose their ``.0``)."""
    return pl.col(col).cast(pl.String).str.strip_chars()


def bad_rows(df: pl.DataFrame, checks: list[tuple[pl.Expr, str, str]]) -> pl.DataFrame:
    """Evaluate ``(is_bad, field, reason)`` checks; one row per refused row (its first problem).

    ``df`` must hold a ``row`` column (1-based data row numbers).
    """
    if not checks:
        return pl.DataFrame(schema={"row": pl.Int64, "field": pl.String, "reason": pl.String})
    chain: Any = pl.when(checks[0][0]).then(pl.lit(checks[0][1] + "\x00" + checks[0][2]))
    for cond, fld, reason in checks[1:]:
        chain = chain.when(cond).then(pl.lit(fld + "\x00" + reason))
    problem: pl.Expr = chain.otherwise(None)
    out = (
        df.select(pl.col("row").cast(pl.Int64), problem.alias("p"))
        .filter(pl.col("p").is_not_null())
        .with_columns(pl.col("p").str.split_exact("\x00", 1).alias("s"))
        .unnest("s")
        .rename({"field_0": "field", "field_1": "reason"})
        .select("row", "field", "reason")
    )
    return out


def to_bad_list(df: pl.DataFrame) -> list[BadRow]:
    return [BadRow(r, f, m) for r, f, m in df.sort("row").iter_rows()]


def iso_utc(ts_us: pl.Expr) -> pl.Expr:
    """Microseconds since the epoch → the ISO text pydantic writes for a UTC datetime."""
    dt = ts_us.cast(pl.Datetime("us"))
    return (
        pl.when(ts_us % 1_000_000 == 0)
        .then(dt.dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
        .otherwise(dt.dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ"))
    )


def json_value(expr: pl.Expr) -> pl.Expr:
    """One value as JSON text (strings escaped, floats as pydantic writes them)."""
    return pl.struct(expr.alias("v")).struct.json_encode().str.slice(5).str.strip_suffix("}")


def base_payload(type_: str | pl.Expr, *, context: str = "{}") -> tuple[pl.Expr, pl.Expr]:
    """The common head of every event's JSON (fields in model order), split around ``context``.

    Needs columns ``event_id``, ``customer_id``, ``anonymous_id``, ``ts_us``. Returns the text
    up to and including ``"context":{}`` and the ``"type":...`` member that follows it.
    """
    head = pl.struct(
        pl.col("event_id"),
        pl.col("customer_id"),
        pl.col("anonymous_id"),
        iso_utc(pl.col("ts_us")).alias("timestamp"),
        pl.lit(None, pl.String).alias("received_at"),
        pl.lit(None, pl.String).alias("session_id"),
    ).struct.json_encode()
    head = head.str.strip_suffix("}") + pl.lit(f',"context":{context}')
    t = pl.lit(type_) if isinstance(type_, str) else type_
    return head, pl.lit('"type":') + json_value(t)


def check_timezone(name: str, field: str) -> str:
    """An IANA zone name, or an :class:`InputError` naming ``field``."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError.one(
            field, f"unknown time zone {name!r} (use an IANA name like Europe/London)"
        ) from None
    return name


def empty_parsed(n_rows: int = 0, bad: list[BadRow] | None = None) -> Parsed:
    return Parsed(frames.empty_events(), frames.empty_items(), [], bad or [], n_rows)
