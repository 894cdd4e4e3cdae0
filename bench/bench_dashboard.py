"""The dashboard's prediction pages: the overview's headline over 1,000,000 scored people, and
the latency of every new page on the simulated demo store.

What is timed: :func:`concierge.dashboard.headline` on the joined per-person frame (the shape
``Concierge.predictions()`` returns: ``person_id``, ``p_alive``, ``clv``, ``churn_risk``,
``due_soon``, ``overdue``, ``likely_to_sell``, ``segment_id``), i.e. what the overview page adds
on every load once the models exist. No target is set by the issue; the point is that the page
stays interactive on a large store.

Reference, in the same run: the same figures by a plain Python loop over the rows (what a
template-side or per-person computation would cost); the ratio is ours / that loop. The two
results are checked equal before anything is reported.

Pages: the demo store of ``concierge demo`` (simulator, about 2,000 people and 300,000 events,
trained; built once into ``bench/.work`` and reused), each page requested 15 times in process
through the ASGI app (TestClient: routing, sign-in lookup, facade, template), median in ms.
Reference, in the same run: the existing customers list page (one indexed query, 50 rows); the
ratio is each page / that page.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from bench.common import WORK, Figure
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


def _pages() -> list[Figure]:
    import statistics

    from fastapi.testclient import TestClient

    from concierge.api.app import create_app
    from concierge.demo import build_demo
    from concierge.settings import Settings

    WORK.mkdir(parents=True, exist_ok=True)
    settings = Settings(database_url=f"sqlite:///{WORK / 'dashboard-demo.db'}")
    build_demo(settings, dataset="simulator", admin_key="ck_bench-dashboard-admin-key-000000")
    out: list[Figure] = []
    with Concierge(settings=settings) as cg:
        if not cg.audiences():
            cg.create_audience("win back", "churn_risk > 0.6 and clv > 200 and consent.email")
        aud = cg.audiences()[0]["audience_id"]
        seg = cg.segments()["segments"][0]["segment_id"]
        buyer = cg.customers(order="revenue", limit=1)[0][0]["person_id"]
        secret = cg.create_api_key("bench", "read")[1]
        paths = {
            "customers": "/dashboard/customers",
            "overview": "/dashboard",
            "segments": "/dashboard/segments",
            "segment": f"/dashboard/segments/{seg}",
            "audiences": "/dashboard/audiences",
            "audience": f"/dashboard/audiences/{aud}",
            "customer_360": f"/dashboard/customers/{buyer}",
        }
        times: dict[str, float] = {}
        with TestClient(create_app(concierge=cg), follow_redirects=False) as client:
            client.post(
                "/dashboard/login",
                content=f"key={secret}&next=/dashboard",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            for name, path in paths.items():
                assert client.get(path).status_code == 200, path  # warm
                runs = []
                for _ in range(15):
                    start = time.perf_counter()
                    client.get(path)
                    runs.append(time.perf_counter() - start)
                times[name] = statistics.median(runs) * 1000
        people = cg.stats().get("profiles", 0)
    ref = times.pop("customers")
    for name, ms in times.items():
        out.append(
            Figure(
                name=f"dashboard.page.{name}.ms",
                value=ms,
                unit="ms",
                reference="the customers list page, same store (ms)",
                reference_value=ref,
                ratio=ms / ref,
                note=f"median of 15, demo store ({people:,} profiles), in-process ASGI",
            )
        )
    return out


def run() -> list[Figure]:
    return [_headline(), *_pages()]


def _headline() -> Figure:
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
    return Figure(
        name="dashboard.headline_1m.ms",
        value=secs * 1000,
        unit="ms",
        reference="the same figures by a Python loop over the rows (ms)",
        reference_value=ref_secs * 1000,
        ratio=secs / ref_secs,
        note=f"{N:,} scored people; {ours['high_churn']:,.0f} at high churn risk",
    )
