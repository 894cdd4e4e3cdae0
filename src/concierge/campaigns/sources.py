"""Product sources for template blocks, and the catalog view they share.

* :class:`LastViewedSource` — the person's recently viewed items (from the profile);
* :class:`CartSource` — what is in their cart now;
* :class:`TriggerItemsSource` — the items of the occasion (the carted, viewed, restocked or
  cheaper product);
* :class:`PopularSource` — the catalog's most bought and viewed items of the last 30 days,
  counted from the event log with Polars (one group-by, cached per clock day);
* :class:`RecommenderSource` — anything with the ``Concierge.recommend(customer_id, slot=
  "email", k=…)`` contract (``.items`` with ``product_id``, ``variant_id``, ``reasons``), e.g.
  the recommender of the decide part once merged.

Every source proposes candidates; the renderer keeps those in stock now, in the person's size
when the product comes in sizes (:meth:`CatalogView.available`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson
import polars as pl
from sqlalchemy import select

from concierge.campaigns.templates import Item, PersonContext
from concierge.profiles.doc import DAY_US
from concierge.store import tables as t
from concierge.store.engine import Store, among


class CatalogView:
    """Product facts and stock, read in bulk (one query per call, not per item)."""

    def __init__(self, store: Store, *, site_url: str = "https://shop.example") -> None:
        self.store = store
        self.site_url = site_url.rstrip("/")

    def products(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        if not ids:
            return out
        with self.store.read() as conn:
            for clause in among(conn, t.products.c.product_id, list(dict.fromkeys(ids))):
                for pid, title, price, active, doc in conn.execute(
                    select(
                        t.products.c.product_id,
                        t.products.c.title,
                        t.products.c.price,
                        t.products.c.active,
                        t.products.c.doc,
                    ).where(clause)
                ):
                    images = orjson.loads(doc).get("images") or []
                    out[pid] = {
                        "title": title,
                        "price": price,
                        "active": active,
                        "image": images[0] if images else None,
                    }
        return out

    def stock(self, ids: Sequence[str]) -> dict[str, list[tuple[str, str | None, int]]]:
        """(variant id, size, stock) per product of ``ids`` that is active."""
        out: dict[str, list[tuple[str, str | None, int]]] = {}
        if not ids:
            return out
        v, p = t.variants, t.products
        with self.store.read() as conn:
            for clause in among(conn, v.c.product_id, list(dict.fromkeys(ids))):
                q = (
                    select(v.c.product_id, v.c.variant_id, v.c.size, v.c.stock)
                    .join(p, p.c.product_id == v.c.product_id)
                    .where(clause, p.c.active.is_(True))
                )
                for pid, vid, size, stock in conn.execute(q):
                    out.setdefault(pid, []).append((vid, size, int(stock)))
        return out

    def available(self, items: Sequence[Item]) -> list[bool]:
        """In stock now: the item's variant if named, else in the item's size if it has one,
        else any variant."""
        stock = self.stock([i.product_id for i in items])
        out = []
        for item in items:
            rows = stock.get(item.product_id, [])
            if item.variant_id is not None:
                ok = any(vid == item.variant_id and n > 0 for vid, _s, n in rows)
            elif item.size is not None:
                ok = any(s == item.size and n > 0 for _v, s, n in rows)
            else:
                ok = any(n > 0 for _v, _s, n in rows)
            out.append(ok)
        return out

    def items(self, ids: Sequence[str], *, reason: str, size: str | None = None) -> list[Item]:
        """Items for product ids (unknown products dropped), in the person's size when the
        product is sold in that size."""
        facts = self.products(ids)
        stock = self.stock(ids) if size else {}
        out = []
        for pid in dict.fromkeys(ids):
            f = facts.get(pid)
            if f is None or not f["active"]:
                continue
            sized = size if size and any(s == size for _v, s, _n in stock.get(pid, [])) else None
            out.append(
                Item(
                    product_id=pid,
                    title=f["title"] or pid,
                    price=f["price"],
                    url=f"{self.site_url}/products/{pid}",
                    size=sized,
                    image=f["image"],
                    reason=reason,
                )
            )
        return out


def person_size(person: PersonContext) -> str | None:
    sizes = (person.features.get("affinities") or {}).get("size") or []
    return str(sizes[0]["value"]) if sizes else None


class LastViewedSource:
    def __init__(self, catalog: CatalogView) -> None:
        self.catalog = catalog

    def candidates(self, person: PersonContext, k: int) -> tuple[list[Item], str]:
        bought = {pid for pid in (person.trigger.get("bought") or []) if isinstance(pid, str)}
        ids = [r[2] for r in person.doc.get("recent_views", []) if r[2] not in bought]
        items = self.catalog.items(
            ids[: k * 2], reason="you looked at it", size=person_size(person)
        )
        return items, "the items you viewed most recently, still in stock"


class CartSource:
    def __init__(self, catalog: CatalogView) -> None:
        self.catalog = catalog

    def candidates(self, person: PersonContext, k: int) -> tuple[list[Item], str]:
        from concierge.profiles.view import cart

        lines = cart(person.doc)
        items = self.catalog.items(
            [line["product_id"] for line in lines], reason="in your cart", size=None
        )
        by_pid = {line["product_id"]: line["variant_id"] for line in lines}
        items = [Item(**{**i.__dict__, "variant_id": by_pid.get(i.product_id)}) for i in items]
        return items[:k], "what is in your cart"


class TriggerItemsSource:
    def __init__(self, catalog: CatalogView) -> None:
        self.catalog = catalog

    def candidates(self, person: PersonContext, k: int) -> tuple[list[Item], str]:
        ids = [str(p) for p in person.trigger.get("product_ids") or []]
        size = person.trigger.get("size")
        why = str(person.trigger.get("why") or "the item this message is about")
        items = self.catalog.items(
            ids[:k], reason=why, size=size if isinstance(size, str) else None
        )
        vids = person.trigger.get("variant_ids") or {}
        if isinstance(vids, dict):
            items = [Item(**{**i.__dict__, "variant_id": vids.get(i.product_id)}) for i in items]
        return items, why


class PopularSource:
    """Most bought (weight 5) and viewed (1) products of the last ``days`` days."""

    def __init__(
        self, catalog: CatalogView, *, now_us: Callable[[], int], days: float = 30
    ) -> None:
        self.catalog = catalog
        self._now_us = now_us
        self.days = days
        self._cache: tuple[int, list[str]] | None = None

    def ranking(self) -> list[str]:
        now = self._now_us()
        day = now // DAY_US
        if self._cache is not None and self._cache[0] == day:
            return self._cache[1]
        since = now - int(self.days * DAY_US)
        ev, it = t.events, t.event_items
        q = (
            select(it.c.product_id, ev.c.type)
            .join(ev, ev.c.event_id == it.c.event_id)
            .where(ev.c.ts_us >= since, ev.c.ts_us <= now, ev.c.type.in_(["purchase", "view"]))
        )
        with self.catalog.store.read() as conn:
            frame = pl.read_database(
                q, conn, schema_overrides={"product_id": pl.String, "type": pl.String}
            )
        ranked = (
            frame.with_columns(
                pl.when(pl.col("type") == "purchase").then(5).otherwise(1).alias("w")
            )
            .group_by("product_id")
            .agg(pl.col("w").sum())
            .sort(["w", "product_id"], descending=[True, False])
            .head(500)
            .get_column("product_id")
            .to_list()
        )
        self._cache = (day, ranked)
        return ranked

    def candidates(self, person: PersonContext, k: int) -> tuple[list[Item], str]:
        seen = {r[2] for r in person.doc.get("recent_views", [])[:5]}
        ids = [p for p in self.ranking() if p not in seen][: k * 3]
        items = self.catalog.items(ids, reason="popular this month", size=person_size(person))
        return items, f"the most bought and viewed items of the last {self.days:g} days"

    def recommend(
        self, customer_id: str | None = None, *, slot: str = "email", k: int = 10, **_: Any
    ) -> Any:
        """The recommend contract (``.items`` with product ids, scores and reasons), backed by
        popularity: what :class:`RecommenderSource` is tested against until the decide part's
        recommender is wired in."""
        from types import SimpleNamespace

        ids = self.ranking()[:k]
        return SimpleNamespace(
            items=[
                SimpleNamespace(
                    product_id=p,
                    variant_id=None,
                    score=1.0 / (r + 1),
                    rank=r + 1,
                    reasons=[SimpleNamespace(code="popular", text="popular this month", data={})],
                )
                for r, p in enumerate(ids)
            ],
            fallback="popular",
            model_versions={},
        )


class RecommenderSource:
    """A block from ``recommend(customer_id, slot="email", k=…)`` (the recommendations
    contract); reasons of the first item explain the block."""

    def __init__(self, catalog: CatalogView, recommend: Callable[..., Any]) -> None:
        self.catalog = catalog
        self.recommend = recommend

    def candidates(self, person: PersonContext, k: int) -> tuple[list[Item], str]:
        cid = None if person.person_id.startswith("anon:") else person.person_id
        recs = self.recommend(cid, slot="email", k=k)
        ids: list[str] = []
        why: dict[str, str] = {}
        for r in recs.items:
            ids.append(r.product_id)
            why[r.product_id] = "; ".join(x.text for x in r.reasons) or "recommended for you"
        items = [
            Item(**{**i.__dict__, "reason": why.get(i.product_id, i.reason)})
            for i in self.catalog.items(ids, reason="recommended for you", size=person_size(person))
        ]
        fallback = getattr(recs, "fallback", None)
        return items, "recommended for you" + (f" (fallback: {fallback})" if fallback else "")
