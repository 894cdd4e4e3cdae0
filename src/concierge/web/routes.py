"""The marketer dashboard, a thin layer of server-rendered pages over the facade.

Why server-rendered Jinja2 and not a JavaScript single-page app: every figure on these pages
already exists in the facade as a dict, the pages must work on a fresh machine whose only
registries are PyPI and Debian (no npm build step in ``make demo``), and a page that needs no
script has nothing to break. Templates run in Jinja2 with autoescape and ``StrictUndefined``:
a shopper's name like ``<script>`` is shown as text, and a template that names a missing value
fails in the tests instead of printing an empty cell.

Write forms (create, refresh and delete an audience) are shown to ``admin`` keys only, and every
POST route checks the role again (a ``read`` key gets 403) and a per-session CSRF token: sign-in
sets a random session id in a second HttpOnly cookie, and the token in each form is
HMAC-SHA256(key secret, session id). The cookies are already ``SameSite=Strict``; the token
means a forged cross-site form fails even in a browser that ignores SameSite, it changes with
every sign-in, and it needs no server-side session table (several API processes agree on it).

Sign-in takes an API key with the ``read`` right (a ``read`` or ``admin`` key) and keeps it in an
``HttpOnly``, ``SameSite=Strict`` cookie scoped to ``/dashboard``; every page looks the key up
again through the API's key cache, so a revoked key stops working within the cache's TTL.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote

import jinja2
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from concierge.access import GRANTS, ApiKey
from concierge.errors import ConflictError, InputError, NotFoundError
from concierge.facade import Concierge

COOKIE = "concierge_key"
SESSION = "concierge_session"
PREFIX = "/dashboard"
PAGE = 50

KeyLookup = Callable[[str], Awaitable[ApiKey | None]]
Settle = Callable[[], Awaitable[None]]


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("concierge.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["money"] = _money
    env.filters["num"] = _num
    env.globals["prefix"] = PREFIX
    env.globals["quote"] = lambda s: quote(str(s), safe="")
    return env


def _when(value: Any) -> str:
    """An ISO time (or microseconds) as ``2026-05-31 17:24 UTC``; a dash when absent."""
    if value is None or value == "":
        return "—"
    if isinstance(value, int | float):
        dt = datetime.fromtimestamp(value / 1e6, UTC)
    else:
        dt = datetime.fromisoformat(str(value)).astimezone(UTC)
    return dt.strftime("%Y-%m-%d %H:%M UTC")


def _money(value: Any, currency: str = "") -> str:
    if value is None:
        return "—"
    return f"{float(value):,.2f}" + (f" {currency}" if currency else "")


def _num(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{float(value):,.{digits}f}"


def dashboard_router(concierge: Concierge, lookup: KeyLookup, settle: Settle) -> APIRouter:
    """The dashboard's routes over ``concierge``; ``lookup`` resolves a key secret (the API's
    key cache) and ``settle`` waits until acknowledged events are applied (read your writes)."""
    env = _env()
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    cg = concierge

    def page(name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        html = env.get_template(name).render(**ctx)
        resp = HTMLResponse(html, status_code=status)
        resp.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        )
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "same-origin"
        resp.headers["Cache-Control"] = "no-store"
        return resp

    def no_audience(key: ApiKey, audience_key: str) -> HTMLResponse:
        return page(
            "missing.html",
            status=404,
            key=key,
            nav="audiences",
            what=f"No audience {audience_key!r}.",
        )

    async def signed_in(request: Request) -> ApiKey | None:
        secret = request.cookies.get(COOKIE)
        if not secret:
            return None
        key = await lookup(secret)
        if key is None or "read" not in GRANTS[key.role]:
            return None
        return key

    def to_login(request: Request) -> RedirectResponse:
        nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{PREFIX}/login?next={quote(nxt, safe='')}", status_code=303)

    @router.get("/static/app.css")
    def css() -> Response:
        from importlib.resources import files

        body = (files("concierge.web") / "static" / "app.css").read_bytes()
        return Response(body, media_type="text/css", headers={"Cache-Control": "max-age=3600"})

    @router.get("/login")
    def login_form(next: str = Query(PREFIX)) -> HTMLResponse:
        return page("login.html", key=None, error=None, next=_safe_next(next))

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        secret = (form.get("key") or [""])[0].strip()
        nxt = _safe_next((form.get("next") or [PREFIX])[0])
        key = await lookup(secret) if secret else None
        if key is None or "read" not in GRANTS[key.role]:
            error = (
                "Enter an API key."
                if not secret
                else "That key is unknown or revoked."
                if key is None
                else f"A {key.role} key cannot open the dashboard; use a read or admin key."
            )
            return page("login.html", status=401, key=None, error=error, next=nxt)
        resp = RedirectResponse(nxt, status_code=303)
        resp.set_cookie(
            COOKIE, secret, httponly=True, samesite="strict", path=PREFIX, max_age=8 * 3600
        )
        resp.set_cookie(
            SESSION,
            secrets.token_urlsafe(18),
            httponly=True,
            samesite="strict",
            path=PREFIX,
            max_age=8 * 3600,
        )
        return resp

    @router.post("/logout")
    def logout() -> Response:
        resp = RedirectResponse(f"{PREFIX}/login", status_code=303)
        resp.delete_cookie(COOKIE, path=PREFIX)
        resp.delete_cookie(SESSION, path=PREFIX)
        return resp

    @router.get("")
    async def overview(request: Request) -> Response:
        key = await signed_in(request)
        if key is None:
            return to_login(request)
        await settle()
        data = await asyncio.to_thread(cg.overview)
        headline = await asyncio.to_thread(cg.prediction_headline)
        return page("overview.html", key=key, nav="overview", headline=headline, **data)

    @router.get("/customers")
    async def customers(
        request: Request,
        q: str = Query("", max_length=200),
        order: str = Query("revenue", pattern="^(revenue|orders|last_seen|first_seen)$"),
        known: bool = Query(True),
        page_no: int = Query(1, alias="page", ge=1, le=100_000),
    ) -> Response:
        key = await signed_in(request)
        if key is None:
            return to_login(request)
        await settle()
        rows, total = await asyncio.to_thread(
            cg.customers,
            q=q or None,
            order=order,
            known_only=known,
            limit=PAGE,
            offset=(page_no - 1) * PAGE,
        )
        return page(
            "customers.html",
            key=key,
            nav="customers",
            rows=rows,
            total=total,
            q=q,
            order=order,
            known=known,
            page_no=page_no,
            pages=max(1, math.ceil(total / PAGE)),
        )

    @router.get("/customers/{person_id:path}")
    async def customer(request: Request, person_id: str) -> Response:
        key = await signed_in(request)
        if key is None:
            return to_login(request)
        await settle()
        try:
            doc = await asyncio.to_thread(cg.customer_by_person, person_id, history=100)
        except NotFoundError:
            return page(
                "missing.html",
                status=404,
                key=key,
                nav="customers",
                what=f"No customer {person_id!r}.",
            )
        currency = cg.currency() or ""
        return page(
            "customer.html",
            key=key,
            nav="customers",
            c=doc,
            currency=currency,
            v=customer_view(doc, currency),
        )

    @router.get("/catalog")
    async def catalog(
        request: Request, page_no: int = Query(1, alias="page", ge=1, le=100_000)
    ) -> Response:
        key = await signed_in(request)
        if key is None:
            return to_login(request)
        rows = await asyncio.to_thread(
            cg.products, limit=PAGE, offset=(page_no - 1) * PAGE, with_stock=True
        )
        total = (await asyncio.to_thread(cg.stats))["products"]
        events = await asyncio.to_thread(cg.recent_catalog_events, limit=20)
        return page(
            "catalog.html",
            key=key,
            nav="catalog",
            rows=rows,
            events=events,
            page_no=page_no,
            pages=max(1, math.ceil(total / PAGE)),
            total=total,
        )

    @router.get("/models")
    async def models(request: Request) -> Response:
        key = await signed_in(request)
        if key is None:
            return to_login(request)
        rows = await asyncio.to_thread(cg.models)
        return page("models.html", key=key, nav="models", rows=rows)

    # -- segments and audiences ----------------------------------------------------------

    def csrf_token(request: Request) -> str:
        """The form token of this sign-in ("" when the session cookie is missing)."""
        secret = request.cookies.get(COOKIE) or ""
        sid = request.cookies.get(SESSION) or ""
        if not secret or not sid:
            return ""
        return hmac.new(secret.encode(), sid.encode(), hashlib.sha256).hexdigest()

    def can_write(key: ApiKey) -> bool:
        return "admin" in GRANTS[key.role]

    def forbidden(key: ApiKey, what: str) -> HTMLResponse:
        return page("missing.html", status=403, key=key, nav="audiences", what=what)

    async def writable_form(
        request: Request, key: ApiKey
    ) -> tuple[dict[str, str], HTMLResponse | None]:
        """The posted form, or the 403 page when the key may not write or the token is off."""
        form = {
            k: v[0]
            for k, v in parse_qs(
                (await request.body()).decode("utf-8", "replace"), keep_blank_values=True
            ).items()
        }
        if not can_write(key):
            return form, forbidden(key, f"A {key.role} key cannot change audiences.")
        expected = csrf_token(request)
        if not expected or not hmac.compare_digest(expected, form.get("csrf", "")):
            return form, forbidden(
                key, "The form expired or did not come from this dashboard: reload and retry."
            )
        return form, None

    @router.get("/segments")
    async def segments(
        request: Request,
        order: str = Query("size", pattern="^(size|value|churn|recency)$"),
        run: int | None = Query(None, ge=1),
    ) -> Response:
        key = await signed_in(request)
        if key is None:
            return to_login(request)
        runs = await asyncio.to_thread(cg.segment_runs)
        if not runs:
            return page(
                "segments.html",
                key=key,
                nav="segments",
                data=None,
                runs=[],
                flows=None,
                order=order,
            )
        try:
            data = await asyncio.to_thread(cg.segments_sorted, run=run, order=order)
        except NotFoundError:
            return page(
                "missing.html",
                status=404,
                key=key,
                nav="segments",
                what=f"No segmentation run {run}.",
            )
        flows = None
        try:
            flows = await asyncio.to_thread(cg.segment_flows, to_run=data["run_id"], top=30)
        except NotFoundError:
            flows = None  # the first run has nothing before it
        return page(
            "segments.html",
            key=key,
            nav="segments",
            data=data,
            runs=runs,
            flows=flows,
            order=order,
            currency=cg.currency() or "",
        )

    @router.get("/segments/{segment_id}")
    async def segment(
        request: Request,
        segment_id: int,
        run: int | None = Query(None, ge=1),
        page_no: int = Query(1, alias="page", ge=1, le=100_000),
    ) -> Response:
        key = await signed_in(request)
        if key is None:
            return to_login(request)
        try:
            data = await asyncio.to_thread(
                cg.segment, segment_id, run=run, limit=PAGE, offset=(page_no - 1) * PAGE
            )
        except NotFoundError as e:
            return page("missing.html", status=404, key=key, nav="segments", what=str(e))
        data["members"] = await asyncio.to_thread(
            cg.people_figures, [m["person_id"] for m in data["members"]]
        )
        return page(
            "segment.html",
            key=key,
            nav="segments",
            d=data,
            s=data["segment"],
            page_no=page_no,
            pages=max(1, math.ceil(data["total"] / PAGE)),
            currency=cg.currency() or "",
        )

    def audiences_page(
        request: Request,
        key: ApiKey,
        *,
        status: int = 200,
        error: str | None = None,
        error_field: str | None = None,
        values: dict[str, str] | None = None,
        notice: str | None = None,
    ) -> HTMLResponse:
        rows = cg.audiences()
        fields = cg.audience_fields()
        return page(
            "audiences.html",
            status=status,
            key=key,
            nav="audiences",
            rows=rows,
            can_write=can_write(key),
            csrf=csrf_token(request),
            error=error,
            error_field=error_field,
            values=values or {"name": "", "rule": "", "description": ""},
            groups=audience_field_groups(fields),
            notice=notice,
        )

    @router.get("/audiences")
    async def audiences(request: Request, deleted: str = Query("", max_length=200)) -> Response:
        key = await signed_in(request)
        if key is None:
            return to_login(request)
        await settle()
        notice = f"Deleted the audience {deleted}." if deleted else None
        return await asyncio.to_thread(audiences_page, request, key, notice=notice)

    @router.post("/audiences")
    async def create_audience(request: Request) -> Response:
        key = await signed_in(request)
        if key is None:
            return to_login(request)
        form, refused = await writable_form(request, key)
        if refused is not None:
            return refused
        values = {k: form.get(k, "").strip() for k in ("name", "rule", "description")}
        await settle()
        try:
            aud = await asyncio.to_thread(
                cg.create_audience,
                values["name"],
                values["rule"],
                description=values["description"] or None,
            )
        except InputError as e:
            first = e.errors[0] if e.errors else None
            return await asyncio.to_thread(
                audiences_page,
                request,
                key,
                status=400,
                error=e.message,
                error_field=first.field if first else None,
                values=values,
            )
        except ConflictError as e:
            return await asyncio.to_thread(
                audiences_page,
                request,
                key,
                status=409,
                error=str(e),
                error_field="name",
                values=values,
            )
        return RedirectResponse(
            f"{PREFIX}/audiences/{quote(aud['audience_id'], safe='')}?done=created",
            status_code=303,
        )

    def audience_data(audience_key: str, page_no: int) -> dict[str, Any]:
        aud = cg.audience(audience_key)
        members = cg.audience_members(aud["audience_id"], limit=PAGE, offset=(page_no - 1) * PAGE)
        people = cg.people_figures([m["person_id"] for m in members["members"]])
        entered = {m["person_id"]: m["entered_us"] for m in members["members"]}
        for x in people:
            x["entered_us"] = entered[x["person_id"]]
        return {
            "a": aud,
            "members": people,
            "changes": cg.audience_recent_changes(aud["audience_id"], limit=50),
            "page_no": page_no,
            "pages": max(1, math.ceil(aud["members"] / PAGE)),
        }

    @router.get("/audiences/{audience_key}")
    async def audience(
        request: Request,
        audience_key: str,
        page_no: int = Query(1, alias="page", ge=1, le=100_000),
        done: str = Query("", max_length=40),
    ) -> Response:
        key = await signed_in(request)
        if key is None:
            return to_login(request)

        try:
            data = await asyncio.to_thread(audience_data, audience_key, page_no)
        except NotFoundError:
            return no_audience(key, audience_key)
        notices = {
            "refreshed": "Re-evaluated.",
            "created": "Created and evaluated.",
        }
        return page(
            "audience.html",
            key=key,
            nav="audiences",
            **data,
            can_write=can_write(key),
            csrf=csrf_token(request),
            notice=notices.get(done),
            error=None,
        )

    @router.post("/audiences/{audience_key}/refresh")
    async def refresh_audience(request: Request, audience_key: str) -> Response:
        key = await signed_in(request)
        if key is None:
            return to_login(request)
        _form, refused = await writable_form(request, key)
        if refused is not None:
            return refused
        await settle()
        try:
            (res,) = await asyncio.to_thread(cg.refresh_audiences, only=audience_key)
        except NotFoundError:
            return no_audience(key, audience_key)
        return RedirectResponse(
            f"{PREFIX}/audiences/{quote(res['audience_id'], safe='')}?done=refreshed",
            status_code=303,
        )

    @router.post("/audiences/{audience_key}/delete")
    async def delete_audience(request: Request, audience_key: str) -> Response:
        key = await signed_in(request)
        if key is None:
            return to_login(request)
        form, refused = await writable_form(request, key)
        if refused is not None:
            return refused
        try:
            aud = await asyncio.to_thread(cg.audience, audience_key)
        except NotFoundError:
            return no_audience(key, audience_key)
        if form.get("confirm") != "yes":
            data = await asyncio.to_thread(audience_data, aud["audience_id"], 1)
            return page(
                "audience.html",
                status=400,
                key=key,
                nav="audiences",
                **data,
                can_write=True,
                csrf=csrf_token(request),
                notice=None,
                error="Tick “yes, delete this audience” to confirm.",
            )
        await asyncio.to_thread(cg.delete_audience, aud["audience_id"])
        return RedirectResponse(
            f"{PREFIX}/audiences?deleted={quote(aud['name'], safe='')}", status_code=303
        )

    return router


_FACETS = [
    ("brand", "brand"),
    ("cat", "category"),
    ("dept", "department"),
    ("size", "size"),
    ("colour", "colour"),
    ("price", "price band"),
]


def customer_view(c: dict[str, Any], currency: str) -> dict[str, Any]:
    """What the customer page shows, prepared from the facade's 360 document."""
    f = c["features"]
    traits = c["traits"]
    name = " ".join(str(traits[k]) for k in ("first_name", "last_name") if traits.get(k))
    title = name or (c["customer_ids"][0] if c["customer_ids"] else "Anonymous visitor")
    cards = [
        ("lifecycle stage", f["lifecycle_stage"] or "—"),
        ("orders", f"{f['orders']:,}"),
        ("net revenue", _money(f["net_revenue"], currency)),
        ("average order", _money(f["average_order_value"], currency)),
        ("last order", _when(f["last_order"])),
        ("last seen", _when(f["last_seen"])),
        ("usual gap (days)", _num(f["inter_purchase_days"]["median"], 1)),
        ("preferred channel", c["preferred_channel"] or "—"),
        ("time zone", c["timezone"] or "—"),
    ]
    shown_traits = [
        (k, _trait(v)) for k, v in traits.items() if k not in ("first_name", "last_name")
    ]
    aff = f["affinities"]
    keys = [(k, label) for k, label in _FACETS if k in aff]
    keys += [(k, k.removeprefix("attr:")) for k in sorted(aff) if k.startswith("attr:")]
    affinities = [(label, aff[k][:3]) for k, label in keys if aff[k]]
    preds = c.get("predictions") or {}
    predictions = []
    for model, body in preds.items():
        if not isinstance(body, dict) or model in STRUCTURED:
            continue
        predictions.append(_generic(model, body))
    return {
        "title": title,
        "cards": cards,
        "traits": shown_traits,
        "affinities": affinities,
        "predictions": predictions,
        "lifetime": _lifetime(preds.get("lifetime"), currency),
        "churn": _churn(preds.get("churn")),
        "cadence": _cadence(preds.get("cadence")),
        "segment": _segment(preds.get("segments")),
        "questions": _questions(preds.get("anomalies")),
        "timeline": [_timeline_row(e, currency) for e in c["history"]],
    }


