"""``GET /v1/recommendations`` and the merchandising rules (``/v1/rules``).

A thin router over the facade, built inside :func:`concierge.api.app.create_app` so it reuses the
app's key dependencies. A recommendation request never answers 500 for an unknown person, an
untrained model or an empty catalog (the facade falls back and says so in ``fallback``); bad
parameters answer 422 naming the field.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from concierge.facade import Concierge

log = logging.getLogger(__name__)


def _warm(cg: Concierge) -> None:
    try:
        cg.recommender.warm()
    except Exception:  # a store without the tables yet, or a model that fails to load
        log.exception("could not load the recommendation models at start")


# the route's limits on its parameters (see ``recommendations`` below); None: not a string
LIMITS: dict[str, int | None] = {
    "customer_id": 128,
    "anonymous_id": 128,
    "slot": None,
    "k": None,
    "anchor_product_id": 140,
}


def fast_arguments(query: bytes) -> dict[str, Any] | None:
    """The arguments of ``GET /v1/recommendations`` when the route's own checks would pass
    them all (each parameter at most once, within its length, ``k`` a plain 1-100, a known
    slot); ``None`` sends the request the ordinary way, where the problem is named (422)."""
    from concierge.decide.rules import SLOTS

    got: dict[str, Any] = {}
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name not in LIMITS:
            continue  # the route ignores unknown parameters too
        limit = LIMITS[name]
        if name in got or (limit is not None and len(value) > limit):
            return None
        got[name] = value
    if "k" in got:
        k = got["k"]
        if not (k.isascii() and k.isdigit() and 1 <= int(k) <= 100):
            return None
        got["k"] = int(k)
    if "slot" in got and got["slot"] not in SLOTS:
        return None
    return got


class FastRecommendations:
    """``GET /v1/recommendations`` answered straight from ASGI, before routing, as
    ``FastEvents`` answers ingest: the route's work without Starlette's request objects and
    FastAPI's dependency solving (about a sixth of a request's time, measured with py-spy under
    bench/bench_recs.py). Anything but a well-formed request with a valid key, and any error,
    goes on to the ordinary route, which answers it as it always has."""

    def __init__(
        self,
        inner: ASGIApp,
        *,
        cg: Concierge,
        authorize: Callable[[Headers, str], Awaitable[Any]],
    ) -> None:
        self.inner = inner
        self.cg = cg
        self.authorize = authorize

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and scope["path"] == "/v1/recommendations"
        ):
            await self.inner(scope, receive, send)
            return
        args = fast_arguments(scope.get("query_string", b""))
        if args is None:
            await self.inner(scope, receive, send)
            return
        try:
            await self.authorize(Headers(scope=scope), "read")
            recs = self.cg.recommend(args.pop("customer_id", None), **args)
        except Exception:  # a bad key, a bad anchor, a failure: the route answers (401/422/500)
            await self.inner(scope, receive, send)
            return
        data = orjson.dumps(recs.as_dict())
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(data)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})


def router(
    cg: Concierge,
    needs: Callable[[str], Callable[[Request], Awaitable[Any]]],
    json_body: Callable[[Request], Awaitable[Any]],
) -> APIRouter:
    r = APIRouter(tags=["recommendations"])
    # the API loads the models and the catalog at start, beside serving (LiveModels then
    # swaps in new versions as they appear)
    threading.Thread(target=_warm, args=(cg,), name="recs-warm", daemon=True).start()
    read_key = Depends(needs("read"))
    admin_key = Depends(needs("admin"))

    @r.get("/v1/recommendations", response_model=None)
    async def recommendations(
        customer_id: str | None = Query(None, max_length=128),
        anonymous_id: str | None = Query(None, max_length=128),
        slot: str = Query("home", description="home, product, cart, post_purchase or email"),
        k: int = Query(10, ge=1, le=100),
        anchor_product_id: str | None = Query(None, max_length=140),
        _k: Any = read_key,
    ) -> Response:
        """Recommendations with reasons; ``fallback`` names what answered when the full
        ranker could not (unknown person, untrained models, empty catalog).

        Answered on the event loop, not in a worker thread: a request is a few milliseconds of
        NumPy and two indexed reads, and threads would only contend for the GIL (measured with
        bench/bench_recs.py: more requests per second and a shorter tail inline).
        """
        recs = cg.recommend(
            customer_id,
            anonymous_id=anonymous_id,
            slot=slot,
            k=k,
            anchor_product_id=anchor_product_id,
        )
        return Response(orjson.dumps(recs.as_dict()), media_type="application/json")

    @r.get("/v1/rules")
    def list_rules(_k: Any = read_key) -> list[dict[str, Any]]:
        return cg.rules()

    @r.post("/v1/rules", status_code=201)
    async def create_rule(request: Request, _k: Any = admin_key) -> dict[str, Any]:
        """Create a rule: ``{"name", "action": pin|boost|bury|exclude, "product_id" | "facet",
        "weight"?, "slots"?, "starts_at"?, "ends_at"?}``. Conflicts answer 422 naming the field."""
        body = await json_body(request)
        return await asyncio.to_thread(cg.create_rule, body)

    @r.get("/v1/rules/{rule_id}")
    def get_rule(rule_id: str, _k: Any = read_key) -> dict[str, Any]:
        return cg.rule(rule_id)

    @r.delete("/v1/rules/{rule_id}")
    def delete_rule(rule_id: str, _k: Any = admin_key) -> dict[str, str]:
        cg.delete_rule(rule_id)
        return {"deleted": rule_id}

    return r
