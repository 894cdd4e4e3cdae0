"""Merchandising rules: what marketers set on top of the learned ranking.

A rule is about one item (``product_id``) or every item carrying a facet (``facet``, e.g.
``brand=Stride``, ``cat=Shoes>Trail``, ``attr:material=wool``; the facet strings of
:func:`concierge.catalog.service.product_facets`), in some slots (all when empty), during a time
window (either end open). Actions, applied after scoring and filtering, in this order:

* ``exclude`` - never shown;
* ``bury`` - score lowered by ``weight`` (scores are on a 0-1-ish scale, so 1 sends an item below
  nearly everything);
* ``boost`` - score raised by ``weight``;
* ``pin`` - the item (product rules only) is put at position ``weight`` (1-based) when it passes
  the filters (a pinned item out of stock is not shown).

Rules are validated when created: a pin and an exclude of the same item whose windows and slots
overlap contradict each other and the second one is refused, naming the field.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import polars as pl
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Connection, delete, select

from concierge.clock import from_us, to_us
from concierge.errors import FieldProblem, InputError, NotFoundError
from concierge.store import tables as t

Action = Literal["pin", "boost", "bury", "exclude"]
SLOTS = ("home", "product", "cart", "post_purchase", "email")
Slot = Literal["home", "product", "cart", "post_purchase", "email"]


class RuleCreate(BaseModel):
    """A rule as a marketer writes it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    action: Action
    product_id: str | None = Field(None, min_length=1, max_length=140)
    facet: str | None = Field(None, min_length=3, max_length=400, pattern=r"^[^=|]+=[^|]+$")
    weight: float | None = Field(None, description="boost/bury strength; pin: the position")
    slots: list[Slot] = Field(default_factory=list)
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _coherent(self) -> RuleCreate:
        if (self.product_id is None) == (self.facet is None):
            raise FieldProblem("product_id", "give exactly one of product_id or facet")
        if self.action == "pin":
            if self.product_id is None:
                raise FieldProblem("facet", "a pin is about one product: give product_id")
            if self.weight is None:
                self.weight = 1.0
            if self.weight < 1 or self.weight != int(self.weight) or self.weight > 100:
                raise FieldProblem("weight", "a pin's weight is its position, 1 to 100")
        elif self.action in ("boost", "bury"):
            if self.weight is None:
                self.weight = 0.5
            if not 0 < self.weight <= 10:
                raise FieldProblem("weight", "boost and bury take a weight in (0, 10]")
        else:
            self.weight = 0.0
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise FieldProblem("ends_at", "the window must end after it starts")
        return self


@dataclass(frozen=True)
class Rule:
    rule_id: str
    name: str
    action: str
    product_id: str | None
    facet: str | None
    weight: float
    slots: tuple[str, ...]
    starts_us: int | None
    ends_us: int | None
    created_us: int

    def active(self, now_us: int, slot: str) -> bool:
        return (
            (self.starts_us is None or self.starts_us <= now_us)
            and (self.ends_us is None or now_us < self.ends_us)
            and (not self.slots or slot in self.slots)
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "name": self.name,
            "action": self.action,
            "product_id": self.product_id,
            "facet": self.facet,
            "weight": self.weight,
            "slots": list(self.slots),
            "starts_at": None if self.starts_us is None else from_us(self.starts_us).isoformat(),
            "ends_at": None if self.ends_us is None else from_us(self.ends_us).isoformat(),
            "created_at": from_us(self.created_us).isoformat(),
        }


def _row(r: Any) -> Rule:
    return Rule(
        rule_id=r.rule_id,
        name=r.name,
        action=r.action,
        product_id=r.product_id,
        facet=r.facet,
        weight=float(r.weight),
        slots=tuple(s for s in r.slots.split(",") if s),
        starts_us=r.starts_us,
        ends_us=r.ends_us,
        created_us=int(r.created_us),
    )


def list_rules(conn: Connection) -> list[Rule]:
    rows = conn.execute(select(t.merch_rules).order_by(t.merch_rules.c.created_us))
    return [_row(r) for r in rows]


def _overlap(a: Rule, starts: int | None, ends: int | None, slots: tuple[str, ...]) -> bool:
    lo = max(a.starts_us if a.starts_us is not None else -(2**62), starts or -(2**62))
    hi = min(a.ends_us if a.ends_us is not None else 2**62, ends if ends is not None else 2**62)
    same_slot = not a.slots or not slots or bool(set(a.slots) & set(slots))
    return lo < hi and same_slot


def _facets_of(conn: Connection, product_id: str) -> set[str]:
    row = conn.execute(
        select(t.products.c.facets).where(t.products.c.product_id == product_id)
    ).first()
    return set(row.facets.split("|")) if row is not None and row.facets else set()


