"""The HTTP API: a thin FastAPI layer over :class:`concierge.facade.Concierge`.

* Every route but ``/health`` needs an API key (``Authorization: Bearer <key>`` or
  ``X-API-Key``); roles: ``ingest`` (write events and catalog), ``read`` (read profiles and
  catalog), ``admin`` (everything, including export, erasure and keys). Keys are looked up once
  and cached for :data:`KEY_TTL` seconds, so a revoked key stops working within that time.
* Every error is JSON ``{"error": {"code", "message", "fields": [{"field", "reason"}]}}``:
  400 malformed JSON, 401/403 auth, 404 unknown, 413 too large, 415 not JSON, 422 invalid.
* ``POST /v1/events`` reads and parses the body itself (orjson; the size limit is enforced while
  reading), validates every event before anything is stored, and hands the events to the group
  committer, answering only once they are committed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from concierge.access import GRANTS, ApiKey
from concierge.errors import ConciergeError, ConflictError, FieldError, InputError, NotFoundError
from concierge.facade import Concierge
from concierge.ingest.batcher import GroupCommitter
from concierge.settings import Settings, load_settings

KEY_TTL = 30.0
log = logging.getLogger(__name__)


class JSON(Response):
    """JSON rendered by orjson (datetimes, numpy-free dicts from the facade)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, fields: list[FieldError] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, fields or []


def _body(code: str, message: str, fields: list[FieldError]) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "fields": [{"field": f.field, "reason": f.reason} for f in fields],
        }
    }


def _json(status: int, code: str, message: str, fields: list[FieldError] | None = None) -> Response:
    return JSON(_body(code, message, fields or []), status_code=status)


class KeyCache:
    """API keys by secret digest, kept for a short time (misses too, against brute force)."""

    def __init__(self, concierge: Concierge, ttl: float = KEY_TTL) -> None:
        self.concierge, self.ttl = concierge, ttl
        self._keys: dict[str, tuple[ApiKey | None, float]] = {}

    async def lookup(self, secret: str) -> ApiKey | None:
        digest = hashlib.sha256(secret.encode()).hexdigest()
        now = time.monotonic()
        hit = self._keys.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        key = await asyncio.to_thread(self.concierge.authenticate, secret)
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[digest] = (key, now + self.ttl)
        return key

    def forget(self) -> None:
        self._keys.clear()


