"""The UCI Online Retail format (and Online Retail II): one row per invoice line.

Rows become one ``purchase`` event per invoice (its lines in file order) with the source invoice
number as event id (``or:536365``), so a second import of the same file stores nothing twice.
Invoices whose number starts with ``C`` are ``cancellation`` events (quantities made positive;
the file does not say which invoice they cancel). Rows without a customer belong to an anonymous
guest per invoice (``or-guest-536544``). Each customer also gets one ``identify`` event
(``or:identify:17850``) carrying the ISO code of the country of their first invoice as
``traits.location.country``; names with no country code (``Unspecified``, ``European
Community``, ``Channel Islands``, ``West Indies``) give no identify event. Each stock code
becomes a catalog product titled by its last description, priced at its last positive price.

Rows refused, with the field and the reason (the rest of the file is imported):

* a missing invoice number, stock code or date, or a date that does not parse (or falls in the
  hour skipped when clocks go forward);
* ids too long for the event schema (128 characters), a customer id starting with ``anon:`` or
  ``erased:`` (reserved);
* a quantity that is not a whole number, or zero;
* a unit price that is not a number, or negative (the file's two ``Adjust bad debt`` rows are
  accounting entries, not sales);
* a negative quantity outside a ``C`` invoice (the file's 1,336 stock write-offs: damaged,
  lost, "?", all without a customer and priced 0), or a positive one inside a ``C`` invoice;
* a unit price of 0 on a sale line without a customer (the file's 1,139 such lines are stock found,
  checked or adjusted; 762 of their 785 invoices have no priced line at all, and importing them
  would invent guest orders worth nothing);
* the lines of an invoice longer than an order may be (10,000 lines).

So the full file gives 2,477 refused rows. A unit price of 0 on a customer's line is kept (the
file's 40 such lines are free items in real orders).

Non-merchandise codes (``POST`` postage, ``M`` manual, ``D`` discount, ``BANK CHARGES``, gift
vouchers...) are kept as lines of their invoice, since they are what the customer paid, but their
catalog products are inactive, in category ``non-merchandise``, so nothing recommends postage.

``InvoiceDate`` is local UK time (``timezone`` says otherwise); in the repeated hour when clocks
go back, the earlier (summer) reading is taken. Both column namings are accepted: ``InvoiceNo,
UnitPrice, CustomerID`` (Online Retail) and ``Invoice, Price, Customer ID`` (Online Retail II);
Parquet copies that hold ids as floats, or real timestamps, are read too.

Speed: everything is Polars expressions over whole columns (one pass for the typed columns and
the refusal flag, reasons worked out for refused rows only, then items, orders, identify events
and products in one ``collect_all``); payload JSON is written by ``struct.json_encode``.
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
from concierge.schema.events import ANON_PREFIX, ERASED_PREFIX

CURRENCY = "GBP"
MAX_LINES = 10_000  # lines an order may have (PurchaseEvent.lines)
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
# stock codes that are not goods: postage, carriage, manual entries, discounts, samples, bad
# debt, fees, a charity commission (and gift vouchers, ``gift_0001_<value>``)
NOT_MERCHANDISE = frozenset(
    {"POST", "DOT", "C2", "M", "m", "D", "S", "B", "BANK CHARGES", "AMAZONFEE", "CRUK"}
)
DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%m/%d/%Y %H:%M", "%d/%m/%Y %H:%M")

# the country names of the UCI files → ISO 3166-1 alpha-2 (names with no code are left out)
COUNTRIES = {
    "Australia": "AU", "Austria": "AT", "Bahrain": "BH", "Belgium": "BE", "Brazil": "BR",
    "Canada": "CA", "Cyprus": "CY", "Czech Republic": "CZ",
    "Denmark": "DK", "EIRE": "IE", "Finland": "FI", "France": "FR", "Germany": "DE",
    "Greece": "GR", "Hong Kong": "HK", "Iceland": "IS", "Israel": "IL", "Italy": "IT",
    "Japan": "JP", "Korea": "KR", "Lebanon": "LB", "Lithuania": "LT", "Malta": "MT",
    "Netherlands": "NL", "Nigeria": "NG", "Norway": "NO", "Poland": "PL", "Portugal": "PT",
    "RSA": "ZA", "Saudi Arabia": "SA", "Singapore": "SG", "Spain": "ES", "Sweden": "SE",
    "Switzerland": "CH", "Thailand": "TH", "USA": "US", "United Arab Emirates": "AE",
    "United Kingdom": "GB", "Bermuda": "BM",
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


def _text(df: pl.DataFrame, col: str | None, *, ident: bool = False, strip: bool = True) -> pl.Expr:
    if col is None:
        return pl.lit(None, pl.String)
    if ident and df.schema[col].is_float():  # Parquet copies hold ids as floats (NaN = missing)
        return pl.col(col).fill_nan(None).cast(pl.Int64, strict=False).cast(pl.String)
    return as_text(col) if strip else pl.col(col).cast(pl.String)


def parse(
    path: Path, *, mapping: dict[str, Any] | None = None, timezone: str = "Europe/London"
) -> Parsed:
    if mapping:
        raise InputError.one("mapping", "the online-retail format takes no column mapping")
    raw = read_table(path)
    cols = _columns(raw)
    checks = _checks(cols)
    fmt = _date_format(raw.get_column(cols["date"]))
    df = _typed(raw, cols, checks, [fmt], timezone)
    if df.get_column("ts_us").null_count() > df.get_column("date_text").null_count():
        # some dates do not read in the format of the first one: try all formats on all rows
        df = _typed(raw, cols, checks, [fmt, *(f for f in DATE_FORMATS if f != fmt)], timezone)
    refused = bad_rows(df.filter(pl.col("bad")), checks)
    good = _good(df.lazy().filter(~pl.col("bad")))
    items, orders, identify, products = pl.collect_all(
        [_items(good), _orders(good), _identify(good), _products(good)]
    )
    if items.height and items.get_column("line").max() >= MAX_LINES:  # type: ignore[operator]
        # rare: an invoice longer than an order may be; refuse its lines and redo
        long = items.filter(pl.col("line") >= MAX_LINES).get_column("event_id").unique()
        too_long = df.filter(
            ~pl.col("bad") & pl.concat_str(pl.lit("or:"), pl.col("invoice")).is_in(long.implode())
        ).select(
            "row",
            pl.lit(cols["invoice"]).alias("field"),
            pl.lit(f"the invoice has more than {MAX_LINES:,} lines").alias("reason"),
        )
        refused = pl.concat([refused, too_long])
        good = _good(df.lazy().join(refused.lazy().select("row"), on="row", how="anti"))
        items, orders, identify, products = pl.collect_all(
            [_items(good), _orders(good), _identify(good), _products(good)]
        )
    return Parsed(
        events=frames.conform(pl.concat([orders, identify]), frames.EVENTS_SCHEMA),
        items=frames.conform(items, frames.ITEMS_SCHEMA),
        products=[
            Product(product_id=s, title=t, price=p, currency=CURRENCY)
            if s not in NOT_MERCHANDISE and not s.startswith("gift_")
            else Product(
                product_id=s,
                title=t,
                price=p,
                currency=CURRENCY,
                category=["non-merchandise"],
                active=False,
            )
            for s, t, p in products.iter_rows()
        ],
        bad_rows=to_bad_list(refused),
        n_rows=df.height,
    )


def _good(rows: pl.LazyFrame) -> pl.DataFrame:
    """The accepted lines with their event's ids; quantities positive (cancellations too)."""
    return rows.select(
        "invoice",
        "stock",
        "description",
        "price",
        "ts_us",
        "cancel",
        "country",
        pl.col("quantity").abs(),
        pl.concat_str(pl.lit("or:"), pl.col("invoice")).alias("event_id"),
        pl.col("customer").alias("customer_id"),
        pl.when(pl.col("customer").is_null())
        .then(pl.concat_str(pl.lit("or-guest-"), pl.col("invoice")))
        .otherwise(None)
        .alias("anonymous_id"),
    ).collect()


