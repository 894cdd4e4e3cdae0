"""``EstimatorContract``: the generic checks every model must pass.

Subclass it in a pytest class and supply three hooks; pytest collects the ``test_*`` methods::

    class TestBGNBD(EstimatorContract):
        def make_model(self, **overrides): return BetaGeo(**overrides)
        def fit(self, model): return model.fit(frequency, recency, T)
        def output(self, model): return model.params_array()

``output`` returns something that ``numpy.testing.assert_allclose`` (or ``==``) can compare.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import pytest

from concierge.errors import NotFittedError
from concierge.models.base import ModelBase
from concierge.models.registry import pack, unpack


def _assert_same(a: Any, b: Any, rtol: float) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k], rtol)
    elif isinstance(a, (list, tuple)) and a and not np.isscalar(a[0]):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y, rtol)
    else:
        arr_a, arr_b = np.asarray(a), np.asarray(b)
        if arr_a.dtype.kind in "fc":
            np.testing.assert_allclose(arr_a, arr_b, rtol=rtol, atol=1e-12)
        else:
            np.testing.assert_array_equal(arr_a, arr_b)


class EstimatorContract(ABC):
    """Generic checks: unfitted use raises, refits repeat, artifacts and configs round-trip."""

    refit_rtol: float = 1e-6

    @abstractmethod
    def make_model(self, **overrides: Any) -> ModelBase[Any]:
        """Supplied by each model's test class."""

    @abstractmethod
    def fit(self, model: ModelBase[Any]) -> ModelBase[Any]:
        """Supplied by each model's test class."""

    @abstractmethod
    def output(self, model: ModelBase[Any]) -> Any:
        """Supplied by each model's test class."""

    def test_unfitted_raises(self) -> None:
        model = self.make_model()
        assert not model.is_fitted
        with pytest.raises(NotFittedError):
            self.output(model)

    def test_fit_returns_self(self) -> None:
        model = self.make_model()
        assert self.fit(model) is model
        assert model.is_fitted

    def test_refit_gives_same_output(self) -> None:
        a = self.output(self.fit(self.make_model()))
        b = self.output(self.fit(self.make_model()))
        _assert_same(a, b, self.refit_rtol)

    def test_second_fit_refits(self) -> None:
        model = self.fit(self.make_model())
        first = self.output(model)
        _assert_same(first, self.output(self.fit(model)), self.refit_rtol)

    def test_artifact_round_trip(self) -> None:
        model = self.fit(self.make_model())
        arrays, meta = model.to_artifact()
        restored = type(model).from_state(model.get_config(), unpack(pack(arrays)), meta)
        _assert_same(self.output(model), self.output(restored), 1e-12)

    def test_config_round_trip(self) -> None:
        model = self.make_model()
        again = type(model).from_config(model.get_config())
        assert again.get_config() == model.get_config()

    def test_unknown_config_key_refused(self) -> None:
        with pytest.raises(ValueError):
            self.make_model(no_such_option=1)
