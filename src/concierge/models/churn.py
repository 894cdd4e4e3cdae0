"""Churn risk: the calibrated probability that a customer makes no purchase in the next window.

The label is read off the log itself: at a cut-off ``window_days`` before ``as_of`` each
customer's features are computed from the calibration part of the log only, and the label is
"no purchase in (cut-off, as_of]". A logistic regression (scikit-learn) on standardised features
maps them to a probability; logistic regression minimises log loss, so its probabilities are
calibrated on the data it was fitted on, and the trainer checks that on customers it did not fit
(Brier score, log loss, AUC and a reliability table, :func:`evaluate_probabilities`).

Features (all from the customer's own history plus the BG/NBD):

``p_alive``
    P(alive) from the purchase model fitted at the cut-off (a probability, not its logit: the
    logit of P(alive) ≈ 1 is unbounded and shifts between the fit and the scoring time).
``log_frequency``
    log(1 + repeat transactions).
``log_days_since_last``
    log(1 + days since the last purchase).
``log_overdue``
    log of *overdue relative to their own rhythm*: days since the last purchase divided by the
    customer's usual gap. By default (``LifetimeConfig.churn_rhythm = "cadence"``) the usual gap
    is the typical interval of the hierarchical cadence model of
    :mod:`concierge.models.cadence` (lognormal intervals, normal-inverse-gamma prior fitted by
    moments over everyone, each person's posterior from their own log intervals), so one or two
    purchases do not make a rhythm and a steady buyer's rhythm is their own. The older rule
    (``churn_rhythm = "shrunk_mean"``) is the mean gap shrunk toward the population's median gap
    with ``prior_gaps`` pseudo-intervals, (t_x + k · g_pop) / (x + k); it is kept as the
    reference the evaluation compares against.
``log_past_window``
    (``"cadence"`` only) log of the days since the last purchase over the upper end of the
    person's 80% window of the next interval: > 0 means later than their own rhythm allows,
    and an uncertain rhythm (few purchases, an irregular buyer) has a wide window, so the same
    delay counts less.

The rhythm is computed at the cut-off from the purchases before it (the prior is fitted on
them too), as every other feature: nothing after the cut-off reaches a feature.
(There is no "age" feature: for one-time buyers it equals the days since the purchase, and it
drifts between the cut-off and scoring time, where a fitted model would extrapolate.)

Each feature is clipped to the range seen in fitting before it is scored, so a customer unlike
any in the fit gets the nearest fitted risk rather than an extrapolated 0 or 1.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
import polars as pl
from pydantic import Field
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from concierge.errors import InputError
from concierge.models import cadence
from concierge.models.base import ModelBase, ModelConfig

F = npt.NDArray[np.float64]
FEATURES = ("p_alive", "log_frequency", "log_days_since_last", "log_overdue")
RHYTHM_FEATURES = (*FEATURES, "log_past_window")


def usual_gap_days(recency_days: F, frequency: F, population_gap: float, prior_gaps: float) -> F:
    """The customer's usual inter-purchase gap in days, shrunk toward the population's."""
    out: F = (recency_days + prior_gaps * population_gap) / (frequency + prior_gaps)
    return out


def population_gap_days(recency_days: F, frequency: F) -> float:
    """The median of the repeat buyers' mean gaps (30 days when nobody bought twice)."""
    rep = frequency > 0
    if not np.any(rep):
        return 30.0
    return float(np.median(recency_days[rep] / frequency[rep]))


def features(
    *,
    p_alive: F,
    frequency: F,
    days_since_last: F,
    usual_gap: F,
    window_high: F | None = None,
) -> F:
    """The feature matrix (rows: customers; columns: :data:`FEATURES`, or
    :data:`RHYTHM_FEATURES` when ``window_high`` is given)."""
    cols = [
        np.clip(p_alive, 0.0, 1.0),
        np.log1p(frequency),
        np.log1p(np.maximum(days_since_last, 0.0)),
        np.log(np.maximum(days_since_last, 0.5) / np.maximum(usual_gap, 0.5)),
    ]
    if window_high is not None:
        cols.append(np.log(np.maximum(days_since_last, 0.5) / np.maximum(window_high, 0.5)))
    return np.column_stack(cols)


# -- the rhythm from the hierarchical cadence model -------------------------------------------


def rhythm_statistics(
    transactions: pl.DataFrame, person_ids: pl.Series, *, as_of_us: int
) -> tuple[F, F, F]:
    """Each person's (n, Σ log Δ, Σ (log Δ)²) of the gaps between their orders up to ``as_of_us``,
    in the order of ``person_ids`` (zeros for a person without two orders), through
    :func:`concierge.models.cadence.interval_table` (one Polars pass)."""
    occ = transactions.filter(pl.col("ts_us") <= as_of_us).select(
        "person_id", pl.lit(cadence.ALL).alias("category"), "ts_us"
    )
    tab = cadence.interval_table(occ.unique())
    got = pl.DataFrame({"person_id": person_ids}).join(
        tab.select("person_id", "n", "s1", "s2"), on="person_id", how="left", maintain_order="left"
    )
    n, s1, s2 = (
        got.get_column(c).cast(pl.Float64).fill_null(0.0).to_numpy() for c in ("n", "s1", "s2")
    )
    return n, s1, s2


def fit_rhythm_prior(n: F, s1: F, s2: F, *, min_buyers: int = 8) -> F:
    """The population's normal-inverse-gamma prior of log intervals (cadence's ``"*"`` prior)."""
    prior = cadence.fit_prior(n, s1, s2, fallback=None, min_buyers=min_buyers)
    return np.asarray(prior.as_list(), dtype=np.float64)


