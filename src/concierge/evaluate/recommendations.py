"""``concierge evaluate recommendations``: a temporal split, every baseline and the full ranker.

Protocol (on any imported store):

1. **Split** at ``split``: everything up to it trains; each person's purchases after it are what
   they should have been recommended. People with purchases after the split are evaluated (those
   never seen before get whatever each method does for newcomers, usually popularity).
2. **Variants**: *all* counts every item bought after the split, repeats included; *new* counts
   only items the person never bought before, and every method has those filtered out.
3. **Tuning, never on the test**: a validation split ``val_days`` before ``split`` (train up to
   ``split - val_days``, test on the ``val_days`` after) picks ALS's factors, regularization,
   confidence scale and half-life (the "tuned ALS" baseline), then the blend weights of the full
   ranker (:func:`concierge.decide.rank.tune_blend`); both are then refitted on everything up to
   ``split`` and scored once on the test period.
4. **Baselines**: global popularity (orders), recent popularity (distinct buyers in the last 30
   days), the person's own most-bought items (ties and newcomers by popularity), item-item
   cosine and BM25-weighted item-kNN (``implicit.nearest_neighbours``), tuned ALS.
5. **Metrics** (:mod:`concierge.evaluate.metrics`): Recall@10/20, NDCG@10/20, MAP@20, hit
   rate, catalog coverage. On a simulated store, ``taste@10`` adds the mean hidden fit
   (:func:`concierge.sim.response.log_fit`) of the top 10: an exact measure of taste.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import scipy.sparse as sp

from concierge.clock import to_us
from concierge.decide.rank import (
    GRID,
    Aligned,
    BlendParams,
    Components,
    batch_components,
    top_k,
)
from concierge.models.collaborative import (
    CollaborativeConfig,
    CollaborativeModel,
    blas_single_thread,
)
from concierge.models.crowd import CrowdModel
from concierge.models.idmap import IdMap
from concierge.models.interactions import idmap_of, matrix, positions, read_interactions
from concierge.profiles.doc import DAY_US
from concierge.store.engine import Store

from .metrics import ranking_metrics

log = logging.getLogger(__name__)
I = npt.NDArray[np.int64]  # noqa: E741
K = 20
Progress = Callable[[str, float], None]
Taste = Callable[[npt.NDArray[np.str_], npt.NDArray[np.str_]], float]


@dataclass
class Split:
    """One temporal split, in the item space of the training data."""

    train: pl.DataFrame
    countries: pl.DataFrame
    split_us: int
    items: IdMap
    train_users: IdMap
    people: IdMap  # evaluated
    segments: list[str | None]
    rel_all: sp.csr_matrix
    n_all: I
    rel_new: sp.csr_matrix
    n_new: I
    bought: sp.csr_matrix  # people x items: bought before the split (orders)

    def sample(self, n: int, seed: int = 42) -> Split:
        """At most ``n`` of the evaluated people (seeded), for tuning on large stores."""
        if len(self.people) <= n:
            return self
        rows = np.sort(np.random.default_rng(seed).choice(len(self.people), n, replace=False))
        return Split(
            train=self.train,
            countries=self.countries,
            split_us=self.split_us,
            items=self.items,
            train_users=self.train_users,
            people=IdMap(self.people.external[rows]),
            segments=[self.segments[i] for i in rows],
            rel_all=self.rel_all[rows],
            n_all=self.n_all[rows],
            rel_new=self.rel_new[rows],
            n_new=self.n_new[rows],
            bought=self.bought[rows],
        )

    def weights(self, half_life_days: float, *, buys_only: bool = False) -> sp.csr_matrix:
        lines = (
            self.train.filter(pl.col("type").is_in(["purchase", "return", "cancellation"]))
            if buys_only
            else self.train
        )
        return matrix(
            lines, self.people, self.items, as_of_us=self.split_us, half_life_days=half_life_days
        )


def make_split(
    lines: pl.DataFrame, countries: pl.DataFrame, split_us: int, end_us: int | None = None
) -> Split:
    train = lines.filter(pl.col("ts_us") <= split_us)
    test = lines.filter((pl.col("ts_us") > split_us) & (pl.col("type") == "purchase"))
    if end_us is not None:
        test = test.filter(pl.col("ts_us") <= end_us)
    items = idmap_of(train.get_column("product_id"))
    train_users = idmap_of(train.get_column("person_id"))
    people = IdMap(np.unique(test.get_column("person_id").to_numpy()).astype(np.str_))
    b, n = len(people), len(items)
    before = (
        train.filter(pl.col("type") == "purchase")
        .group_by("person_id", "product_id")
        .agg(pl.col("event_id").n_unique().alias("k"))
    )
    pu = positions(before.get_column("person_id"), people)
    pi = positions(before.get_column("product_id"), items)
    ok = (pu >= 0) & (pi >= 0)
    bought = sp.csr_matrix(
        (before.get_column("k").to_numpy()[ok].astype(np.float32), (pu[ok], pi[ok])), shape=(b, n)
    )
    pairs = test.select("person_id", "product_id").unique()
    tu = positions(pairs.get_column("person_id"), people)
    ti = positions(pairs.get_column("product_id"), items)
    n_all = np.bincount(tu, minlength=b).astype(np.int64)
    inside = ti >= 0
    rel_all = sp.csr_matrix(
        (np.ones(int(inside.sum()), np.float32), (tu[inside], ti[inside])), shape=(b, n)
    )
    was = np.zeros(tu.size, dtype=bool)
    if inside.any():
        was[inside] = np.asarray(bought[tu[inside], ti[inside]]).ravel() > 0
    n_new = np.bincount(tu[~was], minlength=b).astype(np.int64)
    new_in = inside & ~was
    rel_new = sp.csr_matrix(
        (np.ones(int(new_in.sum()), np.float32), (tu[new_in], ti[new_in])), shape=(b, n)
    )
    seg = dict(countries.iter_rows()) if countries.height else {}
    return Split(
        train=train,
        countries=countries,
        split_us=split_us,
        items=items,
        train_users=train_users,
        people=people,
        segments=[seg.get(p) for p in people.external.tolist()],
        rel_all=rel_all,
        n_all=n_all,
        rel_new=rel_new,
        n_new=n_new,
        bought=bought,
    )


def _score(s: Split, recs_all: I, recs_new: I) -> dict[str, dict[str, float]]:
    n = len(s.items)
    return {
        "all": ranking_metrics(recs_all, s.rel_all, n_relevant=s.n_all, n_items=n),
        "new": ranking_metrics(recs_new, s.rel_new, n_relevant=s.n_new, n_items=n),
    }


def _pop_recs(s: Split, scores: npt.NDArray[np.float64]) -> tuple[I, I]:
    full = np.broadcast_to(scores, (len(s.people), len(s.items))).copy()
    return top_k(full, K), top_k(full, K, s.bought)


# -- baselines -----------------------------------------------------------------------------


def global_popularity(s: Split) -> npt.NDArray[np.float64]:
    buys = (
        s.train.filter(pl.col("type") == "purchase")
        .group_by("product_id")
        .agg(pl.col("event_id").n_unique().alias("n"))
    )
    out = np.zeros(len(s.items))
    out[s.items.to_internal(buys.get_column("product_id").to_numpy())] = buys.get_column(
        "n"
    ).to_numpy()
    return out


def recent_popularity(s: Split, days: float = 30.0) -> npt.NDArray[np.float64]:
    lo = s.split_us - int(days * DAY_US)
    buys = (
        s.train.filter((pl.col("type") == "purchase") & (pl.col("ts_us") > lo))
        .group_by("product_id")
        .agg(pl.col("person_id").n_unique().alias("n"))
    )
    out = np.zeros(len(s.items))
    out[s.items.to_internal(buys.get_column("product_id").to_numpy())] = buys.get_column(
        "n"
    ).to_numpy()
    return out + 1e-6 * global_popularity(s)


def own_most_bought(s: Split) -> tuple[I, I]:
    pop = global_popularity(s)
    scores = s.bought.toarray().astype(np.float64) + 1e-6 * pop / (pop.max() or 1.0)
    return top_k(scores, K), top_k(scores, K, s.bought)


def _train_matrix(s: Split, half_life_days: float) -> sp.csr_matrix:
    return matrix(
        s.train, s.train_users, s.items, as_of_us=s.split_us, half_life_days=half_life_days
    )


def _people_rows(s: Split, m: sp.csr_matrix) -> tuple[I, I]:
    """Rows of the evaluated people in a train-users matrix (-1: newcomer)."""
    idx = s.train_users.to_internal(s.people.external)
    return idx, np.flatnonzero(idx >= 0)


def item_knn(s: Split, kind: str) -> tuple[I, I]:
    from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

    m = _train_matrix(s, 365.0)
    model = CosineRecommender(K=100) if kind == "cosine" else BM25Recommender(K=100, K1=1.2, B=0.75)
    with blas_single_thread(), warnings.catch_warnings():
        # implicit's BM25 weighting hands its own fit a COO matrix and then warns about it
        warnings.filterwarnings("ignore", message="Method expects CSR input")
        model.fit(m, show_progress=False)
    pop_all, pop_new = _pop_recs(s, global_popularity(s))
    idx, warm = _people_rows(s, m)
    out = []
    for filt, base in ((False, pop_all), (True, pop_new)):
        recs = base.copy()
        if warm.size:
            ids, _sc = model.recommend(
                idx[warm], m[idx[warm]], N=K, filter_already_liked_items=False
            )
            ids = np.asarray(ids, dtype=np.int64)
            if filt:  # drop already-bought, refill from a longer list
                ids, _sc = model.recommend(
                    idx[warm], m[idx[warm]], N=K * 4, filter_already_liked_items=False
                )
                ids = np.asarray(ids, dtype=np.int64)
                ids = _drop_bought(ids, s.bought[warm], K, base[warm])
            recs[warm] = _fill(ids, base[warm], K)
        out.append(recs)
    return out[0], out[1]


def _drop_bought(ids: I, bought: sp.csr_matrix, k: int, base: I) -> I:
    b = bought.tocsr()
    rows = np.arange(ids.shape[0])[:, None]
    safe = np.maximum(ids, 0)
    was = (
        np.asarray(b[np.repeat(rows, ids.shape[1], axis=1).ravel(), safe.ravel()]).reshape(
            ids.shape
        )
        > 0
    )
    ids = np.where(was | (ids < 0), -1, ids)
    return ids


def _fill(ids: I, base: I, k: int) -> I:
    """Compact each row's valid ids to the front and fill the rest from ``base`` (no repeats)."""
    out = np.full((ids.shape[0], k), -1, dtype=np.int64)
    for r in range(ids.shape[0]):  # rows of top-k lists: small (k), bounded by people evaluated
        seen = [int(x) for x in ids[r] if x >= 0][:k]
        have = set(seen)
        for x in base[r]:
            if len(seen) >= k:
                break
            if int(x) not in have:
                seen.append(int(x))
                have.add(int(x))
        out[r, : len(seen)] = seen
    return out


