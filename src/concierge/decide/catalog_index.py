"""The catalog as arrays for the request path: ids, brands, categories, sellers, stock by size.

Loaded with two queries into Polars and kept in memory; :class:`CatalogCache` reloads it when the
catalog moves (a new or changed product, or a catalog event such as out-of-stock), checked with
one cheap query at most every ``check_every_s``. Filters use these arrays over the whole catalog
at once; the items finally chosen are checked against the database again (:func:`in_stock_now`),
so a sale a moment ago never shows a sold-out item.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import scipy.sparse as sp
from sqlalchemy import Connection, func, select

from concierge.models.idmap import IdMap
from concierge.store import tables as t
from concierge.store.engine import Store, among

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
    size_stock: sp.csr_matrix  # sizes x items, 1 where that size is in stock
    size_any: sp.csr_matrix  # sizes x items, 1 where the item comes in that size
    facets: pl.Series
    version: tuple[int, int, int]
    tokens: dict[str, I]  # word of title, brand, category or colour -> item positions
    by_category: I  # item positions ordered by category code
    category_starts: I  # by_category[category_starts[c]:category_starts[c + 1]] is category c
    _sized_cache: dict[tuple[str, ...], B] = field(default_factory=dict, repr=False)

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
        rows = self.sizes.to_internal(sizes) if sizes else np.zeros(0, np.int64)
        rows = rows[rows >= 0]
        if rows.size == 0:
            return self.available
        relevant = np.asarray(self.size_any[rows].sum(axis=0)).ravel() > 0
        fits = np.asarray(self.size_stock[rows].sum(axis=0)).ravel() > 0
        out: B = self.available & (~relevant | fits)
        return out

    def facet_mask(self, facet: str) -> B:
        from concierge.decide.rules import facet_mask

        return facet_mask(self.facets, facet)


def version(conn: Connection) -> tuple[int, int, int]:
    n, hi = conn.execute(select(func.count(), func.max(t.products.c.updated_us))).one()
    seq = conn.execute(select(func.max(t.catalog_events.c.seq))).scalar()
    return int(n or 0), int(hi or 0), int(seq or 0)


def load(conn: Connection) -> CatalogIndex:
    ver = version(conn)
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
        select(t.variants.c.product_id, t.variants.c.size, t.variants.c.stock),
        conn,
        schema_overrides={"product_id": pl.String(), "size": pl.String(), "stock": pl.Int64()},
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

    def by_size(sel: npt.NDArray[np.bool_]) -> sp.csr_matrix:
        rows = sizes.to_internal(size_col.filter(pl.Series(sel)).to_numpy().astype(np.str_))
        m = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, pos[sel])), shape=(len(sizes), n))
        m.sum_duplicates()
        return m

    size_stock = by_size(has_size & (stock > 0))
    size_any = by_size(has_size)
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
        available=in_stock & p.get_column("active").to_numpy().astype(bool),
        sized=sized,
        sizes=sizes,
        size_stock=size_stock,
        size_any=size_any,
        facets=p.get_column("facets").fill_null(""),
        version=ver,
        tokens=tokens,
        by_category=by_category,
        category_starts=category_starts,
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
    """The current :class:`CatalogIndex` of a store, reloaded when the catalog changes."""

    def __init__(self, store: Store, *, check_every_s: float = 1.0) -> None:
        self.store = store
        self.check_every_s = check_every_s
        self._lock = threading.Lock()
        self._index: CatalogIndex | None = None
        self._checked = -float("inf")

    def get(self, conn: Any | None = None) -> CatalogIndex:
        now = time.monotonic()
        if self._index is None or now - self._checked >= self.check_every_s:
            with self._lock:
                if self._index is None or time.monotonic() - self._checked >= self.check_every_s:
                    with self.store.read() as c:
                        ver = version(c)
                        if self._index is None or ver != self._index.version:
                            self._index = load(c)
                    self._checked = time.monotonic()
        assert self._index is not None
        return self._index

    def invalidate(self) -> None:
        self._checked = -float("inf")
