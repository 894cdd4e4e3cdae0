"""SQLite writers of different processes queue on the store's ``flock`` (see store/engine.py):
a writer waits while another process holds a write transaction, and a writer killed while
holding it never leaves it held. (That the waiter is woken at once, not by the busy handler's
polling, shows as tail latency in bench/bench_http_ingest.py, not here.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from sqlalchemy import text

from concierge.store.engine import Store

HOLDER = textwrap.dedent(
    """
    import sys, time
    from concierge.store.engine import Store
    store = Store(sys.argv[1])
    with store.write() as conn:
        conn.execute(__import__("sqlalchemy").text("INSERT INTO t VALUES ('holder')"))
        print("holding", flush=True)
        time.sleep(float(sys.argv[2]))
    print("released", flush=True)
    """
)


def _holder(url: str, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url, str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
    return proc


def _store(tmp_path: Path) -> tuple[str, Store]:
    url = f"sqlite:///{tmp_path / 'lock.db'}"
    store = Store(url)
    with store.write() as conn:
        conn.execute(text("CREATE TABLE t (who TEXT)"))
    return url, store


def test_a_writer_waits_for_a_writer_of_another_process(tmp_path: Path) -> None:
    url, store = _store(tmp_path)
    holder = _holder(url, 1.0)
    t0 = time.monotonic()
    with store.write() as conn:
        waited = time.monotonic() - t0
        conn.execute(text("INSERT INTO t VALUES ('second')"))
    assert holder.wait(timeout=10) == 0
    assert waited >= 0.5, "the second writer did not wait for the first"
    with store.read() as conn:
        assert conn.execute(text("SELECT who FROM t ORDER BY rowid")).scalars().all() == [
            "holder",
            "second",
        ]
    store.dispose()


def test_a_killed_writer_leaves_the_lock_free_and_nothing_half_written(tmp_path: Path) -> None:
    url, store = _store(tmp_path)
    holder = _holder(url, 60.0)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    t0 = time.monotonic()
    with store.write() as conn:
        conn.execute(text("INSERT INTO t VALUES ('after')"))
    assert time.monotonic() - t0 < 5
    with store.read() as conn:  # the killed transaction was rolled back
        assert conn.execute(text("SELECT who FROM t")).scalars().all() == ["after"]
    store.dispose()