#: models whose 360 output has a known shape and its own panel; any other model is shown
#: generically (its scalar values and reasons)
STRUCTURED = ("lifetime", "churn", "cadence", "segments", "anomalies")


def _generic(model: str, body: dict[str, Any]) -> dict[str, Any]:
    values = [
        (k, _fmt_value(v))
        for k, v in body.items()
        if k not in ("version", "reasons") and not isinstance(v, dict | list)
    ]
    return {
        "model": model,
        "version": body.get("version"),
        "values": values,
        "reasons": [_reason(r) for r in body.get("reasons") or []],
    }


def _head(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": body.get("version"),
        "as_of": body.get("as_of"),
        "reasons": [_reason(r) for r in body.get("reasons") or []],
    }


def _pct(v: Any) -> str:
    return "—" if v is None else f"{float(v) * 100:.0f}%"


def _days(v: Any) -> str:
    return "—" if v is None else f"{float(v):,.0f} days"


def _lifetime(body: Any, currency: str) -> dict[str, Any] | None:
    """P(alive), expected purchases, spend and CLV of one person, formatted."""
    if not isinstance(body, dict):
        return None
    out = _head(body) | {"scored": bool(body.get("scored")), "figures": []}
    if out["scored"]:
        horizon = body.get("clv_horizon_days")
        out["p_alive"] = float(body["p_alive"])
        out["figures"] = [
            ("P(alive)", _pct(body["p_alive"])),
            ("expected purchases, 30 days", _num(body["expected_purchases_30d"], 2)),
            ("expected purchases, 90 days", _num(body["expected_purchases_90d"], 2)),
            ("expected spend per order", _money(body["expected_spend"], currency)),
            (
                "CLV" + (f" ({horizon:.0f}-day horizon)" if horizon else ""),
                _money(body["clv"], currency),
            ),
        ]
    return out


