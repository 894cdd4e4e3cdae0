"""The catalog: products, variants with stock, marketplace listings, and catalog events.

Price drops and stock changes are recorded in ``catalog_events`` as they happen (by feed import or
through the API), so that campaigns can react later (back in stock, price drop). Availability is a
question asked at decision time (:func:`available`), never cached in a recommendation.

Each product carries its *facets*, the strings affinities are counted over
(``brand=…|cat=Shoes|cat=Shoes>Running|dept=men|colour=black|price=64-128|attr:drop=4 mm``);
ingest copies them, with the variant's size, onto each interaction (see ``event_items.facets``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
import polars as pl
from sqlalchemy import (
    Connection,
    and_,
    func,
    select,
    update,
)

from concierge.errors import InputError, NotFoundError
from concierge.schema.catalog import PriceUpdate, Product, StockUpdate, Variant
from concierge.store import tables as t
from concierge.store.engine import Store, among

CHUNK = 500  # ids per IN (...) query


def _clean(value: str) -> str:
    return value.replace("|", "/").strip()


def price_band(price: float | None) -> str | None:
    """A logarithmic price band: 0-1, 1-2, 2-4, …, 64-128, …"""
    if price is None or price < 0 or math.isnan(price):
        return None
    if price < 1:
        return "0-1"
    lo = 2 ** math.floor(math.log2(price))
    return f"{lo}-{lo * 2}"


def product_facets(p: Product) -> str:
    facets: list[str] = []
    if p.brand:
        facets.append(f"brand={_clean(p.brand)}")
    for depth in range(1, len(p.category) + 1):
        facets.append("cat=" + ">".join(_clean(c) for c in p.category[:depth]))
    if p.department:
        facets.append(f"dept={_clean(p.department)}")
    if p.colour:
        facets.append(f"colour={_clean(p.colour)}")
    for k, v in sorted(p.attributes.items()):
        facets.append(f"attr:{_clean(k)}={_clean(v)}")
    return "|".join(facets)


def _chunks(ids: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(ids), CHUNK):
        yield ids[i : i + CHUNK]


def _row(p: Product, now_us: int) -> dict[str, Any]:
    return {
        "product_id": p.product_id,
        "title": p.title,
        "brand": p.brand,
        "category": " > ".join(p.category) or None,
        "department": p.department,
        "colour": p.colour,
        "price": p.price,
        "currency": p.currency,
        "active": p.active,
        "seller_id": p.seller_id,
        "one_of_a_kind": p.one_of_a_kind,
        "facets": product_facets(p),
        "doc": p.model_dump_json(exclude={"variants"}),
        "updated_us": now_us,
    }


def _default_variants(p: Product) -> list[Variant]:
    # A product without variants is sold as one default variant named after it.
    return p.variants or [Variant(variant_id=p.product_id, stock=0)]


def upsert_products(
    conn: Connection,
    store: Store,
    products: Sequence[Product],
    *,
    now_us: int,
    record_new: bool = True,
) -> dict[str, int]:
    """Insert or replace products and their variants; record what changed as catalog events.

    Returns counts: ``created``, ``updated``, ``price_drop``, ``back_in_stock``, ….
    """
    by_id = {p.product_id: p for p in products}  # the last one of a repeated id wins
    ids = list(by_id)
    old_price: dict[str, float] = {}
    old_stock: dict[tuple[str, str], int] = {}
    for chunk in _chunks(ids):
        for pid, price in conn.execute(
            select(t.products.c.product_id, t.products.c.price).where(
                t.products.c.product_id.in_(chunk)
            )
        ):
            old_price[pid] = price
        for pid, vid, stock in conn.execute(
            select(t.variants.c.product_id, t.variants.c.variant_id, t.variants.c.stock).where(
                t.variants.c.product_id.in_(chunk)
            )
        ):
            old_stock[(pid, vid)] = stock
    counts = {"created": 0, "updated": 0}
    cat_events: list[dict[str, Any]] = []

    def note(kind: str, pid: str, vid: str | None, old: float | None, new: float | None) -> None:
        counts[kind] = counts.get(kind, 0) + 1
        cat_events.append(
            {
                "type": kind,
                "product_id": pid,
                "variant_id": vid,
                "old_value": old,
                "new_value": new,
                "ts_us": now_us,
            }
        )

    variant_rows: list[dict[str, Any]] = []
    for pid, p in by_id.items():
        if pid in old_price:
            counts["updated"] += 1
            if p.price < old_price[pid]:
                note("price_drop", pid, None, old_price[pid], p.price)
            elif p.price > old_price[pid]:
                note("price_rise", pid, None, old_price[pid], p.price)
        else:
            counts["created"] += 1
            if record_new:
                note("new_product", pid, None, None, p.price)
        for v in _default_variants(p):
            before = old_stock.get((pid, v.variant_id))
            if before is not None and before == 0 and v.stock > 0:
                note("back_in_stock", pid, v.variant_id, before, v.stock)
            elif before is not None and before > 0 and v.stock == 0:
                note("out_of_stock", pid, v.variant_id, before, 0)
            variant_rows.append(
                {
                    "product_id": pid,
                    "variant_id": v.variant_id,
                    "size": v.size,
                    "stock": v.stock,
                    "price": v.price,
                }
            )
    rows = [_row(p, now_us) for p in by_id.values()]
    if rows:
        ins = store.insert(t.products)
        conn.execute(
            ins.on_conflict_do_update(
                index_elements=["product_id"],
                set_={c: getattr(ins.excluded, c) for c in rows[0] if c != "product_id"},
            ),
            rows,
        )
        # variants are replaced as a whole: a size dropped from the feed is gone
        for chunk in _chunks(ids):
            conn.execute(t.variants.delete().where(t.variants.c.product_id.in_(chunk)))
        conn.execute(t.variants.insert(), variant_rows)
    if cat_events:
        conn.execute(t.catalog_events.insert(), cat_events)
    return counts


def set_stock(conn: Connection, updates: Sequence[StockUpdate], *, now_us: int) -> dict[str, int]:
    counts: dict[str, int] = {"updated": 0}
    events: list[dict[str, Any]] = []
    for i, u in enumerate(updates):
        vid = u.variant_id or _only_variant(conn, u.product_id, i)
        before = conn.execute(
            select(t.variants.c.stock).where(
                and_(t.variants.c.product_id == u.product_id, t.variants.c.variant_id == vid)
            )
        ).scalar()
        if before is None:
            raise InputError.one("variant_id", f"no variant {vid!r} of product {u.product_id!r}", i)
        conn.execute(
            update(t.variants)
            .where(and_(t.variants.c.product_id == u.product_id, t.variants.c.variant_id == vid))
            .values(stock=u.stock)
        )
        counts["updated"] += 1
        kind = (
            "back_in_stock"
            if before == 0 and u.stock > 0
            else "out_of_stock"
            if before > 0 and u.stock == 0
            else None
        )
        if kind:
            counts[kind] = counts.get(kind, 0) + 1
            events.append(
                {
                    "type": kind,
                    "product_id": u.product_id,
                    "variant_id": vid,
                    "old_value": before,
                    "new_value": u.stock,
                    "ts_us": now_us,
                }
            )
    if events:
        conn.execute(t.catalog_events.insert(), events)
    return counts


def mark_sold(conn: Connection, product_ids: Sequence[str], *, now_us: int) -> int:
    """A ``sale`` of a one-of-a-kind item takes it out of stock at once (its seller's feed may
    follow much later): every variant still in stock goes to 0, recorded as ``out_of_stock``
    catalog events, so recommendations and campaigns stop offering it. Called in the append
    transaction of the sale, once per stored sale event; items that are not one-of-a-kind
    keep their stock (a sale of one of many is the feed's business). Returns variants changed."""
    if not product_ids:
        return 0
    rows: list[Any] = []
    for chunk in _chunks(list(product_ids)):
        rows += conn.execute(
            select(t.variants.c.product_id, t.variants.c.variant_id, t.variants.c.stock)
            .join(t.products, t.products.c.product_id == t.variants.c.product_id)
            .where(
                t.products.c.one_of_a_kind,
                t.variants.c.stock > 0,
                t.variants.c.product_id.in_(chunk),
            )
        ).all()
    if not rows:
        return 0
    for pid, vid, _stock in rows:
        conn.execute(
            update(t.variants)
            .where(and_(t.variants.c.product_id == pid, t.variants.c.variant_id == vid))
            .values(stock=0)
        )
    conn.execute(
        t.catalog_events.insert(),
        [
            {
                "type": "out_of_stock",
                "product_id": pid,
                "variant_id": vid,
                "old_value": stock,
                "new_value": 0,
                "ts_us": now_us,
            }
            for pid, vid, stock in rows
        ],
    )
    return len(rows)


def _only_variant(conn: Connection, product_id: str, index: int) -> str:
    vids = (
        conn.execute(select(t.variants.c.variant_id).where(t.variants.c.product_id == product_id))
        .scalars()
        .all()
    )
    if not vids:
        raise InputError.one("product_id", f"unknown product {product_id!r}", index)
    if len(vids) > 1:
        raise InputError.one(
            "variant_id", f"product {product_id!r} has sizes: name the variant", index
        )
    return str(vids[0])


def set_price(conn: Connection, updates: Sequence[PriceUpdate], *, now_us: int) -> dict[str, int]:
    counts: dict[str, int] = {"updated": 0}
    for i, u in enumerate(updates):
        row = conn.execute(
            select(t.products.c.price, t.products.c.doc).where(
                t.products.c.product_id == u.product_id
            )
        ).first()
        if row is None:
            raise InputError.one("product_id", f"unknown product {u.product_id!r}", i)
        old = row.price
        if u.variant_id is not None:
            n = conn.execute(
                update(t.variants)
                .where(
                    and_(
                        t.variants.c.product_id == u.product_id,
                        t.variants.c.variant_id == u.variant_id,
                    )
                )
                .values(price=u.price)
            ).rowcount
            if n == 0:
                raise InputError.one("variant_id", f"no variant {u.variant_id!r}", i)
        else:
            doc = orjson.loads(row.doc)
            doc["price"] = u.price
            p = Product.model_validate({**doc, "variants": []})
            conn.execute(
                update(t.products)
                .where(t.products.c.product_id == u.product_id)
                .values(
                    price=u.price,
                    doc=orjson.dumps(doc).decode(),
                    facets=product_facets(p),
                    updated_us=now_us,
                )
            )
        counts["updated"] += 1
        if u.price != old and u.variant_id is None:
            kind = "price_drop" if u.price < old else "price_rise"
            counts[kind] = counts.get(kind, 0) + 1
            conn.execute(
                t.catalog_events.insert().values(
                    type=kind,
                    product_id=u.product_id,
                    variant_id=None,
                    old_value=old,
                    new_value=u.price,
                    ts_us=now_us,
                )
            )
    return counts


def get_product(conn: Connection, product_id: str) -> Product:
    row = conn.execute(
        select(t.products.c.doc).where(t.products.c.product_id == product_id)
    ).first()
    if row is None:
        raise NotFoundError("product", product_id)
    variants = [
        Variant(variant_id=v.variant_id, size=v.size, stock=v.stock, price=v.price)
        for v in conn.execute(
            select(t.variants)
            .where(t.variants.c.product_id == product_id)
            .order_by(t.variants.c.variant_id)
        )
    ]
    return Product.model_validate({**orjson.loads(row.doc), "variants": variants})


def list_products(
    conn: Connection, *, limit: int = 100, offset: int = 0, with_stock: bool = False
) -> list[dict[str, Any]]:
    cols: list[Any] = [
        t.products.c.product_id,
        t.products.c.title,
        t.products.c.brand,
        t.products.c.category,
        t.products.c.price,
        t.products.c.currency,
        t.products.c.active,
    ]
    q = select(*cols).order_by(t.products.c.product_id).limit(limit).offset(offset)
    if with_stock:
        v = (
            select(
                t.variants.c.product_id,
                func.sum(t.variants.c.stock).label("stock"),
                func.count().label("variants"),
            )
            .group_by(t.variants.c.product_id)
            .subquery()
        )
        q = (
            select(
                *cols,
                func.coalesce(v.c.stock, 0).label("stock"),
                func.coalesce(v.c.variants, 0).label("variants"),
            )
            .select_from(t.products.outerjoin(v, v.c.product_id == t.products.c.product_id))
            .order_by(t.products.c.product_id)
            .limit(limit)
            .offset(offset)
        )
    return [dict(r._mapping) for r in conn.execute(q)]


def catalog_events(
    conn: Connection, *, since_seq: int = 0, limit: int = 1000
) -> list[dict[str, Any]]:
    q = (
        select(t.catalog_events)
        .where(t.catalog_events.c.seq > since_seq)
        .order_by(t.catalog_events.c.seq)
        .limit(limit)
    )
    return [dict(r._mapping) for r in conn.execute(q)]


def available(conn: Connection, product_id: str, *, size: str | None = None) -> bool:
    """In stock now (in that size, when given), and active."""
    q = (
        select(t.variants.c.stock)
        .join(t.products, t.products.c.product_id == t.variants.c.product_id)
        .where(
            t.variants.c.product_id == product_id,
            t.products.c.active.is_(True),
            t.variants.c.stock > 0,
        )
    )
    if size is not None:
        q = q.where(t.variants.c.size == size)
    return conn.execute(q.limit(1)).first() is not None


def item_facets(conn: Connection, items: pl.DataFrame) -> pl.DataFrame:
    """Add the ``facets`` column to an ITEMS frame from the catalog as it is now."""
    if items.height == 0:
        return items.with_columns(pl.lit("", dtype=pl.String).alias("facets"))
    pids = items.get_column("product_id").unique().to_list()
    prod: list[tuple[str, str, float]] = []
    var: list[tuple[str, str, str | None]] = []
    for clause in among(conn, t.products.c.product_id, pids):
        prod += [
            tuple(r)
            for r in conn.execute(
                select(t.products.c.product_id, t.products.c.facets, t.products.c.price).where(
                    clause
                )
            )
        ]
    for clause in among(conn, t.variants.c.product_id, pids):
        var += [
            tuple(r)
            for r in conn.execute(
                select(t.variants.c.product_id, t.variants.c.variant_id, t.variants.c.size).where(
                    clause, t.variants.c.size.is_not(None)
                )
            )
        ]
    pf = pl.DataFrame(
        prod,
        schema={"product_id": pl.String, "pfacets": pl.String, "pprice": pl.Float64},
        orient="row",
    )
    vf = pl.DataFrame(
        var,
        schema={"product_id": pl.String, "variant_id": pl.String, "size": pl.String},
        orient="row",
    )
    out = items.join(pf, on="product_id", how="left").join(
        vf, on=["product_id", "variant_id"], how="left"
    )
    band = _price_band_expr(pl.coalesce(pl.col("unit_price"), pl.col("pprice")))
    size = "size=" + pl.col("size").str.replace_all("|", "/", literal=True)
    facets = pl.concat_str(
        [
            pl.when(pl.col("pfacets") != "").then(pl.col("pfacets")),
            size,
            pl.when(pl.col("pfacets").is_not_null()).then(band),
        ],
        separator="|",
        ignore_nulls=True,
    ).fill_null("")
    return out.with_columns(facets.alias("facets")).drop("pfacets", "pprice", "size")


PG_FACETS = (  # the facets of products (twice: their ids as one array)
    "SELECT 'p', product_id, facets, price, NULL::varchar FROM products"
    " WHERE product_id = ANY(%b::varchar[])"
    " UNION ALL SELECT 'v', product_id, variant_id, NULL::float8, size FROM variants"
    " WHERE product_id = ANY(%b::varchar[]) AND size IS NOT NULL"
)


@functools.lru_cache(maxsize=512)
def _sqlite_facets(n: int) -> str:
    marks = ", ".join("?" * n)
    return (
        f"SELECT 'p', product_id, facets, price, NULL FROM products WHERE product_id IN ({marks})"
        " UNION ALL SELECT 'v', product_id, variant_id, NULL, size FROM variants"
        f" WHERE product_id IN ({marks}) AND size IS NOT NULL"
    )


def item_facets_rows(conn: Connection, items: Sequence[tuple[Any, ...]]) -> list[str]:
    """:func:`item_facets` for a few ITEMS rows, in plain Python (the API's single events).

    The same catalog and the same rule, read in one query; ``tests/test_item_facets.py``
    checks that both give the same facets.
    """
    pids = item_products(items)
    # one round trip for both tables (it counts on PostgreSQL, measured: bench_http_ingest);
    # on PostgreSQL a fixed text with one binary array, no statement to build per call
    if conn.dialect.name == "postgresql":
        found = conn.exec_driver_sql(PG_FACETS, (pids, pids)).all() if pids else []
    else:  # SQLite: plain SQL, its text cached per count of products (SQLAlchemy's statement
        # building cost more than the query, measured)
        found = []
        for i in range(0, len(pids), 400):
            chunk = pids[i : i + 400]
            found += conn.exec_driver_sql(_sqlite_facets(len(chunk)), (*chunk, *chunk)).all()
    return facets_of(items, found)


def item_products(items: Sequence[tuple[Any, ...]]) -> list[str]:
    """The products of ITEMS rows, the parameter of :data:`PG_FACETS` (twice)."""
    return sorted({r[2] for r in items})


def facets_of(items: Sequence[tuple[Any, ...]], found: Sequence[Sequence[Any]]) -> list[str]:
    """The facets of ITEMS rows from what :data:`PG_FACETS` (or its SQLite twin) returned."""
    prod: dict[str, tuple[str, float]] = {}
    size_of: dict[tuple[str, str], str] = {}
    for kind, pid, a, price, size in found:
        if kind == "p":
            prod[pid] = (a, price)
        else:
            size_of[(pid, a)] = size
    out = []
    for _eid, _line, pid, vid, _qty, unit_price in items:
        parts = []
        p = prod.get(pid)
        if p is not None and p[0] != "":
            parts.append(p[0])
        size = size_of.get((pid, vid)) if vid is not None else None
        if size is not None:
            parts.append("size=" + size.replace("|", "/"))
        if p is not None:
            band = price_band(unit_price if unit_price is not None else p[1])
            if band is not None:
                parts.append("price=" + band)
        out.append("|".join(parts))
    return out


def _price_band_expr(price: pl.Expr) -> pl.Expr:
    lo = (2.0 ** price.log(2).floor()).cast(pl.Int64)
    return (
        pl.when(price.is_null() | price.is_nan() | (price < 0))
        .then(None)
        .when(price < 1)
        .then(pl.lit("price=0-1"))
        .otherwise("price=" + lo.cast(pl.String) + "-" + (lo * 2).cast(pl.String))
    )
