"""The blended ranking: crowd for newcomers, the individual as evidence grows.

For a person ``u`` and every item ``i`` (each component scaled to [0, 1] by its row maximum):

    score(u, i) = (1 - e_u) · pop(i)                          the crowd (country mix if known)
                + e_u · (a_als · als(u, i) + a_cooc · cooc(u, i))  the individual
                + a_rep · rep(u, i)                            what they buy again
                + a_sess · sess(u, i) + a_anchor · anchor(u, i) + a_trend · trend(i)

    e_u = n_u / (n_u + k)        (n_u: distinct items the person interacted with)

``als`` is the fold-in score of :mod:`concierge.models.collaborative`, ``cooc`` the person's
recent items (decayed weights) times the also-bought, also-viewed and bought-after similarities,
``rep`` their decayed purchases times the item's repeat rate, ``sess`` the current session's
categories and co-views, ``anchor`` the co-occurrence with the page's product, cart or last order.

``k`` and the ``a_*`` weights are not set by hand: :func:`tune` fits them by coordinate search on
a validation split (train on the log up to ``split - days``, score on the purchases of the
``days`` after), maximising the mean Recall@20 of the *all* and *new* variants. The same
:func:`blend` runs on one request (a 1 x n batch) and on a whole evaluation (b x n), so what is
evaluated is what is served.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from concierge.models.collaborative import CollaborativeModel
from concierge.models.crowd import CrowdModel
from concierge.models.idmap import IdMap

F = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I = npt.NDArray[np.int64]  # noqa: E741


class BlendParams(BaseModel):
    """The blend weights (see the module docstring); defaults until a tuning says otherwise."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: float = Field(
        5.0, gt=0, description="Items of evidence at which crowd and person weigh equal."
    )
    a_als: float = Field(1.0, ge=0)
    a_cooc: float = Field(0.5, ge=0)
    a_rep: float = Field(1.0, ge=0)
    a_sess: float = Field(0.6, ge=0)
    a_anchor: float = Field(2.0, ge=0)
    a_trend: float = Field(0.05, ge=0)
    repeat_threshold: float = Field(
        0.15, ge=0, le=1, description="Repeat rate from which a bought item may be shown again."
    )


GRID: dict[str, tuple[float, ...]] = {
    "k": (1.0, 3.0, 10.0, 30.0),
    "a_als": (0.25, 0.5, 1.0, 2.0),
    "a_cooc": (0.0, 0.25, 0.5, 1.0),
    "a_rep": (0.0, 0.5, 1.0, 2.0, 4.0),
    "a_trend": (0.0, 0.05, 0.2),
    "repeat_threshold": (0.05, 0.15, 0.3),
}


def _remap(pos: I, n: int, values: npt.ArrayLike) -> F:
    v = np.asarray(values, dtype=np.float64)
    out = np.zeros(n)
    ok = pos >= 0
    out[pos[ok]] = v[ok]
    return out


def _remap_csr(m: sp.csr_matrix, rows: I | None, cols: I, shape: tuple[int, int]) -> sp.csr_matrix:
    c = m.tocoo()
    r = c.row if rows is None else rows[c.row]
    k = cols[c.col]
    ok = (r >= 0) & (k >= 0)
    out = sp.csr_matrix((c.data[ok].astype(np.float32), (r[ok], k[ok])), shape=shape)
    out.sum_duplicates()
    return out


def row_max_scale(m: Any) -> Any:
    """Divide each row by its maximum (rows of zeros stay zero); dense or CSR."""
    if sp.issparse(m):
        mx = np.asarray(m.max(axis=1).todense()).ravel()
        mx[mx <= 0] = 1.0
        return sp.diags(1.0 / mx) @ m
    mx = m.max(axis=1, keepdims=True)
    mx[mx <= 0] = 1.0
    return m / mx