def create_rule(conn: Connection, rule: RuleCreate, *, now_us: int) -> Rule:
    """Store a rule after checking it against the stored ones; conflicts raise InputError."""
    starts = to_us(rule.starts_at) if rule.starts_at else None
    ends = to_us(rule.ends_at) if rule.ends_at else None
    slots = tuple(rule.slots)
    existing = [r for r in list_rules(conn) if _overlap(r, starts, ends, slots)]
    if rule.action == "pin" and rule.product_id is not None:
        facets = _facets_of(conn, rule.product_id)
        for r in existing:
            if r.action == "exclude" and (
                r.product_id == rule.product_id or (r.facet is not None and r.facet in facets)
            ):
                raise InputError.one(
                    "product_id",
                    f"conflicts with exclude rule {r.name!r} ({r.rule_id}): the same item "
                    "cannot be pinned and excluded in overlapping windows and slots",
                )
        for r in existing:
            if r.action == "pin" and r.weight == rule.weight and r.product_id != rule.product_id:
                raise InputError.one(
                    "weight",
                    f"position {int(rule.weight or 1)} is already pinned by rule {r.name!r} "
                    f"({r.rule_id}) in an overlapping window and slot",
                )
    if rule.action == "exclude":
        for r in existing:
            if r.action != "pin" or r.product_id is None:
                continue
            hit = r.product_id == rule.product_id or (
                rule.facet is not None and rule.facet in _facets_of(conn, r.product_id)
            )
            if hit:
                field = "product_id" if rule.product_id is not None else "facet"
                raise InputError.one(
                    field,
                    f"conflicts with pin rule {r.name!r} ({r.rule_id}): the same item "
                    "cannot be pinned and excluded in overlapping windows and slots",
                )
    out = Rule(
        rule_id=secrets.token_hex(8),
        name=rule.name,
        action=rule.action,
        product_id=rule.product_id,
        facet=rule.facet,
        weight=float(rule.weight or 0.0),
        slots=slots,
        starts_us=starts,
        ends_us=ends,
        created_us=now_us,
    )
    conn.execute(
        t.merch_rules.insert().values(
            rule_id=out.rule_id,
            name=out.name,
            action=out.action,
            product_id=out.product_id,
            facet=out.facet,
            weight=out.weight,
            slots=",".join(out.slots),
            starts_us=starts,
            ends_us=ends,
            created_us=now_us,
        )
    )
    return out


def delete_rule(conn: Connection, rule_id: str) -> None:
    n = conn.execute(delete(t.merch_rules).where(t.merch_rules.c.rule_id == rule_id)).rowcount
    if not n:
        raise NotFoundError("rule", rule_id)


def get_rule(conn: Connection, rule_id: str) -> Rule:
    row = conn.execute(select(t.merch_rules).where(t.merch_rules.c.rule_id == rule_id)).first()
    if row is None:
        raise NotFoundError("rule", rule_id)
    return _row(row)


@dataclass(frozen=True)
class Effects:
    """What the active rules of a slot do to a score vector over the catalog positions.

    ``adj`` is added to the scores (boosts and buries, ``None`` when there are none),
    ``excluded`` marks what must not be shown; both are built once per set of active rules and
    catalog version (:class:`~concierge.decide.recommend.Recommender` caches them), so a request
    pays one vector addition for any number of rules.
    """

    adj: npt.NDArray[np.float64] | None
    excluded: npt.NDArray[np.bool_] | None
    pins: list[tuple[int, int, Rule]]  # (position 0-based, catalog index, rule)
    moved: list[tuple[Rule, npt.NDArray[np.bool_]]]  # boost rules and their items (reasons)


def facet_mask(facets: pl.Series, facet: str) -> npt.NDArray[np.bool_]:
    """Items whose facet string contains ``facet`` exactly (between ``|`` separators)."""
    wrapped = "|" + facets + "|"
    return wrapped.str.contains("|" + facet + "|", literal=True).to_numpy()


def active_rules(rules: list[Rule], *, now_us: int, slot: str) -> list[Rule]:
    return [r for r in rules if r.active(now_us, slot)]


def rule_effects(rules: list[Rule], n: int, *, index_of: Any, facet_masks: Any) -> Effects:
    """The effects of ``rules`` (already filtered to the active ones); ``index_of(pid) -> int``
    (-1 when not in the catalog) and ``facet_masks(facet) -> bool mask``."""
    adj: npt.NDArray[np.float64] | None = None
    excluded: npt.NDArray[np.bool_] | None = None
    pins: list[tuple[int, int, Rule]] = []
    moved: list[tuple[Rule, npt.NDArray[np.bool_]]] = []
    for r in rules:
        if r.product_id is not None:
            i = int(index_of(r.product_id))
            if i < 0:
                continue
            mask = np.zeros(n, dtype=bool)
            mask[i] = True
        else:
            mask = facet_masks(r.facet)
        if r.action == "exclude":
            excluded = mask.copy() if excluded is None else excluded | mask
        elif r.action in ("boost", "bury"):
            adj = np.zeros(n) if adj is None else adj
            adj[mask] += r.weight if r.action == "boost" else -r.weight
            if r.action == "boost":
                moved.append((r, mask))
        else:
            pins.append((int(r.weight) - 1, int(np.flatnonzero(mask)[0]), r))
    pins.sort(key=lambda p: (p[0], p[2].created_us))
    return Effects(adj, excluded, pins, moved)
