"""Versioned model artifacts with their metrics, kept in the store.

A trained model is a set of NumPy arrays plus small JSON (config, metrics, meta). It is written as
one ``.npz`` (``allow_pickle=False``: no code runs on load) into the ``model_artifacts`` table, so
every API process and worker of a PostgreSQL deployment sees the same versions without a shared
disk, and a version is committed atomically with its metrics. Versions count up per model name.

:class:`LiveModels` keeps the newest version of each model in memory for the request path and
swaps in a new one when it appears (checked at most every ``check_every_s`` seconds), so a
``concierge train`` reaches running servers without a restart.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt
import orjson
from sqlalchemy import Connection, delete, func, insert, select

from concierge.errors import NotFoundError
from concierge.store import tables as t
from concierge.store.engine import Store

T = TypeVar("T")
Arrays = Mapping[str, npt.NDArray[Any]]


def config_digest(config: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a config (sorted keys): equal configs, equal digests."""
    return hashlib.sha256(orjson.dumps(dict(config), option=orjson.OPT_SORT_KEYS)).hexdigest()


def pack(arrays: Arrays) -> bytes:
    buf = io.BytesIO()
    named = {k: np.asarray(v) for k, v in arrays.items()}
    np.savez_compressed(buf, **named)  # type: ignore[arg-type]  # numpy's stub types **kwds badly
    return buf.getvalue()


def unpack(payload: bytes) -> dict[str, npt.NDArray[Any]]:
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@dataclass(frozen=True)
class ArtifactInfo:
    """What is known of a version without loading its arrays."""

    name: str
    version: int
    created_us: int
    as_of_us: int
    log_seq: int
    config_digest: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    meta: dict[str, Any]
    payload_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "created_us": self.created_us,
            "as_of_us": self.as_of_us,
            "log_seq": self.log_seq,
            "config_digest": self.config_digest,
            "config": self.config,
            "metrics": self.metrics,
            "payload_bytes": self.payload_bytes,
        }


@dataclass(frozen=True)
class Artifact:
    info: ArtifactInfo
    arrays: dict[str, npt.NDArray[Any]] = field(repr=False)

    @property
    def meta(self) -> dict[str, Any]:
        return self.info.meta


_INFO_COLS = (
    t.model_artifacts.c.name,
    t.model_artifacts.c.version,
    t.model_artifacts.c.created_us,
    t.model_artifacts.c.as_of_us,
    t.model_artifacts.c.log_seq,
    t.model_artifacts.c.config_digest,
    t.model_artifacts.c.config,
    t.model_artifacts.c.metrics,
    t.model_artifacts.c.meta,
    t.model_artifacts.c.payload_bytes,
)


def _info(row: Any) -> ArtifactInfo:
    return ArtifactInfo(
        name=row.name,
        version=int(row.version),
        created_us=int(row.created_us),
        as_of_us=int(row.as_of_us),
        log_seq=int(row.log_seq),
        config_digest=row.config_digest,
        config=orjson.loads(row.config),
        metrics=orjson.loads(row.metrics),
        meta=orjson.loads(row.meta),
        payload_bytes=int(row.payload_bytes),
    )


