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

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from concierge.facade import Concierge

log = logging.getLogger(__name__)


def _warm(cg: Concierge) -> None:
    try:
        cg.recommender.warm()
    except Exception:  # a store without the tables yet, or a model that fails to load
        log.exception("could not load the recommendation models at start")


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
