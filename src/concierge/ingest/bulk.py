"""Bulk import of files: parse (vectorized, per format) → catalog → log, in chunks.

Each chunk is one ingest transaction, so an interrupted import leaves whole chunks behind and a
second run of the same file stores only what is missing (event ids come from the source).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import yaml

from concierge.errors import InputError

if TYPE_CHECKING:
    from rich.progress import Progress

    from concierge.facade import Concierge
    from concierge.ingest.importers.base import BadRow

CHUNK_ITEMS = 200_000
FORMATS = ("online-retail", "cdnow", "events")


@dataclass
class ImportReport:
    format: str
    path: str
    rows: int = 0
    accepted: int = 0
    duplicates: int = 0
    products: int = 0
    bad_rows: list[BadRow] = field(default_factory=list)
    refused: bool = False
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "path": self.path,
            "rows": self.rows,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "products": self.products,
            "bad_rows": [
                {"row": b.row, "field": b.field, "reason": b.reason} for b in self.bad_rows
            ],
            "refused": self.refused,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows_per_second, 1),
        }


def read_mapping(mapping_file: Path | None, pairs: list[str]) -> dict[str, Any] | None:
    """A mapping from a YAML file and/or ``target=source`` pairs (pairs win)."""
    mapping: dict[str, Any] = {}
    if mapping_file is not None:
        loaded = yaml.safe_load(mapping_file.read_text())
        if not isinstance(loaded, dict):
            raise InputError.one("mapping", f"{mapping_file} must hold a YAML mapping")
        mapping = loaded
    if pairs:
        cols = dict(mapping.get("columns") or {})
        for pair in pairs:
            target, sep, source = pair.partition("=")
            if not sep or not target or not source:
                raise InputError.one("map", f"expected target=source, got {pair!r}")
            cols[target.strip()] = source.strip()
        mapping["columns"] = cols
    return mapping or None


def chunks(
    events: pl.DataFrame, items: pl.DataFrame, size: int = CHUNK_ITEMS
) -> list[tuple[pl.DataFrame, pl.DataFrame]]:
    """Split into chunks of whole events holding about ``size`` items each."""
    if items.height <= size:
        return [(events, items)]
    per_event = items.group_by("event_id").len()
    ev = events.join(per_event, on="event_id", how="left").with_columns(
        (pl.col("len").fill_null(0).cum_sum() // size).alias("chunk")
    )
    out = []
    for part in ev.partition_by("chunk", maintain_order=True):
        ids = part.select("event_id")
        out.append((part.drop("len", "chunk"), items.join(ids, on="event_id", how="semi")))
    return out


def import_file(
    c: Concierge,
    format: str,
    path: Path,
    *,
    mapping_file: Path | None = None,
    mapping_pairs: list[str] | None = None,
    timezone: str | None = None,
    strict: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    from concierge.ingest.importers import parse

    if format not in FORMATS:
        raise InputError.one("format", f"must be one of {', '.join(FORMATS)}")
    start = time.perf_counter()
    report = ImportReport(format=format, path=str(path))
    mapping = read_mapping(mapping_file, mapping_pairs or [])
    kwargs: dict[str, Any] = {"mapping": mapping}
    if timezone is not None:
        kwargs["timezone"] = timezone
    task = progress.add_task(f"parsing {path.name}", total=None) if progress else None
    parsed = parse(format, path, **kwargs)
    report.rows = parsed.n_rows
    report.bad_rows = list(parsed.bad_rows)
    if strict and parsed.bad_rows:
        report.refused = True
        report.seconds = time.perf_counter() - start
        return report
    if parsed.products:
        counts = c.upsert_products(parsed.products)
        report.products = counts.get("created", 0) + counts.get("updated", 0)
    parts = chunks(parsed.events, parsed.items)
    if progress is not None and task is not None:
        progress.update(
            task, description=f"importing {path.name}", total=parsed.events.height, completed=0
        )
    for ev, items in parts:
        result = c.ingest_frames(ev, items)
        report.accepted += result.accepted
        report.duplicates += len(result.duplicates)
        if progress is not None and task is not None:
            progress.advance(task, ev.height)
    report.seconds = time.perf_counter() - start
    return report
