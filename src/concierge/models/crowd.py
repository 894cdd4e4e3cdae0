"""The wisdom of the crowd: popularity, trending and item-to-item co-occurrence.

What a newcomer sees, and what backs up the individual model for everyone else.

* **Popularity** with time decay: each item's sum of interaction weights
  (:mod:`concierge.models.interactions`: strength by kind, ``1 + ln q``, half-life ``h``), also
  per segment of context (the person's country) and per size (``size=…`` facet of the line).
* **Trending**: distinct people who interacted in the last ``recent_days`` against the item's own
  daily rate over the ``baseline_days`` before, ``(recent/r + a) / (baseline/b + a)`` with a
  prior ``a`` so a one-off blip on a cold item does not trend; only items with at least
  ``min_trending`` recent people qualify.
* **Also bought** (same order), **also viewed** (same session), **bought after** (an item of a
  person's next order within ``after_days``): co-occurrence counts ``C = B^T B`` from a binary
  basket x item matrix ``B`` (for *bought after*, ``A^T B'`` with ``A`` an order and ``B'`` the
  person's next one), normalised as a shrunk cosine

      s(i, j) = C(i, j) / (sqrt(n_i n_j) + shrink)

  (Sarwar et al. 2001 item-based CF; the shrinkage of Koren 2008 §2.2 keeps rare pairs from
  reaching 1), keeping the ``neighbours`` strongest per item. Everything is sparse algebra and
  a vectorized per-row top-k; no Python loop over items or baskets.
* Per category popularity is this popularity restricted to the category's items, done at decision
  time (:mod:`concierge.decide`) against the live catalog.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import scipy.sparse as sp
from pydantic import Field

from concierge.models.base import ModelBase, ModelConfig
from concierge.models.idmap import IdMap
from concierge.models.interactions import idmap_of, positions, weights, with_sessions
from concierge.profiles.doc import DAY_US

F = npt.NDArray[np.float64]


class CrowdConfig(ModelConfig):
    """Hyper-parameters of :class:`CrowdModel`."""

    half_life_days: float = Field(30.0, gt=0, description="Half-life of popularity decay.")
    recent_days: float = Field(7.0, gt=0, description="Window of the trending numerator.")
    baseline_days: float = Field(56.0, gt=0, description="Window of the trending baseline.")
    trending_prior: float = Field(0.5, gt=0, description="Prior rate (people/day) of trending.")
    min_trending: int = Field(3, ge=1, description="Fewest recent people to trend.")
    neighbours: int = Field(50, ge=1, le=1000, description="Co-occurring items kept per item.")
    shrink: float = Field(5.0, ge=0, description="Shrinkage of the co-occurrence cosine.")
    after_days: float = Field(120.0, gt=0, description="Window of 'bought after' (next order).")
    session_gap_minutes: float = Field(30.0, gt=0, description="Gap that ends a session.")
    repeat_prior: float = Field(5.0, ge=0, description="Buyers' worth of prior on repeat rate.")
    segment_top: int = Field(500, ge=1, description="Items kept per segment and per size.")


def top_k_rows(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest entries of every row (vectorized: one lexsort of all entries)."""
    m = m.tocsr()
    m.sum_duplicates()
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    order = np.lexsort((-m.data, rows))
    rows_s = rows[order]
    starts = np.searchsorted(rows_s, rows_s, side="left")
    rank = np.arange(rows_s.size) - starts
    keep = order[rank < k]
    out = sp.csr_matrix(
        (m.data[keep], (rows[keep], m.indices[keep])), shape=m.shape, dtype=np.float32
    )
    out.sort_indices()
    return out


def cosine(a: sp.csr_matrix, b: sp.csr_matrix | None, shrink: float) -> sp.csr_matrix:
    """Shrunk cosine between the columns of ``a`` and of ``b`` (``b = a``: symmetric)."""
    a = (a > 0).astype(np.float32).tocsr()
    bb = a if b is None else (b > 0).astype(np.float32).tocsr()
    c = (a.T @ bb).tocoo()
    na = np.asarray(a.sum(axis=0)).ravel()
    nb = np.asarray(bb.sum(axis=0)).ravel()
    keep = c.row != c.col
    r, col, v = c.row[keep], c.col[keep], c.data[keep]
    s = v / (np.sqrt(na[r] * nb[col]) + shrink)
    return sp.csr_matrix((s.astype(np.float32), (r, col)), shape=c.shape)


