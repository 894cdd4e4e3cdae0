"""Pareto/NBD: the Poisson purchasing / exponential lifetime model of repeat buying.

Schmittlein, D. C., Morrison, D. G. & Colombo, R. (1987), "Counting your customers: who are they
and what will they do next?", *Management Science* 33(1), 1-24; in the notation and with the
expressions of Fader, P. S. & Hardie, B. G. S. (2005), "A note on deriving the Pareto/NBD model
and related expressions", http://brucehardie.com/notes/009/ (FH 2005 below).

Assumptions (FH 2005, section 1):

1. While active, transactions follow a Poisson process with rate λ.
2. Each customer's unobserved lifetime is exponential with death rate μ.
3. λ ~ gamma(r, α) and μ ~ gamma(s, β) across customers, independently.

Why our own code: ``lifetimes`` fits this model too (and its parameters match ours,
``tests/test_lifetime_golden.py``), but it loops a Nelder-Mead fit three times over per-customer
rows; here the log-likelihood (FH 2005 eq. 18, with A₀ of eqs. 19-20) is evaluated once per
*distinct* (x, t_x, T) row, in log space: the Gauss hypergeometric ₂F₁ terms are computed with
``scipy.special.hyp2f1`` on the branch whose argument lies in [0, 1) (α ≥ β or α < β, as
FH 2005 prescribe) and their difference with ``logsumexp``-style arithmetic, so no term
overflows. There is no simple analytic gradient through ₂F₁'s parameters, so the optimizer is
Nelder-Mead followed by L-BFGS-B with finite differences on log-parameters.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import numpy as np
from pydantic import Field
from scipy.special import gammaln, hyp2f1

from concierge.models.base import ModelConfig
from concierge.models.lifetime._common import (
    F,
    ParametricModel,
    check_rfm,
    compress,
    fit_log_params,
)

PARAMS = ("r", "alpha", "s", "beta")


def _log_term(p: tuple[float, ...], x: F, t: F) -> F:
    """log of ₂F₁(r+s+x, c; r+s+x+1; z) / (m+t)^(r+s+x), one term of A₀ (FH 2005 eqs. 19-20).

    FH 2005 pick the branch (α ≥ β: m = α, c = s+1, z = (α-β)/(α+t); α < β: m = β,
    c = r+x, z = (β-α)/(β+t)) whose argument lies in [0, 1), where the series converges. Both
    expressions are the same analytic function (they agree to 1e-11 on our tests), and near
    z = 1 the series converges so slowly that ``hyp2f1`` takes a hundred times longer (e.g.
    β → ∞ when nobody seems to drop out, as in Online Retail). There the *other* expression,
    whose argument is negative and which ``hyp2f1`` evaluates through a transformation, is
    used instead.
    """
    r, alpha, s, beta = p
    rsx = r + s + x
    out = np.empty_like(x)
    std = alpha >= beta
    d = alpha - beta
    z_std = np.abs(d) / ((alpha if std else beta) + t)
    slow = z_std > 0.9
    for use_alpha, rows in ((std, ~slow), (not std, slow)):
        if not np.any(rows):
            continue
        m = alpha if use_alpha else beta
        c = s + 1.0 if use_alpha else r + x[rows]
        z = (d if use_alpha else -d) / (m + t[rows])
        out[rows] = np.log(hyp2f1(rsx[rows], c, rsx[rows] + 1.0, z)) - rsx[rows] * np.log(
            m + t[rows]
        )
    return out


def _log_a0(p: tuple[float, ...], x: F, t_x: F, big_t: F) -> F:
    """log A₀ of FH 2005 eqs. (19) (α ≥ β) and (20) (α < β).

    A₀ = ₂F₁(r+s+x, c; r+s+x+1; |α-β|/(m+t_x)) / (m+t_x)^(r+s+x)
       - ₂F₁(r+s+x, c; r+s+x+1; |α-β|/(m+T)) / (m+T)^(r+s+x),
    with m = max(α, β) and c = s+1 if α ≥ β, else c = r+x (each term by :func:`_log_term`).
    The first term is the larger, so log A₀ = log t₁ + log(1 - t₂/t₁); A₀ = 0 when t_x = T
    gives -inf, which the caller's logaddexp handles.
    """
    log_t1 = _log_term(p, x, t_x)
    log_t2 = _log_term(p, x, big_t)
    with np.errstate(divide="ignore"):
        out: F = log_t1 + np.log1p(-np.exp(np.minimum(log_t2 - log_t1, 0.0)))
    return out


def _loglik(p: tuple[float, ...], x: F, t_x: F, big_t: F) -> F:
    """Each customer's log-likelihood, FH 2005 eq. (18)."""
    r, alpha, s, beta = p
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
    first = -(r + x) * np.log(alpha + big_t) - s * np.log(beta + big_t)
    second = np.log(s) - np.log(r + s + x) + _log_a0(p, x, t_x, big_t)
    out: F = a1 + np.logaddexp(first, second)
    return out


class ParetoNBDConfig(ModelConfig):
    """Settings of :class:`ParetoNBD`."""

    penalizer: float = Field(
        0.0,
        ge=0.0,
        description="L2 penalty on the parameters, added to the mean negative log-likelihood.",
    )
    maxiter: int = Field(3000, ge=10, description="Most optimizer iterations.")


