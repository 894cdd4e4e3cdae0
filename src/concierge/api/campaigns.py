"""HTTP routes of campaigns and channels: a thin layer over the facade.

Keyed routes (``/v1/…``) reuse the app's API-key roles: ``read`` to list, preview and preflight,
``admin`` to change campaigns and the contact policy, ``ingest`` for provider webhooks and for
the site pulling its on-site messages (the site's key writes events already).

Public routes (``/t/…``) are reached from messages, so they carry no key; they are driven by
signed tokens (:mod:`concierge.channels.tracking`) and turn hits into ordinary events through
ingest:

* ``GET /t/o/{token}.gif`` — the open pixel (always answers the GIF);
* ``GET /t/c/{token}`` — the click redirect (302 to the URL signed into the token, never to
  one given in the request: no open redirect);
* ``GET /t/u/{token}`` — a confirmation page; ``POST /t/u/{token}`` unsubscribes at once
  (RFC 8058 one-click: mailbox providers POST ``List-Unsubscribe=One-Click``; a GET never
  unsubscribes, so link scanners cannot);
* ``GET``/``POST /t/p/{token}`` — the preference center: channels and messages per week.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from html import escape
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from concierge.channels.tracking import PIXEL_GIF
from concierge.errors import FieldError, InputError
from concierge.facade import Concierge

JsonBody = Callable[[Request], Awaitable[Any]]


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' "
        f"content='width=device-width'><title>{escape(title)}</title></head><body>"
        f"<h1>{escape(title)}</h1>{body}</body></html>",
        status_code=status,
    )


def router(
    cg: Concierge, *, read_key: Any, admin_key: Any, ingest_key: Any, json_body: JsonBody
) -> APIRouter:
    r = APIRouter()

    # -- campaigns ---------------------------------------------------------------------------

    @r.get("/v1/campaigns", tags=["campaigns"])
    def list_campaigns(
        status: str | None = Query(None), _k: Any = read_key
    ) -> list[dict[str, Any]]:
        return cg.campaigns(status=status)

    @r.post("/v1/campaigns", tags=["campaigns"], status_code=201)
    async def create_campaign(request: Request, _k: Any = admin_key) -> dict[str, Any]:
        """Create a campaign or a new version of it (JSON; validated, every problem named)."""
        body = await json_body(request)
        return await asyncio.to_thread(cg.save_campaign, body)

    @r.get("/v1/campaigns/{campaign_id}", tags=["campaigns"])
    def get_campaign(
        campaign_id: str, version: int | None = Query(None), _k: Any = read_key
    ) -> dict[str, Any]:
        return cg.campaign(campaign_id, version=version)

    @r.post("/v1/campaigns/{campaign_id}/status", tags=["campaigns"])
    async def campaign_status(
        campaign_id: str, request: Request, _k: Any = admin_key
    ) -> dict[str, Any]:
        body = await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("status"), str):
            raise InputError([FieldError("status", "draft, live or paused")])
        return cg.set_campaign_status(campaign_id, body["status"])

    @r.post("/v1/campaigns/{campaign_id}/preview", tags=["campaigns"])
    async def preview(campaign_id: str, request: Request, _k: Any = read_key) -> dict[str, Any]:
        """Render for ``{"customer_id"}`` now, with the reasons of each block."""
        body = await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("customer_id"), str):
            raise InputError([FieldError("customer_id", "required")])
        return await asyncio.to_thread(
            cg.preview, campaign_id, body["customer_id"], trigger=body.get("trigger")
        )

    @r.post("/v1/campaigns/{campaign_id}/preflight", tags=["campaigns"])
    async def preflight(
        campaign_id: str, sample: int | None = Query(None, ge=1), _k: Any = read_key
    ) -> dict[str, Any]:
        return await asyncio.to_thread(cg.preflight, campaign_id, sample=sample)

    @r.post("/v1/campaigns/{campaign_id}/schedule", tags=["campaigns"])
    async def schedule(campaign_id: str, _k: Any = admin_key) -> dict[str, Any]:
        return await asyncio.to_thread(cg.schedule_campaign, campaign_id)

    @r.get("/v1/contact-policy", tags=["campaigns"])
    def get_policy(_k: Any = read_key) -> dict[str, Any]:
        return cg.contact_policy()

    @r.put("/v1/contact-policy", tags=["campaigns"])
    async def put_policy(request: Request, _k: Any = admin_key) -> dict[str, Any]:
        return cg.set_contact_policy(await json_body(request))

    @r.get("/v1/outbox", tags=["campaigns"])
    def get_outbox(
        status: str | None = Query(None),
        limit: int = Query(100, ge=1, le=1000),
        _k: Any = read_key,
    ) -> dict[str, Any]:
        return {"counts": cg.delivery_counts(), "rows": cg.outbox(status=status, limit=limit)}

    @r.get("/v1/customers/{customer_id}/onsite-messages", tags=["campaigns"])
    async def onsite(
        customer_id: str, mark_seen: bool = Query(True), _k: Any = ingest_key
    ) -> list[dict[str, Any]]:
        """On-site / in-app messages for the site to show (marked seen unless told not to)."""
        return await asyncio.to_thread(cg.onsite_messages, customer_id, mark_seen=mark_seen)

    @r.post("/v1/webhooks/{channel}", tags=["campaigns"])
    async def webhook(channel: str, request: Request, _k: Any = ingest_key) -> dict[str, Any]:
        """Provider feedback: ``[{"type": "bounce"|"complaint", "address"?, "message_id"?,
        "hard"?, "reason"?}]`` (or ``{"events": [...]}``)."""
        body = await json_body(request)
        items = body.get("events") if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise InputError([FieldError("events", "an array of provider events")])
        return await asyncio.to_thread(cg.provider_feedback, channel, items)

    # -- public, token-driven ----------------------------------------------------------------

    @r.get("/t/o/{token}.gif", tags=["tracking"], include_in_schema=False)
    async def pixel(token: str) -> Response:
        await asyncio.to_thread(cg.track, "o", token)
        return Response(
            PIXEL_GIF, media_type="image/gif", headers={"Cache-Control": "no-store, private"}
        )

    @r.get("/t/c/{token}", tags=["tracking"], include_in_schema=False)
    async def click(token: str) -> Response:
        payload = await asyncio.to_thread(cg.track, "c", token)
        if payload is None or not str(payload.get("u", "")).startswith(("https://", "http://")):
            return _page("Link not found", "<p>This link is not valid.</p>", 404)
        return RedirectResponse(str(payload["u"]), status_code=302)

    @r.get("/t/u/{token}", tags=["tracking"], include_in_schema=False)
    async def unsubscribe_page(token: str) -> Response:
        return _page(
            "Unsubscribe",
            f"<form method='post' action='/t/u/{escape(token)}'>"
            "<p>Stop receiving these messages?</p><button type='submit'>Unsubscribe</button>"
            "</form>",
        )

    @r.post("/t/u/{token}", tags=["tracking"], include_in_schema=False)
    async def unsubscribe(token: str) -> Response:
        payload = await asyncio.to_thread(cg.track, "u", token)
        if payload is None:
            return _page("Link not found", "<p>This link is not valid.</p>", 404)
        return _page(
            "You are unsubscribed",
            f"<p>You will get no more {escape(str(payload['ch']))} messages.</p>",
        )

    @r.get("/t/p/{token}", tags=["tracking"], include_in_schema=False)
    async def preference_center(token: str) -> Response:
        prefs = await asyncio.to_thread(cg.preferences, token)
        if prefs is None:
            return _page("Link not found", "<p>This link is not valid.</p>", 404)
        return _page("Your preferences", _form(token, prefs))

    @r.post("/t/p/{token}", tags=["tracking"], include_in_schema=False)
    async def save_preferences(token: str, request: Request) -> Response:
        form = parse_qs((await request.body()).decode(errors="replace"))
        channels = {ch: form.get(ch, ["off"])[0] == "on" for ch in ("email", "sms", "push")}
        raw = (form.get("max_per_week") or [""])[0].strip()
        if raw and not raw.isdigit():
            raise InputError([FieldError("max_per_week", "a whole number")])
        prefs = await asyncio.to_thread(
            cg.set_preferences,
            token,
            channels=channels,
            max_per_week=int(raw) if raw else None,
        )
        if prefs is None:
            return _page("Link not found", "<p>This link is not valid.</p>", 404)
        return _page("Saved", "<p>Your preferences are saved.</p>" + _form(token, prefs))

    return r


def _form(token: str, prefs: dict[str, Any]) -> str:
    rows = "".join(
        f"<label><input type='checkbox' name='{ch}'{' checked' if on else ''}> {ch}</label><br>"
        for ch, on in prefs["channels"].items()
    )
    weekly = "" if prefs["max_per_week"] is None else str(prefs["max_per_week"])
    return (
        f"<form method='post' action='/t/p/{escape(token)}'>{rows}"
        "<label>At most <input name='max_per_week' size='2' inputmode='numeric' "
        f"value='{escape(weekly)}'> messages a week</label><br>"
        "<button type='submit'>Save</button></form>"
    )