def _groups(keys: pl.Series) -> npt.NDArray[np.int64]:
    return keys.rank("dense").cast(pl.Int64).to_numpy() - 1


def _binary(rows: npt.NDArray[np.int64], cols: npt.NDArray[np.int64], n: int) -> sp.csr_matrix:
    n_rows = int(rows.max()) + 1 if rows.size else 0
    m = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(n_rows, n))
    m.data[:] = 1.0
    m.sum_duplicates()
    m.data = np.minimum(m.data, 1.0)
    return m


def _csr_arrays(prefix: str, m: sp.csr_matrix) -> dict[str, npt.NDArray[Any]]:
    return {
        f"{prefix}_indptr": m.indptr.astype(np.int64),
        f"{prefix}_indices": m.indices.astype(np.int32),
        f"{prefix}_data": m.data.astype(np.float32),
    }


def _csr_from(prefix: str, arrays: dict[str, npt.NDArray[Any]], shape: tuple[int, int]) -> Any:
    return sp.csr_matrix(
        (arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], arrays[f"{prefix}_indptr"]),
        shape=shape,
    )


class CrowdModel(ModelBase[CrowdConfig]):
    """Popularity, trending and co-occurrence over the items of the log.

    Examples
    --------
    >>> import polars as pl
    >>> lines = pl.DataFrame({
    ...     "person_id": ["a", "a", "b", "b", "c"], "product_id": ["x", "y", "x", "y", "x"],
    ...     "variant_id": [None] * 5, "type": ["purchase"] * 5, "ts_us": [0, 0, 1, 1, 2],
    ...     "quantity": [1] * 5, "facets": [""] * 5, "event_id": ["o1", "o1", "o2", "o2", "o3"]})
    >>> m = CrowdModel().fit(lines, as_of_us=10)
    >>> m.item_ids_.tolist(), m.neighbours("also_bought", "x")[0]
    (['x', 'y'], ['y'])
    """

    name = "crowd"
    Config = CrowdConfig

    item_ids_: npt.NDArray[np.str_]
    popularity_: F
    recent_people_: F
    trending_: F
    repeat_rate_: F
    matrices_: dict[str, sp.csr_matrix]
    segments_: npt.NDArray[np.str_]
    sizes_: npt.NDArray[np.str_]
    as_of_us_: int

    KINDS = ("also_bought", "also_viewed", "bought_after")

    def fit(
        self,
        lines: pl.DataFrame,
        *,
        as_of_us: int,
        countries: pl.DataFrame | None = None,
        items: IdMap | None = None,
    ) -> CrowdModel:
        """Learn from interaction lines (:data:`concierge.models.interactions.SCHEMA`)."""
        cfg = self.config
        lines = lines.filter(pl.col("ts_us") <= as_of_us)
        imap = items or idmap_of(lines.get_column("product_id"))
        n = len(imap)
        lines = lines.with_columns(
            pl.Series("item", positions(lines.get_column("product_id"), imap))
        ).filter(pl.col("item") >= 0)
        w = weights(lines, as_of_us=as_of_us, half_life_days=cfg.half_life_days)
        lines = lines.with_columns(w.alias("w"))
        item = lines.get_column("item").to_numpy()
        pop = np.bincount(item, weights=lines.get_column("w").to_numpy(), minlength=n)
        self.popularity_ = np.maximum(pop, 0.0)

        # trending: distinct people recently vs the item's own baseline rate
        recent_lo = as_of_us - int(cfg.recent_days * DAY_US)
        base_lo = recent_lo - int(cfg.baseline_days * DAY_US)
        positive = lines.filter(pl.col("w") > 0)

        def people(lo: int, hi: int) -> F:
            g = (
                positive.filter((pl.col("ts_us") > lo) & (pl.col("ts_us") <= hi))
                .group_by("item")
                .agg(pl.col("person_id").n_unique().alias("n"))
            )
            out = np.zeros(n)
            out[g.get_column("item").to_numpy()] = g.get_column("n").to_numpy()
            return out

        recent = people(recent_lo, as_of_us)
        base = people(base_lo, recent_lo)
        a = cfg.trending_prior
        ratio = (recent / cfg.recent_days + a) / (base / cfg.baseline_days + a)
        self.recent_people_ = recent
        self.trending_ = np.where(recent >= cfg.min_trending, ratio, 0.0)

        # co-occurrence
        mats: dict[str, sp.csr_matrix] = {}
        buys = lines.filter(pl.col("type") == "purchase")
        self.repeat_rate_ = self._repeat_rate(buys, n)
        if buys.height:
            order = _groups(buys.get_column("event_id"))
            b = _binary(order, buys.get_column("item").to_numpy(), n)
            mats["also_bought"] = top_k_rows(cosine(b, None, cfg.shrink), cfg.neighbours)
            # next order of the same person within after_days
            orders = buys.group_by("event_id").agg(
                pl.col("person_id").first(), pl.col("ts_us").min()
            )
            orders = orders.with_columns(
                pl.Series("o", _groups(orders.get_column("event_id")))
            ).sort("person_id", "ts_us")
            nxt = orders.with_columns(
                pl.col("o").shift(-1).over("person_id").alias("o2"),
                pl.col("ts_us").shift(-1).over("person_id").alias("t2"),
            ).filter(
                pl.col("o2").is_not_null()
                & ((pl.col("t2") - pl.col("ts_us")) <= int(cfg.after_days * DAY_US))
            )
            if nxt.height:
                src = b[nxt.get_column("o").to_numpy()]
                dst = b[nxt.get_column("o2").cast(pl.Int64).to_numpy()]
                mats["bought_after"] = top_k_rows(cosine(src, dst, cfg.shrink), cfg.neighbours)
        views = lines.filter(pl.col("type") == "view")
        if views.height:
            views = with_sessions(views, gap_minutes=cfg.session_gap_minutes)
            v = _binary(
                _groups(views.get_column("session")), views.get_column("item").to_numpy(), n
            )
            mats["also_viewed"] = top_k_rows(cosine(v, None, cfg.shrink), cfg.neighbours)
        for kind in self.KINDS:
            mats.setdefault(kind, sp.csr_matrix((n, n), dtype=np.float32))

        # popularity per segment (country) and per size, top items only
        good = lines.filter(pl.col("w") > 0)
        seg_ids: list[str] = []
        if countries is not None and countries.height:
            segd = good.join(countries, on="person_id", how="inner")
            seg_ids = sorted(segd.get_column("country").unique().to_list())
            mats["segment"] = self._grouped(segd, "country", seg_ids, n)
        else:
            mats["segment"] = sp.csr_matrix((0, n), dtype=np.float32)
        sized = good.with_columns(
            pl.col("facets").str.extract(r"(?:^|\|)size=([^|]*)", 1).alias("size")
        ).filter(pl.col("size").is_not_null())
        size_ids = sorted(sized.get_column("size").unique().to_list())
        mats["size"] = self._grouped(sized, "size", size_ids, n)
        self.segments_ = np.array(seg_ids, dtype=np.str_)
        self.sizes_ = np.array(size_ids, dtype=np.str_)
        self.matrices_ = mats
        self.item_ids_ = imap.external
        self.as_of_us_ = int(as_of_us)
        self._index: IdMap | None = None
        return self._fitted()

    def _repeat_rate(self, buys: pl.DataFrame, n: int) -> F:
        """Share of an item's buyers who bought it in two orders or more, shrunk to the mean."""
        per = buys.group_by("item", "person_id").agg(pl.col("event_id").n_unique().alias("k"))
        g = per.group_by("item").agg(
            pl.len().alias("buyers"), (pl.col("k") > 1).sum().alias("repeaters")
        )
        buyers, rep = np.zeros(n), np.zeros(n)
        idx = g.get_column("item").to_numpy()
        buyers[idx] = g.get_column("buyers").to_numpy()
        rep[idx] = g.get_column("repeaters").to_numpy()
        mean = rep.sum() / buyers.sum() if buyers.sum() else 0.0
        prior = self.config.repeat_prior
        out: F = (rep + prior * mean) / (buyers + prior)
        return out

    def _grouped(self, df: pl.DataFrame, key: str, ids: list[str], n: int) -> sp.csr_matrix:
        if not ids:
            return sp.csr_matrix((0, n), dtype=np.float32)
        code = positions(df.get_column(key), IdMap(np.array(ids, dtype=np.str_)))
        m = sp.csr_matrix(
            (df.get_column("w").to_numpy(), (code, df.get_column("item").to_numpy())),
            shape=(len(ids), n),
        )
        m.sum_duplicates()
        return top_k_rows(m, self.config.segment_top)

    # -- reading ---------------------------------------------------------------------------

    @property
    def items(self) -> IdMap:
        self.check_fitted()
        if getattr(self, "_index", None) is None:
            self._index = IdMap(self.item_ids_)
        assert self._index is not None
        return self._index

    def popular(self, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` most popular items with their decayed popularity."""
        self.check_fitted()
        top = np.argsort(-self.popularity_, kind="stable")[:k]
        return [(str(self.item_ids_[i]), float(self.popularity_[i])) for i in top]

    def trending(self, k: int = 10) -> list[tuple[str, float]]:
        self.check_fitted()
        top = np.argsort(-self.trending_, kind="stable")[:k]
        return [
            (str(self.item_ids_[i]), float(self.trending_[i])) for i in top if self.trending_[i] > 0
        ]

    def neighbours(self, kind: str, product_id: str, k: int = 10) -> tuple[list[str], F]:
        """The items most often ``kind`` (also_bought, also_viewed, bought_after) with one."""
        self.check_fitted()
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {', '.join(self.KINDS)}")
        i = int(self.items.to_internal([product_id])[0])
        if i < 0:
            return [], np.zeros(0)
        row = self.matrices_[kind][i]
        order = np.argsort(-row.data, kind="stable")[:k]
        return [str(x) for x in self.item_ids_[row.indices[order]]], row.data[order].astype(float)

    def segment_popularity(self, segment: str) -> F | None:
        return self._row("segment", self.segments_, segment)

    def size_popularity(self, size: str) -> F | None:
        return self._row("size", self.sizes_, size)

    def _row(self, kind: str, ids: npt.NDArray[np.str_], key: str) -> F | None:
        self.check_fitted()
        pos = np.searchsorted(ids, key)
        if pos >= ids.size or ids[pos] != key:
            return None
        out: F = self.matrices_[kind][int(pos)].toarray().ravel().astype(np.float64)
        return out

    # -- artifact ---------------------------------------------------------------------------

    def _state(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        arrays: dict[str, npt.NDArray[Any]] = {
            "item_ids": self.item_ids_,
            "popularity": self.popularity_,
            "recent_people": self.recent_people_,
            "trending": self.trending_,
            "repeat_rate": self.repeat_rate_,
            "segments": self.segments_,
            "sizes": self.sizes_,
        }
        for kind, m in self.matrices_.items():
            arrays |= _csr_arrays(kind, m)
        return arrays, {"as_of_us": self.as_of_us_, "kinds": sorted(self.matrices_)}

    def _load_state(self, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> None:
        self.item_ids_ = arrays["item_ids"].astype(np.str_)
        n = self.item_ids_.size
        self.popularity_ = arrays["popularity"]
        self.recent_people_ = arrays["recent_people"]
        self.trending_ = arrays["trending"]
        self.repeat_rate_ = arrays["repeat_rate"]
        self.segments_ = arrays["segments"].astype(np.str_)
        self.sizes_ = arrays["sizes"].astype(np.str_)
        rows = {"segment": self.segments_.size, "size": self.sizes_.size}
        self.matrices_ = {
            kind: _csr_from(kind, arrays, (rows.get(kind, n), n)) for kind in meta["kinds"]
        }
        self.as_of_us_ = int(meta["as_of_us"])
        self._index = None

    def outputs(self) -> dict[str, Any]:
        """Everything learned, for comparisons in tests."""
        self.check_fitted()
        return {
            "popularity": self.popularity_,
            "trending": self.trending_,
            "repeat_rate": self.repeat_rate_,
            **{k: m.toarray() for k, m in sorted(self.matrices_.items())},
        }
