"""Run a simulation: the world, a period of behaviour, the catalog and the event frames.

>>> from concierge.sim.run import simulate
>>> from concierge.sim.world import SimConfig
>>> sim = simulate(SimConfig(seed=1, n_shoppers=50, days=30))
>>> events, items = sim.events_frames()
>>> events.columns
['event_id', 'type', 'customer_id', 'anonymous_id', 'ts_us', 'payload']
>>> sim.products[0].currency
'EUR'

The events go through the ordinary ingest path (``Concierge.ingest_frames``, after
``upsert_products(sim.products)``); the hidden truth goes to a separate file
(:meth:`Simulation.write_truth`, read back with :func:`load_truth`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from concierge.schema.catalog import Product, Variant
from concierge.sim.behaviour import behave
from concierge.sim.payloads import assemble
from concierge.sim.truth import Truth, load_truth, write_truth
from concierge.sim.world import (
    ATTR_NAMES,
    ATTR_VALUES,
    BRAND_NAMES,
    CATEGORIES,
    COLOURS,
    CONDITIONS,
    DEPARTMENTS,
    MODEL_WORDS,
    SIZE_SYSTEMS,
    SYSTEM_NAMES,
    Catalog,
    Shoppers,
    SimConfig,
    build_catalog,
    build_shoppers,
    streams,
)

IMAGE_BASE = "https://img.concierge.example/"


@dataclass(frozen=True)
class Simulation:
    """The result of :func:`simulate`: the catalog, the events, and the hidden truth."""

    config: SimConfig
    catalog: Catalog  # every product, listings included, as arrays (hidden latents too)
    shoppers: Shoppers  # every shopper's hidden traits
    products: list[Product]  # the catalog as the store sees it (final stock)
    events: pl.DataFrame  # EVENTS frame (concierge.ingest.frames), in time order
    items: pl.DataFrame  # ITEMS frame
    timings: dict[str, float] = field(default_factory=dict, compare=False)

    def events_frames(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        return self.events, self.items

    @property
    def truth(self) -> Truth:
        return Truth(self.config, self.shoppers, self.catalog)

    def write_truth(self, path: Path | str) -> None:
        """Write the hidden truth (see :mod:`concierge.sim.truth`) to ``path``."""
        write_truth(self.truth, path)

    def summary(self) -> dict[str, Any]:
        counts = self.events.get_column("type").value_counts(sort=True)
        return {
            "shoppers": len(self.shoppers),
            "products": len(self.products),
            "listings": int(self.catalog.is_listing.sum()),
            "events": self.events.height,
            "items": self.items.height,
            "by_type": dict(counts.iter_rows()),
        }


def simulate(cfg: SimConfig) -> Simulation:
    """Simulate ``cfg`` (deterministic: the same config gives equal frames)."""
    rng = streams(cfg)
    clock = time.perf_counter
    t0 = clock()
    catalog = build_catalog(cfg, rng["catalog"])
    shoppers = build_shoppers(cfg, rng["shoppers"])
    t1 = clock()
    behaviour = behave(cfg, catalog, shoppers, rng["behaviour"])
    if behaviour.catalog is None or behaviour.shoppers is None:
        raise RuntimeError("the behaviour stage did not finish")
    t2 = clock()
    events, items = assemble(cfg, behaviour.shoppers, behaviour)
    t3 = clock()
    products = build_products(cfg, behaviour.catalog, behaviour.shoppers, rng["stock"])
    t4 = clock()
    return Simulation(
        config=cfg,
        catalog=behaviour.catalog,
        shoppers=behaviour.shoppers,
        products=products,
        events=events,
        items=items,
        timings={
            "world": t1 - t0,
            "behaviour": t2 - t1,
            "payloads": t3 - t2,
            "products": t4 - t3,
        },
    )


def build_products(
    cfg: SimConfig, catalog: Catalog, shoppers: Shoppers, rng: np.random.Generator
) -> list[Product]:
    """The catalog as the store sees it at the end: regular stock and marketplace listings."""
    out: list[Product] = []
    stock = rng.choice(
        np.array([0, 1, 3, 8, 20]), size=(len(catalog), 20), p=[0.08, 0.12, 0.3, 0.3, 0.2]
    )
    for i, pid in enumerate(catalog.ids):  # one object per product (the catalog, not events)
        c = CATEGORIES[int(catalog.category[i])]
        system = int(catalog.system[i])
        listing = bool(catalog.seller[i] >= 0)
        if system >= 0:
            labels = SIZE_SYSTEMS[SYSTEM_NAMES[system]]
            sizes: list[str | None] = list(
                labels[int(catalog.size_lo[i]) : int(catalog.size_hi[i]) + 1]
            )
        else:
            sizes = [None]
        if listing:
            levels = [0 if catalog.sold_to[i] >= 0 else 1]
        else:
            levels = [int(x) for x in stock[i, : len(sizes)]]
        variants = [
            Variant(variant_id=f"{pid}-{size if size is not None else 'os'}", size=size, stock=q)
            for size, q in zip(sizes, levels, strict=True)
        ]
        brand = BRAND_NAMES[int(catalog.brand[i])]
        colour = COLOURS[int(catalog.colour[i])]
        title = f"{brand} {MODEL_WORDS[int(catalog.model[i])]} {c.noun}, {colour}"
        out.append(
            Product(
                product_id=pid,
                title=("Pre-owned " + title) if listing else title,
                brand=brand,
                category=list(c.path),
                department=DEPARTMENTS[int(catalog.department[i])],
                price=float(catalog.price[i]),
                currency=cfg.currency,
                colour=colour,
                images=[f"{IMAGE_BASE}{pid}.jpg"],
                attributes={
                    name: ATTR_VALUES[name][int(catalog.attrs[i, j])]
                    for j, name in enumerate(ATTR_NAMES)
                    if catalog.attrs[i, j] >= 0
                },
                variants=variants,
                seller_id=shoppers.ids[int(catalog.seller[i])] if listing else None,
                condition=CONDITIONS[int(catalog.condition[i])] if listing else None,
                one_of_a_kind=listing,
            )
        )
    return out


__all__ = ["Simulation", "Truth", "load_truth", "simulate"]
