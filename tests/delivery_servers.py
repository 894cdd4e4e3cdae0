"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives, and a real HTTP
server standing in for SMS/push providers. External systems, so not mocks of our own parts."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Mailbox:
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)  # rcpt -> SMTP reply
    delay: float = 0.0  # seconds spent on each message before answering the final dot
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        with self.lock:
            self.connections += 1
        return responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            import asyncio

            await asyncio.sleep(self.delay)
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(msg)  # type: ignore[arg-type]
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return f"250 OK queued as {len(self.messages)}"

    def ids(self) -> list[str]:
        with self.lock:
            return [str(m["Message-ID"]) for m in self.messages]


@contextmanager
def smtp_server(port: int | None = None, **kw: Any) -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox(**kw)
    port = port or free_port()
    ctl = Controller(box, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        yield box, port
    finally:
        ctl.stop()


@dataclass
class Provider:
    """Received JSON posts; fails the first ``fail_first`` requests with ``fail_status``;
    dedupes by Idempotency-Key like a provider that honours it."""

    posts: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    fail_first: int = 0
    fail_status: int = 503
    seen: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def http_provider(**kw: Any) -> Iterator[tuple[Provider, str]]:
    prov = Provider(**kw)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            n = int(self.headers.get("content-length", "0"))
            body = json.loads(self.rfile.read(n))
            with prov.lock:
                prov.seen += 1
                fail = prov.seen <= prov.fail_first
                if not fail:
                    prov.posts.append(body)
                    prov.keys.append(self.headers.get("Idempotency-Key", ""))
                    answer = {"id": f"msg-{len(prov.posts)}"}
            data = json.dumps({"error": "busy"} if fail else answer).encode()
            self.send_response(prov.fail_status if fail else 200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_a: Any) -> None:
            return

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        yield prov, f"http://127.0.0.1:{srv.server_address[1]}/v1/messages"
    finally:
        srv.shutdown()
        srv.server_close()
