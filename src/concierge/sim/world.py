"""The simulated marketplace: a catalog and shoppers with hidden individual tastes.

Everything is drawn from one ``numpy.random.Generator`` seeded by :class:`SimConfig`, so the same
config gives the same world. Shoppers are columns of arrays (one row per shopper), never Python
objects per shopper, so a world of 100,000 shoppers is as cheap to hold as one of 1,000.

What a shopper hides (and :mod:`concierge.sim.response` and the truth file expose for scoring):

* a department (``men`` / ``women``) and their sizes (shoe size EU, apparel size);
* taste weights over brands and colours (Dirichlet: most shoppers have one or two favourites),
  interest weights over categories, a preferred value for each product attribute (e.g. drop
  ``8 mm``, pronation ``neutral``) and a price level (their comfortable price multiplier);
* a purchase cadence per category (days between purchases, e.g. running shoes every ~60 days);
* a selling habit: whether they resell what they bought, and after how long;
* channel consent and preference, a time zone, and a tolerance for contact (messages per week).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

F = npt.NDArray[np.float64]
I = npt.NDArray[np.int64]  # noqa: E741
B = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class SimConfig:
    seed: int = 42
    n_shoppers: int = 2000
    days: int = 365
    start: datetime = datetime(2025, 11, 1, tzinfo=UTC)
    n_products: int | None = None  # default: max(300, n_shoppers // 4)
    currency: str = "EUR"
    anonymous_first: float = 0.4  # share of shoppers who browse anonymously before signing up
    resellers: float = 0.3
    return_rate: float = 0.07
    browse_sessions_per_month: float = 2.0


@dataclass(frozen=True)
class Category:
    path: tuple[str, ...]
    base_price: float
    cadence_days: float  # the population's typical days between purchases
    sizing: str  # "shoe" | "apparel" | "one"
    departments: tuple[str, ...]
    attributes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    resellable: bool = False


CATEGORIES: tuple[Category, ...] = (
    Category(("shoes", "running"), 120, 75, "shoe", ("men", "women"),
             {"drop": ("4 mm", "8 mm", "10 mm"), "pronation": ("neutral", "stability")}, True),
    Category(("shoes", "trail"), 140, 120, "shoe", ("men", "women"),
             {"drop": ("4 mm", "6 mm"), "grip": ("mud", "rock")}, True),
    Category(("shoes", "casual"), 90, 150, "shoe", ("men", "women"),
             {"material": ("leather", "canvas")}, True),
    Category(("apparel", "tops"), 35, 45, "apparel", ("men", "women"),
             {"fit": ("slim", "regular"), "fabric": ("merino", "polyester")}),
    Category(("apparel", "jackets"), 160, 240, "apparel", ("men", "women"),
             {"waterproof": ("yes", "no"), "fit": ("slim", "regular")}, True),
    Category(("apparel", "dresses"), 70, 90, "apparel", ("women",),
             {"length": ("mini", "midi", "maxi")}),
    Category(("apparel", "shorts"), 40, 80, "apparel", ("men", "women"),
             {"fit": ("slim", "regular")}),
    Category(("accessories", "socks"), 14, 40, "one", ("unisex",),
             {"cushion": ("light", "max")}),
    Category(("accessories", "watches"), 250, 400, "one", ("unisex",),
             {"gps": ("yes", "no")}, True),
    Category(("accessories", "bags"), 60, 300, "one", ("unisex",),
             {"volume": ("10 l", "20 l", "30 l")}, True),
    Category(("nutrition", "gels"), 18, 25, "one", ("unisex",),
             {"flavour": ("citrus", "berry", "neutral")}),
)  # fmt: skip

BRANDS: tuple[tuple[str, float], ...] = (  # name, price tier
    ("Asics", 1.0), ("Nike", 1.1), ("Adidas", 1.05), ("Hoka", 1.2), ("Brooks", 1.0),
    ("Saucony", 0.95), ("New Balance", 1.0), ("Salomon", 1.15), ("On", 1.25), ("Mizuno", 0.95),
    ("Patagonia", 1.3), ("Arc'teryx", 1.6), ("Decathlon", 0.55), ("Kalenji", 0.5),
    ("Garmin", 1.2), ("Coros", 1.0), ("Polar", 0.95), ("Osprey", 1.1), ("Icebreaker", 1.2),
    ("Uniqlo", 0.6), ("Zara", 0.7), ("Veja", 1.0), ("Maurten", 1.3), ("SIS", 0.8),
)  # fmt: skip
COLOURS = ("black", "white", "blue", "red", "green", "grey", "orange", "pink", "yellow", "navy")
SHOE_SIZES = tuple(str(s) for s in range(36, 48))
APPAREL_SIZES = ("XS", "S", "M", "L", "XL", "XXL")
ZONES: tuple[tuple[str, str, str, float], ...] = (  # zone, country, locale, share
    ("Europe/Paris", "FR", "fr-FR", 0.3), ("Europe/Berlin", "DE", "de-DE", 0.2),
    ("Europe/London", "GB", "en-GB", 0.15), ("Europe/Madrid", "ES", "es-ES", 0.1),
    ("Europe/Rome", "IT", "it-IT", 0.1), ("America/New_York", "US", "en-US", 0.1),
    ("Asia/Tokyo", "JP", "ja-JP", 0.05),
)  # fmt: skip
FIRST_NAMES = (
    "Ana",
    "Ben",
    "Chloé",
    "David",
    "Emma",
    "Felix",
    "Giulia",
    "Hugo",
    "Ines",
    "Jon",
    "Klara",
    "Luca",
    "Maya",
    "Noah",
    "Olga",
    "Paul",
    "Rosa",
    "Sam",
    "Tara",
    "Yann",
)
CHANNELS = ("email", "sms", "push")
DEPARTMENTS = ("men", "women", "unisex")
# every attribute name, and the values it can take (union over categories)
ATTR_VALUES: dict[str, tuple[str, ...]] = {}
for _c in CATEGORIES:
    for _k, _v in _c.attributes.items():
        ATTR_VALUES[_k] = tuple(dict.fromkeys(ATTR_VALUES.get(_k, ()) + _v))
ATTR_NAMES = tuple(sorted(ATTR_VALUES))


@dataclass
class Catalog:
    """Products as arrays (index = product number); ``ids`` like ``p00042``."""

    ids: list[str]
    category: I
    department: list[str]
    brand: I
    colour: I
    price: F
    attributes: list[dict[str, str]]
    sizes: list[tuple[str, ...]]
    stock: list[list[int]]
    popularity: F  # the crowd's appeal, independent of anyone's taste
    dept_code: I  # index into DEPARTMENTS
    attr_codes: I  # (products, ATTR_NAMES): value index, -1 where the product has no such attribute


@dataclass
class Shoppers:
    """One row per shopper; every field is hidden from Concierge except through behaviour."""

    ids: list[str]
    department: list[str]  # "men" | "women"
    shoe_size: list[str]
    apparel_size: list[str]
    brand_w: F  # (n, brands) taste weights, rows sum to 1
    colour_w: F  # (n, colours)
    category_w: F  # (n, categories) interest
    attr_pref_codes: I  # (n, ATTR_NAMES): index of the preferred value of each attribute
    price_level: F  # multiplier of the category base price they are comfortable with
    cadence_days: F  # (n, categories) personal days between purchases
    reseller: B
    resell_delay_days: F
    consent: B  # (n, channels)
    preferred_channel: list[str | None]
    preferred_code: I  # index into CHANNELS, -1 for none
    zone: I  # index into ZONES
    contact_per_week: F  # tolerance: messages per week before annoyance
    responsiveness: F  # base probability of opening a message they like
    anonymous_first: B
    first_name: list[str]
    activity: F  # browse sessions per month
    dept_code: I  # index into DEPARTMENTS (0 men, 1 women)

    def attr_pref(self, i: int) -> dict[str, str]:
        return {n: ATTR_VALUES[n][self.attr_pref_codes[i, j]] for j, n in enumerate(ATTR_NAMES)}


def build_catalog(cfg: SimConfig, rng: np.random.Generator) -> Catalog:
    n = cfg.n_products or max(300, cfg.n_shoppers // 4)
    share = np.array([1.0 / (c.cadence_days**0.5) for c in CATEGORIES])
    cat = rng.choice(len(CATEGORIES), size=n, p=share / share.sum())
    brand = rng.integers(0, len(BRANDS), size=n)
    colour = rng.integers(0, len(COLOURS), size=n)
    tier = np.array([b[1] for b in BRANDS])[brand]
    base = np.array([c.base_price for c in CATEGORIES])[cat]
    price = np.round(base * tier * rng.lognormal(0.0, 0.25, size=n), 0) - 0.01
    price = np.maximum(price, 2.99)
    dept_draw = rng.random(n)
    departments, attributes, sizes, stock = [], [], [], []
    for i in range(n):  # one loop per product (the catalog), not per event
        c = CATEGORIES[cat[i]]
        d = c.departments[int(dept_draw[i] * len(c.departments))]
        departments.append(d)
        attributes.append({k: vals[rng.integers(len(vals))] for k, vals in c.attributes.items()})
        if c.sizing == "shoe":
            lo = 36 if d == "women" else 39
            s = tuple(str(x) for x in range(lo, lo + 8))
        elif c.sizing == "apparel":
            s = APPAREL_SIZES
        else:
            s = ("one",)
        sizes.append(s)
        stock.append(
            [int(x) for x in rng.choice([0, 2, 5, 12], size=len(s), p=[0.1, 0.3, 0.4, 0.2])]
        )
    codes = np.full((n, len(ATTR_NAMES)), -1, dtype=np.int64)
    for j, name in enumerate(ATTR_NAMES):
        values = ATTR_VALUES[name]
        codes[:, j] = [values.index(a[name]) if name in a else -1 for a in attributes]
    return Catalog(
        ids=[f"p{i:05d}" for i in range(n)],
        category=cat.astype(np.int64),
        department=departments,
        brand=brand.astype(np.int64),
        colour=colour.astype(np.int64),
        price=price,
        attributes=attributes,
        sizes=sizes,
        stock=stock,
        popularity=rng.lognormal(0.0, 0.6, size=n),
        dept_code=np.array([DEPARTMENTS.index(d) for d in departments], dtype=np.int64),
        attr_codes=codes,
    )


def build_shoppers(cfg: SimConfig, rng: np.random.Generator) -> Shoppers:
    n = cfg.n_shoppers
    women = rng.random(n) < 0.5
    shoe = np.where(women, rng.normal(38.5, 1.2, n), rng.normal(43, 1.3, n))
    shoe = np.clip(np.round(shoe), 36, 47).astype(int)
    app = np.clip(np.round(rng.normal(2.3, 1.0, n)), 0, len(APPAREL_SIZES) - 1).astype(int)
    cat_w = rng.dirichlet(np.full(len(CATEGORIES), 0.35), size=n)
    dresses = np.array([i for i, c in enumerate(CATEGORIES) if c.departments == ("women",)])
    cat_w[np.ix_(~women, dresses)] = 0.0
    cat_w /= cat_w.sum(axis=1, keepdims=True)
    base_cad = np.array([c.cadence_days for c in CATEGORIES])
    personal = rng.lognormal(0.0, 0.35, size=(n, 1)) * rng.lognormal(
        0.0, 0.2, size=(n, len(CATEGORIES))
    )
    attr_pref = np.stack(
        [rng.integers(0, len(ATTR_VALUES[name]), size=n) for name in ATTR_NAMES], axis=1
    ).astype(np.int64)
    consent = rng.random((n, len(CHANNELS))) < np.array([0.8, 0.35, 0.45])
    favourite = rng.integers(0, len(CHANNELS), size=n)
    preferred: list[str | None] = [
        CHANNELS[f] if consent[i, f] else None for i, f in enumerate(favourite)
    ]
    zone_p = np.array([z[3] for z in ZONES])
    return Shoppers(
        ids=[f"c{i:05d}" for i in range(n)],
        department=["women" if w else "men" for w in women],
        shoe_size=[str(s) for s in shoe],
        apparel_size=[APPAREL_SIZES[a] for a in app],
        brand_w=rng.dirichlet(np.full(len(BRANDS), 0.15), size=n),
        colour_w=rng.dirichlet(np.full(len(COLOURS), 0.3), size=n),
        category_w=cat_w,
        attr_pref_codes=attr_pref,
        price_level=rng.lognormal(0.0, 0.3, size=n),
        cadence_days=base_cad[None, :] * personal,
        reseller=rng.random(n) < cfg.resellers,
        resell_delay_days=rng.lognormal(np.log(30), 0.8, size=n),
        consent=consent,
        preferred_channel=preferred,
        preferred_code=np.array(
            [CHANNELS.index(c) if c else -1 for c in preferred], dtype=np.int64
        ),
        zone=rng.choice(len(ZONES), size=n, p=zone_p / zone_p.sum()).astype(np.int64),
        contact_per_week=rng.choice([0.5, 1.0, 2.0, 4.0], size=n, p=[0.25, 0.35, 0.25, 0.15]),
        responsiveness=rng.beta(2, 5, size=n),
        anonymous_first=rng.random(n) < cfg.anonymous_first,
        first_name=[FIRST_NAMES[i] for i in rng.integers(0, len(FIRST_NAMES), size=n)],
        activity=rng.gamma(2.0, cfg.browse_sessions_per_month / 2.0, size=n),
        dept_code=women.astype(np.int64),
    )
