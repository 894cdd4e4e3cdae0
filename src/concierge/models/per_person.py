"""Per-person artifacts joined by ``person_id`` (the contract between the model parts).

A model that predicts something per person stores an array ``person_id`` and one 1-D array per
column, named in its meta as ``per_person``. :class:`PerPerson` keeps the newest version of each
such artifact in memory (one :class:`~concierge.models.registry.LiveModels` per name, so a new
``concierge train`` is picked up without a restart) and answers lookups of one person (the
customer 360) and frames of many (``Concierge.predictions``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from concierge.models.idmap import IdMap
from concierge.models.registry import Artifact, ArtifactInfo, LiveModels, Registry


@dataclass(frozen=True)
class Scores:
    """One per-person artifact, indexed by person id."""

    info: ArtifactInfo
    artifact: Artifact
    ids: IdMap
    columns: dict[str, npt.NDArray[Any]]
    cache: dict[str, Any] = field(default_factory=dict)  # things derived once per version

    @classmethod
    def build(cls, artifact: Artifact) -> Scores:
        cols = list(artifact.meta.get("per_person", []))
        return cls(
            info=artifact.info,
            artifact=artifact,
            ids=IdMap(np.asarray(artifact.arrays["person_id"], dtype=np.str_)),
            columns={c: artifact.arrays[c] for c in cols},
        )

    def row(self, person_id: str) -> dict[str, Any] | None:
        i = self.ids.index(person_id)
        if i < 0:
            return None
        return {c: v[i].item() for c, v in self.columns.items()}

    def frame(self, person_ids: Sequence[str] | None = None) -> pl.DataFrame:
        if person_ids is None:
            data: dict[str, Any] = {"person_id": self.ids.external}
            data |= self.columns
            return pl.DataFrame(data)
        wanted = pl.DataFrame({"person_id": pl.Series(list(person_ids), dtype=pl.String)})
        return wanted.join(self.frame(), on="person_id", how="left", maintain_order="left")


class PerPerson:
    """The newest version of every per-person artifact of a registry, kept in memory."""

    def __init__(self, registry: Registry, *, check_every_s: float = 2.0) -> None:
        self.registry = registry
        self.check_every_s = check_every_s
        self._live: dict[str, LiveModels[Scores]] = {}

    def get(self, name: str) -> Scores | None:
        live = self._live.get(name)
        if live is None:
            live = LiveModels(self.registry, name, Scores.build, check_every_s=self.check_every_s)
            self._live[name] = live
        return live.get()

    def refresh(self) -> None:
        """Look for newer versions now (after a ``train`` in this process)."""
        for live in self._live.values():
            live.refresh()

    def names(self) -> list[str]:
        """Models whose newest version is per-person."""
        newest: dict[str, ArtifactInfo] = {}
        for info in self.registry.versions():
            if info.name not in newest:
                newest[info.name] = info
        return sorted(n for n, i in newest.items() if i.meta.get("per_person"))

    def frame(self, person_ids: Sequence[str] | None = None) -> pl.DataFrame:
        """Every per-person column of every model, one row per person (full outer join)."""
        out: pl.DataFrame | None = None
        for name in self.names():
            scores = self.get(name)
            if scores is None:
                continue
            f = scores.frame(person_ids)
            if out is None:
                out = f
            elif person_ids is not None:
                out = out.join(f, on="person_id", how="left", maintain_order="left")
            else:
                out = out.join(f, on="person_id", how="full", coalesce=True)
        if out is None:
            ids = list(person_ids) if person_ids is not None else []
            return pl.DataFrame({"person_id": pl.Series("person_id", ids, dtype=pl.String)})
        return out
