"""The applier in a process of its own: identities and profiles follow the log.

``concierge serve`` appends events in the API process (the group committer answers once they
are in the log) and brings the profiles up to the log here, in a second process. Applying is
Python and Polars work of a few ms per round; in the API process it held the GIL in bursts
that the event loop waited behind (measured: p99 of single-event requests, bench_http_ingest).
In its own process it uses the second core, and several API processes (PostgreSQL,
``--workers``) share one applier instead of racing for the watermark.

Exactly once comes from the watermark (see :mod:`concierge.ingest.service`): a round that finds
the watermark moved is dropped, so a second applier, the API's fallback or a restarted process
never count an event twice. The process exits when its parent is gone (even after ``kill -9``),
and on SIGTERM at the end of the round in progress.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import time
from typing import Any

from concierge.settings import Settings

log = logging.getLogger(__name__)

# The applier's CPU priority (``nice``). It shares the machine with the API process and the
# database, whose work answers requests; its own work can wait a few ms (profiles are read
# through the watermark, so a read waits for it, not the other way round). Under contention
# the scheduler then gives the request path the CPU first, and the applier takes what is left
# (at full load it still gets about a tenth against each busy process, and catches up after).
NICE = 10


def run(
    settings_json: str,
    parent: int,
    *,
    idle_s: float = 0.01,
    gather_s: float = 0.02,
    limit: int = 5_000,
    nice: int = NICE,
) -> None:
    """The process's loop: apply what is pending, else sleep ``idle_s`` and look again."""
    from concierge.facade import Concierge

    os.nice(nice)  # background work: requests come first (see NICE)

    stop = False

    def _term(_signum: int, _frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides (Ctrl-C reaches both)
    # its commits are derived from the log: no wait for the disk (see concierge.store.engine)
    cg = Concierge(
        settings=Settings.model_validate_json(settings_json), migrate=False, role="applier"
    )
    # what is loaded now lives as long as the process: out of the collector's way, so that a
    # full collection scans only what a round leaves (measured: 100 ms every ~2 s under load
    # before, 110,000 objects; the API process does the same, see concierge.api.server)
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    try:
        while not stop and os.getppid() == parent:
            try:
                top, applied = cg.watermark()
                if top <= applied:
                    time.sleep(idle_s)
                    continue
                time.sleep(gather_s)  # let a round gather: it costs per round and per person
                cg.apply_pending(rounds=1, limit=limit)
            except Exception:  # retried; the log is intact
                log.exception("applying logged events to profiles failed")
                time.sleep(0.5)
    finally:
        cg.close()


class ApplierProcess:
    """Start, watch and stop the applier process for ``settings``' store."""

    def __init__(self, settings: Settings, **options: Any) -> None:
        self.settings = settings
        self.options = options
        self._proc: multiprocessing.process.BaseProcess | None = None

    def start(self) -> None:
        ctx = multiprocessing.get_context("spawn")  # no threads or sockets inherited
        self._proc = ctx.Process(
            target=run,
            args=(self.settings.model_dump_json(), os.getpid()),
            kwargs=self.options,
            name="concierge-applier",
            daemon=True,
        )
        self._proc.start()

    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def stop(self, timeout: float = 15.0) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._proc = None
