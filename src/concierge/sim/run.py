"""Run the simulation: the shoppers' year as events, in the frames ingest takes.

How behaviour is generated (all vectorized; loops run over categories and event types only):

* **Purchases** are a renewal process per (shopper, category of interest): gaps are Gamma
  distributed (shape 4) around the shopper's own cadence for that category, from the day they
  join. Each purchase picks a product of that category by the Gumbel-max trick over
  :func:`concierge.sim.response.log_fit` plus the crowd's popularity, among products stocked in
  their size, and comes with its session: a search (half the time), views of a few candidates
  drawn the same way but noisier, an add to cart, a checkout.
* **Browse sessions** without a purchase (Poisson, by the shopper's activity) view products of a
  category of interest; a quarter leave something in the cart (abandonment).
* **Returns** of a share of purchases a few days later.
* **Resale**: resellers list part of what they bought (shoes, jackets, watches, bags) after their
  typical delay, as one-of-a-kind listings (``L…`` products with ``seller_id``); most listings
  sell to another shopper of the same department, who gets a purchase of the listing.
* **Identity**: a share of shoppers browse anonymously (``dev-…``) until their first purchase,
  when an ``identify`` event links the device; the others identify when they join. Consent per
  channel follows at sign-up (some revoke SMS later); some answer a question about their size.

Local times: sessions happen in the shopper's evening in their zone (standard offset, no DST).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, get_args
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from concierge.clock import to_us
from concierge.ingest import frames
from concierge.ingest.importers.base import iso_utc
from concierge.schema.catalog import Product
from concierge.schema.events import Event
from concierge.sim.response import log_fit
from concierge.sim.world import (
    ATTR_NAMES,
    BRANDS,
    CATEGORIES,
    CHANNELS,
    COLOURS,
    ZONES,
    Catalog,
    F,
    I,
    Shoppers,
    SimConfig,
    build_catalog,
    build_shoppers,
)

DAY_US = 86_400_000_000
MIN_US = 60_000_000


def _field_order() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for model in get_args(get_args(Event)[0]):
        for name in get_args(model.model_fields["type"].annotation):
            out[name] = list(model.model_fields)
    return out


FIELD_ORDER = _field_order()


def payloads(df: pl.DataFrame, typ: str) -> pl.Series:
    """Canonical JSON (``model_dump_json``) of events of one type held as columns of ``df``."""
    order = FIELD_ORDER[typ]
    cut = order.index("context")

    def col(name: str) -> pl.Expr:
        if name == "timestamp":
            return iso_utc(pl.col("ts_us")).alias("timestamp")
        if name == "type":
            return pl.lit(typ).alias("type")
        if name in df.columns:
            return pl.col(name)
        return pl.lit(None, pl.String).alias(name)

    pre = pl.struct([col(n) for n in order[:cut]]).struct.json_encode()
    post = pl.struct([col(n) for n in order[cut + 1 :]]).struct.json_encode()
    return df.select(
        pre.str.strip_suffix("}") + pl.lit(',"context":{},') + post.str.strip_prefix("{")
    ).to_series()


@dataclass
class Simulation:
    config: SimConfig
    catalog: Catalog
    shoppers: Shoppers
    products: list[Product]
    events: pl.DataFrame
    items: pl.DataFrame

    def events_frames(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        return self.events, self.items

    def truth(self) -> dict[str, Any]:
        sh, cfg = self.shoppers, self.config
        people = []
        for i, cid in enumerate(sh.ids):
            people.append(
                {
                    "customer_id": cid,
                    "anonymous_id": f"dev-{cid}" if sh.anonymous_first[i] else None,
                    "department": sh.department[i],
                    "shoe_size": sh.shoe_size[i],
                    "apparel_size": sh.apparel_size[i],
                    "brands": _top(sh.brand_w[i], [b[0] for b in BRANDS]),
                    "colours": _top(sh.colour_w[i], list(COLOURS)),
                    "categories": _top(sh.category_w[i], [">".join(c.path) for c in CATEGORIES]),
                    "attributes": sh.attr_pref(i),
                    "price_level": round(float(sh.price_level[i]), 4),
                    "cadence_days": {
                        ">".join(c.path): round(float(sh.cadence_days[i, k]), 2)
                        for k, c in enumerate(CATEGORIES)
                        if sh.category_w[i, k] >= PURCHASE_INTEREST
                    },
                    "reseller": bool(sh.reseller[i]),
                    "resell_delay_days": round(float(sh.resell_delay_days[i]), 2),
                    "consent": {ch: bool(sh.consent[i, j]) for j, ch in enumerate(CHANNELS)},
                    "preferred_channel": sh.preferred_channel[i],
                    "timezone": ZONES[sh.zone[i]][0],
                    "contact_per_week": float(sh.contact_per_week[i]),
                    "responsiveness": round(float(sh.responsiveness[i]), 4),
                }
            )
        return {
            "config": {
                "seed": cfg.seed,
                "n_shoppers": cfg.n_shoppers,
                "days": cfg.days,
                "start": cfg.start.isoformat(),
            },
            "shoppers": people,
        }

    def write_truth(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.truth(), indent=1, ensure_ascii=False))


def load_truth(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(path).read_text())
    return data


def _top(weights: F, names: list[str], n: int = 5) -> dict[str, float]:
    idx = np.argsort(-weights)[:n]
    return {names[j]: round(float(weights[j]), 4) for j in idx if weights[j] >= 0.01}


PURCHASE_INTEREST = 0.08  # categories a shopper buys in regularly


def _pick(
    rng: np.random.Generator,
    sh: Shoppers,
    cat: Catalog,
    who: I,
    category: I,
    *,
    noise: float,
    sized: bool,
) -> I:
    """For each (shopper, category) row, a product chosen by taste (Gumbel-max)."""
    out = np.full(len(who), -1, dtype=np.int64)
    for k in range(len(CATEGORIES)):
        rows = np.nonzero(category == k)[0]
        cands = np.nonzero(cat.category == k)[0]
        if len(rows) == 0 or len(cands) == 0:
            continue
        s = np.repeat(who[rows], len(cands))
        p = np.tile(cands, len(rows))
        score = (log_fit(sh, cat, s, p) + 0.5 * np.log(cat.popularity[p])).reshape(
            len(rows), len(cands)
        )
        if sized:
            ok = _has_size(sh, cat, who[rows], cands)
            score = np.where(ok, score, -np.inf)
        score = score + noise * rng.gumbel(size=score.shape)
        best = np.argmax(score, axis=1)
        chosen = cands[best]
        chosen[~np.isfinite(score[np.arange(len(rows)), best])] = -1
        out[rows] = chosen
    return out


def _size_of(sh: Shoppers, cat: Catalog, s: I, p: I) -> list[str]:
    kinds = [CATEGORIES[c].sizing for c in cat.category[p]]
    return [
        sh.shoe_size[i] if k == "shoe" else sh.apparel_size[i] if k == "apparel" else "one"
        for i, k in zip(s, kinds, strict=True)
    ]


def _has_size(sh: Shoppers, cat: Catalog, who: I, cands: I) -> Any:
    """(len(who), len(cands)) bool: the product is stocked in the shopper's size."""
    sizes = {s for c in cands for s in cat.sizes[c]}
    table = {
        sz: np.array(
            [sz in cat.sizes[c] and cat.stock[c][cat.sizes[c].index(sz)] > 0 for c in cands]
        )
        for sz in sizes
    }
    kind = CATEGORIES[cat.category[cands[0]]].sizing
    mine = [
        sh.shoe_size[i] if kind == "shoe" else sh.apparel_size[i] if kind == "apparel" else "one"
        for i in who
    ]
    empty = np.zeros(len(cands), dtype=bool)
    return np.stack([table.get(m, empty) for m in mine])


