"""One recommendation request.

Candidates -> filters -> rules -> blended ranking -> diversity -> reasons.

:class:`Recommender` holds the newest ``crowd``, ``collaborative`` and ``ranker`` (blend weights)
versions in memory (:class:`~concierge.models.registry.LiveModels`: a new ``concierge train``
reaches a running server within ``check_every_s`` without a restart) and the catalog as arrays
(:class:`~concierge.decide.catalog_index.CatalogCache`). A request reads, from the database, only
the person (identity, profile document) and their own interactions, so an event logged a moment
ago changes the answer at once: the person's factor is folded in from those interactions
(:meth:`~concierge.models.collaborative.CollaborativeModel.fold_in`) at every request.

It never raises for an unknown person, an untrained model, an empty catalog or a product without
stock; ``fallback`` says what answered instead of the full ranker:

* ``None`` - the full ranker with the person's own evidence;
* ``"crowd"`` - the person has no history yet (unknown, or only just arrived): the crowd answers;
* ``"crowd_untrained"`` - no collaborative model yet: crowd models and the person's session only;
* ``"catalog"`` - no model trained at all: available items of the catalog, session first;
* ``"empty_catalog"`` / ``"nothing_available"`` - nothing to show (no product / none passes).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson
import scipy.sparse as sp
from sqlalchemy import select

from concierge.decide import reasons as why
from concierge.decide.catalog_index import CatalogCache, CatalogIndex, in_stock_now
from concierge.decide.rank import Aligned, BlendParams, Components
from concierge.decide.rules import SLOTS, Rule, apply_rules, list_rules
from concierge.errors import InputError
from concierge.ingest import identity
from concierge.models.collaborative import CollaborativeModel
from concierge.models.crowd import CrowdModel
from concierge.models.interactions import STRENGTH
from concierge.models.registry import LiveModels, Registry
from concierge.profiles import view as pview
from concierge.profiles.doc import DAY_US
from concierge.profiles.doc import loads as load_doc
from concierge.schema.events import ANON_PREFIX
from concierge.store import tables as t
from concierge.store.engine import Store

F = npt.NDArray[np.float64]
Slot = Literal["home", "product", "cart", "post_purchase", "email"]
MAX_K = 100
HISTORY = 1000  # newest interaction lines read per request


@dataclass(frozen=True)
class RecommendedItem:
    product_id: str
    variant_id: str | None
    score: float
    rank: int
    reasons: list[why.Reason]

    def as_dict(self) -> dict[str, Any]:
        return {
            "product_id": self.product_id,
            "variant_id": self.variant_id,
            "score": round(self.score, 6),
            "rank": self.rank,
            "reasons": [r.as_dict() for r in self.reasons],
        }


@dataclass(frozen=True)
class Recommendations:
    items: list[RecommendedItem]
    fallback: str | None
    model_versions: dict[str, int]
    slot: str
    person_id: str | None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "slot": self.slot,
            "person_id": self.person_id,
            "fallback": self.fallback,
            "model_versions": self.model_versions,
            "items": [i.as_dict() for i in self.items],
            "notes": self.notes,
        }


@dataclass
class Person:
    person_id: str | None
    customer_ids: list[str]
    doc: dict[str, Any] | None
    lines: list[tuple[str, str, int, int, str]]  # product_id, type, ts_us, quantity, event_id


def _blend_from(artifact: Any) -> BlendParams:
    return BlendParams.model_validate(artifact.info.meta["blend"])


class Recommender:
    """The request path of recommendations over one store (thread-safe)."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        *,
        half_life_days: float = 90.0,
        session_gap_minutes: float = 30.0,
        check_every_s: float = 2.0,
    ) -> None:
        self.store = store
        self.half_life_days = half_life_days
        self.session_gap_minutes = session_gap_minutes
        self.crowd = LiveModels(
            registry, "crowd", CrowdModel.from_artifact, check_every_s=check_every_s
        )
        self.collab = LiveModels(
            registry, "collaborative", CollaborativeModel.from_artifact, check_every_s=check_every_s
        )
        self.ranker = LiveModels(registry, "ranker", _blend_from, check_every_s=check_every_s)
        self.catalog = CatalogCache(store, check_every_s=min(check_every_s, 1.0))
        self._lock = threading.Lock()
        self._aligned: tuple[tuple[Any, ...], Aligned] | None = None
        self._rules: tuple[float, list[Rule]] = (-math.inf, [])
        self._facets: dict[tuple[Any, str], npt.NDArray[np.bool_]] = {}

    # -- state ----------------------------------------------------------------------------

    def _aligned_for(
        self, cat: CatalogIndex, crowd: CrowdModel | None, collab: CollaborativeModel | None
    ) -> Aligned:
        key = (cat.version, self.crowd.version, self.collab.version, id(crowd), id(collab))
        got = self._aligned
        if got is not None and got[0] == key:
            return got[1]
        with self._lock:
            got = self._aligned
            if got is not None and got[0] == key:
                return got[1]
            al = Aligned.build(cat.ids, crowd, collab, category=cat.category)
            self._aligned = (key, al)
            self._facets.clear()
            return al

    def refresh_models(self) -> None:
        for live in (self.crowd, self.collab, self.ranker):
            live.refresh()

    def rules(self) -> list[Rule]:
        at, rules = self._rules
        if time.monotonic() - at > 1.0:
            with self.store.read() as conn:
                rules = list_rules(conn)
            self._rules = (time.monotonic(), rules)
        return rules

    def forget_rules(self) -> None:
        self._rules = (-math.inf, [])

    # -- reading the person ---------------------------------------------------------------

    def _person(self, customer_id: str | None, anonymous_id: str | None, now_us: int) -> Person:
        if customer_id is None and anonymous_id is None:
            return Person(None, [], None, [])
        alias = "c:" + customer_id if customer_id is not None else "a:" + str(anonymous_id)
        with self.store.read() as conn:
            person = identity.load(conn, [alias]).person(alias)
            row = conn.execute(
                select(t.profiles.c.doc).where(t.profiles.c.person_id == person)
            ).first()
            aliases = (
                conn.execute(select(t.identities.c.alias).where(t.identities.c.person_id == person))
                .scalars()
                .all()
            )
            cids = {a[2:] for a in aliases if a.startswith("c:")}
            aids = {a[2:] for a in aliases if a.startswith("a:")}
            if person.startswith(ANON_PREFIX):
                aids.add(person[len(ANON_PREFIX) :])
            else:
                cids.add(person)
            cols = (
                t.event_items.c.product_id,
                t.events.c.type,
                t.events.c.ts_us,
                t.event_items.c.quantity,
                t.events.c.event_id,
            )
            joined = select(*cols).join(
                t.event_items, t.event_items.c.event_id == t.events.c.event_id
            )
            # two plain index lookups; type and time are filtered here, since a range or an OR
            # in SQL lets SQLite's planner pick the time index and scan the log (measured: 10 ms
            # against 0.3 ms)
            rows = list(conn.execute(joined.where(t.events.c.customer_id.in_(sorted(cids)))))
            if aids:
                rows += conn.execute(
                    joined.where(
                        t.events.c.anonymous_id.in_(sorted(aids)), t.events.c.customer_id.is_(None)
                    )
                ).all()
        kinds = STRENGTH.keys()
        kept = [tuple(r) for r in rows if r[1] in kinds and r[2] <= now_us]
        kept.sort(key=lambda r: r[2], reverse=True)
        lines = kept[:HISTORY]
        doc = load_doc(row.doc) if row is not None else None
        return Person(person, sorted(cids), doc, lines)

    # -- the request ----------------------------------------------------------------------

    def recommend(
        self,
        customer_id: str | None = None,
        *,
        anonymous_id: str | None = None,
        slot: str = "home",
        k: int = 10,
        anchor_product_id: str | None = None,
        now_us: int,
    ) -> Recommendations:
        if slot not in SLOTS:
            raise InputError.one(
                "slot", f"unknown slot {slot!r}; expected one of {', '.join(SLOTS)}"
            )
        if not 1 <= k <= MAX_K:
            raise InputError.one("k", f"k must be between 1 and {MAX_K}")
        if slot == "product" and anchor_product_id is None:
            raise InputError.one("anchor_product_id", "the product slot needs the page's product")
        crowd, collab, blend = (
            self.crowd.get(),
            self.collab.get(),
            self.ranker.get() or BlendParams(),
        )
        versions = {
            name: v
            for name, v in (
                ("crowd", self.crowd.version),
                ("collaborative", self.collab.version),
                ("ranker", self.ranker.version),
            )
            if v is not None
        }
        person = self._person(customer_id, anonymous_id, now_us)
        cat = self.catalog.get()
        pid = person.person_id
        if len(cat) == 0:
            return Recommendations([], "empty_catalog", versions, slot, pid)
        al = self._aligned_for(cat, crowd, collab)
        return self._rank(
            person,
            cat,
            al,
            blend,
            slot=slot,
            k=k,
            anchor=anchor_product_id,
            now_us=now_us,
            versions=versions,
        )

    def _rank(
        self,
        person: Person,
        cat: CatalogIndex,
        al: Aligned,
        blend: BlendParams,
        *,
        slot: str,
        k: int,
        anchor: str | None,
        now_us: int,
        versions: dict[str, int],
    ) -> Recommendations:
        n = len(cat)
        doc = person.doc
        hl = al.collab.config.half_life_days if al.collab is not None else self.half_life_days
        # the person's interactions in catalog space
        pids = (
            np.array([r[0] for r in person.lines], dtype=np.str_)
            if person.lines
            else np.zeros(0, np.str_)
        )
        idx = cat.ids.to_internal(pids) if pids.size else np.zeros(0, np.int64)
        types = [r[1] for r in person.lines]
        ts = np.array([r[2] for r in person.lines], dtype=np.int64)
        qty = np.array([r[3] for r in person.lines], dtype=np.float64)
        strength = np.array([STRENGTH.get(x, 0.0) for x in types])
        decay = np.exp2(-np.maximum(now_us - ts, 0) / (hl * DAY_US)) if ts.size else np.zeros(0)
        wl = strength * (1.0 + np.log(np.maximum(qty, 1.0))) * decay
        ok = idx >= 0
        w = np.bincount(idx[ok], weights=wl[ok], minlength=n)
        w = np.maximum(w, 0.0).astype(np.float64)
        buy = np.array([x == "purchase" for x in types], dtype=bool)
        back = np.array([x in ("return", "cancellation") for x in types], dtype=bool)
        orders = np.zeros(n)
        if buy.any():
            np.add.at(orders, idx[ok & buy], 1.0)
        if back.any():
            np.add.at(orders, idx[ok & back], -1.0)
        bought = orders > 0
        bought_w = (
            np.bincount(idx[ok & buy], weights=(decay * 1.0)[ok & buy], minlength=n)
            if buy.any()
            else np.zeros(n)
        )
        touched = np.flatnonzero(w > 0)
        evidence = float(touched.size)

        # context from the profile: country, sizes, brands, cart, session
        country = sizes = None
        brands: list[tuple[str, float]] = []
        cart_idx = np.zeros(0, np.int64)
        sess_idx = np.zeros(0, np.int64)
        if doc is not None:
            loc = doc["traits"].get("location")
            if loc and isinstance(loc[2], dict):
                country = loc[2].get("country")
            aff = pview.affinities(doc, as_of_us=now_us, half_life_days=90.0)
            sizes = [a["value"] for a in aff.get("size", []) if a["share"] >= 0.15]
            brands = [
                (a["value"], a["share"]) for a in aff.get("brand", [])[:2] if a["share"] >= 0.25
            ]
            cart = pview.cart(doc)
            if cart:
                cart_idx = cat.ids.to_internal([c["product_id"] for c in cart])
                cart_idx = cart_idx[cart_idx >= 0]
            sess = pview.session(doc, as_of_us=now_us, gap_minutes=self.session_gap_minutes)
            if sess["views"]:
                sess_idx = cat.ids.to_internal(sess["views"])
                sess_idx = sess_idx[sess_idx >= 0]

        # components (1 x n)
        pop = al.popularity(country)
        als = np.zeros(n)
        if al.collab is not None and al.factors is not None and touched.size:
            inv = al.collab.items.to_internal(cat.ids.external[touched])
            x = al.collab.fold_in(inv.astype(np.int64), w[touched])
            als = np.maximum(al.factors @ x, 0.0).astype(np.float64)
            als /= als.max() or 1.0
        cooc = _spread(al.sim_all, touched, w[touched], n)
        rep = bought_w * al.repeat_rate
        rep /= rep.max() or 1.0
        sess_score = np.zeros(n)
        if sess_idx.size:
            counts = np.bincount(cat.category[sess_idx], minlength=cat.category_names.size).astype(
                np.float64
            )
            # the categories of today's session, their popular items first (per-category crowd)
            sess_score = counts[cat.category] / counts.max() * (0.5 + 0.5 * al.pop_in_category)
            sess_score = 0.5 * sess_score + 0.5 * _spread(
                al.sims["also_viewed"], sess_idx, np.ones(sess_idx.size), n
            )
        anchor_score = np.zeros(n)
        anchor_src: tuple[str, npt.NDArray[np.int64]] | None = None
        if slot == "product" and anchor is not None:
            a = cat.ids.to_internal([anchor])
            a = a[a >= 0]
            if a.size:
                anchor_score = 0.6 * _spread(
                    al.sims["also_bought"], a, np.ones(1), n
                ) + 0.4 * _spread(al.sims["also_viewed"], a, np.ones(1), n)
                anchor_score += 0.2 * (cat.category == cat.category[a[0]])
                anchor_src = ("also_bought", a)
        elif slot == "cart" and cart_idx.size:
            anchor_score = _spread(al.sims["also_bought"], cart_idx, np.ones(cart_idx.size), n)
            anchor_src = ("also_bought", cart_idx)
        elif slot == "post_purchase" and buy.any():
            last = ts[buy].max()
            last_idx = idx[ok & buy & (ts == last)]
            anchor_score = 0.6 * _spread(
                al.sims["bought_after"], last_idx, np.ones(last_idx.size), n
            ) + 0.4 * _spread(al.sims["also_bought"], last_idx, np.ones(last_idx.size), n)
            anchor_src = ("bought_after", last_idx)
        comp = Components(
            pop[None, :],
            als[None, :],
            cooc[None, :],
            rep[None, :],
            sess_score[None, :],
            anchor_score[None, :],
            np.array([evidence]),
        )
        scores = comp.blend(blend, al.trend_scaled())[0]
        if al.crowd is None and al.collab is None:  # nothing learned: session, then catalog order
            scores = sess_score + anchor_score + 1e-9 * (n - np.arange(n))

        # filters
        allowed = cat.in_size(sizes or []).copy()  # in_size may return the shared array
        allowed &= ~(bought & (al.repeat_rate < blend.repeat_threshold))
        if person.customer_ids:
            for cid in person.customer_ids:  # never the shopper's own listings
                own = cat.listings.get(cid)
                if own is not None:
                    allowed[own] = False
        if cart_idx.size:
            allowed[cart_idx] = False
        if anchor is not None:
            a = cat.ids.to_internal([anchor])
            allowed[a[a >= 0]] = False
        applied = apply_rules(
            self.rules(),
            scores,
            index_of=lambda p: int(cat.ids.to_internal([p])[0]),
            facet_masks=lambda f: self._facet(cat, f),
            now_us=now_us,
            slot=slot,
        )
        allowed &= ~applied.excluded
        scores = applied.scores
        fallback = self._fallback(person, al, evidence)
        if not allowed.any():
            return Recommendations([], "nothing_available", versions, slot, person.person_id)

        # candidates, diversity, pins, the final stock check
        cand = np.flatnonzero(allowed)
        m = min(cand.size, max(10 * k, 200))
        part = cand[np.argpartition(-scores[cand], m - 1)[:m]] if cand.size > m else cand
        ranked = part[np.argsort(-scores[part], kind="stable")]
        pins = [(pos, i, r) for pos, i, r in applied.pins if allowed[i]]
        chosen = self._checked(cat, ranked, pins, k, sizes or [])
        chosen_idx = np.array([i for i, _r in chosen], dtype=np.int64)
        anchor_block = (
            SourceBlock(al.sims, np.asarray(anchor_src[1], np.int64), chosen_idx)
            if anchor_src is not None
            else None
        )
        recent = touched[np.argsort(-w[touched], kind="stable")[:50]]
        own_block = (
            SourceBlock(al.sims, recent, chosen_idx, weights=np.asarray(w[recent], np.float64))
            if recent.size
            else None
        )
        viewed_set = (
            set(idx[ok & np.array([x == "view" for x in types], dtype=bool)].tolist())
            if ok.any()
            else set()
        )
        items = []
        for rank, (i, rule) in enumerate(chosen, start=1):
            rs = self._reasons(
                int(i),
                rule,
                cat,
                al,
                applied,
                anchor_block=anchor_block,
                own_block=own_block,
                orders=orders,
                viewed=viewed_set,
                sess=sess_score,
                als=als,
                evidence=evidence,
                blend=blend,
                brands=brands,
                sizes=sizes or [],
                country=country,
            )
            items.append(
                RecommendedItem(str(cat.ids.external[i]), None, float(scores[i]), rank, rs)
            )
        return Recommendations(items, fallback, versions, slot, person.person_id)

    def _fallback(self, person: Person, al: Aligned, evidence: float) -> str | None:
        if al.crowd is None and al.collab is None:
            return "catalog"
        if al.collab is None:
            return "crowd_untrained"
        if evidence == 0:
            return "crowd"
        return None

    def _facet(self, cat: CatalogIndex, facet: str) -> npt.NDArray[np.bool_]:
        key = (cat.version, facet)
        got = self._facets.get(key)
        if got is None:
            got = cat.facet_mask(facet)
            self._facets[key] = got
        return got

    def _checked(
        self,
        cat: CatalogIndex,
        ranked: npt.NDArray[np.int64],
        pins: list[tuple[int, int, Rule]],
        k: int,
        sizes: list[str],
    ) -> list[tuple[int, Rule | None]]:
        """Diverse top k (per-brand and per-category caps), pins placed, stock checked now."""
        pinned = {i for _p, i, _r in pins}
        pool = [int(i) for i in ranked if int(i) not in pinned]
        head = 2 * k + 10  # checked against the database now; the rest trusts the index
        ids = [str(cat.ids.external[i]) for i in pool[:head]] + [
            str(cat.ids.external[i]) for i in pinned
        ]
        with self.store.read() as conn:
            live = in_stock_now(conn, ids, sizes)
        pool = [i for i in pool[:head] if live.get(str(cat.ids.external[i]), False)] + pool[head:]
        picked = diversify(pool, cat.brand, cat.category, k)
        for _round in range(3):  # items from beyond the checked head are checked too
            unchecked = [
                str(cat.ids.external[i]) for i in picked if str(cat.ids.external[i]) not in live
            ]
            if not unchecked:
                break
            with self.store.read() as conn:
                live |= in_stock_now(conn, unchecked, sizes)
            pool = [i for i in pool if live.get(str(cat.ids.external[i]), True)]
            picked = diversify(pool, cat.brand, cat.category, k)
        out: list[tuple[int, Rule | None]] = [(i, None) for i in picked]
        placed: set[int] = set()
        for pos, i, rule in pins:  # sorted by position; an item pinned twice goes first once
            if i not in placed and live.get(str(cat.ids.external[i]), False):
                out.insert(min(pos, len(out)), (i, rule))
                placed.add(i)
        return out[:k]

    def _reasons(
        self,
        i: int,
        rule: Rule | None,
        cat: CatalogIndex,
        al: Aligned,
        applied: Any,
        *,
        anchor_block: SourceBlock | None,
        own_block: SourceBlock | None,
        orders: F,
        viewed: set[int],
        sess: F,
        als: F,
        evidence: float,
        blend: BlendParams,
        brands: list[tuple[str, float]],
        sizes: list[str],
        country: str | None,
    ) -> list[why.Reason]:
        out: list[why.Reason] = []

        def title(j: int) -> str:
            return str(cat.titles[j])

        def pid(j: int) -> str:
            return str(cat.ids.external[j])

        if rule is not None:
            out.append(why.pinned(rule.rule_id, rule.name))
        for r, mask in applied.moved:
            if mask[i] and r.action == "boost":
                out.append(why.boosted(r.rule_id, r.name))
        if anchor_block is not None:
            got = anchor_block.best(i)
            if got is not None:
                out.append(why.related(got[1], pid(got[0]), title(got[0]), got[2]))
        if orders[i] >= 2:
            out.append(why.repeat(int(orders[i])))
        if i in viewed:
            out.append(why.viewed(pid(i), title(i)))
        if sess[i] >= 0.5:
            out.append(why.session(str(cat.category_names[cat.category[i]])))
        if own_block is not None:
            got = own_block.best(i)
            related = ("bought_with", "viewed_with", "bought_after")
            if got is not None and not any(r.code in related for r in out):
                out.append(why.related(got[1], pid(got[0]), title(got[0]), got[2]))
        if als[i] >= 0.5 and evidence / (evidence + blend.k) >= 0.3:
            out.append(why.for_you(float(als[i])))
        for b, share in brands:
            if cat.brand_names[cat.brand[i]] == b:
                out.append(why.your_brand(b, share))
        if sizes and cat.sized[i]:
            for size in sizes:
                if al.size_popularity(size)[i] > 0:
                    out.append(why.your_size(size))
                    break
        if al.trend[i] >= 1.5:
            out.append(why.trending(float(al.trend[i])))
        if not out or al.pop[i] >= al.pop_top:
            out.append(why.popular(country))
        return out


