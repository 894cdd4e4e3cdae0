"""The event log with each event's person: the input of the behaviour models.

:func:`concierge.store.log.read` gives events with their customer and anonymous ids; models want
the *person* (the profile's ``person_id``). The identity graph keeps only exceptions to the default
mapping (``c:X`` is person ``X``, ``a:Y`` is ``anon:Y``), so resolving a whole log is two joins
against the ``identities`` table, not a loop.
"""

from __future__ import annotations

from typing import Any

import polars as pl
from sqlalchemy import Connection, select

from concierge.schema.events import ANON_PREFIX
from concierge.store import log as eventlog
from concierge.store import tables as t


def identities(conn: Connection) -> pl.DataFrame:
    rows = conn.execute(select(t.identities.c.alias, t.identities.c.person_id)).all()
    return pl.DataFrame(
        [tuple(r) for r in rows], schema={"alias": pl.String, "person": pl.String}, orient="row"
    )


def with_person(events: pl.DataFrame, ids: pl.DataFrame) -> pl.DataFrame:
    """Add ``person_id`` to an EVENTS frame (the customer's person, else the device's)."""
    c = ids.rename({"alias": "_ca", "person": "_cp"})
    a = ids.rename({"alias": "_aa", "person": "_ap"})
    return (
        events.with_columns(
            ("c:" + pl.col("customer_id")).alias("_ca"),
            ("a:" + pl.col("anonymous_id")).alias("_aa"),
        )
        .join(c, on="_ca", how="left")
        .join(a, on="_aa", how="left")
        .with_columns(
            pl.when(pl.col("customer_id").is_not_null())
            .then(pl.coalesce("_cp", "customer_id"))
            .otherwise(pl.coalesce("_ap", ANON_PREFIX + pl.col("anonymous_id")))
            .alias("person_id")
        )
        .drop("_ca", "_aa", "_cp", "_ap")
    )


def read(conn: Connection, *where: Any) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Events (with ``person_id``) matching ``where`` and their items with facets."""
    ev, items = eventlog.read(conn, *where)
    return with_person(ev, identities(conn)), items


def deepest(prefix: str, facets: pl.Expr) -> pl.Expr:
    """The last ``prefix=...`` facet of a facets string (for ``cat``: the most specific path)."""
    found = facets.str.extract_all(r"(?:^|\|)" + prefix + r"=[^|]*").list.last()
    return found.str.replace(r"^\|?" + prefix + "=", "")


def first(prefix: str, facets: pl.Expr) -> pl.Expr:
    """The first ``prefix=...`` facet (for ``cat``: the top level)."""
    return facets.str.extract(r"(?:^|\|)" + prefix + r"=([^|]*)", 1)
