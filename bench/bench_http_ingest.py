"""HTTP ingest under load from a second process (wrk) on loopback, SQLite and PostgreSQL.

Targets (issue 2): batches of 1,000 events at >= 20,000 events/s; single-event requests at
>= 2,000 requests/s with p99 <= 20 ms; every acknowledged event durable (checked after each run:
the store holds exactly the events of the 2xx answers).

Reference, measured in the same run under the same load: a bare uvicorn endpoint (an ASGI app
that reads the body and answers 200) — the ceiling the HTTP stack alone allows on this machine.

Two kinds of load. Throughput is measured with wrk (closed loop: each connection sends again as
soon as it is answered, so the server runs flat out). Latency is measured at the target rate:
``bench/loadgen.py`` sends 2,000 requests/s on a fixed schedule (open loop) and counts each
request's latency from when it was due, so a stall is charged to every request it delays (wrk2's
correction of coordinated omission). wrk's p99 at saturation is reported in the notes; it is
set by the number of connections (Little's law: connections / throughput) more than by the server.

The load generator is wrk (Debian package ``wrk``); without it the benchmark says so and skips.

The load: view events with increasing timestamps. Single events come from 5,000 visitors; a batch
of 1,000 is what a site's collector flushes: sessions of 10 events from 100 visitors (profile
updates are per person, so a batch of 1,000 different people costs about three times more).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import httpx
import sqlalchemy as sa

from bench.common import WORK, Figure

SECRET = "bench-ingest-key-0123456789abcdef"
PG_URL = os.environ.get(
    "CONCIERGE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
DURATION = int(os.environ.get("BENCH_HTTP_SECONDS", "10"))
# PostgreSQL is the production store, served by several processes (SQLite: one writer, one)
PG_WORKERS = int(os.environ.get("BENCH_HTTP_PG_WORKERS", "1"))
CONNECTIONS = int(os.environ.get("BENCH_HTTP_CONNECTIONS", "24"))  # single-event load
RATE = float(os.environ.get("BENCH_HTTP_RATE", "2000"))  # the latency target's rate (req/s)

BARE_APP = textwrap.dedent(
    """
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        more = True
        while more:
            msg = await receive()
            more = msg.get("more_body", False)
        body = b'{"accepted":1,"duplicates":[]}'
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
    """
)

SINGLE_LUA = textwrap.dedent(
    """
    local threads = {}
    local tid = 0
    function setup(thread) thread:set("tid", tid); tid = tid + 1 end
    local n = 0
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    wrk.headers["Authorization"] = "Bearer %(secret)s"
    request = function()
      n = n + 1
      local body = string.format(
        '{"type":"view","event_id":"%(run)s-%%d-%%d","customer_id":"u%%d",' ..
        '"product_id":"p%%d","timestamp":"%%s"}',
        tid, n, (n * 7 + tid) %% 5000, n %% 500,
        os.date("!%%Y-%%m-%%dT%%H:%%M:%%SZ", 1772359200 + n))
      return wrk.format(nil, "/v1/events", nil, body)
    end
    """
)

BATCH_LUA = textwrap.dedent(
    """
    local tid = 0
    function setup(thread) thread:set("tid", tid); tid = tid + 1 end
    local n = 0
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    wrk.headers["Authorization"] = "Bearer %(secret)s"
    request = function()
      n = n + 1
      local parts = {}
      for j = 1, 1000 do
        parts[j] = string.format(
          '{"type":"view","event_id":"%(run)s-%%d-%%d-%%d","customer_id":"u%%d",' ..
          '"product_id":"p%%d","timestamp":"%%s"}',
          tid, n, j, (n * 131 + tid * 17 + math.floor(j / 10)) %% 5000, j %% 500,
          os.date("!%%Y-%%m-%%dT%%H:%%M:%%SZ", 1772359200 + n * 1000 + j))
      end
      return wrk.format(nil, "/v1/events", nil, "[" .. table.concat(parts, ",") .. "]")
    end
    """
)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited")
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def _serve(cmd: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait(port, proc)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def _wrk(port: int, lua: str, connections: int, seconds: int | None = None) -> dict[str, float]:
    script = WORK / f"load-{uuid.uuid4().hex[:6]}.lua"
    script.write_text(lua)
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds or DURATION}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/v1/events",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return _parse_wrk(out)


def _cpu_times() -> list[int]:
    """The machine's CPU time by state (/proc/stat: user, nice, system, idle, iowait, irq,
    softirq, steal), in ticks."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:9]]


