"""Gamma-Gamma: the spend per transaction.

Fader, P. S., Hardie, B. G. S. & Lee, K. L. (2005), "RFM and CLV: using iso-value curves for
customer base analysis", *Journal of Marketing Research* 42(4), 415-430 (FHL 2005b, section
"Adding monetary value"), and Fader & Hardie (2013), "The Gamma-Gamma model of monetary value",
http://www.brucehardie.com/notes/025/ (FH 2013 below).

Assumptions (FH 2013, section 1):

1. A customer's transaction values z_1..z_x are i.i.d. gamma(p, ν) around their mean p/ν.
2. ν varies across customers as gamma(q, γ).
3. Spend is independent of the transaction process (check with the correlation of x and the
   mean spend; it is reported in the trainer's metrics).

Fitted on the customers with at least one repeat transaction, on x and their mean repeat spend
m_x. The marginal likelihood of m_x (FH 2013 eq. 1a, with the Jacobian of the mean):

    log L = lnΓ(px+q) - lnΓ(px) - lnΓ(q) + q ln γ + (px-1) ln m_x + px ln x - (px+q) ln(γ + x m_x)

has the simple analytic gradient used here (digamma terms), so BFGS on log-parameters converges
in a few dozen steps over all customers at once.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import numpy as np
from pydantic import Field
from scipy.special import digamma, gammaln

from concierge.errors import InputError
from concierge.models.base import ModelConfig
from concierge.models.lifetime._common import F, ParametricModel, as_array, by_count, fit_log_params

PARAMS = ("p", "q", "gamma")
_Pre = tuple[F, F, float, float, F]  # distinct x, their weights, Σw·x·ln m, Σw·ln m, w·x


def check_spend(frequency: Any, monetary_value: Any) -> tuple[F, F]:
    x = as_array(frequency, "frequency")
    m = as_array(monetary_value, "monetary_value")
    if x.shape != m.shape:
        raise InputError.one(
            "monetary_value", "frequency and monetary_value must have the same length"
        )
    if np.any(x < 0) or np.any(x != np.round(x)):
        raise InputError.one("frequency", "frequency must be a whole number >= 0")
    if np.any(m < 0):
        raise InputError.one("monetary_value", "negative spend")
    return x, m


class GammaGammaConfig(ModelConfig):
    """Settings of :class:`GammaGamma`."""

    penalizer: float = Field(
        0.0,
        ge=0.0,
        description="L2 penalty on the parameters, added to the mean negative log-likelihood.",
    )
    maxiter: int = Field(2000, ge=10, description="Most optimizer iterations.")


class GammaGamma(ParametricModel[GammaGammaConfig]):
    """Expected spend per transaction for each customer, shrunk toward the population mean.

    Fitted attributes: ``params_`` (p, q, gamma), ``log_likelihood_``, ``n_`` (customers used:
    those with x > 0 and m_x > 0), ``converged_``.
    """

    PARAMS = PARAMS

    name: ClassVar[str] = "gamma_gamma"
    Config: ClassVar[type[ModelConfig]] = GammaGammaConfig

    @staticmethod
    def _objective(lp: F, x: F, m: F, w: F, pen: float, pre: _Pre) -> tuple[float, F]:
        """Weighted mean negative log-likelihood and its gradient in log-parameters.

        The terms in x alone (lnΓ(px+q) - lnΓ(px) + px ln x) are summed over the distinct x;
        Σ w (px-1) ln m is p·S₁ - S₀ with sums fixed by the data; only ln(γ + x m) is per row.
        """
        p, q, g = np.exp(lp)
        kx, kw, s1, s0, wx = pre
        n = kw.sum()
        pk = p * kx
        lgx = np.log(g + x * m)
        ll = (
            kw @ (gammaln(pk + q) - gammaln(pk) + pk * np.log(kx))
            - n * gammaln(q)
            + n * q * np.log(g)
            + p * s1
            - s0
            - p * (wx @ lgx)
            - q * (w @ lgx)
        )
        d_p = kw @ (kx * (digamma(pk + q) - digamma(pk) + np.log(kx))) + s1 - wx @ lgx
        d_q = kw @ digamma(pk + q) - n * digamma(q) + n * np.log(g) - w @ lgx
        d_g = n * q / g - (p * wx + q * w) @ (1.0 / (g + x * m))
        params = np.array([p, q, g])
        grad = np.array([d_p, d_q, d_g]) / n
        value = -float(ll) / n + pen * float(params @ params)
        return value, -grad * params + 2.0 * pen * params * params

    def fit(self, frequency: Any, monetary_value: Any) -> Self:
        """Fit on customers' repeat-transaction counts and mean repeat spend (rows with x = 0
        or no spend carry no information about spend and are left out)."""
        x, m = check_spend(frequency, monetary_value)
        keep = (x > 0) & (m > 0)
        if int(keep.sum()) < 2:
            raise InputError.one("frequency", "need at least two customers with repeat purchases")
        ux, um = x[keep], m[keep]
        w = np.ones_like(ux)
        kx, kw, _ = by_count(ux, w)
        log_m = np.log(um)
        pre: _Pre = (kx, kw, float(w @ (ux * log_m)), float(w @ log_m), w * ux)
        start = np.log(np.array([1.0, 1.0, float(np.mean(um))]))
        pen = self.config.penalizer
        params, ok, nit, _msg = fit_log_params(
            lambda lp: self._objective(lp, ux, um, w, pen, pre),
            start,
            jac=True,
            maxiter=self.config.maxiter,
        )
        self.params_ = dict(zip(PARAMS, (float(v) for v in params), strict=True))
        self.n_ = int(keep.sum())
        self.converged_ = ok
        self.iterations_ = nit
        self.log_likelihood_ = -self._objective(np.log(params), ux, um, w, 0.0, pre)[0] * float(
            w.sum()
        )
        # an optimum on the edge of the space (gamma underflowing to 0 on a tiny sample) is
        # not a fit: say so rather than report a converged model with no likelihood
        self.converged_ = ok and bool(np.isfinite(self.log_likelihood_))
        return self._fitted()

    def population_mean(self) -> float:
        """E[Z] = pγ/(q-1) for a new customer (infinite when q <= 1)."""
        self.check_fitted()
        p, q, g = self.params_["p"], self.params_["q"], self.params_["gamma"]
        return float(p * g / (q - 1.0)) if q > 1.0 else float("inf")

    def conditional_expected_spend(self, frequency: Any, monetary_value: Any) -> F:
        """E[Z | x, m_x] = (γ + x m_x) p / (px + q - 1) (FH 2013 eq. 5; FHL 2005b).

        A weighted mean of the population mean and the customer's own mean, the weight on the
        customer's own growing with x; x = 0 gives the population mean.
        """
        x, m = check_spend(frequency, monetary_value)
        self.check_fitted()
        p, q, g = self.params_["p"], self.params_["q"], self.params_["gamma"]
        out: F = (g + x * m) * p / (p * x + q - 1.0)
        return out