class Registry:
    """Save, list and load model versions in a store.

    Parameters
    ----------
    store
        The store whose ``model_artifacts`` table holds the versions.
    keep
        How many versions of each model are kept; older ones are deleted on save.
    """

    def __init__(self, store: Store, *, keep: int = 5) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.store = store
        self.keep = keep

    def save(
        self,
        name: str,
        arrays: Arrays,
        *,
        config: Mapping[str, Any],
        metrics: Mapping[str, Any],
        meta: Mapping[str, Any] | None = None,
        as_of_us: int,
        log_seq: int,
        created_us: int,
        conn: Connection | None = None,
    ) -> ArtifactInfo:
        """Store a new version of ``name`` and return its info (version = previous + 1)."""
        payload = pack(arrays)
        if conn is None:
            with self.store.engine.begin() as c:
                return self._save(
                    c, name, payload, config, metrics, meta, as_of_us, log_seq, created_us
                )
        return self._save(conn, name, payload, config, metrics, meta, as_of_us, log_seq, created_us)

    def _save(
        self,
        conn: Connection,
        name: str,
        payload: bytes,
        config: Mapping[str, Any],
        metrics: Mapping[str, Any],
        meta: Mapping[str, Any] | None,
        as_of_us: int,
        log_seq: int,
        created_us: int,
    ) -> ArtifactInfo:
        tbl = t.model_artifacts
        self.store.lock_writers(conn)  # versions of one name count up without gaps or races
        last = conn.execute(select(func.max(tbl.c.version)).where(tbl.c.name == name)).scalar()
        version = int(last or 0) + 1
        config_json = orjson.dumps(dict(config), option=orjson.OPT_SORT_KEYS).decode()
        metrics_json = orjson.dumps(dict(metrics), option=orjson.OPT_SERIALIZE_NUMPY).decode()
        meta_json = orjson.dumps(dict(meta or {}), option=orjson.OPT_SERIALIZE_NUMPY).decode()
        row: dict[str, object] = {
            "name": name,
            "version": version,
            "created_us": created_us,
            "as_of_us": as_of_us,
            "log_seq": log_seq,
            "config_digest": config_digest(config),
            "config": config_json,
            "metrics": metrics_json,
            "meta": meta_json,
            "payload": payload,
            "payload_bytes": len(payload),
        }
        conn.execute(insert(tbl).values(**row))
        conn.execute(delete(tbl).where(tbl.c.name == name, tbl.c.version <= version - self.keep))
        return ArtifactInfo(
            name=name,
            version=version,
            created_us=created_us,
            as_of_us=as_of_us,
            log_seq=log_seq,
            config_digest=config_digest(config),
            config=orjson.loads(config_json),
            metrics=orjson.loads(metrics_json),
            meta=orjson.loads(meta_json),
            payload_bytes=len(payload),
        )

    def latest(self, name: str) -> ArtifactInfo | None:
        """The newest version's info, or ``None`` when the model was never trained."""
        tbl = t.model_artifacts
        with self.store.engine.connect() as conn:
            row = conn.execute(
                select(*_INFO_COLS)
                .where(tbl.c.name == name)
                .order_by(tbl.c.version.desc())
                .limit(1)
            ).first()
        return _info(row) if row is not None else None

    def latest_version(self, name: str) -> int | None:
        tbl = t.model_artifacts
        with self.store.engine.connect() as conn:
            v = conn.execute(select(func.max(tbl.c.version)).where(tbl.c.name == name)).scalar()
        return int(v) if v is not None else None

    def versions(self, name: str | None = None) -> list[ArtifactInfo]:
        """Every kept version (of one model, or of all), newest first."""
        tbl = t.model_artifacts
        q = select(*_INFO_COLS).order_by(tbl.c.name, tbl.c.version.desc())
        if name is not None:
            q = q.where(tbl.c.name == name)
        with self.store.engine.connect() as conn:
            return [_info(r) for r in conn.execute(q)]

    def load(self, name: str, version: int | None = None) -> Artifact:
        """A version with its arrays (the newest when ``version`` is ``None``)."""
        tbl = t.model_artifacts
        q = select(*_INFO_COLS, tbl.c.payload).where(tbl.c.name == name)
        if version is None:
            q = q.order_by(tbl.c.version.desc()).limit(1)
        else:
            q = q.where(tbl.c.version == version)
        with self.store.engine.connect() as conn:
            row = conn.execute(q).first()
        if row is None:
            raise NotFoundError("model", name if version is None else f"{name} v{version}")
        return Artifact(_info(row), unpack(row.payload))


class LiveModels(Generic[T]):
    """The newest version of one model, kept in memory and refreshed when a new one appears.

    ``get()`` costs a clock read on the request path; at most every ``check_every_s`` seconds it
    asks the registry for the newest version number (one indexed query) and, if it moved, loads
    and builds the new model outside the lock, then swaps it in. Readers never wait for a load
    except the very first one.

    Parameters
    ----------
    registry
        Where versions live.
    name
        The model name.
    build
        Turns an :class:`Artifact` into the object the request path uses.
    check_every_s
        Longest time a new version can go unnoticed.
    """

    def __init__(
        self,
        registry: Registry,
        name: str,
        build: Callable[[Artifact], T],
        *,
        check_every_s: float = 2.0,
    ) -> None:
        self.registry = registry
        self.name = name
        self.build = build
        self.check_every_s = check_every_s
        self._lock = threading.Lock()
        self._model: T | None = None
        self._version: int | None = None
        self._checked = -float("inf")

    @property
    def version(self) -> int | None:
        return self._version

    def get(self) -> T | None:
        """The current model, or ``None`` when none was ever trained."""
        now = time.monotonic()
        if now - self._checked >= self.check_every_s:
            self.refresh()
        return self._model

    def refresh(self) -> bool:
        """Look for a newer version now; ``True`` if one was loaded."""
        if not self._lock.acquire(blocking=self._model is None):
            return False  # another thread is refreshing; keep serving the current model
        try:
            newest = self.registry.latest_version(self.name)
            if newest is None or newest == self._version:
                return False
            model = self.build(self.registry.load(self.name, newest))
            self._model, self._version = model, newest
            return True
        finally:
            # marked checked only now: a reader arriving during the first load waits for it
            # (blocking acquire above) instead of taking "checked a moment ago, no model"
            self._checked = time.monotonic()
            self._lock.release()
