"""Per-person prediction artifacts, joined generically by ``person_id`` (the contracts).

Every model that predicts something per person stores an array ``person_id`` and one array per
column, listing the columns in its meta as ``per_person``. This module loads the newest version
of every such artifact and joins them into one Polars frame (one row per person), so lifecycle
campaigns and audience rules can say ``predictions.churn_risk >= 0.6`` without knowing which
model produced it. Columns are unique across models by contract; a clash keeps the first model's
(names sorted) and the other is prefixed with its model name.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from concierge.models.registry import Registry


class Predictions:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._sig: tuple[tuple[str, int], ...] | None = None
        self._frame: pl.DataFrame = pl.DataFrame(schema={"person_id": pl.String})
        self.versions: dict[str, int] = {}
        self.docs: dict[str, str] = {}
        self._index: dict[str, int] = {}

    def refresh(self) -> pl.DataFrame:
        newest: dict[str, Any] = {}
        for info in self.registry.versions():
            if info.name not in newest and info.meta.get("per_person"):
                newest[info.name] = info
        sig = tuple(sorted((n, i.version) for n, i in newest.items()))
        if sig == self._sig:
            return self._frame
        frame: pl.DataFrame | None = None
        versions: dict[str, int] = {}
        docs: dict[str, str] = {}
        for name in sorted(newest):
            art = self.registry.load(name, newest[name].version)
            cols = [str(c) for c in art.meta.get("per_person", [])]
            data: dict[str, Any] = {"person_id": art.arrays["person_id"].astype(str)}
            for c in cols:
                if c not in art.arrays:
                    continue
                out = c if frame is None or c not in frame.columns else f"{name}_{c}"
                data[out] = art.arrays[c]
                docs[out] = str((art.meta.get("per_person_doc") or {}).get(c, ""))
            part = pl.DataFrame(data).unique("person_id", keep="last")
            frame = (
                part
                if frame is None
                else frame.join(part, on="person_id", how="full", coalesce=True)
            )
            versions[name] = art.info.version
        self._frame = frame if frame is not None else pl.DataFrame(schema={"person_id": pl.String})
        self._index = {p: i for i, p in enumerate(self._frame.get_column("person_id").to_list())}
        self._sig, self.versions, self.docs = sig, versions, docs
        return self._frame

    def of(self, person_id: str) -> dict[str, Any]:
        """The person's predicted values (empty when no model covers them)."""
        i = self._index.get(person_id)
        if i is None:
            return {}
        row = self._frame.row(i, named=True)
        row.pop("person_id", None)
        return {k: v for k, v in row.items() if v is not None}
