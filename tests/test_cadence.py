"""Individual cadence and resale delay: the contract kit, shrinkage known by construction,
calibration of the 80% window, live flags in the customer 360, and the simulator's truth."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from concierge import Concierge
from concierge.cli.main import app
from concierge.models import cadence as cd
from concierge.models.base import ModelBase
from concierge.profiles.doc import DAY_US
from concierge.testing.estimators import EstimatorContract
from helpers import at, purchase, shoe


def population(seed: int = 3, people: int = 40) -> pl.DataFrame:
    """People in category X buying about every 30 days (lognormal, sd 0.25 on the log)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(people):
        t = 0.0
        for _ in range(int(rng.integers(3, 9))):
            rows.append((f"p{i}", "X", int(t * DAY_US)))
            t += float(np.exp(np.log(30.0) + 0.25 * rng.standard_normal()))
    return pl.DataFrame(rows, schema=["person_id", "category", "ts_us"], orient="row")


class TestCadenceContract(EstimatorContract):
    def make_model(self, **overrides: Any) -> ModelBase[Any]:
        return cd.CadenceModel(**overrides)

    def fit(self, model: ModelBase[Any]) -> ModelBase[Any]:
        assert isinstance(model, cd.CadenceModel)
        delays = pl.DataFrame({"person_id": ["p1", "p1", "p2"], "delay_days": [20.0, 25.0, 60.0]})
        counts = pl.DataFrame({"person_id": ["p1", "p2"], "bought": [5, 4], "listed": [2, 1]})
        return model.fit(population(), delays, counts)

    def output(self, model: ModelBase[Any]) -> Any:
        assert isinstance(model, cd.CadenceModel)
        tab = model.table(as_of_us=400 * DAY_US)
        sell = model.sell(np.array(["p1", "p2", "zz"]))
        return {
            "cadence": tab["cadence_days"].to_numpy(),
            "hi": tab["window_high_days"].to_numpy(),
            "sell": sell["sell_delay_days"],
            "share": sell["resale_share"],
        }


def cadence_of(model: cd.CadenceModel, person: str, category: str = "X") -> float:
    tab = model.table(as_of_us=0).filter(
        pl.col("person_id") == person, pl.col("category") == category
    )
    return float(tab["cadence_days"][0])


def test_few_purchases_shrink_to_the_category_many_keep_their_own_rhythm() -> None:
    occ = population()
    weekly = [("fast", "X", int(7 * k * DAY_US)) for k in range(12)]
    once = [("new", "X", 0), ("new", "X", int(7 * DAY_US))]
    single = [("one", "X", 0)]
    model = cd.CadenceModel().fit(
        pl.concat([occ, pl.DataFrame(weekly + once + single, schema=occ.schema, orient="row")])
    )
    fast, new, one = (cadence_of(model, p) for p in ("fast", "new", "one"))
    assert 6.0 < fast < 9.0  # eleven intervals of 7 days: their own rhythm
    assert 7.5 < new < 28.0  # one interval of 7 days: pulled toward the population's 30
    assert 24.0 < one < 38.0  # no interval: the category's distribution
    assert new > fast and one > new


def test_the_80_percent_window_is_calibrated_on_hierarchical_data() -> None:
    rng = np.random.default_rng(42)
    rows, held = [], []
    for i in range(1500):
        mu = np.log(30.0) + 0.4 * rng.standard_normal()
        sd = float(rng.uniform(0.2, 0.5))
        t = 0.0
        for _ in range(int(rng.integers(2, 8))):
            rows.append((f"p{i}", "X", int(t * DAY_US)))
            t += float(np.exp(mu + sd * rng.standard_normal()))
        held.append((f"p{i}", float(np.exp(mu + sd * rng.standard_normal()))))
    model = cd.CadenceModel().fit(
        pl.DataFrame(rows, schema=["person_id", "category", "ts_us"], orient="row")
    )
    tab = model.table(as_of_us=0).filter(pl.col("category") == "X").sort("person_id")
    truth = pl.DataFrame(held, schema=["person_id", "next"], orient="row")
    j = tab.join(truth, on="person_id")
    inside = (j["next"] >= j["window_low_days"]) & (j["next"] <= j["window_high_days"])
    assert 0.76 <= inside.mean() <= 0.86


