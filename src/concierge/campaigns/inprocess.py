"""The worker inside the API process (``concierge serve`` / ``concierge demo``).

A daemon thread runs :meth:`Worker.run` until the app shuts down. Channels come from the
environment at the entry point (:func:`channels_from_env`): on-site messages always, email when
``CONCIERGE_SMTP_HOST`` is set, SMS / push when ``CONCIERGE_SMS_ENDPOINT`` /
``CONCIERGE_PUSH_ENDPOINT`` are. On PostgreSQL several processes may each run one (claims use
``SKIP LOCKED``); on SQLite the lease lets one work at a time.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from concierge.facade import Concierge

log = logging.getLogger(__name__)


def channels_from_env(cg: Concierge, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    from concierge.cli.campaigns import channels_from_options

    e = os.environ if env is None else env
    return channels_from_options(
        cg,
        smtp_host=e.get("CONCIERGE_SMTP_HOST"),
        smtp_port=int(e.get("CONCIERGE_SMTP_PORT", "25")),
        smtp_from=e.get("CONCIERGE_SMTP_FROM", "concierge@localhost"),
        smtp_connections=int(e.get("CONCIERGE_SMTP_CONNECTIONS", "16")),
        sms_endpoint=e.get("CONCIERGE_SMS_ENDPOINT"),
        push_endpoint=e.get("CONCIERGE_PUSH_ENDPOINT"),
        provider_token=e.get("CONCIERGE_PROVIDER_TOKEN"),
    )


class BackgroundWorker:
    def __init__(self, cg: Concierge, channels: Mapping[str, Any], *, idle_s: float = 1.0) -> None:
        # the API's group committer applies logged events to the profiles; the worker does not too
        self.worker = cg.worker(dict(channels), apply_pending=False)
        self.idle_s = idle_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="concierge-worker", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.worker.run(stop=self._stop, idle_s=self.idle_s, sleep=self._stop.wait)
            except Exception:  # a bad tick must not end delivery for the process
                log.exception("the in-process worker failed a tick; going on")
                self._stop.wait(self.idle_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        try:
            self.worker.close()
        except Exception:
            log.exception("closing the in-process worker")