def fit_als(s: Split, cfg: CollaborativeConfig) -> CollaborativeModel:
    m = _train_matrix(s, cfg.half_life_days)
    return CollaborativeModel(cfg).fit(m, s.train_users, s.items)


def als_recs(s: Split, model: CollaborativeModel) -> tuple[I, I]:
    pop_all, pop_new = _pop_recs(s, global_popularity(s))
    idx, warm = _people_rows(s, sp.csr_matrix((0, 0)))
    scores = np.full((len(s.people), len(s.items)), -np.inf)
    scores[warm] = model.user_factors_[idx[warm]] @ model.item_factors_.T
    ra, rn = top_k(scores, K), top_k(scores, K, s.bought)
    ra[idx < 0], rn[idx < 0] = pop_all[idx < 0], pop_new[idx < 0]
    return ra, rn


def tune_als(s: Split, progress: Progress | None = None) -> tuple[CollaborativeConfig, float]:
    """Coordinate search of ALS's factors, λ, alpha and half-life on a validation split."""
    cfg = CollaborativeConfig()
    grid: dict[str, tuple[Any, ...]] = {
        "factors": (32, 64, 128),
        "alpha": (0.5, 2.0, 8.0),
        "regularization": (0.01, 0.05, 0.2),
        "half_life_days": (90.0, 365.0),
    }
    cache: dict[str, float] = {}

    def value(c: CollaborativeConfig) -> float:
        key = c.model_dump_json()
        if key not in cache:
            r = _score(s, *als_recs(s, fit_als(s, c)))
            cache[key] = 0.5 * (r["all"]["recall@20"] + r["new"]["recall@20"])
        return cache[key]

    best = value(cfg)
    for name, values in grid.items():
        for v in values:
            c = cfg.model_copy(update={name: v})
            got = value(c)
            if got > best:
                best, cfg = got, c
        if progress:
            progress(f"tuning ALS ({name})", 0.0)
    return cfg, best


