"""The overview's headline predictions over 1,000,000 scored people.

What is timed: :func:`concierge.dashboard.headline` on the joined per-person frame (the shape
``Concierge.predictions()`` returns: ``person_id``, ``p_alive``, ``clv``, ``churn_risk``,
``due_soon``, ``overdue``, ``likely_to_sell``, ``segment_id``), i.e. what the overview page adds
on every load once the models exist. No target is set by the issue; the point is that the page
stays interactive on a large store.

Reference, in the same run: the same figures by a plain Python loop over the rows (what a
template-side or per-person computation would cost); the ratio is ours / that loop. The two
results are checked equal before anything is reported.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from bench.common import Figure
from concierge import Concierge
from concierge.dashboard import HIGH_CHURN, headline

N = int(os.environ.get("BENCH_DASHBOARD_PEOPLE", "1000000"))


def frame(n: int, seed: int = 42) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 3))
    return pl.DataFrame(
        {
            "person_id": [f"c{i:07d}" for i in range(n)],
            "p_alive": 1.0 / (1.0 + np.exp(z[:, 0])),
            "clv": np.exp(5.0 + 0.8 * z[:, 1]),
            "churn_risk": 1.0 / (1.0 + np.exp(-z[:, 0] - 0.5)),
            "due_soon": z[:, 2] > 0.8,
            "overdue": z[:, 2] > 1.5,
            "likely_to_sell": z[:, 1] > 2.0,
            "segment_id": rng.integers(1, 300, n),
        }
    )


def loop(f: pl.DataFrame) -> dict[str, float]:
    out = dict.fromkeys(
        ("high_churn", "churn_scored", "total_clv", "likely_active", "due_soon", "overdue"), 0.0
    )
    out["likely_to_sell"] = 0.0
    for row in f.iter_rows(named=True):
        if row["churn_risk"] is not None:
            out["churn_scored"] += 1
            out["high_churn"] += row["churn_risk"] >= HIGH_CHURN
        out["total_clv"] += row["clv"] or 0.0
        out["likely_active"] += (row["p_alive"] or 0.0) >= 0.5
        for flag in ("due_soon", "overdue", "likely_to_sell"):
            out[flag] += bool(row[flag])
    return out


def run() -> list[Figure]:
    f = frame(N)
    with tempfile.TemporaryDirectory() as d, Concierge(f"sqlite:///{Path(d) / 'b.db'}") as cg:
        versions = {"lifetime": 1, "cadence": 1, "segments": 1}
        with cg.store.read() as conn:
            headline(f, conn, versions=versions)  # warm
            start = time.perf_counter()
            ours = headline(f, conn, versions=versions)
            secs = time.perf_counter() - start
    assert ours is not None
    start = time.perf_counter()
    ref = loop(f)
    ref_secs = time.perf_counter() - start
    for k, v in ref.items():
        assert abs(float(ours[k]) - v) <= 1e-6 * max(1.0, abs(v)), (k, ours[k], v)
    return [
        Figure(
            name="dashboard.headline_1m.ms",
            value=secs * 1000,
            unit="ms",
            reference="the same figures by a Python loop over the rows (ms)",
            reference_value=ref_secs * 1000,
            ratio=secs / ref_secs,
            note=f"{N:,} scored people; {ours['high_churn']:,.0f} at high churn risk",
        )
    ]
