"""The error tree. Every error a caller can act on names the field and the reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class ConciergeError(Exception):
    """Base of every error Concierge raises on purpose."""


@dataclass(frozen=True)
class FieldError:
    """One problem with one field of an input: where it is and why it is refused."""

    field: str
    reason: str
    index: int | None = None  # position in a batch, or row number in a file

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "reason": self.reason}
        if self.index is not None:
            out["index"] = self.index
        return out


@dataclass
class InputError(ConciergeError):
    """Bad input. Nothing was stored."""

    errors: list[FieldError] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @classmethod
    def one(cls, field_name: str, reason: str, index: int | None = None) -> InputError:
        return cls([FieldError(field_name, reason, index)])

    @property
    def message(self) -> str:
        shown = "; ".join(
            (f"[{e.index}] " if e.index is not None else "") + f"{e.field}: {e.reason}"
            for e in self.errors[:5]
        )
        more = f" (and {len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        return shown + more


class NotFoundError(ConciergeError):
    """The thing asked for does not exist."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key!r} not found")
        self.kind = kind
        self.key = key


class ConflictError(ConciergeError):
    """The request contradicts what is stored (e.g. merging a customer into itself)."""


class FieldProblem(ValueError):
    """Raised inside a model validator to name the field at fault (pydantic reports it at the
    model's root otherwise); :func:`concierge.facade.validation_errors` unwraps it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


class NotFittedError(ConciergeError):
    """A model was used before it was fitted (or before ``concierge train`` ran)."""
