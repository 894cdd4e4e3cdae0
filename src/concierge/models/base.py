"""The estimator shape every model follows (scikit-learn, RecTools, lkpy; see STYLE.md).

* ``XConfig(BaseModel, extra="forbid")`` holds the hyper-parameters, documented field by field;
  ``Model(config=None, **kwargs)`` validates keyword arguments into it; ``__init__`` only stores.
* Learned state lives in attributes ending in ``_``; ``fit(...)`` returns ``self``.
* Using a model before ``fit`` raises :class:`~concierge.errors.NotFittedError`.
* Randomness comes only from ``config.seed`` through :func:`rng`.
* ``to_artifact()`` gives NumPy arrays and small JSON; ``from_artifact`` rebuilds an equal model.
  :mod:`concierge.models.registry` stores these; no pickle anywhere.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Generic, Self, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from concierge.errors import NotFittedError
from concierge.models.registry import Artifact


class ModelConfig(BaseModel):
    """Base of every model config: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


C = TypeVar("C", bound=ModelConfig)


def rng(seed: int | None) -> np.random.Generator:
    return np.random.default_rng(seed)


class ModelBase(ABC, Generic[C]):
    """A model with a validated config, fitted state and an artifact form.

    Subclasses set ``name`` (the registry name) and ``Config``, implement their own ``fit``
    (calling :meth:`_fitted` at its end) and :meth:`_state` / :meth:`_load_state`.
    """

    name: ClassVar[str]
    Config: ClassVar[type[ModelConfig]]

    def __init__(self, config: C | None = None, **kwargs: Any) -> None:
        if config is not None and kwargs:
            raise TypeError("give either a config or keyword arguments, not both")
        self.config: C = config if config is not None else self.Config(**kwargs)  # type: ignore[assignment]
        self.fitted_: bool = False

    @property
    def is_fitted(self) -> bool:
        return self.fitted_

    def check_fitted(self) -> None:
        if not self.fitted_:
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() first")

    def _fitted(self) -> Self:
        self.fitted_ = True
        return self

    def get_config(self) -> dict[str, Any]:
        return self.config.model_dump(mode="json")

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Self:
        return cls(cls.Config.model_validate(config))  # type: ignore[arg-type]

    # -- artifacts -----------------------------------------------------------------------

    @abstractmethod
    def _state(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        """Arrays and small JSON meta that fully describe the fitted state."""

    @abstractmethod
    def _load_state(self, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> None:
        """Restore the fitted state from :meth:`_state`'s output."""

    def to_artifact(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        self.check_fitted()
        return self._state()

    @classmethod
    def from_state(
        cls, config: dict[str, Any], arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]
    ) -> Self:
        model = cls.from_config(config)
        model._load_state(arrays, meta)
        return model._fitted()

    @classmethod
    def from_artifact(cls, artifact: Artifact) -> Self:
        if artifact.info.name != cls.name:
            raise TypeError(f"artifact {artifact.info.name!r} is not a {cls.name!r} model")
        return cls.from_state(artifact.info.config, artifact.arrays, artifact.info.meta)