def _local_evening(rng: np.random.Generator, sh: Shoppers, who: I, day: I, start_us: int) -> I:
    """Microseconds (UTC) of a moment in the shopper's local day, mostly in the evening."""
    offsets = np.array(
        [
            ZoneInfo(z[0]).utcoffset(datetime(2026, 1, 15)).total_seconds() / 3600  # type: ignore[union-attr]
            for z in ZONES
        ]
    )
    hour = np.clip(rng.normal(19.0, 3.0, size=len(who)), 7.0, 23.5)
    utc_hours = hour - offsets[sh.zone[who]]
    us: I = (start_us + day * DAY_US + (utc_hours * 3600e6).astype(np.int64)).astype(np.int64)
    return us


def simulate(cfg: SimConfig) -> Simulation:
    rng = np.random.default_rng(cfg.seed)
    cat = build_catalog(cfg, rng)
    sh = build_shoppers(cfg, rng)
    n, days = cfg.n_shoppers, cfg.days
    start_us = to_us(cfg.start)
    end_us = start_us + days * DAY_US
    join_day = np.clip(rng.uniform(-0.5 * days, 0.8 * days, size=n), 0, None).astype(np.int64)

    # -- purchases: a renewal process per (shopper, category of interest) ------------------
    ps, pk = np.nonzero(sh.category_w >= PURCHASE_INTEREST)
    cad = sh.cadence_days[ps, pk]
    m = int(min(80, np.ceil(days / max(cad.min(), 1.0)) + 2))
    gaps = rng.gamma(4.0, cad[:, None] / 4.0, size=(len(ps), m))
    gaps[:, 0] = rng.uniform(0, cad)
    t_days = join_day[ps][:, None] + np.cumsum(gaps, axis=1)
    row, col = np.nonzero(t_days < days)
    buyer, bcat = ps[row], pk[row]
    bday = np.floor(t_days[row, col]).astype(np.int64)
    product = _pick(rng, sh, cat, buyer, bcat, noise=1.0, sized=True)
    keep = product >= 0
    buyer, bcat, bday, product = buyer[keep], bcat[keep], bday[keep], product[keep]
    bts = _local_evening(rng, sh, buyer, bday, start_us)
    order = np.argsort(bts, kind="stable")
    buyer, bcat, bts, product = buyer[order], bcat[order], bts[order], product[order]
    n_buy = len(buyer)
    qty = np.where(
        np.array([CATEGORIES[k].sizing == "one" for k in bcat]) & (rng.random(n_buy) < 0.3),
        rng.integers(2, 4, size=n_buy),
        1,
    )
    size = _size_of(sh, cat, buyer, product)
    order_ids = [f"o{i:06d}" for i in range(n_buy)]
    session = np.array([f"s{i:06d}" for i in range(n_buy)], dtype=object)

    # identity: anonymous-first shoppers are anonymous until their first purchase
    first_buy = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first_buy, buyer, bts - 3 * MIN_US)
    known_from = np.where(
        sh.anonymous_first, first_buy, start_us + join_day * DAY_US + 9 * 3600 * 10**6
    )
    tables: dict[str, list[pl.DataFrame]] = {}
    id_series = pl.Series(sh.ids, dtype=pl.String)

    def add(typ: str, who: I, ts: I, **cols: Any) -> None:
        who = np.asarray(who, dtype=np.int64)
        ts = np.asarray(ts, dtype=np.int64)
        extra = {
            k: (v.tolist() if isinstance(v, np.ndarray) and v.dtype == object else v)
            for k, v in cols.items()
        }
        df = pl.DataFrame({"who": who, "ts_us": ts, "anon": ts < known_from[who], **extra})
        cid = id_series.gather(df.get_column("who"))
        df = df.with_columns(
            pl.when(pl.col("anon")).then(None).otherwise(cid).alias("customer_id"),
            pl.when(pl.col("anon"))
            .then(pl.lit("dev-") + cid)
            .otherwise(None)
            .alias("anonymous_id"),
        ).drop("anon")
        tables.setdefault(typ, []).append(df)

    pid = np.array(cat.ids, dtype=object)
    variant = np.char.add(np.char.add(pid[product].astype(str), "-"), np.array(size, dtype=str))
    price = cat.price[product]
    # the purchase session: search, views, cart, checkout, purchase
    searched = rng.random(n_buy) < 0.5
    brand_names = np.array([b[0].lower() for b in BRANDS], dtype=object)
    leaf = np.array([c.path[-1] for c in CATEGORIES], dtype=object)
    query = np.where(
        rng.random(n_buy) < 0.5,
        brand_names[cat.brand[product]] + " " + leaf[bcat],
        leaf[bcat] + " " + np.array(size, dtype=object),
    )
    s_start = bts - rng.integers(8, 40, size=n_buy) * MIN_US
    add(
        "search",
        buyer[searched],
        s_start[searched],
        session_id=session[searched],
        query=query[searched],
        result_count=rng.integers(3, 60, size=int(searched.sum())),
    )
    n_views = 1 + rng.poisson(3, size=n_buy)
    v_of = np.repeat(np.arange(n_buy), n_views)
    v_prod = _pick(rng, sh, cat, buyer[v_of], bcat[v_of], noise=1.2, sized=False)
    last = np.cumsum(n_views) - 1
    v_prod[last] = product  # they look at what they buy
    v_step = np.arange(len(v_of)) - np.repeat(np.cumsum(n_views) - n_views, n_views)
    v_ts = s_start[v_of] + (v_step + 1) * MIN_US
    v_var = variant[v_of].astype(object)
    v_var[~np.isin(np.arange(len(v_of)), last)] = None  # a variant only for what they buy
    add(
        "view",
        buyer[v_of],
        v_ts,
        session_id=session[v_of],
        product_id=pid[v_prod],
        variant_id=pl.Series(v_var.tolist(), dtype=pl.String),
    )
    add(
        "add_to_cart",
        buyer,
        bts - 2 * MIN_US,
        session_id=session,
        product_id=pid[product],
        variant_id=variant,
        quantity=qty,
        unit_price=price,
    )
    add(
        "checkout",
        buyer,
        bts - MIN_US,
        session_id=session,
        order_id=np.array(order_ids),
        value=np.round(price * qty, 2),
    )
    add(
        "purchase",
        buyer,
        bts,
        session_id=session,
        order_id=np.array(order_ids),
        currency=cfg.currency,
        lines=_lines(pid[product], variant, qty, price),
    )

    # -- browse sessions without a purchase -------------------------------------------------
    months = np.maximum(days - join_day, 0) / 30.0
    n_sess = rng.poisson(sh.activity * months)
    b_who = np.repeat(np.arange(n), n_sess)
    b_day = (join_day[b_who] + rng.random(len(b_who)) * (days - join_day[b_who])).astype(np.int64)
    b_cat = _sample_rows(rng, sh.category_w[b_who])
    b_ts = _local_evening(rng, sh, b_who, b_day, start_us)
    b_sess = np.array([f"b{i:06d}" for i in range(len(b_who))], dtype=object)
    nv = 1 + rng.poisson(2, size=len(b_who))
    bv_of = np.repeat(np.arange(len(b_who)), nv)
    bv_prod = _pick(rng, sh, cat, b_who[bv_of], b_cat[bv_of], noise=1.2, sized=False)
    bv_step = np.arange(len(bv_of)) - np.repeat(np.cumsum(nv) - nv, nv)
    add(
        "view",
        b_who[bv_of],
        b_ts[bv_of] + bv_step * MIN_US,
        session_id=b_sess[bv_of],
        product_id=pid[bv_prod],
        variant_id=pl.Series([None] * len(bv_of), dtype=pl.String),
    )
    abandon = rng.random(len(b_who)) < 0.25
    a_prod = bv_prod[np.cumsum(nv) - 1][abandon]
    a_who = b_who[abandon]
    a_size = _size_of(sh, cat, a_who, a_prod)
    a_var = np.char.add(np.char.add(pid[a_prod].astype(str), "-"), np.array(a_size, dtype=str))
    add(
        "add_to_cart",
        a_who,
        b_ts[abandon] + (nv[abandon] + 1) * MIN_US,
        session_id=b_sess[abandon],
        product_id=pid[a_prod],
        variant_id=a_var,
        quantity=np.ones(len(a_who), dtype=np.int64),
        unit_price=cat.price[a_prod],
    )
    b_search = rng.random(len(b_who)) < 0.3
    add(
        "search",
        b_who[b_search],
        b_ts[b_search] - MIN_US,
        session_id=b_sess[b_search],
        query=leaf[b_cat[b_search]],
        result_count=rng.integers(0, 80, size=int(b_search.sum())),
    )

    # -- returns ---------------------------------------------------------------------------
    ret = rng.random(n_buy) < cfg.return_rate
    r_ts = (
        bts + rng.integers(3, 20, size=n_buy) * DAY_US + rng.integers(0, 600, size=n_buy) * MIN_US
    )
    ret &= r_ts < end_us
    add(
        "return",
        buyer[ret],
        r_ts[ret],
        order_id=np.array(order_ids)[ret],
        currency=cfg.currency,
        lines=_lines(pid[product][ret], variant[ret], qty[ret], price[ret]),
        reason=pl.Series(["does not fit"] * int(ret.sum()), dtype=pl.String),
    )

    # -- resale: listings and sales ----------------------------------------------------------
    resellable = np.array([c.resellable for c in CATEGORIES])[bcat]
    resell = sh.reseller[buyer] & resellable & ~ret & (rng.random(n_buy) < 0.6)
    l_ts = bts + (sh.resell_delay_days[buyer] * rng.lognormal(0, 0.3, size=n_buy) * DAY_US).astype(
        np.int64
    )
    resell &= l_ts < end_us
    li = np.nonzero(resell)[0]
    lid = np.array([f"L{j:06d}" for j in range(len(li))], dtype=object)
    l_price = np.round(price[li] * rng.uniform(0.4, 0.7, size=len(li)), 0)
    condition = rng.choice(np.array(["like_new", "good", "fair"], dtype=object), size=len(li))
    add(
        "list_item",
        buyer[li],
        l_ts[li],
        listing_id=lid,
        product_id=lid,
        price=l_price,
        currency=cfg.currency,
        condition=condition,
        bought_order_id=np.array(order_ids)[li],
    )
    s_ts = l_ts[li] + rng.integers(1, 20, size=len(li)) * DAY_US
    sold = (s_ts < end_us) & (rng.random(len(li)) < 0.6)
    same_dept = [np.nonzero(sh.dept_code == d)[0] for d in (0, 1)]
    buyers_of = np.array(
        [
            same_dept[sh.dept_code[s]][rng.integers(len(same_dept[sh.dept_code[s]]))]
            for s in buyer[li][sold]
        ],
        dtype=np.int64,
    )
    buyers_of = np.where(buyers_of == buyer[li][sold], (buyers_of + 1) % n, buyers_of)
    add(
        "sale",
        buyer[li][sold],
        s_ts[sold],
        listing_id=lid[sold],
        product_id=lid[sold],
        price=l_price[sold],
        currency=cfg.currency,
        buyer_id=np.array(sh.ids, dtype=object)[buyers_of],
    )
    l_var = np.char.add(lid.astype(str), "-1")
    # a buyer of a listing is signed in when they buy it
    np.minimum.at(known_from, buyers_of, s_ts[sold] - 3 * MIN_US)
    add(
        "purchase",
        buyers_of,
        s_ts[sold] + 1,
        order_id=np.char.add("o-", lid[sold].astype(str)),
        currency=cfg.currency,
        lines=_lines(
            lid[sold], l_var[sold], np.ones(int(sold.sum()), dtype=np.int64), l_price[sold]
        ),
    )

    # -- identity, consent, answers -----------------------------------------------------------
    active = np.zeros(n, dtype=bool)
    for parts in tables.values():
        for df in parts:
            active[df.get_column("who").to_numpy()] = True
    ident = np.nonzero(active & (known_from < end_us))[0]
    i_ts = known_from[ident]
    zone = sh.zone[ident]
    traits = pl.DataFrame(
        {
            "email": [f"{sh.ids[i]}@example.com" for i in ident],
            "phone": pl.Series([None] * len(ident), dtype=pl.String),
            "first_name": [sh.first_name[i] for i in ident],
            "last_name": pl.Series([None] * len(ident), dtype=pl.String),
            "timezone": [ZONES[z][0] for z in zone],
            "locale": [ZONES[z][2] for z in zone],
            "location": pl.DataFrame(
                {
                    "country": [ZONES[z][1] for z in zone],
                    "region": pl.Series([None] * len(ident), dtype=pl.String),
                    "city": pl.Series([None] * len(ident), dtype=pl.String),
                }
            ).to_struct(),
            "preferred_channel": pl.Series(
                [sh.preferred_channel[i] for i in ident], dtype=pl.String
            ),
        }
    ).to_struct()
    ident_df = pl.DataFrame(
        {
            "who": ident,
            "ts_us": i_ts,
            "customer_id": pl.Series([sh.ids[i] for i in ident], dtype=pl.String),
            "anonymous_id": pl.Series(
                [f"dev-{sh.ids[i]}" if sh.anonymous_first[i] else None for i in ident],
                dtype=pl.String,
            ),
            "traits": traits,
        }
    )
    tables.setdefault("identify", []).append(ident_df)
    for j, ch in enumerate(CHANNELS):
        g = ident[sh.consent[ident, j]]
        add("consent", g, known_from[g] + 1_000_000, channel=ch, granted=True, source="signup")
    sms = ident[sh.consent[ident, 1] & (rng.random(len(ident)) < 0.15)]
    revoke = known_from[sms] + rng.integers(10, 200, size=len(sms)) * DAY_US
    add(
        "consent",
        sms[revoke < end_us],
        revoke[revoke < end_us],
        channel="sms",
        granted=False,
        source="reply STOP",
    )
    ans = ident[rng.random(len(ident)) < 0.15]
    a_ts = known_from[ans] + DAY_US
    ok = a_ts < end_us
    add(
        "answer",
        ans[ok],
        a_ts[ok],
        question_id="shoe_size",
        answer=np.array([sh.shoe_size[i] for i in ans[ok]], dtype=object),
    )

    events, items = _assemble(tables)
    products = _products(cfg, cat, lid, li, product, l_price, condition, buyer, size, sold)
    return Simulation(cfg, cat, sh, products, events, items)


