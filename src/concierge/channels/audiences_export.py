"""Ad audiences: files of normalised, SHA-256-hashed emails and phones for customer-list upload.

Normalisation follows what the big ad platforms document for customer-list matching:

* **email** — trim whitespace, lowercase (Google Ads Customer Match and Meta Custom Audiences);
  for ``platform="google"`` also drop the dots of the local part of ``gmail.com`` /
  ``googlemail.com`` addresses, as Google's Customer Match formatting guidelines ask;
* **phone** — E.164: ``+``, country code, number, no spaces or punctuation; a leading ``00`` is
  the international prefix. Google hashes the ``+``-prefixed form; Meta hashes digits only
  (country code included, no ``+``).

Each identifier type gets its own one-column CSV (``Email`` / ``Phone`` header for Google,
``email`` / ``phone`` for Meta) of lowercase hex SHA-256 digests, unique and sorted, so
repeated exports of the same audience are byte-identical. Nothing in clear text is written.
Hashing is vectorised over the column (Polars' ``hash`` is not SHA-256, so the digests come
from :mod:`hashlib` over the unique normalised values only).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import orjson
import polars as pl

Platform = Literal["google", "meta"]
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalise_email(raw: str, platform: Platform = "google") -> str | None:
    email = raw.strip().lower()
    if not _EMAIL.match(email):
        return None
    if platform == "google":
        local, _, domain = email.partition("@")
        if domain in ("gmail.com", "googlemail.com"):
            email = local.replace(".", "") + "@" + domain
    return email


def normalise_phone(raw: str, platform: Platform = "google") -> str | None:
    phone = re.sub(r"[\s().\-/]", "", raw.strip())
    if phone.startswith("00"):
        phone = "+" + phone[2:]
    if not _E164.match(phone):
        return None
    return phone if platform == "google" else phone[1:]


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass
class ExportReport:
    platform: str
    files: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "platform": self.platform,
            "files": self.files,
            "counts": self.counts,
            "rejected": self.rejected,
        }


def export(
    people: Iterable[tuple[str | None, str | None]],
    out_dir: Path,
    *,
    name: str,
    platform: Platform = "google",
) -> ExportReport:
    """Write ``<name>.emails.csv`` and ``<name>.phones.csv`` for (email, phone) pairs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    emails: set[str] = set()
    phones: set[str] = set()
    report = ExportReport(platform=platform, rejected={"email": 0, "phone": 0})
    for email, phone in people:
        if email:
            e = normalise_email(email, platform)
            if e is None:
                report.rejected["email"] += 1
            else:
                emails.add(e)
        if phone:
            p = normalise_phone(phone, platform)
            if p is None:
                report.rejected["phone"] += 1
            else:
                phones.add(p)
    header = {"google": ("Email", "Phone"), "meta": ("email", "phone")}[platform]
    for kind, values, col in (("emails", emails, header[0]), ("phones", phones, header[1])):
        digests = sorted(sha256_hex(v) for v in values)
        path = out_dir / f"{name}.{kind}.csv"
        pl.DataFrame({col: digests}, schema={col: pl.String}).write_csv(path)
        report.files[kind] = str(path)
        report.counts[kind] = len(digests)
    (out_dir / f"{name}.manifest.json").write_bytes(
        orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2)
    )
    return report
