"""The catalog as arrays for the request path: ids, brands, categories, sellers, stock by size.

Loaded with two queries into Polars and kept in memory by :class:`CatalogCache`, which keeps it
current two ways:

* **stock, at every request**: the request's read transaction asks for the catalog events after
  the last one the arrays reflect (one primary-key range query, empty almost always). Every
  change of a variant between out of stock and in stock is such an event (``set_stock`` and the
  feed import both record ``out_of_stock`` / ``back_in_stock``), so the variants of the products
  named are read again and the arrays patched in place of a reload (:meth:`CatalogIndex.patched`):
  a sale that empties a size stops its recommendation at the next request, in every process;
* **everything else** (a new or changed product, a deactivation, new sizes), by a cheap version
  check (count and newest ``updated_us``, both from an index) at most every ``check_every_s``,
  or at once in the process that made the change (:meth:`CatalogCache.invalidate`): the index
  is loaded again (seconds on 100,000 products, so not per stock change).

Stock written to the ``variants`` table by hand, outside the catalog service, records no event
and is not seen until the next reload.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from sqlalchemy import Connection, func, select

from concierge.models.idmap import IdMap
from concierge.store import tables as t
from concierge.store.engine import RawReader, Store, among

WORD = re.compile(r"[0-9a-z]{2,}")
B = npt.NDArray[np.bool_]
I = npt.NDArray[np.int64]  # noqa: E741


def _codes(s: pl.Series) -> tuple[I, npt.NDArray[np.str_]]:
    filled = s.fill_null("")
    names = np.array(sorted(set(filled.unique().to_list()) | {""}), dtype=np.str_)  # 0: none
    code = np.searchsorted(names, filled.to_numpy().astype(np.str_)).astype(np.int64)
    return code, names


@dataclass(frozen=True)
class CatalogIndex:
    ids: IdMap
    titles: npt.NDArray[np.str_]
    brand: I
    brand_names: npt.NDArray[np.str_]
    category: I  # the full path (leaf) as one code
    category_names: npt.NDArray[np.str_]
    seller: npt.NDArray[np.str_]  # "" when not a listing
    listings: dict[str, I]  # seller id -> positions of their listings
    one_of_a_kind: B
    available: B  # active and some variant in stock
    sized: B  # has variants with sizes
    sizes: IdMap
    facets: pl.Series
    version: tuple[int, int]  # products: count, newest updated_us (see structure_version)
    tokens: dict[str, I]  # word of title, brand, category or colour -> item positions
    by_category: I  # item positions ordered by category code
    category_starts: I  # by_category[category_starts[c]:category_starts[c + 1]] is category c
    # the variants, grouped by item (item i owns var_start[i]:var_start[i + 1]), by variant id
    active: B = field(default_factory=lambda: np.zeros(0, bool))
    var_start: I = field(default_factory=lambda: np.zeros(1, np.int64))
    var_item: I = field(default_factory=lambda: np.zeros(0, np.int64))
    var_id: npt.NDArray[np.str_] = field(default_factory=lambda: np.zeros(0, np.str_))
    var_size: I = field(default_factory=lambda: np.zeros(0, np.int64))  # in sizes, -1: none
    var_stocked: B = field(default_factory=lambda: np.zeros(0, bool))
    by_size: I = field(default_factory=lambda: np.zeros(0, np.int64))  # variants by size code
    size_starts: I = field(default_factory=lambda: np.zeros(1, np.int64))  # as category_starts
    stock_seq: int = 0  # the newest catalog event the stock arrays reflect
    _sized_cache: dict[tuple[str, ...], B] = field(default_factory=dict, repr=False)
    _positions: dict[str, int] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    def matching(self, query: str) -> tuple[I, npt.NDArray[np.float64]]:
        """Items matching the words of a search ``query``, with the share of its words each
        matches (a session signal, not a search engine)."""
        words = sorted(set(WORD.findall(query.lower())))
        hits = [self.tokens[w] for w in words if w in self.tokens]
        if not hits:
            return np.zeros(0, np.int64), np.zeros(0)
        u, counts = np.unique(np.concatenate(hits), return_counts=True)
        return u.astype(np.int64), counts / len(words)

    def items_of(self, categories: I) -> I:
        """Positions of every item in the given category codes."""
        parts = [
            self.by_category[self.category_starts[c] : self.category_starts[c + 1]]
            for c in categories.tolist()
        ]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def allowed_in(self, sizes: list[str]) -> B:
        """:meth:`in_size`, cached per set of sizes (read-only: never modify the result)."""
        key = tuple(sorted(sizes))
        got = self._sized_cache.get(key)
        if got is None:
            if len(self._sized_cache) > 256:
                self._sized_cache.clear()
            got = self.in_size(list(key))
            got.flags.writeable = False
            self._sized_cache[key] = got
        return got

    def in_size(self, sizes: list[str]) -> B:
        """Available, and in one of the shopper's ``sizes`` for items made in any of them.

        Sizes belong to systems (shoe sizes, clothing sizes): an item none of whose sizes is
        among the shopper's is judged on its stock alone, since we do not know their size there.
        """
        return self.in_size_at(None, sizes)

    def in_size_at(self, items: I | None, sizes: list[str] | tuple[str, ...]) -> B:
        """:meth:`in_size` for the positions ``items`` only (all items when ``None``)."""
        rows = self.sizes.to_internal(list(sizes)) if sizes else np.zeros(0, np.int64)
        rows = rows[rows >= 0]
        avail = self.available if items is None else self.available[items]
        if rows.size == 0:
            return avail.copy() if items is not None else avail
        if items is None:  # the variants in these sizes, from the per-size lists
            var = np.concatenate(
                [self.by_size[self.size_starts[r] : self.size_starts[r + 1]] for r in rows.tolist()]
            )
            owner, m = self.var_item[var], len(self)
            sel = np.ones(var.size, dtype=bool)
        else:
            var, owner = row_ranges(self.var_start, items)
            m = items.size
            sel = np.isin(self.var_size[var], rows)
        relevant = np.zeros(m, dtype=bool)
        relevant[owner[sel]] = True
        fits = np.zeros(m, dtype=bool)
        fits[owner[sel & self.var_stocked[var]]] = True
        out: B = avail & (~relevant | fits)
        return out

    def position_of(self) -> dict[str, int]:
        """Product id -> position, as a dict (built at first use, about 30 ms per 100,000):
        the few ids of one request are looked up faster than by a search over the id array."""
        got = self._positions
        if not got and len(self):
            got = dict(zip(self.ids.external.tolist(), range(len(self)), strict=True))
            self._positions.update(got)
        return self._positions

    def size_codes(self, sizes: list[str]) -> set[int]:
        """The codes of the shopper's ``sizes`` that some variant comes in."""
        if not sizes:
            return set()
        rows = self.sizes.to_internal(sizes)
        return set(rows[rows >= 0].tolist())

    def variant_to_show(self, i: int, sizes: set[int]) -> str | None:
        """The in-stock variant in one of the shopper's sizes (codes, see :meth:`size_codes`),
        or the only variant of a product that has one (``None`` otherwise)."""
        lo, hi = int(self.var_start[i]), int(self.var_start[i + 1])
        if sizes:
            for j in range(lo, hi):
                if self.var_stocked[j] and int(self.var_size[j]) in sizes:
                    return str(self.var_id[j])
        return str(self.var_id[lo]) if hi - lo == 1 else None

    def patched(
        self, rows: list[tuple[Any, ...]], changed: list[str], seq: int
    ) -> CatalogIndex | None:
        """This index with the stock of the products ``changed`` taken from ``rows``, their
        variants now (product_id, variant_id, size, stock), reflecting events up to ``seq``.

        ``None`` when a patch cannot say it: an unknown product, or variants added, dropped or
        resized (the index must be loaded again).
        """
        pos = self.ids.to_internal(changed) if changed else np.zeros(0, np.int64)
        if (pos < 0).any():
            return None
        now: dict[tuple[str, str], tuple[str | None, int]] = {
            (str(p), str(v)): (sz, int(st)) for p, v, sz, st in rows
        }
        var, _owner = row_ranges(self.var_start, pos)
        if var.size != len(now):
            return None
        stocked = self.var_stocked.copy()
        size_names = self.sizes.external
        for j in var.tolist():
            got = now.get((str(self.ids.external[self.var_item[j]]), str(self.var_id[j])))
            code = int(self.var_size[j])
            if got is None or got[0] != (str(size_names[code]) if code >= 0 else None):
                return None
            stocked[j] = got[1] > 0
        in_stock = self.available.copy()  # only the changed items are recomputed below
        any_stock = np.zeros(pos.size, dtype=bool)
        _v, owner = row_ranges(self.var_start, pos)
        any_stock[owner[stocked[var]]] = True
        in_stock[pos] = any_stock & self.active[pos]
        out = dataclasses.replace(
            self, available=in_stock, var_stocked=stocked, stock_seq=seq, _sized_cache={}
        )
        for key, old in list(self._sized_cache.items()):  # patched, not rebuilt
            mask = old.copy()
            mask[pos] = out.in_size_at(pos, key)
            mask.flags.writeable = False
            out._sized_cache[key] = mask
        return out

    def facet_mask(self, facet: str) -> B:
        from concierge.decide.rules import facet_mask

        return facet_mask(self.facets, facet)