class ParetoNBD(ParametricModel[ParetoNBDConfig]):
    """The Pareto/NBD model: P(alive) and expected repeat purchases per customer.

    Fitted attributes: ``params_`` (r, alpha, s, beta), ``log_likelihood_``, ``n_``,
    ``converged_``.
    """

    PARAMS = PARAMS

    name: ClassVar[str] = "pareto_nbd"
    Config: ClassVar[type[ModelConfig]] = ParetoNBDConfig

    def fit(self, frequency: Any, recency: Any, T: Any) -> Self:
        """Fit by maximum likelihood on per-customer (x, t_x, T)."""
        x, t_x, big_t = check_rfm(frequency, recency, T)
        (ux, ut, uT), w = compress(x, t_x, big_t)
        n = float(w.sum())
        pen = self.config.penalizer

        def objective(lp: F) -> float:
            p = np.exp(np.clip(lp, -30.0, 30.0))
            with np.errstate(all="ignore"):
                ll = float(w @ _loglik(tuple(p), ux, ut, uT))
            if not np.isfinite(ll):
                return 1e300
            return -ll / n + pen * float(p @ p)

        scale = float(np.mean(big_t))
        start = np.log(np.array([1.0, scale, 1.0, scale]))
        # keep the search in a sane box (rates beyond 10^4 times the mean T change the
        # likelihood by less than its noise); at_bound_ says when the optimum is on its edge
        lo, hi = np.log(1e-4), np.log(1e4)
        bounds = [(lo, hi), (lo + np.log(scale), hi + np.log(scale))] * 2
        params, ok, nit, _msg = fit_log_params(
            objective, start, jac=False, maxiter=self.config.maxiter, bounds=bounds
        )
        lp = np.log(params)
        self.at_bound_ = bool(
            np.any(lp <= np.array([b[0] for b in bounds]) + 1e-3)
            or np.any(lp >= np.array([b[1] for b in bounds]) - 1e-3)
        )
        self.params_ = dict(zip(PARAMS, (float(v) for v in params), strict=True))
        self.n_ = int(x.size)
        self.converged_ = ok
        self.iterations_ = nit
        self.log_likelihood_ = float(w @ _loglik(tuple(params), ux, ut, uT))
        return self._fitted()

    def _extra_state(self) -> dict[str, Any]:
        return {"at_bound": self.at_bound_}

    def _load_extra_state(self, meta: dict[str, Any]) -> None:
        self.at_bound_ = bool(meta.get("at_bound", False))

    def _p(self) -> tuple[float, float, float, float]:
        self.check_fitted()
        return self.params_["r"], self.params_["alpha"], self.params_["s"], self.params_["beta"]

    def log_likelihood(self, frequency: Any, recency: Any, T: Any) -> F:
        """Each customer's log-likelihood, FH 2005 eq. (18)."""
        x, t_x, big_t = check_rfm(frequency, recency, T)
        return _loglik(self._p(), x, t_x, big_t)

    def conditional_probability_alive(self, frequency: Any, recency: Any, T: Any) -> F:
        """P(alive | x, t_x, T), FH 2005 section 5.1, eqs. (36)-(37).

        The share of the likelihood in which the customer is still alive at T:
        Γ(r+x)α^rβ^s/Γ(r) / ((α+T)^(r+x)(β+T)^s) / L.
        """
        x, t_x, big_t = check_rfm(frequency, recency, T)
        p = self._p()
        r, alpha, s, beta = p
        alive = (
            gammaln(r + x)
            - gammaln(r)
            + r * np.log(alpha)
            + s * np.log(beta)
            - (r + x) * np.log(alpha + big_t)
            - s * np.log(beta + big_t)
        )
        out: F = np.minimum(np.exp(alive - _loglik(p, x, t_x, big_t)), 1.0)
        return out

    def conditional_expected_purchases(self, t: Any, frequency: Any, recency: Any, T: Any) -> F:
        """E[Y(t) | x, t_x, T] in (T, T+t], FH 2005 eq. (41):

        P(alive) · (r+x)(β+T) / ((α+T)(s-1)) · [1 - ((β+T)/(β+T+t))^(s-1)]
        (the s → 1 limit, (r+x)/(α+T) · (β+T) · log((β+T+t)/(β+T)), is used near s = 1).
        """
        x, t_x, big_t = check_rfm(frequency, recency, T)
        tt = np.asarray(t, dtype=np.float64)
        if not np.all(np.isfinite(tt)) or np.any(tt < 0):
            raise ValueError("t must be finite and non-negative")
        r, alpha, s, beta = self._p()
        ratio = np.log(beta + big_t + tt) - np.log(beta + big_t)
        if abs(s - 1.0) < 1e-9:
            horizon = ratio
        else:
            horizon = -np.expm1(-(s - 1.0) * ratio) / (s - 1.0)
        rate = (r + x) * (beta + big_t) / (alpha + big_t)
        out: F = self.conditional_probability_alive(x, t_x, big_t) * rate * horizon
        return out