def _churn(body: Any) -> dict[str, Any] | None:
    if not isinstance(body, dict):
        return None
    out = _head(body) | {"scored": bool(body.get("scored")), "figures": []}
    if out["scored"]:
        risk = float(body["churn_risk"])
        out["risk"] = risk
        out["level"] = "high" if risk >= 0.5 else "medium" if risk >= 0.25 else "low"
        window = body.get("window_days")
        out["figures"] = [
            ("churn risk" + (f" (no purchase in {window:.0f} days)" if window else ""), _pct(risk)),
            ("days since the last purchase", _days(body.get("days_since_last_purchase"))),
            ("usual gap", _days(body.get("usual_gap_days"))),
            ("lateness against their rhythm", _num(body.get("overdue_ratio"), 1) + " times"),
        ]
    return out


def _due(days: Any) -> str:
    if days is None:
        return "—"
    d = float(days)
    if d < 0:
        return f"{-d:,.0f} days ago"
    return "today" if d < 0.5 else f"in {d:,.0f} days"


def _window(w: Any) -> str:
    if not isinstance(w, list | tuple) or len(w) != 2 or w[0] is None or w[1] is None:
        return "—"
    return f"{float(w[0]):,.0f} to {float(w[1]):,.0f} days"


def _status(due_soon: Any, overdue: Any) -> tuple[str, str]:
    if overdue:
        return "overdue", "warn"
    if due_soon:
        return "due soon", "ok"
    return "not yet", "muted"


