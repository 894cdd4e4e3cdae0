"""Fault tests: a writer killed with SIGKILL in the middle of heavy ingest.

A child process ingests batches through the facade and prints each batch's number once
``ingest`` has returned (acknowledged). The parent kills it at a random moment. Afterwards every
acknowledged event is in the log exactly once, every batch is there whole or not at all, and the
stored profiles equal a rebuild from the log (nothing half-written), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from concierge import Concierge
from concierge.store import tables as t
from helpers import close

CHILD = textwrap.dedent(
    """
    import sys
    from datetime import datetime, timedelta, UTC
    from concierge import Concierge

    c = Concierge(sys.argv[1])
    c.upsert_products([{"product_id": f"p{i}", "price": 10.0 + i, "currency": "EUR",
                        "brand": f"b{i % 7}", "category": ["c", f"c{i % 5}"]}
                       for i in range(50)])
    base = datetime(2026, 1, 1, tzinfo=UTC)
    print("ready", flush=True)
    for b in range(100000):
        batch = []
        for j in range(200):
            n = b * 200 + j
            who = {"customer_id": f"u{n % 300}"} if n % 3 else {"anonymous_id": f"d{n % 500}"}
            ts = (base + timedelta(minutes=(n * 7919) % 500000)).isoformat()
            if n % 10 == 0:
                batch.append({"type": "purchase", "event_id": f"b{b}-{j}", "timestamp": ts,
                              "order_id": f"o{n}", "currency": "EUR", **who,
                              "lines": [{"product_id": f"p{n % 50}", "quantity": 1 + n % 3,
                                         "unit_price": 10.0 + n % 50}]})
            elif n % 10 == 1:
                batch.append({"type": "identify", "event_id": f"b{b}-{j}", "timestamp": ts,
                              "customer_id": f"u{n % 300}", "anonymous_id": f"d{n % 500}",
                              "traits": {"first_name": f"N{n}"}})
            else:
                batch.append({"type": "view", "event_id": f"b{b}-{j}", "timestamp": ts,
                              "product_id": f"p{n % 50}", **who})
        c.ingest(batch)
        print(b, flush=True)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.8, 1.7])
def test_sigkill_mid_ingest_loses_nothing_acknowledged(
    db_url: str, tmp_path: Path, delay: float
) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    Concierge(db_url).close()  # migrate first, so the kill lands in ingest, not in DDL
    proc = subprocess.Popen(
        [sys.executable, str(script), db_url],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    acked: list[int] = []
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked.append(int(line))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    acked += [int(x) for x in proc.stdout.read().split()]  # acknowledged before the kill
    assert acked, "the writer acknowledged nothing before the kill; raise the delay"

    with Concierge(db_url) as c:
        with c.store.read() as conn:
            ids = conn.execute(select(t.events.c.event_id)).scalars().all()
        per_batch = Counter(i.split("-")[0] for i in ids)
        assert len(ids) == len(set(ids)), "an event is stored twice"
        for b in acked:
            assert per_batch[f"b{b}"] == 200, f"acknowledged batch {b} is not whole"
        assert all(n == 200 for n in per_batch.values()), "a batch was half-written"
        assert len(per_batch) in (len(acked), len(acked) + 1)  # at most one unacknowledged
        incremental = c.profile_docs()
        c.rebuild()
        assert close(c.profile_docs(), incremental) == []
