"""Candidate retrieval for one recommendation request: a few thousand items instead of the catalog.

A request used to score every item of the catalog (the fold-in factor times all item factors,
then several vectors over all items for the crowd, the rules and the filters). The blend of
:mod:`concierge.decide.rank` is a sum of non-negative-weighted terms, so the best items can be
found from a few sorted lists and the exact blend computed on their union only (the threshold
algorithm of Fagin, Lotem & Naor 2003, "Optimal aggregation algorithms for middleware"):

The items are split into *groups* by their rule adjustment (boosts and buries move whole facets
by a constant: one group per distinct adjustment ``a_g``, usually two or three), and each group
has three lists, best first:

* the crowd list: by ``pop(i) + trend(i)`` (popularity mixed with the shopper's country, and the
  trend term);
* the trend list: by ``trend(i)`` alone;
* the individual list: by ALS score ``y_i . x_u`` (:class:`FactorIndex`).

The pool is the first ``depth`` of every list, every item of a sparse term (co-occurrence with
the person's items, repeat purchases, session, search, anchor) and the pinned items. An item of
group ``g`` outside it scores at most ``a_g + (1 - e) b_crowd + e b_trend + e a_als b_als`` (the
next values down the group's lists; ``e`` is the person's evidence weight), since
``(1 - e) pop + trend = (1 - e)(pop + trend) + e trend``. Without the groups a boost of a large
facet would tie thousands of items on one list and the bound would only pass once the pool
held them all (measured on the benchmark store: 1.7 extra passes per request).

When the ``m``-th best candidate that passes the filters (``m = max(10 k, 200)``, the ranked list
diversity picks from) scores above that bound, the top ``m`` of the candidates *is* the top ``m``
of the catalog, ties broken by position in both. Otherwise the lists are read twice as deep
(:meth:`~concierge.decide.recommend.Recommender.recommend` loops); when fewer than ``m``
candidates pass the filters (a size, stock, an exclude rule removing most of them) the whole
catalog is scored at once. So the answer is always the whole-catalog answer, never short:
``tests/test_recommend_retrieval.py`` checks it for any stock, rules, shopper and slot, and
``bench/bench_recs.py`` on the 100,000-item store (300 of 300 lists identical, 0 widened pools
in 1,050 requests with a boost, a bury and a pin active). The offline evaluation
(``concierge evaluate recommendations``) keeps its batch path over all items
(:func:`~concierge.decide.rank.batch_components`): it scores thousands of people at once.

The individual list is exact too. Item factors are kept sorted by norm, largest first, and a
search reads a prefix only: an item ``j`` down the list scores at most ``|y_j| |x|``
(Cauchy-Schwarz), so once that falls below the ``depth``-th best score found, nothing further
can enter. ALS gives popular items large norms and leaves most items small, so the prefix is
short: on the 100,000-item benchmark store (66,211 items with factors, 64 factors) the exact
top 200 needs 17,000 rows on average (p90 18,000, max 20,000).

Approximate indexes were measured against it on the same factors and people (one thread,
faiss-cpu 1.15.1, 300 people, recall of the exact top items):

=================================================  ==========  ===========  ============
index                                              recall@20   recall@200   per search
=================================================  ==========  ===========  ============
IVF-Flat, inner product, 256 lists, 32 probed       0.94        0.76         230 us
(``implicit``'s own ANN wrapper uses 400 and 20)
HNSW (M 32), inner product, efSearch 200            0.998       0.95         400 us
HNSW on the augmented L2 space (Bachrach et al.     0.985       0.88         250 us
2014), efSearch 200
norm-ordered prefix scan (this module), depth 200   1.0         1.0          about 150 us
=================================================  ==========  ===========  ============

So the exact scan is both faster and exact at this size, and adds no dependency. (Inner-product
IVF does badly on ALS factors because their norms spread over four orders of magnitude; cells
are visited by centroid score, not by what their largest-norm members can reach.) Past a few
million items an approximate index would win; :class:`FactorIndex` is the one place to put it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from concierge.models.collaborative import blas_single_thread

F = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I = npt.NDArray[np.int64]  # noqa: E741

TREND_DEPTH = 4  # the trend lists are read this many times deeper than the others


@dataclass(frozen=True)
class Retrieved:
    """One search of :class:`FactorIndex`: the raw scores of the rows read, and a bound on the
    rest.

    ``top`` holds the catalog positions of the ``depth`` best scores (ties at the threshold
    included); every other item scores at most ``bound``; ``best`` is the largest score of all
    (0 when none is positive)."""

    scanned: int
    scores: F32  # raw scores of rows 0:scanned, in norm order
    top: I
    bound: float
    best: float


class FactorIndex:
    """Item factors sorted by norm (largest first), for exact top inner products with an early
    stop (see the module docstring).

    Parameters
    ----------
    positions
        Catalog positions of the items.
    factors
        Their factors, one row each (``len(positions) x k``).
    """

    def __init__(self, positions: I, factors: F32) -> None:
        norms = np.linalg.norm(factors.astype(np.float64), axis=1)
        order = np.argsort(-norms, kind="stable")
        self.positions: I = np.asarray(positions, dtype=np.int64)[order]
        self.factors: F32 = np.ascontiguousarray(factors[order], dtype=np.float32)
        self.neg_norms: F = -norms[order]  # ascending, for searchsorted

    def __len__(self) -> int:
        return int(self.positions.size)

    def search(self, x: F32, depth: int) -> Retrieved:
        """The ``depth`` best items for the person factor ``x``, exactly."""
        n = len(self)
        if n == 0:
            return Retrieved(0, np.zeros(0, np.float32), np.zeros(0, np.int64), -np.inf, 0.0)
        xn = float(np.linalg.norm(x.astype(np.float64)))
        depth = max(1, depth)
        # a first block, whose depth-th best score bounds where the scan may stop; then the rest
        # of the prefix in one product (the threshold only rises, so one more product suffices)
        end = n if depth * 8 >= n else min(n, max(depth * 8, n // 16))
        with blas_single_thread(rescan=False):
            scores: F32 = self.factors[:end] @ x
            if end < n:
                thr = _kth(scores, depth)
                stop = n if thr <= 0 or xn == 0 else self._stop(thr / xn)
                if stop > end:
                    scores = np.concatenate([scores, self.factors[end:stop] @ x])
                    end = stop
        if scores.size > depth:
            thr = _kth(scores, depth)
            top_rows = np.flatnonzero(scores >= thr)
            bound = thr  # what a row read but left out can reach
        else:
            top_rows = np.arange(scores.size)
            bound = -np.inf
        if end < n:  # and a row not read: its norm times |x|
            bound = max(bound, -float(self.neg_norms[end]) * xn)
        best = max(float(scores.max()), 0.0)
        return Retrieved(end, scores, self.positions[top_rows], bound, best)

    def best_above(self, x: F32, floor: float) -> float:
        """The best score for ``x`` if some row beats ``floor``, else ``floor`` (reads only the
        rows whose norm allows it)."""
        xn = float(np.linalg.norm(x.astype(np.float64)))
        stop = len(self) if floor <= 0 or xn == 0 else self._stop(floor / xn)
        if stop == 0:
            return floor
        with blas_single_thread(rescan=False):
            return max(floor, float((self.factors[:stop] @ x).max()))

    def _stop(self, norm: float) -> int:
        """The first row whose norm is at most ``norm`` (rows from there cannot score above
        ``norm * |x|``)."""
        return int(np.searchsorted(self.neg_norms, -norm, side="left"))


def _kth(scores: F32 | F, k: int) -> float:
    """The ``k``-th largest of ``scores`` (-inf when there are fewer)."""
    if scores.size < k:
        return -np.inf
    return float(np.partition(scores, scores.size - k)[scores.size - k])


def _sorted_desc(values: F, items: I) -> tuple[I, F]:
    """``items`` by ``values[items]``, best first, and those values with -inf appended."""
    order = items[np.argsort(-values[items], kind="stable")]
    return order, np.append(values[order], -np.inf)


@dataclass
class Group:
    """The items sharing one rule adjustment ``adj``, their trend list and factor index."""

    adj: float
    items: I
    trend_order: I | None
    trend_sorted: F | None
    index: FactorIndex | None


@dataclass
class Crowd:
    """Each group's crowd list (by ``pop + trend``) for one popularity mix."""

    pop: F
    orders: list[tuple[I, F]]


