"""The marketer dashboard, a thin layer of server-rendered pages over the facade.

Why server-rendered Jinja2 and not a JavaScript single-page app: every figure on these pages
already exists in the facade as a dict, the pages must work on a fresh machine whose only
registries are PyPI and Debian (no npm build step in ``make demo``), and a page that needs no
script has nothing to break. Templates run in Jinja2 with autoescape and ``StrictUndefined``:
a shopper's name like ``<script>`` is shown as text, and a template that names a missing value
fails in the tests instead of printing an empty cell.

Sign-in takes an API key with the ``read`` right (a ``read`` or ``admin`` key) and keeps it in an
``HttpOnly``, ``SameSite=Strict`` cookie scoped to ``/dashboard``; every page looks the key up
again through the API's key cache, so a revoked key stops working within the cache's TTL.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote

import jinja2
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from concierge.access import GRANTS, ApiKey
from concierge.errors import NotFoundError
from concierge.facade import Concierge

COOKIE = "concierge_key"
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
        return resp

    @router.post("/logout")
    def logout() -> Response:
        resp = RedirectResponse(f"{PREFIX}/login", status_code=303)
        resp.delete_cookie(COOKIE, path=PREFIX)
        return resp

    @router.get("")
    async def overview(request: Request) -> Response:
        key = await signed_in(request)
        if key is None:
            return to_login(request)
        await settle()
        data = await asyncio.to_thread(cg.overview)
        return page("overview.html", key=key, nav="overview", **data)

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
    predictions = []
    for model, body in (c.get("predictions") or {}).items():
        if not isinstance(body, dict):
            continue
        values = [
            (k, _fmt_value(v))
            for k, v in body.items()
            if k not in ("version", "reasons") and not isinstance(v, dict | list)
        ]
        predictions.append(
            {
                "model": model,
                "version": body.get("version"),
                "values": values,
                "reasons": [_reason(r) for r in body.get("reasons") or []],
            }
        )
    return {
        "title": title,
        "cards": cards,
        "traits": shown_traits,
        "affinities": affinities,
        "predictions": predictions,
        "timeline": [_timeline_row(e, currency) for e in c["history"]],
    }


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
