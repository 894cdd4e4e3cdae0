"""Run the API with uvicorn (uvloop and httptools from ``uvicorn[standard]``).

One process by default. On SQLite keep one: the group committer makes one process's writes
cheap, and several processes would only queue on SQLite's single writer lock. On PostgreSQL,
``workers > 1`` starts that many processes (the app is built from the environment in each;
writers are serialised by an advisory lock inside the ingest transaction).

Either way one more process, the applier (:mod:`concierge.ingest.applier`), brings identities
and profiles up to the log, so the API processes only append and answer; it stops with the
server (and by itself if the server is killed).
"""

from __future__ import annotations

import gc
import os
import sys

import uvicorn

from concierge.api.app import create_app
from concierge.ingest.applier import ApplierProcess
from concierge.models.collaborative import blas_single_thread
from concierge.settings import Settings


def tune_process() -> None:
    """What a serving process sets for itself (here, or in each worker through
    :func:`concierge.api.app.app_from_env`)."""
    # The ingest threads hold the GIL in bursts of Python work; a shorter switch interval than
    # the default 5 ms keeps the event loop answering (measured: p99 of single-event requests).
    sys.setswitchinterval(0.0005)
    # Fewer, cheaper collections: the long-lived objects of the app (models, catalog, modules)
    # are frozen out of the collector, and young generations are collected less often; a full
    # collection over a large heap was a source of tail latency (measured, p99).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    # BLAS at one thread: its work here is the matrix-vector product of each recommendation
    # request, which two BLAS threads made 2-3x slower beside the server's own work on 2 cores
    # (measured); training in this process runs under the same limit, as implicit advises
    blas_single_thread.hold()


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    tune_process()
    applier = ApplierProcess(settings)
    applier.start()
    try:
        if workers > 1:
            os.environ["CONCIERGE_DATABASE_URL"] = settings.database_url
            os.environ["CONCIERGE_EXTERNAL_APPLIER"] = "1"
            uvicorn.run(
                "concierge.api.app:app_from_env",
                factory=True,
                host=host,
                port=port,
                workers=workers,
                log_level="warning",
                access_log=False,
            )
            return
        from concierge.campaigns.inprocess import channels_from_env

        app = create_app(  # the delivery worker runs in-process
            settings, worker_channels=channels_from_env, external_applier=True
        )
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        applier.stop()
