"""``concierge evaluate predictions``: the lifetime and churn models on a holdout of the log.

The log is split at ``calibration_end``: the models are fitted on the purchases up to it and
predict, for every customer seen by then, the number of repeat purchase days and the mean spend
per purchase day in ``(calibration_end, holdout_end]``, and the probability of no purchase at all
in that window (churn). Reported per model:

* fitted parameters, log-likelihood and fit time;
* purchases: per-customer MAE and RMSE, Pearson correlation of predicted vs actual, total
  predicted vs actual, and the table of mean predicted vs actual by calibration frequency x
  (FHL 2005 Figure 4 / Table style);
* spend: Gamma-Gamma's expected spend vs the actual mean spend of customers who bought in the
  holdout (MAE, correlation);
* churn: Brier score, log loss, AUC and the reliability table of the calibrated churn
  probability, next to the baseline 1 - P(alive);
* the same BG/NBD fitted by the ``lifetimes`` library on the same split, in the same run (when
  it is installed: it is a dev dependency), with its fit time and errors.

Optionally, for a simulated store, the hidden truth: P(alive) at ``calibration_end`` against
whether each shopper had really churned by then (AUC, mean P(alive) of the alive and the dead).
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import polars as pl
from sklearn.metrics import roc_auc_score

from concierge.clock import to_us
from concierge.errors import InputError
from concierge.models import churn as ch
from concierge.models.lifetime.bgnbd import BetaGeo
from concierge.models.lifetime.clv import Lifetime, LifetimeConfig
from concierge.models.lifetime.data import log_transactions
from concierge.models.lifetime.gamma_gamma import GammaGamma
from concierge.models.lifetime.pareto_nbd import ParetoNBD
from concierge.models.lifetime.summary import DAY_US, calibration_holdout, rfm_summary
from concierge.store.engine import Store

F = npt.NDArray[np.float64]


Rhythm = Literal["cadence", "shrunk_mean"]


def _errors(pred: F, actual: F) -> dict[str, Any]:
    if pred.size == 0:
        return {"n": 0}
    ok = pred.size > 2 and actual.std() > 0 and pred.std() > 0
    corr = float(np.corrcoef(pred, actual)[0, 1]) if ok else None
    return {
        "n": int(pred.size),
        "mae": float(np.mean(np.abs(pred - actual))),
        "rmse": float(np.sqrt(np.mean((pred - actual) ** 2))),
        "correlation": corr,
        "total_predicted": float(pred.sum()),
        "total_actual": float(actual.sum()),
    }


def _by_frequency(x: F, pred: F, actual: F, top: int = 7) -> list[dict[str, Any]]:
    key = np.minimum(x, top).astype(int)
    out = []
    for k in range(top + 1):
        sel = key == k
        if not np.any(sel):
            continue
        out.append(
            {
                "x": f"{k}+" if k == top else str(k),
                "n": int(sel.sum()),
                "predicted": round(float(pred[sel].mean()), 4),
                "actual": round(float(actual[sel].mean()), 4),
            }
        )
    return out


def _lifetimes_bgnbd(x: F, t_x: F, big_t: F, horizon: float) -> dict[str, Any]:
    try:
        with warnings.catch_warnings():  # lifetimes changes warning filters when imported
            warnings.simplefilter("ignore")
            import pandas as pd
            from lifetimes import BetaGeoFitter
    except ImportError as exc:
        return {"available": False, "reason": f"lifetimes is not installed ({exc})"}
    noise = io.StringIO()  # lifetimes prints its optimizer's state on failure
    with warnings.catch_warnings(), contextlib.redirect_stdout(noise):
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        try:
            fitter = BetaGeoFitter().fit(pd.Series(x), pd.Series(t_x), pd.Series(big_t))
        except Exception as exc:  # lifetimes raises its own ConvergenceError
            return {
                "available": True,
                "converged": False,
                "error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}",
                "fit_seconds": time.perf_counter() - start,
            }
        secs = time.perf_counter() - start
        pred = np.asarray(
            fitter.conditional_expected_number_of_purchases_up_to_time(horizon, x, t_x, big_t),
            dtype=np.float64,
        )
    params = {k: float(v) for k, v in fitter.params_.items()}
    return {
        "available": True,
        "converged": True,
        "params": params,
        "fit_seconds": secs,
        "prediction": pred,
    }


def evaluate_transactions(
    tx: pl.DataFrame,
    *,
    calibration_end: datetime | int,
    holdout_end: datetime | int,
    period_days: float = 1.0,
    compare_lifetimes: bool = True,
) -> dict[str, Any]:
    """The evaluation of :mod:`this module <concierge.models.lifetime.evaluate>` on a
    ``person_id, ts_us, value`` frame; times in periods of ``period_days``."""
    cal_us = calibration_end if isinstance(calibration_end, int) else to_us(calibration_end)
    hold_us = holdout_end if isinstance(holdout_end, int) else to_us(holdout_end)
    split = calibration_holdout(
        tx, calibration_end=cal_us, holdout_end=hold_us, period_days=period_days
    )
    if split.height < 2:
        raise InputError.one("calibration_end", f"only {split.height} customers bought before it")
    col = {
        c: split.get_column(c).cast(pl.Float64).to_numpy()
        for c in (
            "frequency",
            "recency",
            "T",
            "monetary_value",
            "frequency_holdout",
            "monetary_value_holdout",
        )
    }
    x, t_x, big_t = col["frequency"], col["recency"], col["T"]
    actual = col["frequency_holdout"]
    horizon = (hold_us - cal_us) / (period_days * DAY_US)
    report: dict[str, Any] = {
        "calibration_end_us": cal_us,
        "holdout_end_us": hold_us,
        "unit_days": period_days,
        "holdout_periods": horizon,
        "customers": split.height,
        "repeat_buyers": int(np.sum(x > 0)),
        "holdout_buyers": int(np.sum(actual > 0)),
        "models": {},
    }
    preds: dict[str, F] = {}
    for name, cls in (("bgnbd", BetaGeo), ("pareto_nbd", ParetoNBD)):
        model: BetaGeo | ParetoNBD = cls()
        start = time.perf_counter()
        model.fit(x, t_x, big_t)
        secs = time.perf_counter() - start
        pred = model.conditional_expected_purchases(horizon, x, t_x, big_t)
        preds[name] = pred
        report["models"][name] = {
            "params": model.params_,
            "log_likelihood": model.log_likelihood_,
            "converged": model.converged_,
            "fit_seconds": secs,
            "purchases": _errors(pred, actual),
            "by_frequency": _by_frequency(x, pred, actual),
        }
    if compare_lifetimes:
        lt = _lifetimes_bgnbd(x, t_x, big_t, horizon)
        if lt.get("converged"):
            pred = lt.pop("prediction")
            finite = np.isfinite(pred)  # lifetimes' eq. 10 overflows for large x (NaN)
            lt["non_finite_predictions"] = int((~finite).sum())
            lt["purchases"] = _errors(pred[finite], actual[finite])
            lt["max_abs_difference_to_ours"] = (
                float(np.max(np.abs(pred[finite] - preds["bgnbd"][finite])))
                if finite.any()
                else None
            )
            lt["fit_time_ratio_ours_over_lifetimes"] = (
                report["models"]["bgnbd"]["fit_seconds"] / lt["fit_seconds"]
            )
        report["lifetimes_bgnbd"] = lt
    # spend
    if int(np.sum((x > 0) & (col["monetary_value"] > 0))) >= 2:
        gg = GammaGamma().fit(x, col["monetary_value"])
        spend = gg.conditional_expected_spend(x, col["monetary_value"])
        bought = actual > 0
        report["models"]["gamma_gamma"] = {
            "params": gg.params_,
            "log_likelihood": gg.log_likelihood_,
            "spend": _errors(spend[bought], col["monetary_value_holdout"][bought]),
            "spend_repeat_buyers": _errors(
                spend[bought & (x > 0)], col["monetary_value_holdout"][bought & (x > 0)]
            ),
        }
    report["churn"] = _churn(tx, split, cal_us, hold_us)
    return report


def _churn(tx: pl.DataFrame, split: pl.DataFrame, cal_us: int, hold_us: int) -> dict[str, Any]:
    """Churn = no purchase in the holdout, with the cadence rhythm (the default) and, as the
    reference measured in the same run, the shrunk mean gap (``reference_shrunk_mean_rhythm``)."""
    out = _churn_with(tx, split, cal_us, hold_us, "cadence")
    if "skipped" not in out:
        ref = _churn_with(tx, split, cal_us, hold_us, "shrunk_mean")
        out["rhythm"] = "cadence"
        out["reference_shrunk_mean_rhythm"] = {
            k: ref[k] for k in ("holdout", "coefficients") if k in ref
        }
    return out


def _churn_with(
    tx: pl.DataFrame, split: pl.DataFrame, cal_us: int, hold_us: int, rhythm: Rhythm
) -> dict[str, Any]:
    """The churn model is fitted inside the calibration period with a window as long as the
    holdout, then scores the customers at ``calibration_end``."""
    window = max(1, round((hold_us - cal_us) / DAY_US))
    model = Lifetime(LifetimeConfig(churn_window_days=window, churn_rhythm=rhythm))
    try:
        model.fit(tx, as_of=cal_us)
    except InputError as exc:
        return {"skipped": str(exc)}
    summary = rfm_summary(tx, as_of=cal_us)
    scores = model.score(summary, tx)
    got = summary.select("person_id").join(
        split.select("person_id", "frequency_holdout"),
        on="person_id",
        how="left",
        maintain_order="left",
    )
    outcome = (got.get_column("frequency_holdout").fill_null(0) == 0).to_numpy().astype(float)
    baseline = ch.evaluate_probabilities(1.0 - scores["p_alive"], outcome)
    if model.churn_ is not None:
        fitted = model.metrics_.get("churn") or {}
        return {
            "window_days": window,
            "method": "fitted inside the calibration period (features at calibration end minus "
            "the window), scored at the calibration end",
            "fitted_inside_calibration": fitted,
            "coefficients": fitted.get("coefficients"),
            "holdout": ch.evaluate_probabilities(scores["churn_risk"], outcome),
            "baseline_1_minus_p_alive": baseline,
        }
    # the calibration period is shorter than the window (e.g. CDNOW: 39 weeks then 39 weeks):
    # the label can only be read off the holdout itself, so predict each customer with a model
    # fitted on the other folds (5-fold cross-fitting) - still no customer scores itself
    if rhythm == "cadence":  # the rhythm at the calibration end, from the calibration only
        n, s1, s2 = ch.rhythm_statistics(tx, summary.get_column("person_id"), as_of_us=cal_us)
        gap, high = ch.rhythm(ch.fit_rhythm_prior(n, s1, s2), n, s1, s2)
        X = ch.features(
            p_alive=scores["p_alive"],
            frequency=scores["repeat_purchases"],
            days_since_last=scores["days_since_last_purchase"],
            usual_gap=gap,
            window_high=high,
        )
    else:
        X = ch.features(
            p_alive=scores["p_alive"],
            frequency=scores["repeat_purchases"],
            days_since_last=scores["days_since_last_purchase"],
            usual_gap=scores["usual_gap_days"],
        )
    if outcome.min() == outcome.max():
        return {
            "skipped": "every customer had the same outcome in the holdout",
            "window_days": window,
        }
    folds = np.random.default_rng(42).integers(0, 5, outcome.size)
    prob = np.empty_like(outcome)
    for k in range(5):  # five fits, not a loop over customers
        fit_rows = folds != k
        if outcome[fit_rows].min() == outcome[fit_rows].max():
            return {"skipped": "a fold had a single outcome", "window_days": window}
        prob[~fit_rows] = (
            ch.ChurnModel().fit(X[fit_rows], outcome[fit_rows]).predict_proba(X[~fit_rows])
        )
    return {
        "window_days": window,
        "method": "5-fold cross-fitted on the holdout outcome (the calibration period is "
        f"shorter than the {window}-day window: {model.churn_skipped_})",
        "holdout": ch.evaluate_probabilities(prob, outcome),
        "baseline_1_minus_p_alive": baseline,
    }


def truth_comparison(tx: pl.DataFrame, truth_path: Path, calibration_end_us: int) -> dict[str, Any]:
    """P(alive) at ``calibration_end`` against the simulator's hidden churn days."""
    from concierge.sim.truth import load_truth

    truth = load_truth(truth_path)
    start_us = to_us(truth.config.start)
    ids = np.asarray(truth.shoppers.ids, dtype=np.str_)
    churn_us = start_us + np.asarray(truth.shoppers.churn_day, np.float64) * DAY_US
    summary = rfm_summary(tx, as_of=calibration_end_us)
    model = BetaGeo().fit(
        *(summary.get_column(c).cast(pl.Float64).to_numpy() for c in ("frequency", "recency", "T"))
    )
    frame = summary.join(
        pl.DataFrame({"person_id": ids, "churn_us": churn_us}), on="person_id", how="inner"
    )
    p_alive = model.conditional_probability_alive(
        *(frame.get_column(c).cast(pl.Float64).to_numpy() for c in ("frequency", "recency", "T"))
    )
    alive = (frame.get_column("churn_us").to_numpy() > calibration_end_us).astype(float)
    return {
        "customers": int(alive.size),
        "truly_alive_share": float(alive.mean()) if alive.size else None,
        "mean_p_alive": float(p_alive.mean()) if alive.size else None,
        "auc_p_alive_vs_truth": (
            float(roc_auc_score(alive, p_alive)) if 0 < alive.sum() < alive.size else None
        ),
        "mean_p_alive_truly_alive": float(p_alive[alive == 1].mean()) if alive.sum() else None,
        "mean_p_alive_truly_churned": (
            float(p_alive[alive == 0].mean()) if (alive == 0).any() else None
        ),
    }


