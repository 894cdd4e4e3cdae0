"""``concierge rebuild``: recompute identities and every profile from the log alone.

Reads the log in arrival order with Polars, replays the identity graph, aggregates every person in
one pass (the same :func:`concierge.profiles.doc.aggregate` live ingest uses) and replaces the
derived tables in one transaction: readers see the old profiles or the new ones, never a mix.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl
from sqlalchemy import Connection, delete, func, select

from concierge.ingest import identity
from concierge.ingest.service import APPLIED, bump_epoch, write_profiles
from concierge.profiles import doc as pdoc
from concierge.store import log as eventlog
from concierge.store import tables as t
from concierge.store.engine import Store

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]  # (stage, fraction done)


@dataclass
class RebuildResult:
    events: int
    people: int
    identities: int


def read_log(conn: Connection) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The whole log (events in log order, items with facets)."""
    ev, items = eventlog.read(conn)
    return ev.drop("seq"), items


def compute(
    conn: Connection, *, half_life_days: float, progress: Progress | None = None
) -> tuple[identity.IdentityGraph, dict[str, pdoc.Doc], int]:
    """Everything derived, from the log, without writing."""
    step = progress or (lambda _s, _f: None)
    step("reading the log", 0.0)
    ev, items = read_log(conn)
    step("stitching identities", 0.3)
    graph = identity.IdentityGraph()
    people = identity.apply(graph, ev)
    step("aggregating profiles", 0.5)
    docs = pdoc.aggregate(people, items, half_life_days=half_life_days)
    return graph, docs, ev.height


def rebuild(
    store: Store, *, half_life_days: float, now_us: int, progress: Progress | None = None
) -> RebuildResult:
    step = progress or (lambda _s, _f: None)
    with store.write() as conn:
        store.lock_writers(conn)
        graph, docs, n_events = compute(conn, half_life_days=half_life_days, progress=step)
        step("writing profiles", 0.8)
        conn.execute(delete(t.identities))
        conn.execute(delete(t.profiles))
        graph.repointed.clear()  # the table is empty: nothing to repoint, only to write
        identity.save(conn, graph, store.insert(t.identities), now_us)
        write_profiles(conn, store, docs, now_us=now_us)
        top = conn.execute(select(func.max(t.events.c.seq))).scalar() or 0
        store.set_meta(conn, APPLIED, str(top))  # everything logged is now counted
        bump_epoch(conn, store)
    step("done", 1.0)
    return RebuildResult(events=n_events, people=len(docs), identities=len(graph.changed))