# -- the full ranker -------------------------------------------------------------------------


ROW_BUDGET = 3_000_000  # dense floats per component in one chunk of people (~24 MB)
PER_COMPONENT = 150  # candidates each component proposes for tuning


def _chunks(b: int, n: int) -> list[tuple[int, int]]:
    step = max(16, ROW_BUDGET // max(n, 1))
    return [(lo, min(b, lo + step)) for lo in range(0, b, step)]


@dataclass
class Candidates:
    """Each person's candidates (the union of every component's top ``PER_COMPONENT``) with
    the component values gathered, so a blend is scored on b x M instead of b x n."""

    ids: I  # b x M item positions, -1 for padding
    comp: Components
    trend: npt.NDArray[np.float64]  # b x M
    repeat_rate: npt.NDArray[np.float64]  # b x M
    bought: npt.NDArray[np.bool_]  # b x M, bought before the split


def _union_top(arrays: list[npt.NDArray[np.float64]], c: int) -> I:
    n = arrays[0].shape[1]
    c = min(c, n)
    tops = [np.argpartition(-a, c - 1, axis=1)[:, :c] for a in arrays]
    allc = np.sort(np.concatenate(tops, axis=1), axis=1)
    dup = np.zeros(allc.shape, dtype=bool)
    dup[:, 1:] = allc[:, 1:] == allc[:, :-1]
    allc[dup] = -1
    return allc.astype(np.int64)


def ranker_setup(s: Split, crowd: CrowdModel, collab: CollaborativeModel) -> dict[str, Any]:
    al = Aligned.build(s.items, crowd, collab)
    hl = collab.config.half_life_days
    return {"al": al, "w": s.weights(hl), "bw": s.weights(hl, buys_only=True)}


def candidates(s: Split, setup: dict[str, Any]) -> Candidates:
    al: Aligned = setup["al"]
    n = len(s.items)
    trend = al.trend_scaled()
    parts: list[tuple[I, Components]] = []
    for lo, hi in _chunks(len(s.people), n):
        comp = batch_components(
            al, setup["w"][lo:hi], setup["bw"][lo:hi], segments=s.segments[lo:hi]
        )
        pop = np.ascontiguousarray(np.broadcast_to(comp.pop, comp.als.shape))
        ids = _union_top([comp.als, comp.cooc, comp.rep, pop], PER_COMPONENT)
        safe = np.maximum(ids, 0)

        def g(a: npt.NDArray[np.float64], safe: I = safe, ids: I = ids) -> npt.NDArray[np.float64]:
            return np.where(ids >= 0, np.take_along_axis(a, safe, axis=1), 0.0)

        zeros = np.zeros(ids.shape)
        parts.append(
            (
                ids,
                Components(
                    g(pop), g(comp.als), g(comp.cooc), g(comp.rep), zeros, zeros, comp.evidence
                ),
            )
        )
    width = max(p[0].shape[1] for p in parts)

    def pad(a: npt.NDArray[Any], fill: float) -> npt.NDArray[Any]:
        return np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=fill)

    ids = np.vstack([pad(p[0], -1) for p in parts]).astype(np.int64)
    stacked = {
        f: np.vstack([pad(getattr(p[1], f), 0.0) for p in parts])
        for f in ("pop", "als", "cooc", "rep", "sess", "anchor")
    }
    comp = Components(**stacked, evidence=np.concatenate([p[1].evidence for p in parts]))
    safe = np.maximum(ids, 0)
    from concierge.evaluate.metrics import hit_matrix

    return Candidates(
        ids=ids,
        comp=comp,
        trend=np.where(ids >= 0, trend[safe], 0.0),
        repeat_rate=al.repeat_rate[safe],
        bought=hit_matrix(ids, s.bought) & (ids >= 0),
    )


