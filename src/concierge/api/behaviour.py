"""Routes of the behaviour part: audiences (CRUD, members, changes, refresh), segments (runs,
personas, flows), a customer's segment history and clarifying questions. Thin: every route calls
one facade method in a worker thread and returns what it returns."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from concierge.facade import Concierge


class AudienceCreate(BaseModel):
    """A new audience: a unique name and a rule (see the rule language in the docs)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    rule: str = Field(
        min_length=1, max_length=5000, examples=["churn_risk > 0.6 and consent.email"]
    )
    description: str | None = Field(None, max_length=2000)


def router(cg: Concierge, needs: Callable[[str], Callable[[Request], Awaitable[Any]]]) -> APIRouter:
    """The routes, with the app's role checks (``needs("read")``, ``needs("admin")``)."""
    r = APIRouter()
    read_key = Depends(needs("read"))
    admin_key = Depends(needs("admin"))

    async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    @r.get("/v1/audiences", tags=["audiences"])
    async def list_audiences(_k: Any = read_key) -> list[dict[str, Any]]:
        """Every audience with its rule and member count."""
        out: list[dict[str, Any]] = await call(cg.audiences)
        return out

    @r.post("/v1/audiences", tags=["audiences"], status_code=201)
    async def create_audience(body: AudienceCreate, _k: Any = admin_key) -> dict[str, Any]:
        """Define an audience; it is evaluated at once. Unknown fields are refused (422) naming
        the known ones."""
        out: dict[str, Any] = await call(
            cg.create_audience, body.name, body.rule, description=body.description
        )
        return out

    @r.get("/v1/audiences/fields", tags=["audiences"])
    async def audience_fields(_k: Any = read_key) -> dict[str, str]:
        """Every field a rule may name, with its meaning."""
        out: dict[str, str] = await call(cg.audience_fields)
        return out

    @r.post("/v1/audiences/refresh", tags=["audiences"])
    async def refresh_audiences(
        full: bool = Query(False, description="Re-evaluate everyone."), _k: Any = admin_key
    ) -> list[dict[str, Any]]:
        """Re-evaluate every audience (incrementally where possible)."""
        out: list[dict[str, Any]] = await call(cg.refresh_audiences, full=full)
        return out

    @r.get("/v1/audiences/{audience}", tags=["audiences"])
    async def get_audience(audience: str, _k: Any = read_key) -> dict[str, Any]:
        out: dict[str, Any] = await call(cg.audience, audience)
        return out

    @r.delete("/v1/audiences/{audience}", tags=["audiences"])
    async def delete_audience(audience: str, _k: Any = admin_key) -> dict[str, str]:
        await call(cg.delete_audience, audience)
        return {"deleted": audience}

    @r.get("/v1/audiences/{audience}/members", tags=["audiences"])
    async def audience_members(
        audience: str,
        limit: int = Query(100, ge=1, le=10_000),
        offset: int = Query(0, ge=0),
        _k: Any = read_key,
    ) -> dict[str, Any]:
        out: dict[str, Any] = await call(cg.audience_members, audience, limit=limit, offset=offset)
        return out

    @r.get("/v1/audiences/{audience}/changes", tags=["audiences"])
    async def audience_changes(
        audience: str,
        since: int = Query(0, ge=0, description="Changes after this sequence number."),
        limit: int = Query(1000, ge=1, le=10_000),
        _k: Any = read_key,
    ) -> list[dict[str, Any]]:
        """Who entered or left, in order (what "audience entry" triggers read)."""
        out: list[dict[str, Any]] = await call(
            cg.audience_changes, audience, since=since, limit=limit
        )
        return out

    @r.get("/v1/segments", tags=["segments"])
    async def segments(
        run: int | None = Query(None, description="A run (default: the newest)."),
        _k: Any = read_key,
    ) -> dict[str, Any]:
        """The micro-segments of a run: persona, size, key figures, distinguishing features."""
        out: dict[str, Any] = await call(cg.segments, run=run)
        return out

    @r.get("/v1/segments/runs", tags=["segments"])
    async def segment_runs(_k: Any = read_key) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = await call(cg.segment_runs)
        return out

    @r.get("/v1/segments/flows", tags=["segments"])
    async def segment_flows(
        from_run: int | None = Query(None, alias="from"),
        to_run: int | None = Query(None, alias="to"),
        top: int = Query(50, ge=1, le=10_000),
        _k: Any = read_key,
    ) -> dict[str, Any]:
        """People moving between segments from one run to another."""
        out: dict[str, Any] = await call(
            cg.segment_flows, from_run=from_run, to_run=to_run, top=top
        )
        return out

    @r.get("/v1/customers/{customer_id}/segments", tags=["segments"])
    async def customer_segments(
        customer_id: str, anonymous: bool = Query(False), _k: Any = read_key
    ) -> list[dict[str, Any]]:
        """A customer's segment in every kept run."""
        if anonymous:
            out: list[dict[str, Any]] = await call(cg.segment_history, anonymous_id=customer_id)
        else:
            out = await call(cg.segment_history, customer_id)
        return out

    @r.get("/v1/customers/{customer_id}/questions", tags=["customers"])
    async def customer_questions(
        customer_id: str, anonymous: bool = Query(False), _k: Any = read_key
    ) -> list[dict[str, Any]]:
        """The customer's clarifying questions; answer one with an ``answer`` event naming its
        ``question_id`` and ``about_product_id``."""
        if anonymous:
            out: list[dict[str, Any]] = await call(cg.questions, anonymous_id=customer_id)
        else:
            out = await call(cg.questions, customer_id)
        return out

    return r
