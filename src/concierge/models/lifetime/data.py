"""The purchases of a store's log, attributed to people, as the lifetime models read them."""

from __future__ import annotations

import polars as pl
from sqlalchemy import select

from concierge.models.lifetime.summary import purchases
from concierge.schema.events import ANON_PREFIX
from concierge.store import log as eventlog
from concierge.store import tables as t
from concierge.store.engine import Store


def log_transactions(
    store: Store, *, as_of_us: int | None = None, include_anonymous: bool = False
) -> pl.DataFrame:
    """``person_id, ts_us, value`` of every purchase in the log (up to ``as_of_us``).

    Purchases of people who were never identified (person ids ``anon:…``) are left out unless
    ``include_anonymous``: an anonymous id follows a device or, for guest checkouts, a single
    order (the Online Retail importer gives each guest invoice its own), so it would count one
    shopper as many one-time buyers and bend every repeat-purchase model toward x = 0.

    People are those of the ``profiles`` table: the identity graph's exceptions (the
    ``identities`` table) are joined, every other alias is its default person
    (:func:`concierge.ingest.identity.default_person`).
    """
    where = [t.events.c.type == "purchase"]
    if as_of_us is not None:
        where.append(t.events.c.ts_us <= as_of_us)
    with store.read() as conn:
        ev, items = eventlog.read(conn, *where)
        ids = pl.read_database(
            select(t.identities.c.alias, t.identities.c.person_id.label("mapped")),
            conn,
            schema_overrides={"alias": pl.String(), "mapped": pl.String()},
        )
    alias = (
        pl.when(pl.col("customer_id").is_not_null())
        .then("c:" + pl.col("customer_id"))
        .otherwise("a:" + pl.col("anonymous_id"))
    )
    default = (
        pl.when(pl.col("customer_id").is_not_null())
        .then(pl.col("customer_id"))
        .otherwise(ANON_PREFIX + pl.col("anonymous_id"))
    )
    ev = (
        ev.with_columns(alias.alias("alias"))
        .join(ids, on="alias", how="left")
        .with_columns(pl.coalesce("mapped", default).alias("person_id"))
    )
    out = purchases(ev, items)
    if not include_anonymous:
        out = out.filter(~pl.col("person_id").str.starts_with(ANON_PREFIX))
    return out
