"""Triggered campaigns: evaluated as events are applied, writing due-queue rows.

:class:`Triggers` is an ``on_applied`` hook of the ingestor (see
:mod:`concierge.ingest.service`): it runs inside the transaction that applies a batch, so a
trigger fires exactly once per applied event, whatever crashes, and costs one indexed query for
the live campaigns (definitions cached by version) plus, only when a batch holds starting
events, one query for re-entry and one insert. Events older than ``max_age`` (an import of
history) start nothing.

Per trigger: the starting events (:data:`~concierge.campaigns.definitions.STARTS`), a delay
(the send is due ``delay_minutes`` after the event), exit conditions (checked by the worker at
send time: any later event of the person of an ``exit_on`` type cancels), and a re-entry rule
(no new occasion for a person within ``reentry_days`` of their last one). One occasion per
person per batch: the latest starting event.

Catalog triggers (*back in stock*, *price drop*) start from catalog events instead: the worker
calls :func:`catalog_occasions` for the people who viewed or carted the item (that very variant,
i.e. in their size, when the catalog event names one) in the last ``lookback_days``.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import polars as pl
from sqlalchemy import Connection, func, select

from concierge.campaigns import due_queue
from concierge.campaigns.definitions import STARTS, Campaign
from concierge.profiles.doc import DAY_US
from concierge.store import tables as t
from concierge.store.engine import Store, among

log = logging.getLogger(__name__)
MINUTE_US = 60_000_000
CATALOG_SEQ = "campaigns.catalog_seq"


class Triggers:
    def __init__(self, store: Store, *, max_age_days: float = 2.0) -> None:
        self.store = store
        self.max_age_us = int(max_age_days * DAY_US)
        self._defs: dict[tuple[str, int], Campaign] = {}

    def live(self, conn: Connection) -> list[Campaign]:
        c = t.campaigns
        rows = conn.execute(
            select(c.c.campaign_id, c.c.version, c.c.definition).where(
                c.c.status == "live", c.c.kind == "triggered"
            )
        ).all()
        out = []
        for cid, version, body in rows:
            camp = self._defs.get((cid, version))
            if camp is None:
                camp = Campaign.model_validate_json(body)
                self._defs[(cid, version)] = camp
            out.append(camp)
        return out

    def __call__(
        self, conn: Connection, people: pl.DataFrame, items: pl.DataFrame, now_us: int
    ) -> None:
        self.evaluate(conn, people, items, now_us)

    def evaluate(
        self, conn: Connection, people: pl.DataFrame, items: pl.DataFrame, now_us: int
    ) -> int:
        """Queue the sends the batch starts; how many."""
        wanted = {ty for ts in STARTS.values() for ty in ts}
        if people.height == 0 or not people.get_column("type").is_in(list(wanted)).any():
            return 0
        campaigns = [c for c in self.live(conn) if c.trigger and c.trigger.on in STARTS]
        if not campaigns:
            return 0
        fresh = people.filter(
            pl.col("type").is_in(list(wanted)), pl.col("ts_us") >= now_us - self.max_age_us
        )
        rows: list[dict[str, Any]] = []
        for camp in campaigns:
            assert camp.trigger is not None
            starts = fresh.filter(pl.col("type").is_in(list(STARTS[camp.trigger.on])))
            if camp.trigger.on == "welcome":
                starts = starts.filter(
                    pl.col("payload").str.json_path_match("$.channel") == camp.channel,
                    pl.col("payload").str.json_path_match("$.granted") == "true",
                )
            if starts.height == 0:
                continue
            starts = starts.unique("person_id", keep="last", maintain_order=True)
            starts = self._reentry(conn, camp, starts)
            delay = int(camp.trigger.delay_minutes * MINUTE_US)
            for pid, eid, ts, typ, payload in starts.select(
                "person_id", "event_id", "ts_us", "type", "payload"
            ).iter_rows():
                rows.append(
                    {
                        "campaign_id": camp.campaign_id,
                        "person_id": pid,
                        "occasion": f"{camp.trigger.on}:{eid}",
                        "due_us": ts + delay,
                        "trigger_us": ts,
                        "context": _context(camp.trigger.on, eid, typ, payload, items),
                    }
                )
        return due_queue.enqueue(conn, self.store, rows, now_us=now_us)

    def _reentry(self, conn: Connection, camp: Campaign, starts: pl.DataFrame) -> pl.DataFrame:
        assert camp.trigger is not None
        window = int(camp.trigger.reentry_days * DAY_US)
        lo = int(starts.get_column("ts_us").min()) - window  # type: ignore[arg-type]
        q = t.due_queue
        last: dict[str, int] = {}
        for clause in among(conn, q.c.person_id, starts.get_column("person_id").to_list()):
            for pid, ts in conn.execute(
                select(q.c.person_id, func.max(q.c.trigger_us))
                .where(clause, q.c.campaign_id == camp.campaign_id, q.c.trigger_us >= lo)
                .group_by(q.c.person_id)
            ):
                last[pid] = int(ts)
        if not last:
            return starts
        prev = pl.DataFrame(
            {"person_id": list(last), "prev_us": list(last.values())},
            schema={"person_id": pl.String, "prev_us": pl.Int64},
        )
        return (
            starts.join(prev, on="person_id", how="left")
            .filter(pl.col("prev_us").is_null() | (pl.col("ts_us") - pl.col("prev_us") > window))
            .drop("prev_us")
        )


def _context(on: str, eid: str, typ: str, payload: str, items: pl.DataFrame) -> dict[str, Any]:
    mine = items.filter(pl.col("event_id") == eid) if items.height else items
    pids = mine.get_column("product_id").to_list() if mine.height else []
    vids = (
        {p: v for p, v in mine.select("product_id", "variant_id").iter_rows() if v is not None}
        if mine.height
        else {}
    )
    ctx: dict[str, Any] = {"event_id": eid, "event_type": typ, "product_ids": pids}
    if vids:
        ctx["variant_ids"] = vids
    body = orjson.loads(payload)
    if typ == "search":
        ctx["query"] = body.get("query")
        ctx["why"] = f"you searched for {body.get('query')!r}"
    elif typ == "add_to_cart":
        ctx["why"] = "you left it in your cart"
    elif typ == "view":
        ctx["why"] = "you looked at it"
    elif typ == "purchase":
        ctx["bought"] = pids
        ctx["order_id"] = body.get("order_id")
        ctx["why"] = "you bought it"
    elif typ == "sale":
        ctx["listing_id"] = body.get("listing_id")
        ctx["price"] = body.get("price")
        ctx["why"] = "your item sold"
    return ctx


def catalog_occasions(
    conn: Connection,
    store: Store,
    campaigns: list[Campaign],
    *,
    now_us: int,
    lookback_days: float = 30.0,
    limit: int = 5_000,
) -> int:
    """Queue back-in-stock and price-drop sends for catalog events past the watermark."""
    from concierge.ingest import identity

    last = int(store.get_meta(conn, CATALOG_SEQ) or 0)
    ce = t.catalog_events
    rows = conn.execute(
        select(
            ce.c.seq,
            ce.c.type,
            ce.c.product_id,
            ce.c.variant_id,
            ce.c.old_value,
            ce.c.new_value,
            ce.c.ts_us,
        )
        .where(ce.c.seq > last)
        .order_by(ce.c.seq)
        .limit(limit)
    ).all()
    if not rows:
        return 0
    store.set_meta(conn, CATALOG_SEQ, str(rows[-1][0]))
    kinds = {"back_in_stock": "back_in_stock", "price_drop": "price_drop"}
    wanted = [c for c in campaigns if c.trigger and c.trigger.on in kinds]
    queued: list[dict[str, Any]] = []
    since = now_us - int(lookback_days * DAY_US)
    for seq, typ, pid, vid, old, new, ts in rows:
        for camp in wanted:
            assert camp.trigger is not None
            if typ != camp.trigger.on:
                continue
            ev, it = t.events, t.event_items
            q = (
                select(ev.c.customer_id, ev.c.anonymous_id, it.c.variant_id)
                .join(it, it.c.event_id == ev.c.event_id)
                .where(
                    it.c.product_id == pid,
                    ev.c.type.in_(["view", "add_to_cart"]),
                    ev.c.ts_us >= since,
                )
            )
            if vid is not None:
                q = q.where(it.c.variant_id == vid)
            hits = conn.execute(q).all()
            aliases = sorted({f"c:{c}" if c else f"a:{a}" for c, a, _v in hits})
            graph = identity.load(conn, aliases)
            people = sorted({graph.person(a) for a in aliases})
            why = "back in stock" if typ == "back_in_stock" else f"now {new:g} instead of {old:g}"
            delay = int(camp.trigger.delay_minutes * MINUTE_US)
            for person in people:
                queued.append(
                    {
                        "campaign_id": camp.campaign_id,
                        "person_id": person,
                        "occasion": f"{typ}:{seq}",
                        "due_us": max(ts, now_us) + delay,
                        "trigger_us": ts,
                        "context": {
                            "product_ids": [pid],
                            **({"variant_ids": {pid: vid}} if vid else {}),
                            "why": why,
                            "event_type": typ,
                        },
                    }
                )
    return due_queue.enqueue(conn, store, queued, now_us=now_us)