def structure_version(conn: Connection) -> tuple[int, int]:
    """How many products, and the newest ``updated_us`` (two index lookups: separate queries,
    since SQLite answers ``count(*), max(...)`` together by a scan of the table)."""
    n = conn.execute(select(func.count()).select_from(t.products)).scalar()
    hi = conn.execute(select(func.max(t.products.c.updated_us))).scalar()
    return int(n or 0), int(hi or 0)


def row_ranges(start: npt.NDArray[np.integer[Any]], items: I) -> tuple[I, I]:
    """The entries of rows ``items`` of a CSR-like layout whose row ``i`` is
    ``start[i]:start[i + 1]`` (the variants of items, a sparse matrix's ``indptr``), and for
    each entry which of ``items`` owns it (its index in ``items``)."""
    lo, hi = start[items], start[items + 1]
    lens = hi - lo
    owner = np.repeat(np.arange(items.size), lens)
    first = np.cumsum(lens) - lens
    var = (lo[owner] + np.arange(int(lens.sum())) - first[owner]).astype(np.int64)
    return var, owner.astype(np.int64)


def load(conn: Connection) -> CatalogIndex:
    ver = structure_version(conn)
    seq = int(conn.execute(select(func.max(t.catalog_events.c.seq))).scalar() or 0)
    p = pl.read_database(
        select(
            t.products.c.product_id,
            t.products.c.title,
            t.products.c.brand,
            t.products.c.category,
            t.products.c.seller_id,
            t.products.c.one_of_a_kind,
            t.products.c.active,
            t.products.c.facets,
        ).order_by(t.products.c.product_id),
        conn,
        schema_overrides={
            "product_id": pl.String(),
            "title": pl.String(),
            "brand": pl.String(),
            "category": pl.String(),
            "seller_id": pl.String(),
            "one_of_a_kind": pl.Boolean(),
            "active": pl.Boolean(),
            "facets": pl.String(),
        },
    )
    v = pl.read_database(
        select(
            t.variants.c.product_id, t.variants.c.variant_id, t.variants.c.size, t.variants.c.stock
        ),
        conn,
        schema_overrides={
            "product_id": pl.String(),
            "variant_id": pl.String(),
            "size": pl.String(),
            "stock": pl.Int64(),
        },
    )
    ids = IdMap(p.get_column("product_id").to_numpy().astype(np.str_))
    n = len(ids)
    pos = (
        ids.to_internal(v.get_column("product_id").to_numpy())
        if v.height
        else np.zeros(0, np.int64)
    )
    stock = v.get_column("stock").to_numpy() if v.height else np.zeros(0, np.int64)
    keep = pos >= 0
    in_stock = np.zeros(n, dtype=bool)
    in_stock[pos[keep & (stock > 0)]] = True
    size_col = v.get_column("size") if v.height else pl.Series([], dtype=pl.String)
    has_size = size_col.is_not_null().to_numpy() & keep
    sized = np.zeros(n, dtype=bool)
    sized[pos[has_size]] = True
    size_vals = size_col.filter(pl.Series(has_size)).to_numpy().astype(np.str_)
    sizes = IdMap.from_values(size_vals)

    var_size = np.full(pos.size, -1, dtype=np.int64)
    var_size[has_size] = sizes.to_internal(size_vals)
    vid = (
        v.get_column("variant_id").to_numpy().astype(np.str_) if v.height else np.zeros(0, np.str_)
    )
    order = np.lexsort((vid[keep], pos[keep])) if pos.size else pos
    kept = np.flatnonzero(keep)[order]
    var_item = pos[kept].astype(np.int64)
    var_start = np.searchsorted(var_item, np.arange(n + 1)).astype(np.int64)
    sized_vars = np.flatnonzero(var_size[kept] >= 0)
    by_size = sized_vars[np.argsort(var_size[kept][sized_vars], kind="stable")].astype(np.int64)
    size_starts = np.searchsorted(var_size[kept][by_size], np.arange(len(sizes) + 1)).astype(
        np.int64
    )
    active = p.get_column("active").to_numpy().astype(bool)
    seller = p.get_column("seller_id").fill_null("").to_numpy().astype(np.str_)
    has = np.flatnonzero(seller != "")
    listings: dict[str, I] = {}
    if has.size:
        order = has[np.argsort(seller[has], kind="stable")]
        names, starts = np.unique(seller[order], return_index=True)
        for name, part in zip(names.tolist(), np.split(order, starts[1:]), strict=True):
            listings[name] = part.astype(np.int64)  # one entry per seller, not per product
    brand, brand_names = _codes(p.get_column("brand"))
    category, category_names = _codes(p.get_column("category"))
    text = p.select(
        pl.concat_str(
            [pl.col(c).fill_null("") for c in ("title", "brand", "category")], separator=" "
        )
        .str.to_lowercase()
        .alias("text")
    ).get_column("text")
    words = (
        pl.DataFrame({"i": np.arange(n, dtype=np.int64), "text": text})
        .with_columns(pl.col("text").str.extract_all(WORD.pattern).alias("w"))
        .explode("w")
        .filter(pl.col("w").is_not_null())
        .unique(["w", "i"])
        .group_by("w")
        .agg(pl.col("i").sort())
    )
    tokens = {  # one entry per distinct word, not per product
        w: np.asarray(i, dtype=np.int64)
        for w, i in zip(
            words.get_column("w").to_list(), words.get_column("i").to_list(), strict=True
        )
    }
    by_category = np.argsort(category, kind="stable").astype(np.int64)
    category_starts = np.searchsorted(
        category[by_category], np.arange(category_names.size + 1)
    ).astype(np.int64)
    return CatalogIndex(
        ids=ids,
        titles=p.get_column("title").fill_null("").to_numpy().astype(np.str_),
        brand=brand,
        brand_names=brand_names,
        category=category,
        category_names=category_names,
        seller=seller,
        listings=listings,
        one_of_a_kind=p.get_column("one_of_a_kind").to_numpy().astype(bool),
        available=in_stock & active,
        sized=sized,
        sizes=sizes,
        facets=p.get_column("facets").fill_null(""),
        version=ver,
        tokens=tokens,
        by_category=by_category,
        category_starts=category_starts,
        active=active,
        var_start=var_start,
        var_item=var_item,
        var_id=vid[kept],
        var_size=var_size[kept],
        var_stocked=(stock[kept] > 0),
        by_size=by_size,
        size_starts=size_starts,
        stock_seq=seq,
    )


