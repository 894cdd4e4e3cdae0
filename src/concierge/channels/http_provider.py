"""The HTTP side of SMS and push providers: one kept-alive connection, timeouts, retries.

Each send is a JSON ``POST`` to the configured endpoint with ``Idempotency-Key: <outbox key>``
(the convention of Stripe, Twilio's ``I-Twilio-Idempotency-Token`` and the IETF draft
*The Idempotency-Key HTTP Header Field*): a resend after an uncertain crash carries the same key,
so a provider that honours it delivers once. Within one send, connection errors, timeouts, 429
and 5xx are retried ``retries`` times with exponential backoff; what still fails is reported
``retryable`` (the due queue tries again later), other 4xx are ``failed``. The standard library's
:mod:`http.client` keeps the connection open between sends; no extra dependency.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from concierge.channels.base import DeliveryResult


@dataclass(frozen=True)
class HttpProviderConfig:
    endpoint: str  # https://api.provider.example/v1/messages
    token: str | None = None  # sent as "Authorization: Bearer <token>"
    timeout: float = 10.0
    retries: int = 2
    backoff_s: float = 0.2  # first wait; doubles each retry
    headers: dict[str, str] = field(default_factory=dict)


class HttpProvider:
    def __init__(
        self, config: HttpProviderConfig, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        parts = urlsplit(config.endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoint must be an http(s) URL, not {config.endpoint!r}")
        self.config = config
        self._sleep = sleep
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self.config.timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def post(self, body: dict[str, Any], *, key: str) -> DeliveryResult:
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": key,
            **self.config.headers,
        }
        if self.config.token:
            headers["Authorization"] = f"Bearer {self.config.token}"
        data = orjson.dumps(body)
        last = "no attempt"
        for attempt in range(self.config.retries + 1):
            if attempt:
                self._sleep(self.config.backoff_s * 2 ** (attempt - 1))
            try:
                conn = self._connection()
                conn.request("POST", self._path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                last = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status < 300:
                return DeliveryResult("sent", provider_id=_provider_id(raw))
            last = f"HTTP {resp.status}: {raw[:200].decode(errors='replace')}"
            if resp.status == 429 or resp.status >= 500:
                continue
            if resp.status in (404, 410) and _says_invalid_recipient(raw):
                return DeliveryResult("suppressed", error=last)
            return DeliveryResult("failed", error=last)
        return DeliveryResult("retryable", error=last)


def _provider_id(raw: bytes) -> str | None:
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None
    if isinstance(body, dict):
        for name in ("id", "message_id", "sid", "name"):
            if isinstance(body.get(name), str):
                return str(body[name])
    return None


def _says_invalid_recipient(raw: bytes) -> bool:
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return False
    return isinstance(body, dict) and body.get("error") in ("invalid_recipient", "unregistered")
