"""``Concierge``: the one entry point. The HTTP API, the CLI and the dashboard call only this.

Examples
--------
>>> from datetime import datetime, UTC
>>> c = Concierge("sqlite:///:memory:")
>>> c.ingest([{"type": "view", "customer_id": "ann", "product_id": "p1",
...            "timestamp": "2026-01-01T10:00:00+01:00"}]).accepted
1
>>> c.customer("ann")["activity"]["view"]
1
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import orjson
import polars as pl
from pydantic import BaseModel, ValidationError
from sqlalchemy import and_, case, delete, func, or_, select, update

from concierge import access
from concierge.catalog import service as catalog
from concierge.clock import Clock, SystemClock, from_us, to_us
from concierge.errors import FieldError, FieldProblem, InputError, NotFoundError
from concierge.ingest import identity
from concierge.ingest.service import Ingestor, bump_epoch, write_profiles
from concierge.ingest.small import IngestResult
from concierge.models.per_person import PerPerson
from concierge.models.registry import Registry
from concierge.models.training import ProgressFn, TrainReport
from concierge.profiles import doc as pdoc
from concierge.profiles import view as pview
from concierge.profiles.rebuild import Progress, RebuildResult, rebuild
from concierge.schema.catalog import PriceUpdate, Product, StockUpdate
from concierge.schema.events import ERASED_PREFIX, EVENT_TYPES, Event, EventAdapter
from concierge.settings import Settings, load_settings
from concierge.store import log as eventlog
from concierge.store import tables as t
from concierge.store.engine import Store, StoreRole

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


def validation_errors(
    exc: ValidationError, index: int | None = None, prefix: str = ""
) -> list[FieldError]:
    """Pydantic's errors as (field, reason), dropping the union tag pydantic puts in the path."""
    out = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        if loc and loc[0] in _TYPE_TAGS:  # discriminated union: first element is the tag
            loc = loc[1:]
        reason = err["msg"]
        problem = (err.get("ctx") or {}).get("error")
        if isinstance(problem, FieldProblem):  # a model validator naming its field
            loc, reason = [*loc, problem.field], problem.reason
        elif err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = [*loc, "type"]
            reason = (
                "unknown event type; expected one of " + ", ".join(sorted(_TYPE_TAGS))
                if err["type"] == "union_tag_invalid"
                else "type is required"
            )
        field = prefix + ".".join(loc) if loc else (prefix.rstrip(".") or "body")
        out.append(FieldError(field or "body", reason, index))
    return out


_TYPE_TAGS = frozenset(EVENT_TYPES)