def _cadence(body: Any) -> dict[str, Any] | None:
    """The next-purchase window overall and per category, with due soon / overdue flags."""
    if not isinstance(body, dict):
        return None
    status, cls = _status(body.get("due_soon"), body.get("overdue"))
    return _head(body) | {
        "status": status,
        "status_class": cls,
        "figures": [
            ("next purchase due", _due(body.get("next_purchase_due_days"))),
            ("purchase window", _window(body.get("purchase_window_days"))),
            ("cadence", _days(body.get("cadence_days"))),
            ("likely to resell", "yes" if body.get("likely_to_sell") else "no"),
        ],
        "categories": [
            {
                "category": x["category"],
                "purchases": x["purchases"],
                "last_purchase": x["last_purchase"],
                "interval": _days(x.get("expected_interval_days")),
                "window": _window(x.get("window_days")),
                "due": _due(x.get("next_purchase_due_days")),
                "status": _status(x.get("due_soon"), x.get("overdue"))[0],
                "status_class": _status(x.get("due_soon"), x.get("overdue"))[1],
            }
            for x in body.get("categories") or []
        ],
    }


def _segment(body: Any) -> dict[str, Any] | None:
    if not isinstance(body, dict):
        return None
    return _head(body) | {
        "segment_id": body.get("segment_id"),
        "label": body.get("label"),
        "size": body.get("size"),
        "history": list(body.get("history") or []),
    }


