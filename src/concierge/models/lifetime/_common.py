"""What the lifetime models share: input checks, weighting of repeated rows, the optimizer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize

from concierge.errors import InputError
from concierge.models.base import C, ModelBase

F = npt.NDArray[np.float64]


def as_array(values: Any, field: str) -> F:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError.one(field, "expected numbers") from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise InputError.one(field, "expected a one-dimensional array")
    if not np.all(np.isfinite(arr)):
        raise InputError.one(field, "NaN or infinite value")
    return arr


def check_rfm(frequency: Any, recency: Any, T: Any) -> tuple[F, F, F]:
    """Validated float arrays of (x, t_x, T); every problem names its field.

    x must be a whole number >= 0, 0 <= t_x <= T, T > 0, and t_x = 0 when x = 0.
    """
    x = as_array(frequency, "frequency")
    t_x = as_array(recency, "recency")
    big_t = as_array(T, "T")
    if not (x.shape == t_x.shape == big_t.shape):
        raise InputError.one("recency", "frequency, recency and T must have the same length")
    if x.size == 0:
        raise InputError.one("frequency", "no customers to fit")
    if np.any(x < 0):
        raise InputError.one("frequency", "negative frequency")
    if np.any(x != np.round(x)):
        raise InputError.one("frequency", "frequency must be a whole number of repeat purchases")
    if np.any(t_x < 0):
        raise InputError.one("recency", "negative recency")
    if np.any(big_t <= 0):
        raise InputError.one("T", "T must be positive")
    if np.any(t_x > big_t * (1 + 1e-12)):
        raise InputError.one("recency", "recency greater than T")
    if np.any((x == 0) & (t_x > 0)):
        raise InputError.one("recency", "recency must be 0 when frequency is 0")
    return x, t_x, big_t


def compress(*columns: F) -> tuple[tuple[F, ...], F]:
    """Unique rows of the columns and how often each occurs (likelihoods then cost per unique
    row: CDNOW weeks 1-39 has 2,357 customers but far fewer distinct (x, t_x, T)).

    One ``lexsort`` and a diff; several times faster than ``np.unique(axis=0)``.
    """
    order = np.lexsort(columns[::-1])
    srt = [c[order] for c in columns]
    change = np.zeros(order.size, dtype=bool)
    change[0] = True
    for c in srt:  # a handful of columns, each one vectorized pass
        change[1:] |= c[1:] != c[:-1]
    starts = np.flatnonzero(change)
    counts = np.diff(np.append(starts, order.size)).astype(np.float64)
    return tuple(np.ascontiguousarray(c[starts]) for c in srt), counts


def by_count(x: F, w: F) -> tuple[F, F, npt.NDArray[np.int64]]:
    """The distinct whole-number values of ``x``, their total weights and each row's index.

    Terms of a likelihood that depend on x alone (lnΓ(r+x), digamma(b+x), …) are then evaluated
    once per distinct x (a few dozen values) instead of once per row.
    """
    vals, inv = np.unique(x, return_inverse=True)
    weights = np.bincount(inv, weights=w, minlength=vals.size).astype(np.float64)
    return vals, weights, inv.astype(np.int64)


def fit_log_params(
    objective: Callable[[F], tuple[float, F] | float],
    start: F,
    *,
    jac: bool,
    maxiter: int = 2000,
    bounds: list[tuple[float, float]] | None = None,
) -> tuple[F, bool, int, str]:
    """Minimise ``objective`` over log-parameters; returns (params, converged, iterations, msg).

    With an analytic gradient BFGS is used; without, L-BFGS-B with finite differences inside
    ``bounds`` (log-parameters), and the Nelder-Mead simplex if that does not converge.
    """
    if jac:
        res = minimize(
            objective, start, jac=True, method="BFGS", options={"gtol": 1e-9, "maxiter": maxiter}
        )
        if not res.success and "precision loss" not in str(res.message):
            res = minimize(
                objective,
                res.x,
                jac=True,
                method="L-BFGS-B",
                options={"maxiter": maxiter, "ftol": 1e-15, "gtol": 1e-10},
            )
        ok = bool(res.success) or "precision loss" in str(res.message)
        return np.exp(res.x), ok, int(res.nit), str(res.message)
    res = minimize(
        objective,
        start,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": maxiter, "ftol": 1e-14, "gtol": 1e-9},
    )
    if res.success:
        return np.exp(res.x), True, int(res.nit), str(res.message)
    res2 = minimize(  # a rough landscape: the simplex, then polish again
        objective,
        res.x,
        method="Nelder-Mead",
        bounds=bounds,
        options={"xatol": 1e-8, "fatol": 1e-12, "maxiter": maxiter, "maxfev": 4 * maxiter},
    )
    best = res2 if res2.fun <= res.fun else res
    return np.exp(best.x), bool(res2.success), int(res.nit + res2.nit), str(best.message)


class ParametricModel(ModelBase[C]):
    """A model whose fitted state is a few named parameters and the figures of its fit.

    Subclasses set ``PARAMS`` (the names in the paper's order) and, at the end of ``fit``,
    ``params_``, ``log_likelihood_``, ``n_``, ``converged_`` and ``iterations_``; anything
    else they keep goes through :meth:`_extra_state` / :meth:`_load_extra_state`.
    """

    PARAMS: tuple[str, ...] = ()
    params_: dict[str, float]
    log_likelihood_: float
    n_: int
    converged_: bool
    iterations_: int

    def params_array(self) -> F:
        """The fitted parameters in ``PARAMS`` order."""
        self.check_fitted()
        return np.array([self.params_[k] for k in self.PARAMS])

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, meta: dict[str, Any]) -> None:
        return None

    def _state(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        return {"params": self.params_array()}, {
            "params": self.params_,
            "log_likelihood": self.log_likelihood_,
            "n": self.n_,
            "converged": self.converged_,
            "iterations": self.iterations_,
            **self._extra_state(),
        }

    def _load_state(self, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> None:
        p = np.asarray(arrays["params"], dtype=np.float64)
        self.params_ = dict(zip(self.PARAMS, (float(v) for v in p), strict=True))
        # a fit whose likelihood was not finite (a degenerate sample) is saved as null in JSON
        ll = meta["log_likelihood"]
        self.log_likelihood_ = float("nan") if ll is None else float(ll)
        self.n_ = int(meta["n"])
        self.converged_ = bool(meta["converged"])
        self.iterations_ = int(meta["iterations"])
        self._load_extra_state(meta)