def _sample_rows(rng: np.random.Generator, weights: F) -> I:
    """One category per row of ``weights`` (rows sum to 1), by inverse CDF."""
    cdf = np.cumsum(weights, axis=1)
    u = rng.random((len(weights), 1)) * cdf[:, -1:]
    out: I = (u > cdf).sum(axis=1).astype(np.int64)
    return out


def _lines(product: Any, variant: Any, qty: Any, price: Any) -> pl.Series:
    return (
        pl.DataFrame(
            {
                "product_id": pl.Series(product, dtype=pl.String),
                "variant_id": pl.Series(variant, dtype=pl.String),
                "quantity": pl.Series(qty, dtype=pl.Int64),
                "unit_price": pl.Series(price, dtype=pl.Float64),
            }
        )
        .select(pl.concat_list(pl.struct("product_id", "variant_id", "quantity", "unit_price")))
        .to_series()
    )


def _assemble(tables: dict[str, list[pl.DataFrame]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    ev_parts, it_parts = [], []
    for typ in sorted(tables):
        df = pl.concat(tables[typ], how="diagonal_relaxed").sort(
            "ts_us", "who", maintain_order=True
        )
        df = df.with_columns(
            pl.concat_str(pl.lit(f"sim:{typ}:"), pl.int_range(pl.len()).cast(pl.String)).alias(
                "event_id"
            ),
            pl.lit(typ).alias("type"),
        )
        df = df.with_columns(payloads(df, typ).alias("payload"))
        ev_parts.append(frames.conform(df, frames.EVENTS_SCHEMA))
        if typ in ("view", "add_to_cart"):
            it_parts.append(
                df.select(
                    "event_id",
                    pl.lit(0, pl.Int32).alias("line"),
                    "product_id",
                    "variant_id",
                    pl.col("quantity")
                    if "quantity" in df.columns
                    else pl.lit(1, pl.Int64).alias("quantity"),
                    pl.col("unit_price")
                    if "unit_price" in df.columns
                    else pl.lit(None, pl.Float64).alias("unit_price"),
                )
            )
        elif typ in ("purchase", "return"):
            it_parts.append(
                df.select("event_id", "lines")
                .explode("lines")
                .unnest("lines")
                .with_columns(pl.int_range(pl.len(), dtype=pl.Int32).over("event_id").alias("line"))
            )
        elif typ in ("list_item", "sale"):
            it_parts.append(
                df.select(
                    "event_id",
                    pl.lit(0, pl.Int32).alias("line"),
                    "product_id",
                    pl.lit(None, pl.String).alias("variant_id"),
                    pl.lit(1, pl.Int64).alias("quantity"),
                    pl.col("price").alias("unit_price"),
                )
            )
    events = pl.concat(ev_parts).sort("ts_us", "event_id")
    items = pl.concat([frames.conform(p, frames.ITEMS_SCHEMA) for p in it_parts])
    return events, items


def _products(
    cfg: SimConfig,
    cat: Catalog,
    lid: Any,
    li: I,
    product: I,
    l_price: F,
    condition: Any,
    buyer: I,
    size: list[str],
    sold: Any,
) -> list[Product]:
    out = []
    for i, p in enumerate(cat.ids):  # the catalog: one object per product
        c = CATEGORIES[cat.category[i]]
        out.append(
            Product(
                product_id=p,
                title=f"{BRANDS[cat.brand[i]][0]} {c.path[-1]} {COLOURS[cat.colour[i]]}",
                brand=BRANDS[cat.brand[i]][0],
                category=list(c.path),
                department=cat.department[i],
                price=float(cat.price[i]),
                currency=cfg.currency,
                colour=COLOURS[cat.colour[i]],
                images=[f"https://img.concierge.example/{p}.jpg"],
                attributes=cat.attributes[i],
                variants=[
                    {"variant_id": f"{p}-{s}", "size": s, "stock": cat.stock[i][j]}
                    for j, s in enumerate(cat.sizes[i])
                ],
            )
        )
    sold_set = set(np.nonzero(sold)[0].tolist())
    for j, (listing, src) in enumerate(zip(lid, li, strict=True)):
        orig = int(product[src])
        c = CATEGORIES[cat.category[orig]]
        out.append(
            Product(
                product_id=str(listing),
                title=f"Pre-owned {BRANDS[cat.brand[orig]][0]} {c.path[-1]}",
                brand=BRANDS[cat.brand[orig]][0],
                category=list(c.path),
                department=cat.department[orig],
                price=float(l_price[j]),
                currency=cfg.currency,
                colour=COLOURS[cat.colour[orig]],
                attributes=cat.attributes[orig],
                variants=[
                    {
                        "variant_id": f"{listing}-1",
                        "size": size[src],
                        "stock": 0 if j in sold_set else 1,
                    }
                ],
                seller_id=f"c{int(buyer[src]):05d}",
                condition=str(condition[j]),
                one_of_a_kind=True,
            )
        )
    return out


__all__ = ["ATTR_NAMES", "Simulation", "load_truth", "simulate"]