def in_stock_now(
    conn: Connection,
    product_ids: list[str],
    sizes: list[str],
    variants: dict[str, str] | None = None,
) -> dict[str, bool]:
    """Whether each product is in stock right now, by the rule of :meth:`CatalogIndex.in_size`
    (in one of ``sizes`` when it is made in any of them). Whether it is active comes from the
    index (a deactivation is a product update, which reloads it).

    ``variants``, when given, receives the variant to show: the in-stock one in the shopper's
    size, or the only variant of a product that has one.
    """
    mine = set(sizes)
    relevant: set[str] = set()
    fits: dict[str, str] = {}
    stocked: set[str] = set()
    count: dict[str, int] = {}
    only: dict[str, str] = {}
    for clause in among(conn, t.variants.c.product_id, product_ids):
        for pid, vid, sz, stock in conn.execute(
            select(
                t.variants.c.product_id,
                t.variants.c.variant_id,
                t.variants.c.size,
                t.variants.c.stock,
            ).where(clause)
        ):
            count[pid] = count.get(pid, 0) + 1
            only[pid] = vid
            if stock > 0:
                stocked.add(pid)
            if sz is not None and sz in mine:
                relevant.add(pid)
                if stock > 0:
                    fits.setdefault(pid, vid)
    out = {p: p in stocked and (p not in relevant or p in fits) for p in product_ids}
    if variants is not None:
        for p, ok in out.items():
            if ok and p in fits:
                variants[p] = fits[p]
            elif ok and count.get(p) == 1:
                variants[p] = only[p]
    return out


