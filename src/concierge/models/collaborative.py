"""The individual model: implicit-feedback matrix factorization over the ``implicit`` library.

Fit: ``implicit``'s ALS (Hu, Koren & Volinsky 2008, "Collaborative Filtering for Implicit
Feedback Datasets", with the conjugate-gradient solver of Takács et al. 2011) or BPR (Rendle et
al. 2009) on the person x item weight matrix of :mod:`concierge.models.interactions`, the
confidence being ``c = alpha * w`` as in equation (1) of Hu et al. (``implicit`` reads the
matrix values as confidences). BLAS is held to one thread while ``implicit`` runs its own
threads (its documented advice; see :func:`blas_single_thread`).

Fold-in at request time: the person's factor is solved from their *current* interactions,
equation (4) of Hu et al. with the item factors ``Y`` fixed,

    x_u = (Y^TY + Y^T(C_u - I)Y + λI)^-1 Y^T C_u p(u),

so a view or a purchase logged a moment ago changes the next recommendations. ``Y^TY + λI`` is
cached; only the person's items enter the correction, and the k x k system is solved by
Cholesky. Measured against ``implicit``'s own ``recalculate_user`` (which rebuilds a solver per
call) in ``bench/bench_recs.py`` on Online Retail: about 3x faster per user (0.36 ms against
1.16 ms, 64 factors, one thread); ``tests/test_collab.py`` checks both give the same factor.
For BPR,
whose objective has no closed-form user step, the same least-squares fold-in is used over BPR's
item factors (an approximation, documented as such).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from pydantic import Field
from scipy.linalg.lapack import dposv
from threadpoolctl import ThreadpoolController

from concierge.models.base import ModelBase, ModelConfig
from concierge.models.idmap import IdMap

F32 = npt.NDArray[np.float32]


class _OneBlasThread:
    """BLAS held to one thread while any caller, in any thread, is inside the block.

    The limit is process-wide, so nested and concurrent blocks are counted: the first to enter
    sets it, the last to leave restores the original. Two blocks that each saved and restored
    on their own (``threadpool_limits``) could interleave and leave BLAS at one thread for
    good, or restore two threads in the middle of the other's work.

    The controller (which finds the loaded BLAS libraries, about 2 ms) is built again when a
    block is entered with ``rescan=True`` (training, where 2 ms do not count); the request
    path reuses the last one (an entry then costs about 10 us).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._controller: ThreadpoolController | None = None
        self._limit: Any = None
        self._hold = False

    def _held(self) -> bool:
        return self._hold

    def hold(self) -> None:
        """Limit BLAS to one thread for the rest of the process, and make the blocks free
        (for a serving process, whose requests are its only BLAS work; its entry point calls
        this)."""
        with self._lock:
            if self._limit is None:
                self._controller = ThreadpoolController()
                self._limit = self._controller.limit(limits=1, user_api="blas")
            self._users += 1  # never back to 0: never restored
            self._hold = True

    @contextlib.contextmanager
    def __call__(self, *, rescan: bool = True) -> Iterator[None]:
        if self._users and self._held():
            yield
            return
        with self._lock:
            if self._users == 0:
                if self._controller is None or rescan:
                    self._controller = ThreadpoolController()
                self._limit = self._controller.limit(limits=1, user_api="blas")
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0 and self._limit is not None:
                    self._limit.restore_original_limits()
                    self._limit = None


blas_single_thread = _OneBlasThread()
"""``implicit`` warns when BLAS uses threads beside its own, and a matrix-vector product on the
request path is 2-3x slower with two BLAS threads on a busy 2-core machine (measured): limit BLAS
to one thread meanwhile (``with blas_single_thread():``)."""


class CollaborativeConfig(ModelConfig):
    """Hyper-parameters of :class:`CollaborativeModel` (tuned in ``concierge evaluate``)."""

    algorithm: Literal["als", "bpr"] = Field("als", description="implicit's ALS or BPR.")
    factors: int = Field(64, ge=2, le=512, description="Latent dimensions.")
    regularization: float = Field(0.05, ge=0, description="λ of the L2 penalty.")
    alpha: float = Field(2.0, gt=0, description="Confidence per unit of interaction weight.")
    iterations: int = Field(15, ge=1, le=200, description="ALS sweeps or BPR epochs.")
    learning_rate: float = Field(0.01, gt=0, description="BPR only.")
    half_life_days: float = Field(180.0, gt=0, description="Recency decay of interactions.")
    seed: int = Field(42, description="Seeds the factor initialisation.")
    threads: int = Field(0, ge=0, description="implicit's threads (0: all cores).")