def _spread(sim: sp.csr_matrix, src: npt.NDArray[np.int64], weight: npt.ArrayLike, n: int) -> F:
    """sum_j weight_j · sim[j, :] for the source items ``src``, scaled to a maximum of 1."""
    if len(src) == 0 or sim.nnz == 0:
        return np.zeros(n)
    wv = np.asarray(weight, dtype=np.float64)
    wv = wv / (wv.max() or 1.0)
    rows = sim[src]
    out = np.asarray(rows.T @ wv).ravel()
    mx = out.max() if out.size else 0.0
    res: F = out / mx if mx > 0 else out
    return res


class SourceBlock:
    """The similarities of a few source items (the person's, an anchor) to the chosen items,
    sliced once per kind, so each item's strongest source is a column lookup."""

    KINDS = ("also_bought", "bought_after", "also_viewed")

    def __init__(
        self,
        sims: dict[str, sp.csr_matrix],
        src: npt.NDArray[np.int64],
        chosen: npt.NDArray[np.int64],
        weights: F | None = None,
    ) -> None:
        self.src = src
        self.col = {int(c): j for j, c in enumerate(chosen.tolist())}
        scale = None if weights is None else weights / (weights.max() or 1.0)
        self.raw = {k: np.asarray(sims[k][src][:, chosen].todense()) for k in self.KINDS}
        self.scaled = {k: (v if scale is None else v * scale[:, None]) for k, v in self.raw.items()}

    def best(self, i: int) -> tuple[int, str, float] | None:
        c = self.col.get(i)
        if c is None or self.src.size == 0:
            return None
        best: tuple[int, str, float] | None = None
        best_v = 0.0
        for kind in self.KINDS:
            col = self.scaled[kind][:, c]
            if col.size and col.max() > best_v:
                j = int(col.argmax())
                best_v = float(col[j])
                best = (int(self.src[j]), kind, float(self.raw[kind][j, c]))
        return best