def evaluate_store(
    store: Store,
    *,
    calibration_end: datetime,
    holdout_end: datetime,
    period_days: float = 1.0,
    compare_lifetimes: bool = True,
    truth_path: Path | None = None,
    include_anonymous: bool = False,
) -> dict[str, Any]:
    """:func:`evaluate_transactions` on a store's log (people as in its profiles; people never
    identified only with ``include_anonymous``)."""
    hold_us = to_us(holdout_end)
    cal_us = to_us(calibration_end)
    if hold_us <= cal_us:
        raise InputError.one("holdout_end", "must be after calibration_end")
    tx = log_transactions(store, as_of_us=hold_us, include_anonymous=include_anonymous)
    report = evaluate_transactions(
        tx,
        calibration_end=cal_us,
        holdout_end=hold_us,
        period_days=period_days,
        compare_lifetimes=compare_lifetimes,
    )
    report["include_anonymous"] = include_anonymous
    if truth_path is not None:
        report["truth"] = truth_comparison(tx, truth_path, cal_us)
        report["truth"]["cadence"] = cadence_truth(store, truth_path, cal_us, hold_us)
    return report


def cadence_truth(
    store: Store, truth_path: Path, calibration_end_us: int, holdout_end_us: int
) -> dict[str, Any]:
    """The recovered cadences, window coverage and sell delays against the simulator's truth
    (:func:`concierge.models.cadence.evaluate_on_simulation`, the ``concierge evaluate cadence``
    evaluation), on the same split: fitted on the log up to ``calibration_end``, the next
    purchases looked for up to ``holdout_end``."""
    import orjson

    from concierge.models import cadence, people
    from concierge.store import tables as t

    with store.read() as conn:
        ev, it = people.read(conn, t.events.c.ts_us <= holdout_end_us)
    if ev.height == 0:
        return {"skipped": "no events up to the holdout end"}
    end_us = int(ev["ts_us"].cast(pl.Int64).max() or 0)  # type: ignore[arg-type]
    if end_us <= calibration_end_us:
        return {"skipped": "no events after the calibration end"}
    # evaluate_on_simulation holds out the last `holdout_days` of the log it is given
    holdout_days = (end_us - calibration_end_us) / DAY_US
    out = cadence.evaluate_on_simulation(
        ev, it, orjson.loads(truth_path.read_bytes()), holdout_days=holdout_days
    )
    out["holdout_days"] = round(holdout_days, 3)
    return out
