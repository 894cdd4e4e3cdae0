"""The lifetime estimators: contract kit, recovery of known parameters, properties, bad input.

Fixtures are drawn from the models' own generative processes with fixed seeds, so the right
answer (the parameters that generated them) is known by construction.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concierge.errors import InputError
from concierge.models.base import ModelBase
from concierge.models.churn import FEATURES, ChurnModel, evaluate_probabilities
from concierge.models.lifetime.bgnbd import BetaGeo, generate
from concierge.models.lifetime.clv import COLUMNS, Lifetime
from concierge.models.lifetime.gamma_gamma import GammaGamma
from concierge.models.lifetime.pareto_nbd import ParetoNBD
from concierge.models.lifetime.summary import DAY_US, calibration_holdout, rfm_summary
from concierge.testing.estimators import EstimatorContract

TRUE = {"r": 0.5, "alpha": 20.0, "a": 0.8, "b": 3.0}


def bg_data(n: int = 3000, seed: int = 42) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return generate(n, rng.uniform(30.0, 365.0, n).round(), rng=rng, **TRUE)


def spend_data(x: np.ndarray, seed: int = 42) -> np.ndarray:
    rng = np.random.default_rng(seed)
    nu = rng.gamma(4.0, 1.0 / 20.0, x.size)  # q = 4, gamma = 20
    k = np.maximum(x, 1)
    return np.where(x > 0, rng.gamma(6.0 * k, 1.0 / nu) / k, 0.0)  # p = 6


def transactions(n: int = 400, days: int = 400, seed: int = 7) -> pl.DataFrame:
    """A purchase log: each person buys as a Poisson process until they lapse (seeded)."""
    rng = np.random.default_rng(seed)
    start = rng.uniform(0, days / 2, n)
    gap = rng.gamma(2.0, 20.0, n)
    life = rng.exponential(200.0, n)
    rows_p, rows_t, rows_v = [], [], []
    k = np.arange(40)
    times = start[:, None] + np.cumsum(
        np.concatenate([np.zeros((n, 1)), rng.exponential(gap[:, None], (n, 39))], axis=1), axis=1
    )
    alive = (times <= (start + life)[:, None]) & (times < days)
    alive[:, 0] = True
    who, which = np.nonzero(alive)
    rows_p = [f"c{i:04d}" for i in who]
    rows_t = (times[who, which] * DAY_US).astype(np.int64)
    rows_v = rng.gamma(5.0, 10.0, who.size)
    del k
    return pl.DataFrame({"person_id": rows_p, "ts_us": rows_t, "value": rows_v})


AS_OF = 400 * DAY_US


# -- contract kit ------------------------------------------------------------------------------


class TestBetaGeoContract(EstimatorContract):
    def make_model(self, **overrides: Any) -> ModelBase[Any]:
        return BetaGeo(**overrides)

    def fit(self, model: ModelBase[Any]) -> ModelBase[Any]:
        assert isinstance(model, BetaGeo)
        return model.fit(*bg_data(500))

    def output(self, model: ModelBase[Any]) -> Any:
        assert isinstance(model, BetaGeo)
        x, t_x, big_t = bg_data(50, seed=1)
        return [model.params_array(), model.conditional_expected_purchases(30.0, x, t_x, big_t)]


class TestParetoNBDContract(EstimatorContract):
    refit_rtol = 1e-5

    def make_model(self, **overrides: Any) -> ModelBase[Any]:
        return ParetoNBD(**overrides)

    def fit(self, model: ModelBase[Any]) -> ModelBase[Any]:
        assert isinstance(model, ParetoNBD)
        return model.fit(*bg_data(300))

    def output(self, model: ModelBase[Any]) -> Any:
        assert isinstance(model, ParetoNBD)
        x, t_x, big_t = bg_data(50, seed=1)
        return [model.params_array(), model.conditional_probability_alive(x, t_x, big_t)]


class TestGammaGammaContract(EstimatorContract):
    def make_model(self, **overrides: Any) -> ModelBase[Any]:
        return GammaGamma(**overrides)

    def fit(self, model: ModelBase[Any]) -> ModelBase[Any]:
        assert isinstance(model, GammaGamma)
        x = bg_data(800)[0]
        return model.fit(x, spend_data(x))

    def output(self, model: ModelBase[Any]) -> Any:
        assert isinstance(model, GammaGamma)
        return [model.params_array(), model.conditional_expected_spend([0, 3], [0.0, 50.0])]


class TestChurnContract(EstimatorContract):
    def make_model(self, **overrides: Any) -> ModelBase[Any]:
        return ChurnModel(**overrides)

    def fit(self, model: ModelBase[Any]) -> ModelBase[Any]:
        assert isinstance(model, ChurnModel)
        rng = np.random.default_rng(3)
        X = rng.normal(size=(400, len(FEATURES)))
        y = (X[:, 3] + rng.normal(size=400) > 0).astype(float)
        return model.fit(X, y)

    def output(self, model: ModelBase[Any]) -> Any:
        assert isinstance(model, ChurnModel)
        return model.predict_proba(np.eye(len(FEATURES)))


class TestLifetimeContract(EstimatorContract):
    def make_model(self, **overrides: Any) -> ModelBase[Any]:
        return Lifetime(**overrides)

    def fit(self, model: ModelBase[Any]) -> ModelBase[Any]:
        assert isinstance(model, Lifetime)
        return model.fit(transactions(), as_of=AS_OF)

    def output(self, model: ModelBase[Any]) -> Any:
        assert isinstance(model, Lifetime)
        tx = transactions()
        return model.score(rfm_summary(tx, as_of=AS_OF), tx)


# -- recovery of known parameters -----------------------------------------------------------------


@pytest.mark.slow
def test_bgnbd_recovers_the_parameters_that_generated_the_data() -> None:
    x, t_x, big_t = bg_data(40_000)
    m = BetaGeo().fit(x, t_x, big_t)
    for k, v in TRUE.items():
        assert m.params_[k] == pytest.approx(v, rel=0.12), k
    # and the generator is the BG/NBD: the mean count matches E[X(T)] (FHL 2005 eq. 9)
    expected = m.expected_purchases(big_t)
    assert x.mean() == pytest.approx(expected.mean(), rel=0.03)


def test_gamma_gamma_recovers_its_parameters() -> None:
    x = bg_data(20_000)[0]
    m = GammaGamma().fit(x, spend_data(x))
    assert m.params_["p"] == pytest.approx(6.0, rel=0.15)
    assert m.params_["q"] == pytest.approx(4.0, rel=0.2)
    assert m.params_["gamma"] == pytest.approx(20.0, rel=0.25)


def test_units_only_rescale_alpha() -> None:
    x, t_x, big_t = bg_data(2000)
    days = BetaGeo().fit(x, t_x, big_t)
    weeks = BetaGeo().fit(x, t_x / 7, big_t / 7)
    assert weeks.params_["alpha"] * 7 == pytest.approx(days.params_["alpha"], rel=1e-4)
    np.testing.assert_allclose(
        days.conditional_expected_purchases(70.0, x, t_x, big_t),
        weeks.conditional_expected_purchases(10.0, x, t_x / 7, big_t / 7),
        rtol=1e-4,
    )


def test_penalizer_shrinks_parameters() -> None:
    x, t_x, big_t = bg_data(1000)
    free = BetaGeo().fit(x, t_x, big_t).params_array()
    pen = BetaGeo(penalizer=0.1).fit(x, t_x, big_t).params_array()
    assert np.sum(pen**2) < np.sum(free**2)


# -- properties --------------------------------------------------------------------------------

FITTED_BG = BetaGeo().fit(*bg_data(2000))
FITTED_PN = ParetoNBD().fit(*bg_data(1000))


@st.composite
def histories(draw: st.DrawFn) -> tuple[float, float, float]:
    big_t = draw(st.floats(1.0, 2000.0))
    x = draw(st.integers(0, 200))
    t_x = 0.0 if x == 0 else draw(st.floats(0.0, 1.0)) * big_t
    return float(x), t_x, big_t


@settings(max_examples=200, deadline=None)
@given(histories(), st.floats(0.0, 1000.0), st.floats(0.0, 1000.0))
def test_p_alive_is_a_probability_and_expectations_grow_with_the_horizon(
    h: tuple[float, float, float], t1: float, t2: float
) -> None:
    x, t_x, big_t = h
    lo, hi = sorted((t1, t2))
    for m in (FITTED_BG, FITTED_PN):
        p = float(m.conditional_probability_alive(x, t_x, big_t)[0])
        assert 0.0 <= p <= 1.0
        e_lo = float(m.conditional_expected_purchases(lo, x, t_x, big_t)[0])
        e_hi = float(m.conditional_expected_purchases(hi, x, t_x, big_t)[0])
        assert np.isfinite(e_lo) and np.isfinite(e_hi)
        assert 0.0 <= e_lo <= e_hi * (1 + 1e-9) + 1e-12


@settings(max_examples=100, deadline=None)
@given(histories(), st.floats(0.0, 500.0))
def test_a_later_last_purchase_means_more_likely_alive(
    h: tuple[float, float, float], later: float
) -> None:
    x, t_x, big_t = h
    if x == 0:
        return
    t2 = min(big_t, t_x + later)
    for m in (FITTED_BG, FITTED_PN):
        p1 = float(m.conditional_probability_alive(x, t_x, big_t)[0])
        p2 = float(m.conditional_probability_alive(x, t2, big_t)[0])
        assert p2 >= p1 - 1e-12


@settings(max_examples=25, deadline=None)
@given(st.randoms(use_true_random=False))
def test_row_order_does_not_change_the_fit_or_the_summary(rnd: Any) -> None:
    x, t_x, big_t = bg_data(400)
    perm = np.arange(x.size)
    rnd.shuffle(perm)
    a = BetaGeo().fit(x, t_x, big_t).params_array()
    b = BetaGeo().fit(x[perm], t_x[perm], big_t[perm]).params_array()
    np.testing.assert_allclose(a, b, rtol=1e-9)
    tx = transactions(60)
    rows = list(range(tx.height))
    rnd.shuffle(rows)
    s1 = rfm_summary(tx, as_of=AS_OF)
    s2 = rfm_summary(tx[rows], as_of=AS_OF)
    assert s1.equals(s2)


def test_summary_counts_days_and_ignores_the_future() -> None:
    day = DAY_US
    tx = pl.DataFrame(
        {
            "person_id": ["a", "a", "a", "a", "b", "c"],
            "ts_us": [0, day // 3, 5 * day, 30 * day, 2 * day, 50 * day],
            "value": [10.0, 5.0, 20.0, 99.0, 7.0, 1.0],
        }
    )
    s = rfm_summary(tx, as_of=10 * day)
    assert s.select("person_id", "frequency", "recency", "T", "monetary_value").rows() == [
        ("a", 1, 5.0, 10.0, 20.0),  # two orders on day 0 are one transaction of 15
        ("b", 0, 0.0, 8.0, 0.0),
    ]
    assert s.filter(pl.col("person_id") == "a")["first_value"].item() == 15.0
    split = calibration_holdout(tx, calibration_end=10 * day, holdout_end=40 * day)
    assert split.filter(pl.col("person_id") == "a")["frequency_holdout"].item() == 1
    assert split["duration_holdout"][0] == 30.0
    assert "c" not in split["person_id"].to_list()  # first bought in the holdout


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "t_x", "big_t", "field"),
    [
        ([-1], [0.0], [10.0], "frequency"),
        ([1.5], [1.0], [10.0], "frequency"),
        ([float("nan")], [1.0], [10.0], "frequency"),
        ([1], [11.0], [10.0], "recency"),
        ([1], [-1.0], [10.0], "recency"),
        ([0], [3.0], [10.0], "recency"),
        ([1], [float("inf")], [10.0], "recency"),
        ([1], [1.0], [0.0], "T"),
        ([1], [1.0], [float("nan")], "T"),
        ([], [], [], "frequency"),
        ([1, 2], [1.0], [10.0], "recency"),
    ],
)
def test_bad_input_names_the_field(
    x: list[float], t_x: list[float], big_t: list[float], field: str
) -> None:
    for model in (BetaGeo(), ParetoNBD()):
        with pytest.raises(InputError) as err:
            model.fit(x, t_x, big_t)
        assert err.value.errors[0].field == field
    with pytest.raises(InputError) as err:
        FITTED_BG.conditional_probability_alive(x, t_x, big_t)
    assert err.value.errors[0].field == field


def test_bad_spend_and_summary_input() -> None:
    with pytest.raises(InputError) as err:
        GammaGamma().fit([1, 2], [10.0, -1.0])
    assert err.value.errors[0].field == "monetary_value"
    with pytest.raises(InputError) as err:
        GammaGamma().fit([1, 2], [10.0, float("nan")])
    assert err.value.errors[0].field == "monetary_value"
    with pytest.raises(InputError) as err:
        rfm_summary(pl.DataFrame({"person_id": ["a"], "ts_us": [1]}), as_of=2)
    assert err.value.errors[0].field == "value"
    with pytest.raises(InputError) as err:
        rfm_summary(transactions(5), as_of=datetime(2026, 1, 1))  # naive
    assert err.value.errors[0].field == "as_of"
    with pytest.raises(InputError) as err:
        calibration_holdout(transactions(5), calibration_end=10, holdout_end=5)
    assert err.value.errors[0].field == "holdout_end"
    with pytest.raises(InputError) as err:
        Lifetime().fit(transactions(5), as_of=AS_OF)  # too few customers
    assert err.value.errors[0].field == "transactions"


# -- the composite model -------------------------------------------------------------------------


def test_lifetime_scores_every_column_sensibly() -> None:
    tx = transactions(600)
    model = Lifetime().fit(tx, as_of=datetime(1971, 2, 5, tzinfo=UTC))
    summary = rfm_summary(tx, as_of=model.as_of_us_)
    cols = model.score(summary, tx)
    assert list(cols) == list(COLUMNS)
    for name, values in cols.items():
        assert values.shape == (summary.height,), name
        assert np.all(np.isfinite(values)), name
    assert np.all((cols["p_alive"] >= 0) & (cols["p_alive"] <= 1))
    assert np.all((cols["churn_risk"] > 0) & (cols["churn_risk"] < 1))
    assert np.all(cols["expected_purchases_90d"] >= cols["expected_purchases_30d"])
    assert np.all(cols["clv"] >= 0)
    # CLV is the discounted value: below the undiscounted 365-day expectation x spend
    undiscounted = (
        model.purchase_.conditional_expected_purchases(
            365.0, *(summary[c].cast(pl.Float64).to_numpy() for c in ("frequency", "recency", "T"))
        )
        * cols["expected_spend"]
    )
    assert np.all(cols["clv"] <= undiscounted + 1e-9)
    assert np.all(cols["clv"] >= undiscounted / 1.1 - 1e-9)
    churn = model.metrics_["churn"]
    assert churn["holdout"]["n"] > 50 and churn["holdout"]["auc"] > 0.6
    # the overdue feature moves churn the right way: later than one's rhythm, higher risk
    assert churn["coefficients"]["log_overdue"] > 0


def test_evaluate_probabilities_reliability_table() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(size=20_000)
    y = (rng.uniform(size=p.size) < p).astype(float)
    r = evaluate_probabilities(p, y)
    assert r["n"] == 20_000
    assert r["brier"] == pytest.approx(1 / 6, abs=0.01)  # E[p(1-p)] for uniform p
    assert 0.8 < r["auc"] < 0.9
    assert len(r["reliability"]) == 10
    for row in r["reliability"]:
        assert abs(row["mean_predicted"] - row["observed"]) < 0.04
    assert sum(row["n"] for row in r["reliability"]) == 20_000


# -- the summary against a plain reference --------------------------------------------------------


@st.composite
def logs(draw: st.DrawFn) -> pl.DataFrame:
    n = draw(st.integers(1, 40))
    people = draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=n, max_size=n))
    hours = draw(st.lists(st.integers(0, 24 * 60), min_size=n, max_size=n))
    values = draw(st.lists(st.floats(0.0, 500.0), min_size=n, max_size=n))
    return pl.DataFrame(
        {"person_id": people, "ts_us": [h * 3_600_000_000 for h in hours], "value": values}
    )


def reference_summary(tx: pl.DataFrame, as_of_us: int, period_days: float) -> dict[str, tuple]:
    """The RFM summary the slow, obvious way: a dict of days per person."""
    days: dict[str, dict[int, float]] = {}
    for p, ts, v in tx.iter_rows():
        if ts <= as_of_us:
            d = days.setdefault(p, {})
            d[ts // DAY_US] = d.get(ts // DAY_US, 0.0) + v
    out = {}
    for p, d in days.items():
        order = sorted(d)
        repeat = [d[k] for k in order[1:]]
        out[p] = (
            len(order) - 1,
            (order[-1] - order[0]) / period_days,
            (as_of_us - order[0] * DAY_US) / (period_days * DAY_US),
            sum(repeat) / len(repeat) if repeat else 0.0,
        )
    return out


@settings(max_examples=150, deadline=None)
@given(logs(), st.integers(0, 25 * 24), st.sampled_from([1.0, 7.0]))
def test_summary_equals_the_plain_reference(tx: pl.DataFrame, as_of_h: int, period: float) -> None:
    as_of_us = as_of_h * 3_600_000_000
    got = rfm_summary(tx, as_of=as_of_us, period_days=period)
    want = reference_summary(tx, as_of_us, period)
    assert sorted(got["person_id"].to_list()) == sorted(want)
    for p, x, t_x, big_t, m in got.select(
        "person_id", "frequency", "recency", "T", "monetary_value"
    ).iter_rows():
        wx, wt, wT, wm = want[p]
        assert x == wx
        assert t_x == pytest.approx(wt) and big_t == pytest.approx(wT)
        assert m == pytest.approx(wm, rel=1e-9, abs=1e-9)
        assert 0 <= t_x <= big_t


# -- CLV -------------------------------------------------------------------------------------------


def test_clv_falls_with_the_discount_rate_and_grows_with_the_horizon() -> None:
    tx = transactions(400)
    summary = rfm_summary(tx, as_of=AS_OF)
    base = Lifetime().fit(tx, as_of=AS_OF)
    arrays, meta = base.to_artifact()

    def clv(**cfg: Any) -> np.ndarray:
        m = Lifetime.from_state(Lifetime(**cfg).get_config(), arrays, meta)
        return m.score(summary, tx)["clv"]

    c0, c10, c30 = clv(discount_rate=0.0), clv(discount_rate=0.1), clv(discount_rate=0.3)
    assert np.all(c0 >= c10) and np.all(c10 >= c30) and np.any(c0 > c30)
    short, long_ = clv(clv_horizon_days=90), clv(clv_horizon_days=730)
    assert np.all(short <= c10 + 1e-9) and np.all(c10 <= long_ + 1e-9)
    # undiscounted, the steps add up to the expectation over the whole horizon
    x, t_x, big_t = (summary[c].cast(pl.Float64).to_numpy() for c in ("frequency", "recency", "T"))
    spend = base.score(summary, tx)["expected_spend"]
    whole = base.purchase_.conditional_expected_purchases(365.0, x, t_x, big_t) * spend
    np.testing.assert_allclose(c0, whole, rtol=1e-9)


class TestLifetimeParetoContract(TestLifetimeContract):
    def make_model(self, **overrides: Any) -> ModelBase[Any]:
        return Lifetime(**({"purchase_model": "pareto_nbd"} | overrides))


def test_probabilities_without_both_outcomes() -> None:
    r = evaluate_probabilities(np.array([0.2, 0.7]), np.array([1.0, 1.0]))
    assert r["auc"] is None and r["n"] == 2
    with pytest.raises(InputError) as err:
        ChurnModel().fit(np.zeros((5, len(FEATURES))), np.ones(5))
    assert err.value.errors[0].field == "y"
    with pytest.raises(InputError) as err:
        ChurnModel().fit(np.zeros((5, 2)), np.ones(5))
    assert err.value.errors[0].field == "X"


# -- churn from the cadence rhythm ----------------------------------------------------------------


def test_the_churn_rhythm_is_the_cadence_models_posterior() -> None:
    """The usual gap churn reads is the typical interval of engineer B's cadence model fitted on
    the same purchases (category "*"), and its window is that model's 80% window."""
    from concierge.models import cadence
    from concierge.models import churn as ch

    tx = transactions(500)
    model = Lifetime().fit(tx, as_of=AS_OF)
    assert model.rhythm_prior_ is not None
    summary = rfm_summary(tx, as_of=AS_OF)
    cols = model.score(summary, tx)
    # the same rule, with the prior refitted at as_of, equals the CadenceModel's own table
    occ = tx.filter(pl.col("ts_us") <= AS_OF).select(
        "person_id", pl.lit(cadence.ALL).alias("category"), "ts_us"
    )
    table = cadence.CadenceModel().fit(occ.unique()).table(as_of_us=AS_OF).sort("person_id")
    n, s1, s2 = ch.rhythm_statistics(tx, table["person_id"], as_of_us=AS_OF)
    gap, high = ch.rhythm(ch.fit_rhythm_prior(n, s1, s2), n, s1, s2)
    np.testing.assert_allclose(gap, table["cadence_days"].to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(high, table["window_high_days"].to_numpy(), rtol=1e-6)
    # the scored rhythm uses the prior of the churn cut-off with everyone's statistics at as_of
    n2, s12, s22 = ch.rhythm_statistics(tx, summary["person_id"], as_of_us=AS_OF)
    want_gap, want_high = ch.rhythm(model.rhythm_prior_, n2, s12, s22)
    np.testing.assert_allclose(cols["usual_gap_days"], want_gap)
    np.testing.assert_allclose(cols["rhythm_window_high_days"], want_high)
    assert model.churn_ is not None and model.churn_.feature_names == ch.RHYTHM_FEATURES
    assert set(model.metrics_["churn"]["coefficients"]) == set(ch.RHYTHM_FEATURES)
    # a steady buyer's rhythm is their own, a two-purchase one is pulled to the population
    x, t_x = (summary[c].cast(pl.Float64).to_numpy() for c in ("frequency", "recency"))
    steady = x >= 10
    own = t_x[steady] / x[steady]  # their own mean gap
    assert steady.sum() > 20
    assert np.median(np.abs(np.log(cols["usual_gap_days"][steady] / own))) < 0.3


def test_the_churn_rhythm_sees_nothing_after_the_cut_off() -> None:
    """Purchases after the churn cut-off change the label only: the rhythm prior (fitted at the
    cut-off) is the same whether or not the log goes on after it."""
    tx = transactions(500)
    cfg = Lifetime().config
    cut = AS_OF - cfg.churn_window_days * DAY_US
    a = Lifetime().fit(tx, as_of=AS_OF)
    later = tx.filter(pl.col("ts_us") > cut).with_columns(
        (pl.col("ts_us") - 3 * DAY_US).clip(lower_bound=cut + 1)
    )
    moved = pl.concat([tx.filter(pl.col("ts_us") <= cut), later])
    b = Lifetime().fit(moved, as_of=AS_OF)
    assert a.rhythm_prior_ is not None and b.rhythm_prior_ is not None
    np.testing.assert_array_equal(a.rhythm_prior_, b.rhythm_prior_)


def test_the_churn_rhythm_needs_the_transactions_and_the_reference_rule_does_not() -> None:
    tx = transactions(400)
    summary = rfm_summary(tx, as_of=AS_OF)
    with pytest.raises(InputError) as err:
        Lifetime().fit(tx, as_of=AS_OF).score(summary)
    assert err.value.errors[0].field == "transactions"
    ref = Lifetime(churn_rhythm="shrunk_mean").fit(tx, as_of=AS_OF)
    cols = ref.score(summary)
    assert ref.rhythm_prior_ is None
    assert np.all(np.isnan(cols["rhythm_window_high_days"]))
    assert ref.churn_ is not None and len(ref.churn_.feature_names) == len(FEATURES)
    # an artifact stored before the cadence rhythm (no rhythm prior in its meta) still loads
    arrays, meta = ref.to_artifact()
    meta.pop("rhythm_prior")
    old = Lifetime.from_state(ref.get_config(), arrays, meta)
    np.testing.assert_allclose(old.score(summary)["churn_risk"], cols["churn_risk"])


def test_a_fit_without_a_finite_likelihood_saves_and_loads() -> None:
    """A degenerate fit (gamma underflowing on a tiny sample) leaves a NaN likelihood, which
    JSON stores as null: it loads back as NaN instead of failing, and is not 'converged'."""
    x = bg_data(800)[0]
    model = GammaGamma().fit(x, spend_data(x))
    model.log_likelihood_ = float("nan")
    arrays, meta = model.to_artifact()
    meta = orjson.loads(orjson.dumps(meta, option=orjson.OPT_SERIALIZE_NUMPY))
    assert meta["log_likelihood"] is None
    back = GammaGamma.from_state(model.get_config(), arrays, meta)
    assert np.isnan(back.log_likelihood_)
    assert back.params_ == model.params_
