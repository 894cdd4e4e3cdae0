"""Fault test of invariant 5: kill -9 the worker mid-batch, restart it; every due message
reaches the real SMTP server exactly once (counted by Message-ID, derived from the outbox key)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from concierge import Concierge
from concierge.settings import Settings
from delivery_servers import smtp_server

CONCIERGE = str(Path(sys.executable).with_name("concierge"))
N = 240


def _fill(url: str) -> None:
    cg = Concierge(settings=Settings(database_url=url))
    now = datetime.now(UTC).isoformat()
    events = []
    for i in range(N):
        cid = f"c{i:04d}"
        events += [
            {
                "type": "identify",
                "customer_id": cid,
                "timestamp": now,
                "traits": {"email": f"{cid}@example.com", "first_name": f"N{i}"},
            },
            {
                "type": "consent",
                "customer_id": cid,
                "channel": "email",
                "granted": True,
                "timestamp": now,
            },
        ]
    cg.ingest(events)
    # the quiet hours would defer some sends depending on when the suite runs
    cg.set_contact_policy({"quiet_start_hour": 0, "quiet_end_hour": 0})
    cg.save_campaign(
        {
            "campaign_id": "news",
            "kind": "broadcast",
            "channel": "email",
            "status": "live",
            "audience": {"all": [{"field": "features.orders", "op": ">=", "value": 0}]},
            "template": {
                "subject": "News for {{ name }}",
                "text": "Hello {{ name }}",
                "html": "<p>Hello {{ name }}</p>",
                "variables": {"name": {"source": "traits.first_name", "fallback": "you"}},
            },
        }
    )
    out = cg.schedule_campaign("news")
    assert out["queued"] == N
    cg.close()


def _worker(url: str, port: int, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            CONCIERGE,
            "worker",
            "--db",
            url,
            "--smtp-host",
            "127.0.0.1",
            "--smtp-port",
            str(port),
            "--claim",
            "40",
            "--lease-seconds",
            "1",
            "--idle-seconds",
            "0.05",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_kill_9_mid_batch_then_restart_delivers_each_message_exactly_once(db_url: str) -> None:
    _fill(db_url)
    with smtp_server(delay=0.004) as (box, port):
        proc = _worker(db_url, port)
        deadline = time.monotonic() + 60
        while len(box.messages) < N // 3 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        at_kill = len(box.messages)
        assert 0 < at_kill < N, "the kill must land mid-batch"
        time.sleep(1.3)  # a real process died: its leases (1 s) run out in real time
        again = _worker(db_url, port, "--once", "--json")
        _out, err = again.communicate(timeout=120)
        assert again.returncode == 0, err.decode()
        ids = box.ids()
    cg = Concierge(settings=Settings(database_url=db_url))
    rows = cg.outbox(limit=10_000)
    cg.close()
    expected = {f"<{r['outbox_key']}@concierge.local>" for r in rows}
    assert len(rows) == N
    assert {r["status"] for r in rows} == {"sent"}
    assert len(ids) == N, f"{len(ids) - len(set(ids))} duplicates, {N - len(set(ids))} missing"
    assert set(ids) == expected


@pytest.mark.slow
def test_two_workers_at_once_share_the_queue_and_send_each_message_once(db_url: str) -> None:
    """PostgreSQL: both claim with SKIP LOCKED; SQLite: one holds the lease, the other waits."""
    _fill(db_url)
    with smtp_server(delay=0.002) as (box, port):
        procs = [_worker(db_url, port, "--once", "--json") for _ in range(2)]
        outs = [p.communicate(timeout=120) for p in procs]
        assert all(p.returncode == 0 for p in procs), [e.decode() for _o, e in outs]
        # a worker that found the lease taken stops at once: finish what is left
        again = _worker(db_url, port, "--once", "--json")
        again.communicate(timeout=120)
        ids = box.ids()
    import json

    sent = [json.loads(o.decode())["sent"] for o, _e in outs]
    assert len(ids) == N and len(set(ids)) == N
    if db_url.startswith("postgresql"):
        assert all(n > 0 for n in sent), sent  # both took part