def candidate_recs(c: Candidates, p: BlendParams) -> tuple[I, I]:
    scores = c.comp.blend(p, c.trend)
    scores[c.ids < 0] = -np.inf
    out = []
    for banned in (c.bought & (c.repeat_rate < p.repeat_threshold), c.bought):
        pos = top_k(scores, K, banned)
        picked = np.take_along_axis(c.ids, pos, axis=1)
        ok = np.isfinite(np.take_along_axis(np.where(banned, -np.inf, scores), pos, axis=1))
        out.append(np.where(ok, picked, -1))
    return out[0], out[1]


def ranker_recs(s: Split, setup: dict[str, Any], p: BlendParams) -> tuple[I, I]:
    """The full ranker over every item (exact; chunks of people bound the memory)."""
    al: Aligned = setup["al"]
    n = len(s.items)
    trend = al.trend_scaled()
    not_repeat_items = (al.repeat_rate < p.repeat_threshold).astype(np.float32)
    outs_all, outs_new = [], []
    for lo, hi in _chunks(len(s.people), n):
        comp = batch_components(
            al, setup["w"][lo:hi], setup["bw"][lo:hi], segments=s.segments[lo:hi]
        )
        scores = comp.blend(p, trend)
        bought = s.bought[lo:hi].tocsr()
        not_repeat = bought.multiply(not_repeat_items[None, :]).tocsr()
        not_repeat.eliminate_zeros()
        outs_all.append(top_k(scores, K, not_repeat))
        outs_new.append(top_k(scores, K, bought))
    return np.vstack(outs_all), np.vstack(outs_new)


