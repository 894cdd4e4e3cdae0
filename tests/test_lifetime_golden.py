"""Golden tests of the lifetime models against the published CDNOW results and `lifetimes`.

Sources:

* Fader, Hardie & Lee (2005), "'Counting your customers' the easy way", Marketing Science 24(2):
  BG/NBD r = 0.243, α = 4.414, a = 0.793, b = 2.426, LL = -9582.4 (section 4); a customer with
  x = 2, t_x = 30.43, T = 38.86 expects 1.226 purchases in the next 39 weeks; conditional
  expectations for weeks 40-78 by x = 0…5: 0.23, 0.52, 1.04, 1.52, 2.16, 2.65 (Figure 5 / the
  BG/NBD column). Data and numbers: http://www.brucehardie.com/papers/018/ and notes/004.
* Fader & Hardie (2005), Pareto/NBD note (http://brucehardie.com/notes/009/): r = 0.553,
  α = 10.578, s = 0.606, β = 11.669, LL = -9595.0.
* Fader & Hardie (2013), Gamma-Gamma note (http://www.brucehardie.com/notes/025/):
  p = 6.25, q = 3.74, γ = 15.44.

The 1/10 cohort is ../shared/data/cdnow (see its SOURCE.md); weeks 1-39 end on 1997-09-30.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from concierge.ingest.importers.cdnow import parse
from concierge.models.lifetime.bgnbd import BetaGeo
from concierge.models.lifetime.evaluate import evaluate_transactions
from concierge.models.lifetime.gamma_gamma import GammaGamma
from concierge.models.lifetime.pareto_nbd import ParetoNBD
from concierge.models.lifetime.summary import calibration_holdout, purchases, rfm_summary

pytestmark = pytest.mark.realdata

CAL_END = datetime(1997, 9, 30, tzinfo=UTC)
HOLD_END = datetime(1998, 6, 30, tzinfo=UTC)
PAPER_BY_X = [0.23, 0.52, 1.04, 1.52, 2.16, 2.65]


def sig3(value: float, expected: float) -> None:
    assert float(f"{value:.3g}") == float(f"{expected:.3g}"), (value, expected)


@pytest.fixture
def cdnow(shared_data: Path) -> Path:
    path = shared_data / "cdnow"
    if not (path / "cdnow_customers_summary.csv").exists():
        pytest.skip(f"the CDNOW files are not in {path}")
    return path


@pytest.fixture
def summary_csv(cdnow: Path) -> pl.DataFrame:
    return pl.read_csv(cdnow / "cdnow_customers_summary.csv")


def _arrays(df: pl.DataFrame, *cols: str) -> list[np.ndarray]:
    return [df.get_column(c).cast(pl.Float64).to_numpy() for c in cols]


def sample_transactions(cdnow: Path) -> pl.DataFrame:
    """CDNOW_sample.txt through the importer's parser and our ``purchases``; person = sample id."""
    parsed = parse(cdnow / "CDNOW_sample.txt")
    raw = pl.read_csv(
        cdnow / "CDNOW_sample.txt", has_header=False, separator="\x1f", new_columns=["t"]
    )
    ids = (
        raw.select(pl.col("t").str.strip_chars().str.split_exact(" ", 1).alias("f"))
        .unnest("f")
        .select(
            pl.col("field_0").alias("customer_id"),
            pl.col("field_1").str.strip_chars().cast(pl.Int64).cast(pl.String).alias("person_id"),
        )
        .unique()
    )
    ev = parsed.events.join(ids, on="customer_id", how="left")
    return purchases(ev, parsed.items)


def test_bgnbd_matches_the_paper(summary_csv: pl.DataFrame) -> None:
    x, t_x, big_t = _arrays(summary_csv, "frequency", "recency", "T")
    m = BetaGeo().fit(x, t_x, big_t)
    for name, expected in {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}.items():
        sig3(m.params_[name], expected)
    sig3(m.log_likelihood_, -9582.4)
    assert round(m.log_likelihood_, 1) == -9582.4
    assert m.converged_
    sig3(float(m.conditional_expected_purchases(39.0, 2, 30.43, 38.86)[0]), 1.226)


def test_pareto_nbd_matches_the_paper(summary_csv: pl.DataFrame) -> None:
    x, t_x, big_t = _arrays(summary_csv, "frequency", "recency", "T")
    m = ParetoNBD().fit(x, t_x, big_t)
    for name, expected in {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}.items():
        sig3(m.params_[name], expected)
    assert round(m.log_likelihood_, 1) == -9595.0


def test_gamma_gamma_matches_the_paper(cdnow: Path) -> None:
    df = pl.read_csv(cdnow / "cdnow_customers_summary_with_transactions.csv")
    x, zbar = _arrays(df, "x", "zbar")
    m = GammaGamma().fit(x, zbar)
    for name, expected in {"p": 6.25, "q": 3.74, "gamma": 15.44}.items():
        sig3(m.params_[name], expected)
    # x = 0 gets the population mean; more purchases pull toward one's own mean
    e = m.conditional_expected_spend([0, 1, 10], [0.0, 100.0, 100.0])
    assert e[0] == pytest.approx(m.population_mean())
    assert e[0] < e[1] < e[2] < 100.0