def _typed(
    raw: pl.DataFrame,
    cols: dict[str, str],
    checks: list[tuple[pl.Expr, str, str]],
    formats: list[str],
    timezone: str,
) -> pl.DataFrame:
    """One pass over the file: typed columns and a ``bad`` flag (reasons come later, for the
    refused rows only). Description and Country are trimmed later, per product and per customer.
    """
    dtype = raw.schema[cols["date"]]
    if isinstance(dtype, pl.Datetime):  # a Parquet file may hold real timestamps
        stamp = pl.col("date_value").cast(pl.Datetime("us", dtype.time_zone))
        if dtype.time_zone is not None:
            stamp = stamp.dt.convert_time_zone(timezone).dt.replace_time_zone(None)
    else:
        stamp = pl.coalesce(
            [pl.col("date_text").str.strptime(pl.Datetime("us"), f, strict=False) for f in formats]
        )
    lines = (
        raw.lazy()
        .select(
            pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("row"),
            _text(raw, cols["invoice"], ident=True).alias("invoice"),
            _text(raw, cols["stock"], ident=True).alias("stock"),
            _text(raw, cols.get("description"), strip=False).alias("description"),
            _text(raw, cols["quantity"]).alias("qty_text"),
            _text(raw, cols["date"]).alias("date_text"),
            pl.col(cols["date"]).alias("date_value"),
            _text(raw, cols["price"]).alias("price_text"),
            _text(raw, cols.get("customer"), ident=True).alias("customer"),
            _text(raw, cols.get("country"), strip=False).alias("country"),
        )
        .with_columns(
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
        )
        .with_columns(pl.col("qty_f").cast(pl.Int64, strict=False).alias("quantity"))
    )
    return lines.with_columns(
        pl.any_horizontal([c.fill_null(False) for c, _, _ in checks]).alias("bad")
    ).collect()