def test_flags_are_live_in_the_customer_360(cg: Concierge) -> None:
    cg.upsert_products([shoe("p1"), shoe("p2", brand="Nike")])
    events = []
    for i, cid in enumerate(["ann", "bob", "cat", "dan", "eve", "fay", "gus", "hal", "ivy"]):
        step = 10 + 2 * i
        events += [purchase(f"{cid}{k}", cid, 2 + step * k, [("p1", 1, 100.0)]) for k in range(5)]
    cg.ingest(events)
    cg.train(only=["cadence"])
    pred = cg.customer("ann", history=0)["predictions"]["cadence"]
    assert pred["version"] == 1 and pred["overdue"]  # last purchase on day 42, now is day 147
    assert 8 < pred["cadence_days"] < 14
    assert pred["categories"][0]["category"] == "shoes>running"
    assert {r["code"] for r in pred["reasons"]} >= {"cadence.evidence", "cadence.overdue"}
    # a purchase today moves the flags at once, without retraining
    cg.ingest([purchase("ann-now", "ann", 146, [("p2", 1, 90.0)])])
    pred = cg.customer("ann", history=0)["predictions"]["cadence"]
    assert not pred["overdue"] and pred["next_purchase_due_days"] < 30
    # read as of a week after bob's last purchase (day 2 + 4 * 12): due soon, not overdue
    from helpers import BASE

    pred = cg.customer("bob", history=0, as_of=BASE + timedelta(days=57))["predictions"]["cadence"]
    assert pred["due_soon"] and not pred["overdue"] and 0 < pred["next_purchase_due_days"] < 14
    art = cg.registry.load("cadence")
    assert set(art.meta["per_person"]) >= {
        "next_purchase_due_days",
        "due_soon",
        "overdue",
        "likely_to_sell",
    }
    assert art.arrays["person_id"].size == art.arrays["due_soon"].size == 9


def test_resale_delays_from_orders_and_similar_items(cg: Concierge) -> None:
    cg.upsert_products([shoe("p1"), shoe("p2", brand="Nike"), shoe("l1"), shoe("l2", brand="Nike")])
    ev: list[dict[str, Any]] = []
    for i, cid in enumerate(["sam", "sue", "sid"]):
        for k in range(4):
            ev.append(
                purchase(f"{cid}{k}", cid, 2 + 15 * k, [("p1", 1, 100.0)], order=f"o-{cid}{k}")
            )
            ev.append(
                {
                    "type": "list_item",
                    "customer_id": cid,
                    "listing_id": f"L-{cid}{k}",
                    "product_id": "l1",
                    "price": 50.0,
                    "currency": "EUR",
                    "bought_order_id": f"o-{cid}{k}",
                    "timestamp": at(2 + 15 * k + 10 + i),
                }
            )
    for j in range(6):  # buyers who never resell
        ev += [purchase(f"n{j}-{k}", f"n{j}", 5 + 20 * k, [("p1", 1, 100.0)]) for k in range(3)]
    # a similar item: same brand and category as a purchase, no order named
    ev.append(purchase("tom1", "tom", 3, [("p2", 1, 100.0)]))
    ev.append(
        {
            "type": "list_item",
            "customer_id": "tom",
            "listing_id": "L-tom",
            "product_id": "l2",
            "price": 40.0,
            "currency": "EUR",
            "timestamp": at(33),
        }
    )
    cg.ingest(ev)
    from concierge.models import people

    with cg.store.read() as conn:
        e, it = people.read(conn)
    d = cd.resale_delays(e, it).sort("person_id", "delay_days")
    assert d.filter(pl.col("person_id") == "sam")["delay_days"].round(3).to_list() == [10.0] * 4
    assert d.filter(pl.col("person_id") == "tom")["delay_days"].round(3).to_list() == [30.0]
    model = cd.fit_from_log(e, it)
    s = model.sell(np.array(["sam", "sid", "nobody"]))
    assert 9.0 < s["sell_delay_days"][0] < 12.0 and 11.0 < s["sell_delay_days"][1] < 14.0
    assert s["resale_share"][0] > 0.5 > s["resale_share"][2]
    # sam bought 10 days ago: inside the resale window, likely to sell now
    cg.ingest([purchase("sam-new", "sam", 137, [("p1", 1, 100.0)])])
    cg.train(only=["cadence"])
    assert cg.customer("sam", history=0)["predictions"]["cadence"]["likely_to_sell"]
    assert not cg.customer("tom", history=0)["predictions"]["cadence"]["likely_to_sell"]


