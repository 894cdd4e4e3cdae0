"""The UCI Online Retail format (and Online Retail II): one row per invoice line.

Rows become one ``purchase`` event per invoice (its lines in file order) with the source invoice
number as event id (``or:536365``), so a second import of the same file stores nothing twice.
Invoices whose number starts with ``C`` are ``cancellation`` events (quantities made positive).
Rows without a customer belong to an anonymous guest per invoice (``or-guest-536544``). Each
customer also gets one ``identify`` event carrying their country (ISO code) as location.

Rows refused, with the field and the reason (the rest of the file is imported):

* a missing invoice number, stock code or date, or one that does not parse;
* a quantity that is not a whole number, or zero;
* a negative unit price (the file's ``Adjust bad debt`` rows are accounting entries, not sales);
* a negative quantity outside a ``C`` invoice (stock write-offs: damaged, lost, "?"), or a
  positive one inside a ``C`` invoice.

A unit price of 0 is kept (free samples and gifts are real lines). ``InvoiceDate`` is local UK
time; ``timezone`` says otherwise. Both column namings are accepted: ``InvoiceNo, UnitPrice,
CustomerID`` (Online Retail) and ``Invoice, Price, Customer ID`` (Online Retail II).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from concierge.errors import InputError
from concierge.ingest import frames
from concierge.ingest.importers.base import (
    MAX_ID,
    Parsed,
    as_text,
    bad_rows,
    base_payload,
    json_value,
    read_table,
    to_bad_list,
)
from concierge.schema.catalog import Product

CURRENCY = "GBP"
ALIASES = {
    "invoice": ("InvoiceNo", "Invoice"),
    "stock": ("StockCode",),
    "description": ("Description",),
    "quantity": ("Quantity",),
    "date": ("InvoiceDate",),
    "price": ("UnitPrice", "Price"),
    "customer": ("CustomerID", "Customer ID"),
    "country": ("Country",),
}
DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%m/%d/%Y %H:%M", "%d/%m/%Y %H:%M")

# the country names of the UCI files → ISO 3166-1 alpha-2 (names with no code are left out)
COUNTRIES = {
    "Australia": "AU", "Austria": "AT", "Bahrain": "BH", "Belgium": "BE", "Brazil": "BR",
    "Canada": "CA", "Channel Islands": "JE", "Cyprus": "CY", "Czech Republic": "CZ",
    "Denmark": "DK", "EIRE": "IE", "Finland": "FI", "France": "FR", "Germany": "DE",
    "Greece": "GR", "Hong Kong": "HK", "Iceland": "IS", "Israel": "IL", "Italy": "IT",
    "Japan": "JP", "Korea": "KR", "Lebanon": "LB", "Lithuania": "LT", "Malta": "MT",
    "Netherlands": "NL", "Nigeria": "NG", "Norway": "NO", "Poland": "PL", "Portugal": "PT",
    "RSA": "ZA", "Saudi Arabia": "SA", "Singapore": "SG", "Spain": "ES", "Sweden": "SE",
    "Switzerland": "CH", "Thailand": "TH", "USA": "US", "United Arab Emirates": "AE",
    "United Kingdom": "GB", "West Indies": "TT", "Bermuda": "BM",
}  # fmt: skip


def _parses(text: str, fmt: str) -> bool:
    try:
        datetime.strptime(text, fmt)
    except ValueError:
        return False
    return True


def _columns(df: pl.DataFrame) -> dict[str, str]:
    found = {}
    for key, names in ALIASES.items():
        name = next((n for n in names if n in df.columns), None)
        if name is None and key not in ("description", "country", "customer"):
            raise InputError.one(
                "path", f"not an Online Retail file: no {' or '.join(names)} column"
            )
        if name is not None:
            found[key] = name
    return found


def _text(df: pl.DataFrame, col: str | None, *, ident: bool = False) -> pl.Expr:
    if col is None:
        return pl.lit(None, pl.String)
    if ident and df.schema[col].is_float():  # Parquet copies hold ids as floats (NaN = missing)
        return pl.col(col).fill_nan(None).cast(pl.Int64, strict=False).cast(pl.String)
    return as_text(col)


def parse(
    path: Path, *, mapping: dict[str, Any] | None = None, timezone: str = "Europe/London"
) -> Parsed:
    if mapping:
        raise InputError.one("mapping", "the online-retail format takes no column mapping")
    raw = read_table(path)
    cols = _columns(raw)
    df = raw.select(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("row"),
        _text(raw, cols["invoice"], ident=True).alias("invoice"),
        _text(raw, cols["stock"], ident=True).alias("stock"),
        _text(raw, cols.get("description")).alias("description"),
        _text(raw, cols["quantity"]).alias("qty_text"),
        _text(raw, cols["date"]).alias("date_text"),
        _text(raw, cols["price"]).alias("price_text"),
        _text(raw, cols.get("customer"), ident=True).alias("customer"),
        _text(raw, cols.get("country")).alias("country"),
    )
    # the first format that parses the first date is used for the whole column (fast path);
    # rows it cannot read try the other formats
    sample = df.get_column("date_text").drop_nulls().head(1).to_list()
    fmt = next((f for f in DATE_FORMATS if sample and _parses(sample[0], f)), DATE_FORMATS[0])
    stamp = pl.col("date_text").str.strptime(pl.Datetime("us"), fmt, strict=False)
    if df.select(stamp.is_null().sum()).item() > df.get_column("date_text").null_count():
        stamp = pl.coalesce(
            [stamp]
            + [
                pl.col("date_text").str.strptime(pl.Datetime("us"), f, strict=False)
                for f in DATE_FORMATS
                if f != fmt
            ]
        )
    df = df.with_columns(
        pl.col("qty_text").cast(pl.Float64, strict=False).alias("qty_f"),
        pl.col("price_text").cast(pl.Float64, strict=False).alias("price"),
        stamp.dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
        .dt.convert_time_zone("UTC")
        .dt.epoch("us")
        .alias("ts_us"),
        pl.col("invoice").str.starts_with("C").alias("cancel"),
        pl.when(pl.col("customer") == "")
        .then(None)
        .otherwise(pl.col("customer"))
        .alias("customer"),
    ).with_columns(pl.col("qty_f").cast(pl.Int64, strict=False).alias("quantity"))
    missing = [
        (pl.col(c).is_null() | (pl.col(c) == ""), n, "missing")
        for c, n in (
            ("invoice", cols["invoice"]),
            ("stock", cols["stock"]),
            ("date_text", cols["date"]),
        )
    ]
    checks = [
        *missing,
        (
            pl.col("stock").str.len_chars() > MAX_ID,
            cols["stock"],
            f"longer than {MAX_ID} characters",
        ),
        (
            pl.col("qty_f").is_null() | (pl.col("qty_f") != pl.col("qty_f").round()),
            cols["quantity"],
            "not a whole number",
        ),
        (pl.col("quantity") == 0, cols["quantity"], "zero"),
        (pl.col("price").is_null() | pl.col("price").is_nan(), cols["price"], "not a number"),
        (
            pl.col("price") < 0,
            cols["price"],
            "negative unit price (a bad-debt adjustment, not a sale)",
        ),
        (pl.col("ts_us").is_null(), cols["date"], "not a date and time this importer reads"),
        (
            pl.col("cancel") & (pl.col("quantity") > 0),
            cols["quantity"],
            "positive quantity in a cancellation (C) invoice",
        ),
        (
            ~pl.col("cancel") & (pl.col("quantity") < 0),
            cols["quantity"],
            "negative quantity outside a cancellation (C) invoice (a stock adjustment, not a sale)",
        ),
    ]
    bad = bad_rows(df, checks)
    good = df.join(bad.select("row"), on="row", how="anti")
    good = good.with_columns(
        pl.col("quantity").abs(),
        pl.concat_str(pl.lit("or:"), pl.col("invoice")).alias("event_id"),
        pl.col("customer").alias("customer_id"),
        pl.when(pl.col("customer").is_null())
        .then(pl.concat_str(pl.lit("or-guest-"), pl.col("invoice")))
        .otherwise(None)
        .alias("anonymous_id"),
    ).with_columns(pl.int_range(pl.len(), dtype=pl.Int32).over("invoice").alias("line"))
    items = good.select(
        "event_id",
        "line",
        pl.col("stock").alias("product_id"),
        pl.lit(None, pl.String).alias("variant_id"),
        "quantity",
        pl.col("price").alias("unit_price"),
    )
    line_json = pl.struct(
        pl.col("stock").alias("product_id"),
        pl.lit(None, pl.String).alias("variant_id"),
        pl.col("quantity"),
        pl.col("price").alias("unit_price"),
    ).struct.json_encode()
    orders = (
        good.with_columns(line_json.alias("lj"))
        .group_by("invoice", maintain_order=True)
        .agg(
            pl.col("event_id").first(),
            pl.col("customer_id").first(),
            pl.col("anonymous_id").first(),
            pl.col("ts_us").min(),
            pl.col("cancel").first(),
            pl.col("lj").str.join(","),
        )
    )
    typ = pl.when(pl.col("cancel")).then(pl.lit("cancellation")).otherwise(pl.lit("purchase"))
    head, type_member = base_payload(typ)
    tail = (
        pl.when(pl.col("cancel"))
        .then(pl.lit(',"reason":null}'))
        .otherwise(pl.lit(',"total":null}'))
    )
    orders = orders.with_columns(typ.alias("type")).with_columns(
        pl.concat_str(
            head,
            pl.lit(","),
            type_member,
            pl.lit(',"order_id":'),
            json_value(pl.col("invoice")),
            pl.lit(f',"currency":"{CURRENCY}","lines":['),
            pl.col("lj"),
            pl.lit("]"),
            tail,
        ).alias("payload")
    )
    events = [frames.conform(orders, frames.EVENTS_SCHEMA)]
    identify = _identify(good)
    if identify.height:
        events.append(identify)
    return Parsed(
        events=pl.concat(events),
        items=frames.conform(items, frames.ITEMS_SCHEMA),
        products=_products(good),
        bad_rows=to_bad_list(bad),
        n_rows=df.height,
    )


def _identify(good: pl.DataFrame) -> pl.DataFrame:
    """One ``identify`` per customer with the country of their first invoice."""
    codes = pl.DataFrame({"country": list(COUNTRIES), "code": list(COUNTRIES.values())})
    people = (
        good.filter(pl.col("customer_id").is_not_null())
        .group_by("customer_id", maintain_order=True)
        .agg(pl.col("ts_us").min(), pl.col("country").get(pl.col("ts_us").arg_min()))
        .join(codes, on="country", how="inner")
        .with_columns(
            pl.concat_str(pl.lit("or:identify:"), pl.col("customer_id")).alias("event_id"),
            pl.lit(None, pl.String).alias("anonymous_id"),
            pl.lit("identify").alias("type"),
        )
    )
    head, type_member = base_payload("identify")
    traits = (
        '"traits":{"email":null,"phone":null,"first_name":null,"last_name":null,'
        '"timezone":null,"locale":null,"location":{"country":'
    )
    return frames.conform(
        people.with_columns(
            pl.concat_str(
                head,
                pl.lit(","),
                type_member,
                pl.lit("," + traits),
                json_value(pl.col("code")),
                pl.lit(',"region":null,"city":null},"preferred_channel":null}}'),
            ).alias("payload")
        ),
        frames.EVENTS_SCHEMA,
    )


def _products(good: pl.DataFrame) -> list[Product]:
    """One catalog product per stock code: its last description and positive price in the file."""
    rows = (
        good.group_by("stock", maintain_order=True)  # file order is time order
        .agg(
            pl.col("description")
            .filter(pl.col("description").is_not_null() & (pl.col("description") != ""))
            .last()
            .alias("title"),
            pl.col("price").filter(pl.col("price") > 0).last().alias("price"),
        )
        .with_columns(pl.col("price").fill_null(0.0), pl.col("title").fill_null(""))
    )
    return [
        Product(product_id=s, title=t[:500], price=p, currency=CURRENCY)
        for s, t, p in rows.iter_rows()
    ]