def _date_format(dates: pl.Series) -> str:
    """The first of ``DATE_FORMATS`` that reads the first date of the file."""
    sample = dates.drop_nulls().head(1).cast(pl.String).str.strip_chars().to_list()
    return next((f for f in DATE_FORMATS if sample and _parses(sample[0], f)), DATE_FORMATS[0])


def _checks(cols: dict[str, str]) -> list[tuple[pl.Expr, str, str]]:
    """``(is_bad, field, reason)`` in the order a row's first problem is reported."""
    qty, price, date = cols["quantity"], cols["price"], cols["date"]
    customer = cols.get("customer", "CustomerID")
    missing = [
        (pl.col(c).is_null() | (pl.col(c) == ""), name, "missing")
        for c, name in (("invoice", cols["invoice"]), ("stock", cols["stock"]), ("date_text", date))
    ]
    return [
        *missing,
        (
            pl.col("stock").str.len_chars() > MAX_ID,
            cols["stock"],
            f"longer than {MAX_ID} characters",
        ),
        (
            pl.col("invoice").str.len_chars() > MAX_ID - 3,
            cols["invoice"],
            "too long for an event id",
        ),
        (
            pl.col("customer").str.len_chars() > MAX_ID,
            customer,
            f"longer than {MAX_ID} characters",
        ),
        (
            pl.col("customer").str.starts_with(ANON_PREFIX)
            | pl.col("customer").str.starts_with(ERASED_PREFIX),
            customer,
            f"customer ids may not start with {ANON_PREFIX!r} or {ERASED_PREFIX!r}",
        ),
        (
            pl.col("qty_f").is_null()
            | pl.col("quantity").is_null()
            | (pl.col("qty_f") != pl.col("qty_f").round()),
            qty,
            "not a whole number",
        ),
        (pl.col("quantity") == 0, qty, "zero"),
        (pl.col("price").is_null() | ~pl.col("price").is_finite(), price, "not a number"),
        (pl.col("price") < 0, price, "negative unit price (a bad-debt adjustment, not a sale)"),
        (pl.col("ts_us").is_null(), date, "not a date and time this importer reads"),
        (
            pl.col("cancel") & (pl.col("quantity") > 0),
            qty,
            "positive quantity in a cancellation (C) invoice",
        ),
        (
            ~pl.col("cancel") & (pl.col("quantity") < 0),
            qty,
            "negative quantity outside a cancellation (C) invoice (a stock adjustment, not a sale)",
        ),
        (
            (pl.col("price") == 0) & pl.col("customer").is_null() & ~pl.col("cancel"),
            price,
            "zero unit price without a customer (a stock adjustment, not a sale)",
        ),
    ]


