"""A ``sale`` of a one-of-a-kind item takes it out of stock in the sale's own transaction, on
both ingest paths (the library's columnar batch and the API's small groups); a duplicate sale
changes nothing more, and items that are not one-of-a-kind keep their stock."""

from __future__ import annotations

import pytest

from concierge import Concierge
from helpers import at, shoe


def _sale(eid: str, pid: str, seller: str = "bob") -> dict[str, object]:
    return {
        "type": "sale",
        "event_id": eid,
        "customer_id": seller,
        "listing_id": f"l-{pid}",
        "product_id": pid,
        "price": 60.0,
        "currency": "EUR",
        "timestamp": at(1),
    }


@pytest.mark.parametrize("path", ["batch", "small"])
def test_a_sold_one_of_a_kind_item_is_out_of_stock_at_once(db_url: str, path: str) -> None:
    with Concierge(db_url) as cg:
        cg.upsert_products(
            [
                shoe("unique", seller_id="bob", one_of_a_kind=True, sizes=("42",), stock=1),
                shoe("many", sizes=("42",), stock=5),
            ]
        )
        before = len(cg.catalog_events(limit=1000))
        sales = [_sale("s1", "unique"), _sale("s2", "many")]
        if path == "batch":
            cg.ingest(sales)
        else:
            cg.append_events(Concierge.validate_events(sales))
            cg.apply_pending()
        assert not cg.available("unique")
        assert cg.available("many") and cg.product("many").variants[0].stock == 5
        new = cg.catalog_events(limit=1000)[before:]
        assert [(e["type"], e["product_id"], e["new_value"]) for e in new] == [
            ("out_of_stock", "unique", 0)
        ]
        cg.ingest([_sale("s1", "unique")])  # the same sale again: a duplicate, nothing more
        assert len(cg.catalog_events(limit=1000)) == before + 1