def create_app(
    settings: Settings | None = None,
    concierge: Concierge | None = None,
    *,
    worker_channels: Callable[[Concierge], Any] | None = None,
    external_applier: bool = False,
) -> FastAPI:
    """The API over ``concierge`` (or a store opened from ``settings``); with
    ``worker_channels`` (the channels for a store) it also runs the delivery worker; with
    ``external_applier`` another process brings the profiles up to the log (``serve`` starts
    it, see :mod:`concierge.ingest.applier`)."""
    settings = settings or (concierge.settings if concierge else load_settings())
    owned = concierge is None
    cg = concierge or Concierge(settings=settings, role="api" if external_applier else "default")
    if settings.bootstrap_admin_key:
        cg.ensure_api_key("bootstrap admin", "admin", settings.bootstrap_admin_key)
    committer = GroupCommitter(cg, external_applier=external_applier)
    keys = KeyCache(cg)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await committer.start()
        background = None
        if worker_channels is not None:
            from concierge.campaigns.inprocess import BackgroundWorker

            background = BackgroundWorker(cg, worker_channels(cg))
            background.start()
        try:
            yield
        finally:
            if background is not None:
                await asyncio.to_thread(background.stop)
            await committer.stop()
            if owned:
                cg.close()

    app = FastAPI(
        title="Concierge",
        version="0.1.0",
        description="A personal concierge for every shopper: events, catalog, customer 360.",
        default_response_class=JSON,
        lifespan=lifespan,
    )
    app.state.concierge = cg
    app.state.committer = committer
    app.state.keys = keys

    # -- errors ------------------------------------------------------------------------------

    @app.exception_handler(ApiError)
    async def _api_error(_r: Request, exc: ApiError) -> Response:
        return _json(exc.status, exc.code, exc.message, exc.fields)

    @app.exception_handler(InputError)
    async def _input_error(_r: Request, exc: InputError) -> Response:
        return _json(422, "invalid_input", str(exc), list(exc.errors))

    @app.exception_handler(NotFoundError)
    async def _not_found(_r: Request, exc: NotFoundError) -> Response:
        return _json(404, "not_found", str(exc))

    @app.exception_handler(ConflictError)
    async def _conflict(_r: Request, exc: ConflictError) -> Response:
        return _json(409, "conflict", str(exc))

    @app.exception_handler(ConciergeError)
    async def _other(_r: Request, exc: ConciergeError) -> Response:
        return _json(400, "bad_request", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_r: Request, exc: RequestValidationError) -> Response:
        fields = [
            FieldError(".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]), e["msg"])
            for e in exc.errors()
        ]
        return _json(422, "invalid_input", "the request is not valid", fields)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_r: Request, exc: StarletteHTTPException) -> Response:
        return _json(exc.status_code, "http_error", str(exc.detail))

    # -- auth ----------------------------------------------------------------------------------

    async def caller(request: Request, need: str) -> ApiKey:
        return await authorize(request.headers, need)

    async def authorize(headers: Headers, need: str) -> ApiKey:
        header = headers.get("authorization", "")
        secret = header[7:].strip() if header.lower().startswith("bearer ") else None
        secret = secret or headers.get("x-api-key")
        if not secret:
            raise ApiError(
                401,
                "unauthenticated",
                "an API key is required",
                [FieldError("authorization", "send 'Authorization: Bearer <key>'")],
            )
        key = await keys.lookup(secret)
        if key is None:
            raise ApiError(
                401,
                "unauthenticated",
                "unknown or revoked API key",
                [FieldError("authorization", "unknown or revoked API key")],
            )
        if need not in GRANTS[key.role]:
            raise ApiError(
                403,
                "forbidden",
                f"a {key.role} key may not {need}",
                [FieldError("authorization", f"needs a key with the {need} right")],
            )
        return key

    def needs(right: str) -> Callable[[Request], Awaitable[ApiKey]]:
        async def dep(request: Request) -> ApiKey:
            return await caller(request, right)

        return dep

    from fastapi import Depends

    ingest_key = Depends(needs("ingest"))
    read_key = Depends(needs("read"))
    admin_key = Depends(needs("admin"))
    from concierge.api.behaviour import router as behaviour_router

    app.include_router(behaviour_router(cg, needs))

    async def json_body(request: Request) -> Any:
        return await read_json(request.headers, request.stream())

    async def read_json(headers: Headers, stream: AsyncIterator[bytes]) -> Any:
        ctype = headers.get("content-type", "")
        if not ctype.startswith("application/json"):
            raise ApiError(
                415,
                "unsupported_media_type",
                "send JSON",
                [FieldError("content-type", "must be application/json")],
            )
        limit = settings.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(
                413,
                "too_large",
                f"the body is over {limit} bytes",
                [FieldError("body", f"at most {limit} bytes")],
            )
        chunks, size = [], 0
        async for chunk in stream:
            size += len(chunk)
            if size > limit:
                raise ApiError(
                    413,
                    "too_large",
                    f"the body is over {limit} bytes",
                    [FieldError("body", f"at most {limit} bytes")],
                )
            chunks.append(chunk)
        try:
            return orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError as exc:
            raise ApiError(
                400, "malformed_json", "the body is not valid JSON", [FieldError("body", str(exc))]
            ) from exc

    # -- routes --------------------------------------------------------------------------------

    from concierge.web.routes import PREFIX, dashboard_router

    app.include_router(dashboard_router(cg, keys.lookup, committer.settled))

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        from fastapi.responses import RedirectResponse

        return RedirectResponse(PREFIX, status_code=307)

    from concierge.api.campaigns import router as campaigns_router

    app.include_router(
        campaigns_router(
            cg, read_key=read_key, admin_key=admin_key, ingest_key=ingest_key, json_body=json_body
        )
    )

    @app.get("/health", tags=["service"])
    async def health() -> dict[str, str]:
        """Liveness (no key needed)."""
        return {"status": "ok"}

    async def ingest_events(request: Request) -> dict[str, Any]:
        return await ingest_body(await json_body(request))

    async def ingest_body(body: Any) -> dict[str, Any]:
        single = isinstance(body, dict) and "events" not in body
        items = [body] if single else body.get("events") if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise ApiError(
                422,
                "invalid_input",
                "expected an event, an array or {events: [...]}",
                [FieldError("events", "must be an array of events")],
            )
        if len(items) > settings.max_batch:
            raise ApiError(
                413,
                "too_large",
                f"at most {settings.max_batch} events per request",
                [FieldError("events", f"at most {settings.max_batch} events")],
            )
        if not items:
            return {"accepted": 0, "duplicates": []}
        try:
            events = Concierge.validate_events(items)
        except InputError as exc:
            fields = [
                FieldError(e.field if single else f"events[{e.index}].{e.field}", e.reason)
                for e in exc.errors
            ]
            raise ApiError(422, "invalid_input", "invalid events", fields) from exc
        try:
            outcome = await committer.submit(events)
        except InputError as exc:  # refused by the store (e.g. another currency)
            raise ApiError(422, "invalid_input", str(exc), list(exc.errors)) from exc
        return {"accepted": outcome.accepted, "duplicates": outcome.duplicates}

    @app.post("/v1/events", tags=["events"], status_code=200)
    async def post_events(request: Request, _k: ApiKey = ingest_key) -> dict[str, Any]:
        """Ingest one event (an object with ``type``) or a batch (an array, or
        ``{"events": [...]}``) of up to ``max_batch`` events. All or nothing: one invalid event
        rejects the request (422, every problem named as ``events[i].field``). Answers after
        the events are committed: ``{"accepted": n, "duplicates": [event ids already stored]}``.
        """
        return await ingest_events(request)

    class FastEvents:
        """``POST /v1/events`` answered straight from ASGI, before routing.

        The hot path skips Starlette's request objects, FastAPI's dependency solving and
        response serialisation (measured with bench/bench_http_ingest.py); it runs the same
        functions as ``post_events``, which stays for the OpenAPI description.
        """

        def __init__(self, inner: ASGIApp) -> None:
            self.inner = inner

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if not (
                scope["type"] == "http"
                and scope["method"] == "POST"
                and scope["path"] == "/v1/events"
            ):
                await self.inner(scope, receive, send)
                return
            headers = Headers(scope=scope)

            async def chunks() -> AsyncIterator[bytes]:
                more = True
                while more:
                    msg = await receive()
                    if msg["type"] == "http.disconnect":
                        raise ApiError(400, "disconnected", "the client went away")
                    yield msg.get("body", b"")
                    more = msg.get("more_body", False)

            status, payload = 200, None
            try:
                await authorize(headers, "ingest")
                payload = await ingest_body(await read_json(headers, chunks()))
            except ApiError as exc:
                status, payload = exc.status, _body(exc.code, exc.message, exc.fields)
            except Exception:  # the commit failed: nothing of this request was stored
                log.exception("ingest failed")
                status = 503
                payload = _body("unavailable", "the events were not stored; retry", [])
            data = orjson.dumps(payload)
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(data)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": data})

    app.add_middleware(FastEvents)

    @app.put("/v1/products", tags=["catalog"])
    async def put_products(request: Request, _k: ApiKey = ingest_key) -> dict[str, int]:
        """Create or update products (an array, or ``{"products": [...]}``); price drops,
        rises, new products and stock changes are recorded as catalog events."""
        body = await json_body(request)
        items = body.get("products") if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise ApiError(
                422,
                "invalid_input",
                "expected an array of products",
                [FieldError("products", "must be an array")],
            )
        return await asyncio.to_thread(cg.upsert_products, items)

    @app.get("/v1/products", tags=["catalog"])
    def list_products(
        limit: int = Query(100, ge=1, le=1000),
        offset: int = Query(0, ge=0),
        _k: ApiKey = read_key,
    ) -> list[dict[str, Any]]:
        return cg.products(limit=limit, offset=offset)

    @app.get("/v1/products/{product_id}", tags=["catalog"])
    def get_product(product_id: str, _k: ApiKey = read_key) -> dict[str, Any]:
        product = cg.product(product_id)
        return product.model_dump(mode="json") | {"available": cg.available(product_id)}

    @app.post("/v1/stock", tags=["catalog"])
    async def post_stock(request: Request, _k: ApiKey = ingest_key) -> dict[str, int]:
        """Set stock: ``[{"product_id", "variant_id"?, "stock"}]``."""
        body = await json_body(request)
        return await asyncio.to_thread(cg.set_stock, _list(body, "updates"))

    @app.post("/v1/prices", tags=["catalog"])
    async def post_prices(request: Request, _k: ApiKey = ingest_key) -> dict[str, int]:
        """Set prices: ``[{"product_id", "variant_id"?, "price"}]``."""
        body = await json_body(request)
        return await asyncio.to_thread(cg.set_price, _list(body, "updates"))

    @app.get("/v1/catalog/events", tags=["catalog"])
    def catalog_events(
        since: int = Query(0, ge=0, description="Return events after this sequence number."),
        limit: int = Query(1000, ge=1, le=10_000),
        _k: ApiKey = read_key,
    ) -> list[dict[str, Any]]:
        """Price drops and rises, back in stock, out of stock, new products."""
        return cg.catalog_events(since_seq=since, limit=limit)

    @app.get("/v1/customers/{customer_id}", tags=["customers"])
    async def get_customer(
        customer_id: str,
        anonymous: bool = Query(False, description="The id is an anonymous (device) id."),
        history: int = Query(50, ge=0, le=1000, description="How many recent events."),
        _k: ApiKey = read_key,
    ) -> dict[str, Any]:
        """The customer 360: traits, consent and its history, preferences, answers, computed
        features (orders, RFM, intervals, affinities, cart, session, seller activity), and the
        most recent events."""
        await committer.settled()  # read your writes
        if anonymous:
            return await asyncio.to_thread(cg.customer, anonymous_id=customer_id, history=history)
        return await asyncio.to_thread(cg.customer, customer_id, history=history)

    @app.get("/v1/customers/{customer_id}/export", tags=["privacy"])
    async def export_customer(customer_id: str, _k: ApiKey = admin_key) -> dict[str, Any]:
        """Everything stored about a person (a privacy access request)."""
        await committer.settled()
        return await asyncio.to_thread(cg.export_customer, customer_id)

    @app.delete("/v1/customers/{customer_id}", tags=["privacy"])
    async def erase_customer(customer_id: str, _k: ApiKey = admin_key) -> dict[str, Any]:
        """Erase a person's personal data from profiles and events (counts stay consistent)."""
        return await asyncio.to_thread(cg.erase_customer, customer_id)

    @app.get("/v1/stats", tags=["service"])
    def stats(_k: ApiKey = read_key) -> dict[str, int]:
        return cg.stats()

    @app.get("/v1/keys", tags=["keys"])
    def list_keys(_k: ApiKey = admin_key) -> list[dict[str, object]]:
        return cg.api_keys()

    @app.post("/v1/keys", tags=["keys"], status_code=201)
    async def create_key(request: Request, _k: ApiKey = admin_key) -> dict[str, str]:
        """Create a key: ``{"name", "role"}``; the secret is returned once."""
        body = await json_body(request)
        if not isinstance(body, dict):
            raise ApiError(
                422,
                "invalid_input",
                "expected an object",
                [FieldError("body", "must be an object with name and role")],
            )
        key, secret = cg.create_api_key(str(body.get("name", "")), str(body.get("role", "")))
        return {"key_id": key.key_id, "name": key.name, "role": key.role, "secret": secret}

    @app.delete("/v1/keys/{key_id}", tags=["keys"])
    def revoke_key(key_id: str, _k: ApiKey = admin_key) -> dict[str, str]:
        cg.revoke_api_key(key_id)
        keys.forget()
        return {"revoked": key_id}

    from concierge.api.recs import FastRecommendations
    from concierge.api.recs import router as recs_router

    app.include_router(recs_router(cg, needs, json_body))
    app.add_middleware(FastRecommendations, cg=cg, authorize=authorize)
    return app


def _list(body: Any, name: str) -> list[Any]:
    items = body.get(name) if isinstance(body, dict) else body
    if not isinstance(items, list):
        raise ApiError(
            422,
            "invalid_input",
            f"expected an array of {name}",
            [FieldError(name, "must be an array")],
        )
    return items


def app_from_env() -> FastAPI:
    """The app for ``uvicorn --factory concierge.api.app:app_from_env`` (settings from env):
    the entry point of each worker process (see :func:`concierge.api.server.serve`);
    ``CONCIERGE_EXTERNAL_APPLIER=1`` when ``serve`` runs the applier process."""
    from concierge.api.server import tune_process

    tune_process()
    return create_app(
        load_settings(), external_applier=os.environ.get("CONCIERGE_EXTERNAL_APPLIER") == "1"
    )
