"""Concierge: a personal concierge for every shopper of an online store or marketplace."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Concierge", "__version__"]

if TYPE_CHECKING:
    from concierge.facade import Concierge


def __getattr__(name: str) -> Any:  # lazy, so `import concierge` stays cheap
    if name == "Concierge":
        from concierge.facade import Concierge

        return Concierge
    raise AttributeError(name)