@pytest.mark.slow
def test_recovered_cadences_and_sell_delays_against_the_simulator_truth(tmp_path: Path) -> None:
    from concierge.demo import load_simulation

    db = f"sqlite:///{tmp_path / 'sim.db'}"
    truth = tmp_path / "truth.json"
    with Concierge(db) as c:
        load_simulation(c, shoppers=800, days=365, seed=11, truth_path=truth)
    r = CliRunner().invoke(
        app, ["evaluate", "cadence", "--truth", str(truth), "--db", db, "--json"]
    )
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert got["cadence"]["purchases>=2"]["corr_log"] > 0.45
    assert got["cadence"]["purchases>=4"]["median_ae_days"] < 25
    for level in ("purchases>=1", "purchases>=2"):  # shrinkage beats the plain average
        shrunk = got["cadence"][level]
        assert shrunk["mae_days"] < shrunk["plain_average"]["mae_days"]
        assert shrunk["corr_log"] > shrunk["plain_average"]["corr_log"]
    assert 0.6 < got["coverage"]["covered"] < 0.95
    assert got["sell_delay"]["sellers"] >= 10 and got["sell_delay"]["corr_log"] > 0.3


def test_tabulated_student_t_quantiles_match_scipy() -> None:
    from scipy import special

    rng = np.random.default_rng(0)
    dof = rng.choice([5.0, 5.5, 6.0, 7.25, 40.0, 200.0], 50_000)
    p = rng.uniform(1e-5, 1 - 1e-5, 50_000)
    np.testing.assert_allclose(cd.t_ppf(p, dof), special.stdtrit(dof, p), atol=2e-5)
    few = np.array([0.1, 0.5, 0.9])
    np.testing.assert_allclose(cd.t_ppf(few, np.full(3, 6.0)), special.stdtrit(6.0, few))


@settings(max_examples=60, deadline=None)
@given(
    gaps=st.lists(st.floats(1.0, 400.0), min_size=1, max_size=12),
    since=st.floats(0.0, 800.0),
)
def test_windows_are_ordered_and_evidence_narrows_them(gaps: list[float], since: float) -> None:
    model = cd.CadenceModel().fit(population())
    times = np.concatenate([[0.0], np.cumsum(gaps)]) * DAY_US
    n, s1, s2 = cd.interval_stats(times)
    last = np.array([int(times[-1])], dtype=np.int64)
    w = model.windows(
        np.array(["X"]),
        np.array([n]),
        np.array([s1]),
        np.array([s2]),
        last,
        as_of_us=int(times[-1] + since * DAY_US),
    )
    lo, mid, hi = w["window_low_days"][0], w["expected_interval_days"][0], w["window_high_days"][0]
    assert 0 < lo < mid < hi
    assert (
        w["next_window_low_days"][0]
        <= w["next_purchase_due_days"][0]
        <= w["next_window_high_days"][0]
    )
    assert w["next_window_low_days"][0] >= -1e-6  # the next purchase is never in the past
    assert not (w["overdue"][0] and w["due_soon"][0])
    # a steady rhythm at the population's: more of it, a narrower window
    m = float(model.priors_[list(model.categories_).index("X"), 0])

    def width(k: int) -> float:
        t = np.arange(k + 1) * np.exp(m) * DAY_US
        n_, a_, b_ = cd.interval_stats(t)
        ww = model.windows(
            np.array(["X"]),
            np.array([n_]),
            np.array([a_]),
            np.array([b_]),
            np.array([int(t[-1])], dtype=np.int64),
            as_of_us=int(t[-1]),
        )
        return float(np.log(ww["window_high_days"][0] / ww["window_low_days"][0]))

    assert width(1) > width(3) > width(10) > 0
