"""The two ways of reading an event line's facets from the catalog agree: the Polars one of
batches (:func:`item_facets`) and the plain-Python one of the API's single events
(:func:`item_facets_rows`, one query over products and variants), on both backends."""

from __future__ import annotations

import polars as pl

from concierge import Concierge
from concierge.catalog.service import item_facets, item_facets_rows
from concierge.ingest import frames


def test_single_event_facets_equal_batch_facets(cg: Concierge) -> None:
    cg.upsert_products(
        [
            {
                "product_id": "shoe",
                "title": "Trail shoe",
                "brand": "Fell|Co",
                "category": ["shoes", "trail"],
                "currency": "EUR",
                "price": 89.0,
                "variants": [
                    {"variant_id": "s42", "size": "42", "stock": 3},
                    {"variant_id": "s43", "size": "43 | wide", "stock": 0},
                    {"variant_id": "nosize", "stock": 1},
                ],
            },
            {"product_id": "sock", "title": "Sock", "price": 0.5, "currency": "EUR"},
            {"product_id": "bare", "title": "No facets", "price": 12.0, "currency": "EUR"},
        ]
    )
    rows = [  # (event id, line, product, variant, quantity, unit price)
        ("e1", 0, "shoe", "s42", 1, None),
        ("e2", 0, "shoe", "s43", 1, 70.0),
        ("e3", 0, "shoe", "nosize", 1, None),
        ("e4", 0, "shoe", None, 1, None),
        ("e5", 0, "sock", None, 2, None),
        ("e6", 0, "bare", "ghost", 1, -3.0),
        ("e7", 0, "unknown", "s42", 1, 10.0),
    ]
    with cg.store.read() as conn:
        single = item_facets_rows(conn, rows)
        frame = pl.DataFrame(rows, schema=list(frames.ITEMS_SCHEMA), orient="row")
        batch = item_facets(conn, frames.conform(frame, frames.ITEMS_SCHEMA))
    assert single == batch.get_column("facets").to_list()
    assert single == [
        "brand=Fell/Co|cat=shoes|cat=shoes>trail|size=42|price=64-128",
        "brand=Fell/Co|cat=shoes|cat=shoes>trail|size=43 / wide|price=64-128",
        "brand=Fell/Co|cat=shoes|cat=shoes>trail|price=64-128",  # a variant without a size
        "brand=Fell/Co|cat=shoes|cat=shoes>trail|price=64-128",  # no variant
        "price=0-1",
        "",  # no facets, an unknown variant and a negative price: nothing to say
        "",  # a product the catalog does not know
    ]
