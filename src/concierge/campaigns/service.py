"""Campaign storage and the pieces the worker, previews and preflights share.

* definitions are stored versioned (``campaigns`` holds the live version, ``campaign_versions``
  every version ever saved);
* the store's contact policy, brand (name, site and API URLs, sender) and brand assets
  (layouts and snippets: one voice per store);
* :class:`Engine` builds a person's template context at send time (profile, features, per-person
  predictions, the trigger's context) and renders a campaign for them.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError
from sqlalchemy import Connection, select, update

from concierge.campaigns import sources as src
from concierge.campaigns.definitions import Campaign, ContactPolicy, campaign_from
from concierge.campaigns.predictions import Predictions
from concierge.campaigns.templates import Held, PersonContext, Rendered, Renderer
from concierge.channels.tracking import SECRET_KEY, Signer
from concierge.errors import FieldError, InputError, NotFoundError
from concierge.models.registry import Registry
from concierge.profiles import doc as pdoc
from concierge.profiles import view as pview
from concierge.store import tables as t
from concierge.store.engine import Store

POLICY_KEY = "campaigns.policy"
BRAND_KEY = "campaigns.brand"
DEFAULT_BRAND: dict[str, Any] = {
    "name": "Concierge demo store",
    "site_url": "https://shop.example",
    "api_url": "http://127.0.0.1:8000",
    "unsubscribe_mailto": None,
}


# -- definitions -----------------------------------------------------------------------------


def validate_campaign(data: Any, renderer: Renderer) -> Campaign:
    """A campaign from JSON-like data; every problem named by field (nothing stored)."""
    from concierge.facade import validation_errors

    if isinstance(data, Campaign):
        campaign = data
    else:
        if not isinstance(data, dict):
            raise InputError.one("body", "a campaign is a JSON object")
        try:
            campaign = campaign_from(data)
        except ValidationError as exc:
            raise InputError(validation_errors(exc)) from exc
    problems = renderer.check(campaign.template)
    for i, step in enumerate(campaign.journey.steps if campaign.journey else []):
        if step.template is not None:
            problems += [(f"journey.steps.{i}.{f}", r) for f, r in renderer.check(step.template)]
    if problems:
        raise InputError([FieldError(f, r) for f, r in problems])
    return campaign


def save(conn: Connection, campaign: Campaign, *, now_us: int) -> int:
    """Store a new version (the live one); returns its number."""
    c = t.campaigns
    row = conn.execute(select(c.c.version).where(c.c.campaign_id == campaign.campaign_id)).first()
    version = 1 if row is None else int(row[0]) + 1
    body = campaign.model_dump_json()
    conn.execute(
        t.campaign_versions.insert().values(
            campaign_id=campaign.campaign_id, version=version, definition=body, created_us=now_us
        )
    )
    values = {
        "version": version,
        "kind": campaign.kind,
        "status": campaign.status,
        "priority": campaign.priority,
        "definition": body,
        "updated_us": now_us,
    }
    if row is None:
        conn.execute(
            c.insert().values(campaign_id=campaign.campaign_id, created_us=now_us, **values)
        )
    else:
        conn.execute(update(c).where(c.c.campaign_id == campaign.campaign_id).values(**values))
    return version


def set_status(conn: Connection, campaign_id: str, status: str, *, now_us: int) -> Campaign:
    if status not in ("draft", "live", "paused"):
        raise InputError.one("status", "one of draft, live, paused")
    campaign, _v = get(conn, campaign_id)
    updated = campaign.model_copy(update={"status": status})
    save(conn, updated, now_us=now_us)
    return updated


def get(conn: Connection, campaign_id: str, version: int | None = None) -> tuple[Campaign, int]:
    if version is None:
        row = conn.execute(
            select(t.campaigns.c.definition, t.campaigns.c.version).where(
                t.campaigns.c.campaign_id == campaign_id
            )
        ).first()
    else:
        cv = t.campaign_versions
        row = conn.execute(
            select(cv.c.definition, cv.c.version).where(
                cv.c.campaign_id == campaign_id, cv.c.version == version
            )
        ).first()
    if row is None:
        raise NotFoundError("campaign", campaign_id)
    return Campaign.model_validate_json(row[0]), int(row[1])


def listing(conn: Connection, *, status: str | None = None) -> list[dict[str, Any]]:
    c = t.campaigns
    q = select(c.c.campaign_id, c.c.version, c.c.kind, c.c.status, c.c.priority, c.c.updated_us)
    if status is not None:
        q = q.where(c.c.status == status)
    return [dict(r._mapping) for r in conn.execute(q.order_by(c.c.campaign_id))]


def live(conn: Connection, kind: str | None = None) -> list[tuple[Campaign, int]]:
    c = t.campaigns
    q = select(c.c.definition, c.c.version).where(c.c.status == "live")
    if kind is not None:
        q = q.where(c.c.kind == kind)
    return [(Campaign.model_validate_json(d), int(v)) for d, v in conn.execute(q)]


# -- store settings --------------------------------------------------------------------------


def policy(conn: Connection, store: Store) -> ContactPolicy:
    raw = store.get_meta(conn, POLICY_KEY)
    return ContactPolicy() if raw is None else ContactPolicy.model_validate_json(raw)


def set_policy(conn: Connection, store: Store, value: ContactPolicy) -> None:
    store.set_meta(conn, POLICY_KEY, value.model_dump_json())


def brand(conn: Connection, store: Store) -> dict[str, Any]:
    raw = store.get_meta(conn, BRAND_KEY)
    return DEFAULT_BRAND | ({} if raw is None else orjson.loads(raw))


def set_brand(conn: Connection, store: Store, values: dict[str, Any]) -> dict[str, Any]:
    allowed = set(DEFAULT_BRAND)
    bad = sorted(set(values) - allowed)
    if bad:
        raise InputError([FieldError(k, "unknown brand setting") for k in bad])
    merged = brand(conn, store) | values
    store.set_meta(conn, BRAND_KEY, orjson.dumps(merged).decode())
    return merged


def assets(conn: Connection) -> dict[str, str]:
    rows = conn.execute(select(t.campaign_assets.c.name, t.campaign_assets.c.body))
    return {str(n): str(b) for n, b in rows}


def set_asset(conn: Connection, store: Store, name: str, body: str, *, now_us: int) -> None:
    if not (name.startswith("layout:") or name.startswith("snippet:")) or len(name) > 200:
        raise InputError.one("name", "an asset is named layout:<name> or snippet:<name>")
    if name.startswith("layout:") and "{% block content %}" not in body.replace(
        "{%block content%}", "{% block content %}"
    ):
        raise InputError.one("body", "a layout needs a {% block content %}{% endblock %}")
    stmt = store.insert(t.campaign_assets).values(name=name, body=body, updated_us=now_us)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["name"], set_={"body": body, "updated_us": now_us}
        )
    )


def signer(conn: Connection, store: Store) -> Signer:
    secret = store.get_meta(conn, SECRET_KEY)
    if secret is None:
        secret = secrets.token_hex(32)
        stmt = store.insert(t.meta).values(key=SECRET_KEY, value=secret)
        conn.execute(stmt.on_conflict_do_nothing(index_elements=["key"]))
        secret = store.get_meta(conn, SECRET_KEY) or secret
    return Signer(secret)


# -- rendering for people --------------------------------------------------------------------


class LazyFeatures(Mapping[str, Any]):
    """The 360 features of a person, computed on first use (most templates never ask: the
    computation is the dearest part of rendering for a broadcast, measured)."""

    def __init__(self, compute: Callable[[], dict[str, Any]]) -> None:
        self._compute = compute
        self._value: dict[str, Any] | None = None

    def _get(self) -> dict[str, Any]:
        if self._value is None:
            self._value = self._compute()
        return self._value

    def __getitem__(self, key: str) -> Any:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


@dataclass
class Prepared:
    """A message rendered for one person, or why not."""

    person: PersonContext | None
    result: Rendered | Held


class Engine:
    """Context building and rendering, shared by the worker, previews and preflights."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        *,
        half_life_days: float,
        session_gap_minutes: float,
        now_us: Callable[[], int],
        recommend: Callable[..., Any] | None = None,
    ) -> None:
        self.store = store
        self.half_life_days = half_life_days
        self.session_gap_minutes = session_gap_minutes
        self.now_us = now_us
        self.predictions = Predictions(registry)
        with store.read() as conn:
            b = brand(conn, store)
            a = assets(conn)
        self.brand = b
        self.catalog = src.CatalogView(store, site_url=str(b["site_url"]))
        self.popular = src.PopularSource(self.catalog, now_us=now_us)
        self.recommend = recommend or self.popular.recommend
        self.renderer = self._renderer(a)

    def _renderer(self, asset_map: dict[str, str]) -> Renderer:
        return Renderer(
            assets=asset_map,
            sources={
                "recommended": src.RecommenderSource(self.catalog, self.recommend),
                "last_viewed": src.LastViewedSource(self.catalog),
                "popular": self.popular,
                "trigger_items": src.TriggerItemsSource(self.catalog),
                "cart": src.CartSource(self.catalog),
            },
            available=self.catalog.available,
            brand={"name": self.brand.get("name"), "site_url": self.brand.get("site_url")},
        )

    def reload(self) -> None:
        """Pick up new brand settings and assets."""
        with self.store.read() as conn:
            self.brand = brand(conn, self.store)
            a = assets(conn)
        self.catalog.site_url = str(self.brand["site_url"]).rstrip("/")
        self.renderer = self._renderer(a)

    def docs(self, conn: Connection, person_ids: Sequence[str]) -> dict[str, pdoc.Doc]:
        from concierge.store.engine import among

        out: dict[str, pdoc.Doc] = {}
        for clause in among(conn, t.profiles.c.person_id, list(person_ids)):
            for pid, text in conn.execute(
                select(t.profiles.c.person_id, t.profiles.c.doc).where(clause)
            ):
                out[pid] = pdoc.loads(text)
        return out

    def person(
        self, person_id: str, doc: pdoc.Doc, trigger: dict[str, Any] | None = None
    ) -> PersonContext:
        features = LazyFeatures(
            lambda: pview.view(
                doc,
                as_of_us=self.now_us(),
                half_life_days=self.half_life_days,
                session_gap_minutes=self.session_gap_minutes,
            )
        )
        return PersonContext(
            person_id=person_id,
            traits=pview.traits(doc),
            features=features,
            doc=doc,
            trigger=dict(trigger or {}),
            predictions=self.predictions.of(person_id),
        )

    def render(
        self, campaign: Campaign, person: PersonContext, *, links: dict[str, str] | None = None
    ) -> Rendered | Held:
        return self.renderer.render(campaign.template, person, links=links)