def test_our_summary_of_the_sample_matches_the_published_one(
    cdnow: Path, summary_csv: pl.DataFrame
) -> None:
    ours = rfm_summary(sample_transactions(cdnow), as_of=CAL_END, period_days=7.0)
    pub = summary_csv.with_columns(pl.col("ID").cast(pl.String).alias("person_id"))
    both = pub.join(ours, on="person_id", how="full", coalesce=True, suffix="_ours")
    assert both.height == pub.height == ours.height == 2357
    assert (both["frequency"] == both["frequency_ours"]).all()
    np.testing.assert_allclose(both["recency_ours"], both["recency"], atol=0.006)  # 2 decimals
    np.testing.assert_allclose(both["T_ours"], both["T"], atol=0.006)


def test_conditional_expectations_by_frequency_and_the_actual_holdout(
    cdnow: Path, summary_csv: pl.DataFrame
) -> None:
    """Weeks 40-78, by calibration x = 0…5: the BG/NBD column of the paper within 0.02; the
    actual holdout is computed from CDNOW_sample.txt (the paper's observed column is 0.24,
    0.70, 1.39, 1.56, 2.53, 2.95)."""
    tx = sample_transactions(cdnow)
    split = calibration_holdout(tx, calibration_end=CAL_END, holdout_end=HOLD_END, period_days=7)
    x, t_x, big_t, actual = _arrays(split, "frequency", "recency", "T", "frequency_holdout")
    m = BetaGeo().fit(x, t_x, big_t)
    pred = m.conditional_expected_purchases(39.0, x, t_x, big_t)
    for k, expected in enumerate(PAPER_BY_X):
        assert abs(pred[x == k].mean() - expected) <= 0.02, (k, pred[x == k].mean())
    observed = [round(float(actual[x == k].mean()), 2) for k in range(6)]
    assert observed == [0.24, 0.70, 1.39, 1.56, 2.53, 2.95]


def test_evaluation_of_the_sample_reports_the_paper_numbers(cdnow: Path) -> None:
    report = evaluate_transactions(
        sample_transactions(cdnow), calibration_end=CAL_END, holdout_end=HOLD_END, period_days=7
    )
    bg = report["models"]["bgnbd"]
    sig3(bg["params"]["r"], 0.243)
    assert round(bg["log_likelihood"], 1) == -9582.4
    rows = {r["x"]: r for r in bg["by_frequency"]}
    assert abs(rows["2"]["predicted"] - 1.04) <= 0.02
    assert report["holdout_periods"] == pytest.approx(39.0)
    assert 0.5 < bg["purchases"]["correlation"] < 1
    lt = report["lifetimes_bgnbd"]
    if lt.get("available"):
        assert lt["converged"] and lt["max_abs_difference_to_ours"] < 1e-3
    churn = report["churn"]["holdout"]
    assert churn["auc"] > 0.7 and churn["brier"] < 0.2
    # calibrated: the mean prediction is the observed rate, bin by bin within noise
    for row in churn["reliability"]:
        if row["n"] >= 100:
            assert abs(row["mean_predicted"] - row["observed"]) < 0.08, row


def test_same_numbers_as_the_lifetimes_library(summary_csv: pl.DataFrame, cdnow: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lifetimes = pytest.importorskip("lifetimes")
        import pandas as pd

        x, t_x, big_t = _arrays(summary_csv, "frequency", "recency", "T")
        theirs = lifetimes.BetaGeoFitter().fit(pd.Series(x), pd.Series(t_x), pd.Series(big_t))
        ours = BetaGeo().fit(x, t_x, big_t)
        np.testing.assert_allclose(ours.params_array(), theirs.params_.to_numpy(), rtol=1e-4)
        np.testing.assert_allclose(
            ours.conditional_probability_alive(x, t_x, big_t),
            theirs.conditional_probability_alive(x, t_x, big_t),
            rtol=1e-4,
        )
        np.testing.assert_allclose(
            ours.conditional_expected_purchases(39.0, x, t_x, big_t),
            theirs.conditional_expected_number_of_purchases_up_to_time(39.0, x, t_x, big_t),
            rtol=1e-4,
        )
        np.testing.assert_allclose(
            ours.expected_purchases([10.0, 39.0]),
            theirs.expected_number_of_purchases_up_to_time(np.array([10.0, 39.0])),
            rtol=1e-4,
        )
        pn_theirs = lifetimes.ParetoNBDFitter().fit(pd.Series(x), pd.Series(t_x), pd.Series(big_t))
        pn = ParetoNBD().fit(x, t_x, big_t)
        np.testing.assert_allclose(pn.params_array(), pn_theirs.params_.to_numpy(), rtol=1e-3)
        np.testing.assert_allclose(
            pn.conditional_probability_alive(x, t_x, big_t),
            pn_theirs.conditional_probability_alive(x, t_x, big_t),
            rtol=1e-3,
        )
        df = pl.read_csv(cdnow / "cdnow_customers_summary_with_transactions.csv")
        gx, gz = _arrays(df.filter(pl.col("x") > 0), "x", "zbar")
        gg_theirs = lifetimes.GammaGammaFitter().fit(pd.Series(gx), pd.Series(gz))
        gg = GammaGamma().fit(gx, gz)
        np.testing.assert_allclose(gg.params_array(), gg_theirs.params_.to_numpy(), rtol=1e-4)
        np.testing.assert_allclose(
            gg.conditional_expected_spend(gx, gz),
            gg_theirs.conditional_expected_average_profit(pd.Series(gx), pd.Series(gz)),
            rtol=1e-4,
        )