def tune_blend(
    s: Split, crowd: CrowdModel, collab: CollaborativeModel, progress: Progress | None = None
) -> tuple[BlendParams, float]:
    """Coordinate search (two passes over :data:`~concierge.decide.rank.GRID`) on a
    validation split, scored on each person's candidates (:func:`candidates`)."""
    cands = candidates(s, ranker_setup(s, crowd, collab))
    p = BlendParams()

    def value(q: BlendParams) -> float:
        r = _score(s, *candidate_recs(cands, q))
        return 0.5 * (r["all"]["recall@20"] + r["new"]["recall@20"])

    best = value(p)
    for sweep in range(2):
        for name, values in GRID.items():
            for v in values:
                q = p.model_copy(update={name: v})
                got = value(q)
                if got > best + 1e-9:
                    best, p = got, q
            if progress:
                progress(f"tuning the blend ({name}, pass {sweep + 1})", 0.0)
    return p, best


# -- the whole evaluation --------------------------------------------------------------------


def evaluate(
    store: Store,
    *,
    split: datetime,
    val_days: float = 28.0,
    taste: Taste | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    step = progress or (lambda _w, _f: None)
    started = time.perf_counter()
    split_us = to_us(split)
    step("reading the log", 0.02)
    with store.read() as conn:
        lines, countries = read_interactions(conn)
    lines = lines.filter(
        pl.col("type").is_in(
            ["view", "add_to_cart", "remove_from_cart", "purchase", "return", "cancellation"]
        )
    )
    val_us = split_us - int(val_days * DAY_US)
    val = make_split(lines, countries, val_us, end_us=split_us)
    test = make_split(lines, countries, split_us)
    if len(test.people) == 0 or len(val.people) == 0:
        raise ValueError("no purchases after the split (or in the validation window before it)")
    step("tuning ALS on the validation split", 0.1)
    als_cfg, als_val = tune_als(val)
    step("tuning the blend on the validation split", 0.4)
    crowd_val = CrowdModel().fit(val.train, as_of_us=val_us, countries=countries, items=val.items)
    collab_val = fit_als(val, als_cfg)
    blend, blend_val = tune_blend(val, crowd_val, collab_val)
    step("scoring the test period", 0.7)
    results: dict[str, dict[str, dict[str, float]]] = {"all": {}, "new": {}}
    recs_by: dict[str, tuple[I, I]] = {}

    def put(name: str, recs: tuple[I, I]) -> None:
        recs_by[name] = recs
        r = _score(test, *recs)
        results["all"][name] = r["all"]
        results["new"][name] = r["new"]

    put("global_popularity", _pop_recs(test, global_popularity(test)))
    put("recent_popularity", _pop_recs(test, recent_popularity(test)))
    put("own_most_bought", own_most_bought(test))
    put("item_cosine", item_knn(test, "cosine"))
    put("item_bm25", item_knn(test, "bm25"))
    collab = fit_als(test, als_cfg)
    put("als_tuned", als_recs(test, collab))
    crowd = CrowdModel().fit(test.train, as_of_us=split_us, countries=countries, items=test.items)
    put("concierge", ranker_recs(test, ranker_setup(test, crowd, collab), blend))
    step("summing up", 0.95)
    out: dict[str, Any] = {
        "split": split.isoformat(),
        "validation_split": (split.timestamp() - val_days * 86400),
        "people": {"all": int((test.n_all > 0).sum()), "new": int((test.n_new > 0).sum())},
        "items": len(test.items),
        "metrics": results,
        "tuned": {
            "als": als_cfg.model_dump(),
            "blend": blend.model_dump(),
            "validation_objective": {"als": als_val, "concierge": blend_val},
        },
    }
    margins: dict[str, Any] = {}
    for variant in ("all", "new"):
        base = {k: v for k, v in results[variant].items() if k != "concierge"}
        best = max(base, key=lambda k: base[k]["recall@20"])
        ours = results[variant]["concierge"]
        margins[variant] = {
            "best_baseline": best,
            "baseline_recall@20": base[best]["recall@20"],
            "concierge_recall@20": ours["recall@20"],
            "margin_recall@20": ours["recall@20"] - base[best]["recall@20"],
            "beats_every_baseline_on_recall@20": all(
                ours["recall@20"] > v["recall@20"] for v in base.values()
            ),
        }
    out["margins"] = margins
    if taste is not None:
        ext = test.items.external
        out["taste@10"] = {
            name: taste(
                test.people.external,
                np.where(r[0][:, :10] >= 0, ext[np.maximum(r[0][:, :10], 0)], ""),
            )
            for name, r in recs_by.items()
        }
    out["seconds"] = round(time.perf_counter() - started, 2)
    return out


def sim_taste(truth_path: str) -> Taste:
    """The hidden-taste measure of a simulated store: mean ``log_fit`` of the recommended items."""
    from concierge.sim.response import log_fit
    from concierge.sim.truth import load_truth

    truth = load_truth(truth_path)
    shoppers = IdMap(np.asarray(truth.shoppers.ids, dtype=np.str_))
    products = IdMap(np.asarray(truth.catalog.ids, dtype=np.str_))

    def taste(people: npt.NDArray[np.str_], recs: npt.NDArray[np.str_]) -> float:
        s = shoppers.to_internal(people)
        p = products.to_internal(recs.ravel()).reshape(recs.shape)
        ok = (s[:, None] >= 0) & (p >= 0)
        ss = np.broadcast_to(s[:, None], p.shape)[ok]
        fit = log_fit(truth.shoppers, truth.catalog, ss, p[ok])
        return float(np.mean(fit)) if fit.size else float("nan")

    return taste
