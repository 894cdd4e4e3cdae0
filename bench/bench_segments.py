"""Re-fitting micro-segments for 1,000,000 customers (a simulated feature frame), and fitting
plus scoring individual cadences for as many.

Target (issue 3): under 2 minutes on this machine. What is timed: the feature design (log
transforms, one-hot lifecycle), standardization, MiniBatchKMeans with the production config
(up to 300 segments), stable-id matching against a previous run, personas and the per-segment
key figures: everything ``concierge train --only segments`` does after reading profiles.

Reference, in the same run: scikit-learn's full-batch ``KMeans`` (Lloyd) with the same k, one
initialisation and only 10 iterations on the same standardized matrix (full convergence would
take far longer); the ratio is ours / that reference.

The frame is drawn from 400 latent groups of shoppers (RFM, engagement, loyalty, lifecycle,
lifetime columns), seeded, so every run times the same data.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import numpy as np
import polars as pl

from bench.common import Figure
from concierge.models.person_frame import STAGES
from concierge.models.segments import SegmentModel, describe, design

TARGET_S = 120.0
N = int(os.environ.get("BENCH_SEGMENTS_PEOPLE", "1000000"))


def frame(n: int, seed: int = 42) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    groups = 400
    g = rng.integers(0, groups, n)
    centre = rng.normal(0.0, 1.0, (groups, 12))
    z = centre[g] + 0.35 * rng.standard_normal((n, 12))
    orders = np.floor(np.exp(0.9 + 0.8 * z[:, 0])).astype(np.int64)
    aov = np.exp(4.0 + 0.5 * z[:, 1])
    tenure = np.exp(5.0 + 0.6 * z[:, 2])
    stage = np.array(STAGES)[np.clip((2 + z[:, 3]).astype(int), 0, 4)]
    return pl.DataFrame(
        {
            "person_id": [f"c{i:07d}" for i in range(n)],
            "orders": orders,
            "orders_per_year": orders * 365.0 / np.maximum(tenure, 30.0),
            "net_revenue": orders * aov,
            "average_order_value": aov,
            "recency_days": np.exp(3.5 + 0.9 * z[:, 4]),
            "tenure_days": tenure,
            "views": np.floor(np.exp(2.0 + z[:, 5])).astype(np.int64),
            "return_share": 1.0 / (1.0 + np.exp(2.5 - 0.8 * z[:, 6])),
            "listings": np.floor(np.exp(z[:, 7] - 1.0)).astype(np.int64),
            "brand_loyalty": 1.0 / (1.0 + np.exp(-z[:, 8])),
            "department_share": 1.0 / (1.0 + np.exp(-z[:, 9] - 1.0)),
            "price_level": np.exp(4.2 + 0.4 * z[:, 1]),
            "consent.email": z[:, 10] > -0.3,
            "engagement.email": np.maximum(0.0, 0.4 + 0.3 * z[:, 10]),
            "engagement.sms": np.maximum(0.0, 0.1 + 0.1 * z[:, 11]),
            "engagement.push": np.maximum(0.0, 0.1 + 0.1 * z[:, 11]),
            "cadence_days": np.exp(3.8 - 0.5 * z[:, 0]),
            "overdue": z[:, 4] > 1.0,
            "clv": orders * aov * np.exp(0.3 * z[:, 3]),
            "churn_risk": 1.0 / (1.0 + np.exp(-z[:, 4])),
            "p_alive": 1.0 / (1.0 + np.exp(z[:, 4])),
            "lifecycle_stage": stage,
            "top_department": np.array(["men", "women", "kids"])[
                (z[:, 9] > 0).astype(int) + (z[:, 9] > 1).astype(int)
            ],
            "top_category": np.array(["Shoes>Running", "Clothing>Jeans", "Accessories>Bags"])[
                g % 3
            ],
        }
    )


def refit(
    f: pl.DataFrame, previous: tuple[np.ndarray, np.ndarray, list[str]] | None
) -> SegmentModel:
    x, names = design(f)
    m = SegmentModel().fit(x, names, previous=previous)
    describe(f, m.segment_of, m.personas())
    return m


def run() -> list[Figure]:
    from sklearn.cluster import KMeans

    f = frame(N)
    first = refit(f, None)  # the previous run, for id matching
    previous = (first.raw_centroids(), first.ids_, first.features_)
    start = time.perf_counter()
    m = refit(f, previous)
    secs = time.perf_counter() - start
    k = m.centroids_.shape[0]
    x, _names = design(f)
    z = (np.where(np.isnan(x), m.fill_[None, :], x) - m.mean_) / m.scale_
    start = time.perf_counter()
    KMeans(n_clusters=k, n_init=1, max_iter=10, random_state=42).fit(z)
    ref = time.perf_counter() - start
    kept = int(np.isin(m.ids_, previous[1]).sum())
    return [
        cadence_figure(),
        end_to_end_figure(secs),
        Figure(
            name="segments.refit_1m.seconds",
            value=secs,
            unit="s",
            reference="sklearn KMeans (Lloyd), same k, 10 iterations (s)",
            reference_value=ref,
            ratio=secs / ref,
            target=f"< {TARGET_S:.0f} s",
            met=secs < TARGET_S,
            note=f"{N:,} people, {z.shape[1]} features, {k} segments; {kept} ids kept from the "
            f"previous run; inertia/person {m.inertia_ / N:.3f}",
        ),
    ]


# -- cadence: fit and score a million customers ------------------------------------------------

SCORE_TARGET_S = 30.0


def occasions_frame(n: int, seed: int = 7) -> pl.DataFrame:
    """About five purchase occasions per person over two years, in 16 categories plus "*"."""
    from concierge.profiles.doc import DAY_US

    rng = np.random.default_rng(seed)
    per = 1 + rng.poisson(4.0, n)
    owner = np.repeat(np.arange(n), per)
    rhythm = np.exp(rng.normal(np.log(60.0), 0.6, n))
    gaps = rhythm[owner] * rng.lognormal(0.0, 0.4, owner.size)
    t = np.cumsum(gaps)
    t = t - np.repeat(t[np.cumsum(per) - 1] - 700.0, per)  # each person's history ends near day 700
    ids = np.array([f"c{i:07d}" for i in range(n)])
    cats = np.array([f"Cat>{k:02d}" for k in range(16)])[rng.integers(0, 16, owner.size)]
    ts = (t * DAY_US).astype(np.int64)
    by_cat = pl.DataFrame({"person_id": ids[owner], "category": cats, "ts_us": ts})
    every = by_cat.with_columns(pl.lit("*").alias("category"))
    return pl.concat([every, by_cat])


def cadence_figure() -> Figure:
    from concierge.models.cadence import ALL, CadenceModel
    from concierge.profiles.doc import DAY_US

    occ = occasions_frame(N)
    as_of = int(705 * DAY_US)
    start = time.perf_counter()
    model = CadenceModel().fit(occ)
    star = occ.filter(pl.col("category") == ALL).with_columns(
        pl.col("person_id").rank("dense").cast(pl.Int64).alias("owner") - 1
    )
    persons = star.group_by("owner").agg(pl.col("person_id").first()).sort("owner")
    cols = model.person_columns_flat(
        persons["person_id"].to_numpy().astype(np.str_),
        star["owner"].to_numpy(),
        star["ts_us"].to_numpy(),
        as_of_us=as_of,
    )
    table = model.table(as_of_us=as_of)
    secs = time.perf_counter() - start
    start = time.perf_counter()
    (
        occ.sort("person_id", "category", "ts_us")
        .with_columns(pl.col("ts_us").diff().over("person_id", "category").alias("gap"))
        .group_by("person_id", "category")
        .agg(pl.col("gap").mean())
    )
    ref = time.perf_counter() - start
    return Figure(
        name="cadence.fit_and_score_1m.seconds",
        value=secs,
        unit="s",
        reference="plain average interval per (person, category) in Polars (s)",
        reference_value=ref,
        ratio=secs / ref,
        target=f"< {SCORE_TARGET_S:.0f} s (issue 3: scoring 1,000,000 customers)",
        met=secs < SCORE_TARGET_S,
        note=f"{persons.height:,} people, {table.height:,} (person, category) windows, "
        f"{int(cols['overdue'].sum()):,} overdue, {occ.height:,} occasions",
    )


# -- end to end: from the store to memberships written -----------------------------------------

E2E_SHOPPERS = int(os.environ.get("BENCH_SEGMENTS_E2E_SHOPPERS", "2000"))
E2E_PEOPLE = tuple(
    int(n) for n in os.environ.get("BENCH_SEGMENTS_E2E_PEOPLE", "20000,100000").split(",")
)


def grow(c: Any, people: int) -> int:
    """Copy the simulated profiles under new person ids (``<id>~<round>``) until the store has
    ``people`` profiles; the number it has.

    Only the ``profiles`` table is copied (what the segments trainer reads: the documents and
    their typed columns), in SQL. Simulating the shoppers themselves does not scale to this
    (48,611 people took 17 minutes to load on this machine); copies keep the documents' size,
    shape and facet vocabulary of the simulation, and the copies have no lifetime or cadence
    rows (their model columns are null, as for people the models have not seen yet).
    """
    from sqlalchemy import text

    with c.store.write() as conn:
        base, have = conn.execute(
            text("SELECT sum(instr(person_id, '~') = 0), count(*) FROM profiles")
        ).one()
        need = people - have
        if need > 0:
            first = -(-have // base)  # the next round not used yet
            conn.execute(
                text(
                    "WITH RECURSIVE k(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM k "
                    "WHERE i < :last) "
                    "INSERT INTO profiles (person_id, known, doc, n_orders, revenue, "
                    "first_seen_us, last_seen_us, last_order_us, updated_us) "
                    "SELECT p.person_id || '~' || k.i, p.known, p.doc, p.n_orders, p.revenue, "
                    "p.first_seen_us, p.last_seen_us, p.last_order_us, p.updated_us "
                    "FROM k, profiles p WHERE instr(p.person_id, '~') = 0 "
                    "ORDER BY k.i, p.person_id LIMIT :need"
                ),
                {"first": first, "last": first + need // base + 1, "need": need},
            )
        return int(conn.execute(text("SELECT count(*) FROM profiles")).scalar_one())


def end_to_end_figure(refit_1m_s: float) -> Figure:
    """``concierge train --only segments`` on a simulated store (SQLite): the feature frame read
    from the profiles (only the frame's parts of each document decoded, summarized column by
    column a chunk at a time), the fit, the personas and the memberships written, for
    1,000,000 people.

    The store is simulated with ``E2E_SHOPPERS`` shoppers, then its profiles are copied (see
    :func:`grow`) up to each size of ``E2E_PEOPLE`` (20,000 and 100,000 people), where the
    trainer runs once untimed (the previous run, for the id matching) and then three times.
    The figure is composed of two measured parts: the trainer's own timings of its linear steps
    (reading and decoding the profiles into the feature frame; storing the run, one membership
    row a person), best of 3 at the largest size, per person times 1,000,000, plus the
    in-memory refit of 1,000,000 people (``segments.refit_1m``, same run: design, fit,
    personas, key figures). The per-person cost at the largest size still carries the fixed
    costs (registry loads, the query of pending questions, the artifact's save) spread over
    100,000 people, so the projection errs high; the smaller size is reported beside it, and
    the two agreeing says the cost is linear over that range (a million documents are read in
    50 chunks of 20,000 either way). Extrapolating from the 1,949 people of the simulation alone
    (as this benchmark did before) spread those fixed costs over too few people and read a
    single chunk. Extrapolating the whole train linearly instead would multiply the small
    store's k-means, which says nothing about a million.
    Reference: that 1,000,000-people refit alone, so the ratio is what the store adds to it."""
    import tempfile
    from datetime import UTC, datetime
    from pathlib import Path

    from concierge import Concierge
    from concierge.clock import FrozenClock
    from concierge.demo import load_simulation

    as_of = datetime(2026, 6, 1, tzinfo=UTC)
    # people, frame s, store s, whole train s, frame CPU s
    sizes: list[tuple[int, float, float, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{Path(tmp) / 'seg.db'}"
        with Concierge(db, clock=FrozenClock(as_of)) as c:
            load_simulation(
                c, shoppers=E2E_SHOPPERS, days=365, seed=11, truth_path=Path(tmp) / "truth.json"
            )
            c.train(only=["lifetime", "cadence"], as_of=as_of)
            for target in E2E_PEOPLE:
                grow(c, target)
                c.train(only=["segments"], as_of=as_of)  # a previous run, for the id matching
                runs = []
                for _ in range(3):  # best of 3: the least disturbed by the other work
                    start = time.perf_counter()
                    (report,) = c.train(only=["segments"], as_of=as_of)
                    runs.append((time.perf_counter() - start, report.metrics))
                sizes.append(
                    (
                        int(runs[0][1]["people"]),
                        min(m["features_s"] for _s, m in runs),
                        min(m["store_s"] for _s, m in runs),
                        min(s for s, _m in runs),
                        min(m.get("features_cpu_s", math.nan) for _s, m in runs),
                    )
                )
    people, frame_s, store_s, _whole, _cpu = sizes[-1]
    linear_per_million = (frame_s + store_s) / people * 1_000_000
    per_million = linear_per_million + refit_1m_s
    at = "; ".join(
        f"{n:,} people: frame {f / n * 1e6:.1f} µs (CPU {cpu / n * 1e6:.1f} µs) and storing "
        f"{st / n * 1e6:.1f} µs a person (whole train {w:.2f} s)"
        for n, f, st, w, cpu in sizes
    )
    return Figure(
        name="segments.end_to_end_store.seconds_per_1m",
        value=per_million,
        unit="s",
        reference="the in-memory refit of 1,000,000 people, same run (segments.refit_1m, s)",
        reference_value=refit_1m_s,
        ratio=per_million / refit_1m_s,
        target=f"< {TARGET_S:.0f} s for 1,000,000 people, end to end",
        met=per_million < TARGET_S,
        note=f"{linear_per_million:.1f} s per 1,000,000 for the store's part, from the trainer's "
        f"timings (best of 3) on a simulated store in SQLite ({E2E_SHOPPERS:,} shoppers "
        f"simulated, profiles copied up to each size): {at}; the largest size taken per "
        f"person; plus the in-memory refit of 1,000,000 people {refit_1m_s:.1f} s; load "
        f"average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
    )
