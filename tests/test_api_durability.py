"""Kill -9 the real server (uvicorn in a subprocess) in the middle of heavy HTTP ingest.

Clients post single events and batches concurrently and record every event id acknowledged with
2xx. The server is killed with SIGKILL mid-load and started again on the same store. Every
acknowledged event is then present exactly once, nothing is half-written (every request's
events are all there or none), and the stored profiles equal a rebuild from the log.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from concierge import Concierge
from concierge.store import tables as t
from helpers import close

SECRET = "test-ingest-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(db_url: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CONCIERGE_DATABASE_URL": db_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "concierge", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "server died")
    raise RuntimeError("the server did not start")


@pytest.mark.slow
def test_sigkill_during_http_ingest(db_url: str, tmp_path: Path) -> None:
    with Concierge(db_url) as c:
        c.ensure_api_key("load", "ingest", SECRET)
    port = free_port()
    server = start_server(db_url, port)
    url = f"http://127.0.0.1:{port}/v1/events"
    headers = {"Authorization": f"Bearer {SECRET}"}
    acked: list[list[str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(worker: int) -> None:
        n = 0
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                size = 1 if worker % 2 else 50
                ids = [f"w{worker}-r{n}-e{j}" for j in range(size)]
                events = [
                    {
                        "type": "view",
                        "event_id": i,
                        "customer_id": f"u{(worker * 7 + j) % 40}",
                        "product_id": f"p{j % 9}",
                        "timestamp": "2026-03-01T10:00:00Z",
                    }
                    for j, i in enumerate(ids)
                ]
                n += 1
                try:
                    r = http.post(url, json=events[0] if size == 1 else events, headers=headers)
                except httpx.HTTPError:
                    continue  # no answer: not acknowledged
                if r.status_code == 200:
                    with lock:
                        acked.append(ids)

    threads = [threading.Thread(target=client, args=(w,)) for w in range(8)]
    for th in threads:
        th.start()
    time.sleep(2.0)
    os.kill(server.pid, signal.SIGKILL)
    server.wait(timeout=10)
    stop.set()
    for th in threads:
        th.join(timeout=20)
    assert len(acked) > 20, "too little was acknowledged before the kill"

    server = start_server(db_url, port)  # the store opens cleanly after the crash
    try:
        r = httpx.post(
            url,
            json={
                "type": "view",
                "event_id": "after",
                "customer_id": "u1",
                "product_id": "p1",
                "timestamp": "2026-03-02T10:00:00Z",
            },
            headers=headers,
        )
        assert r.status_code == 200 and r.json()["accepted"] == 1
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)

    with Concierge(db_url) as c:
        with c.store.read() as conn:
            ids = conn.execute(select(t.events.c.event_id)).scalars().all()
        counts = Counter(ids)
        assert max(counts.values()) == 1, "an event is stored twice"
        for request in acked:
            assert all(counts[i] == 1 for i in request), "an acknowledged event is missing"
        per_request = Counter(i.rsplit("-e", 1)[0] for i in ids if i != "after")
        sizes = {
            i.rsplit("-e", 1)[0]: (1 if int(i[1:].split("-")[0]) % 2 else 50)
            for i in ids
            if i != "after"
        }
        assert all(per_request[k] == sizes[k] for k in per_request), "a request half-written"
        incremental = c.profile_docs()
        c.rebuild()
        assert close(c.profile_docs(), incremental) == []


@pytest.mark.slow
@pytest.mark.postgres
def test_several_server_processes_on_postgresql(pg_url: str) -> None:
    """``concierge serve --workers 2``: both processes take events; each is stored once and
    the profiles the two appliers kept equal a rebuild."""
    with Concierge(pg_url) as c:
        c.ensure_api_key("load", "ingest", SECRET)
    port = free_port()
    env = {**os.environ, "CONCIERGE_DATABASE_URL": pg_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "concierge", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        headers = {"Authorization": f"Bearer {SECRET}"}

        def post(worker: int) -> int:
            n = 0
            with httpx.Client(timeout=10) as http:
                for r in range(40):
                    events = [
                        {
                            "type": "view",
                            "event_id": f"m{worker}-{r}-{j}",
                            "customer_id": f"u{(worker + j) % 7}",
                            "product_id": f"p{j}",
                            "timestamp": "2026-03-01T10:00:00Z",
                        }
                        for j in range(5)
                    ]
                    resp = http.post(
                        f"http://127.0.0.1:{port}/v1/events", json=events, headers=headers
                    )
                    assert resp.status_code == 200, resp.text
                    n += resp.json()["accepted"]
            return n

        with ThreadPoolExecutor(6) as pool:
            accepted = sum(pool.map(post, range(6)))
        assert accepted == 6 * 40 * 5
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    with Concierge(pg_url) as c:
        assert c.stats()["events"] == accepted
        assert c.pending() == 0
        incremental = c.profile_docs()
        assert sum(d["n_events"] for d in incremental.values()) == accepted
        c.rebuild()
        assert close(c.profile_docs(), incremental) == []


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] == "Z":  # exited, not yet reaped
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_the_applier_process(db_url: str) -> None:
    """``serve`` applies events to profiles in a second process: reads see every acknowledged
    event (read-your-writes across processes); with that process killed the API applies by
    itself; killed with the server, it exits instead of living on."""
    with Concierge(db_url) as c:
        c.ensure_api_key("load", "ingest", SECRET)
        c.ensure_api_key("reader", "read", SECRET + "-read")
    port = free_port()
    server = start_server(db_url, port)
    base = f"http://127.0.0.1:{port}"
    ingest = {"Authorization": f"Bearer {SECRET}"}
    read = {"Authorization": f"Bearer {SECRET}-read"}

    def views(n: int, start: int) -> list[dict[str, str]]:
        return [
            {
                "type": "view",
                "event_id": f"v{start + i}",
                "customer_id": "ann",
                "product_id": f"p{i % 3}",
                "timestamp": "2026-03-01T10:00:00Z",
            }
            for i in range(n)
        ]

    try:
        applier = _children(server.pid)  # the applier (and any helper spawn starts)
        assert applier, "serve started no applier process"
        with httpx.Client(timeout=30) as http:
            for k in range(5):  # each read follows its write at once
                assert (
                    http.post(f"{base}/v1/events", json=views(7, 7 * k), headers=ingest).status_code
                    == 200
                )
                doc = http.get(f"{base}/v1/customers/ann", headers=read).json()
                assert doc["features"]["activity"]["view"] == 7 * (k + 1)
            for p in applier:
                os.kill(p, signal.SIGKILL)
            assert (
                http.post(f"{base}/v1/events", json=views(4, 100), headers=ingest).status_code
                == 200
            )
            doc = http.get(f"{base}/v1/customers/ann", headers=read).json()
            assert doc["features"]["activity"]["view"] == 39  # applied by the API itself
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)

    server = start_server(db_url, port)
    applier = _children(server.pid)
    assert applier, "serve started no applier process"
    os.kill(server.pid, signal.SIGKILL)
    server.wait(timeout=10)
    assert all(_gone(p, 10) for p in applier), "the applier outlived a killed server"
    with Concierge(db_url) as c:
        assert c.pending() == 0
        assert c.customer("ann")["features"]["activity"]["view"] == 39