@dataclass
class Aligned:
    """The models' arrays moved into one item space (the live catalog, or an evaluation's items).

    Built once per (model versions, catalog version); every array is indexed by position in
    ``items``. Items a model never saw get zeros (no factor, no popularity).
    """

    items: IdMap
    pop: F
    trend: F  # trending ratio, 0 when not trending
    repeat_rate: F
    sims: dict[str, sp.csr_matrix]  # also_bought, also_viewed, bought_after (n x n)
    sim_all: sp.csr_matrix
    factors: F32 | None  # n x k item factors (None: no individual model)
    collab: CollaborativeModel | None
    crowd: CrowdModel | None
    pop_top: float = 0.0  # the 99th percentile of popularity ("popular" reasons)
    pop_scaled: F = field(default_factory=lambda: np.zeros(0))  # pop / max(pop)
    segment_matrix: sp.csr_matrix | None = None  # segments x items, in this item space
    size_matrix: sp.csr_matrix | None = None  # sizes x items
    pop_in_category: F = field(default_factory=lambda: np.zeros(0))  # share of category's best
    segment_cache: dict[str, F] = field(default_factory=dict)
    size_cache: dict[str, F] = field(default_factory=dict)
    # the rows of ``factors`` the model knows (the others are zeros), contiguous, so that a
    # request scores only those: 66,404 of 100,347 items in the 100k benchmark store
    known: I = field(default_factory=lambda: np.zeros(0, np.int64))
    known_factors: F32 | None = None
    collab_of: I = field(default_factory=lambda: np.zeros(0, np.int64))  # -1: unknown item

    @classmethod
    def build(
        cls,
        items: IdMap,
        crowd: CrowdModel | None,
        collab: CollaborativeModel | None,
        category: I | None = None,
    ) -> Aligned:
        n = len(items)
        if crowd is not None:
            pos = items.to_internal(crowd.item_ids_)
            inv = crowd.items.to_internal(items.external)
            pop = _remap(pos, n, crowd.popularity_)
            trend = _remap(pos, n, crowd.trending_)
            mean_rep = float(np.mean(crowd.repeat_rate_)) if crowd.repeat_rate_.size else 0.0
            rep = np.where(inv >= 0, crowd.repeat_rate_[np.maximum(inv, 0)], mean_rep)
            sims = {
                kind: _remap_csr(crowd.matrices_[kind], pos, pos, (n, n))
                for kind in CrowdModel.KINDS
            }
        else:
            pop, trend, rep = np.zeros(n), np.zeros(n), np.zeros(n)
            sims = {kind: sp.csr_matrix((n, n), dtype=np.float32) for kind in CrowdModel.KINDS}
        sim_all = (sims["also_bought"] + sims["also_viewed"] + sims["bought_after"]).tocsr()
        factors = None
        if collab is not None:
            inv = collab.items.to_internal(items.external)
            factors = np.zeros((n, collab.item_factors_.shape[1]), dtype=np.float32)
            factors[inv >= 0] = collab.item_factors_[inv[inv >= 0]]
        out = cls(items, pop, trend, rep, sims, sim_all, factors, collab, crowd)
        if collab is not None and factors is not None:
            out.collab_of = inv.astype(np.int64)
            out.known = np.flatnonzero(inv >= 0).astype(np.int64)
            out.known_factors = np.ascontiguousarray(factors[out.known])
        out.pop_top = float(np.quantile(pop, 0.99)) if n else 0.0
        out.pop_scaled = pop / (pop.max() or 1.0) if n else pop
        if crowd is not None:
            pos = items.to_internal(crowd.item_ids_)
            seg, size = crowd.matrices_["segment"], crowd.matrices_["size"]
            out.segment_matrix = _remap_csr(seg, None, pos, (seg.shape[0], n))
            out.size_matrix = _remap_csr(size, None, pos, (size.shape[0], n))
        out.pop_in_category = np.zeros(n)
        if category is not None and n:
            best = np.zeros(int(category.max()) + 1)
            np.maximum.at(best, category, pop)
            out.pop_in_category = np.where(
                best[category] > 0, pop / np.maximum(best[category], 1e-12), 0.0
            )
        return out

    def popularity(self, segment: str | None) -> F:
        """Global popularity, mixed half and half with the segment's when it is known."""
        base = self.pop_scaled
        if segment is None or self.crowd is None:
            return base
        mixed = self.segment_cache.get("\0mix" + segment)
        if mixed is None:  # kept whole: a request adds it, it does not rebuild it
            seg = self.segment_cache.get(segment)
            if seg is None:
                seg = self._row(self.crowd.segments_, self.segment_matrix, segment)
                seg = seg / (seg.max() or 1.0)
                self.segment_cache[segment] = seg
            mixed = 0.5 * base + 0.5 * seg if seg.any() else base
            self.segment_cache["\0mix" + segment] = mixed
        return mixed

    def size_popularity(self, size: str) -> F:
        got = self.size_cache.get(size)
        if got is None:
            ids = self.crowd.sizes_ if self.crowd is not None else np.zeros(0, np.str_)
            got = self._row(ids, self.size_matrix, size)
            self.size_cache[size] = got
        return got

    def _row(self, ids: npt.NDArray[np.str_], m: sp.csr_matrix | None, key: str) -> F:
        pos = int(np.searchsorted(ids, key)) if ids.size else 0
        if m is None or pos >= ids.size or ids[pos] != key:
            return np.zeros(len(self.items))
        out: F = m[pos].toarray().ravel().astype(np.float64)
        return out

    def trend_term(self, weight: float) -> F:
        """``weight * trend_scaled()``, kept for the request path (one addition per request)."""
        got = self.size_cache.get(f"\0trend{weight}")
        if got is None:
            got = weight * self.trend_scaled()
            self.size_cache[f"\0trend{weight}"] = got
        return got

    def trend_scaled(self) -> F:
        out: F = np.minimum(np.maximum(self.trend - 1.0, 0.0), 4.0) / 4.0
        return out


