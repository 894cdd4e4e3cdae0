"""Individual purchase cadence and resale delay, shrunk toward the population (empirical Bayes).

Model
-----
For a person *i* and a category *c* (the most specific ``cat=`` facet of what they bought, plus
``"*"`` for any purchase), the log inter-purchase intervals are

.. math::

    y_{ij} = \\log \\Delta_{ij} \\mid \\mu_i, \\sigma_i^2 \\sim N(\\mu_i, \\sigma_i^2), \\qquad
    \\mu_i \\mid \\sigma_i^2 \\sim N(m_c, \\sigma_i^2/\\kappa_c), \\qquad
    \\sigma_i^2 \\sim \\text{Inv-Gamma}(\\alpha_c, \\beta_c),

the normal-inverse-gamma conjugate model (Gelman et al., *Bayesian Data Analysis*, 3rd ed.,
§3.3). Lognormal intervals fit purchase gaps well (always positive, right-skewed) and the
conjugacy makes every person's posterior a closed form of four sufficient statistics (``n``,
``Σy``, ``Σy²``, last purchase), so scoring a million people is a handful of array operations,
and a purchase that arrives after training updates the posterior at read time.

The category's prior :math:`(m_c, \\kappa_c, \\alpha_c, \\beta_c)` is fitted by the method of
moments over everyone who bought in the category (empirical Bayes): :math:`m_c` the mean of the
people's mean log interval, :math:`E[\\sigma^2]` the pooled within-person variance,
:math:`\\tau^2 = \\mathrm{Var}(\\bar y_i) - E[\\sigma^2/n_i]` the between-person variance
(:math:`\\kappa_c = E[\\sigma^2]/\\tau^2`), and :math:`\\alpha_c` from the spread of the people's
sample variances beyond their sampling noise :math:`2\\sigma^4/(n_i-1)`. A category with too
few buyers borrows the prior of all categories pooled.

A person with few purchases therefore gets (nearly) the category's distribution, and one with many
gets their own rhythm. The next interval is Student-t on the log scale with :math:`2\\alpha_n`
degrees of freedom (eq. 3.? of BDA, the posterior predictive); its median is the *expected time
to the next purchase* and its 10% and 90% quantiles the *80% window*. The typical interval (for
comparison with a known cadence) is the posterior mean of the lognormal mean,
:math:`\\exp(\\mu_n + E[\\sigma^2]/2)`.

**Seller side.** The same model, one population, on log delays from buying an item to listing
it (the ``list_item`` event names the ``bought_order_id``; without it, a listing of the same brand
and category is matched to the seller's latest earlier purchase of one). The share of purchases a
person resells is beta-binomial with the prior fitted by moments.

Why it is written here: ``lifetimes`` has no interval model, and a hierarchical fit by MCMC
(PyMC, not installed, no torch allowed) would take minutes where these moments take milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from pydantic import Field
from scipy import stats

from concierge.models.base import ModelBase, ModelConfig
from concierge.models.people import deepest
from concierge.profiles.doc import DAY_US

F = npt.NDArray[np.float64]
ALL = "*"  # the pseudo-category of any purchase
MIN_INTERVAL_DAYS = 0.5  # same-day repeat orders count as half a day (log needs > 0)


class CadenceConfig(ModelConfig):
    """Hyper-parameters of :class:`CadenceModel`."""

    window: float = Field(0.8, gt=0.0, lt=1.0, description="Mass of the predicted window.")
    due_soon_days: float = Field(
        14.0, ge=0.0, description="Due soon: the expected next purchase is at most this far off."
    )
    min_buyers: int = Field(
        8, ge=2, description="Buyers with a repeat a category needs for a prior of its own."
    )
    likely_to_sell_share: float = Field(
        0.2, ge=0.0, le=1.0, description="Resale share from which a seller may be likely to sell."
    )
    default_interval_days: float = Field(
        90.0, gt=0.0, description="Prior median interval when nothing at all was bought yet."
    )


@dataclass(frozen=True)
class Prior:
    m: float
    k: float
    a: float
    b: float

    def as_list(self) -> list[float]:
        return [self.m, self.k, self.a, self.b]


def fit_prior(n: F, s1: F, s2: F, *, fallback: Prior | None, min_buyers: int) -> Prior:
    """Normal-inverse-gamma prior by moments over people with ``n`` log intervals (sums s1, s2)."""
    has = n >= 1
    rep = n >= 2
    if int(rep.sum()) < min_buyers or int(has.sum()) < min_buyers:
        if fallback is not None:
            return fallback
    if not has.any():
        return Prior(float(np.log(90.0)), 1.0, 3.0, 2.0 * 0.5)
    mean_i = s1[has] / n[has]
    m = float(mean_i.mean())
    if rep.any():
        var_i = (s2[rep] - s1[rep] ** 2 / n[rep]) / (n[rep] - 1)
        var_i = np.maximum(var_i, 1e-4)
        dof = n[rep] - 1
        within = float(np.sum(var_i * dof) / np.sum(dof))
        noise = float(np.mean(2.0 * within**2 / dof))
        spread = float(np.var(var_i)) - noise
        a = 2.0 + within**2 / spread if spread > 1e-9 else 100.0
    else:
        within, a = 0.5, 3.0
    a = float(np.clip(a, 2.5, 100.0))
    between = float(np.var(mean_i)) - float(np.mean(within / n[has])) if has.sum() > 1 else 0.0
    between = max(between, 0.02 * within, 1e-4)
    k = float(np.clip(within / between, 0.05, 50.0))
    return Prior(m, k, a, within * (a - 1.0))


def posterior(prior: npt.NDArray[np.float64], n: F, s1: F, s2: F) -> tuple[F, F, F, F]:
    """Posterior (mu_n, kappa_n, alpha_n, beta_n) per row; ``prior`` is (rows, 4)."""
    m, k, a, b = prior[:, 0], prior[:, 1], prior[:, 2], prior[:, 3]
    kn = k + n
    safe = np.maximum(n, 1.0)
    ybar = np.where(n > 0, s1 / safe, m)
    ss = np.where(n > 0, np.maximum(s2 - s1**2 / safe, 0.0), 0.0)
    mn = (k * m + s1) / kn
    an = a + n / 2.0
    bn = b + 0.5 * ss + k * n * (ybar - m) ** 2 / (2.0 * kn)
    return mn, kn, an, bn


def predictive(mn: F, kn: F, an: F, bn: F, mass: float) -> tuple[F, F, F, F]:
    """Median, lower and upper bound (days) of the next interval, and the typical interval."""
    scale = np.sqrt(bn * (kn + 1.0) / (an * kn))
    q = stats.t.ppf(0.5 + mass / 2.0, 2.0 * an)
    median = np.exp(mn)
    lo = np.exp(mn - q * scale)
    hi = np.exp(mn + q * scale)
    typical = np.exp(mn + 0.5 * bn / (an - 1.0))
    return median, lo, hi, typical


def interval_stats(times_us: F) -> tuple[float, float, float]:
    """(n, Σ log Δ, Σ (log Δ)²) of the gaps between sorted distinct purchase times."""
    t = np.unique(np.asarray(times_us, dtype=np.float64))
    if t.size < 2:
        return 0.0, 0.0, 0.0
    y = np.log(np.maximum(np.diff(t) / DAY_US, MIN_INTERVAL_DAYS))
    return float(y.size), float(y.sum()), float((y * y).sum())


# -- inputs from the log ---------------------------------------------------------------------


def occasions(events: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    """Purchase occasions per (person, category), ``"*"`` included: person_id, category, ts_us."""
    buys = events.filter(pl.col("type") == "purchase").select("event_id", "person_id", "ts_us")
    lines = items.join(buys, on="event_id").with_columns(
        deepest("cat", pl.col("facets")).alias("category")
    )
    by_cat = lines.filter(pl.col("category").is_not_null()).select("person_id", "category", "ts_us")
    every = buys.select("person_id", pl.lit(ALL).alias("category"), "ts_us")
    return pl.concat([every, by_cat]).unique()


def interval_table(occ: pl.DataFrame) -> pl.DataFrame:
    """Sufficient statistics per (person, category): n, s1, s2, purchases, last_us."""
    return (
        occ.sort("person_id", "category", "ts_us")
        .with_columns(
            (pl.col("ts_us").diff().over("person_id", "category").cast(pl.Float64) / DAY_US)
            .clip(lower_bound=MIN_INTERVAL_DAYS)
            .log()
            .alias("y")
        )
        .group_by("person_id", "category")
        .agg(
            pl.col("y").count().alias("n"),
            pl.col("y").sum().alias("s1"),
            (pl.col("y") ** 2).sum().alias("s2"),
            pl.len().alias("purchases"),
            pl.col("ts_us").max().alias("last_us"),
        )
        .sort("person_id", "category")
    )


def resale_delays(events: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    """Delays from buying to listing: person_id, delay_days (one row per matched listing)."""
    buys = events.filter(pl.col("type") == "purchase")
    lists = events.filter(pl.col("type") == "list_item")
    if buys.height == 0 or lists.height == 0:
        return pl.DataFrame(schema={"person_id": pl.String, "delay_days": pl.Float64})
    orders = buys.select(
        "person_id",
        pl.col("payload").str.json_path_match("$.order_id").alias("order_id"),
        pl.col("ts_us").alias("bought_us"),
    )
    listed = lists.select(
        "person_id",
        "ts_us",
        pl.col("payload").str.json_path_match("$.bought_order_id").alias("order_id"),
        pl.col("payload").str.json_path_match("$.product_id").alias("product_id"),
    )
    exact = listed.filter(pl.col("order_id").is_not_null()).join(
        orders, on=["person_id", "order_id"]
    )
    out = [exact.select("person_id", "ts_us", "bought_us")]
    # a listing without the order: the seller's latest earlier purchase of the same brand and
    # category ("a similar one"); the listing's facets come from its product in the log items
    loose = listed.filter(pl.col("order_id").is_null() & pl.col("product_id").is_not_null())
    if loose.height:
        facets = items.select("product_id", "facets").unique("product_id")
        key = pl.concat_str(
            [
                pl.col("facets").str.extract(r"(?:^|\|)brand=([^|]*)", 1),
                deepest("cat", pl.col("facets")),
            ],
            separator="|",
        )
        got = (
            loose.join(facets, on="product_id", how="left")
            .with_columns(key.alias("key"))
            .filter(pl.col("key").is_not_null())
            .sort("ts_us")
        )
        bought = (
            items.join(buys.select("event_id", "person_id", "ts_us"), on="event_id")
            .with_columns(key.alias("key"), pl.col("ts_us").alias("bought_us"))
            .filter(pl.col("key").is_not_null())
            .select("person_id", "key", "ts_us", "bought_us")
            .sort("ts_us")
        )
        if got.height and bought.height:
            similar = got.join_asof(
                bought,
                on="ts_us",
                by=["person_id", "key"],
                strategy="backward",
                check_sortedness=False,
            ).filter(pl.col("bought_us").is_not_null())
            out.append(similar.select("person_id", "ts_us", "bought_us"))
    both = pl.concat(out)
    return both.select(
        "person_id",
        ((pl.col("ts_us") - pl.col("bought_us")).cast(pl.Float64) / DAY_US).alias("delay_days"),
    ).filter(pl.col("delay_days") >= 0)


def resale_counts(events: pl.DataFrame, items: pl.DataFrame, delays: pl.DataFrame) -> pl.DataFrame:
    """Per person: single-unit purchase lines bought, and how many were listed again."""
    buys = events.filter(pl.col("type") == "purchase").select("event_id", "person_id")
    lines = (
        items.filter(pl.col("quantity") == 1)
        .join(buys, on="event_id")
        .group_by("person_id")
        .agg(pl.len().alias("bought"))
    )
    listed = delays.group_by("person_id").agg(pl.len().alias("listed"))
    return lines.join(listed, on="person_id", how="full", coalesce=True).fill_null(0)


# -- the model ---------------------------------------------------------------------------------


class CadenceModel(ModelBase[CadenceConfig]):
    """Per person and category: expected time to the next purchase with a window; resale delay.

    Examples
    --------
    >>> import polars as pl
    >>> day = 86_400_000_000
    >>> occ = pl.DataFrame({"person_id": ["a"] * 4 + ["b"] * 2, "category": ["*"] * 6,
    ...                     "ts_us": [0, 30 * day, 61 * day, 90 * day, 0, 40 * day]})
    >>> m = CadenceModel().fit(occ)
    >>> round(float(m.table(as_of_us=100 * day).filter(pl.col("person_id") == "a")
    ...       ["next_purchase_due_days"][0]))
    20
    """

    name = "cadence"
    Config = CadenceConfig

    def fit(
        self,
        occasions: pl.DataFrame,
        delays: pl.DataFrame | None = None,
        counts: pl.DataFrame | None = None,
    ) -> CadenceModel:
        """Fit the priors and keep every person's sufficient statistics.

        Parameters
        ----------
        occasions
            ``person_id``, ``category``, ``ts_us``: one row per purchase occasion (see
            :func:`occasions`).
        delays
            ``person_id``, ``delay_days``: buy-to-list delays (see :func:`resale_delays`).
        counts
            ``person_id``, ``bought``, ``listed`` (see :func:`resale_counts`).
        """
        cfg = self.config
        tab = interval_table(occasions)
        n = tab["n"].to_numpy().astype(np.float64)
        s1 = tab["s1"].to_numpy().astype(np.float64)
        s2 = tab["s2"].to_numpy().astype(np.float64)
        cats = tab["category"].to_numpy().astype(np.str_)
        pooled = (
            fit_prior(n[cats != ALL], s1[cats != ALL], s2[cats != ALL], fallback=None, min_buyers=1)
            if np.any(cats != ALL)
            else None
        )
        names = sorted(set(cats.tolist()) | {ALL})
        priors = []
        for c in names:
            sel = cats == c
            fb = pooled if c != ALL else None
            priors.append(
                fit_prior(n[sel], s1[sel], s2[sel], fallback=fb, min_buyers=cfg.min_buyers)
            )
        if not tab.height:
            priors = [Prior(float(np.log(cfg.default_interval_days)), 1.0, 3.0, 1.0)]
        self.categories_ = np.array(names, dtype=np.str_)
        self.priors_ = np.array([p.as_list() for p in priors], dtype=np.float64)
        self.person_ = tab["person_id"].to_numpy().astype(np.str_)
        self.category_ = cats
        self.n_, self.s1_, self.s2_ = n, s1, s2
        self.purchases_ = tab["purchases"].to_numpy().astype(np.int64)
        self.last_us_ = tab["last_us"].to_numpy().astype(np.int64)
        # seller side
        d = (
            delays
            if delays is not None
            else pl.DataFrame(schema={"person_id": pl.String, "delay_days": pl.Float64})
        )
        dt = (
            d.with_columns(
                pl.col("delay_days").clip(lower_bound=MIN_INTERVAL_DAYS).log().alias("y")
            )
            .group_by("person_id")
            .agg(
                pl.len().cast(pl.Float64).alias("n"),
                pl.col("y").sum().alias("s1"),
                (pl.col("y") ** 2).sum().alias("s2"),
            )
            .sort("person_id")
        )
        dn, ds1, ds2 = (dt[c].to_numpy().astype(np.float64) for c in ("n", "s1", "s2"))
        self.sell_prior_ = np.array(
            fit_prior(dn, ds1, ds2, fallback=None, min_buyers=1).as_list()
            if dt.height
            else [float(np.log(180.0)), 1.0, 3.0, 1.0]
        )
        self.seller_ = dt["person_id"].to_numpy().astype(np.str_)
        self.sell_n_, self.sell_s1_, self.sell_s2_ = dn, ds1, ds2
        c = (
            counts
            if counts is not None
            else pl.DataFrame(
                schema={"person_id": pl.String, "bought": pl.Int64, "listed": pl.Int64}
            )
        )
        c = c.sort("person_id")
        bought = c["bought"].to_numpy().astype(np.float64)
        listed = np.minimum(c["listed"].to_numpy().astype(np.float64), bought)
        self.share_person_ = c["person_id"].to_numpy().astype(np.str_)
        self.share_k_, self.share_n_ = listed, bought
        self.share_prior_ = _beta_prior(listed, bought)
        return self._fitted()

    # -- scoring -------------------------------------------------------------------------------

    def prior_rows(self, categories: npt.NDArray[np.str_]) -> npt.NDArray[np.float64]:
        """The prior of each category (the pooled ``"*"`` one for a category never seen)."""
        self.check_fitted()
        pos = np.searchsorted(self.categories_, categories)
        pos = np.minimum(pos, self.categories_.size - 1)
        hit = self.categories_[pos] == categories
        star = int(np.searchsorted(self.categories_, ALL))
        return self.priors_[np.where(hit, pos, star)]

    def windows(
        self,
        categories: npt.NDArray[np.str_],
        n: F,
        s1: F,
        s2: F,
        last_us: npt.NDArray[np.int64],
        *,
        as_of_us: int,
    ) -> dict[str, npt.NDArray[Any]]:
        """Expected next purchase, its window and the due flags, for rows of statistics."""
        mn, kn, an, bn = posterior(self.prior_rows(categories), n, s1, s2)
        median, lo, hi, typical = predictive(mn, kn, an, bn, self.config.window)
        since = (as_of_us - last_us.astype(np.float64)) / DAY_US
        overdue = since > hi
        # the next purchase, knowing none came in the `since` days already gone: the predictive
        # truncated below at `since` (its quantiles F^-1(F(s) + q (1 - F(s))))
        scale = np.sqrt(bn * (kn + 1.0) / (an * kn))
        dof = 2.0 * an
        z = (np.log(np.maximum(since, MIN_INTERVAL_DAYS)) - mn) / scale
        p0 = np.where(since > 0, stats.t.cdf(z, dof), 0.0)
        tail = self.config.window

        def at(q: float) -> F:
            p = np.clip(p0 + q * (1.0 - p0), 1e-12, 1.0 - 1e-12)
            return np.asarray(np.exp(mn + scale * stats.t.ppf(p, dof)), dtype=np.float64)

        c_med, c_lo, c_hi = at(0.5), at(0.5 - tail / 2.0), at(0.5 + tail / 2.0)
        due_in = c_med - since
        return {
            "expected_interval_days": median,
            "window_low_days": lo,
            "window_high_days": hi,
            "cadence_days": typical,
            "days_since_last": since,
            "next_purchase_due_days": due_in,
            "next_window_low_days": c_lo - since,
            "next_window_high_days": c_hi - since,
            "overdue": overdue,
            "due_soon": ~overdue & (median - since <= self.config.due_soon_days),
        }

    def table(self, *, as_of_us: int) -> pl.DataFrame:
        """Every (person, category) at ``as_of_us``: next purchase, window, due flags."""
        self.check_fitted()
        w = self.windows(
            self.category_, self.n_, self.s1_, self.s2_, self.last_us_, as_of_us=as_of_us
        )
        return pl.DataFrame(
            {
                "person_id": self.person_,
                "category": self.category_,
                "purchases": self.purchases_,
                "last_us": self.last_us_,
                **w,
            }
        )

    def sell(self, persons: npt.NDArray[np.str_]) -> dict[str, F]:
        """Posterior resale delay (median and window, days) and resale share per person."""
        self.check_fitted()
        n, s1, s2 = (np.zeros(persons.size) for _ in range(3))
        idx = _lookup(self.seller_, persons)
        ok = idx >= 0
        n[ok], s1[ok], s2[ok] = (
            self.sell_n_[idx[ok]],
            self.sell_s1_[idx[ok]],
            self.sell_s2_[idx[ok]],
        )
        prior = np.broadcast_to(self.sell_prior_, (persons.size, 4))
        mn, kn, an, bn = posterior(np.asarray(prior), n, s1, s2)
        median, lo, hi, _typ = predictive(mn, kn, an, bn, self.config.window)
        k, m = np.zeros(persons.size), np.zeros(persons.size)
        j = _lookup(self.share_person_, persons)
        okj = j >= 0
        k[okj], m[okj] = self.share_k_[j[okj]], self.share_n_[j[okj]]
        a, b = self.share_prior_
        return {
            "sell_delay_days": median,
            "sell_window_low_days": lo,
            "sell_window_high_days": hi,
            "resale_share": (k + a) / (m + a + b),
            "listed": k,
        }

    def likely_to_sell(
        self, persons: npt.NDArray[np.str_], order_times: list[list[int]], *, as_of_us: int
    ) -> npt.NDArray[np.bool_]:
        """A reseller (posterior share above the threshold, at least one listing) with a purchase
        whose resale window covers ``as_of``."""
        s = self.sell(persons)
        out = np.zeros(persons.size, dtype=bool)
        for i, times in enumerate(order_times):
            if s["listed"][i] < 1 or s["resale_share"][i] < self.config.likely_to_sell_share:
                continue
            age = (as_of_us - np.asarray(times, dtype=np.float64)) / DAY_US
            out[i] = bool(
                np.any(
                    (age >= s["sell_window_low_days"][i]) & (age <= s["sell_window_high_days"][i])
                )
            )
        return out

    def person_columns(
        self, persons: npt.NDArray[np.str_], order_times: list[list[int]], *, as_of_us: int
    ) -> dict[str, npt.NDArray[Any]]:
        """The per-person columns (contract): from each person's order times (``"*"``)."""
        stats_ = np.array([interval_stats(np.asarray(t, dtype=np.float64)) for t in order_times])
        stats_ = stats_.reshape(-1, 3)
        last = np.array([max(t) if t else as_of_us for t in order_times], dtype=np.int64)
        cats = np.full(persons.size, ALL, dtype=np.str_)
        w = self.windows(cats, stats_[:, 0], stats_[:, 1], stats_[:, 2], last, as_of_us=as_of_us)
        bought = np.array([bool(t) for t in order_times])
        s = self.sell(persons)
        return {
            "next_purchase_due_days": np.where(bought, w["next_purchase_due_days"], np.nan),
            "purchase_window_low_days": w["window_low_days"],
            "purchase_window_high_days": w["window_high_days"],
            "cadence_days": w["cadence_days"],
            "due_soon": bought & w["due_soon"],
            "overdue": bought & w["overdue"],
            "likely_to_sell": self.likely_to_sell(persons, order_times, as_of_us=as_of_us),
            "sell_delay_days": s["sell_delay_days"],
            "resale_share": s["resale_share"],
        }

    # -- artifacts ---------------------------------------------------------------------------

    def _state(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        return (
            {
                "categories": self.categories_,
                "priors": self.priors_,
                "pc_person": self.person_,
                "pc_category": self.category_,
                "pc_n": self.n_,
                "pc_s1": self.s1_,
                "pc_s2": self.s2_,
                "pc_purchases": self.purchases_,
                "pc_last_us": self.last_us_,
                "sell_prior": self.sell_prior_,
                "seller": self.seller_,
                "sell_n": self.sell_n_,
                "sell_s1": self.sell_s1_,
                "sell_s2": self.sell_s2_,
                "share_person": self.share_person_,
                "share_k": self.share_k_,
                "share_n": self.share_n_,
                "share_prior": np.asarray(self.share_prior_),
            },
            {},
        )

    def _load_state(self, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> None:
        self.categories_, self.priors_ = arrays["categories"], arrays["priors"]
        self.person_, self.category_ = arrays["pc_person"], arrays["pc_category"]
        self.n_, self.s1_, self.s2_ = arrays["pc_n"], arrays["pc_s1"], arrays["pc_s2"]
        self.purchases_, self.last_us_ = arrays["pc_purchases"], arrays["pc_last_us"]
        self.sell_prior_, self.seller_ = arrays["sell_prior"], arrays["seller"]
        self.sell_n_, self.sell_s1_, self.sell_s2_ = (
            arrays["sell_n"],
            arrays["sell_s1"],
            arrays["sell_s2"],
        )
        self.share_person_ = arrays["share_person"]
        self.share_k_, self.share_n_ = arrays["share_k"], arrays["share_n"]
        a, b = arrays["share_prior"].tolist()
        self.share_prior_ = (float(a), float(b))


def _lookup(keys: npt.NDArray[np.str_], wanted: npt.NDArray[np.str_]) -> npt.NDArray[np.int64]:
    """Index of each wanted key in the sorted ``keys``, -1 when absent."""
    if keys.size == 0 or wanted.size == 0:
        return np.full(wanted.shape, -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(keys, wanted), keys.size - 1)
    return np.where(keys[pos] == wanted, pos, -1).astype(np.int64)


def _beta_prior(k: F, n: F) -> tuple[float, float]:
    """Beta(a, b) prior of a rate by moments of k/n over people with n >= 1 (weak default)."""
    ok = n >= 1
    if ok.sum() < 2:
        return (0.5, 4.5)
    p = k[ok] / n[ok]
    mean = float(np.clip(p.mean(), 1e-3, 1 - 1e-3))
    var = float(p.var()) - float(np.mean(mean * (1 - mean) / n[ok]))
    if var <= 1e-6:
        strength = 50.0
    else:
        strength = float(np.clip(mean * (1 - mean) / var - 1.0, 0.5, 50.0))
    return (mean * strength, (1 - mean) * strength)


# -- evaluation against the simulator's hidden truth -------------------------------------------


def fit_from_log(
    events: pl.DataFrame, items: pl.DataFrame, config: CadenceConfig | None = None
) -> CadenceModel:
    """Fit on an events frame with ``person_id`` (see :mod:`concierge.models.people`)."""
    delays = resale_delays(events, items)
    return CadenceModel(config).fit(
        occasions(events, items), delays, resale_counts(events, items, delays)
    )


def evaluate_on_simulation(
    events: pl.DataFrame,
    items: pl.DataFrame,
    truth: dict[str, Any],
    *,
    holdout_days: float = 120.0,
    config: CadenceConfig | None = None,
) -> dict[str, Any]:
    """Recovered cadences and sell delays against the simulator's truth file (parsed JSON).

    The model is fitted on the log up to ``end - holdout_days``. *Cadence*: the typical
    interval per (shopper, category) against the truth's ``cadence_days`` (Pearson correlation
    of logs, mean and median absolute error in days), by how many purchases we saw. *Coverage*:
    for each (shopper, category) whose window closes before the end of the log and who had not
    churned by then (truth ``churned_day``), whether the actual next purchase fell in the
    predicted window. *Sell delays*: the posterior median buy-to-list delay of every reseller
    with a matched listing against the truth's ``typical_delay_days``.
    """
    from datetime import datetime

    from concierge.clock import to_us

    end_us = int(events["ts_us"].cast(pl.Int64).max() or 0)  # type: ignore[arg-type]
    cut_us = end_us - int(holdout_days * DAY_US)
    start_us = to_us(datetime.fromisoformat(truth["config"]["start"]))
    past = events.filter(pl.col("ts_us") <= cut_us)
    model = fit_from_log(past, items, config)
    tab = model.table(as_of_us=cut_us)
    rows = [
        (s["customer_id"], k, float(v), s["churned_day"])
        for s in truth["shoppers"]
        for k, v in s["cadence_days"].items()
    ]
    tt = pl.DataFrame(
        rows,
        schema={
            "person_id": pl.String,
            "category": pl.String,
            "truth": pl.Float64,
            "churned_day": pl.Float64,
        },
        orient="row",
    )
    # the plain average for comparison: the person's own mean interval, else the category's
    raw = (
        occasions(past, items)
        .sort("person_id", "category", "ts_us")
        .with_columns(
            (pl.col("ts_us").diff().over("person_id", "category").cast(pl.Float64) / DAY_US)
            .clip(lower_bound=MIN_INTERVAL_DAYS)
            .alias("gap")
        )
    )
    own = raw.group_by("person_id", "category").agg(pl.col("gap").mean().alias("plain"))
    pooled = raw.group_by("category").agg(pl.col("gap").mean().alias("pooled"))
    joined = (
        tab.join(tt, on=["person_id", "category"])
        .join(own, on=["person_id", "category"], how="left")
        .join(pooled, on="category", how="left")
        .with_columns(pl.coalesce("plain", "pooled", pl.lit(90.0)).alias("plain"))
    )
    out: dict[str, Any] = {"holdout_days": holdout_days, "cadence": {}}
    for lo in (1, 2, 4):
        sel = joined.filter(pl.col("purchases") >= lo)
        if sel.height < 3:
            continue
        est, tru = sel["cadence_days"].to_numpy(), sel["truth"].to_numpy()
        plain = sel["plain"].to_numpy()
        out["cadence"][f"purchases>={lo}"] = {
            "pairs": sel.height,
            "corr_log": float(np.corrcoef(np.log(est), np.log(tru))[0, 1]),
            "mae_days": float(np.mean(np.abs(est - tru))),
            "median_ae_days": float(np.median(np.abs(est - tru))),
            "plain_average": {
                "corr_log": float(np.corrcoef(np.log(plain), np.log(tru))[0, 1]),
                "mae_days": float(np.mean(np.abs(plain - tru))),
                "median_ae_days": float(np.median(np.abs(plain - tru))),
            },
        }
    # coverage of the window for the next purchase after the cut
    occ = occasions(events.filter(pl.col("ts_us") > cut_us), items)
    nxt = occ.group_by("person_id", "category").agg(pl.col("ts_us").min().alias("next_us"))
    cov = (
        tab.join(tt.select("person_id", "category", "churned_day"), on=["person_id", "category"])
        .join(nxt, on=["person_id", "category"], how="left")
        .with_columns(
            (cut_us + (pl.col("next_window_high_days") * DAY_US).cast(pl.Int64)).alias("hi"),
            (cut_us + (pl.col("next_window_low_days") * DAY_US).cast(pl.Int64)).alias("lo"),
        )
        .filter(pl.col("hi") <= end_us)
        .filter(
            pl.col("churned_day").is_null()
            | ((start_us + pl.col("churned_day") * DAY_US) > pl.col("hi"))
        )
        .with_columns(
            (
                pl.col("next_us").is_not_null()
                & (pl.col("next_us") >= pl.col("lo"))
                & (pl.col("next_us") <= pl.col("hi"))
            ).alias("covered")
        )
    )
    out["coverage"] = {
        "nominal": model.config.window,
        "pairs": cov.height,
        "covered": _mean(cov["covered"]) if cov.height else None,
        "by_category": {
            "any (*)": _mean(cov.filter(pl.col("category") == ALL)["covered"])
            if cov.filter(pl.col("category") == ALL).height
            else None,
            "specific": _mean(cov.filter(pl.col("category") != ALL)["covered"])
            if cov.filter(pl.col("category") != ALL).height
            else None,
        },
    }
    sellers = np.array(
        [s["customer_id"] for s in truth["shoppers"] if s["reseller"]], dtype=np.str_
    )
    typical = np.array(
        [s["resell"]["typical_delay_days"] for s in truth["shoppers"] if s["reseller"]]
    )
    sold = model.sell(sellers)
    seen = sold["listed"] >= 1
    if seen.sum() >= 3:
        est = sold["sell_delay_days"][seen]
        out["sell_delay"] = {
            "sellers": int(seen.sum()),
            "corr_log": float(np.corrcoef(np.log(est), np.log(typical[seen]))[0, 1]),
            "mae_days": float(np.mean(np.abs(est - typical[seen]))),
            "median_ae_days": float(np.median(np.abs(est - typical[seen]))),
        }
    else:
        out["sell_delay"] = {"sellers": int(seen.sum())}
    return out


def _mean(s: pl.Series) -> float:
    return float(s.cast(pl.Float64).to_numpy().mean())