def _questions(body: Any) -> dict[str, Any] | None:
    if not isinstance(body, dict):
        return None
    qs = list(body.get("questions") or [])
    return _head(body) | {
        "pending": [q for q in qs if q.get("status") == "pending"],
        "answered": [q for q in qs if q.get("status") != "pending"],
        "kept_apart": len(body.get("kept_apart_from_taste") or []),
    }


def audience_field_groups(fields: dict[str, str]) -> list[tuple[str, list[tuple[str, str]]]]:
    """The known rule fields grouped by their prefix (``consent.``, ``affinity.``, …) for the
    create form's reference list; fields without a dot go under "profile and predictions"."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for name in sorted(fields):
        head = name.split(".", 1)[0] if "." in name else "profile and predictions"
        groups.setdefault(head, []).append((name, fields[name]))
    return sorted(groups.items(), key=lambda kv: (kv[0] != "profile and predictions", kv[0]))


def _trait(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(str(x) for x in v.values() if x)
    return str(v)


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return {True: "yes", False: "no", None: "—"}[v]
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
    return str(v)


def _reason(r: Any) -> str:
    if isinstance(r, dict):
        return str(r.get("text") or r.get("code") or r)
    return str(r)


def _timeline_row(e: dict[str, Any], currency: str) -> dict[str, str]:
    """One event of the history as (when, type, what, value) for the timeline table."""
    kind = e["type"]
    what: list[str] = []
    value = ""
    if e.get("product_id"):
        what.append(str(e["product_id"]) + (f" ({e['variant_id']})" if e.get("variant_id") else ""))
    if kind == "search":
        what.append(f"“{e.get('query', '')}”, {e.get('result_count', '?')} results")
    if e.get("order_id"):
        what.append(f"order {e['order_id']}")
    lines = e.get("lines") or []
    if lines:
        what.append(
            ", ".join(f"{ln['product_id']} x {ln['quantity']}" for ln in lines[:4])
            + (" …" if len(lines) > 4 else "")
        )
    if e.get("total") is not None:
        value = _money(e["total"], currency)
    elif e.get("unit_price") is not None:
        value = _money(e["unit_price"], currency)
    elif e.get("price") is not None:
        value = _money(e["price"], currency)
    if kind == "consent":
        what.append(f"{e.get('channel')} {'granted' if e.get('granted') else 'revoked'}")
    if kind == "answer":
        what.append(f"{e.get('question_id')}: {e.get('answer')}")
    if kind == "identify":
        what.append(", ".join(sorted((e.get("traits") or {}).keys())))
    for k in ("campaign_id", "channel", "message_id"):
        if e.get(k) and kind in (
            "delivered",
            "open",
            "click",
            "bounce",
            "unsubscribe",
            "complaint",
        ):
            what.append(f"{k.replace('_id', '')} {e[k]}")
    return {
        "at": e["timestamp"],
        "type": kind.replace("_", " "),
        "what": "; ".join(what),
        "value": value,
    }


def _safe_next(nxt: str) -> str:
    """Only a path inside the dashboard: never an open redirect to another site."""
    if not nxt.startswith(PREFIX) or nxt.startswith("//") or "\\" in nxt:
        return PREFIX
    return nxt
