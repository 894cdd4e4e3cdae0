"""Identity stitching: which person each event belongs to.

Aliases are ``c:<customer_id>`` and ``a:<anonymous_id>``. By default ``c:X`` is person ``X`` and
``a:Y`` is the anonymous person ``anon:Y``; the ``identities`` table holds only the exceptions:

* an anonymous id first seen together with a customer id joins that customer (``a:Y -> X``), and
  the anonymous person's history moves with it. An anonymous id already joined to one customer is
  not moved to a second one: a shared device does not merge two people.
* a ``merge`` event joins one known customer into another: every alias of the merged person now
  points at the survivor.

The graph is decided in arrival order (the log's ``seq``), so ``rebuild`` replays it exactly. Only
the events that can change it (both ids present, or ``merge``) are looped over; every other event
is resolved with a join.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import polars as pl
from sqlalchemy import Connection, select, update

from concierge.schema.events import ANON_PREFIX
from concierge.store import tables as t


def default_person(alias: str) -> str:
    return alias[2:] if alias.startswith("c:") else ANON_PREFIX + alias[2:]


@dataclass
class IdentityGraph:
    """The exceptions to the default mapping, for the aliases at hand, with the changes made."""

    known: dict[str, str] = field(default_factory=dict)  # alias -> person, loaded or set
    changed: dict[str, str] = field(default_factory=dict)  # alias -> person, to write
    repointed: list[tuple[str, str]] = field(default_factory=list)  # (old person, new person)
    merges: list[tuple[str, str]] = field(default_factory=list)  # (loser, survivor) profiles

    def person(self, alias: str) -> str:
        return self.known.get(alias) or default_person(alias)

    def _set(self, alias: str, person: str) -> None:
        self.known[alias] = person
        self.changed[alias] = person

    def _repoint(self, loser: str, survivor: str) -> None:
        for alias, p in list(self.known.items()):
            if p == loser:
                self._set(alias, survivor)
        self.repointed.append((loser, survivor))
        self.merges.append((loser, survivor))

    def observe(
        self, customer_id: str | None, anonymous_id: str | None, merged: str | None
    ) -> None:
        """Apply one event that can change the graph (in arrival order)."""
        if customer_id is None:
            return
        me = self.person("c:" + customer_id)
        if merged is not None:
            loser = self.person("c:" + merged)
            if loser != me:
                self._repoint(loser, me)
                self._set("c:" + merged, me)
        if anonymous_id is not None:
            a = "a:" + anonymous_id
            current = self.person(a)
            if current == ANON_PREFIX + anonymous_id:  # never joined to a customer yet
                self._set(a, me)
                self._repoint(current, me)

    def resolve(self, loser: str) -> str:
        """Where a person's history ended up after the merges recorded so far."""
        for old, new in self.repointed:
            if old == loser:
                loser = new
        return loser


def load(conn: Connection, aliases: Iterable[str]) -> IdentityGraph:
    graph = IdentityGraph()
    wanted = sorted(set(aliases))
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        for alias, person in conn.execute(
            select(t.identities.c.alias, t.identities.c.person_id).where(
                t.identities.c.alias.in_(chunk)
            )
        ):
            graph.known[alias] = person
    return graph


def load_for_people(conn: Connection, graph: IdentityGraph, people: Iterable[str]) -> None:
    """Load every alias pointing at these people (needed before repointing them)."""
    wanted = sorted(set(people))
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        for alias, person in conn.execute(
            select(t.identities.c.alias, t.identities.c.person_id).where(
                t.identities.c.person_id.in_(chunk)
            )
        ):
            graph.known.setdefault(alias, person)


def save(conn: Connection, graph: IdentityGraph, store_insert: object, now_us: int) -> None:
    """Write the changed aliases, and repoint aliases of merged people not loaded here."""
    for old, new in graph.repointed:
        conn.execute(
            update(t.identities).where(t.identities.c.person_id == old).values(person_id=new)
        )
    if graph.changed:
        ins = store_insert  # a dialect insert of t.identities
        rows = [{"alias": a, "person_id": p, "linked_us": now_us} for a, p in graph.changed.items()]
        conn.execute(
            ins.on_conflict_do_update(  # type: ignore[attr-defined]
                index_elements=["alias"],
                set_={"person_id": ins.excluded.person_id},  # type: ignore[attr-defined]
            ),
            rows,
        )


def graph_events(events: pl.DataFrame) -> pl.DataFrame:
    """The events that can change the graph, with ``merged`` pulled from the payload."""
    return events.filter(
        (pl.col("customer_id").is_not_null() & pl.col("anonymous_id").is_not_null())
        | (pl.col("type") == "merge")
    ).with_columns(
        pl.when(pl.col("type") == "merge")
        .then(pl.col("payload").str.json_path_match("$.merged_customer_id"))
        .otherwise(None)
        .alias("merged")
    )


def aliases_of(events: pl.DataFrame) -> list[str]:
    gev = graph_events(events)
    out = set(("c:" + events.get_column("customer_id").drop_nulls()).to_list())
    out |= set(("a:" + events.get_column("anonymous_id").drop_nulls()).to_list())
    out |= set(("c:" + gev.get_column("merged").drop_nulls()).to_list())
    return sorted(out)


def apply(graph: IdentityGraph, events: pl.DataFrame) -> pl.DataFrame:
    """Run the graph over ``events`` (in frame order) and add each event's ``person_id``."""
    for cid, aid, merged in (
        graph_events(events).select("customer_id", "anonymous_id", "merged").iter_rows()
    ):
        graph.observe(cid, aid, merged)
    alias = (
        pl.when(pl.col("customer_id").is_not_null())
        .then("c:" + pl.col("customer_id"))
        .otherwise("a:" + pl.col("anonymous_id"))
    )
    mapping = pl.DataFrame(
        {"alias": list(graph.known), "mapped": list(graph.known.values())},
        schema={"alias": pl.String, "mapped": pl.String},
    )
    default = (
        pl.when(pl.col("customer_id").is_not_null())
        .then(pl.col("customer_id"))
        .otherwise(ANON_PREFIX + pl.col("anonymous_id"))
    )
    return (
        events.with_columns(alias.alias("alias"))
        .join(mapping, on="alias", how="left")
        .with_columns(pl.coalesce("mapped", default).alias("person_id"))
        .drop("alias", "mapped")
    )