def diversify(
    pool: list[int], brand: npt.NDArray[np.int64], category: npt.NDArray[np.int64], k: int
) -> list[int]:
    """Greedy top-k with caps: at most ``ceil(0.4 k)`` of one brand and ``ceil(0.5 k)`` of one
    category (code 0, "none", is not capped). When the pool cannot fill ``k`` under both caps,
    the category cap is dropped first, then the brand cap, so slots are never left empty."""
    cap_b, cap_c = max(1, math.ceil(0.4 * k)), max(1, math.ceil(0.5 * k))
    nb: dict[int, int] = {}
    nc: dict[int, int] = {}
    out: list[int] = []
    taken: set[int] = set()
    for use_b, use_c in ((True, True), (True, False), (False, False)):
        for i in pool:
            if len(out) >= k:
                return out
            if i in taken:
                continue
            b, c = int(brand[i]), int(category[i])
            if use_b and b and nb.get(b, 0) >= cap_b:
                continue
            if use_c and c and nc.get(c, 0) >= cap_c:
                continue
            out.append(i)
            taken.add(i)
            nb[b] = nb.get(b, 0) + 1
            nc[c] = nc.get(c, 0) + 1
    return out


def dumps(recs: Recommendations) -> bytes:
    return orjson.dumps(recs.as_dict())