def _open_loop(port: int, run: str) -> dict[str, float]:
    """``RATE`` single-event requests/s for ``DURATION`` s on a schedule (bench/loadgen.py),
    with the share of the machine's CPU left idle and taken by the hypervisor (steal) meanwhile:
    a latency figure means little without them."""
    before = _cpu_times()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--port",
            str(port),
            "--secret",
            SECRET,
            "--run",
            run,
            "--rate",
            str(RATE),
            "--seconds",
            str(DURATION),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    spent = [b - a for a, b in zip(before, _cpu_times(), strict=True)]
    result["idle_pct"] = 100 * (spent[3] + spent[4]) / max(sum(spent), 1)
    result["steal_pct"] = 100 * spent[7] / max(sum(spent), 1)
    return result


def _warm(port: int) -> None:
    """Three seconds of the same load, not measured (imports, caches, SQLite pages)."""
    _wrk(port, SINGLE_LUA % {"secret": SECRET, "run": f"warm{uuid.uuid4().hex[:6]}"}, 32, 3)


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


def _parse_wrk(out: str) -> dict[str, float]:
    reqs = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    secs_m = re.search(r"requests in ([\d.]+)(m?s)", out)
    assert secs_m is not None
    secs = float(secs_m.group(1)) / (1000 if secs_m.group(2) == "ms" else 1)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    p99 = re.search(r"\s99%\s+(\S+)", out)
    return {
        "requests": reqs,
        "seconds": secs,
        "rps": (reqs - (int(non2xx.group(1)) if non2xx else 0)) / secs,  # answered 2xx
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
        "p99_ms": _ms(p99.group(1)) if p99 else float("nan"),
    }


def _lag(url: str) -> int:
    """Events logged but not yet in the profiles, right after the load stops."""
    eng = sa.create_engine(url)
    with eng.connect() as conn:
        top = conn.execute(sa.text("SELECT max(seq) FROM events")).scalar() or 0
        applied = conn.execute(sa.text("SELECT value FROM meta WHERE key = 'applied_seq'")).scalar()
    eng.dispose()
    return int(top) - int(applied or 0)


def _count(url: str, prefix: str) -> int:
    eng = sa.create_engine(url)
    with eng.connect() as conn:
        n = conn.execute(
            sa.text("SELECT count(*) FROM events WHERE event_id LIKE :p"), {"p": prefix + "-%"}
        ).scalar()
    eng.dispose()
    return int(n or 0)


def _stores() -> list[tuple[str, str, str | None]]:
    """(label, URL, PostgreSQL schema to drop afterwards)."""
    stores: list[tuple[str, str, str | None]] = [("sqlite", f"sqlite:///{WORK / 'http.db'}", None)]
    try:
        eng = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        schema = "bench_" + uuid.uuid4().hex[:8]
        with eng.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        eng.dispose()
        stores.append(("postgres", f"{PG_URL}?options=-csearch_path%3D{schema}", schema))
    except Exception as exc:
        print(f"PostgreSQL skipped: {exc}")
    return stores