class Concierge:
    """A store of shoppers: their events, the catalog, and what Concierge derives from them.

    Parameters
    ----------
    url
        Database URL (``sqlite:///file.db`` or ``postgresql://…``); defaults to the settings'.
    settings
        Loaded settings; ``load_settings()`` when not given.
    clock
        Where "now" comes from (received-at times, as-of of reads).
    migrate
        Bring the schema up to date on open (default ``True``).
    role
        How this process's commits are tuned (:data:`concierge.store.engine.StoreRole`):
        ``"api"`` for a server beside an applier process, ``"applier"`` for that process.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        clock: Clock | None = None,
        migrate: bool = True,
        role: StoreRole = "default",
    ) -> None:
        self.settings = settings or load_settings()
        if url is not None:
            self.settings = self.settings.model_copy(update={"database_url": url})
        self.clock = clock or SystemClock()
        self._registry: Registry | None = None
        self._per_person: PerPerson | None = None
        self.store = Store(self.settings.database_url, role=role)
        if migrate:
            self.store.migrate()
        self._ingestor = Ingestor(self.store, half_life_days=self.settings.affinity_half_life_days)
        self._campaign_engine: Any = None
        self._triggers = _campaign_triggers(self.store)
        self._ingestor.on_applied.append(self._triggers)
        if migrate:
            self._ingestor.ensure_watermark()
        if migrate and self._ingestor.pending():
            self.apply_pending()  # a process stopped between logging and applying: catch up

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        self.store.dispose()

    def __enter__(self) -> Concierge:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _now_us(self) -> int:
        return to_us(self.clock.now())

    # -- events ----------------------------------------------------------------------------

    @staticmethod
    def validate_events(items: Iterable[Any]) -> list[Event]:
        """Validate raw events (dicts or models); every problem is reported with its index."""
        out: list[Event] = []
        errors: list[FieldError] = []
        for i, item in enumerate(items):
            try:
                out.append(EventAdapter.validate_python(item))
            except ValidationError as exc:
                errors += validation_errors(exc, i)
        if errors:
            raise InputError(errors)
        return out

    def ingest(self, events: Sequence[Event | dict[str, Any]]) -> IngestResult:
        """Append events to the log; duplicates (same event id) are reported, not stored twice."""
        if len(events) > self.settings.max_batch:
            raise InputError.one("events", f"at most {self.settings.max_batch} events per batch")
        models = self.validate_events(events)
        return self._ingestor.ingest(models, now_us=self._now_us())

    def append_events(self, events: Sequence[Event]) -> IngestResult:
        """Append events already validated by :meth:`validate_events` to the log only.

        They are durable when this returns; identities and profiles count them after
        :meth:`apply_pending` (the API's group commit does both; the per-request limit is not
        applied here because a group joins many requests).
        """
        return self._ingestor.append(events, now_us=self._now_us())

    def apply_pending(self, *, rounds: int | None = None, limit: int = 50_000) -> int:
        """Bring identities and profiles up to the log; returns how many events it applied.

        Each round is one transaction of at most ``limit`` events; ``rounds`` caps how many
        (``None``: until nothing is pending).
        """
        done = 0
        n_round = 0
        while rounds is None or n_round < rounds:
            n = self._ingestor.apply_pending(now_us=self._now_us(), limit=limit)
            done += n
            n_round += 1
            if n == 0:
                break
        return done

    def pending(self) -> int:
        """Logged events that profiles do not count yet (0 outside the API's short lag)."""
        return self._ingestor.pending()

    def watermark(self) -> tuple[int, int]:
        """(last sequence in the log, last sequence identities and profiles count)."""
        return self._ingestor.watermark()

    def ingest_frames(self, events: pl.DataFrame, items: pl.DataFrame) -> IngestResult:
        """Append a columnar batch (importers, simulator); see :mod:`concierge.ingest.frames`."""
        return self._ingestor.ingest_frames(events, items, now_us=self._now_us())

    # -- catalog ---------------------------------------------------------------------------

    def upsert_products(self, products: Sequence[Product | dict[str, Any]]) -> dict[str, int]:
        models = _validated(Product, products)
        with self.store.write() as conn:
            self._check_catalog_currency(conn, models)
            out = catalog.upsert_products(conn, self.store, models, now_us=self._now_us())
        self._catalog_changed()
        return out

    def _check_catalog_currency(self, conn: Any, products: Sequence[Product]) -> None:
        if not products:
            return
        cur = self.store.get_meta(conn, "currency")
        if cur is None:
            cur = products[0].currency
            self.store.set_meta(conn, "currency", cur)
        bad = [
            FieldError("currency", f"this store sells in {cur}, not {p.currency}", i)
            for i, p in enumerate(products)
            if p.currency != cur
        ]
        if bad:
            raise InputError(bad)

    def import_catalog(self, path: Path, *, strict: bool = False) -> dict[str, Any]:
        """Products from a JSON, JSON-lines, CSV or Parquet feed (see
        :mod:`concierge.catalog.feeds`); refused products are reported by row, field, reason."""
        from concierge.catalog.feeds import FeedReport, read_feed, validate_feed

        raw, n_rows = read_feed(path)
        products, bad = validate_feed(raw)
        report = FeedReport(path=str(path), rows=n_rows, bad_rows=bad)
        if not (strict and bad):
            for i in range(0, len(products), 5_000):
                counts = self.upsert_products(products[i : i + 5_000])
                report.created += counts.get("created", 0)
                report.updated += counts.get("updated", 0)
            report.products = len(products)
        return report.as_dict() | {"refused": bool(strict and bad)}

    def set_stock(self, updates: Sequence[StockUpdate | dict[str, Any]]) -> dict[str, int]:
        models = _validated(StockUpdate, updates)
        with self.store.write() as conn:
            out = catalog.set_stock(conn, models, now_us=self._now_us())
        # no reload: every change between out of stock and in stock is a catalog event, which
        # the next recommendation request reads and patches in (decide.catalog_index)
        return out

    def set_price(self, updates: Sequence[PriceUpdate | dict[str, Any]]) -> dict[str, int]:
        models = _validated(PriceUpdate, updates)
        with self.store.write() as conn:
            out = catalog.set_price(conn, models, now_us=self._now_us())
        self._catalog_changed()
        return out

    def product(self, product_id: str) -> Product:
        with self.store.read() as conn:
            return catalog.get_product(conn, product_id)

    def products(
        self, *, limit: int = 100, offset: int = 0, with_stock: bool = False
    ) -> list[dict[str, Any]]:
        """A page of products by id; ``with_stock`` adds ``stock`` (all variants) and
        ``variants`` (how many)."""
        with self.store.read() as conn:
            return catalog.list_products(conn, limit=limit, offset=offset, with_stock=with_stock)

    def catalog_events(self, *, since_seq: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        with self.store.read() as conn:
            return catalog.catalog_events(conn, since_seq=since_seq, limit=limit)

    def available(self, product_id: str, *, size: str | None = None) -> bool:
        with self.store.read() as conn:
            return catalog.available(conn, product_id, size=size)

    # -- customers -------------------------------------------------------------------------

    def person_of(self, customer_id: str | None = None, *, anonymous_id: str | None = None) -> str:
        if (customer_id is None) == (anonymous_id is None):
            raise InputError.one("customer_id", "give a customer id or an anonymous id")
        alias = "c:" + customer_id if customer_id is not None else "a:" + str(anonymous_id)
        with self.store.read() as conn:
            return identity.load(conn, [alias]).person(alias)

    def _aliases(self, conn: Any, person: str) -> tuple[list[str], list[str]]:
        rows = (
            conn.execute(select(t.identities.c.alias).where(t.identities.c.person_id == person))
            .scalars()
            .all()
        )
        cids = {a[2:] for a in rows if a.startswith("c:")}
        aids = {a[2:] for a in rows if a.startswith("a:")}
        if person.startswith("anon:"):
            aids.add(person[5:])
        else:
            cids.add(person)
        return sorted(cids), sorted(aids)

    def _events_of(self, conn: Any, person: str, *, limit: int | None) -> list[dict[str, Any]]:
        cids, aids = self._aliases(conn, person)
        q = (
            select(t.events.c.seq, t.events.c.payload, t.events.c.received_us)
            .where(
                or_(
                    t.events.c.customer_id.in_(cids),
                    and_(t.events.c.customer_id.is_(None), t.events.c.anonymous_id.in_(aids)),
                )
            )
            .order_by(t.events.c.ts_us.desc(), t.events.c.seq.desc())
        )
        if limit is not None:
            q = q.limit(limit)
        out = []
        for _seq, payload, received in conn.execute(q):
            body = orjson.loads(payload)
            body["received_at"] = from_us(received).isoformat()
            out.append(body)
        return out

    def customer(
        self,
        customer_id: str | None = None,
        *,
        anonymous_id: str | None = None,
        as_of: datetime | None = None,
        history: int = 50,
    ) -> dict[str, Any]:
        """The customer 360: traits, consent, preferences, computed features and history."""
        person = self.person_of(customer_id, anonymous_id=anonymous_id)
        as_of_us = to_us(as_of) if as_of is not None else self._now_us()
        with self.store.read() as conn:
            row = conn.execute(
                select(t.profiles.c.doc).where(t.profiles.c.person_id == person)
            ).first()
            if row is None:
                raise NotFoundError("customer", customer_id or f"anonymous {anonymous_id}")
            doc = pdoc.loads(row.doc)
            cids, aids = self._aliases(conn, person)
            events = self._events_of(conn, person, limit=history) if history else []
            doc, predictions = self._behaviour_view(conn, person, doc, cids, aids, as_of_us)
        return {
            "person_id": person,
            "customer_ids": cids,
            "anonymous_ids": aids,
            "known": not person.startswith("anon:"),
            "as_of": from_us(as_of_us).isoformat(),
            "traits": pview.traits(doc),
            "timezone": pview.timezone(doc),
            "consent": pview.consent(doc),
            "consent_history": [
                {"channel": r[2], "granted": r[3], "source": r[4], "at": from_us(r[0]).isoformat()}
                for r in doc["consent_history"]
            ],
            "preferred_channel": pview.preferred_channel(doc),
            "answers": pview.answers(doc),
            "features": pview.view(
                doc,
                as_of_us=as_of_us,
                half_life_days=self.settings.affinity_half_life_days,
                session_gap_minutes=self.settings.session_gap_minutes,
            ),
            "history": events,
            # lifetime and churn, then cadence, segment and questions, then what we would show
            "predictions": {
                **self._predictions_of(person),
                **predictions,
                "recommendations": self._recommendation_prediction(customer_id, anonymous_id),
            },
            "messages": self.messages_of(person, limit=history or 20),
        }

    def profile_doc(self, person_id: str) -> pdoc.Doc | None:
        """The stored aggregate of one person (for tests and the rebuild check)."""
        with self.store.read() as conn:
            row = conn.execute(
                select(t.profiles.c.doc).where(t.profiles.c.person_id == person_id)
            ).first()
        return None if row is None else pdoc.loads(row.doc)

    def profile_docs(self) -> dict[str, pdoc.Doc]:
        with self.store.read() as conn:
            return {
                p: pdoc.loads(d)
                for p, d in conn.execute(select(t.profiles.c.person_id, t.profiles.c.doc))
            }

    def export_customer(self, customer_id: str) -> dict[str, Any]:
        """Everything stored about a person (a privacy access request)."""
        out = self.customer(customer_id, history=0)
        with self.store.read() as conn:
            out["history"] = self._events_of(conn, out["person_id"], limit=None)
        return out

    def erase_customer(self, customer_id: str) -> dict[str, Any]:
        """Remove a person's personal data from the profile and the log (a privacy erasure).

        Behaviour stays, under a random pseudonym, so the counts models learn from do not
        change: the events keep their products, times and amounts; ids, traits, consent,
        answers, search terms, URLs and free-form context are removed.
        """
        person = self.person_of(customer_id)
        pseudonym = ERASED_PREFIX + secrets.token_hex(12)
        now = self._now_us()
        with self.store.write() as conn:
            self.store.lock_writers(conn)
            # count everything logged first, so the pseudonym's profile below is exact and
            # nothing scrubbed here is applied again later
            self._ingestor.apply_logged(conn, now_us=now)
            doc_row = conn.execute(
                select(t.profiles.c.doc).where(t.profiles.c.person_id == person)
            ).first()
            if doc_row is None:
                raise NotFoundError("customer", customer_id)
            cids, aids = self._aliases(conn, person)
            owned = or_(
                t.events.c.customer_id.in_(cids),
                and_(t.events.c.customer_id.is_(None), t.events.c.anonymous_id.in_(aids)),
            )
            rows = conn.execute(select(t.events.c.seq, t.events.c.payload).where(owned)).all()
            for seq, payload in rows:
                conn.execute(
                    update(t.events)
                    .where(t.events.c.seq == seq)
                    .values(
                        customer_id=pseudonym, anonymous_id=None, payload=_scrub(payload, pseudonym)
                    )
                )
            # their purchases of other people's listings name them as buyer
            for seq, payload in conn.execute(
                select(t.events.c.seq, t.events.c.payload).where(t.events.c.type == "sale")
            ).all():
                body = orjson.loads(payload)
                if body.get("buyer_id") in cids:
                    body["buyer_id"] = pseudonym
                    conn.execute(
                        update(t.events)
                        .where(t.events.c.seq == seq)
                        .values(payload=orjson.dumps(body).decode())
                    )
            aliases = [f"c:{c}" for c in cids] + [f"a:{a}" for a in aids]
            conn.execute(
                delete(t.identities).where(
                    or_(t.identities.c.person_id == person, t.identities.c.alias.in_(aliases))
                )
            )
            conn.execute(delete(t.profiles).where(t.profiles.c.person_id == person))
            self._forget_behaviour(conn, person, pseudonym)
            # the pseudonym's profile, recomputed from the scrubbed log (what a rebuild gives)
            ev, items = eventlog.read(conn, t.events.c.customer_id == pseudonym)
            ev = ev.drop("seq").with_columns(pl.lit(pseudonym).alias("person_id"))
            docs = pdoc.aggregate(ev, items, half_life_days=self.settings.affinity_half_life_days)
            write_profiles(conn, self.store, docs, now_us=now)
            conn.execute(
                t.erasures.insert().values(pseudonym=pseudonym, erased_us=now, n_events=len(rows))
            )
            _erase_messages(conn, person, pseudonym)
            bump_epoch(conn, self.store)
        return {"erased": True, "events_scrubbed": len(rows), "pseudonym": pseudonym}

    # -- derived data ----------------------------------------------------------------------

    def rebuild(self, progress: Progress | None = None) -> RebuildResult:
        """Recompute identities and every profile from the log."""
        return rebuild(
            self.store,
            half_life_days=self.settings.affinity_half_life_days,
            now_us=self._now_us(),
            progress=progress,
        )

    def stats(self) -> dict[str, int]:

        with self.store.read() as conn:
            return {
                name: int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)
                for name, table in (
                    ("events", t.events),
                    ("event_items", t.event_items),
                    ("profiles", t.profiles),
                    ("products", t.products),
                    ("catalog_events", t.catalog_events),
                )
            }

    # -- dashboard listings ----------------------------------------------------------------

    def customers(
        self,
        *,
        q: str | None = None,
        order: str = "revenue",
        known_only: bool = True,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of people (and how many match): ``q`` matches the start of any of their ids,
        or, when it holds an ``@``, part of their email; ``order`` is ``revenue``, ``orders``,
        ``last_seen`` or ``first_seen`` (largest or newest first)."""
        p = t.profiles
        columns = {
            "revenue": p.c.revenue,
            "orders": p.c.n_orders,
            "last_seen": p.c.last_seen_us,
            "first_seen": p.c.first_seen_us,
        }
        if order not in columns:
            raise InputError.one("order", f"expected one of {', '.join(columns)}")
        where: list[Any] = []
        if known_only:
            where.append(p.c.known.is_(True))
        if q:
            like = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            if "@" in q:
                where.append(p.c.doc.ilike(f'%"email"%{like}%', escape="\\"))
            else:
                owners = select(t.identities.c.person_id).where(
                    or_(
                        t.identities.c.alias.like(f"c:{like}%", escape="\\"),
                        t.identities.c.alias.like(f"a:{like}%", escape="\\"),
                    )
                )
                where.append(
                    or_(p.c.person_id.like(f"{like}%", escape="\\"), p.c.person_id.in_(owners))
                )
        with self.store.read() as conn:
            total = int(
                conn.execute(select(func.count()).select_from(p).where(*where)).scalar() or 0
            )
            rows = conn.execute(
                select(
                    p.c.person_id,
                    p.c.known,
                    p.c.n_orders,
                    p.c.revenue,
                    p.c.first_seen_us,
                    p.c.last_seen_us,
                    p.c.last_order_us,
                    p.c.doc,
                )
                .where(*where)
                .order_by(columns[order].desc(), p.c.person_id)
                .limit(limit)
                .offset(offset)
            ).all()
        out = []
        for r in rows:
            doc = pdoc.loads(r.doc)
            traits = pview.traits(doc)
            name = " ".join(str(traits[k]) for k in ("first_name", "last_name") if traits.get(k))
            out.append(
                {
                    "person_id": r.person_id,
                    "known": bool(r.known),
                    "name": name or None,
                    "email": traits.get("email"),
                    "orders": int(r.n_orders),
                    "revenue": float(r.revenue),
                    "first_seen": from_us(r.first_seen_us).isoformat(),
                    "last_seen": from_us(r.last_seen_us).isoformat(),
                    "last_order": from_us(r.last_order_us).isoformat()
                    if r.last_order_us is not None
                    else None,
                }
            )
        return out, total

    def customer_by_person(self, person_id: str, *, history: int = 50) -> dict[str, Any]:
        """The customer 360 of a person id (as listed by :meth:`customers`)."""
        if person_id.startswith("anon:"):
            return self.customer(anonymous_id=person_id.removeprefix("anon:"), history=history)
        return self.customer(person_id, history=history)

    def currency(self) -> str | None:
        """The store's currency, once the first priced data fixed it."""
        with self.store.read() as conn:
            return self.store.get_meta(conn, "currency")

    def recent_catalog_events(self, *, limit: int = 20) -> list[dict[str, Any]]:
        """The newest catalog events (price drops, back in stock, …), newest first."""
        with self.store.read() as conn:
            rows = conn.execute(
                select(t.catalog_events).order_by(t.catalog_events.c.seq.desc()).limit(limit)
            ).all()
        return [dict(r._mapping) for r in rows]

    def overview(self) -> dict[str, Any]:
        """Headline figures of the store for the dashboard's first page."""
        p = t.profiles
        now_us = self._now_us()
        day = 86_400_000_000
        with self.store.read() as conn:
            row = conn.execute(
                select(
                    func.count(),
                    func.sum(case((p.c.known.is_(True), 1), else_=0)),
                    func.sum(case((p.c.n_orders > 0, 1), else_=0)),
                    func.sum(case((p.c.n_orders > 1, 1), else_=0)),
                    func.coalesce(func.sum(p.c.revenue), 0.0),
                    func.sum(case((p.c.last_seen_us >= now_us - 30 * day, 1), else_=0)),
                    func.max(p.c.last_seen_us),
                )
            ).one()
            currency = self.store.get_meta(conn, "currency")
        people, known, buyers, repeat, revenue, active30, last_seen = row
        return {
            "stats": self.stats(),
            "people": int(people or 0),
            "known": int(known or 0),
            "buyers": int(buyers or 0),
            "repeat_buyers": int(repeat or 0),
            "revenue": float(revenue or 0.0),
            "active_30d": int(active30 or 0),
            "last_event": from_us(int(last_seen)).isoformat() if last_seen else None,
            "currency": currency or "",
            "models": self.models(),
            "catalog_events": self.recent_catalog_events(limit=10),
        }

    # -- models ----------------------------------------------------------------------------

    @property
    def registry(self) -> Registry:
        """The versioned model artifacts of this store."""
        if self._registry is None:
            self._registry = Registry(self.store)
        return self._registry

    def train(
        self,
        *,
        only: Sequence[str] | None = None,
        as_of: datetime | None = None,
        progress: ProgressFn | None = None,
    ) -> list[TrainReport]:
        """Fit every model (or those named in ``only``) on the log up to ``as_of`` (default: the
        clock's now) and store each as a new version with its metrics."""
        import time as _time

        from concierge.models.training import TrainContext, select_trainers, trainers

        chosen = select_trainers(trainers(self.settings), only)
        if self.pending():
            self.apply_pending()
        with self.store.read() as conn:
            log_seq = int(conn.execute(select(func.max(t.events.c.seq))).scalar() or 0)
        ctx = TrainContext(
            store=self.store,
            registry=self.registry,
            settings=self.settings,
            clock=self.clock,
            as_of_us=to_us(as_of) if as_of is not None else self._now_us(),
            log_seq=log_seq,
            progress=progress,
        )
        reports = []
        for trainer in chosen:
            start = _time.perf_counter()
            report = trainer.train(ctx)
            report.seconds = _time.perf_counter() - start
            reports.append(report)
        if self._per_person is not None:
            self._per_person.refresh()  # this process serves the new versions at once
        self._models_changed()
        return reports

    def models(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every kept model version (newest first) with its metrics."""
        return [info.as_dict() for info in self.registry.versions(name)]

    # -- lifetime --------------------------------------------------------------------------

    @property
    def per_person(self) -> PerPerson:
        """The newest per-person artifacts (lifetime, cadence, segments, …), kept in memory."""
        if self._per_person is None:
            self._per_person = PerPerson(self.registry)
        return self._per_person

    def predictions(self, person_ids: Sequence[str] | None = None) -> pl.DataFrame:
        """Every per-person prediction of the newest models, one row per person.

        ``person_id`` plus the columns each model lists as ``per_person`` (``p_alive``, ``clv``,
        ``churn_risk``, …), joined by person; with ``person_ids``, one row per id asked for, in
        that order, with nulls where a model has no score (e.g. people who never bought).
        """
        return self.per_person.frame(person_ids)

    def _predictions_of(self, person: str) -> dict[str, Any]:
        from concierge.models.lifetime import view as lifetime_view

        return lifetime_view.predictions(self.per_person.get("lifetime"), person)

    def evaluate_predictions(
        self,
        *,
        calibration_end: datetime,
        holdout_end: datetime | None = None,
        compare_lifetimes: bool = True,
        period_days: float = 1.0,
        truth_path: Path | None = None,
        include_anonymous: bool = False,
    ) -> dict[str, Any]:
        """Holdout evaluation of the lifetime and churn models on this store's log (see
        :mod:`concierge.models.lifetime.evaluate`); ``holdout_end`` defaults to the clock's now."""
        from concierge.models.lifetime.evaluate import evaluate_store

        return evaluate_store(
            self.store,
            calibration_end=calibration_end,
            holdout_end=holdout_end if holdout_end is not None else self.clock.now(),
            compare_lifetimes=compare_lifetimes,
            period_days=period_days,
            truth_path=truth_path,
            include_anonymous=include_anonymous,
        )

    # -- behaviour: cadence, segments, audiences, out-of-pattern questions -------------------

    def _behaviour_view(
        self, conn: Any, person: str, doc: pdoc.Doc, cids: list[str], aids: list[str], as_of: int
    ) -> tuple[pdoc.Doc, dict[str, Any]]:
        from concierge.models.behaviour_view import behaviour

        return behaviour(
            conn,
            self.registry,
            person,
            doc,
            cids,
            aids,
            as_of_us=as_of,
            half_life_days=self.settings.affinity_half_life_days,
        )

    @staticmethod
    def _forget_behaviour(conn: Any, person: str, pseudonym: str) -> None:
        from concierge.models.behaviour_train import forget

        forget(conn, person, pseudonym)

    def create_audience(
        self, name: str, rule: str, *, description: str | None = None, evaluate: bool = True
    ) -> dict[str, Any]:
        """Define an audience by a rule over profile fields and predictions (see
        :mod:`concierge.audiences.rules`); unknown fields are refused naming the known ones."""
        from concierge.audiences import service

        with self.store.write() as conn:
            aud = service.create(
                conn,
                self.registry,
                name=name,
                rule=rule,
                description=description,
                now_us=self._now_us(),
            )
        if evaluate:
            self.refresh_audiences(only=aud["audience_id"])
        return self.audience(aud["audience_id"])

    def audiences(self) -> list[dict[str, Any]]:
        from concierge.audiences import service

        with self.store.read() as conn:
            return service.list_all(conn)

    def audience(self, key: str) -> dict[str, Any]:
        """One audience by id or name."""
        from concierge.audiences import service

        with self.store.read() as conn:
            return service.get(conn, key)

    def delete_audience(self, key: str) -> None:
        from concierge.audiences import service

        with self.store.write() as conn:
            service.remove(conn, key)

    def audience_members(self, key: str, *, limit: int = 100, offset: int = 0) -> dict[str, Any]:
        from concierge.audiences import service

        with self.store.read() as conn:
            return service.members(conn, key, limit=limit, offset=offset)

    def audience_changes(
        self, key: str, *, since: int = 0, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Who entered or left since change ``since`` (what "audience entry" triggers read)."""
        from concierge.audiences import service

        with self.store.read() as conn:
            return service.changes(conn, key, since=since, limit=limit)

    def audience_fields(self) -> dict[str, str]:
        """Every field a rule may name, with its meaning."""
        from concierge.audiences.frame import field_docs

        return field_docs(self.registry)

    def refresh_audiences(
        self, *, only: str | None = None, as_of: datetime | None = None, full: bool = False
    ) -> list[dict[str, Any]]:
        """Re-evaluate audiences: in full when needed, else only people whose profile changed."""
        from concierge.audiences import service

        if self.pending():
            self.apply_pending()
        return service.refresh(
            self.store,
            self.registry,
            as_of_us=to_us(as_of) if as_of is not None else self._now_us(),
            now_us=self._now_us(),
            half_life_days=self.settings.affinity_half_life_days,
            only=only,
            full=full,
        )

    def segments(self, *, run: int | None = None) -> dict[str, Any]:
        """The segments of a run (the newest by default): persona, size, key figures."""
        from concierge.models import behaviour_train as bt

        with self.store.read() as conn:
            return bt.segment_list(conn, run)

    def segment_runs(self) -> list[dict[str, Any]]:
        from concierge.models import behaviour_train as bt

        with self.store.read() as conn:
            return bt.runs(conn)

    def segment_flows(
        self, *, from_run: int | None = None, to_run: int | None = None, top: int = 50
    ) -> dict[str, Any]:
        """People who moved between segments from one run to the next."""
        from concierge.models import behaviour_train as bt

        with self.store.read() as conn:
            return bt.flows(conn, from_run, to_run, top=top)

    def segment_history(
        self, customer_id: str | None = None, *, anonymous_id: str | None = None
    ) -> list[dict[str, Any]]:
        from concierge.models import behaviour_train as bt

        person = self.person_of(customer_id, anonymous_id=anonymous_id)
        with self.store.read() as conn:
            return bt.history(conn, person)

    def questions(
        self, customer_id: str | None = None, *, anonymous_id: str | None = None
    ) -> list[dict[str, Any]]:
        """A person's clarifying questions (pending and answered)."""
        from concierge.models import anomalies

        person = self.person_of(customer_id, anonymous_id=anonymous_id)
        with self.store.read() as conn:
            row = conn.execute(
                select(t.profiles.c.doc).where(t.profiles.c.person_id == person)
            ).first()
            if row is None:
                raise NotFoundError("customer", customer_id or f"anonymous {anonymous_id}")
            return anomalies.pending(conn, person, pdoc.loads(row.doc))

    def refresh_behaviour(
        self,
        *,
        max_age_hours: float = 24.0,
        only: Sequence[str] | None = ("lifetime", "cadence", "segments", "anomalies"),
    ) -> dict[str, Any]:
        """The scheduled job (``concierge segments refresh``, cron-friendly): refit the models in
        ``only`` (``None``: all) when the newest segmentation is older than ``max_age_hours`` or
        missing, else only scan for out-of-pattern behaviour; then refresh every audience. The
        lifetime model (CLV, churn risk) is refitted first: segments and audiences read its
        columns, so a stale churn risk would age every segment built on it."""
        info = self.registry.latest("segments")
        stale = info is None or self._now_us() - info.created_us >= max_age_hours * 3_600e6
        trained = [r.as_dict() for r in self.train(only=only)] if stale else []
        scanned = None if stale else self.scan_behaviour()
        return {
            "refitted": stale,
            "trained": trained,
            "scanned": scanned,
            "audiences": self.refresh_audiences(),
        }

    def scan_behaviour(self) -> dict[str, Any]:
        """Score interactions logged since the last scan; raise clarifying questions."""
        from concierge.models import anomalies

        if self.pending():
            self.apply_pending()
        pop = None
        if self.registry.latest_version("anomalies") is not None:
            pop = anomalies.population_of(self.registry.load("anomalies").arrays)
        from concierge.models.from_settings import questions_config

        return anomalies.scan(
            self.store,
            now_us=self._now_us(),
            config=questions_config(self.settings),
            population_frame=pop,
        )

    # -- campaigns -------------------------------------------------------------------------
    # Thin methods; the logic is in concierge.campaigns (see operations.py) and channels/.

    def campaign_engine(self) -> Any:
        """The shared rendering engine (templates, product sources, predictions)."""
        from concierge.campaigns.service import Engine

        if self._campaign_engine is None:
            self._campaign_engine = Engine(
                self.store,
                self.registry,
                half_life_days=self.settings.affinity_half_life_days,
                session_gap_minutes=self.settings.session_gap_minutes,
                now_us=self._now_us,
                recommend=self.recommend,  # the email slot of the recommender (crowd fallback)
            )
        return self._campaign_engine

    def save_campaign(self, definition: dict[str, Any]) -> dict[str, Any]:
        """Create a campaign or store a new version of it (validated: every problem named)."""
        from concierge.campaigns import operations

        out = operations.save_campaign(self, definition)
        self._triggers.invalidate()
        return out

    def campaign(self, campaign_id: str, *, version: int | None = None) -> dict[str, Any]:
        from concierge.campaigns import operations

        return operations.get_campaign(self, campaign_id, version)

    def campaigns(self, *, status: str | None = None) -> list[dict[str, Any]]:
        from concierge.campaigns import service

        with self.store.read() as conn:
            return service.listing(conn, status=status)

    def set_campaign_status(self, campaign_id: str, status: str) -> dict[str, Any]:
        from concierge.campaigns import service

        with self.store.write() as conn:
            camp = service.set_status(conn, campaign_id, status, now_us=self._now_us())
        self._triggers.invalidate()
        return {"campaign_id": campaign_id, "status": camp.status}

    def contact_policy(self) -> dict[str, Any]:
        from concierge.campaigns import service

        with self.store.read() as conn:
            return service.policy(conn, self.store).model_dump(mode="json")

    def set_contact_policy(self, policy: dict[str, Any]) -> dict[str, Any]:
        from concierge.campaigns import operations

        return operations.set_policy(self, policy)

    def set_brand(self, **values: Any) -> dict[str, Any]:
        """Brand settings: name, site_url, api_url (tracking links), unsubscribe_mailto."""
        from concierge.campaigns import service

        with self.store.write() as conn:
            out = service.set_brand(conn, self.store, values)
        if self._campaign_engine is not None:
            self._campaign_engine.reload()
        return out

    def set_asset(self, name: str, body: str) -> None:
        """A brand layout (``layout:<name>``) or snippet (``snippet:<name>``)."""
        from concierge.campaigns import service

        with self.store.write() as conn:
            service.set_asset(conn, self.store, name, body, now_us=self._now_us())
        if self._campaign_engine is not None:
            self._campaign_engine.reload()

    def preview(
        self, campaign: str | dict[str, Any], customer_id: str, **kw: Any
    ) -> dict[str, Any]:
        """A campaign rendered for one customer now, with the reasons of every block."""
        from concierge.campaigns import operations

        return operations.preview(self, campaign, customer_id, **kw)

    def preflight(
        self, campaign: str | dict[str, Any], *, sample: int | None = None
    ) -> dict[str, Any]:
        """How many of the audience would be sent, held back or suppressed, and why."""
        from concierge.campaigns import operations

        return operations.preflight(self, campaign, sample=sample)

    def schedule_campaign(self, campaign_id: str, *, at: datetime | None = None) -> dict[str, Any]:
        """Queue a live broadcast or lifecycle campaign for its audience."""
        from concierge.campaigns import operations

        return operations.schedule(self, campaign_id, at=at)

    def track(self, kind: str, token: str) -> dict[str, Any] | None:
        """A tracking pixel (``o``), click (``c``) or unsubscribe (``u``) hit, as events."""
        from concierge.campaigns import operations

        if kind not in ("o", "c", "u"):
            raise InputError.one("kind", "o, c or u")
        return operations.track(self, kind, token)  # type: ignore[arg-type]

    def provider_feedback(self, channel: str, events: list[Any]) -> dict[str, Any]:
        """Bounces and complaints from a provider: events, and suppressed addresses."""
        from concierge.campaigns import operations

        return operations.provider_feedback(self, channel, events)

    def preferences(self, token: str) -> dict[str, Any] | None:
        from concierge.campaigns import operations

        return operations.preferences(self, token)

    def set_preferences(
        self, token: str, *, channels: dict[str, bool], max_per_week: int | None = None
    ) -> dict[str, Any] | None:
        from concierge.campaigns import operations

        return operations.set_preferences(self, token, channels=channels, max_per_week=max_per_week)

    def onsite_messages(self, customer_id: str, *, mark_seen: bool = True) -> list[dict[str, Any]]:
        from concierge.campaigns import operations

        return operations.onsite_messages(self, customer_id, mark_seen=mark_seen)

    def messages_of(self, person_id: str, *, limit: int = 50) -> list[dict[str, Any]]:
        """A person's messages (sent, suppressed, held) with why, newest first."""
        from concierge.campaigns import operations

        return operations.messages_of(self, person_id, limit=limit)

    def outbox(self, *, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        from concierge.campaigns import operations

        return operations.outbox_rows(self, status=status, limit=limit)

    def delivery_counts(self) -> dict[str, Any]:
        from concierge.campaigns import operations

        return operations.queue_counts(self)

    def export_ad_audience(
        self, campaign_id: str, out_dir: Path, *, platform: str = "google"
    ) -> dict[str, Any]:
        """The campaign's audience as SHA-256-hashed email/phone files for ad platforms."""
        from concierge.campaigns import operations

        if platform not in ("google", "meta"):
            raise InputError.one("platform", "google or meta")
        return operations.export_ads(self, campaign_id, out_dir, platform=platform)  # type: ignore[arg-type]

    def worker(self, channels: dict[str, Any], **config: Any) -> Any:
        """A delivery worker over ``channels`` (name -> Channel); see concierge.campaigns.worker."""
        from concierge.campaigns.worker import Worker, WorkerConfig

        return Worker(self, channels, config=WorkerConfig(**config))

    # -- recommendations -------------------------------------------------------------------

    @property
    def recommender(self) -> Any:
        """The request path of recommendations (models and catalog kept in memory)."""
        if getattr(self, "_recommender", None) is None:
            from concierge.decide.recommend import Recommender

            self._recommender = Recommender(
                self.store,
                self.registry,
                session_gap_minutes=self.settings.session_gap_minutes,
            )
        return self._recommender

    def _models_changed(self) -> None:
        """This process trained: serve the new versions from the next request on (other
        processes pick them up through ``LiveModels`` within its ``check_every_s``)."""
        rec = getattr(self, "_recommender", None)
        if rec is not None:
            rec.refresh_models()

    def _catalog_changed(self) -> None:
        """This process changed the catalog: recommendations reload it on the next request
        (other processes notice within a second, see :mod:`concierge.decide.catalog_index`)."""
        rec = getattr(self, "_recommender", None)
        if rec is not None:
            rec.catalog.invalidate()

    def recommend(
        self,
        customer_id: str | None = None,
        *,
        anonymous_id: str | None = None,
        slot: str = "home",
        k: int = 10,
        anchor_product_id: str | None = None,
    ) -> Any:
        """Recommendations for a person in a slot (see :mod:`concierge.decide.recommend`).

        Never raises for an unknown person, an untrained model or an empty catalog: the answer's
        ``fallback`` says what answered instead of the full ranker.
        """
        return self.recommender.recommend(
            customer_id,
            anonymous_id=anonymous_id,
            slot=slot,
            k=k,
            anchor_product_id=anchor_product_id,
            now_us=self._now_us(),
        )

    def create_rule(self, rule: Any) -> dict[str, Any]:
        """Store a merchandising rule (validated; a pin and an exclude of one item conflict)."""
        from concierge.decide.rules import RuleCreate, create_rule

        model = _validated(RuleCreate, [rule])[0]
        with self.store.write() as conn:
            out = create_rule(conn, model, now_us=self._now_us())
        self.recommender.forget_rules()
        return out.as_dict()

    def rules(self) -> list[dict[str, Any]]:
        from concierge.decide.rules import list_rules

        with self.store.read() as conn:
            return [r.as_dict() for r in list_rules(conn)]

    def rule(self, rule_id: str) -> dict[str, Any]:
        from concierge.decide.rules import get_rule

        with self.store.read() as conn:
            return get_rule(conn, rule_id).as_dict()

    def delete_rule(self, rule_id: str) -> None:
        from concierge.decide.rules import delete_rule

        with self.store.write() as conn:
            delete_rule(conn, rule_id)
        self.recommender.forget_rules()

    def evaluate_recommendations(
        self,
        *,
        split: datetime,
        val_days: float = 28.0,
        truth: Path | str | None = None,
        progress: ProgressFn | None = None,
    ) -> dict[str, Any]:
        """Offline evaluation, temporal split (see :mod:`concierge.evaluate.recommendations`)."""
        from concierge.evaluate.recommendations import evaluate, sim_taste

        if self.pending():
            self.apply_pending()
        return evaluate(
            self.store,
            split=split,
            val_days=val_days,
            taste=sim_taste(str(truth)) if truth is not None else None,
            progress=progress,
        )

    def _recommendation_prediction(
        self, customer_id: str | None, anonymous_id: str | None
    ) -> dict[str, Any]:
        recs = self.recommend(customer_id, anonymous_id=anonymous_id, k=5)
        return {
            "version": recs.model_versions.get("collaborative"),
            "fallback": recs.fallback,
            "items": [i.product_id for i in recs.items],
            "reasons": [i.reasons[0].as_dict() for i in recs.items if i.reasons],
        }

    # -- dashboard -------------------------------------------------------------------------

    def segments_sorted(self, *, run: int | None = None, order: str = "size") -> dict[str, Any]:
        """The segments of a run (newest by default) sorted by ``size``, ``value`` (mean CLV,
        else net revenue), ``churn`` (mean churn risk) or ``recency``, each with its share."""
        from concierge import dashboard as dash

        if order not in ("size", "value", "churn", "recency"):
            raise InputError.one("order", "one of size, value, churn, recency")
        with self.store.read() as conn:
            return dash.sorted_segments(conn, run=run, order=cast(dash.SegmentOrder, order))

    def segment(
        self, segment_id: int, *, run: int | None = None, limit: int = 50, offset: int = 0
    ) -> dict[str, Any]:
        """One segment of a run with a page of its members and its size in every run."""
        from concierge import dashboard as dash

        with self.store.read() as conn:
            return dash.segment_detail(conn, segment_id, run=run, limit=limit, offset=offset)

    def audience_recent_changes(self, key: str, *, limit: int = 50) -> list[dict[str, Any]]:
        """The newest entered/left changes of an audience (by id or name), newest first."""
        from concierge import dashboard as dash

        aid = self.audience(key)["audience_id"]
        with self.store.read() as conn:
            return dash.recent_audience_changes(conn, aid, limit=limit)

    def people_figures(self, person_ids: Sequence[str]) -> list[dict[str, Any]]:
        """For member lists: orders, revenue, last seen and the newest CLV, churn risk, P(alive),
        cadence flags and segment of each person (in the order given; unknown ids left out)."""
        from concierge import dashboard as dash

        ids = list(person_ids)
        frame = self.predictions(ids) if ids and self.per_person.names() else pl.DataFrame()
        with self.store.read() as conn:
            return dash.people_figures(conn, frame, ids)

    def prediction_headline(self) -> dict[str, Any] | None:
        """Store-wide headline predictions (people at high churn risk, due soon, total CLV,
        number of segments) from the newest per-person models; ``None`` before any training."""
        from concierge import dashboard as dash

        names = self.per_person.names()
        versions = {}
        for n in names:
            scores = self.per_person.get(n)
            if scores is not None:
                versions[n] = scores.info.version
        frame = self.predictions() if versions else pl.DataFrame()
        with self.store.read() as conn:
            return dash.headline(frame, conn, versions=versions)

    # -- access ----------------------------------------------------------------------------

    def create_api_key(self, name: str, role: str) -> tuple[access.ApiKey, str]:
        with self.store.write() as conn:
            return access.create(conn, name=name, role=role, now_us=self._now_us())

    def ensure_api_key(self, name: str, role: str, secret: str) -> access.ApiKey:
        with self.store.write() as conn:
            return access.ensure(conn, name=name, role=role, secret=secret, now_us=self._now_us())

    def authenticate(self, secret: str) -> access.ApiKey | None:
        with self.store.read() as conn:
            return access.lookup(conn, secret)

    def api_keys(self) -> list[dict[str, object]]:
        with self.store.read() as conn:
            return access.list_keys(conn)

    def revoke_api_key(self, key_id: str) -> None:
        with self.store.write() as conn:
            access.revoke(conn, key_id, now_us=self._now_us())

    # -- files -----------------------------------------------------------------------------

    def default_path(self) -> Path:
        return Path(self.settings.database_url.removeprefix("sqlite:///"))


def _erase_messages(conn: Any, person: str, pseudonym: str) -> None:
    from concierge.campaigns.operations import erase_messages

    erase_messages(conn, person, pseudonym)


def _campaign_triggers(store: Store) -> Any:
    from concierge.campaigns.triggers import Triggers

    return Triggers(store)


def _validated(model: type[M], items: Sequence[M | dict[str, Any]]) -> list[M]:
    """Validate catalog updates; every problem is reported with its index and field."""
    out: list[M] = []
    errors: list[FieldError] = []
    for i, item in enumerate(items):
        try:
            out.append(item if isinstance(item, model) else model.model_validate(item))
        except ValidationError as exc:
            errors += validation_errors(exc, i)
    if errors:
        raise InputError(errors)
    return out


def _scrub(payload: str, pseudonym: str) -> str:
    body = orjson.loads(payload)
    body["customer_id"] = pseudonym
    body["anonymous_id"] = None
    body["context"] = {}
    body["session_id"] = None
    if body.get("type") == "identify":
        body["traits"] = {}
    elif body.get("type") == "answer":
        body["answer"] = ""
    elif body.get("type") == "search":
        body["query"] = ""
    elif body.get("type") == "consent":
        body["source"] = None
    if "url" in body:
        body["url"] = None
    return orjson.dumps(body).decode()
