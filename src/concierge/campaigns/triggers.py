"""Triggered campaigns: evaluated as events are applied, writing due-queue rows.

:class:`Triggers` is an ``on_applied`` hook of the ingestor (see
:mod:`concierge.ingest.service`): it runs inside the transaction that applies a batch, so a
trigger fires exactly once per applied event, whatever crashes, and costs one indexed query for
the live campaigns (definitions cached by version, read at most every ``ttl_s``) plus, only
when a batch holds starting events, one query for re-entry and one insert. A batch none of
whose event types starts a live triggered campaign costs a set look-up and nothing else (the
set of starting types is rebuilt with the list of live campaigns). Events older than
``max_age`` (an import of history) start nothing.

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
import time
from typing import Any

import orjson
import polars as pl
from sqlalchemy import Connection, bindparam, func, select

from concierge.campaigns import due_queue
from concierge.campaigns.definitions import STARTS, Campaign
from concierge.profiles.doc import DAY_US
from concierge.store import tables as t
from concierge.store.engine import Store, among

log = logging.getLogger(__name__)
MINUTE_US = 60_000_000
CATALOG_SEQ = "campaigns.catalog_seq"


class Triggers:
    def __init__(self, store: Store, *, max_age_days: float = 2.0, ttl_s: float = 1.0) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._live: tuple[float, list[Campaign]] | None = None
        self._versions: dict[str, int] = {}
        self._types: frozenset[str] = frozenset()
        self.max_age_us = int(max_age_days * DAY_US)
        self._defs: dict[tuple[str, int], Campaign] = {}

    def invalidate(self) -> None:
        self._live = None

    def live(self, conn: Connection) -> list[Campaign]:
        """The live triggered campaigns, read at most every ``ttl_s`` seconds (a campaign
        paused meanwhile still queues for that long; the worker checks the status again
        before sending)."""
        now = time.monotonic()
        if self._live is not None and now - self._live[0] < self.ttl_s:
            return self._live[1]
        c = t.campaigns
        rows = conn.execute(
            select(c.c.campaign_id, c.c.version, c.c.definition).where(
                c.c.status == "live", c.c.kind == "triggered"
            )
        ).all()
        out = []
        versions: dict[str, int] = {}
        for cid, version, body in rows:
            camp = self._defs.get((cid, version))
            if camp is None:
                camp = Campaign.model_validate_json(body)
                self._defs[(cid, version)] = camp
            out.append(camp)
            versions[cid] = int(version)
        self._types = frozenset(
            ty for c in out if c.trigger and c.trigger.on in STARTS for ty in STARTS[c.trigger.on]
        )
        self._live, self._versions = (now, out), versions
        return out

    def starting_types(self, conn: Connection) -> frozenset[str]:
        """The event types that start a live triggered campaign (refreshed with :meth:`live`)."""
        self.live(conn)
        return self._types

    def __call__(
        self, conn: Connection, people: pl.DataFrame, items: pl.DataFrame, now_us: int
    ) -> None:
        """The ingest hook: a set look-up when no live triggered campaign starts from the
        batch's event types (the common case on the API's single events)."""
        if people.height == 0:
            return
        types = self.starting_types(conn)
        if not types:
            return
        if people.height == 1 and people.item(0, "type") not in types:
            return
        self.evaluate(conn, people, items, now_us)

    def evaluate(
        self, conn: Connection, people: pl.DataFrame, items: pl.DataFrame, now_us: int
    ) -> int:
        """Queue the sends the batch starts; how many.

        Plain Python over the (few) starting events after one vectorised pre-filter on large
        batches: on the API's single events a dozen Polars calls cost more than the work
        (measured: ~1 ms each on a loaded machine)."""
        if people.height == 0:
            return 0
        wanted = self.starting_types(conn)
        if people.height > 256:
            people = people.filter(
                pl.col("type").is_in(list(wanted)), pl.col("ts_us") >= now_us - self.max_age_us
            )
        elif wanted.isdisjoint(people.get_column("type").to_list()):
            return 0
        cols = [
            people.get_column(c).to_list()
            for c in ("person_id", "event_id", "ts_us", "type", "payload")
        ]
        rows = [
            r
            for r in zip(*cols, strict=True)
            if r[3] in wanted and r[2] >= now_us - self.max_age_us
        ]
        if not rows:
            return 0
        campaigns = [c for c in self.live(conn) if c.trigger and c.trigger.on in STARTS]
        if not campaigns:
            return 0
        # the latest starting event per (campaign, person)
        latest: dict[tuple[str, str], tuple[str, str, int, str, str]] = {}
        for camp in campaigns:
            assert camp.trigger is not None
            types = STARTS[camp.trigger.on]
            for pid, eid, ts, typ, payload in rows:
                if typ not in types:
                    continue
                if camp.trigger.on == "welcome":
                    body = orjson.loads(payload)
                    if body.get("channel") != camp.channel or body.get("granted") is not True:
                        continue
                k = (camp.campaign_id, pid)
                if k not in latest or ts >= latest[k][2]:
                    latest[k] = (pid, eid, ts, typ, payload)
        if not latest:
            return 0
        last = self._last_occasions(conn, latest)
        by_event: dict[str, list[tuple[str, str | None]]] = {}
        if items.height:
            wanted_ids = {v[1] for v in latest.values()}
            item_cols = [
                items.get_column(c).to_list() for c in ("event_id", "product_id", "variant_id")
            ]
            for eid, pid, vid in zip(*item_cols, strict=True):
                if eid in wanted_ids:
                    by_event.setdefault(eid, []).append((pid, vid))
        defs = {c.campaign_id: c for c in campaigns}
        out: list[dict[str, Any]] = []
        for (cid, pid), (_p, eid, ts, typ, payload) in latest.items():
            trig = defs[cid].trigger
            assert trig is not None
            prev = last.get((cid, pid))
            if prev is not None and ts - prev <= int(trig.reentry_days * DAY_US):
                continue
            ctx = _context(eid, typ, payload, by_event.get(eid, []))
            if defs[cid].journey is not None and cid in self._versions:
                ctx["journey_version"] = self._versions[cid]  # the version they enter
            out.append(
                {
                    "campaign_id": cid,
                    "person_id": pid,
                    "occasion": f"{trig.on}:{eid}",
                    "due_us": ts + int(trig.delay_minutes * MINUTE_US),
                    "trigger_us": ts,
                    "context": ctx,
                }
            )
        return due_queue.enqueue(conn, self.store, out, now_us=now_us)

    def _last_occasions(
        self, conn: Connection, latest: dict[tuple[str, str], Any]
    ) -> dict[tuple[str, str], int]:
        """The newest queued occasion per (campaign, person) of the batch (re-entry rule)."""
        q = t.due_queue
        cids = sorted({c for c, _p in latest})
        pids = sorted({p for _c, p in latest})
        out: dict[tuple[str, str], int] = {}
        if len(pids) == 1:  # an API's single event: one cached statement, one parameter
            wanted = set(cids)
            for cid, ts in conn.execute(_ONE_PERSON, {"person": pids[0]}):
                if cid in wanted:
                    out[(cid, pids[0])] = int(ts)
            return out
        for clause in among(conn, q.c.person_id, pids):
            for cid, pid, ts in conn.execute(
                select(q.c.campaign_id, q.c.person_id, func.max(q.c.trigger_us))
                .where(clause, q.c.campaign_id.in_(cids))
                .group_by(q.c.campaign_id, q.c.person_id)
            ):
                out[(cid, pid)] = int(ts)
        return out


_ONE_PERSON = (
    select(t.due_queue.c.campaign_id, func.max(t.due_queue.c.trigger_us))
    .where(t.due_queue.c.person_id == bindparam("person"))
    .group_by(t.due_queue.c.campaign_id)
)


def _context(
    eid: str, typ: str, payload: str, lines: list[tuple[str, str | None]]
) -> dict[str, Any]:
    pids = [p for p, _v in lines]
    vids = {p: v for p, v in lines if v is not None}
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
