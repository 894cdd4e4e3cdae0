"""The lifetime model Concierge trains: repeat purchases, spend, CLV and churn, per person.

:class:`Lifetime` fits, from the purchases of the log and an ``as_of`` instant, in days:

* the purchase model (BG/NBD by default, or Pareto/NBD) on the RFM summary at ``as_of``;
* Gamma-Gamma on the repeat buyers' mean spend;
* the churn model (:mod:`concierge.models.churn`) on a calibration/holdout split of the same log:
  features at ``as_of - churn_window_days`` from a purchase model fitted on that part only, label
  "no purchase in the last ``churn_window_days``"; 30% of the customers (seeded) are kept out
  of the fit to measure calibration, then the model is refitted on all.

:meth:`Lifetime.score` turns a summary into the per-person columns of the ``lifetime`` artifact
(:data:`COLUMNS`). CLV is the discounted value of the expected *repeat* purchases over
``clv_horizon_days``: the horizon is cut into steps of ``clv_step_days``; each step's expected
purchases (differences of the conditional expectation) times the expected spend per order is
discounted at ``discount_rate`` per year, compounded at the step's end, as in the ``lifetimes``
library's ``customer_lifetime_value``.

People who bought once (x = 0) are handled by the models: P(alive) is 1 under the BG/NBD until
they have had time to buy again (their churn risk rises with the days since that purchase), and
their expected spend is the Gamma-Gamma population mean. People with no purchase at all (views
only) are not scored: the models start at the first purchase. The customer 360 says so.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal, Self

import numpy as np
import numpy.typing as npt
import polars as pl
from pydantic import Field

from concierge.errors import InputError
from concierge.models import churn as ch
from concierge.models.base import ModelBase, ModelConfig, rng
from concierge.models.lifetime.bgnbd import BetaGeo
from concierge.models.lifetime.gamma_gamma import GammaGamma
from concierge.models.lifetime.pareto_nbd import ParetoNBD
from concierge.models.lifetime.summary import DAY_US, _as_us, rfm_summary

F = npt.NDArray[np.float64]

COLUMNS: dict[str, str] = {
    "p_alive": "probability the customer is still active (purchase model), 0-1",
    "expected_purchases_30d": "expected repeat purchases (purchase days) in the next 30 days",
    "expected_purchases_90d": "expected repeat purchases (purchase days) in the next 90 days",
    "expected_spend": "expected spend per order (Gamma-Gamma), store currency",
    "clv": "discounted value of expected repeat purchases over the CLV horizon, store currency",
    "churn_risk": "calibrated probability of no purchase in the churn window, 0-1",
    "repeat_purchases": "purchase days after the first, up to as_of",
    "days_since_last_purchase": "days from the last purchase to as_of",
    "customer_age_days": "days from the first purchase to as_of",
    "usual_gap_days": "typical days between purchases (hierarchical cadence posterior, or the "
    "shrunk mean gap with churn_rhythm='shrunk_mean'), as the churn model reads it",
    "rhythm_window_high_days": "upper end of the 80% window of the next gap (cadence posterior; "
    "NaN with churn_rhythm='shrunk_mean'), days",
    "overdue_ratio": "days since the last purchase / usual gap (>1: later than their rhythm)",
}


class LifetimeConfig(ModelConfig):
    """Settings of :class:`Lifetime` (the ``lifetime`` trainer)."""

    purchase_model: Literal["bgnbd", "pareto_nbd"] = Field(
        "bgnbd", description="Repeat-purchase model: BG/NBD (fast, the default) or Pareto/NBD."
    )
    penalizer: float = Field(0.0, ge=0.0, description="L2 penalty of the purchase and spend fits.")
    clv_horizon_days: int = Field(365, ge=1, description="Horizon of the CLV, days.")
    clv_step_days: int = Field(30, ge=1, description="Discounting step of the CLV, days.")
    discount_rate: float = Field(0.10, ge=0.0, description="Yearly discount rate of the CLV.")
    churn_window_days: int = Field(
        90,
        ge=1,
        description="Churn = no purchase within this many days; also the holdout of the churn fit.",
    )
    churn_rhythm: Literal["cadence", "shrunk_mean"] = Field(
        "cadence",
        description="The rhythm the churn model compares the days since the last purchase with: "
        "the hierarchical cadence posterior (concierge.models.cadence, the default) or the mean "
        "gap shrunk toward the population's (the reference).",
    )
    prior_gaps: float = Field(
        2.0,
        gt=0.0,
        description="Pseudo-intervals of the population gap in a customer's usual gap (shrinkage).",
    )
    churn_test_share: float = Field(
        0.3,
        gt=0.0,
        lt=1.0,
        description="Share of customers kept out of the churn fit to measure its calibration.",
    )
    min_customers: int = Field(20, ge=2, description="Fewer purchasers than this: not trained.")
    seed: int = Field(42, description="Seed of the churn test split.")
    include_anonymous: bool = Field(
        False,
        description="Also model people never identified (anon: ids); see "
        "concierge.models.lifetime.data.log_transactions.",
    )


def _purchase_model(cfg: LifetimeConfig) -> BetaGeo | ParetoNBD:
    if cfg.purchase_model == "pareto_nbd":
        return ParetoNBD(penalizer=cfg.penalizer)
    return BetaGeo(penalizer=cfg.penalizer)


def _corr(a: F, b: F) -> float | None:
    """Pearson correlation, or None when it is undefined (fewer than 3 rows, a constant)."""
    if a.size < 3 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _arr(summary: pl.DataFrame, col: str) -> F:
    return summary.get_column(col).cast(pl.Float64).to_numpy()


class Lifetime(ModelBase[LifetimeConfig]):
    """Purchase model + Gamma-Gamma + churn, fitted on a log's purchases at ``as_of`` (days)."""

    name: ClassVar[str] = "lifetime"
    Config: ClassVar[type[ModelConfig]] = LifetimeConfig

    def fit(self, transactions: pl.DataFrame, *, as_of: datetime | int) -> Self:
        """Fit everything on ``transactions`` (``person_id, ts_us, value``) up to ``as_of``."""
        cfg: LifetimeConfig = self.config
        as_of_us = _as_us(as_of, "as_of")
        summary = rfm_summary(transactions, as_of=as_of_us)
        if summary.height < cfg.min_customers:
            raise InputError.one(
                "transactions",
                f"{summary.height} customers with purchases; at least "
                f"{cfg.min_customers} are needed",
            )
        x, t_x, big_t = (_arr(summary, c) for c in ("frequency", "recency", "T"))
        self.purchase_ = _purchase_model(cfg).fit(x, t_x, big_t)
        mon = _arr(summary, "monetary_value")
        self.spend_: GammaGamma | None = None
        self.mean_first_value_ = float(np.mean(_arr(summary, "first_value")))
        if int(np.sum((x > 0) & (mon > 0))) >= 2:
            self.spend_ = GammaGamma(penalizer=cfg.penalizer).fit(x, mon)
        self.population_gap_ = ch.population_gap_days(t_x, x)
        self.as_of_us_ = as_of_us
        self.metrics_: dict[str, Any] = {
            "customers": summary.height,
            "repeat_buyers": int(np.sum(x > 0)),
            "purchase_model": cfg.purchase_model,
            "purchase_log_likelihood": self.purchase_.log_likelihood_,
            "spend_log_likelihood": self.spend_.log_likelihood_ if self.spend_ else None,
            "spend_frequency_correlation": _corr(x[x > 0], mon[x > 0]),
        }
        self._fit_churn(transactions, as_of_us)
        return self._fitted()

    def _fit_churn(self, transactions: pl.DataFrame, as_of_us: int) -> None:
        cfg: LifetimeConfig = self.config
        cut_us = as_of_us - cfg.churn_window_days * DAY_US
        self.churn_: ch.ChurnModel | None = None
        self.churn_purchase_: BetaGeo | ParetoNBD | None = None
        self.churn_skipped_: str | None = None
        self.rhythm_prior_: F | None = None
        cal = rfm_summary(transactions, as_of=cut_us)
        if cal.height < cfg.min_customers:
            self.churn_skipped_ = f"only {cal.height} customers before the churn cut-off"
            self.metrics_["churn"] = {"skipped": self.churn_skipped_}
            return
        later = (
            transactions.filter((pl.col("ts_us") > cut_us) & (pl.col("ts_us") <= as_of_us))
            .select("person_id")
            .unique()
        )
        bought = cal.select("person_id").join(
            later.with_columns(pl.lit(True).alias("bought")),
            on="person_id",
            how="left",
            maintain_order="left",
        )
        y = bought.get_column("bought").is_null().to_numpy().astype(np.float64)
        x, t_x, big_t = (_arr(cal, c) for c in ("frequency", "recency", "T"))
        since = _arr(cal, "days_since_last")
        try:
            model = _purchase_model(cfg).fit(x, t_x, big_t)
        except InputError as exc:
            self.churn_skipped_ = f"purchase model at the cut-off: {exc}"
            self.metrics_["churn"] = {"skipped": self.churn_skipped_}
            return
        if cfg.churn_rhythm == "cadence":
            # the rhythm at the cut-off: prior and posteriors from the purchases before it only
            n, s1, s2 = ch.rhythm_statistics(
                transactions, cal.get_column("person_id"), as_of_us=cut_us
            )
            self.rhythm_prior_ = ch.fit_rhythm_prior(n, s1, s2)
            gap, high = ch.rhythm(self.rhythm_prior_, n, s1, s2)
            X = ch.features(
                p_alive=model.conditional_probability_alive(x, t_x, big_t),
                frequency=x,
                days_since_last=since,
                usual_gap=gap,
                window_high=high,
            )
        else:
            pop_gap = ch.population_gap_days(t_x, x)
            X = ch.features(
                p_alive=model.conditional_probability_alive(x, t_x, big_t),
                frequency=x,
                days_since_last=since,
                usual_gap=ch.usual_gap_days(t_x, x, pop_gap, cfg.prior_gaps),
            )
        if y.min() == y.max():
            self.churn_skipped_ = "every customer had the same outcome in the churn window"
            self.metrics_["churn"] = {"skipped": self.churn_skipped_}
            return
        test = rng(cfg.seed).random(y.size) < cfg.churn_test_share
        metrics: dict[str, Any] = {
            "window_days": cfg.churn_window_days,
            "cutoff_us": cut_us,
            "customers": int(y.size),
        }
        if 0 < y[~test].sum() < (~test).sum() and test.sum() >= 10:
            held = ch.ChurnModel().fit(X[~test], y[~test])
            metrics["holdout"] = ch.evaluate_probabilities(held.predict_proba(X[test]), y[test])
            metrics["holdout"]["baseline_1_minus_p_alive"] = ch.evaluate_probabilities(
                1.0 - model.conditional_probability_alive(x[test], t_x[test], big_t[test]),
                y[test],
            )
        self.churn_ = ch.ChurnModel().fit(X, y)
        self.churn_purchase_ = model
        metrics["rhythm"] = cfg.churn_rhythm
        metrics["coefficients"] = dict(
            zip(self.churn_.feature_names, self.churn_.coef_.tolist(), strict=True)
        )
        self.metrics_["churn"] = metrics

    # -- scoring -----------------------------------------------------------------------------

    def expected_spend(self, frequency: F, monetary_value: F) -> F:
        self.check_fitted()
        if self.spend_ is None:
            return np.full(frequency.shape, self.mean_first_value_)
        return self.spend_.conditional_expected_spend(frequency, monetary_value)

    def clv(self, frequency: F, recency: F, T: F, spend: F) -> F:
        """Discounted expected value of repeat purchases over the horizon (see module doc)."""
        cfg: LifetimeConfig = self.config
        ends = np.arange(
            cfg.clv_step_days,
            cfg.clv_horizon_days + cfg.clv_step_days,
            cfg.clv_step_days,
            dtype=np.float64,
        )
        ends = np.minimum(ends, cfg.clv_horizon_days)
        ends = np.unique(ends)
        total = np.zeros_like(frequency)
        prev = np.zeros_like(frequency)
        for end in ends:  # one vectorized pass over all customers per step (about 13)
            cum = self.purchase_.conditional_expected_purchases(end, frequency, recency, T)
            total += (cum - prev) / (1.0 + cfg.discount_rate) ** (end / 365.0)
            prev = cum
        out: F = total * spend
        return out

    def score(
        self, summary: pl.DataFrame, transactions: pl.DataFrame | None = None
    ) -> dict[str, F]:
        """The per-person columns (:data:`COLUMNS`) of a day-unit summary, in its row order.

        ``transactions`` (the purchases the summary was made from, up to the model's
        ``as_of``) give each person's rhythm; they are needed when the churn model reads the
        cadence rhythm (``churn_rhythm="cadence"``), which is the default.
        """
        self.check_fitted()
        cfg: LifetimeConfig = self.config
        x, t_x, big_t = (_arr(summary, c) for c in ("frequency", "recency", "T"))
        mon = _arr(summary, "monetary_value")
        since = _arr(summary, "days_since_last")
        p_alive = self.purchase_.conditional_probability_alive(x, t_x, big_t)
        e30 = self.purchase_.conditional_expected_purchases(30.0, x, t_x, big_t)
        e90 = self.purchase_.conditional_expected_purchases(90.0, x, t_x, big_t)
        spend = self.expected_spend(x, mon)
        high: F | None = None
        if self.rhythm_prior_ is not None:
            if transactions is None:
                raise InputError.one(
                    "transactions",
                    "the churn model reads each person's rhythm from their purchases: "
                    "pass the transactions the summary was made from",
                )
            n, s1, s2 = ch.rhythm_statistics(
                transactions, summary.get_column("person_id"), as_of_us=self.as_of_us_
            )
            gap, high = ch.rhythm(self.rhythm_prior_, n, s1, s2)
        else:
            gap = ch.usual_gap_days(t_x, x, self.population_gap_, cfg.prior_gaps)
        if self.churn_ is not None:
            X = ch.features(
                p_alive=self._churn_p_alive(x, t_x, big_t),
                frequency=x,
                days_since_last=since,
                usual_gap=gap,
                window_high=high,
            )
            churn = self.churn_.predict_proba(X)
        else:
            churn = 1.0 - p_alive
        return {
            "p_alive": p_alive,
            "expected_purchases_30d": e30,
            "expected_purchases_90d": e90,
            "expected_spend": spend,
            "clv": self.clv(x, t_x, big_t, spend),
            "churn_risk": churn,
            "repeat_purchases": x,
            "days_since_last_purchase": since,
            "customer_age_days": big_t,
            "usual_gap_days": gap,
            "rhythm_window_high_days": high if high is not None else np.full(x.shape, np.nan),
            "overdue_ratio": np.maximum(since, 0.0) / np.maximum(gap, 0.5),
        }

    def _churn_p_alive(self, x: F, t_x: F, big_t: F) -> F:
        """P(alive) as the churn model learnt it: from the purchase model fitted at the churn
        cut-off. The purchase model fitted at ``as_of`` has other parameters (it saw more
        data), so its P(alive) has another scale; feeding it to the churn model would shift its
        input away from what it was fitted on (measured on the simulator: Brier 0.25 instead
        of 0.16)."""
        model = self.churn_purchase_ if self.churn_purchase_ is not None else self.purchase_
        return model.conditional_probability_alive(x, t_x, big_t)

    def churn_drivers(self, row: dict[str, float]) -> list[tuple[str, float]]:
        """Features of one scored person by their share of the churn log-odds, largest first."""
        if self.churn_ is None:
            return []
        big_t = np.array([row["customer_age_days"]])
        x = np.array([row["repeat_purchases"]])
        t_x = np.where(x > 0, big_t - row["days_since_last_purchase"], 0.0)
        X = ch.features(
            p_alive=self._churn_p_alive(x, np.clip(t_x, 0.0, big_t), big_t),
            frequency=np.array([row["repeat_purchases"]]),
            days_since_last=np.array([row["days_since_last_purchase"]]),
            usual_gap=np.array([row["usual_gap_days"]]),
            window_high=(
                np.array([row["rhythm_window_high_days"]])
                if self.churn_.feature_names == ch.RHYTHM_FEATURES
                else None
            ),
        )
        contrib = self.churn_.contributions(X)[0]
        order = np.argsort(-np.abs(contrib))
        names = self.churn_.feature_names
        return [(names[i], float(contrib[i])) for i in order]

    # -- state -------------------------------------------------------------------------------

    def _state(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        arrays: dict[str, npt.NDArray[Any]] = {}
        meta: dict[str, Any] = {
            "as_of_us": self.as_of_us_,
            "population_gap_days": self.population_gap_,
            "mean_first_value": self.mean_first_value_,
            "metrics": self.metrics_,
            "churn_skipped": self.churn_skipped_,
            "rhythm_prior": None if self.rhythm_prior_ is None else self.rhythm_prior_.tolist(),
        }
        parts: list[tuple[str, ModelBase[Any] | None]] = [
            ("purchase", self.purchase_),
            ("spend", self.spend_),
            ("churn", self.churn_),
            ("churn_purchase", self.churn_purchase_),
        ]
        for prefix, part in parts:
            if part is None:
                meta[prefix] = None
                continue
            a, m = part.to_artifact()
            arrays |= {f"{prefix}.{k}": v for k, v in a.items()}
            meta[prefix] = m
        return arrays, meta

    def _load_state(self, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> None:
        cfg: LifetimeConfig = self.config

        def part_arrays(prefix: str) -> dict[str, npt.NDArray[Any]]:
            return {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith(prefix + ".")}

        purchase_cls = ParetoNBD if cfg.purchase_model == "pareto_nbd" else BetaGeo
        self.purchase_ = purchase_cls.from_state(
            _purchase_model(cfg).get_config(), part_arrays("purchase"), meta["purchase"]
        )
        self.spend_ = (
            GammaGamma.from_state(
                GammaGamma(penalizer=cfg.penalizer).get_config(),
                part_arrays("spend"),
                meta["spend"],
            )
            if meta.get("spend") is not None
            else None
        )
        self.churn_ = (
            ch.ChurnModel.from_state(
                ch.ChurnModel().get_config(), part_arrays("churn"), meta["churn"]
            )
            if meta.get("churn") is not None
            else None
        )
        self.churn_purchase_ = (
            purchase_cls.from_state(
                _purchase_model(cfg).get_config(),
                part_arrays("churn_purchase"),
                meta["churn_purchase"],
            )
            if meta.get("churn_purchase") is not None
            else None
        )
        self.as_of_us_ = int(meta["as_of_us"])
        self.population_gap_ = float(meta["population_gap_days"])
        self.mean_first_value_ = float(meta["mean_first_value"])
        self.metrics_ = dict(meta["metrics"])
        self.churn_skipped_ = meta.get("churn_skipped")
        prior = meta.get("rhythm_prior")  # absent in artifacts stored before the cadence rhythm
        self.rhythm_prior_ = None if prior is None else np.asarray(prior, dtype=np.float64)
