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
from typing import Any, TypeVar

import orjson
import polars as pl
from pydantic import BaseModel, ValidationError
from sqlalchemy import and_, delete, func, or_, select, update

from concierge import access
from concierge.catalog import service as catalog
from concierge.clock import Clock, SystemClock, from_us, to_us
from concierge.errors import FieldError, FieldProblem, InputError, NotFoundError
from concierge.ingest import identity
from concierge.ingest.service import Ingestor, IngestResult, bump_epoch, write_profiles
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
from concierge.store.engine import Store

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
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        clock: Clock | None = None,
        migrate: bool = True,
    ) -> None:
        self.settings = settings or load_settings()
        if url is not None:
            self.settings = self.settings.model_copy(update={"database_url": url})
        self.clock = clock or SystemClock()
        self._registry: Registry | None = None
        self.store = Store(self.settings.database_url)
        if migrate:
            self.store.migrate()
        self._ingestor = Ingestor(self.store, half_life_days=self.settings.affinity_half_life_days)
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
        self._catalog_changed()
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

    def products(self, *, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        with self.store.read() as conn:
            return catalog.list_products(conn, limit=limit, offset=offset)

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
            "predictions": {
                "recommendations": self._recommendation_prediction(customer_id, anonymous_id)
            },
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
            # the pseudonym's profile, recomputed from the scrubbed log (what a rebuild gives)
            ev, items = eventlog.read(conn, t.events.c.customer_id == pseudonym)
            ev = ev.drop("seq").with_columns(pl.lit(pseudonym).alias("person_id"))
            docs = pdoc.aggregate(ev, items, half_life_days=self.settings.affinity_half_life_days)
            write_profiles(conn, self.store, docs, now_us=now)
            conn.execute(
                t.erasures.insert().values(pseudonym=pseudonym, erased_us=now, n_events=len(rows))
            )
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

        chosen = select_trainers(trainers(), only)
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
        self._models_changed()
        return reports

    def models(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every kept model version (newest first) with its metrics."""
        return [info.as_dict() for info in self.registry.versions(name)]

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