class CatalogCache:
    """The current :class:`CatalogIndex` of a store, kept current (see the module docstring)."""

    MAX_PATCH = 2000  # catalog events past which a reload is cheaper than a patch

    def __init__(self, store: Store, *, check_every_s: float = 1.0) -> None:
        self.store = store
        self.check_every_s = check_every_s
        self._lock = threading.Lock()
        self._index: CatalogIndex | None = None
        self._checked = -float("inf")
        self._stale = False

    def get(self, reader: RawReader | None = None) -> CatalogIndex:
        """The index, its stock as of now; ``reader`` is the caller's read transaction (one
        is opened when not given)."""
        if self._due():
            with self._lock:
                if self._due():
                    with self.store.read() as c:
                        index = self._index
                        if self._stale or index is None or structure_version(c) != index.version:
                            self._stale = False
                            self._index = load(c)
                    self._checked = time.monotonic()
        if reader is None:
            with self.store.raw_read() as r:
                return self._current(r)
        return self._current(reader)

    def _due(self) -> bool:
        return (
            self._stale
            or self._index is None
            or time.monotonic() - self._checked >= self.check_every_s
        )

    def _current(self, reader: RawReader) -> CatalogIndex:
        index = self._index
        assert index is not None
        events = reader.rows(
            "SELECT seq, product_id FROM catalog_events WHERE seq > ? ORDER BY seq LIMIT ?",
            [index.stock_seq, self.MAX_PATCH + 1],
        )
        if not events:
            return index
        with self._lock:
            index = self._index
            assert index is not None
            events = [e for e in events if int(e[0]) > index.stock_seq]
            if not events:
                return index
            changed = sorted({str(e[1]) for e in events})
            got = None
            if len(events) <= self.MAX_PATCH:
                rows: list[tuple[Any, ...]] = []
                for i in range(0, len(changed), 500):
                    part = changed[i : i + 500]
                    clause, params = reader.among("product_id", part)
                    rows += reader.rows(
                        f"SELECT product_id, variant_id, size, stock FROM variants WHERE {clause}",
                        params,
                    )
                got = index.patched(rows, changed, int(events[-1][0]))
            if got is None:  # the catalog's shape moved: load it again
                with self.store.read() as c:
                    got = load(c)
                self._checked = time.monotonic()
            self._index = got
            return got

    def invalidate(self) -> None:
        """This process changed products: load the index again at the next request."""
        self._stale = True
