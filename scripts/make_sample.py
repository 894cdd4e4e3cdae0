"""Regenerate src/concierge/data/online_retail_sample.csv.gz from the full Online Retail file.

The sample keeps whole histories: every line of about 15% of the customers and of about 5% of
the guest invoices (rows without a CustomerID). The choice is made by SHA-256 of the customer id
or the invoice number (without its ``C``), so it depends neither on row order nor on the Polars
version (``Expr.hash`` is not stable across versions); rows keep the file's order and text.

Usage: ``python scripts/make_sample.py [PATH]`` (default: the shared datasets' copy,
``../shared/data/online_retail/online_retail.csv.gz``).
"""

from __future__ import annotations

import gzip
import hashlib
import sys
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "online_retail" / "online_retail.csv.gz"
TARGET = ROOT / "src" / "concierge" / "data" / "online_retail_sample.csv.gz"
CUSTOMERS_PERCENT = 15
GUEST_INVOICES_PERCENT = 5


def picked(keys: pl.Series, percent: int) -> list[str]:
    """The keys whose SHA-256, as a number, is below ``percent`` modulo 100."""
    return [
        k
        for k in keys.drop_nulls().unique().to_list()
        if int.from_bytes(hashlib.sha256(k.encode()).digest()[:8], "big") % 100 < percent
    ]


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else SOURCE
    df = pl.read_csv(source, infer_schema=False)
    guest = pl.col("CustomerID").is_null() | (pl.col("CustomerID").str.strip_chars() == "")
    invoice = pl.col("InvoiceNo").str.strip_chars().str.strip_prefix("C")
    customers = picked(df.get_column("CustomerID"), CUSTOMERS_PERCENT)
    invoices = picked(df.filter(guest).select(invoice).to_series(), GUEST_INVOICES_PERCENT)
    sample = df.filter(
        pl.when(guest)
        .then(invoice.is_in(invoices))
        .otherwise(pl.col("CustomerID").is_in(customers))
    )
    with gzip.GzipFile(TARGET, "wb", mtime=0) as fh:  # mtime 0: byte-identical on rerun
        fh.write(sample.write_csv().encode())
    n_customers = sample.get_column("CustomerID").drop_nulls().n_unique()
    n_guests = sample.filter(guest).get_column("InvoiceNo").n_unique()
    print(  # noqa: T201
        f"{sample.height:,} lines, {sample.get_column('InvoiceNo').n_unique():,} invoices, "
        f"{n_customers:,} customers, {n_guests:,} guest invoices, "
        f"{TARGET.stat().st_size:,} bytes"
    )


if __name__ == "__main__":
    main()