def _items(good: pl.DataFrame) -> pl.LazyFrame:
    return good.lazy().select(
        "event_id",
        pl.int_range(pl.len(), dtype=pl.Int32).over("invoice").alias("line"),
        pl.col("stock").alias("product_id"),
        pl.lit(None, pl.String).alias("variant_id"),
        "quantity",
        pl.col("price").alias("unit_price"),
    )


def _orders(good: pl.DataFrame) -> pl.LazyFrame:
    """One purchase or cancellation per invoice, its lines in file order."""
    line = pl.struct(
        pl.col("stock").alias("product_id"),
        pl.lit(None, pl.String).alias("variant_id"),
        pl.col("quantity"),
        pl.col("price").alias("unit_price"),
    )
    typ = pl.when(pl.col("cancel")).then(pl.lit("cancellation")).otherwise(pl.lit("purchase"))
    head, type_member = base_payload(typ)
    tail = (
        pl.when(pl.col("cancel"))
        .then(pl.lit(',"reason":null}'))
        .otherwise(pl.lit(',"total":null}'))
    )
    return (
        good.lazy()
        .group_by("invoice", maintain_order=True)
        .agg(
            pl.col("event_id").first(),
            pl.col("customer_id").first(),
            pl.col("anonymous_id").first(),
            pl.col("ts_us").min(),
            pl.col("cancel").first(),
            line.alias("lines"),  # in file order within the invoice
        )
        .select(
            "event_id",
            typ.alias("type"),
            "customer_id",
            "anonymous_id",
            "ts_us",
            pl.concat_str(
                head,
                pl.lit(","),
                type_member,
                pl.lit(',"order_id":'),
                json_value(pl.col("invoice")),
                pl.lit(f',"currency":"{CURRENCY}","lines":'),
                json_value(pl.col("lines")),
                tail,
            ).alias("payload"),
        )
    )


def _identify(good: pl.DataFrame) -> pl.LazyFrame:
    """One ``identify`` per customer with the country of their first invoice."""
    codes = pl.LazyFrame({"country": list(COUNTRIES), "code": list(COUNTRIES.values())})
    head, type_member = base_payload("identify")
    traits = (
        '"traits":{"email":null,"phone":null,"first_name":null,"last_name":null,'
        '"timezone":null,"locale":null,"location":{"country":'
    )
    return (
        good.lazy()
        .filter(pl.col("customer_id").is_not_null())
        .group_by("customer_id", maintain_order=True)
        .agg(pl.col("ts_us").min(), pl.col("country").get(pl.col("ts_us").arg_min()))
        .with_columns(pl.col("country").str.strip_chars())
        .join(codes, on="country", how="inner", maintain_order="left")
        .with_columns(
            pl.concat_str(pl.lit("or:identify:"), pl.col("customer_id")).alias("event_id"),
            pl.lit(None, pl.String).alias("anonymous_id"),
        )
        .select(
            "event_id",
            pl.lit("identify").alias("type"),
            "customer_id",
            "anonymous_id",
            "ts_us",
            pl.concat_str(
                head,
                pl.lit(","),
                type_member,
                pl.lit("," + traits),
                json_value(pl.col("code")),
                pl.lit(',"region":null,"city":null},"preferred_channel":null}}'),
            ).alias("payload"),
        )
    )


def _products(good: pl.DataFrame) -> pl.LazyFrame:
    """One catalog product per stock code: its last description and positive price in the file."""
    title = pl.col("description").str.strip_chars()
    return (
        good.lazy()
        .group_by("stock", maintain_order=True)  # file order is time order
        .agg(
            pl.col("description").filter(title.is_not_null() & (title != "")).last(),
            pl.col("price").filter(pl.col("price") > 0).last(),
        )
        .select(
            "stock",
            pl.col("description").str.strip_chars().str.slice(0, 500).fill_null(""),
            pl.col("price").fill_null(0.0),
        )
    )
