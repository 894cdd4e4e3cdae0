"""The hidden truth of a simulation, kept apart from the store so later features can be scored.

The file is JSON, readable by people and complete for programs: :func:`load_truth` rebuilds the
exact :class:`~concierge.sim.world.Shoppers` and :class:`~concierge.sim.world.Catalog` arrays the
simulation used (floats round-trip exactly), so :mod:`concierge.sim.response` can make the same
shoppers respond to campaigns or recommendations long after the simulation ran.

Layout::

    {"format": "concierge-sim-truth/1",
     "config": {...SimConfig...},
     "vocabulary": {"brands": [...], "categories": [...], ...},
     "shoppers": [{"customer_id": "c00001", "anonymous_id": null, "department": "women",
                   "sizes": {"women": {"shoes": "38", "clothing": "M", "waist": "W28"}},
                   "brands": {"Stride": 0.61, ...},        # strongest first
                   "colours": {...}, "attributes": {"pronation": "neutral", ...},
                   "price": {"level": 1.1, "tolerance": 0.3, "range": {"Shoes>Running": [..]}},
                   "categories": {...}, "cadence_days": {"Shoes>Running": 96.4, ...},
                   "resell": {...}, "channels": {...}, "timezone": "Europe/Paris", ...}, ...],
     "products": [{"product_id": "p00001", "brand": ..., "popularity": 1.3, "listing": null}, ...]}

Days count from the start of the simulation; ``null`` stands for "never" (no churn, no
withdrawal, not bought). Unisex items use the adult sizes of a shopper's own department.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from concierge.clock import from_us, to_us
from concierge.sim.response import BASE_PRICE
from concierge.sim.world import (
    ATTR_NAMES,
    ATTR_VALUES,
    BRAND_NAMES,
    BRANDS,
    CATEGORIES,
    CATEGORY_NAMES,
    CHANNELS,
    COLOURS,
    CONDITIONS,
    DEPARTMENTS,
    MODEL_WORDS,
    SIZE_SYSTEMS,
    SYSTEM_NAMES,
    ZONE_NAMES,
    ZONES,
    Catalog,
    F,
    Shoppers,
    SimConfig,
    size_system,
)

FORMAT = "concierge-sim-truth/1"
ADULT_SYSTEMS = ("shoes", "clothing", "waist")
KIDS_SYSTEMS = {"kids_shoes": "shoes", "kids_clothing": "clothing"}


@dataclass(frozen=True)
class Truth:
    """What the simulation hid: the config, every shopper's traits, every product's latent."""

    config: SimConfig
    shoppers: Shoppers
    catalog: Catalog

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "config": self.config.as_dict(),
            "vocabulary": _vocabulary(),
            "shoppers": [_shopper(self.shoppers, i) for i in range(len(self.shoppers))],
            "products": [
                _product(self.catalog, self.shoppers, i) for i in range(len(self.catalog))
            ],
        }


def write_truth(truth: Truth, path: Path | str) -> None:
    Path(path).write_bytes(orjson.dumps(truth.as_dict()))


def load_truth(path: Path | str) -> Truth:
    """Read a truth file back into the arrays the simulation used."""
    data = orjson.loads(Path(path).read_bytes())
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a simulation truth file ({FORMAT})")
    return Truth(
        config=SimConfig.from_dict(data["config"]),
        shoppers=_shoppers_from(data["shoppers"]),
        catalog=_catalog_from(data["products"]),
    )


# -- writing ---------------------------------------------------------------------------------


def _day(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def _undays(x: float | None) -> float:
    return np.inf if x is None else float(x)


def _ranked(weights: F, names: tuple[str, ...]) -> dict[str, float]:
    order = np.argsort(-weights, kind="stable")
    return {names[j]: float(weights[j]) for j in order}


def _vocabulary() -> dict[str, Any]:
    return {
        "brands": [{"name": b[0], "family": b[1], "price_tier": b[2]} for b in BRANDS],
        "categories": [
            {
                "name": c.name,
                "sizing": c.sizing,
                "usual_price": c.base_price,
                "usual_cadence_days": c.cadence_days,
                "return_rate": c.return_rate,
                "resellable": c.resellable,
                "departments": list(c.departments),
                "attributes": {k: list(v) for k, v in c.attributes.items()},
            }
            for c in CATEGORIES
        ],
        "colours": list(COLOURS),
        "departments": list(DEPARTMENTS),
        "channels": list(CHANNELS),
        "sizes": {k: list(v) for k, v in SIZE_SYSTEMS.items()},
        "zones": list(ZONE_NAMES),
    }


def _shopper(sh: Shoppers, i: int) -> dict[str, Any]:
    dept = DEPARTMENTS[int(sh.department[i])]
    sizes: dict[str, dict[str, str]] = {
        dept: {n: SIZE_SYSTEMS[n][int(sh.sizes[i, SYSTEM_NAMES.index(n)])] for n in ADULT_SYSTEMS}
    }
    if sh.has_kids[i]:
        sizes["kids"] = {
            short: SIZE_SYSTEMS[n][int(sh.sizes[i, SYSTEM_NAMES.index(n)])]
            for n, short in KIDS_SYSTEMS.items()
        }
    level, tol = float(sh.price_level[i]), float(sh.price_tolerance[i])
    buys = np.isfinite(sh.cadence_days[i])
    zone = ZONES[int(sh.zone[i])]
    return {
        "customer_id": sh.ids[i],
        "anonymous_id": sh.anonymous_ids[i],
        "department": dept,
        "kids": bool(sh.has_kids[i]),
        "sizes": sizes,
        "brands": _ranked(sh.brand_w[i], BRAND_NAMES),
        "colours": _ranked(sh.colour_w[i], COLOURS),
        "attributes": {
            name: ATTR_VALUES[name][int(sh.attr_pref[i, j])]
            for j, name in enumerate(ATTR_NAMES)
            if sh.attr_pref[i, j] >= 0
        },
        "price": {
            "level": level,
            "tolerance": tol,
            "range": {  # what they find comfortable: within one tolerance of their level
                CATEGORY_NAMES[k]: [
                    round(float(BASE_PRICE[k]) * level * float(np.exp(-tol)), 2),
                    round(float(BASE_PRICE[k]) * level * float(np.exp(tol)), 2),
                ]
                for k in np.nonzero(buys)[0]
            },
        },
        "categories": {k: w for k, w in _ranked(sh.category_w[i], CATEGORY_NAMES).items() if w > 0},
        "cadence_days": {
            CATEGORY_NAMES[k]: float(sh.cadence_days[i, k]) for k in np.nonzero(buys)[0]
        },
        "regularity": float(sh.regularity[i]),
        "browse_per_week": float(sh.browse_per_week[i]),
        "joined_day": float(sh.join_day[i]),
        "churned_day": _day(sh.churn_day[i]),
        "anonymous_visits": int(sh.anonymous_visits[i]),
        "never_identifies": bool(sh.never_identify[i]),
        "returner": float(sh.returner[i]),
        "reseller": bool(sh.reseller[i]),
        "resell": {
            "share": float(sh.resell_share[i]),
            "typical_delay_days": float(sh.resell_delay_days[i]),
            "wardrobe_per_year": float(sh.wardrobe_per_year[i]),
        },
        "channels": {
            "preference": {ch: float(sh.channel_w[i, c]) for c, ch in enumerate(CHANNELS)},
            "consent": {ch: bool(sh.consent[i, c]) for c, ch in enumerate(CHANNELS)},
            "withdrawn_day": {ch: _day(sh.withdraw_day[i, c]) for c, ch in enumerate(CHANNELS)},
            "stated": CHANNELS[int(sh.stated_channel[i])] if sh.stated_channel[i] >= 0 else None,
        },
        "timezone": zone[0],
        "country": zone[1],
        "city": zone[4][int(sh.city[i])],
        "active_hour": float(sh.active_hour[i]),
        "contact_per_week": float(sh.contact_per_week[i]),
        "responsiveness": float(sh.responsiveness[i]),
        "first_name": sh.first_name[i],
        "last_name": sh.last_name[i],
        "email": sh.email[i],
        "phone": sh.phone[i],
    }


def _iso(us: int) -> str | None:
    return None if us < 0 else from_us(us).isoformat()


def _product(cat: Catalog, sh: Shoppers, i: int) -> dict[str, Any]:
    system = int(cat.system[i])
    sizes = None
    if system >= 0:
        labels = SIZE_SYSTEMS[SYSTEM_NAMES[system]]
        sizes = [labels[int(cat.size_lo[i])], labels[int(cat.size_hi[i])]]
    listing = None
    if cat.seller[i] >= 0:
        listing = {
            "seller": sh.ids[int(cat.seller[i])],
            "condition": CONDITIONS[int(cat.condition[i])],
            "copy_of": cat.ids[int(cat.source[i])],
            "listed_at": _iso(int(cat.listed_us[i])),
            "bought_order_id": cat.bought_order[i],
            "sold_to": sh.ids[int(cat.sold_to[i])] if cat.sold_to[i] >= 0 else None,
            "sold_at": _iso(int(cat.sold_us[i])),
        }
    return {
        "product_id": cat.ids[i],
        "brand": BRAND_NAMES[int(cat.brand[i])],
        "category": CATEGORY_NAMES[int(cat.category[i])],
        "department": DEPARTMENTS[int(cat.department[i])],
        "colour": COLOURS[int(cat.colour[i])],
        "price": float(cat.price[i]),
        "attributes": {
            name: ATTR_VALUES[name][int(cat.attrs[i, j])]
            for j, name in enumerate(ATTR_NAMES)
            if cat.attrs[i, j] >= 0
        },
        "sizes": sizes,
        "model": MODEL_WORDS[int(cat.model[i])],
        "popularity": float(cat.popularity[i]),
        "listing": listing,
    }


# -- reading ---------------------------------------------------------------------------------


def _weights(rows: list[dict[str, float]], names: tuple[str, ...]) -> F:
    out = np.zeros((len(rows), len(names)))
    where = {n: j for j, n in enumerate(names)}
    for i, row in enumerate(rows):
        for name, w in row.items():
            out[i, where[name]] = w
    return out


def _shoppers_from(rows: list[dict[str, Any]]) -> Shoppers:
    n = len(rows)
    sizes = np.full((n, len(SYSTEM_NAMES)), -1, dtype=np.int64)
    attr_pref = np.full((n, len(ATTR_NAMES)), -1, dtype=np.int64)
    cadence = np.full((n, len(CATEGORIES)), np.inf)
    for i, r in enumerate(rows):
        own = r["sizes"][r["department"]]
        for name in ADULT_SYSTEMS:
            sizes[i, SYSTEM_NAMES.index(name)] = SIZE_SYSTEMS[name].index(own[name])
        for name, short in KIDS_SYSTEMS.items():
            if "kids" in r["sizes"]:
                sizes[i, SYSTEM_NAMES.index(name)] = SIZE_SYSTEMS[name].index(
                    r["sizes"]["kids"][short]
                )
        for name, value in r["attributes"].items():
            attr_pref[i, ATTR_NAMES.index(name)] = ATTR_VALUES[name].index(value)
        for name, days in r["cadence_days"].items():
            cadence[i, CATEGORY_NAMES.index(name)] = days

    def col(key: str, *path: str) -> F:
        out = []
        for r in rows:
            v: Any = r[key]
            for p in path:
                v = v[p]
            out.append(v)
        return np.array(out, dtype=np.float64)

    channels = [r["channels"] for r in rows]
    return Shoppers(
        ids=[r["customer_id"] for r in rows],
        anonymous_ids=[r["anonymous_id"] for r in rows],
        department=np.array([DEPARTMENTS.index(r["department"]) for r in rows], dtype=np.int64),
        has_kids=np.array([r["kids"] for r in rows], dtype=bool),
        sizes=sizes,
        brand_w=_weights([r["brands"] for r in rows], BRAND_NAMES),
        colour_w=_weights([r["colours"] for r in rows], COLOURS),
        attr_pref=attr_pref,
        price_level=col("price", "level"),
        price_tolerance=col("price", "tolerance"),
        category_w=_weights([r["categories"] for r in rows], CATEGORY_NAMES),
        cadence_days=cadence,
        regularity=col("regularity"),
        browse_per_week=col("browse_per_week"),
        join_day=col("joined_day"),
        churn_day=np.array([_undays(r["churned_day"]) for r in rows]),
        anonymous_visits=col("anonymous_visits").astype(np.int64),
        never_identify=np.array([r["never_identifies"] for r in rows], dtype=bool),
        returner=col("returner"),
        resell_share=col("resell", "share"),
        resell_delay_days=col("resell", "typical_delay_days"),
        wardrobe_per_year=col("resell", "wardrobe_per_year"),
        channel_w=_weights([c["preference"] for c in channels], CHANNELS),
        consent=np.array([[c["consent"][ch] for ch in CHANNELS] for c in channels], dtype=bool),
        withdraw_day=np.array(
            [[_undays(c["withdrawn_day"][ch]) for ch in CHANNELS] for c in channels]
        ).reshape(n, len(CHANNELS)),
        stated_channel=np.array(
            [CHANNELS.index(c["stated"]) if c["stated"] else -1 for c in channels], dtype=np.int64
        ),
        zone=np.array([ZONE_NAMES.index(r["timezone"]) for r in rows], dtype=np.int64),
        city=np.array(
            [ZONES[ZONE_NAMES.index(r["timezone"])][4].index(r["city"]) for r in rows],
            dtype=np.int64,
        ),
        active_hour=col("active_hour"),
        contact_per_week=col("contact_per_week"),
        responsiveness=col("responsiveness"),
        first_name=[r["first_name"] for r in rows],
        last_name=[r["last_name"] for r in rows],
        email=[r["email"] for r in rows],
        phone=[r["phone"] for r in rows],
    )


def _catalog_from(rows: list[dict[str, Any]]) -> Catalog:
    n = len(rows)
    ids = [r["product_id"] for r in rows]
    where = {p: i for i, p in enumerate(ids)}
    category = np.array([CATEGORY_NAMES.index(r["category"]) for r in rows], dtype=np.int64)
    department = np.array([DEPARTMENTS.index(r["department"]) for r in rows], dtype=np.int64)
    system = np.array(
        [
            size_system(CATEGORIES[k].sizing, int(d))
            for k, d in zip(category, department, strict=True)
        ],
        dtype=np.int64,
    )
    lo = np.full(n, -1, dtype=np.int64)
    hi = np.full(n, -1, dtype=np.int64)
    attrs = np.full((n, len(ATTR_NAMES)), -1, dtype=np.int64)
    seller = np.full(n, -1, dtype=np.int64)
    condition = np.full(n, -1, dtype=np.int64)
    source = np.full(n, -1, dtype=np.int64)
    listed = np.full(n, -1, dtype=np.int64)
    sold_to = np.full(n, -1, dtype=np.int64)
    sold_us = np.full(n, -1, dtype=np.int64)
    bought: list[str | None] = [None] * n
    customers: dict[str, int] = {}

    def customer(cid: str) -> int:
        # customer ids are c + the 1-based shopper number
        return customers.setdefault(cid, int(cid[1:]) - 1)

    for i, r in enumerate(rows):
        if r["sizes"] is not None:
            labels = SIZE_SYSTEMS[SYSTEM_NAMES[system[i]]]
            lo[i], hi[i] = labels.index(r["sizes"][0]), labels.index(r["sizes"][1])
        for name, value in r["attributes"].items():
            attrs[i, ATTR_NAMES.index(name)] = ATTR_VALUES[name].index(value)
        lst = r["listing"]
        if lst is not None:
            seller[i] = customer(lst["seller"])
            condition[i] = CONDITIONS.index(lst["condition"])
            source[i] = where[lst["copy_of"]]
            listed[i] = _us(lst["listed_at"])
            bought[i] = lst["bought_order_id"]
            if lst["sold_to"] is not None:
                sold_to[i] = customer(lst["sold_to"])
                sold_us[i] = _us(lst["sold_at"])
    return Catalog(
        ids=ids,
        brand=np.array([BRAND_NAMES.index(r["brand"]) for r in rows], dtype=np.int64),
        category=category,
        department=department,
        colour=np.array([COLOURS.index(r["colour"]) for r in rows], dtype=np.int64),
        price=np.array([r["price"] for r in rows], dtype=np.float64),
        attrs=attrs,
        popularity=np.array([r["popularity"] for r in rows], dtype=np.float64),
        system=system,
        size_lo=lo,
        size_hi=hi,
        model=np.array([MODEL_WORDS.index(r["model"]) for r in rows], dtype=np.int64),
        seller=seller,
        condition=condition,
        source=source,
        listed_us=listed,
        sold_to=sold_to,
        sold_us=sold_us,
        bought_order=bought,
    )


def _us(text: str | None) -> int:
    from datetime import datetime

    return -1 if text is None else to_us(datetime.fromisoformat(text))


__all__ = ["FORMAT", "Truth", "load_truth", "write_truth"]