@dataclass
class Partition:
    """The catalog split by rule adjustment, for one set of models, rules and trend weight.

    ``static`` is ``trend + adj`` over the catalog (``None`` when both are zero), the vector the
    blend adds. The groups' factor indexes are slices of one matrix ``factors``, group after
    group; ``row_of`` is each item's row there (``-1``: no factor), ``offset`` each group's first.
    """

    n: int
    trend: F | None
    static: F | None
    groups: list[Group]
    group_of: I
    row_of: I
    offset: I
    factors: F32 | None
    _crowds: dict[str | None, Crowd] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        n: int,
        *,
        trend: F | None,
        adj: F | None,
        static: F | None,
        known: I,
        factors: F32 | None,
    ) -> Partition:
        if adj is None:
            values, code = np.zeros(1), np.zeros(n, dtype=np.int64)
        else:
            values, inv = np.unique(adj, return_inverse=True)
            code = inv.astype(np.int64)
        has = np.zeros(n, dtype=bool)
        if factors is not None:
            has[known] = True
            frow = np.full(n, -1, dtype=np.int64)
            frow[known] = np.arange(known.size)
        groups: list[Group] = []
        for g, a in enumerate(values.tolist()):
            items = np.flatnonzero(code == g).astype(np.int64)
            t_order = t_sorted = None
            if trend is not None:
                t_order, t_sorted = _sorted_desc(trend, items)
            index = None
            if factors is not None:
                with_f = items[has[items]]
                index = FactorIndex(with_f, factors[frow[with_f]])
            groups.append(Group(float(a), items, t_order, t_sorted, index))
        row_of = np.full(n, -1, dtype=np.int64)
        sizes = [0 if g.index is None else len(g.index) for g in groups]
        offset = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        whole = None
        if factors is not None:  # one matrix, each group's index a view of its rows
            whole = np.concatenate([g.index.factors for g in groups if g.index is not None])
            for grp, lo in zip(groups, offset.tolist(), strict=False):
                if grp.index is not None:
                    grp.index.factors = whole[lo : lo + len(grp.index)]
                    row_of[grp.index.positions] = lo + np.arange(len(grp.index))
        return cls(n, trend, static, groups, code, row_of, offset, whole)

    def crowd(self, key: str | None, pop: F) -> Crowd:
        """The crowd lists for the popularity mix ``pop`` (of segment ``key``), kept."""
        got = self._crowds.get(key)
        if got is None or got.pop is not pop:
            if len(self._crowds) > 16:  # 16 bytes an item each
                self._crowds.clear()
            value = pop if self.trend is None else pop + self.trend
            got = Crowd(pop, [_sorted_desc(value, g.items) for g in self.groups])
            self._crowds[key] = got
        return got

    def pool(
        self,
        crowd: Crowd,
        x: F32 | None,
        *,
        e: float,
        a_als: float,
        depth: int,
        must: list[I],
        m: int = 0,
    ) -> Pool:
        """The candidates read ``depth`` down every list (with the items ``must``), the ALS
        searches, and the bound on what any item left out can score.

        With ``m``, a group is not read at all when even its best item could not reach the
        ``m``-th best score of another group (its adjustment plus the largest crowd, trend and
        ALS terms, against that group's ``m``-th crowd score: a bury, or everything beside a
        boost of many items); it then adds that ceiling to the bound, so a wrong guess (the
        filters removed the other group's items) only fails the bound."""
        whole = depth >= self.n
        ceilings = []
        for g, (order, sorted_) in zip(self.groups, crowd.orders, strict=True):
            top = g.adj + (1.0 - e) * float(sorted_[0]) if order.size else -np.inf
            if g.trend_sorted is not None and order.size:
                top += e * float(g.trend_sorted[0])
            ceilings.append(top + (e * a_als if x is not None else 0.0))
        floor = -np.inf
        if m and not whole:
            for g, (order, sorted_) in zip(self.groups, crowd.orders, strict=True):
                if order.size >= m:
                    floor = max(floor, g.adj + (1.0 - e) * float(sorted_[m - 1]))
        read = [whole or c >= floor for c in ceilings]
        found: list[Retrieved | None] = []
        for g, go in zip(self.groups, read, strict=True):
            if x is None or g.index is None or not go:
                found.append(None)
            else:
                found.append(g.index.search(x, len(g.index) if whole else depth))
        best = max((r.best for r in found if r is not None), default=0.0)
        if x is not None:  # the ALS scale is the catalog's best score: look into skipped groups
            for g, go in zip(self.groups, read, strict=True):
                if not go and g.index is not None:
                    best = max(best, g.index.best_above(x, best))
        if whole:
            return Pool(self, np.arange(self.n, dtype=np.int64), True, -np.inf, x, found, best)
        parts = list(must)
        bound = -np.inf
        for g, (order, sorted_), r, go, ceiling in zip(
            self.groups, crowd.orders, found, read, ceilings, strict=True
        ):
            if not go:
                bound = max(bound, ceiling)
                continue
            parts.append(order[:depth])
            b = g.adj + (1.0 - e) * float(sorted_[min(depth, order.size)])
            if g.trend_order is not None and g.trend_sorted is not None:
                # read further: its items cost only their scoring, and the trend term is zero
                # past the few trending items (930 of 100,347 on the benchmark store), so the
                # bound of people with much evidence (e near 1) falls to the other terms
                t_depth = min(TREND_DEPTH * depth, g.trend_order.size)
                parts.append(g.trend_order[:t_depth])
                b += e * float(g.trend_sorted[t_depth])
            if r is not None:
                parts.append(r.top)
                b += e * a_als * max(r.bound, 0.0) / (best or 1.0)
            bound = max(bound, b)
        mark = np.zeros(self.n, dtype=bool)  # a scatter and one scan: cheaper than a sort
        for got in parts:
            mark[got] = True
        items = np.flatnonzero(mark).astype(np.int64)
        return Pool(self, items, items.size == self.n, bound, x, found, best)


