"""``RecommenderContract``: the generic checks every recommender must pass.

Subclass it in a pytest class and supply ``make_model(**overrides)``, ``fit(model, user_items)``
(a users x items CSR of weights) and ``scores(model, user_items_row) -> 1-D array over items``.
The fixture is implicit's checkerboard (every even user liked every even item, every odd user
every odd item, the diagonal withheld): the right answer is known by construction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import scipy.sparse as sp

from concierge.models.base import ModelBase
from concierge.models.registry import pack, unpack


def checkerboard(n: int = 20) -> sp.csr_matrix:
    """Users x items: user ``u`` liked item ``i`` iff ``u % 2 == i % 2``, diagonal withheld."""
    ret = np.zeros((n, n))
    ret[np.add.outer(np.arange(n), np.arange(n)) % 2 == 0] = 1.0
    return sp.csr_matrix(ret - np.eye(n), dtype=np.float32)


class RecommenderContract(ABC):
    """Filters honoured, same seed same output, refit same, save -> load same, checkerboard."""

    n = 20
    atol = 1e-5

    @abstractmethod
    def make_model(self, **overrides: Any) -> ModelBase[Any]:
        """Supplied by each model's test class."""

    @abstractmethod
    def fit(self, model: ModelBase[Any], user_items: sp.csr_matrix) -> ModelBase[Any]:
        """Supplied by each model's test class."""

    @abstractmethod
    def scores(self, model: ModelBase[Any], row: sp.csr_matrix) -> np.ndarray[Any, Any]:
        """Supplied by each model's test class."""

    def _fitted(self) -> tuple[ModelBase[Any], sp.csr_matrix]:
        m = checkerboard(self.n)
        return self.fit(self.make_model(), m), m

    def test_checkerboard_known_answer(self) -> None:
        model, m = self._fitted()
        for u in range(self.n):
            s = self.scores(model, m[u])
            seen = set(m[u].indices.tolist())
            top = [int(i) for i in np.argsort(-s, kind="stable") if int(i) not in seen][:1]
            assert top == [u], f"user {u}: expected the withheld item {u}, got {top}"

    def test_filters_honoured(self) -> None:
        model, m = self._fitted()
        s = self.scores(model, m[0])
        banned = np.zeros(self.n, dtype=bool)
        banned[0] = True  # the best answer, filtered away
        masked = np.where(banned, -np.inf, s)
        assert int(np.argmax(masked)) != 0
        assert np.isneginf(masked[banned]).all()

    def test_same_seed_same_output(self) -> None:
        a, m = self._fitted()
        b = self.fit(self.make_model(), m)
        np.testing.assert_allclose(self.scores(a, m[3]), self.scores(b, m[3]), atol=self.atol)

    def test_refit_same(self) -> None:
        model, m = self._fitted()
        first = self.scores(model, m[5])
        np.testing.assert_allclose(first, self.scores(self.fit(model, m), m[5]), atol=self.atol)

    def test_save_load_same(self) -> None:
        model, m = self._fitted()
        arrays, meta = model.to_artifact()
        again = type(model).from_state(model.get_config(), unpack(pack(arrays)), meta)
        np.testing.assert_allclose(self.scores(model, m[2]), self.scores(again, m[2]), atol=1e-9)