class CollaborativeModel(ModelBase[CollaborativeConfig]):
    """ALS/BPR factors of people and items, with fold-in of a person's current interactions.

    Examples
    --------
    >>> import scipy.sparse as sp, numpy as np
    >>> from concierge.models.idmap import IdMap
    >>> m = sp.csr_matrix(np.kron(np.eye(2), np.ones((3, 3))).astype(np.float32))
    >>> model = CollaborativeModel(factors=4, iterations=10, threads=1).fit(
    ...     m, IdMap.from_values([f"u{i}" for i in range(6)]),
    ...     IdMap.from_values([f"i{i}" for i in range(6)]))
    >>> s = model.score_items(np.array([0]), np.array([1.0]))
    >>> bool(s[1] > s[4])
    True
    """

    name = "collaborative"
    Config = CollaborativeConfig

    user_factors_: F32
    item_factors_: F32
    user_ids_: npt.NDArray[np.str_]
    item_ids_: npt.NDArray[np.str_]
    gram_: npt.NDArray[np.float64]

    def fit(self, user_items: sp.csr_matrix, users: IdMap, items: IdMap) -> CollaborativeModel:
        """Fit on a person x item weight matrix whose rows/columns follow ``users``/``items``."""
        cfg = self.config
        if user_items.shape != (len(users), len(items)):
            raise ValueError("the matrix shape must match the id maps")
        conf = (user_items * cfg.alpha).astype(np.float32).tocsr()
        with blas_single_thread():
            model = self._implicit()
            model.fit(conf, show_progress=False)
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        self.user_ids_ = users.external
        self.item_ids_ = items.external
        self._prepare()
        return self._fitted()

    def _implicit(self) -> Any:
        cfg = self.config
        if cfg.algorithm == "als":
            from implicit.cpu.als import AlternatingLeastSquares

            return AlternatingLeastSquares(
                factors=cfg.factors,
                regularization=cfg.regularization,
                alpha=1.0,
                iterations=cfg.iterations,
                random_state=cfg.seed,
                num_threads=cfg.threads,
            )
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(
            factors=cfg.factors,
            learning_rate=cfg.learning_rate,
            regularization=cfg.regularization,
            iterations=cfg.iterations,
            random_state=cfg.seed,
            num_threads=cfg.threads,
        )

    def _prepare(self) -> None:
        y = self.item_factors_.astype(np.float64)
        self.gram_ = y.T @ y + self.config.regularization * np.eye(y.shape[1])
        self._items: IdMap | None = None

    @property
    def items(self) -> IdMap:
        self.check_fitted()
        if self._items is None:
            self._items = IdMap(self.item_ids_)
        return self._items

    def fold_in(self, item_idx: npt.NDArray[np.int64], weight: npt.ArrayLike) -> F32:
        """A person's factor from their interactions (item indices and weights ``w``)."""
        self.check_fitted()
        w = np.asarray(weight, dtype=np.float64)
        keep = (item_idx >= 0) & (w > 0)
        idx, c = item_idx[keep], w[keep] * self.config.alpha
        if idx.size == 0:
            return np.zeros(self.item_factors_.shape[1], dtype=np.float32)
        y = self.item_factors_[idx].astype(np.float64)
        a = self.gram_ + (y.T * (c - 1.0)) @ y
        b = y.T @ c
        # LAPACK's Cholesky solve straight away: scipy.linalg.solve's checks cost more than the
        # 64 x 64 solve itself (measured: 38 us against 80-150 us). ``a`` is positive definite:
        # every confidence is positive and lambda > 0.
        _c, x, info = dposv(a, b, lower=0, overwrite_a=1, overwrite_b=1)
        if info != 0:  # numerically singular (lambda = 0): least squares instead
            x = np.linalg.lstsq(a, b, rcond=None)[0]
        out: F32 = np.asarray(x, dtype=np.float32)
        return out

    def fold_in_matrix(self, user_items: sp.csr_matrix) -> F32:
        """:meth:`fold_in` for every row of a person x item weight matrix (evaluation)."""
        m = user_items.tocsr()
        out = np.zeros((m.shape[0], self.item_factors_.shape[1]), dtype=np.float32)
        for u in np.flatnonzero(np.diff(m.indptr)):  # one small solve per person with data
            lo, hi = m.indptr[u], m.indptr[u + 1]
            out[u] = self.fold_in(m.indices[lo:hi].astype(np.int64), m.data[lo:hi])
        return out

    def score_items(self, item_idx: npt.NDArray[np.int64], weight: npt.ArrayLike) -> F32:
        """Scores of every item for a person described by their interactions."""
        x = self.fold_in(np.asarray(item_idx, dtype=np.int64), weight)
        out: F32 = self.item_factors_ @ x
        return out

    # -- artifact ---------------------------------------------------------------------------

    def _state(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        return {
            "user_factors": self.user_factors_,
            "item_factors": self.item_factors_,
            "user_ids": self.user_ids_,
            "item_ids": self.item_ids_,
        }, {"factors": int(self.item_factors_.shape[1])}

    def _load_state(self, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> None:
        self.user_factors_ = arrays["user_factors"].astype(np.float32)
        self.item_factors_ = arrays["item_factors"].astype(np.float32)
        self.user_ids_ = arrays["user_ids"].astype(np.str_)
        self.item_ids_ = arrays["item_ids"].astype(np.str_)
        self._prepare()

    def outputs(self) -> dict[str, Any]:
        self.check_fitted()
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_}
