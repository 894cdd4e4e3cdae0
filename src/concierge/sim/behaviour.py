"""What the shoppers do over the simulated period, as columns of typed values per event type.

All of it is vectorized with NumPy; the loops run over categories (choices are made within a
category) and over the steps of a renewal process, never over shoppers or events.

* **Purchases** are a renewal process per (shopper, category they buy): the first falls
  uniformly within one cadence of joining, then gaps are Gamma distributed with the shopper's
  regularity as shape around their personal cadence, until they churn or the period ends.
* **Research visits**: before a purchase, up to two visits in the days before browse the same
  category, so what people look at predicts what they buy.
* **Browsing visits** without a purchase: Poisson by the shopper's browsing rate, mostly in the
  categories they like, sometimes elsewhere; an eighth leave something in the cart (abandonment),
  a third of those take it out again.
* **Choices.** For each category, each shopper has a *consideration set* of 20 products: a
  Gumbel top-k over :func:`concierge.sim.response.choice_score` among what they can wear. Views
  sample it with a flattened softmax, purchases with the full one; 15% of views follow the crowd
  (popularity) instead. A purchase sometimes adds a second item of the same category.
* **Sessions**: a search (the brand, colour or category of what they then look at) in a third
  to a half of them, views, add to cart, checkout, purchase, about a minute apart at the
  shopper's own pace, starting at a local hour around the shopper's active hour.
* **Identity**: anonymous-first shoppers make a few visits with their device id only; the visit
  with their first login (at the latest their first purchase) begins with an ``identify`` event
  carrying both ids, and consent events for the channels they accept; the others log in on their
  first visit. Some withdraw a consent later; a quarter answer a short preference quiz.
* **After a purchase**: a rare cancellation within hours, or returns of single lines a few days
  later, at the category's return rate times the shopper's own propensity.
* **Marketplace**: resellers list a share of their resellable purchases after their typical
  delay, and things from their wardrobe, as one-of-a-kind listings (new catalog rows). A listing
  sells after an exponential wait to the best-fitting signed-in shopper who can wear it (Gumbel
  max over their choice scores), who buys it in a short visit; the seller gets a ``sale``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import polars as pl

from concierge.sim.response import choice_score, wearable
from concierge.sim.timing import DAY_US, HOUR_US, SECOND_US, OffsetGrid
from concierge.sim.world import (
    BRAND_NAMES,
    CATEGORIES,
    CHANNELS,
    COLOURS,
    CONDITIONS,
    SIZE_SYSTEMS,
    SYSTEM_NAMES,
    ZONE_NAMES,
    ZONES,
    B,
    Catalog,
    F,
    I,
    Shoppers,
    SimConfig,
    with_listings,
)

BROWSE, RESEARCH, PURCHASE = range(3)  # kinds of visit (listing buyers have their own)
CONSIDERED = 20  # size of a consideration set
CROWD_VIEWS = 0.15
VIEW_TEMPERATURE = 0.8  # views sample exp(0.8 * score): broader than purchases
ADDON = 0.15
CART_ABANDON = 0.12
CART_REMOVE = 0.3
CANCEL = 0.01
SALE_WAIT_DAYS = 18.0
UNSOLD = 0.2  # listings nobody wants at any price
STEP_SECONDS = 55  # events of a visit are about a minute apart (times the shopper's pace)
CONSUMABLE = {"Accessories>Socks", "Beauty>Skincare"}
SHOE_SYSTEM = SYSTEM_NAMES.index("shoes")

# a flat table of size labels: system * WIDTH + size index
_WIDTH = max(len(v) for v in SIZE_SYSTEMS.values())
SIZE_LABELS = [
    (SIZE_SYSTEMS[name][i] if i < len(SIZE_SYSTEMS[name]) else "") for name in SYSTEM_NAMES
    for i in range(_WIDTH)
]  # fmt: skip


@dataclass
class Behaviour:
    """Events as typed columns, per event type, before they become JSON.

    Every frame has ``who`` (shopper row), ``ts_us``, ``session`` (-1 outside a visit),
    ``known`` (carries the customer id), ``device`` (carries the device id), and the event's own
    fields under their schema names, already in their final form (ids as strings).
    """

    parts: list[tuple[str, pl.DataFrame]] = field(default_factory=list)
    catalog: Catalog | None = None
    shoppers: Shoppers | None = None
    n_sessions: int = 0

    def add(self, typ: str, df: pl.DataFrame) -> None:
        if df.height:
            self.parts.append((typ, df))


def _sample(cdf: F, rows: I, u: F) -> I:
    """Column drawn for each ``rows[i]`` of row-wise CDFs ``cdf`` (last column 1), by ``u[i]``.

    The rows are laid end to end (row ``r`` spans ``[r, r + 1)``), so one ``searchsorted``
    serves every row at once.
    """
    n_rows, n_cols = cdf.shape
    flat = (cdf + np.arange(n_rows)[:, None]).ravel()
    pos = np.searchsorted(flat, rows + u, side="right")
    out: I = np.minimum(pos - rows * n_cols, n_cols - 1).astype(np.int64)
    return out


def _cdf(weights: F) -> tuple[F, B]:
    """Row-wise CDFs of non-negative weights, and which rows had any weight at all."""
    total = weights.sum(axis=1, keepdims=True)
    some = total[:, 0] > 0
    cdf = np.cumsum(weights, axis=1) / np.where(total > 0, total, 1.0)
    cdf[:, -1] = 1.0
    return cdf, some


def _within(group: I) -> I:
    """Position of each row within its run of equal values of ``group`` (sorted)."""
    n = len(group)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.r_[0, np.nonzero(group[1:] != group[:-1])[0] + 1]
    lengths = np.diff(np.r_[starts, n])
    out: I = np.arange(n) - np.repeat(starts, lengths)
    return out


def _ids(values: list[str], idx: I) -> pl.Series:
    return pl.Series(values, dtype=pl.String).gather(pl.Series(idx, dtype=pl.Int64))


class _Run:
    """One simulation run; methods are its stages, in order."""

    def __init__(
        self, cfg: SimConfig, catalog: Catalog, shoppers: Shoppers, rng: np.random.Generator
    ) -> None:
        self.cfg, self.cat, self.sh, self.rng = cfg, catalog, shoppers, rng
        from concierge.clock import to_us

        self.start_us = to_us(cfg.start)
        self.end_us = self.start_us + cfg.days * DAY_US
        self.grid = OffsetGrid(ZONE_NAMES, self.start_us, self.end_us)
        stop = np.minimum(shoppers.churn_day, cfg.days)
        self.stop_day = stop
        self.stop_us = self.start_us + np.round(stop * DAY_US).astype(np.int64)
        self.out = Behaviour()
        self.n_regular = len(catalog)

    # -- when ----------------------------------------------------------------------------

    def _starts(self, who: I, day: I) -> I:
        """A moment on local day ``day`` (from the start), near the shopper's active hour."""
        rng, n = self.rng, len(who)
        usual = self.sh.active_hour[who] + rng.normal(0.0, 1.2, n)
        hour = np.where(rng.random(n) < 0.7, usual, rng.uniform(8.0, 23.0, n))
        seconds = np.round(np.clip(hour, 7.0, 23.75) * 3600).astype(np.int64)
        local = self.start_us + day * DAY_US + seconds * SECOND_US
        return self.grid.to_utc(self.sh.zone[who], local)

    def _daytime(self, who: I, ts: I) -> I:
        """A moment at the shopper's usual hours, no earlier than ``ts`` (that local day or
        the next): things done between visits (listing, answering) happen while awake too."""
        local = ts + self.grid.offset_us(self.sh.zone[who], ts)
        day = (local - self.start_us) // DAY_US
        first = self._starts(who, day)
        out: I = np.where(first >= ts, first, self._starts(who, day + 1))
        return out

    def _step_ts(self, start: I, pace: F, step: I) -> I:
        jitter = self.rng.integers(0, 45, size=len(step))
        seconds = np.where(step > 0, np.round(pace * (step * STEP_SECONDS + jitter)), 0)
        out: I = start + seconds.astype(np.int64) * SECOND_US
        return out

    # -- the plan of visits --------------------------------------------------------------

    def plan(self) -> None:
        sh, rng = self.sh, self.rng
        n = len(sh)
        ps, pk = np.nonzero(np.isfinite(sh.cadence_days))
        cad = sh.cadence_days[ps, pk]
        shape = sh.regularity[ps]
        t = sh.join_day[ps] + rng.random(len(ps)) * cad
        occ: list[tuple[I, I, F]] = []
        live = np.arange(len(ps))
        while live.size:
            live = live[t[live] < self.stop_day[ps[live]]]
            occ.append((ps[live], pk[live], t[live].copy()))
            t[live] += rng.gamma(shape[live], cad[live] / shape[live])
        o_s = np.concatenate([o[0] for o in occ])
        o_k = np.concatenate([o[1] for o in occ])
        o_t = np.concatenate([o[2] for o in occ])

        n_res = rng.binomial(2, 0.3, size=len(o_s))
        r_of = np.repeat(np.arange(len(o_s)), n_res)
        r_t = o_t[r_of] - rng.uniform(0.2, 6.0, size=len(r_of))
        r_ok = r_t >= sh.join_day[o_s[r_of]]
        r_s, r_k, r_t = o_s[r_of][r_ok], o_k[r_of][r_ok], r_t[r_ok]

        weeks = np.maximum(self.stop_day - sh.join_day, 0.0) / 7.0
        n_browse = rng.poisson(sh.browse_per_week * weeks)
        b_s = np.repeat(np.arange(n), n_browse)
        b_t = sh.join_day[b_s] + rng.random(len(b_s)) * (self.stop_day - sh.join_day)[b_s]
        k_pop = np.array([c.popularity for c in CATEGORIES])
        explore = (sh.category_w > 0) * k_pop[None, :]
        mix = 0.85 * sh.category_w + 0.15 * explore / explore.sum(axis=1, keepdims=True)
        cdf, _ = _cdf(mix)
        b_k = _sample(cdf, b_s, rng.random(len(b_s)))

        who = np.concatenate([b_s, r_s, o_s]).astype(np.int64)
        cat = np.concatenate([b_k, r_k, o_k]).astype(np.int64)
        kind = np.concatenate(
            [np.full(len(b_s), BROWSE), np.full(len(r_s), RESEARCH), np.full(len(o_s), PURCHASE)]
        ).astype(np.int64)
        day = np.floor(np.concatenate([b_t, r_t, o_t])).astype(np.int64)
        start = self._starts(who, day)
        keep = (start >= self.start_us) & (start < self.end_us)
        who, cat, kind, start = who[keep], cat[keep], kind[keep], start[keep]
        order = np.lexsort((cat, kind, who, start))
        self.s_who, self.s_cat, self.s_kind = who[order], cat[order], kind[order]
        self.s_start = start[order]
        m = len(self.s_who)
        self.s_pace = np.clip(rng.lognormal(0.0, 0.4, size=m), 0.3, 3.0)
        self.s_search = rng.random(m) < np.where(self.s_kind == PURCHASE, 0.55, 0.35)
        self.s_views = np.where(
            self.s_kind == PURCHASE,
            rng.poisson(2.0, m),
            1 + rng.poisson(np.where(self.s_kind == RESEARCH, 2.0, 2.5), m),
        ).astype(np.int64)
        self._identity()

    def _identity(self) -> None:
        """Which visits are anonymous, and the visit where each shopper first logs in."""
        sh, n = self.sh, len(self.sh)
        by_who = np.lexsort((np.arange(len(self.s_who)), self.s_who))
        w = self.s_who[by_who]
        rank = np.empty(len(w), dtype=np.int64)
        rank[by_who] = _within(w)
        big = np.iinfo(np.int64).max // 4
        first_buy = np.full(n, big)
        buys = self.s_kind == PURCHASE
        np.minimum.at(first_buy, self.s_who[buys], rank[buys])
        login = np.minimum(sh.anonymous_visits, first_buy)
        login = np.where(sh.never_identify, big, login)
        self.s_anon = rank < login[self.s_who]
        self.s_login = rank == login[self.s_who]
        self.identify_us = np.full(n, big, dtype=np.int64)
        self.identify_us[self.s_who[self.s_login]] = self.s_start[self.s_login]

    # -- choices, category by category --------------------------------------------------

    def choose(self) -> None:
        sh, cat, rng = self.sh, self.cat, self.rng
        m = len(self.s_who)
        v_sess = np.repeat(np.arange(m), self.s_views)
        v_step = 2 + _within(v_sess)
        v_prod = np.full(len(v_sess), -1, dtype=np.int64)
        chosen = np.full(m, -1, dtype=np.int64)
        addon = np.full(m, -1, dtype=np.int64)
        # wardrobe listings: how many per (reseller, resellable category)
        resellable = np.array([c.resellable for c in CATEGORIES])
        years = np.maximum(self.stop_day - np.maximum(sh.join_day, 0), 0) / 365.0
        lam = sh.wardrobe_per_year[:, None] * years[:, None] * sh.category_w * resellable[None, :]
        lam[self.identify_us >= self.end_us] = 0.0
        n_ward = rng.poisson(lam)
        w_s, w_k = np.nonzero(n_ward)
        w_s, w_k = np.repeat(w_s, n_ward[w_s, w_k]), np.repeat(w_k, n_ward[w_s, w_k])
        w_prod = np.full(len(w_s), -1, dtype=np.int64)
        v_cat = self.s_cat[v_sess]
        buy = self.s_kind == PURCHASE
        for k in range(len(CATEGORIES)):
            views = np.nonzero(v_cat == k)[0]
            sess = np.nonzero(buy & (self.s_cat == k))[0]
            ward = np.nonzero(w_k == k)[0]
            people = np.unique(
                np.concatenate([self.s_who[v_sess[views]], self.s_who[sess], w_s[ward]])
            )
            products = np.nonzero((cat.category == k) & (np.arange(len(cat)) < self.n_regular))[0]
            if people.size == 0 or products.size == 0:
                continue
            top, view_cdf, buy_cdf, fits = self._consider(people, products)
            crowd_w = cat.popularity[products]
            crowd_cdf = np.cumsum(crowd_w) / crowd_w.sum()
            crowd_cdf[-1] = 1.0
            # views
            local = np.searchsorted(people, self.s_who[v_sess[views]])
            by_crowd = (rng.random(len(views)) < CROWD_VIEWS) | ~fits[local]
            col = _sample(view_cdf, local, rng.random(len(views)))
            crowd_pick = np.minimum(
                np.searchsorted(crowd_cdf, rng.random(len(views)), side="right"), len(products) - 1
            )
            v_prod[views] = np.where(by_crowd, products[crowd_pick], products[top[local, col]])
            # purchases
            local = np.searchsorted(people, self.s_who[sess])
            first = products[top[local, _sample(buy_cdf, local, rng.random(len(sess)))]]
            second = products[top[local, _sample(buy_cdf, local, rng.random(len(sess)))]]
            chosen[sess] = np.where(fits[local], first, -1)
            extra = fits[local] & (second != first) & (rng.random(len(sess)) < ADDON)
            addon[sess] = np.where(extra, second, -1)
            # wardrobe templates
            local = np.searchsorted(people, w_s[ward])
            pick = products[top[local, _sample(buy_cdf, local, rng.random(len(ward)))]]
            w_prod[ward] = np.where(fits[local], pick, -1)
        self.v_sess, self.v_step, self.v_prod = v_sess, v_step, v_prod
        self.chosen, self.addon = chosen, addon
        keep = w_prod >= 0
        self.w_s, self.w_prod = w_s[keep], w_prod[keep]

    def _consider(self, people: I, products: I) -> tuple[I, F, F, B]:
        """Consideration sets of ``people`` among ``products`` (one category), and their CDFs."""
        rng = self.rng
        size = min(CONSIDERED, len(products))
        tops, views, buys, fits = [], [], [], []
        for lo in range(0, len(people), 4096):  # bounded memory: 4096 x products at a time
            s = people[lo : lo + 4096]
            score = choice_score(self.sh, self.cat, s[:, None], products[None, :])
            score = np.where(
                wearable(self.sh, self.cat, s[:, None], products[None, :]), score, -np.inf
            )
            noisy = score + rng.gumbel(size=score.shape)
            top = np.argpartition(-noisy, size - 1, axis=1)[:, :size]
            u = np.take_along_axis(score, top, axis=1)
            ok = np.isfinite(u)
            best = np.where(ok, u, -np.inf).max(axis=1, keepdims=True)
            best = np.where(np.isfinite(best), best, 0.0)
            view_cdf, some = _cdf(np.where(ok, np.exp(VIEW_TEMPERATURE * (u - best)), 0.0))
            buy_cdf, _ = _cdf(np.where(ok, np.exp(u - best), 0.0))
            tops.append(top)
            views.append(view_cdf)
            buys.append(buy_cdf)
            fits.append(some)
        return np.vstack(tops), np.vstack(views), np.vstack(buys), np.concatenate(fits)

    # -- orders, returns -------------------------------------------------------------------

    def orders(self) -> None:
        """Order lines of the purchase visits that complete within the period."""
        rng, cat = self.rng, self.cat
        sess = np.nonzero(self.chosen >= 0)[0]
        nv = self.s_views[sess]
        has_addon = self.addon[sess] >= 0
        self.o_sess = sess
        self.o_ts = self._step_ts(self.s_start[sess], self.s_pace[sess], 7 + nv)
        keep = self.o_ts < self.end_us
        self.o_valid = keep
        self.o_has_addon = has_addon
        # lines: main then add-on
        l_order = np.concatenate([np.arange(len(sess)), np.nonzero(has_addon)[0]])
        l_line = np.concatenate([np.zeros(len(sess), int), np.ones(int(has_addon.sum()), int)])
        l_prod = np.concatenate([self.chosen[sess], self.addon[sess][has_addon]])
        order = np.lexsort((l_line, l_order))
        l_order, l_line, l_prod = l_order[order], l_line[order], l_prod[order]
        names = np.array([c.name for c in CATEGORIES], dtype=object)
        consumable = np.isin(names[cat.category[l_prod]], list(CONSUMABLE))
        qty = np.where(
            consumable & (rng.random(len(l_prod)) < 0.35), rng.integers(2, 4, len(l_prod)), 1
        )
        self.l_order, self.l_line, self.l_prod = l_order, l_line, l_prod
        self.l_qty = qty.astype(np.int64)
        self.l_price = cat.price[l_prod]
        who = self.s_who[sess][l_order]
        self.l_size = self.sh.size_of(who, cat.system[l_prod])

    def variant_ids(self, products: I, size: I) -> pl.Series:
        system = self.cat.system[products]
        label = np.where(system >= 0, system * _WIDTH + np.maximum(size, 0), -1)
        labels = pl.Series([*SIZE_LABELS, "os"], dtype=pl.String)
        suffix = labels.gather(pl.Series(np.where(label >= 0, label, len(SIZE_LABELS))))
        return _ids(self.cat.ids, products) + "-" + suffix

    def order_ids(self) -> None:
        """Number the orders (within the period) by time: ``o0000001``..."""
        valid = np.nonzero(self.o_valid)[0]
        by_time = valid[np.lexsort((self.s_who[self.o_sess[valid]], self.o_ts[valid]))]
        number = np.full(len(self.o_sess), -1, dtype=np.int64)
        number[by_time] = np.arange(1, len(by_time) + 1)
        self.o_number = number
        self.n_orders = len(by_time)

    def after_purchase(self) -> None:
        """Cancellations within hours, returns of single lines within weeks."""
        rng, sh, cat = self.rng, self.sh, self.cat
        n = len(self.o_sess)
        who = self.s_who[self.o_sess]
        cancel = self.o_valid & (rng.random(n) < CANCEL)
        c_ts = self.o_ts + rng.integers(5, 180, n) * 60 * SECOND_US
        cancel &= c_ts < np.minimum(self.end_us, self.stop_us[who])
        rate = np.array([c.return_rate for c in CATEGORIES])[cat.category[self.l_prod]]
        rate = np.minimum(0.6, rate * sh.returner[who[self.l_order]])
        back = (rng.random(len(self.l_order)) < rate) & self.o_valid[self.l_order]
        back &= ~cancel[self.l_order]
        r_days = rng.integers(3, 22, n)
        r_ts = self._starts(
            who, np.floor((self.o_ts - self.start_us) / DAY_US).astype(np.int64) + r_days
        )
        back &= r_ts[self.l_order] < self.end_us
        self.cancelled = cancel
        self.c_ts = c_ts
        self.returned = back
        self.r_ts = r_ts

    # -- the marketplace -------------------------------------------------------------------

    def listings(self) -> None:
        """Resold purchases and wardrobe items, as new one-of-a-kind catalog rows."""
        rng, sh, cat = self.rng, self.sh, self.cat
        resellable = np.array([c.resellable for c in CATEGORIES])
        who = self.s_who[self.o_sess][self.l_order]
        ok = self.o_valid[self.l_order] & ~self.returned & ~self.cancelled[self.l_order]
        ok &= resellable[cat.category[self.l_prod]] & (self.l_qty == 1)
        ok &= rng.random(len(ok)) < sh.resell_share[who]
        delay = sh.resell_delay_days[who] * rng.lognormal(0.0, 0.35, len(ok))
        r_ts = self._daytime(
            who, self.o_ts[self.l_order] + np.round(delay * DAY_US).astype(np.int64)
        )
        ok &= r_ts < np.minimum(self.end_us, self.stop_us[who])
        src = np.nonzero(ok)[0]
        # wardrobe items: listed any time after their first login
        w_lo = np.maximum(self.identify_us[self.w_s], self.start_us)
        w_hi = np.minimum(self.end_us, self.stop_us[self.w_s])
        w_ts = self._daytime(
            self.w_s,
            w_lo + (rng.random(len(self.w_s)) * np.maximum(w_hi - w_lo, 0)).astype(np.int64),
        )
        w_ok = w_ts < w_hi
        seller = np.concatenate([who[src], self.w_s[w_ok]])
        source = np.concatenate([self.l_prod[src], self.w_prod[w_ok]])
        listed = np.concatenate([r_ts[src], w_ts[w_ok]])
        size = np.concatenate(
            [self.l_size[src], sh.size_of(self.w_s[w_ok], cat.system[self.w_prod[w_ok]])]
        )
        resold = np.concatenate([np.ones(len(src), bool), np.zeros(int(w_ok.sum()), bool)])
        line = np.concatenate([src, np.full(int(w_ok.sum()), -1)])
        order = np.lexsort((seller, listed))
        seller, source, listed, size, resold, line = (
            a[order] for a in (seller, source, listed, size, resold, line)
        )
        n = len(seller)
        condition = np.where(
            resold,
            rng.choice(np.array([1, 2, 3]), n, p=[0.4, 0.45, 0.15]),
            rng.choice(np.array([1, 2, 3]), n, p=[0.2, 0.5, 0.3]),
        ).astype(np.int64)
        share = np.where(resold, rng.uniform(0.4, 0.75, n), rng.uniform(0.25, 0.6, n))
        price = np.maximum(np.round(cat.price[source] * share), 2.0)
        width = len(cat.ids[0]) - 1
        first = self.n_regular + 1
        ids = [f"p{i:0{width}d}" for i in range(first, first + n)]
        number = np.where(line >= 0, self.o_number[self.l_order[np.maximum(line, 0)]], -1)
        bought = (
            pl.select(
                pl.when(pl.Series(number) >= 0).then(
                    "o" + pl.Series(number).cast(pl.String).str.zfill(7)
                )
            )
            .to_series()
            .to_list()
        )
        none = np.full(n, -1, dtype=np.int64)
        lst = Catalog(
            ids=ids,
            brand=cat.brand[source],
            category=cat.category[source],
            department=cat.department[source],
            colour=cat.colour[source],
            price=price,
            attrs=cat.attrs[source],
            popularity=cat.popularity[source],
            system=cat.system[source],
            size_lo=size,
            size_hi=size.copy(),
            model=cat.model[source],
            seller=seller.astype(np.int64),
            condition=condition,
            source=source.astype(np.int64),
            listed_us=listed.astype(np.int64),
            sold_to=none,
            sold_us=none.copy(),
            bought_order=bought,
        )
        self.cat = with_listings(cat, lst)
        self.n_listings = n

    def sales(self) -> None:
        """Each listing's buyer: the best-fitting signed-in shopper who can wear it, if any."""
        rng, sh = self.rng, self.sh
        cat = self.cat
        rows = np.arange(self.n_regular, len(cat))
        n = len(rows)
        wait = rng.exponential(SALE_WAIT_DAYS, n)
        sale = cat.listed_us[rows] + np.round(wait * DAY_US).astype(np.int64)
        # the buyer's visit falls at their own usual hours; taken as the seller's day here
        sale = self._daytime(cat.seller[rows], sale)
        wanted = (rng.random(n) >= UNSOLD) & (sale < self.end_us - HOUR_US)
        buyer = np.full(n, -1, dtype=np.int64)
        interested = np.isfinite(sh.cadence_days) | (sh.category_w >= 0.05)
        for k in range(len(CATEGORIES)):
            mine = np.nonzero(wanted & (cat.category[rows] == k))[0]
            people = np.nonzero(interested[:, k])[0]
            if mine.size == 0 or people.size == 0:
                continue
            for lo in range(0, len(mine), 256):
                j = mine[lo : lo + 256]
                p = rows[j][:, None]
                s = people[None, :]
                score = choice_score(sh, cat, s, p) + rng.gumbel(size=(len(j), len(people)))
                ok = wearable(sh, cat, s, p) & (s != cat.seller[p])
                ok &= (self.identify_us[s] <= sale[j][:, None]) & (
                    sale[j][:, None] < self.stop_us[s]
                )
                score = np.where(ok, score, -np.inf)
                best = score.argmax(axis=1)
                found = np.isfinite(score[np.arange(len(j)), best])
                buyer[j] = np.where(found, people[best], -1)
        sold = buyer >= 0
        sold_us = np.where(sold, sale, -1)
        self.cat = replace(
            cat,
            sold_to=np.concatenate([cat.sold_to[: self.n_regular], buyer]),
            sold_us=np.concatenate([cat.sold_us[: self.n_regular], sold_us]),
        )
        # the buyer's visit: a search sometimes, view, cart, checkout, purchase
        j = np.nonzero(sold)[0]
        self.m_rows = rows[j]
        self.m_who = buyer[j]
        self.m_start = sale[j]
        self.m_pace = np.clip(rng.lognormal(0.0, 0.3, len(j)), 0.3, 3.0)
        self.m_search = rng.random(len(j)) < 0.3
        self.m_session = self.n_sessions_base + np.arange(len(j))

    # -- events ----------------------------------------------------------------------------

    def emit(self) -> Behaviour:
        self.n_sessions_base = len(self.s_who)
        self.listings()
        self.sales()
        out = self.out
        self._visits(out)
        self._purchases(out)
        self._marketplace(out)
        self._identify(out)
        self._answers(out)
        out.catalog = self.cat
        out.shoppers = self.sh
        out.n_sessions = self.n_sessions_base + len(self.m_who)
        return out

    def _frame(
        self, who: I, ts: I, session: I, *, anon: B | None = None, **cols: object
    ) -> pl.DataFrame:
        known = np.ones(len(who), bool) if anon is None else ~anon
        device = np.zeros(len(who), bool) if anon is None else anon
        return pl.DataFrame(
            {
                "who": pl.Series(who, dtype=pl.Int64),
                "ts_us": pl.Series(ts, dtype=pl.Int64),
                "session": pl.Series(session, dtype=pl.Int64),
                "known": pl.Series(known, dtype=pl.Boolean),
                "device": pl.Series(device, dtype=pl.Boolean),
            }
        ).with_columns(**cols)  # type: ignore[arg-type]

    def _visits(self, out: Behaviour) -> None:
        """Searches, views and carts of every visit (the purchase itself comes later)."""
        rng, cat = self.rng, self.cat
        sess = np.arange(len(self.s_who))
        who, start, pace, anon = self.s_who, self.s_start, self.s_pace, self.s_anon
        # views (sampled), then for purchases: the chosen item, its add-on
        buy = np.nonzero(self.chosen >= 0)[0]
        nv = self.s_views
        add = np.nonzero(self.addon >= 0)[0]
        v_sess = np.concatenate([self.v_sess, buy, add])
        v_step = np.concatenate([self.v_step, 2 + nv[buy], 4 + nv[add]])
        v_prod = np.concatenate([self.v_prod, self.chosen[buy], self.addon[add]])
        # a view's variant: the size they would pick, for what they can wear
        view_ts = self._step_ts(start[v_sess], pace[v_sess], v_step)
        keep = view_ts < self.end_us
        out.add(
            "view",
            self._frame(
                who[v_sess][keep],
                view_ts[keep],
                v_sess[keep],
                anon=anon[v_sess][keep],
                product_id=_ids(cat.ids, v_prod[keep]),
                variant_id=pl.lit(None, pl.String),
            ),
        )
        # searches: about what they then look at first
        first_view = np.full(len(sess), -1, dtype=np.int64)
        firsts = np.concatenate([np.nonzero(self.v_step == 2)[0]])
        first_view[self.v_sess[firsts]] = self.v_prod[firsts]
        no_sampled = (first_view < 0) & (self.chosen >= 0)
        first_view[no_sampled] = self.chosen[no_sampled]
        s = np.nonzero(self.s_search & (first_view >= 0))[0]
        fp = first_view[s]
        how = rng.integers(0, 3, len(s))
        leaf = np.array([c.path[1].lower() for c in CATEGORIES], dtype=object)[cat.category[fp]]
        brand = np.array([b.lower() for b in BRAND_NAMES], dtype=object)[cat.brand[fp]]
        colour = np.array(COLOURS, dtype=object)[cat.colour[fp]]
        query = np.where(
            how == 0, brand + " " + leaf, np.where(how == 1, colour + " " + leaf, leaf)
        )
        regular = np.arange(len(cat)) < self.n_regular
        k_n = np.bincount(cat.category[regular], minlength=len(CATEGORIES))
        kb = np.zeros((len(CATEGORIES), len(BRAND_NAMES)), dtype=np.int64)
        np.add.at(kb, (cat.category[regular], cat.brand[regular]), 1)
        kc = np.zeros((len(CATEGORIES), len(COLOURS)), dtype=np.int64)
        np.add.at(kc, (cat.category[regular], cat.colour[regular]), 1)
        kf = cat.category[fp]
        count = np.where(
            how == 0, kb[kf, cat.brand[fp]], np.where(how == 1, kc[kf, cat.colour[fp]], k_n[kf])
        )
        ts = self._step_ts(start[s], pace[s], np.ones(len(s), dtype=np.int64))
        keep = ts < self.end_us
        out.add(
            "search",
            self._frame(
                who[s][keep],
                ts[keep],
                s[keep],
                anon=anon[s][keep],
                query=pl.Series(query[keep].tolist(), dtype=pl.String),
                result_count=pl.Series(count[keep], dtype=pl.Int64),
                clicked_product_id=_ids(cat.ids, fp[keep]),
            ),
        )
        # carts of purchases: the chosen item, then the add-on
        c_sess = np.concatenate([buy, add])
        c_step = np.concatenate([3 + nv[buy], 5 + nv[add]])
        c_prod = np.concatenate([self.chosen[buy], self.addon[add]])
        # carts left behind: the last thing they looked at, if they can wear it
        last = (
            np.nonzero(np.r_[self.v_sess[1:] != self.v_sess[:-1], True])[0]
            if len(self.v_sess)
            else np.zeros(0, int)
        )
        cand_sess = self.v_sess[last]
        cand_prod = self.v_prod[last]
        browsing = self.s_kind[cand_sess] != PURCHASE
        fit = wearable(self.sh, cat, who[cand_sess], cand_prod)
        left = browsing & fit & (rng.random(len(last)) < CART_ABANDON)
        a_sess, a_prod = cand_sess[left], cand_prod[left]
        a_step = 2 + nv[a_sess]
        c_sess = np.concatenate([c_sess, a_sess])
        c_step = np.concatenate([c_step, a_step])
        c_prod = np.concatenate([c_prod, a_prod])
        qty = np.ones(len(c_sess), dtype=np.int64)
        # purchase quantities come from the order lines
        self._cart_qty(buy, add, qty)
        size = self.sh.size_of(who[c_sess], cat.system[c_prod])
        ts = self._step_ts(start[c_sess], pace[c_sess], c_step)
        keep = ts < self.end_us
        out.add(
            "add_to_cart",
            self._frame(
                who[c_sess][keep],
                ts[keep],
                c_sess[keep],
                anon=anon[c_sess][keep],
                product_id=_ids(cat.ids, c_prod[keep]),
                variant_id=self.variant_ids(c_prod[keep], size[keep]),
                quantity=pl.Series(qty[keep], dtype=pl.Int64),
                unit_price=pl.Series(cat.price[c_prod[keep]], dtype=pl.Float64),
            ),
        )
        removed = rng.random(len(a_sess)) < CART_REMOVE
        r_sess, r_prod = a_sess[removed], a_prod[removed]
        r_size = self.sh.size_of(who[r_sess], cat.system[r_prod])
        ts = self._step_ts(start[r_sess], pace[r_sess], 3 + nv[r_sess])
        keep = ts < self.end_us
        out.add(
            "remove_from_cart",
            self._frame(
                who[r_sess][keep],
                ts[keep],
                r_sess[keep],
                anon=anon[r_sess][keep],
                product_id=_ids(cat.ids, r_prod[keep]),
                variant_id=self.variant_ids(r_prod[keep], r_size[keep]),
                quantity=pl.lit(1, pl.Int64),
                unit_price=pl.Series(cat.price[r_prod[keep]], dtype=pl.Float64),
            ),
        )

    def _cart_qty(self, buy: I, add: I, qty: I) -> None:
        """Put the order lines' quantities on the purchase carts (main items, then add-ons)."""
        pos = np.searchsorted(self.o_sess, buy)
        main = self.l_line == 0
        q_main = np.zeros(len(self.o_sess), dtype=np.int64)
        q_main[self.l_order[main]] = self.l_qty[main]
        qty[: len(buy)] = q_main[pos]
        q_add = np.zeros(len(self.o_sess), dtype=np.int64)
        q_add[self.l_order[~main]] = self.l_qty[~main]
        qty[len(buy) : len(buy) + len(add)] = q_add[np.searchsorted(self.o_sess, add)]

    def _lines(self, sel: B, order_of_line: I) -> pl.DataFrame:
        """Order lines (selected) with the order they belong to, as a ``lines`` list column."""
        cat = self.cat
        who = self.s_who[self.o_sess][self.l_order[sel]]
        df = pl.DataFrame(
            {
                "order": pl.Series(order_of_line[sel], dtype=pl.Int64),
                "line": pl.Series(self.l_line[sel], dtype=pl.Int64),
                "product_id": _ids(cat.ids, self.l_prod[sel]),
                "variant_id": self.variant_ids(
                    self.l_prod[sel], self.sh.size_of(who, cat.system[self.l_prod[sel]])
                ),
                "quantity": pl.Series(self.l_qty[sel], dtype=pl.Int64),
                "unit_price": pl.Series(self.l_price[sel], dtype=pl.Float64),
            }
        )
        return (
            df.sort("order", "line")
            .group_by("order", maintain_order=True)
            .agg(
                pl.struct("product_id", "variant_id", "quantity", "unit_price").alias("lines"),
                (pl.col("quantity") * pl.col("unit_price")).sum().round(2).alias("total"),
            )
        )

    def _purchases(self, out: Behaviour) -> None:
        cur = self.cfg.currency
        valid = np.nonzero(self.o_valid)[0]
        sess = self.o_sess[valid]
        who, start, pace = self.s_who[sess], self.s_start[sess], self.s_pace[sess]
        nv = self.s_views[sess]
        order_id = pl.Series(self.o_number[valid], dtype=pl.Int64).cast(pl.String).str.zfill(7)
        # one row per valid order, in the order of ``valid`` (every order has a main line)
        lines = self._lines(self.o_valid[self.l_order], self.l_order)
        if not np.array_equal(lines.get_column("order").to_numpy(), valid):
            raise RuntimeError("order lines out of step with orders")
        out.add(
            "checkout",
            self._frame(
                who,
                self._step_ts(start, pace, 6 + nv),
                sess,
                order_id="o" + order_id,
                value=lines.get_column("total"),
            ),
        )
        out.add(
            "purchase",
            self._frame(
                who,
                self.o_ts[valid],
                sess,
                order_id="o" + order_id,
                currency=pl.lit(cur),
                lines=lines.get_column("lines"),
                total=lines.get_column("total"),
            ),
        )
        order_no = pl.Series(self.o_number, dtype=pl.Int64).cast(pl.String).str.zfill(7)
        o_who = self.s_who[self.o_sess]
        c = np.nonzero(self.cancelled)[0]
        if c.size:
            c_lines = self._lines(self.cancelled[self.l_order], self.l_order)
            order = c_lines.get_column("order").to_numpy()
            out.add(
                "cancellation",
                self._frame(
                    o_who[order],
                    self.c_ts[order],
                    np.full(len(order), -1),
                    order_id="o" + order_no.gather(pl.Series(order)),
                    currency=pl.lit(cur),
                    lines=c_lines.get_column("lines"),
                    reason=pl.lit("changed my mind"),
                ),
            )
        if self.returned.any():
            r_lines = self._lines(self.returned, self.l_order)
            order = r_lines.get_column("order").to_numpy()
            sized = self.cat.system[self.chosen[self.o_sess[order]]] >= 0
            out.add(
                "return",
                self._frame(
                    o_who[order],
                    self.r_ts[order],
                    np.full(len(order), -1),
                    order_id="o" + order_no.gather(pl.Series(order)),
                    currency=pl.lit(cur),
                    lines=r_lines.get_column("lines"),
                    reason=pl.Series(
                        np.where(sized, "does not fit", "not as expected").tolist(), dtype=pl.String
                    ),
                ),
            )

    def _marketplace(self, out: Behaviour) -> None:
        cat, cur = self.cat, self.cfg.currency
        rows = np.arange(self.n_regular, len(cat))
        listing_id = "l" + pl.Series(np.arange(1, len(rows) + 1), dtype=pl.Int64).cast(
            pl.String
        ).str.zfill(6)
        out.add(
            "list_item",
            self._frame(
                cat.seller[rows],
                cat.listed_us[rows],
                np.full(len(rows), -1),
                listing_id=listing_id,
                product_id=_ids(cat.ids, rows),
                price=pl.Series(cat.price[rows], dtype=pl.Float64),
                currency=pl.lit(cur),
                condition=pl.Series(
                    np.array(CONDITIONS, dtype=object)[cat.condition[rows]].tolist(),
                    dtype=pl.String,
                ),
                bought_order_id=pl.Series(cat.bought_order[self.n_regular :], dtype=pl.String),
            ),
        )
        # the buyers' visits
        m = self.m_rows
        n = len(m)
        steps = np.ones(n, dtype=np.int64)
        start, pace, sess, who = self.m_start, self.m_pace, self.m_session, self.m_who
        s = np.nonzero(self.m_search)[0]
        leaf = np.array([c.noun for c in CATEGORIES], dtype=object)[cat.category[m[s]]]
        brand = np.array([b.lower() for b in BRAND_NAMES], dtype=object)[cat.brand[m[s]]]
        out.add(
            "search",
            self._frame(
                who[s],
                self._step_ts(start[s], pace[s], steps[s]),
                sess[s],
                query=pl.Series(("pre-owned " + brand + " " + leaf).tolist(), dtype=pl.String),
                result_count=pl.lit(1, pl.Int64),
                clicked_product_id=_ids(cat.ids, m[s]),
            ),
        )
        variant = self.variant_ids(m, cat.size_lo[m])
        pid = _ids(cat.ids, m)
        price = pl.Series(cat.price[m], dtype=pl.Float64)
        out.add(
            "view",
            self._frame(
                who, self._step_ts(start, pace, 2 * steps), sess, product_id=pid, variant_id=variant
            ),
        )
        out.add(
            "add_to_cart",
            self._frame(
                who,
                self._step_ts(start, pace, 3 * steps),
                sess,
                product_id=pid,
                variant_id=variant,
                quantity=pl.lit(1, pl.Int64),
                unit_price=price,
            ),
        )
        number = self.n_orders + np.arange(1, n + 1)
        order_id = "o" + pl.Series(number, dtype=pl.Int64).cast(pl.String).str.zfill(7)
        lines = pl.DataFrame(
            {
                "product_id": pid,
                "variant_id": variant,
                "quantity": pl.Series([1] * n, dtype=pl.Int64),
                "unit_price": price,
            }
        ).select(
            pl.concat_list(pl.struct("product_id", "variant_id", "quantity", "unit_price")).alias(
                "lines"
            )
        )
        out.add(
            "checkout",
            self._frame(
                who, self._step_ts(start, pace, 4 * steps), sess, order_id=order_id, value=price
            ),
        )
        bought = self._step_ts(start, pace, 5 * steps)
        sold_us = cat.sold_us.copy()
        sold_us[m] = bought
        self.cat = cat = replace(cat, sold_us=sold_us)
        out.add(
            "purchase",
            self._frame(
                who,
                bought,
                sess,
                order_id=order_id,
                currency=pl.lit(cur),
                lines=lines.get_column("lines"),
                total=price,
            ),
        )
        out.add(
            "sale",
            self._frame(
                cat.seller[m],
                bought + 30 * SECOND_US,
                np.full(n, -1),
                listing_id=listing_id.gather(pl.Series(m - self.n_regular)),
                product_id=pid,
                price=price,
                currency=pl.lit(cur),
                buyer_id=_ids(self.sh.ids, who),
            ),
        )
        self.n_orders += n

    def _identify(self, out: Behaviour) -> None:
        """Logins (with traits), consents at sign-up, and consents withdrawn later."""
        sh, rng = self.sh, self.rng
        s = np.nonzero(self.s_login)[0]
        who = self.s_who[s]
        ts = self.s_start[s]
        zone = sh.zone[who]
        z = np.array(ZONES, dtype=object)
        cities = [ZONES[a][4][b] for a, b in zip(zone.tolist(), sh.city[who].tolist(), strict=True)]
        stated = sh.stated_channel[who]
        traits = pl.DataFrame(
            {
                "email": _ids(sh.email, who),
                "phone": pl.Series([sh.phone[i] for i in who.tolist()], dtype=pl.String),
                "first_name": _ids(sh.first_name, who),
                "last_name": _ids(sh.last_name, who),
                "timezone": pl.Series(z[zone, 0].tolist(), dtype=pl.String),
                "locale": pl.Series(z[zone, 2].tolist(), dtype=pl.String),
                "location": pl.DataFrame(
                    {
                        "country": pl.Series(z[zone, 1].tolist(), dtype=pl.String),
                        "region": pl.Series([None] * len(s), dtype=pl.String),
                        "city": pl.Series(cities, dtype=pl.String),
                    }
                ).to_struct(),
                "preferred_channel": pl.Series(
                    [CHANNELS[c] if c >= 0 else None for c in stated.tolist()], dtype=pl.String
                ),
            }
        ).to_struct()
        device = np.array([sh.anonymous_ids[i] is not None for i in who.tolist()], dtype=bool)
        frame = self._frame(who, ts, s, traits=traits)
        out.add("identify", frame.with_columns(pl.Series("device", device)))
        withdrawn = np.full(sh.withdraw_day.shape, np.inf)
        for c, channel in enumerate(CHANNELS):
            g = sh.consent[who, c]
            out.add(
                "consent",
                self._frame(
                    who[g],
                    ts[g] + (1 + c) * SECOND_US,
                    s[g],
                    channel=pl.lit(channel),
                    granted=pl.lit(True),
                    source=pl.lit("signup"),
                ),
            )
            later = ts + np.round(rng.uniform(1, 60, len(who)) * DAY_US).astype(np.int64)
            finite = g & np.isfinite(sh.withdraw_day[who, c])
            day = np.where(finite, sh.withdraw_day[who, c], 0.0)
            planned = self.start_us + np.round(day * DAY_US).astype(np.int64)
            at = np.full(len(who), np.iinfo(np.int64).max // 4, dtype=np.int64)
            at[finite] = self._daytime(who[finite], np.maximum(planned, later)[finite])
            w = finite & (at < np.minimum(self.end_us, self.stop_us[who]))
            when = at[w]
            withdrawn[who[w], c] = np.round((when - self.start_us) / DAY_US, 3)
            source = {"email": "unsubscribe link", "sms": "reply STOP", "push": "app settings"}
            out.add(
                "consent",
                self._frame(
                    who[w],
                    when,
                    np.full(int(w.sum()), -1),
                    channel=pl.lit(channel),
                    granted=pl.lit(False),
                    source=pl.lit(source[channel]),
                ),
            )
        self.sh = replace(sh, withdraw_day=withdrawn)

    def _answers(self, out: Behaviour) -> None:
        """A quarter of those who log in answer a short quiz: brands, colours, shoe size."""
        sh, rng = self.sh, self.rng
        who = np.nonzero(self.identify_us < self.end_us)[0]
        quiz = who[rng.random(len(who)) < 0.25]
        at = self.identify_us[quiz] + np.round(rng.uniform(0.5, 20, len(quiz)) * DAY_US).astype(
            np.int64
        )
        at = self._daytime(quiz, at)
        ok = at < np.minimum(self.end_us, self.stop_us[quiz])
        quiz, at = quiz[ok], at[ok]
        brands = np.argsort(-sh.brand_w[quiz], axis=1)[:, :2]
        colours = np.argsort(-sh.colour_w[quiz], axis=1)[:, :2]
        names = np.array(BRAND_NAMES, dtype=object)
        cols = np.array(COLOURS, dtype=object)
        none = np.full(len(quiz), -1)
        answered = rng.random((len(quiz), 3)) < 0.7
        a = answered[:, 0]
        out.add(
            "answer",
            self._frame(
                quiz[a],
                at[a],
                none[a],
                question_id=pl.lit("favourite_brands"),
                answer=pl.Series(names[brands[a]].tolist(), dtype=pl.List(pl.String)),
            ),
        )
        a = answered[:, 1]
        out.add(
            "answer",
            self._frame(
                quiz[a],
                at[a] + SECOND_US,
                none[a],
                question_id=pl.lit("preferred_colours"),
                answer=pl.Series(cols[colours[a]].tolist(), dtype=pl.List(pl.String)),
            ),
        )
        a = answered[:, 2]
        shoe = np.array(SIZE_SYSTEMS["shoes"], dtype=object)[sh.sizes[quiz[a], SHOE_SYSTEM]]
        out.add(
            "answer",
            self._frame(
                quiz[a],
                at[a] + 2 * SECOND_US,
                none[a],
                question_id=pl.lit("shoe_size"),
                answer=pl.Series(shoe.tolist(), dtype=pl.String),
            ),
        )


def behave(
    cfg: SimConfig, catalog: Catalog, shoppers: Shoppers, rng: np.random.Generator
) -> Behaviour:
    """Everything the shoppers do over the period (see the module docstring)."""
    run = _Run(cfg, catalog, shoppers, rng)
    run.plan()
    run.choose()
    run.orders()
    run.order_ids()
    run.after_purchase()
    return run.emit()


__all__ = ["Behaviour", "behave"]