@dataclass
class Components:
    """Each component of the blend for a batch of people (rows) over the aligned items."""

    pop: F  # b x n (or 1 x n broadcast)
    als: F
    cooc: F
    rep: F
    sess: F
    anchor: F
    evidence: F  # b

    def blend(self, p: BlendParams, trend: F) -> F:
        e = (self.evidence / (self.evidence + p.k))[:, None]
        out: F = (1.0 - e) * self.pop + e * (p.a_als * self.als + p.a_cooc * self.cooc)
        out = out + p.a_rep * self.rep + p.a_sess * self.sess + p.a_anchor * self.anchor
        if p.a_trend:
            out = out + p.a_trend * (trend if trend.ndim == 2 else trend[None, :])
        return out


def batch_components(
    al: Aligned,
    weights: sp.csr_matrix,
    bought: sp.csr_matrix,
    *,
    segments: list[str | None] | None = None,
) -> Components:
    """Components for many people at once (evaluation): ``weights`` are their decayed
    interaction weights and ``bought`` their decayed purchase weights, both b x n."""
    b, n = weights.shape
    w = weights.tocsr().astype(np.float64)
    evidence = np.diff((w > 0).tocsr().indptr).astype(np.float64)
    if segments is None:
        pop = np.broadcast_to(al.popularity(None), (b, n))
    else:
        pop = np.vstack([al.popularity(s) for s in segments])
    if al.collab is not None and al.factors is not None:
        inv = al.collab.items.to_internal(al.items.external)
        # the person's weights in the model's own item order, then one solve each
        rows = np.repeat(np.arange(b), np.diff(w.indptr))
        cols = inv[w.indices]
        ok = cols >= 0
        local = sp.csr_matrix((w.data[ok], (rows[ok], cols[ok])), shape=(b, len(al.collab.items)))
        x = al.collab.fold_in_matrix(local)
        als = np.maximum(x @ al.factors.T, 0.0).astype(np.float64)
        als = row_max_scale(als)
    else:
        als = np.zeros((b, n))
    cooc = np.asarray((row_max_scale(w) @ al.sim_all).todense())
    cooc = row_max_scale(cooc)
    rep = np.asarray(
        row_max_scale(bought.tocsr().astype(np.float64)).multiply(al.repeat_rate[None, :]).todense()
    )
    rep = row_max_scale(rep)
    zeros = np.zeros((b, n))
    return Components(pop, als, cooc, rep, zeros, zeros, evidence)


def top_k(scores: F, k: int, banned: sp.csr_matrix | npt.NDArray[np.bool_] | None = None) -> I:
    """The ``k`` best items of each row (descending), ``banned`` entries never chosen."""
    s = scores.copy() if banned is not None else scores
    if banned is not None:
        if isinstance(banned, sp.spmatrix | sp.sparray):
            c = banned.tocoo()
            s[c.row, c.col] = -np.inf
        else:
            s[banned] = -np.inf
    k = min(k, s.shape[1])
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
    out: I = np.take_along_axis(part, order, axis=1).astype(np.int64)
    return out
