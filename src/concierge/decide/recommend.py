"""One recommendation request.

Candidates -> filters -> rules -> blended ranking -> diversity -> reasons.

:class:`Recommender` holds the newest ``crowd``, ``collaborative`` and ``ranker`` (blend weights)
versions in memory (:class:`~concierge.models.registry.LiveModels`: a new ``concierge train``
reaches a running server within ``check_every_s`` without a restart) and the catalog as arrays
(:class:`~concierge.decide.catalog_index.CatalogCache`). A request reads, from the database, only
the person (identity, profile document) and their own interactions, so an event logged a moment
ago changes the answer at once: the person's factor is folded in from those interactions
(:meth:`~concierge.models.collaborative.CollaborativeModel.fold_in`) at every request.

The blend is computed on a pool of candidates, not on the whole catalog: the best items by crowd
score, trend and ALS score (an exact norm-ordered search of the item factors), the items of the
sparse terms and the pins, read as deep as a bound proves the answer equal to the whole
catalog's (:mod:`concierge.decide.retrieval`). ``Recommender(exact=True)`` scores the whole
catalog on every request; ``passes`` counts the answers of each kind.

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
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson
import scipy.sparse as sp

from concierge.decide import reasons as why
from concierge.decide.catalog_index import CatalogCache, CatalogIndex, row_ranges
from concierge.decide.rank import Aligned, BlendParams
from concierge.decide.retrieval import Partition, Pool
from concierge.decide.rules import (
    SLOTS,
    Effects,
    Rule,
    active_rules,
    list_rules,
    rule_effects,
)
from concierge.errors import InputError
from concierge.ingest import identity
from concierge.models.collaborative import CollaborativeModel, blas_single_thread
from concierge.models.crowd import CrowdModel
from concierge.models.interactions import STRENGTH
from concierge.models.registry import LiveModels, Registry
from concierge.profiles import view as pview
from concierge.profiles.doc import DAY_US
from concierge.profiles.doc import loads as load_doc
from concierge.schema.events import ANON_PREFIX
from concierge.store.engine import RawReader, Store

F = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
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
    lines: list[tuple[Any, ...]]  # product_id, type, ts_us, quantity, event_id


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
        depth: int = 400,
        exact: bool = False,
    ) -> None:
        self.store = store
        self.depth = depth  # how far down each candidate list a request reads first
        self.exact = exact  # score the whole catalog on every request (tests, evaluation)
        self.passes: Counter[str] = Counter()  # "pool" / "whole" answers, "widened" re-reads
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
        self._effect_cache: dict[tuple[Any, ...], Effects] = {}
        self._allowed_cache: dict[tuple[Any, ...], tuple[Effects, npt.NDArray[np.bool_]]] = {}
        self._static_cache: dict[tuple[Any, ...], tuple[Aligned, Effects, F]] = {}
        self._part_cache: dict[tuple[Any, ...], tuple[Aligned, Effects, Partition]] = {}

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
            self._effect_cache.clear()
            self._allowed_cache.clear()
            self._static_cache.clear()
            self._part_cache.clear()
            return al

    def warm(self) -> None:
        """Load the newest models and the catalog now (the API does it at start, in a thread),
        so the first requests do not pay for it."""
        crowd, collab = self.crowd.get(), self.collab.get()
        self.ranker.get()
        cat = self.catalog.get()
        if len(cat):
            self._aligned_for(cat, crowd, collab)

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

    def _person(
        self, q: RawReader, customer_id: str | None, anonymous_id: str | None, now_us: int
    ) -> Person:
        if customer_id is None and anonymous_id is None:
            return Person(None, [], None, [])
        alias = "c:" + customer_id if customer_id is not None else "a:" + str(anonymous_id)
        # the person's aliases in one self-join (an alias not in the graph is its own person)
        linked = q.rows(
            "SELECT b.alias, b.person_id FROM identities a"
            " JOIN identities b ON b.person_id = a.person_id WHERE a.alias = ?",
            [alias],
        )
        if linked:
            person = str(linked[0][1])
            aliases = [str(r[0]) for r in linked]
        else:
            person = identity.default_person(alias)
            aliases = [
                str(r[0])
                for r in q.rows("SELECT alias FROM identities WHERE person_id = ?", [person])
            ]
        row = q.rows("SELECT doc FROM profiles WHERE person_id = ?", [person])
        cids = {a[2:] for a in aliases if a.startswith("c:")}
        aids = {a[2:] for a in aliases if a.startswith("a:")}
        if person.startswith(ANON_PREFIX):
            aids.add(person[len(ANON_PREFIX) :])
        else:
            cids.add(person)
        # two plain index lookups in one statement; type and time are filtered here, since a
        # range or an OR in SQL lets SQLite's planner pick the time index and scan the log
        # (measured: 10 ms against 0.3 ms)
        cols = (
            "SELECT i.product_id, e.type, e.ts_us, i.quantity, e.event_id FROM events e"
            " JOIN event_items i ON i.event_id = e.event_id WHERE "
        )
        parts: list[str] = []
        params: list[Any] = []
        if cids:
            clause, more = q.among("e.customer_id", sorted(cids)[:500])
            parts.append(cols + clause)
            params += more
        if aids:
            clause, more = q.among("e.anonymous_id", sorted(aids)[:500])
            parts.append(cols + clause + " AND e.customer_id IS NULL")
            params += more
        rows = q.rows(" UNION ALL ".join(parts), params) if parts else []
        kinds = STRENGTH.keys()
        kept = [r for r in rows if r[1] in kinds and r[2] <= now_us]
        kept.sort(key=lambda r: r[2], reverse=True)
        lines = kept[:HISTORY]
        doc = load_doc(row[0][0]) if row else None
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
        with self.store.raw_read() as q:  # the person and the stock, in one transaction
            person = self._person(q, customer_id, anonymous_id, now_us)
            cat = self.catalog.get(q)
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
        # the person's interactions, aggregated per item (sparse: only what they touched)
        pos_of = cat.position_of()
        idx = np.fromiter(
            (pos_of.get(r[0], -1) for r in person.lines), dtype=np.int64, count=len(person.lines)
        )
        types = [r[1] for r in person.lines]
        ts = np.array([r[2] for r in person.lines], dtype=np.int64)
        qty = np.array([r[3] for r in person.lines], dtype=np.float64)
        strength = np.array([STRENGTH.get(x, 0.0) for x in types])
        decay = np.exp2(-np.maximum(now_us - ts, 0) / (hl * DAY_US)) if ts.size else np.zeros(0)
        wl = strength * (1.0 + np.log(np.maximum(qty, 1.0))) * decay
        buy = np.array([x == "purchase" for x in types], dtype=bool)
        back = np.array([x in ("return", "cancellation") for x in types], dtype=bool)
        ok = idx >= 0
        items_u, inv = np.unique(idx[ok], return_inverse=True)
        w_u = np.maximum(np.bincount(inv, weights=wl[ok], minlength=items_u.size), 0.0)
        orders = SparseVec(
            items_u, np.bincount(inv, weights=(buy[ok] * 1.0 - back[ok]), minlength=items_u.size)
        )
        bought_items = items_u[orders.val > 0]
        bought_w = np.bincount(inv, weights=decay[ok] * buy[ok], minlength=items_u.size)
        touched, w_t = items_u[w_u > 0], w_u[w_u > 0]
        evidence = float(touched.size)

        # context from the profile: country, sizes, brands, cart, session
        country = None
        sizes: list[str] = []
        brands: list[tuple[str, float]] = []
        cart_idx = np.zeros(0, np.int64)
        sess_idx = np.zeros(0, np.int64)
        queries: list[str] = []
        if doc is not None:
            loc = doc["traits"].get("location")
            if loc and isinstance(loc[2], dict):
                country = loc[2].get("country")
            aff = pview.affinities(
                doc, as_of_us=now_us, half_life_days=90.0, dims=("brand", "size")
            )
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
            queries = [q["query"] for q in sess["searches"] if q["query"]][:5]

        # the components of rank.Components.blend, the sparse ones kept sparse: the same
        # formula as the evaluation's, computed on a pool of candidates (decide.retrieval)
        e = evidence / (evidence + blend.k)
        xu: F32 | None = None
        if al.collab is not None and al.known_factors is not None and touched.size:
            xu = al.collab.fold_in(al.collab_of[touched], w_t).astype(np.float32)
        cooc = _spread(al.sim_all, touched, w_t)
        rep = SparseVec(items_u, bought_w * al.repeat_rate[items_u]).scaled()
        sess_vec = SparseVec.empty()
        searched = SparseVec.empty()
        if queries:  # what they searched for today: items matching the words, popular first
            found = [cat.matching(q) for q in queries]
            searched = SparseVec.sum_of(
                [
                    (SparseVec(m, share * (0.5 + 0.5 * al.pop_in_category[m])), 1.0 / len(found))
                    for m, share in found
                ]
            )
        if sess_idx.size:
            cats, counts = np.unique(cat.category[sess_idx], return_counts=True)
            members = cat.items_of(cats)
            share = (counts / counts.max())[np.searchsorted(cats, cat.category[members])]
            # today's categories, their popular items first (per-category crowd)
            in_cats = SparseVec(members, share * (0.5 + 0.5 * al.pop_in_category[members]))
            also = _spread(al.sims["also_viewed"], sess_idx, np.ones(sess_idx.size))
            sess_vec = SparseVec.sum_of([(in_cats, 0.5), (also, 0.5)])
        if searched.idx.size:
            sess_vec = SparseVec.sum_of([(sess_vec, 1.0), (searched, 1.0)])
        anchor_vec = SparseVec.empty()
        anchor_src: npt.NDArray[np.int64] | None = None
        anchor_at = np.zeros(0, np.int64)
        if anchor is not None:
            anchor_at = cat.ids.to_internal([anchor])
            anchor_at = anchor_at[anchor_at >= 0]
        if slot == "product" and anchor is not None:
            a = anchor_at
            if a.size:
                same = cat.items_of(cat.category[a[:1]])
                anchor_vec = SparseVec.sum_of(
                    [
                        (_spread(al.sims["also_bought"], a, np.ones(1)), 0.6),
                        (_spread(al.sims["also_viewed"], a, np.ones(1)), 0.4),
                        (SparseVec(same, np.ones(same.size)), 0.2),
                    ]
                )
                anchor_src = a
        elif slot == "cart" and cart_idx.size:
            anchor_vec = _spread(al.sims["also_bought"], cart_idx, np.ones(cart_idx.size))
            anchor_src = cart_idx
        elif slot == "post_purchase" and buy.any():
            last = ts[buy].max()
            last_idx = np.unique(idx[ok & buy & (ts == last)])
            ones = np.ones(last_idx.size)
            anchor_vec = SparseVec.sum_of(
                [
                    (_spread(al.sims["bought_after"], last_idx, ones), 0.6),
                    (_spread(al.sims["also_bought"], last_idx, ones), 0.4),
                ]
            )
            anchor_src = last_idx

        # rules and filters: the cached effects of the active rules, the stock in the
        # shopper's sizes, then what this person may not see
        eff = self._effects(cat, slot, now_us)
        part = self._partition(al, eff, blend.a_trend)
        crowd = part.crowd(country, al.popularity(country))
        sparse = [(cooc, e * blend.a_cooc), (rep, blend.a_rep)]
        sparse += [(sess_vec, blend.a_sess), (anchor_vec, blend.a_anchor)]
        nothing_learned = al.crowd is None and al.collab is None
        if nothing_learned:  # nothing learned: session, then catalog order
            sparse = [(sess_vec, 1.0), (anchor_vec, 1.0)]
        own = [cat.listings[c] for c in person.customer_ids if c in cat.listings]
        never = np.concatenate(
            [
                bought_items[al.repeat_rate[bought_items] < blend.repeat_threshold],
                cart_idx,
                anchor_at,
                *own,  # never the shopper's own listings
            ]
        ).astype(np.int64)
        pinned = np.array([i for _p, i, _r in eff.pins], dtype=np.int64)
        must = [v.idx for v, _c in sparse] + [pinned]
        m = min(n, max(10 * k, 200))
        depth = n if self.exact or nothing_learned else self.depth
        blocked = self._blocked(cat, sizes, eff)
        # the products with the factors are memory-bound: single-threaded BLAS, two BLAS threads
        # beside the server's own work made them 2-3x slower on 2 cores (measured)
        first = True  # the first pool may leave out groups that cannot reach the top m
        with blas_single_thread(rescan=False):
            while True:
                pool = part.pool(
                    crowd, xu, e=e, a_als=blend.a_als, depth=depth, must=must, m=m if first else 0
                )
                first = False
                final, als_c = _blend(pool, crowd.pop, sparse, e, blend.a_als, nothing_learned)
                np.copyto(final, -np.inf, where=blocked if pool.whole else blocked[pool.items])
                pool.kill(final, never)
                ranked, kth = best_ranked(final, pool.items, m)
                slack = 1e-12 * abs(pool.bound)  # the bound's own rounding
                if pool.whole or (ranked.size >= m and kth > pool.bound + slack):
                    break
                # the bound failed: read deeper; too few passed the filters: the whole catalog
                depth = depth * 2 if ranked.size >= m else n
                self.passes["widened"] += 1
        self.passes["whole" if pool.whole else "pool"] += 1
        scores = _lookup(pool.items, final)
        als = None if als_c is None else SparseVec(pool.items, als_c)
        fallback = self._fallback(person, al, evidence)

        # candidates, diversity, pins, the final stock check
        pins = [(pos, i, r) for pos, i, r in eff.pins if np.isfinite(scores(i))]
        if ranked.size == 0 and not pins:
            return Recommendations([], "nothing_available", versions, slot, person.person_id)
        variants: dict[str, str] = {}
        chosen = self._checked(cat, ranked, pins, k, sizes, variants)
        if not chosen:
            return Recommendations([], "nothing_available", versions, slot, person.person_id)
        chosen_idx = np.array([i for i, _r in chosen], dtype=np.int64)
        anchor_block = (
            SourceBlock(al.sims, anchor_src, chosen_idx) if anchor_src is not None else None
        )
        order = np.argsort(-w_t, kind="stable")[:50]  # the person's strongest items
        own_block = (
            SourceBlock(al.sims, touched[order], chosen_idx, weights=w_t[order])
            if order.size
            else None
        )
        view_mask = np.array([x == "view" for x in types], dtype=bool)
        viewed_set = set(idx[ok & view_mask].tolist()) if ok.any() else set()
        at_orders, at_sess = orders.take(chosen_idx), sess_vec.take(chosen_idx)
        at_searched = searched.take(chosen_idx)
        at_als = None if als is None else als.take(chosen_idx)
        items = []
        for rank, (i, rule) in enumerate(chosen, start=1):
            rs = self._reasons(
                int(i),
                rule,
                cat,
                al,
                eff,
                anchor_block=anchor_block,
                own_block=own_block,
                orders=at_orders,
                viewed=viewed_set,
                sess=at_sess,
                searched=at_searched,
                queries=queries,
                als=at_als,
                evidence=evidence,
                blend=blend,
                brands=brands,
                sizes=sizes,
                country=country,
            )
            pid = str(cat.ids.external[i])
            items.append(RecommendedItem(pid, variants.get(pid), scores(int(i)), rank, rs))
        return Recommendations(items, fallback, versions, slot, person.person_id)

    def _effects(self, cat: CatalogIndex, slot: str, now_us: int) -> Effects:
        live = active_rules(self.rules(), now_us=now_us, slot=slot)
        key = (cat.version, slot, tuple((r.rule_id, r.weight) for r in live))
        got = self._effect_cache.get(key)
        if got is None:
            if len(self._effect_cache) > 64:
                self._effect_cache.clear()
            got = rule_effects(
                live,
                len(cat),
                index_of=lambda p: int(cat.ids.to_internal([p])[0]),
                facet_masks=lambda f: self._facet(cat, f),
            )
            self._effect_cache[key] = got
        return got

    def _blocked(self, cat: CatalogIndex, sizes: list[str], eff: Effects) -> npt.NDArray[np.bool_]:
        """Items this request may not show by stock (in the shopper's sizes) or by an exclude
        rule; cached per stock state, sizes and rules."""
        key = (cat.version, cat.stock_seq, tuple(sorted(sizes)), id(eff))
        got = self._allowed_cache.get(key)
        if got is None or got[0] is not eff:  # (an id can be reused once its object is gone)
            if len(self._allowed_cache) > 256:
                self._allowed_cache.clear()
            base = cat.allowed_in(sizes)
            got = (eff, ~base if eff.excluded is None else ~(base & ~eff.excluded))
            self._allowed_cache[key] = got
        return got[1]

    def _static(self, al: Aligned, eff: Effects, a_trend: float) -> F | None:
        """``a_trend * trend + rule adjustments``, the request-independent terms, kept."""
        if not a_trend and eff.adj is None:
            return None
        key = (id(al), id(eff), a_trend)
        got = self._static_cache.get(key)
        if got is None or got[0] is not al or got[1] is not eff:
            if len(self._static_cache) > 64:
                self._static_cache.clear()
            vec = al.trend_term(a_trend) if a_trend else np.zeros(len(al.items))
            if eff.adj is not None:
                vec = vec + eff.adj
            got = (al, eff, vec)
            self._static_cache[key] = got
        return got[2]

    def _partition(self, al: Aligned, eff: Effects, a_trend: float) -> Partition:
        """The catalog's groups, lists and factor indexes of :mod:`concierge.decide.retrieval`,
        built once per (models, catalog, rules)."""
        key = (id(al), id(eff), a_trend)
        got = self._part_cache.get(key)
        if got is None or got[0] is not al or got[1] is not eff:
            with self._lock:
                got = self._part_cache.get(key)
                if got is None or got[0] is not al or got[1] is not eff:
                    if len(self._part_cache) > 4:  # each holds a copy of the factors
                        self._part_cache.clear()
                    part = Partition.build(
                        len(al.items),
                        trend=al.trend_term(a_trend) if a_trend else None,
                        adj=eff.adj,
                        static=self._static(al, eff, a_trend),
                        known=al.known,
                        factors=al.known_factors,
                    )
                    got = (al, eff, part)
                    self._part_cache[key] = got
        return got[2]

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
        variants: dict[str, str],
    ) -> list[tuple[int, Rule | None]]:
        """Diverse top k (per-brand and per-category caps), pins placed; ``variants`` receives
        the variant to show of each product (:meth:`CatalogIndex.variant_to_show`).

        Every candidate already passed the stock filter of this request, whose arrays reflect
        every catalog event up to its read (see :mod:`concierge.decide.catalog_index`): no
        second look at the database."""
        pinned = {i for _p, i, _r in pins}
        pool = [i for i in ranked.tolist() if i not in pinned]
        picked = diversify(pool, cat.brand, cat.category, k)
        out: list[tuple[int, Rule | None]] = [(i, None) for i in picked]
        placed: set[int] = set()
        for pos, i, rule in pins:  # sorted by position; an item pinned twice goes first once
            if i not in placed:
                out.insert(min(pos, len(out)), (i, rule))
                placed.add(i)
        out = out[:k]
        rows = cat.size_codes(sizes)
        for i, _rule in out:
            v = cat.variant_to_show(i, rows)
            if v is not None:
                variants[str(cat.ids.external[i])] = v
        return out

    def _reasons(
        self,
        i: int,
        rule: Rule | None,
        cat: CatalogIndex,
        al: Aligned,
        eff: Effects,
        *,
        anchor_block: SourceBlock | None,
        own_block: SourceBlock | None,
        orders: Lookup,
        viewed: set[int],
        sess: Lookup,
        searched: Lookup,
        queries: list[str],
        als: Lookup | None,
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
        for r, mask in eff.moved:
            if mask[i]:
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
        if searched[i] >= 0.25 and queries:
            out.append(why.searched(queries[0]))
        if own_block is not None:
            got = own_block.best(i)
            related = ("bought_with", "viewed_with", "bought_after")
            if got is not None and not any(r.code in related for r in out):
                out.append(why.related(got[1], pid(got[0]), title(got[0]), got[2]))
        if als is not None and (a := als[i]) >= 0.5 and evidence / (evidence + blend.k) >= 0.3:
            out.append(why.for_you(a))
        for b, share in brands:
            if cat.brand_names[cat.brand[i]] == b:
                out.append(why.your_brand(b, share))
        if sizes and cat.sized[i]:
            for size in sizes:
                if al.size_popularity(size)[i] > 0:
                    out.append(why.your_size(size))
                    break
        trend = float(al.trend[i])
        if trend >= 1.5:
            out.append(why.trending(trend))
        if not out or float(al.pop[i]) >= al.pop_top:
            out.append(why.popular(country))
        return out


def top_candidates(scores: F, m: int) -> npt.NDArray[np.int64]:
    """Positions of (at least) the ``m`` best finite scores, unordered.

    A threshold from a strided sample of the scores, then one comparison over all of them;
    falls back to ``argpartition`` when the sample guessed too high. Measured on 100,000
    items: a fraction of ``argpartition``'s time, which makes several passes.
    """
    n = scores.size
    if n <= 4 * m:
        part = np.argpartition(scores, n - m)[n - m :] if n > m else np.arange(n)
        return part[np.isfinite(scores[part])]
    stride = max(1, n // 4000)
    sample = scores[::stride]
    q = min(sample.size, 2 * int(np.ceil(m * sample.size / n)) + 8)
    thr = np.partition(sample, sample.size - q)[sample.size - q]
    if np.isfinite(thr):
        cand = np.flatnonzero(scores >= thr)
        if cand.size > 2 * m:  # ties at the threshold: keep the m best of them
            cand = cand[np.argpartition(scores[cand], cand.size - m)[cand.size - m :]]
        if cand.size >= m:
            return cand
    part = np.argpartition(scores, n - m)[n - m :]
    return part[np.isfinite(scores[part])]


def best_ranked(
    final: F, items: npt.NDArray[np.int64], m: int
) -> tuple[npt.NDArray[np.int64], float]:
    """The ``m`` best finite scores of ``final`` (over catalog positions ``items``, ascending)
    as positions, best first, ties by position; and the ``m``-th best score (-inf when fewer
    than ``m`` are finite). Deterministic, so a pool and the whole catalog agree on ties."""
    cand = top_candidates(final, m)
    if cand.size == 0:
        return np.zeros(0, np.int64), -np.inf
    sel = np.flatnonzero(final >= final[cand].min()) if cand.size >= m else cand
    order = np.lexsort((items[sel], -final[sel]))[:m]
    kth = float(final[sel[order[-1]]]) if order.size >= m else -np.inf
    return items[sel[order]], kth


def _blend(
    pool: Pool,
    pop: F,
    sparse: list[tuple[SparseVec, float]],
    e: float,
    a_als: float,
    catalog_order: bool,
) -> tuple[F, F32 | None]:
    """The blend of :mod:`concierge.decide.rank` over the pool, term by term in the order the
    whole-catalog pass always added them, and the pool's ALS term."""
    items = pool.items
    if catalog_order:  # nothing learned: the session, then catalog order
        sc: F = (pool.part.n - items).astype(np.float64) * 1e-9
    else:
        sc = (1.0 - e) * (pop if pool.whole else pop[items])
    als = pool.als()
    if als is not None:
        sc += (e * a_als) * als
    for vec, coef in sparse:
        if vec.idx.size and coef:
            sc[pool.at(vec.idx)] += coef * vec.val
    if pool.part.static is not None:
        sc += pool.part.static if pool.whole else pool.part.static[items]
    return sc, als


def _lookup(items: npt.NDArray[np.int64], final: F) -> Any:
    """``score(i)`` of a catalog position (-inf outside the pool)."""

    def score(i: int) -> float:
        p = int(np.searchsorted(items, i))
        return float(final[p]) if p < items.size and items[p] == i else -math.inf

    return score


class Lookup(dict[int, float]):
    """Values at a few catalog positions; 0 for any other."""

    def __missing__(self, key: int) -> float:
        return 0.0


class SparseVec:
    """A vector over the catalog kept as sorted, unique positions and their values."""

    __slots__ = ("idx", "val")

    def __init__(self, idx: npt.NDArray[np.int64], val: npt.ArrayLike) -> None:
        self.idx = np.asarray(idx, dtype=np.int64)
        self.val = np.asarray(val, dtype=np.float64)

    @classmethod
    def empty(cls) -> SparseVec:
        return cls(np.zeros(0, np.int64), np.zeros(0))

    @classmethod
    def sum_of(cls, parts: list[tuple[SparseVec, float]]) -> SparseVec:
        idx = np.concatenate([v.idx for v, _c in parts])
        val = np.concatenate([v.val * c for v, c in parts])
        u, inv = np.unique(idx, return_inverse=True)
        return cls(u, np.bincount(inv, weights=val, minlength=u.size))

    def scaled(self) -> SparseVec:
        mx = self.val.max() if self.val.size else 0.0
        return SparseVec(self.idx, self.val / mx) if mx > 0 else self

    def add_to(self, dense: F, coef: float) -> None:
        if self.idx.size and coef:
            dense[self.idx] += coef * self.val

    def take(self, positions: npt.NDArray[np.int64]) -> Lookup:
        """The values at ``positions``, as a dict (the reasons read a few, one by one)."""
        if self.idx.size == 0:
            return Lookup()
        pos = np.minimum(np.searchsorted(self.idx, positions), self.idx.size - 1)
        val = np.where(self.idx[pos] == positions, self.val[pos], 0.0)
        return Lookup(zip(positions.tolist(), val.tolist(), strict=True))

    def __getitem__(self, i: int) -> float:
        pos = int(np.searchsorted(self.idx, i))
        return float(self.val[pos]) if pos < self.idx.size and self.idx[pos] == i else 0.0


def _spread(sim: sp.csr_matrix, src: npt.NDArray[np.int64], weight: npt.ArrayLike) -> SparseVec:
    """sum_j weight_j * sim[j, :] over the source items ``src``, scaled to a maximum of 1."""
    if len(src) == 0 or sim.nnz == 0:
        return SparseVec.empty()
    wv = np.asarray(weight, dtype=np.float64)
    wv = wv / (wv.max() or 1.0)
    # the rows' entries straight from the CSR arrays (scipy's row indexing builds a matrix)
    var, owner = row_ranges(sim.indptr, np.asarray(src, dtype=np.int64))
    data = sim.data[var] * wv[owner]
    u, inv = np.unique(sim.indices[var], return_inverse=True)
    return SparseVec(u, np.bincount(inv, weights=data, minlength=u.size)).scaled()


def _block(m: sp.csr_matrix, rows: npt.NDArray[np.int64], cols: npt.NDArray[np.int64]) -> F:
    """``m[rows][:, cols]`` as a dense array, from the CSR arrays (``cols`` unique)."""
    out = np.zeros((rows.size, cols.size))
    if rows.size == 0 or cols.size == 0:
        return out
    var, owner = row_ranges(m.indptr, rows)
    order = np.argsort(cols)
    sc = cols[order]
    at = m.indices[var]
    p = np.minimum(np.searchsorted(sc, at), sc.size - 1)
    hit = sc[p] == at
    out[owner[hit], order[p[hit]]] = m.data[var[hit]]
    return out


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
        self.raw = {k: _block(sims[k], src, chosen) for k in self.KINDS}
        self.scaled = {k: (v if scale is None else v * scale[:, None]) for k, v in self.raw.items()}
        # each chosen item's strongest source per kind, for all of them at once
        empty = src.size == 0 or chosen.size == 0
        self.arg = {k: (v.argmax(axis=0) if not empty else None) for k, v in self.scaled.items()}
        self.top = {k: (v.max(axis=0) if not empty else None) for k, v in self.scaled.items()}

    def best(self, i: int) -> tuple[int, str, float] | None:
        c = self.col.get(i)
        if c is None or self.src.size == 0:
            return None
        best: tuple[int, str, float] | None = None
        best_v = 0.0
        for kind in self.KINDS:
            top, arg = self.top[kind], self.arg[kind]
            assert top is not None and arg is not None
            if top[c] > best_v:
                j = int(arg[c])
                best_v = float(top[c])
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
    at = np.asarray(pool, dtype=np.int64)
    codes = list(zip(brand[at].tolist(), category[at].tolist(), strict=True))  # one gather
    for use_b, use_c in ((True, True), (True, False), (False, False)):
        for i, (b, c) in zip(pool, codes, strict=True):
            if len(out) >= k:
                return out
            if i in taken:
                continue
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
