"""``concierge train``: fit every model from the log and store each as a new version.

A trainer is a small object with a ``name`` and ``train(ctx) -> TrainReport``; the parts that
learn (crowd, collaborative, lifetime, segments, …) each contribute one to :func:`trainers`.
Trainers run in order (later ones may read the artifacts earlier ones stored in the same run,
e.g. segments over the lifetime scores) and every one sees the same ``as_of`` and log position.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from concierge.clock import Clock
from concierge.errors import InputError
from concierge.models.registry import ArtifactInfo, Registry
from concierge.settings import Settings
from concierge.store.engine import Store

ProgressFn = Callable[[str, float], None]  # (what, fraction done 0..1)


@dataclass(frozen=True)
class TrainContext:
    """What a trainer may use: the store, where versions go, the settings and the time."""

    store: Store
    registry: Registry
    settings: Settings
    clock: Clock
    as_of_us: int  # data after this instant is not used
    log_seq: int  # the last log sequence number the run sees
    progress: ProgressFn | None = None

    def report(self, what: str, fraction: float) -> None:
        if self.progress is not None:
            self.progress(what, min(max(fraction, 0.0), 1.0))


@dataclass
class TrainReport:
    """What one trainer did: the versions it stored and its headline figures."""

    name: str
    artifacts: list[ArtifactInfo] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    skipped: str | None = None  # why nothing was trained (e.g. no purchases yet)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": {a.name: a.version for a in self.artifacts},
            "metrics": self.metrics,
            "seconds": round(self.seconds, 3),
            "skipped": self.skipped,
        }


class Trainer(Protocol):
    name: str

    def train(self, ctx: TrainContext) -> TrainReport: ...


def trainers(settings: Settings | None = None) -> list[Trainer]:
    """Every trainer, in the order they run, configured from ``settings`` (the defaults when
    None; see :mod:`concierge.models.from_settings`). Parts add theirs here."""
    from concierge.models import from_settings as fs
    from concierge.models.behaviour_train import behaviour_trainers
    from concierge.models.lifetime.trainer import LifetimeTrainer

    s = settings if settings is not None else Settings()
    found: list[Trainer] = []
    found.append(LifetimeTrainer(fs.lifetime_config(s)))  # first: segments join its columns
    found += behaviour_trainers(s)
    from concierge.decide.training import recommendation_trainers

    found += recommendation_trainers()
    return found


def select_trainers(available: Sequence[Trainer], only: Sequence[str] | None) -> list[Trainer]:
    if not only:
        return list(available)
    names = {tr.name for tr in available}
    unknown = [n for n in only if n not in names]
    if unknown:
        raise InputError.one(
            "only", f"unknown model {unknown[0]!r}; expected one of {', '.join(sorted(names))}"
        )
    return [tr for tr in available if tr.name in set(only)]
