"""File importers: ``parse(format, path, mapping=..., timezone=...)`` → :class:`Parsed`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from concierge.errors import InputError
from concierge.ingest.importers.base import BadRow, Parsed

__all__ = ["BadRow", "Parsed", "parse"]


def parse(
    format: str, path: Path, *, mapping: dict[str, Any] | None = None, timezone: str | None = None
) -> Parsed:
    """Parse a file of the given format into frames, products and refused rows."""
    from concierge.ingest.importers import cdnow, mapped, online_retail

    kwargs: dict[str, Any] = {"mapping": mapping}
    if timezone is not None:
        kwargs["timezone"] = timezone
    if format == "online-retail":
        return online_retail.parse(path, **kwargs)
    if format == "cdnow":
        return cdnow.parse(path, **kwargs)
    if format == "events":
        return mapped.parse(path, **kwargs)
    raise InputError.one("format", "must be one of online-retail, cdnow, events")
