"""The collaborative model: contracts, and fold-in equal to implicit's own user recalculation."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from concierge.models.collaborative import CollaborativeModel
from concierge.models.idmap import IdMap
from concierge.testing.estimators import EstimatorContract
from concierge.testing.recommenders import RecommenderContract, checkerboard


def _ids(n: int, p: str) -> IdMap:
    return IdMap(np.array([f"{p}{i}" for i in range(n)], dtype=np.str_))


class TestALSRecommender(RecommenderContract):
    def make_model(self, **o: Any) -> CollaborativeModel:
        # the checkerboard has rank 2: two factors find it from every seed (measured: 20 of 20
        # seeds), six overfit it from about a third of the seeds, so the known answer depended
        # on the random start and the CPU's floating-point path (it failed on one machine)
        return CollaborativeModel(
            **({"factors": 2, "iterations": 20, "threads": 1, "alpha": 5.0} | o)
        )

    def fit(self, model: Any, user_items: sp.csr_matrix) -> Any:
        n, m = user_items.shape
        return model.fit(user_items, _ids(n, "u"), _ids(m, "i"))

    def scores(self, model: Any, row: sp.csr_matrix) -> Any:
        return model.score_items(row.indices.astype(np.int64), row.data)


class TestALSEstimator(EstimatorContract):
    def make_model(self, **o: Any) -> CollaborativeModel:
        return CollaborativeModel(**({"factors": 4, "iterations": 5, "threads": 1} | o))

    def fit(self, model: Any) -> Any:
        m = checkerboard(10)
        return model.fit(m, _ids(10, "u"), _ids(10, "i"))

    def output(self, model: Any) -> Any:
        return model.outputs()


class TestBPREstimator(EstimatorContract):
    """BPR (the option): same contracts; its fold-in is the least-squares one over BPR's items."""

    def make_model(self, **o: Any) -> CollaborativeModel:
        return CollaborativeModel(
            **({"algorithm": "bpr", "factors": 4, "iterations": 20, "threads": 1} | o)
        )

    def fit(self, model: Any) -> Any:
        return model.fit(checkerboard(10), _ids(10, "u"), _ids(10, "i"))

    def output(self, model: Any) -> Any:
        return model.outputs()


def test_fold_in_matches_implicit_recalculate_user() -> None:
    from implicit.cpu.als import AlternatingLeastSquares

    rng = np.random.default_rng(42)
    dense = (rng.random((60, 40)) < 0.15) * rng.integers(1, 5, (60, 40))
    m = sp.csr_matrix(dense.astype(np.float32))
    model = CollaborativeModel(factors=8, iterations=10, threads=1, alpha=1.0, regularization=0.1)
    model.fit(m, _ids(60, "u"), _ids(40, "i"))
    ref = AlternatingLeastSquares(
        factors=8, regularization=0.1, alpha=1.0, use_cg=False, num_threads=1
    )
    ref.user_factors = model.user_factors_.copy()
    ref.item_factors = model.item_factors_.copy()
    row = m[7]
    theirs = ref.recalculate_user(7, row)
    ours = model.fold_in(row.indices.astype(np.int64), row.data)
    np.testing.assert_allclose(ours, np.asarray(theirs).ravel(), rtol=1e-3, atol=1e-4)


def test_a_new_interaction_moves_the_fold_in() -> None:
    m = checkerboard(12)
    model = CollaborativeModel(factors=4, iterations=15, threads=1, alpha=5.0).fit(
        m, _ids(12, "u"), _ids(12, "i")
    )
    before = model.score_items(np.array([0, 2]), np.array([1.0, 1.0]))
    after = model.score_items(np.array([0, 2, 1, 3, 5]), np.array([1.0, 1.0, 5.0, 5.0, 5.0]))
    assert np.argmax(before) % 2 == 0
    assert after[7] - after[8] > before[7] - before[8]