def run() -> list[Figure]:
    if shutil.which("wrk") is None:
        print("skipped: wrk is not installed (apt-get install wrk)")
        return []
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    # the reference: bare uvicorn, same load
    (WORK / "bare.py").write_text(BARE_APP)
    port = _port()
    bare = _serve(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(WORK),
            "bare:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env,
        port,
    )
    try:
        _warm(port)
        ref_single = _wrk(port, SINGLE_LUA % {"secret": SECRET, "run": "ref"}, CONNECTIONS)
        ref_batch = _wrk(port, BATCH_LUA % {"secret": SECRET, "run": "ref"}, 4)
        ref_rate = _open_loop(port, "ref")
    finally:
        _stop(bare)
    figures: list[Figure] = []
    for label, url, schema in _stores():
        from concierge import Concierge

        with Concierge(url) as c:
            c.ensure_api_key("bench", "ingest", SECRET)
        port = _port()
        server = _serve(
            [sys.executable, "-m", "concierge", "serve", "--db", url, "--port", str(port)]
            + (["--workers", str(PG_WORKERS)] if label == "postgres" else []),
            env,
            port,
        )
        try:
            _warm(port)
            run_id = f"{label}{uuid.uuid4().hex[:6]}"
            single = _wrk(port, SINGLE_LUA % {"secret": SECRET, "run": run_id + "s"}, CONNECTIONS)
            lag_single = _lag(url)
            paced = _open_loop(port, run_id + "r")
            batch = _wrk(port, BATCH_LUA % {"secret": SECRET, "run": run_id + "b"}, 4)
            lag_batch = _lag(url)
        finally:
            _stop(server)
        ok_single = single["requests"] - single["non2xx"]
        ok_batch = (batch["requests"] - batch["non2xx"]) * 1000
        stored_single = _count(url, run_id + "s")
        stored_batch = _count(url, run_id + "b")
        stored_paced = _count(url, run_id + "r")
        # wrk counts requests it sent; a request cut off at the end may be stored unanswered
        durable = (
            stored_single >= ok_single and stored_batch >= ok_batch and stored_paced >= paced["ok"]
        )
        note = (
            f"durable: stored {stored_single:,} single / {stored_batch:,} batched / "
            f"{stored_paced:,} paced events for {ok_single:,} / {ok_batch:,} / "
            f"{paced['ok']:,.0f} acknowledged; non-2xx {single['non2xx']:,.0f} / "
            f"{batch['non2xx']:,.0f} / {paced['non2xx']:,.0f}; profile lag after the batches "
            f"{lag_batch:,} events"
        )
        paced_ok = (
            paced["achieved_rps"] >= 0.99 * RATE and paced["errors"] == 0 and paced["non2xx"] == 0
        )
        events_s = batch["rps"] * 1000
        figures += [
            Figure(
                f"http.{label}.batch1000.events_per_s",
                events_s,
                "events/s",
                "bare uvicorn, same load (events/s)",
                ref_batch["rps"] * 1000,
                events_s / (ref_batch["rps"] * 1000),
                ">= 20,000 events/s",
                events_s >= 20_000 and durable,
                note,
            ),
            Figure(
                f"http.{label}.single.requests_per_s",
                single["rps"],
                "req/s",
                "bare uvicorn, same load (req/s)",
                ref_single["rps"],
                single["rps"] / ref_single["rps"],
                ">= 2,000 req/s",
                single["rps"] >= 2_000 and durable,
                f"wrk, {CONNECTIONS} connections, flat out: p99 {single['p99_ms']:.1f} ms at this "
                f"rate (bare uvicorn {ref_single['p99_ms']:.1f} ms); profile lag at the end "
                f"{lag_single:,} events; " + note,
            ),
            Figure(
                f"http.{label}.single.p99_ms",
                paced["p99_ms"],
                "ms",
                f"bare uvicorn p99 at the same {RATE:,.0f} req/s (ms)",
                ref_rate["p99_ms"],
                paced["p99_ms"] / ref_rate["p99_ms"],
                "<= 20 ms at >= 2,000 req/s",
                paced["p99_ms"] <= 20 and paced_ok and RATE >= 2_000 and durable,
                f"open loop (bench/loadgen.py): {paced['sent']:,.0f} requests due at "
                f"{RATE:,.0f}/s over {paced['seconds']:.1f} s, {paced['achieved_rps']:,.0f} req/s "
                f"answered 2xx, latency from when each was due: p50 {paced['p50_ms']:.1f}, "
                f"p90 {paced['p90_ms']:.1f}, p99.9 {paced['p999_ms']:.1f}, "
                f"max {paced['max_ms']:.1f} ms; errors {paced['errors']:,.0f}; CPU meanwhile "
                f"{paced['idle_pct']:.0f}% idle, {paced['steal_pct']:.1f}% stolen by the "
                f"hypervisor (bare uvicorn's run: {ref_rate['idle_pct']:.0f}% idle, "
                f"{ref_rate['steal_pct']:.1f}% stolen)",
            ),
        ]
        if schema:
            eng = sa.create_engine(PG_URL)
            with eng.begin() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
            eng.dispose()
    return figures