def rhythm(prior: F, n: F, s1: F, s2: F, *, window: float = 0.8) -> tuple[F, F]:
    """(typical interval, upper end of the ``window`` interval of the next gap), days, per person:
    the posterior of :func:`concierge.models.cadence.posterior` and its predictive."""
    rows = np.broadcast_to(prior, (n.size, 4))
    mn, kn, an, bn = cadence.posterior(rows, n, s1, s2)
    _median, _lo, hi, typical = cadence.predictive(mn, kn, an, bn, window)
    return typical, hi


class ChurnConfig(ModelConfig):
    """Settings of :class:`ChurnModel`."""

    C: float = Field(
        1.0,
        gt=0.0,
        description="Inverse L2 regularisation of the logistic regression (scikit-learn's C).",
    )
    max_iter: int = Field(1000, ge=10, description="Most solver iterations.")


class ChurnModel(ModelBase[ChurnConfig]):
    """Logistic regression of "no purchase in the window" on :data:`FEATURES`.

    Fitted attributes: ``low_``, ``high_`` (the fitted range, where scoring clips),
    ``mean_``, ``scale_`` (standardisation), ``coef_``, ``intercept_``,
    ``base_rate_`` (share of churners in the fitted data).
    """

    name: ClassVar[str] = "churn"
    Config: ClassVar[type[ModelConfig]] = ChurnConfig

    def fit(self, X: Any, y: Any) -> Self:
        Xa = np.asarray(X, dtype=np.float64)
        ya = np.asarray(y, dtype=np.float64)
        if Xa.ndim != 2 or Xa.shape[1] not in (len(FEATURES), len(RHYTHM_FEATURES)):
            raise InputError.one(
                "X", f"expected {len(FEATURES)} or {len(RHYTHM_FEATURES)} feature columns"
            )
        if ya.shape != (Xa.shape[0],):
            raise InputError.one("y", "one label per row of X")
        if not np.all(np.isfinite(Xa)):
            raise InputError.one("X", "NaN or infinite feature")
        if not np.all((ya == 0) | (ya == 1)):
            raise InputError.one("y", "labels must be 0 or 1")
        if ya.min() == ya.max():
            raise InputError.one("y", "both outcomes are needed to fit a churn model")
        self.low_ = Xa.min(axis=0)
        self.high_ = Xa.max(axis=0)
        self.mean_ = Xa.mean(axis=0)
        scale = Xa.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        lr = LogisticRegression(C=self.config.C, max_iter=self.config.max_iter)
        lr.fit((Xa - self.mean_) / self.scale_, ya)
        self.coef_ = np.asarray(lr.coef_[0], dtype=np.float64)
        self.intercept_ = float(lr.intercept_[0])
        self.base_rate_ = float(ya.mean())
        return self._fitted()

    def contributions(self, X: Any) -> F:
        """Each feature's additive share of the log-odds (standardised value × coefficient)."""
        self.check_fitted()
        Xa = np.clip(np.asarray(X, dtype=np.float64), self.low_, self.high_)
        out: F = (Xa - self.mean_) / self.scale_ * self.coef_
        return out

    def predict_proba(self, X: Any) -> F:
        """P(no purchase in the window) per row."""
        z = self.contributions(X).sum(axis=1) + self.intercept_
        out: F = expit(z)
        return out

    def _state(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        return {
            "low": self.low_,
            "high": self.high_,
            "mean": self.mean_,
            "scale": self.scale_,
            "coef": self.coef_,
            "intercept": np.array([self.intercept_]),
        }, {"features": list(self.feature_names), "base_rate": self.base_rate_}

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The names of the fitted feature columns."""
        self.check_fitted()
        return RHYTHM_FEATURES if self.coef_.size == len(RHYTHM_FEATURES) else FEATURES

    def _load_state(self, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> None:
        self.low_ = np.asarray(arrays["low"], np.float64)
        self.high_ = np.asarray(arrays["high"], np.float64)
        self.mean_ = np.asarray(arrays["mean"], np.float64)
        self.scale_ = np.asarray(arrays["scale"], np.float64)
        self.coef_ = np.asarray(arrays["coef"], np.float64)
        self.intercept_ = float(np.asarray(arrays["intercept"])[0])
        self.base_rate_ = float(meta["base_rate"])


def evaluate_probabilities(prob: F, outcome: F, *, bins: int = 10) -> dict[str, Any]:
    """Brier score, log loss, AUC and a reliability table of probabilities against 0/1 outcomes.

    The reliability table groups by predicted probability in ``bins`` equal-width bins and gives,
    per non-empty bin, the mean prediction, the observed rate and the count.
    """
    p = np.clip(np.asarray(prob, np.float64), 1e-12, 1 - 1e-12)
    y = np.asarray(outcome, np.float64)
    out: dict[str, Any] = {
        "n": int(y.size),
        "observed_rate": float(y.mean()) if y.size else None,
        "brier": float(np.mean((p - y) ** 2)) if y.size else None,
        "log_loss": float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))) if y.size else None,
        "auc": float(roc_auc_score(y, p)) if y.size and 0 < y.sum() < y.size else None,
    }
    frame = pl.DataFrame({"p": p, "y": y}).with_columns(
        (pl.col("p") * bins).floor().clip(0, bins - 1).cast(pl.Int32).alias("bin")
    )
    table = (
        frame.group_by("bin")
        .agg(
            pl.col("p").mean().alias("mean_predicted"),
            pl.col("y").mean().alias("observed"),
            pl.len().alias("n"),
        )
        .sort("bin")
    )
    out["reliability"] = [
        {
            "bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}",
            "mean_predicted": round(mp, 4),
            "observed": round(ob, 4),
            "n": int(n),
        }
        for b, mp, ob, n in table.iter_rows()
    ]
    return out
