"""The demo stores: the simulated marketplace (default) and a sample of real Online Retail data.

``build_demo`` is idempotent: a store that already holds its demo data is reused as it is (the
``demo_dataset`` meta key records what was built), so a second ``make demo`` starts at once.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from concierge.clock import Clock
from concierge.ingest.bulk import chunks
from concierge.settings import Settings
from concierge.store import tables as t

if TYPE_CHECKING:
    from rich.progress import Progress

    from concierge.facade import Concierge

DATASETS = ("simulator", "online-retail")
SAMPLE = "online_retail_sample.csv.gz"


def load_simulation(
    c: Concierge,
    *,
    shoppers: int,
    days: int,
    seed: int,
    truth_path: Path,
    progress: Progress | None = None,
    start: datetime | None = None,
) -> dict[str, Any]:
    """Simulate a marketplace and write it through the ordinary ingest path (from ``start``,
    default the simulator's own fixed start)."""
    from concierge.sim.run import simulate
    from concierge.sim.world import SimConfig

    task = progress.add_task("simulating shoppers", total=None) if progress else None
    config = SimConfig(seed=seed, n_shoppers=shoppers, days=days)
    if start is not None:
        config = SimConfig(seed=seed, n_shoppers=shoppers, days=days, start=start)
    sim = simulate(config)
    c.upsert_products(sim.products)
    events, items = sim.events_frames()
    if progress is not None and task is not None:
        progress.update(task, description="ingesting events", total=events.height, completed=0)
    accepted = 0
    for ev, it in chunks(events, items, size=50_000):
        accepted += c.ingest_frames(ev, it).accepted
        if progress is not None and task is not None:
            progress.advance(task, ev.height)
    sim.write_truth(truth_path)
    return {
        "shoppers": shoppers,
        "days": days,
        "seed": seed,
        "events": events.height,
        "accepted": accepted,
        "products": len(sim.products),
        "truth": str(truth_path),
    }


def build_demo(
    settings: Settings,
    *,
    dataset: str,
    admin_key: str,
    progress: Progress | None = None,
    clock: Clock | None = None,
) -> dict[str, Any]:
    from concierge.errors import InputError
    from concierge.facade import Concierge
    from concierge.ingest.bulk import import_file

    if dataset not in DATASETS:
        raise InputError.one("dataset", f"must be one of {', '.join(DATASETS)}")
    start = time.perf_counter()
    with Concierge(settings=settings, clock=clock) as c:
        with c.store.read() as conn:
            built = c.store.get_meta(conn, "demo_dataset")
        reused = built == dataset
        if built is not None and built != dataset:
            raise InputError.one(
                "dataset", f"{settings.database_url} already holds the {built!r} demo; use --db"
            )
        if not reused:
            if dataset == "simulator":
                truth = Path(str(c.default_path()) + ".truth.json")
                # the simulated year ends at the start of today, so the demo is a living store
                # (recent shoppers are active, carts are fresh) whatever day it is built on
                today = (
                    c.clock.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
                )
                load_simulation(
                    c,
                    shoppers=2000,
                    days=365,
                    seed=42,
                    truth_path=truth,
                    progress=progress,
                    start=today - timedelta(days=365),
                )
            else:
                sample = resources.files("concierge.data").joinpath(SAMPLE)
                with resources.as_file(sample) as path:
                    import_file(c, "online-retail", path, progress=progress)
            with c.store.write() as conn:
                c.store.set_meta(conn, "demo_dataset", dataset)
        c.ensure_api_key("demo admin", "admin", admin_key)
        trained: list[dict[str, Any]] = []
        if not reused or not c.models():
            task = progress.add_task("training models", total=None) if progress else None
            trained = [r.as_dict() for r in c.train()]
            if progress is not None and task is not None:
                progress.update(task, total=1, completed=1)
        with c.store.read() as conn:
            example = conn.execute(
                select(t.profiles.c.person_id)
                .where(t.profiles.c.known.is_(True))
                .order_by(t.profiles.c.n_orders.desc(), t.profiles.c.person_id)
                .limit(1)
            ).scalar()
        stats = c.stats()
    return {
        "dataset": dataset,
        "database": settings.database_url,
        "reused": reused,
        "seconds": time.perf_counter() - start,
        "stats": stats,
        "trained": trained,
        "admin_key": admin_key,
        "example_customer": example,
    }
