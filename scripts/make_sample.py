"""Regenerate src/concierge/data/online_retail_sample.csv.gz from the full Online Retail file.

The sample keeps whole histories: every line of about 15% of the customers (chosen by a fixed
hash of their id, so the choice does not depend on row order) and of about 5% of the guest
invoices. Usage: ``python scripts/make_sample.py [PATH]`` (default: the shared datasets' copy,
``../shared/data/online_retail/online_retail.csv.gz``).
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "online_retail" / "online_retail.csv.gz"
TARGET = ROOT / "src" / "concierge" / "data" / "online_retail_sample.csv.gz"


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else SOURCE
    df = pl.read_csv(source, infer_schema=False)
    key = pl.when(pl.col("CustomerID").is_null() | (pl.col("CustomerID") == ""))
    picked = df.filter(
        key.then((pl.col("InvoiceNo").str.strip_chars("C").hash(11) % 100) < 5).otherwise(
            (pl.col("CustomerID").hash(11) % 100) < 15
        )
    )
    with gzip.GzipFile(TARGET, "wb", mtime=0) as fh:  # mtime 0: byte-identical on rerun
        picked.write_csv(fh)
    n_customers = picked.get_column("CustomerID").drop_nulls().n_unique()
    print(f"{picked.height:,} lines, {n_customers:,} customers, {TARGET.stat().st_size:,} bytes")  # noqa: T201


if __name__ == "__main__":
    main()
