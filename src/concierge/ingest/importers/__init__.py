"""File importers: ``parse(format, path, mapping=..., timezone=...)`` → :class:`Parsed`.

``online-retail`` (UCI Online Retail and Online Retail II invoice lines), ``cdnow`` (Fader and
Hardie's CDNOW purchase lines) and ``events`` (any CSV or Parquet file through a column mapping).
Each module's docstring says which rows it refuses and why; ``concierge.ingest.bulk`` stores
what they return.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from concierge.errors import InputError
from concierge.ingest.importers.base import BadRow, Parsed, check_timezone

__all__ = ["FORMATS", "BadRow", "Parsed", "parse"]

FORMATS = ("online-retail", "cdnow", "events")


def parse(
    format: str, path: Path, *, mapping: dict[str, Any] | None = None, timezone: str | None = None
) -> Parsed:
    """Parse a file of the given format into frames, products and refused rows.

    ``timezone`` is the zone of the file's local times (default: ``Europe/London`` for Online
    Retail, ``UTC`` for CDNOW, the mapping's ``timezone`` for events).
    """
    kwargs: dict[str, Any] = {"mapping": mapping}
    if timezone is not None:
        kwargs["timezone"] = check_timezone(timezone, "timezone")
    if format == "online-retail":
        from concierge.ingest.importers import online_retail

        return online_retail.parse(Path(path), **kwargs)
    if format == "cdnow":
        from concierge.ingest.importers import cdnow

        return cdnow.parse(Path(path), **kwargs)
    if format == "events":
        from concierge.ingest.importers import mapped

        return mapped.parse(Path(path), **kwargs)
    raise InputError.one("format", f"must be one of {', '.join(FORMATS)}")
