"""The simulated marketplace: a catalog, and shoppers with hidden individual tastes.

Everything is drawn from generators seeded by :class:`SimConfig` (one independent stream per part,
``SeedSequence(seed).spawn``), so the same config gives the same world, and changing how shoppers
are drawn does not reshuffle the catalog. Shoppers and products are *columns of arrays* (one row
per shopper or product), never Python objects, so 100,000 shoppers cost little more than 1,000.

The model of a shopper
----------------------
What each shopper hides, and :mod:`concierge.sim.response` turns into behaviour:

* **Who they shop for.** A department (``women`` / ``men``; unisex items suit everyone) and, for a
  quarter of them, children (``kids`` items too). Sizes per department: EU shoe size, clothing
  size and jeans waist for themselves, shoe and clothing size for the children. A shopper only
  buys what is made in their size.
* **Tastes.** Weights over brands and colours drawn from sparse Dirichlets (most people have one
  or two favourites); a preferred value for some product attributes (drop ``8 mm``, pronation
  ``neutral``, fit ``slim``...; indifferent to the others); a price level (the multiplier of a
  category's usual price they are comfortable with: centred on the price tiers of the brands
  they like, since people like brands they can afford) and a price tolerance.
* **Interests and cadence.** Interest weights over categories (Gamma noise, normalised, around
  the categories their favourite brands make) and, for the categories they buy regularly, a personal
  purchase cadence in days (the category's usual cadence times a lognormal person effect), with a
  regularity (the shape of the Gamma distribution of their gaps).
* **A life in the store.** The day they join (half are there from the start), a lifetime after
  which they stop coming (exponential: the "death" of BG/NBD), how often they browse without
  buying, and how many visits they make anonymously before their first login (some never log in).
* **Selling.** Whether they resell what they bought (and which share of it), after how long
  (their typical delay), and whether they also list things from their wardrobe.
* **Contact.** Weights over channels (email, SMS, push), consent per channel given at sign-up
  (some withdraw it later), an optionally stated preferred channel, a time zone and the local hour
  they are most active, a tolerance for contact (messages per week before annoyance) and a
  responsiveness (their base chance of opening a message).

The catalog
-----------
Products belong to a two-level category (``Shoes > Running``...) with a size system, a usual
price, a usual purchase cadence, a return rate and attributes; a brand (brands make the
categories of their families: sport, fashion, outdoor, basics, accessories, beauty) with a price
tier; a department; a colour; and a latent *popularity* (the crowd's appeal, lognormal). Resold
and wardrobe items become one-of-a-kind marketplace listings during the run (see
:mod:`concierge.sim.behaviour`); they are rows of the same :class:`Catalog`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from concierge.errors import InputError

F = npt.NDArray[np.float64]
I = npt.NDArray[np.int64]  # noqa: E741
B = npt.NDArray[np.bool_]

# -- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SimConfig:
    """What to simulate. The same config always gives the same world and the same events.

    Parameters
    ----------
    seed
        Seeds every random draw.
    n_shoppers
        Number of shoppers (each gets a customer id ``c00001``...; some never log in).
    days
        Length of the simulated history, from ``start``.
    n_products
        Size of the regular catalog; ``None``: half the number of shoppers, within [400, 5000].
    start
        First instant of the history (timezone-aware).
    currency
        Currency of every price and amount.
    anonymous_first
        Share of shoppers who visit anonymously (``anon-...`` device id) before their first login.
    never_identify
        Share of visitors who never log in (they browse, sometimes fill a cart, never buy).
    resellers
        Share of shoppers who resell part of what they buy.
    existing_customers
        Share of shoppers already around at ``start``; the others join during the period.
    mean_lifetime_days
        Mean time a shopper stays active after joining (exponential).
    browse_per_week
        Median number of browsing visits per week (without a purchase).
    """

    seed: int
    n_shoppers: int
    days: int
    n_products: int | None = None
    start: datetime = datetime(2025, 6, 1, tzinfo=UTC)
    currency: str = "EUR"
    anonymous_first: float = 0.35
    never_identify: float = 0.08
    resellers: float = 0.2
    existing_customers: float = 0.5
    mean_lifetime_days: float = 900.0
    browse_per_week: float = 0.5

    def __post_init__(self) -> None:
        problems: list[tuple[str, str]] = []
        if self.n_shoppers < 1:
            problems.append(("n_shoppers", "must be at least 1"))
        if self.days < 1:
            problems.append(("days", "must be at least 1"))
        if self.n_products is not None and self.n_products < len(CATEGORIES) * 2:
            problems.append(("n_products", f"must be at least {len(CATEGORIES) * 2}"))
        if self.start.tzinfo is None or self.start.utcoffset() is None:
            problems.append(("start", "must be timezone-aware"))
        if len(self.currency) != 3 or not self.currency.isupper():
            problems.append(("currency", "must be a three-letter ISO code like EUR"))
        for name in ("anonymous_first", "never_identify", "resellers", "existing_customers"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append((name, "must be between 0 and 1"))
        if self.anonymous_first + self.never_identify > 1.0:
            problems.append(("never_identify", "anonymous_first + never_identify must be <= 1"))
        if self.mean_lifetime_days <= 0 or self.browse_per_week < 0:
            problems.append(("mean_lifetime_days", "must be positive"))
        if problems:
            from concierge.errors import FieldError

            raise InputError([FieldError(f, r) for f, r in problems])

    @property
    def products(self) -> int:
        """The size of the regular catalog."""
        if self.n_products is not None:
            return self.n_products
        return int(min(5000, max(400, self.n_shoppers // 2)))

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["start"] = self.start.isoformat()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimConfig:
        return cls(**{**data, "start": datetime.fromisoformat(data["start"])})

    def digest(self) -> str:
        """Eight hex digits naming this config (event ids of two configs never collide)."""
        text = json.dumps(self.as_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:8]


# -- the vocabulary of the store -------------------------------------------------------------


@dataclass(frozen=True)
class Category:
    path: tuple[str, str]
    noun: str  # for titles
    sizing: str | None  # "shoes" | "clothing" | "waist" | None (one size)
    base_price: float
    cadence_days: float  # the population's usual days between purchases
    return_rate: float
    resellable: bool
    departments: tuple[str, ...]
    attributes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    popularity: float = 1.0  # share of the catalog and of interest

    @property
    def name(self) -> str:
        return ">".join(self.path)


CATEGORIES: tuple[Category, ...] = (
    Category(("Shoes", "Running"), "running shoe", "shoes", 120, 120, 0.10, True,
             ("women", "men", "kids"),
             {"drop": ("0 mm", "4 mm", "8 mm", "10 mm"), "pronation": ("neutral", "stability")},
             1.4),
    Category(("Shoes", "Trail"), "trail shoe", "shoes", 140, 180, 0.08, True, ("women", "men"),
             {"drop": ("4 mm", "6 mm", "8 mm"), "grip": ("mud", "rock")}, 0.7),
    Category(("Shoes", "Sneakers"), "sneaker", "shoes", 95, 150, 0.10, True,
             ("women", "men", "kids", "unisex"),
             {"cut": ("low-top", "high-top"), "material": ("leather", "canvas", "suede")}, 1.3),
    Category(("Shoes", "Boots"), "boot", "shoes", 160, 300, 0.08, True, ("women", "men", "kids"),
             {"material": ("leather", "suede"), "waterproof": ("yes", "no")}, 0.7),
    Category(("Clothing", "T-shirts"), "T-shirt", "clothing", 30, 90, 0.06, False,
             ("women", "men", "kids", "unisex"),
             {"fit": ("slim", "regular", "oversized"), "fabric": ("cotton", "merino", "linen")},
             1.5),
    Category(("Clothing", "Jeans"), "jeans", "waist", 85, 180, 0.15, True,
             ("women", "men", "kids"),
             {"fit": ("skinny", "slim", "straight", "relaxed"), "wash": ("light", "mid", "dark")},
             1.0),
    Category(("Clothing", "Jackets"), "jacket", "clothing", 170, 300, 0.10, True,
             ("women", "men", "kids"),
             {"waterproof": ("yes", "no"), "fill": ("down", "synthetic", "none")}, 0.8),
    Category(("Clothing", "Dresses"), "dress", "clothing", 75, 120, 0.18, True, ("women", "kids"),
             {"length": ("mini", "midi", "maxi")}, 0.9),
    Category(("Clothing", "Knitwear"), "sweater", "clothing", 80, 200, 0.08, True,
             ("women", "men"), {"fabric": ("wool", "cotton", "cashmere")}, 0.7),
    Category(("Clothing", "Activewear"), "training top", "clothing", 45, 100, 0.06, False,
             ("women", "men", "unisex"), {"sport": ("running", "yoga", "gym")}, 1.0),
    Category(("Accessories", "Bags"), "bag", None, 110, 300, 0.04, True,
             ("women", "men", "unisex"),
             {"material": ("leather", "canvas", "nylon"),
              "style": ("tote", "backpack", "crossbody")},
             0.8),
    Category(("Accessories", "Watches"), "watch", None, 240, 500, 0.03, True,
             ("women", "men", "unisex"), {"type": ("sport", "dress", "smart")}, 0.5),
    Category(("Accessories", "Sunglasses"), "pair of sunglasses", None, 95, 365, 0.04, True,
             ("unisex",), {"frame": ("round", "square", "aviator")}, 0.5),
    Category(("Accessories", "Socks"), "pack of socks", None, 12, 90, 0.01, False,
             ("women", "men", "kids", "unisex"), {"cushion": ("light", "max")}, 0.9),
    Category(("Beauty", "Skincare"), "face cream", None, 32, 50, 0.02, False,
             ("women", "men", "unisex"),
             {"skin": ("dry", "oily", "combination", "sensitive")}, 1.0),
    Category(("Beauty", "Fragrance"), "eau de parfum", None, 80, 150, 0.02, False,
             ("women", "men", "unisex"), {"family": ("fresh", "floral", "woody", "spicy")}, 0.6),
)  # fmt: skip
CATEGORY_NAMES = tuple(c.name for c in CATEGORIES)

# brand families: the categories a brand of that family makes
FAMILIES: dict[str, tuple[str, ...]] = {
    "sport": ("Shoes>Running", "Shoes>Trail", "Clothing>Activewear", "Clothing>T-shirts",
              "Accessories>Socks", "Accessories>Watches"),
    "fashion": ("Shoes>Sneakers", "Shoes>Boots", "Clothing>T-shirts", "Clothing>Jeans",
                "Clothing>Jackets", "Clothing>Dresses", "Clothing>Knitwear", "Accessories>Bags",
                "Accessories>Sunglasses"),
    "outdoor": ("Shoes>Trail", "Shoes>Boots", "Clothing>Jackets", "Clothing>Knitwear",
                "Accessories>Bags", "Accessories>Socks"),
    "basics": ("Clothing>T-shirts", "Clothing>Jeans", "Shoes>Sneakers", "Accessories>Socks",
               "Clothing>Activewear", "Clothing>Dresses"),
    "accessories": ("Accessories>Bags", "Accessories>Watches", "Accessories>Sunglasses"),
    "beauty": ("Beauty>Skincare", "Beauty>Fragrance"),
}  # fmt: skip

# invented names (no real brand is implied); family, price tier, share of the catalog
BRANDS: tuple[tuple[str, str, float, float], ...] = (
    ("Stride", "sport", 1.0, 1.4), ("Kestrel", "sport", 1.15, 1.0),
    ("Cobalt Run", "sport", 0.9, 1.0), ("Trailhead", "sport", 1.05, 0.8),
    ("Pace & Co", "sport", 1.25, 0.6), ("Marlowe", "fashion", 1.2, 1.0),
    ("Atelier Nuit", "fashion", 1.8, 0.5), ("Juniper Lane", "fashion", 1.0, 1.2),
    ("Velvet Fox", "fashion", 1.1, 0.8), ("Oakhurst", "fashion", 1.3, 0.7),
    ("Halden", "fashion", 0.95, 0.9), ("Wren", "fashion", 1.05, 0.8),
    ("Fjellfolk", "outdoor", 1.3, 0.9), ("Ironbark", "outdoor", 1.1, 0.8),
    ("Saltmarsh", "outdoor", 0.95, 0.7), ("Northwind", "outdoor", 1.5, 0.6),
    ("Basics Lab", "basics", 0.55, 1.4), ("Everyday", "basics", 0.65, 1.2),
    ("Umber", "basics", 0.75, 0.9), ("Tessellate", "accessories", 1.2, 0.8),
    ("Quill", "accessories", 0.9, 0.7), ("Vantage", "accessories", 1.6, 0.5),
    ("Lumen", "accessories", 1.0, 0.7), ("Caraway", "beauty", 1.0, 1.0),
    ("Ostara", "beauty", 1.4, 0.7), ("Mistral", "beauty", 0.8, 0.9),
    ("Solstice", "beauty", 1.2, 0.6),
)  # fmt: skip
BRAND_NAMES = tuple(b[0] for b in BRANDS)

COLOURS = ("black", "white", "navy", "grey", "blue", "red", "green", "beige", "brown", "pink")
COLOUR_SHARE = (0.2, 0.14, 0.12, 0.12, 0.1, 0.07, 0.07, 0.07, 0.06, 0.05)
DEPARTMENTS = ("women", "men", "kids", "unisex")
WOMEN, MEN, KIDS, UNISEX = range(4)
CHANNELS = ("email", "sms", "push")
CONDITIONS = ("new", "like_new", "good", "fair")
MODEL_WORDS = (
    "Aero", "Tempo", "Nimbus", "Summit", "Coast", "Drift", "Echo", "Flux", "Glide", "Harbor",
    "Ion", "Juno", "Keel", "Loop", "Meridian", "Nova", "Orbit", "Pulse", "Quest", "Ridge",
    "Swift", "Tide", "Vale", "Wave",
)  # fmt: skip

# size systems: a shopper has one size per system (-1: none); a product offers a range of one
SIZE_SYSTEMS: dict[str, tuple[str, ...]] = {
    "shoes": tuple(str(s) for s in range(35, 48)),
    "clothing": ("XS", "S", "M", "L", "XL", "XXL"),
    "waist": tuple(f"W{w}" for w in range(24, 41)),
    "kids_shoes": tuple(str(s) for s in range(26, 36)),
    "kids_clothing": ("4Y", "6Y", "8Y", "10Y", "12Y", "14Y"),
}
SYSTEM_NAMES = tuple(SIZE_SYSTEMS)
# the range of sizes a product of a department offers, per system: (first, last) inclusive
SIZE_RANGES: dict[tuple[str, str], tuple[str, str]] = {
    ("shoes", "women"): ("35", "42"),
    ("shoes", "men"): ("39", "47"),
    ("shoes", "unisex"): ("35", "47"),
    ("clothing", "women"): ("XS", "XL"),
    ("clothing", "men"): ("S", "XXL"),
    ("clothing", "unisex"): ("XS", "XXL"),
    ("waist", "women"): ("W24", "W34"),
    ("waist", "men"): ("W28", "W40"),
    ("kids_shoes", "kids"): ("26", "35"),
    ("kids_clothing", "kids"): ("4Y", "14Y"),
}

# time zones: zone, country, locale, share of shoppers, cities, phone prefix
ZONES: tuple[tuple[str, str, str, float, tuple[str, ...], str], ...] = (
    ("Europe/Paris", "FR", "fr-FR", 0.24, ("Paris", "Lyon", "Lille", "Nantes"), "33"),
    ("Europe/Berlin", "DE", "de-DE", 0.2, ("Berlin", "Hamburg", "Munich", "Cologne"), "49"),
    ("Europe/Madrid", "ES", "es-ES", 0.1, ("Madrid", "Barcelona", "Valencia"), "34"),
    ("Europe/Rome", "IT", "it-IT", 0.1, ("Rome", "Milan", "Turin"), "39"),
    ("Europe/Amsterdam", "NL", "nl-NL", 0.08, ("Amsterdam", "Utrecht", "Rotterdam"), "31"),
    ("Europe/Brussels", "BE", "fr-BE", 0.05, ("Brussels", "Ghent", "Liege"), "32"),
    ("Europe/Vienna", "AT", "de-AT", 0.05, ("Vienna", "Graz"), "43"),
    ("Europe/Lisbon", "PT", "pt-PT", 0.04, ("Lisbon", "Porto"), "351"),
    ("Europe/Dublin", "IE", "en-IE", 0.04, ("Dublin", "Cork"), "353"),
    ("Europe/Helsinki", "FI", "fi-FI", 0.03, ("Helsinki", "Tampere"), "358"),
    ("Europe/London", "GB", "en-GB", 0.04, ("London", "Manchester"), "44"),
    ("America/New_York", "US", "en-US", 0.03, ("New York", "Boston"), "1"),
)  # fmt: skip
ZONE_NAMES = tuple(z[0] for z in ZONES)

FIRST_NAMES: dict[int, tuple[str, ...]] = {  # by department (women, men)
    WOMEN: ("Ana", "Chloé", "Emma", "Giulia", "Inès", "Klara", "Léa", "Maya", "Nora", "Olga",
            "Rosa", "Sofia", "Tara", "Zoë", "Hanna", "Lucía", "Marta", "Aoife", "Elif", "Julie"),
    MEN: ("Ben", "David", "Felix", "Hugo", "Jon", "Luca", "Noah", "Paul", "Sam", "Yann",
          "Mateo", "Jonas", "Pedro", "Liam", "Emil", "Tomás", "Marco", "Oskar", "Théo", "Finn"),
}  # fmt: skip
LAST_NAMES = (
    "Martin", "Müller", "García", "Rossi", "de Vries", "Peeters", "Gruber", "Silva", "Murphy",
    "Virtanen", "Smith", "Bernard", "Schmidt", "López", "Russo", "Jansen", "Dubois", "Wagner",
    "Costa", "Kelly", "Korhonen", "Brown", "Moreau", "Fischer",
)  # fmt: skip

# every attribute name, and the values it can take (union over categories)
ATTR_VALUES: dict[str, tuple[str, ...]] = {}
for _c in CATEGORIES:
    for _k, _v in _c.attributes.items():
        ATTR_VALUES[_k] = tuple(dict.fromkeys(ATTR_VALUES.get(_k, ()) + _v))
ATTR_NAMES = tuple(sorted(ATTR_VALUES))


def _category_index(name: str) -> int:
    return CATEGORY_NAMES.index(name)


def brand_covers() -> B:
    """(brands, categories): which categories each brand makes."""
    out = np.zeros((len(BRANDS), len(CATEGORIES)), dtype=bool)
    for b, (_name, family, _tier, _share) in enumerate(BRANDS):
        for cat in FAMILIES[family]:
            out[b, _category_index(cat)] = True
    return out


def category_departments() -> B:
    """(categories, departments): which departments a category is made for."""
    out = np.zeros((len(CATEGORIES), len(DEPARTMENTS)), dtype=bool)
    for k, c in enumerate(CATEGORIES):
        for d in c.departments:
            out[k, DEPARTMENTS.index(d)] = True
    return out


def size_system(sizing: str | None, department: int) -> int:
    """The size system (index into SYSTEM_NAMES) of a product, -1 for one-size items."""
    if sizing is None:
        return -1
    if department == KIDS:
        name = "kids_shoes" if sizing == "shoes" else "kids_clothing"
    else:
        name = sizing
    return SYSTEM_NAMES.index(name)


# -- the tables ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Catalog:
    """Products as arrays (row = product). Listings made during the run are appended rows.

    ``size_lo``/``size_hi`` bound the sizes a product is made in (indices into its system's
    sizes, inclusive); a listing is made in exactly one size. ``seller`` and the fields after it
    describe marketplace listings (-1 / None for regular products).
    """

    ids: list[str]
    brand: I
    category: I
    department: I  # index into DEPARTMENTS
    colour: I
    price: F
    attrs: I  # (products, ATTR_NAMES): value index, -1 where the product has no such attribute
    popularity: F  # the crowd's appeal, independent of anyone's taste
    system: I  # index into SYSTEM_NAMES, -1 for one-size
    size_lo: I
    size_hi: I
    model: I  # index into MODEL_WORDS (titles)
    seller: I  # shopper index of the seller, -1 for regular stock
    condition: I  # index into CONDITIONS, -1 for regular stock
    source: I  # the regular product a listing is a copy of, -1 otherwise
    listed_us: I  # when the listing was put up, -1 otherwise
    sold_to: I  # shopper index of the buyer of a listing, -1 when unsold or regular
    sold_us: I
    bought_order: list[str | None]  # the order a resold listing was bought in

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def is_listing(self) -> B:
        out: B = self.seller >= 0
        return out

    def index(self, product_ids: list[str]) -> I:
        """Row numbers of products by id (unknown ids raise ``KeyError``)."""
        where = {p: i for i, p in enumerate(self.ids)}
        return np.array([where[p] for p in product_ids], dtype=np.int64)


@dataclass(frozen=True)
class Shoppers:
    """One row per shopper; every field is hidden from Concierge except through behaviour."""

    ids: list[str]
    anonymous_ids: list[str | None]  # the device id of anonymous visits, None if none
    department: I  # WOMEN or MEN
    has_kids: B
    sizes: I  # (shoppers, SYSTEM_NAMES): index into the system's sizes, -1 for none
    brand_w: F  # (shoppers, brands): taste weights, rows sum to about 1
    colour_w: F  # (shoppers, colours)
    attr_pref: I  # (shoppers, ATTR_NAMES): preferred value index, -1 when indifferent
    price_level: F  # multiplier of a category's usual price they are comfortable with
    price_tolerance: F  # log-scale spread of the prices they accept
    category_w: F  # (shoppers, categories): interest, rows sum to 1
    cadence_days: F  # (shoppers, categories): days between purchases, inf: never buys it
    regularity: F  # Gamma shape of their inter-purchase gaps (higher: more regular)
    browse_per_week: F
    join_day: F
    churn_day: F  # inf: still active at the end
    anonymous_visits: I  # visits before the first login (first purchase forces a login)
    never_identify: B
    returner: F  # multiplier of the category's return rate
    resell_share: F  # share of resellable purchases they resell (0: no selling habit)
    resell_delay_days: F  # their typical delay between buying and listing
    wardrobe_per_year: F  # listings of things not bought here
    channel_w: F  # (shoppers, CHANNELS) preference weights
    consent: B  # (shoppers, CHANNELS): granted at sign-up
    withdraw_day: F  # (shoppers, CHANNELS): when consent is withdrawn, inf: never
    stated_channel: I  # the preferred channel they tell us (index into CHANNELS), -1: none
    zone: I  # index into ZONES
    city: I  # index into the zone's cities
    active_hour: F  # the local hour they are most often active
    contact_per_week: F  # tolerance: messages per week before annoyance
    responsiveness: F  # base probability of opening a message on their preferred channel
    first_name: list[str]
    last_name: list[str]
    email: list[str]
    phone: list[str | None]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def reseller(self) -> B:
        out: B = (self.resell_share > 0) | (self.wardrobe_per_year > 0)
        return out

    def index(self, customer_ids: list[str]) -> I:
        """Row numbers of shoppers by customer id (unknown ids raise ``KeyError``)."""
        where = {c: i for i, c in enumerate(self.ids)}
        return np.array([where[c] for c in customer_ids], dtype=np.int64)

    def size_of(self, s: I, system: I) -> I:
        """The size index of shopper ``s[i]`` in ``system[i]`` (-1 for one-size or none)."""
        out: I = np.where(system >= 0, self.sizes[s, np.maximum(system, 0)], -1)
        return out


def _streams(seed: int, n: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def streams(cfg: SimConfig) -> dict[str, np.random.Generator]:
    """Independent generators per part of the simulation."""
    names = ("catalog", "shoppers", "behaviour", "stock")
    return dict(zip(names, _streams(cfg.seed, len(names)), strict=True))


def _id_width(n: int) -> int:
    return max(5, len(str(n)))


def build_catalog(cfg: SimConfig, rng: np.random.Generator) -> Catalog:
    """The regular catalog: new products in stock, made in a range of sizes."""
    n = cfg.products
    k_pop = np.array([c.popularity for c in CATEGORIES])
    # at least two products per category, the rest by the category's share
    category = np.concatenate(
        [
            np.repeat(np.arange(len(CATEGORIES)), 2),
            rng.choice(len(CATEGORIES), size=n - 2 * len(CATEGORIES), p=k_pop / k_pop.sum()),
        ]
    ).astype(np.int64)
    covers = brand_covers()
    share = np.array([b[3] for b in BRANDS])
    # brand: among the brands making the category, by their share (inverse CDF per row)
    w = covers.T[category] * share[None, :]
    brand = _sample_rows(rng, w / w.sum(axis=1, keepdims=True))
    dept_ok = category_departments()[category].astype(float)
    dept_ok[:, UNISEX] *= 0.6
    dept_ok[:, KIDS] *= 0.5
    department = _sample_rows(rng, dept_ok / dept_ok.sum(axis=1, keepdims=True))
    colour_p = np.array(COLOUR_SHARE)
    colour = rng.choice(len(COLOURS), size=n, p=colour_p / colour_p.sum()).astype(np.int64)
    tier = np.array([b[2] for b in BRANDS])[brand]
    base = np.array([c.base_price for c in CATEGORIES])[category]
    kids_discount = np.where(department == KIDS, 0.6, 1.0)
    raw = base * tier * kids_discount * rng.lognormal(0.0, 0.25, size=n)
    price = np.maximum(np.round(raw), 3.0) - 0.05
    attrs = np.full((n, len(ATTR_NAMES)), -1, dtype=np.int64)
    for k, c in enumerate(CATEGORIES):  # a loop over categories and attributes, not products
        rows = np.nonzero(category == k)[0]
        for name, values in c.attributes.items():
            j = ATTR_NAMES.index(name)
            allowed = np.array([ATTR_VALUES[name].index(v) for v in values])
            attrs[rows, j] = allowed[rng.integers(0, len(allowed), size=len(rows))]
    system = np.full(n, -1, dtype=np.int64)
    lo = np.full(n, -1, dtype=np.int64)
    hi = np.full(n, -1, dtype=np.int64)
    for k, c in enumerate(CATEGORIES):
        for d in range(len(DEPARTMENTS)):
            rows = (category == k) & (department == d)
            sys_ = size_system(c.sizing, d)
            if sys_ < 0 or not rows.any():
                continue
            name = SYSTEM_NAMES[sys_]
            first, last = SIZE_RANGES[(name, DEPARTMENTS[d])]
            system[rows] = sys_
            lo[rows] = SIZE_SYSTEMS[name].index(first)
            hi[rows] = SIZE_SYSTEMS[name].index(last)
    width = _id_width(10 * n)
    none = np.full(n, -1, dtype=np.int64)
    return Catalog(
        ids=[f"p{i:0{width}d}" for i in range(1, n + 1)],
        brand=brand,
        category=category,
        department=department,
        colour=colour,
        price=price,
        attrs=attrs,
        popularity=rng.lognormal(0.0, 0.7, size=n),
        system=system,
        size_lo=lo,
        size_hi=hi,
        model=rng.integers(0, len(MODEL_WORDS), size=n).astype(np.int64),
        seller=none,
        condition=none.copy(),
        source=none.copy(),
        listed_us=none.copy(),
        sold_to=none.copy(),
        sold_us=none.copy(),
        bought_order=[None] * n,
    )


def build_shoppers(cfg: SimConfig, rng: np.random.Generator) -> Shoppers:
    """Draw every shopper's hidden traits (see the module docstring for the model)."""
    n, days = cfg.n_shoppers, float(cfg.days)
    department = np.where(rng.random(n) < 0.5, WOMEN, MEN).astype(np.int64)
    women = department == WOMEN
    has_kids = rng.random(n) < 0.25

    sizes = np.full((n, len(SYSTEM_NAMES)), -1, dtype=np.int64)
    shoe = np.where(women, rng.normal(38.5, 1.2, n), rng.normal(43.0, 1.4, n))
    shoe_lo = np.where(women, 35, 39)
    shoe_hi = np.where(women, 42, 47)
    sizes[:, 0] = np.clip(np.round(shoe), shoe_lo, shoe_hi).astype(np.int64) - 35
    clothing = np.where(women, rng.normal(1.6, 0.9, n), rng.normal(2.6, 0.9, n))
    sizes[:, 1] = np.clip(np.round(clothing), np.where(women, 0, 1), np.where(women, 4, 5))
    waist = np.where(women, rng.normal(28.0, 2.0, n), rng.normal(33.0, 2.5, n))
    sizes[:, 2] = (
        np.clip(np.round(waist), np.where(women, 24, 28), np.where(women, 34, 40)).astype(np.int64)
        - 24
    )
    sizes[:, 3] = np.where(has_kids, rng.integers(0, len(SIZE_SYSTEMS["kids_shoes"]), n), -1)
    sizes[:, 4] = np.where(has_kids, rng.integers(0, len(SIZE_SYSTEMS["kids_clothing"]), n), -1)

    brand_w = rng.dirichlet(np.full(len(BRANDS), 0.2), size=n)
    brand_w = np.maximum(np.round(brand_w, 5), 1e-5)
    colour_w = np.maximum(np.round(rng.dirichlet(np.full(len(COLOURS), 0.35), size=n), 5), 1e-5)
    attr_pref = np.stack(
        [rng.integers(0, len(ATTR_VALUES[a]), size=n) for a in ATTR_NAMES], axis=1
    ).astype(np.int64)
    attr_pref[rng.random(attr_pref.shape) < 0.3] = -1  # indifferent

    # interest: categories they can shop (department), leaning to what their brands make
    can = category_departments()
    allowed = can[:, [WOMEN]].T & women[:, None] | can[:, [MEN]].T & ~women[:, None]
    allowed |= can[:, [UNISEX]].T | (can[:, [KIDS]].T & has_kids[:, None])
    k_pop = np.array([c.popularity for c in CATEGORIES])
    lean = 0.01 + (brand_w @ brand_covers().astype(float)) ** 2
    raw = k_pop[None, :] * lean * rng.gamma(2.0, 0.5, size=(n, len(CATEGORIES))) * allowed
    raw[raw.sum(axis=1) == 0] = allowed[raw.sum(axis=1) == 0]
    category_w = raw / raw.sum(axis=1, keepdims=True)
    buys = category_w >= 0.1
    top = category_w.argmax(axis=1)
    buys[np.arange(n), top] = True  # everyone buys something regularly
    base_cad = np.array([c.cadence_days for c in CATEGORIES])
    personal = rng.lognormal(0.0, 0.35, size=(n, 1)) * rng.lognormal(
        0.0, 0.2, size=(n, len(CATEGORIES))
    )
    cadence = np.where(buys, np.round(base_cad[None, :] * personal, 2), np.inf)

    identity = rng.random(n)
    never = identity < cfg.never_identify
    anon_first = (identity >= cfg.never_identify) & (
        identity < cfg.never_identify + cfg.anonymous_first
    )
    anonymous_visits = np.where(anon_first, 1 + rng.poisson(1.5, size=n), 0).astype(np.int64)
    cadence[never] = np.inf  # visitors who never log in never buy

    join = np.where(
        rng.random(n) < cfg.existing_customers, 0.0, np.round(rng.uniform(0, days, n), 3)
    )
    churn = join + np.round(rng.exponential(cfg.mean_lifetime_days, size=n), 3)
    churn = np.where(churn >= days, np.inf, churn)

    reseller = rng.random(n) < cfg.resellers
    resell_share = np.where(reseller, np.round(rng.uniform(0.25, 0.9, size=n), 3), 0.0)
    resell_delay = np.round(rng.lognormal(np.log(60.0), 0.6, size=n), 2)
    wardrobe = np.where(reseller & (rng.random(n) < 0.5), np.round(rng.gamma(2.0, 2.0, n), 2), 0)

    channel_w = np.round(rng.dirichlet([2.0, 0.6, 1.0], size=n), 5)
    consent = rng.random((n, len(CHANNELS))) < np.clip(
        np.array([0.55, 0.1, 0.25]) + channel_w, 0, 0.97
    )
    withdraw_at = rng.uniform(0, days, size=(n, len(CHANNELS)))
    withdraws = consent & (rng.random((n, len(CHANNELS))) < np.array([0.08, 0.15, 0.1]))
    withdraw_day = np.where(withdraws, np.round(withdraw_at, 3), np.inf)
    masked = np.where(consent, channel_w, -1.0)
    stated = np.where(
        (rng.random(n) < 0.3) & consent.any(axis=1), masked.argmax(axis=1), -1
    ).astype(np.int64)

    zone_p = np.array([z[3] for z in ZONES])
    zone = rng.choice(len(ZONES), size=n, p=zone_p / zone_p.sum()).astype(np.int64)
    n_cities = np.array([len(z[4]) for z in ZONES])
    city = np.floor(rng.random(n) * n_cities[zone]).astype(np.int64)
    peak = rng.choice(np.array([8.0, 12.5, 19.0, 21.5]), size=n, p=[0.15, 0.2, 0.4, 0.25])
    active_hour = np.round(np.clip(peak + rng.normal(0, 1.0, n), 7.0, 23.0), 2).astype(np.float64)

    # people like brands they can afford: the price level centres on their brands' tiers
    tiers = np.log(np.array([b[2] for b in BRANDS]))
    price_level = np.round(np.exp(brand_w @ tiers + rng.normal(0.0, 0.15, n)), 4)

    names_w = np.array(FIRST_NAMES[WOMEN], dtype=object)
    names_m = np.array(FIRST_NAMES[MEN], dtype=object)
    pick = rng.integers(0, len(names_w), size=n)
    first = np.where(women, names_w[pick], names_m[pick]).tolist()
    last = np.array(LAST_NAMES, dtype=object)[rng.integers(0, len(LAST_NAMES), size=n)].tolist()
    width = _id_width(n)
    ids = [f"c{i:0{width}d}" for i in range(1, n + 1)]
    email = [
        f"{_ascii(f)}.{_ascii(la)}.{i}@example.com".lower()
        for i, (f, la) in enumerate(zip(first, last, strict=True), start=1)
    ]
    prefix = np.array([z[5] for z in ZONES], dtype=object)[zone]
    digits = rng.integers(600_000_000, 799_999_999, size=n)
    phone = [
        f"+{p}{d}" if c else None
        for p, d, c in zip(prefix.tolist(), digits.tolist(), consent[:, 1].tolist(), strict=True)
    ]
    # device ids: a bijection of the shopper number (odd multiplier mod 2**64), mixed with the
    # seed, so they are unique, look random and need no draws
    mixed = (np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ np.uint64(
        (cfg.seed * 0xBF58476D1CE4E5B9) % 2**64
    )
    has_device = never | anon_first
    anonymous_ids = [
        f"anon-{int(m):016x}" if d else None
        for m, d in zip(mixed.tolist(), has_device.tolist(), strict=True)
    ]
    return Shoppers(
        ids=ids,
        anonymous_ids=anonymous_ids,
        department=department,
        has_kids=has_kids,
        sizes=sizes,
        brand_w=brand_w,
        colour_w=colour_w,
        attr_pref=attr_pref,
        price_level=price_level,
        price_tolerance=np.round(rng.uniform(0.25, 0.5, size=n), 4),
        category_w=category_w,
        cadence_days=cadence,
        regularity=np.round(rng.uniform(1.5, 6.0, size=n), 3),
        browse_per_week=np.round(cfg.browse_per_week * rng.lognormal(0.0, 0.8, size=n), 4),
        join_day=join,
        churn_day=churn,
        anonymous_visits=anonymous_visits,
        never_identify=never,
        returner=np.round(rng.lognormal(0.0, 0.5, size=n), 4),
        resell_share=resell_share,
        resell_delay_days=resell_delay,
        wardrobe_per_year=wardrobe.astype(np.float64),
        channel_w=channel_w,
        consent=consent,
        withdraw_day=withdraw_day,
        stated_channel=stated,
        zone=zone,
        city=city,
        active_hour=active_hour,
        contact_per_week=rng.choice(
            [0.5, 1.0, 2.0, 3.0, 5.0], size=n, p=[0.15, 0.3, 0.3, 0.15, 0.1]
        ),
        responsiveness=np.round(rng.beta(2.0, 5.0, size=n), 4),
        first_name=first,
        last_name=last,
        email=email,
        phone=phone,
    )


def _ascii(name: str) -> str:
    import unicodedata

    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return "".join(ch for ch in plain if ch.isalnum())


def _sample_rows(rng: np.random.Generator, p: F) -> I:
    """One column per row of ``p`` (rows sum to 1), by inverse CDF."""
    cdf = np.cumsum(p, axis=1)
    u = rng.random((len(p), 1)) * cdf[:, -1:]
    out: I = np.minimum((u >= cdf).sum(axis=1), p.shape[1] - 1).astype(np.int64)
    return out


def with_listings(catalog: Catalog, listings: Catalog) -> Catalog:
    """The catalog with listing rows appended."""
    fields: dict[str, Any] = {}
    for name in Catalog.__dataclass_fields__:
        a, b = getattr(catalog, name), getattr(listings, name)
        fields[name] = a + b if isinstance(a, list) else np.concatenate([a, b])
    return replace(catalog, **fields)
