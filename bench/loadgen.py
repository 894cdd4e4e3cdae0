"""An open-loop HTTP load generator: requests at a fixed rate, latency from when each was due.

Why our own: a latency target at a throughput ("2,000 requests/s with p99 <= 20 ms") is measured
at that rate, with every request's latency counted from the moment it was *due*, not from when a
busy client got round to sending it (wrk2's correction of coordinated omission). ``wrk`` runs a
closed loop: each connection waits for its answer before sending again, so when the server
stalls the load pauses with it and the stall is counted once per connection instead of once per
request that should have been sent; its p99 at saturation depends on the number of connections
rather than on the server. wrk2 is not packaged for Debian and this machine reaches only package
registries; the Node generators (autocannon) do not correct for coordinated omission either.

How: ``connections`` keep-alive HTTP/1.1 connections on uvloop (asyncio without it). Request
``i`` is due at ``start + i / rate``; a ticker wakes every millisecond and hands every request
that has become due to an idle connection, or queues it when every connection is busy (its wait
counts). The answers are parsed just enough (status line, ``Content-Length``). The bodies are
JSON single events with ids unique to the run (``--run``), so the store can be checked
afterwards for every acknowledged event.

Run as ``python -m bench.loadgen --port P --rate R --seconds S [--connections C] --run ID``;
prints one JSON object: sent, ok (2xx), non2xx, errors, achieved rate, latency percentiles (ms).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import time
from typing import Any

import numpy as np

BODY = (
    '{{"type":"view","event_id":"{run}-{i}","customer_id":"u{c}",'
    '"product_id":"p{p}","timestamp":"{ts}"}}'
)
T0 = 1772359200  # 2026-03-01T10:00:00Z


def _body(run: str, i: int) -> bytes:
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 + i))
    return BODY.format(run=run, i=i, c=(i * 7) % 5000, p=i % 500, ts=ts).encode()


class _Conn(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self, gen: _Generator) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.due = 0.0
        self.busy = False
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.connected.set_result(None)

    def send(self, due: float, request: bytes) -> None:
        assert self.transport is not None
        self.due = due
        self.busy = True
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        at = head.find(b"content-length:")
        if at >= 0:
            size = end + 4 + int(head[at + 15 :].split(b"\r\n", 1)[0])
            if len(self.buf) < size:
                return
        else:  # chunked: the body ends with the empty chunk
            last = self.buf.find(b"0\r\n\r\n", end + 4)
            if last < 0:
                return
            size = last + 5
        status = int(head[9:12])
        del self.buf[:size]
        self.busy = False
        self.gen.done(self, status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.busy:
            self.gen.failed(self)
        self.busy = True  # never reused
        if not self.connected.done():
            self.connected.set_exception(exc or ConnectionError("closed"))


class _Generator:
    def __init__(self, host: str, port: int, path: str, secret: str, run: str) -> None:
        self.host, self.port, self.run = host, port, run
        self.head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {secret}\r\n"
        ).encode()
        self.idle: collections.deque[_Conn] = collections.deque()
        self.backlog: collections.deque[tuple[float, int]] = collections.deque()
        self.latencies: list[float] = []
        self.ok = self.non2xx = self.errors = self.sent = 0

    def request(self, i: int) -> bytes:
        body = _body(self.run, i)
        return self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    def dispatch(self, due: float, i: int) -> None:
        while self.idle:
            conn = self.idle.popleft()
            if not conn.busy:
                self.sent += 1
                conn.send(due, self.request(i))
                return
        self.backlog.append((due, i))

    def done(self, conn: _Conn, status: int) -> None:
        self.latencies.append(time.perf_counter() - conn.due)
        if 200 <= status < 300:
            self.ok += 1
        else:
            self.non2xx += 1
        self.idle.append(conn)
        if self.backlog:
            due, i = self.backlog.popleft()
            self.dispatch(due, i)

    def failed(self, conn: _Conn) -> None:
        self.errors += 1
        self.latencies.append(time.perf_counter() - conn.due)

    async def main(self, rate: float, seconds: float, connections: int) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        conns = []
        for _ in range(connections):
            _, proto = await loop.create_connection(lambda: _Conn(self), self.host, self.port)
            await proto.connected
            conns.append(proto)
        self.idle.extend(conns)
        total = int(rate * seconds)
        start = time.perf_counter()
        i = 0
        while i < total:
            now = time.perf_counter()
            due_now = min(total, int((now - start) * rate) + 1)
            while i < due_now:
                self.dispatch(start + i / rate, i)
                i += 1
            await asyncio.sleep(0.001)
        # let the last answers arrive (a request still unanswered after 10 s counts as an error)
        deadline = time.perf_counter() + 10
        while (
            len(self.latencies) < self.sent + len(self.backlog) and time.perf_counter() < deadline
        ):
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - start
        lost = self.sent + len(self.backlog) - len(self.latencies)
        for conn in conns:
            if conn.transport is not None:
                conn.transport.close()
        lat = np.asarray(self.latencies) * 1000
        q = np.percentile(lat, [50, 90, 99, 99.9]) if lat.size else [float("nan")] * 4
        return {
            "due": total,
            "sent": self.sent,
            "ok": self.ok,
            "non2xx": self.non2xx,
            "errors": self.errors + lost,
            "seconds": elapsed,
            "rate": rate,
            "achieved_rps": self.ok / elapsed,
            "p50_ms": float(q[0]),
            "p90_ms": float(q[1]),
            "p99_ms": float(q[2]),
            "p999_ms": float(q[3]),
            "max_ms": float(lat.max()) if lat.size else float("nan"),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/v1/events")
    ap.add_argument("--secret", default="")
    ap.add_argument("--run", required=True, help="prefix of the event ids (unique per run)")
    ap.add_argument("--rate", type=float, required=True, help="requests per second")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--connections", type=int, default=64)
    args = ap.parse_args()
    gen = _Generator(args.host, args.port, args.path, args.secret, args.run)
    coro = gen.main(args.rate, args.seconds, args.connections)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(coro)
    else:
        result = uvloop.run(coro)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
