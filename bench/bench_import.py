"""Bulk import of the full Online Retail file into SQLite, end to end, against Polars' read alone.

Target (issue 2): at least 150,000 lines/s end to end (parse, catalog, log, profiles, commit).
Reference (the floor): the time Polars alone takes to read and parse the same file.
"""

from __future__ import annotations

import shutil
import time

import polars as pl

from bench.common import WORK, Figure, best_of, shared
from concierge import Concierge
from concierge.ingest.bulk import import_file

TARGET = 150_000


def run() -> list[Figure]:
    path = shared("online_retail", "online_retail.csv.gz")
    if path is None:
        print("skipped: ../shared/data/online_retail/online_retail.csv.gz is absent")
        return []
    polars_s = best_of(lambda: pl.read_csv(path, infer_schema_length=10_000), repeat=3)
    times = []
    rows = 0
    for _ in range(3):
        shutil.rmtree(WORK, ignore_errors=True)
        WORK.mkdir(parents=True)
        c = Concierge(f"sqlite:///{WORK / 'import.db'}")
        start = time.perf_counter()
        report = import_file(c, "online-retail", path)
        times.append(time.perf_counter() - start)
        rows = report.rows
        c.close()
    secs = min(times)
    rate = rows / secs
    return [
        Figure(
            name="import.online_retail.sqlite.lines_per_s",
            value=rate,
            unit="lines/s",
            reference="polars read_csv of the same file (s)",
            reference_value=polars_s,
            ratio=secs / polars_s,
            target=f">= {TARGET:,} lines/s; ratio = import time / polars read time",
            met=rate >= TARGET,
            note=f"{rows:,} lines in {secs:.2f} s (best of 3)",
        )
    ]