class Pool:
    """The candidates of one request (sorted catalog positions) and what any item outside can
    score at most (``bound``)."""

    def __init__(
        self,
        part: Partition,
        items: I,
        whole: bool,
        bound: float,
        x: F32 | None,
        found: list[Retrieved | None],
        best: float,
    ) -> None:
        self.part = part
        self.items = items
        self.whole = whole
        self.bound = bound
        self.x = x
        self.found = found
        self.best = best

    def at(self, positions: I) -> I:
        """Where ``positions`` (all in the pool) sit in it."""
        if self.whole:
            return positions
        out: I = np.searchsorted(self.items, positions)
        return out

    def als(self) -> F32 | None:
        """The ALS term of the blend over the pool: ``max(y_i . x, 0)`` scaled by the best
        score of the catalog (0 for items without a factor); ``None`` without a person factor."""
        if self.x is None:
            return None
        items, part = self.items, self.part
        assert part.factors is not None
        if self.whole:  # every row was read: the scores straight to their items
            whole = np.zeros(part.n, dtype=np.float32)
            for grp, r in zip(part.groups, self.found, strict=True):
                if r is not None and grp.index is not None:
                    whole[grp.index.positions[: r.scanned]] = r.scores
            np.maximum(whole, 0.0, out=whole)
            whole *= 1.0 / (self.best or 1.0)
            return whole
        # the scores the searches computed, laid out as the rows of ``part.factors``
        read_to = np.zeros(len(part.groups), dtype=np.int64)  # per group: rows read end here
        buf = np.empty(part.factors.shape[0], dtype=np.float32)  # only rows read are looked at
        for g, r in enumerate(self.found):
            if r is not None:
                lo = int(part.offset[g])
                buf[lo : lo + r.scanned] = r.scores
                read_to[g] = lo + r.scanned
        row = part.row_of[items]
        raw = np.zeros(items.size, dtype=np.float32)
        read = (row >= 0) & (row < read_to[part.group_of[items]])
        raw[read] = buf[row[read]]
        rest = np.flatnonzero((row >= 0) & ~read)
        if rest.size:  # items of the pool the searches did not reach (a sparse term's)
            with blas_single_thread(rescan=False):
                raw[rest] = part.factors[row[rest]] @ self.x
        als = np.maximum(raw, 0.0)
        als *= 1.0 / (self.best or 1.0)
        return als

    def kill(self, final: F, positions: I) -> None:
        """Never show ``positions`` (those in the pool)."""
        if positions.size == 0 or self.items.size == 0:
            return
        pos = np.minimum(np.searchsorted(self.items, positions), self.items.size - 1)
        hit = self.items[pos] == positions
        final[pos[hit]] = -np.inf
