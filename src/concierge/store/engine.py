"""Connections to the store: SQLite (WAL, embedded default) or PostgreSQL (production).

Writes go through :meth:`Store.write`, one transaction each. On SQLite a write transaction starts
with ``BEGIN IMMEDIATE`` so that two writers queue on the lock instead of failing half-way when a
read lock would have to be upgraded; reads start a plain deferred transaction and never block
writers (WAL). ``synchronous=FULL`` makes every committed transaction survive a crash of the
process and of the machine: an acknowledged event is on disk.

SQLite writers queue on two locks, both woken at once on release: a ``threading.Lock`` between
the threads of one process and an ``flock`` on ``<database>-writer`` between processes (the API
and its applier process, a CLI import beside a server). Without the second, a writer of another
process waits in SQLite's busy handler, which polls with growing sleeps (1, 2, 5, 10 ms ...):
measured as tens of ms of tail latency on single-event ingest. The kernel drops an ``flock``
when its process dies, so a killed writer never leaves it held.

Roles (:data:`StoreRole`) tune commits to what a process writes. ``"applier"`` (the process that
brings profiles up to the log) commits what can always be derived again from the log, in the
same transaction as the watermark: it commits without waiting for the disk (SQLite
``synchronous=NORMAL`` in WAL, PostgreSQL ``synchronous_commit=off``). A crash of the machine may
lose its last rounds, never half of one, and the watermark goes back with them, so they are
applied again; the next durable commit of anyone (every append) flushes them anyway, the WAL
being written in order. ``"api"`` (a server process with an applier process beside it) leaves
SQLite's WAL checkpoints to the applier, so that no request waits behind one (a checkpoint copies
the WAL into the database and syncs it, in the connection whose commit crossed the threshold);
it still checkpoints past a far higher mark, should the applier be gone.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Literal

import polars as pl
from sqlalchemy import (
    Connection,
    Engine,
    String,
    Table,
    any_,
    bindparam,
    create_engine,
    event,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import NullPool, QueuePool


def normalise_url(url: str) -> str:
    """Accept plain ``postgresql://`` and file paths; pick the drivers we ship."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if "://" not in url:  # a bare path to a SQLite file
        return f"sqlite:///{url}"
    return url


StoreRole = Literal["default", "api", "applier"]
# WAL pages after which a commit checkpoints: SQLite's default, and the API's safety mark (~400 MB)
_CHECKPOINT_PAGES = {"default": 1000, "applier": 1000, "api": 100_000}


def make_engine(url: str, role: StoreRole = "default") -> Engine:
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            poolclass=QueuePool,
            pool_size=8,
            max_overflow=8,
            connect_args={"check_same_thread": False, "timeout": 30},
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={'NORMAL' if role == 'applier' else 'FULL'}")
            cur.execute(f"PRAGMA wal_autocheckpoint={_CHECKPOINT_PAGES[role]}")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA cache_size=-65536")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")

        return engine
    if parsed.get_backend_name() == "postgresql":
        # no server-side prepared statements: their generic plans for ``= ANY($1)`` scan the
        # events table instead of using its index (measured: 5x slower ingest)
        engine = create_engine(
            url,
            pool_size=10,
            max_overflow=10,
            connect_args={"prepare_threshold": None},
        )
        _ping_when_idle(engine)
        if role == "applier":

            @event.listens_for(engine, "connect")
            def _async_commits(dbapi_conn: Any, _record: Any) -> None:
                autocommit = dbapi_conn.autocommit
                dbapi_conn.autocommit = True
                dbapi_conn.execute("SET synchronous_commit TO off")
                dbapi_conn.autocommit = autocommit

        return engine
    return create_engine(url, poolclass=NullPool)


IDLE_PING_S = 2.0  # a pooled PostgreSQL connection idle this long is pinged before use


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection before handing it out, if it sat idle for ``IDLE_PING_S``.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: a round trip before every
    transaction, which under load is a wake-up of the server and then of the caller for nothing
    (a connection used a moment ago is alive). A server restart or an idle timeout drops
    connections that sat in the pool; those are the ones pinged. A dead one raises
    ``DisconnectionError``, on which the pool throws it away and connects afresh (SQLAlchemy's
    documented custom pessimistic ping). A connection dropped between the ping and its use fails
    that transaction, as it would with ``pool_pre_ping``.
    """

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < IDLE_PING_S:
            return  # new, or used a moment ago
        try:
            with dbapi_conn.cursor() as cur:
                cur.execute("SELECT 1")
            dbapi_conn.rollback()
        except Exception as exc:
            raise DisconnectionError(f"pooled connection is gone: {exc}") from exc


def among(conn: Connection, column: Any, values: Sequence[str]) -> Iterator[Any]:
    """Where-clauses selecting rows whose ``column`` is one of ``values``: one ``= ANY(array)``
    on PostgreSQL (one parameter, one cached statement), ``IN`` chunks on SQLite (its limit on
    parameters)."""
    if not values:
        return
    if conn.dialect.name == "postgresql":
        yield column == any_(bindparam("among", value=list(values), type_=ARRAY(String)))
        return
    for i in range(0, len(values), 500):
        yield column.in_(values[i : i + 500])


class RawReader:
    """Plain SQL on the driver's cursor, inside a :meth:`Store.raw_read` transaction.

    For the request path of recommendations only, where SQLAlchemy's statement building and
    result wrapping cost about ten times the query itself (measured: 1.4 ms against 0.14 ms for
    reading one person from SQLite). Statements are written with ``?`` placeholders and portable
    SQL; :meth:`among` writes a membership test the way each backend takes it best.
    """

    def __init__(self, cursor: Any, backend: str) -> None:
        self.cursor = cursor
        self.postgres = backend == "postgresql"

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.postgres:
            sql = sql.replace("?", "%s")
        self.cursor.execute(sql, tuple(params))
        rows: list[tuple[Any, ...]] = self.cursor.fetchall()  # tuples on both drivers
        return rows

    def among(self, column: str, values: Sequence[str]) -> tuple[str, list[Any]]:
        """``column IN (?, ...)`` on SQLite, ``column = ANY(?)`` (one array) on PostgreSQL, and
        its parameters; at most 500 values on SQLite (its limit on parameters)."""
        if self.postgres:
            return f"{column} = ANY(?)", [list(values)]
        if len(values) > 500:
            raise ValueError("at most 500 values per membership test on SQLite")
        return f"{column} IN ({', '.join('?' * len(values))})", list(values)


class Store:
    """The database behind one Concierge: an engine plus the dialect-specific bits."""

    def __init__(self, url: str, *, role: StoreRole = "default") -> None:
        self.url = normalise_url(url)
        self.role = role
        self.engine = make_engine(self.url, role)
        self.backend = self.engine.dialect.name  # "sqlite" | "postgresql"
        self.param = "%s" if self.backend == "postgresql" else "?"  # the driver's placeholder
        # SQLite has one writer; writers queue here (see the module docstring)
        self._writer = threading.Lock() if self.backend == "sqlite" else None
        self._lock_path: str | None = None
        self._lock_fd: int | None = None
        database = make_url(self.url).database
        if self.backend == "sqlite" and database and database != ":memory:":
            self._lock_path = str(Path(database).resolve()) + "-writer"

    # -- transactions ----------------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction: committed when the block ends, rolled back on error."""
        with self._writer or nullcontext(), self._process_lock(), self.engine.connect() as conn:
            conn.info["write"] = True
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.info.pop("write", None)

    @contextmanager
    def _process_lock(self) -> Iterator[None]:
        """The writers' ``flock`` between processes (SQLite files; a no-op otherwise)."""
        if self._lock_path is None:
            yield
            return
        if self._lock_fd is None:  # opened once, under the thread lock
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)  # blocks without the GIL
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def raw_read(self) -> Iterator[RawReader]:
        """A read transaction through the driver's own cursor, for the few hot reads of a
        request (see :class:`RawReader`)."""
        # the transaction on the driver too: SQLAlchemy's begin/commit cost as much as the
        # reads. SQLite: an explicit BEGIN (the driver is in autocommit mode, see make_engine);
        # PostgreSQL: the driver's implicit one, ended by the pool's rollback on return.
        with self.engine.connect() as conn:
            dbapi: Any = conn.connection.dbapi_connection
            cur = dbapi.cursor()
            try:
                if self.backend == "sqlite":
                    cur.execute("BEGIN")
                yield RawReader(cur, self.backend)
            finally:
                try:
                    if self.backend == "sqlite":
                        cur.execute("COMMIT")
                    else:
                        dbapi.rollback()
                finally:
                    cur.close()

    def insert(self, table: Table) -> Any:
        """A dialect insert that supports ``on_conflict_do_nothing/update``."""
        return (postgresql.insert if self.backend == "postgresql" else sqlite.insert)(table)

    # -- schema ----------------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""
        from concierge.store.migrate import upgrade

        upgrade(self.engine)

    def bulk_insert(self, conn: Connection, table: Table, df: pl.DataFrame) -> None:
        """Append a frame to a table as fast as the backend allows (COPY on PostgreSQL)."""
        if df.height == 0:
            return
        cols = df.columns
        if self.backend == "postgresql":
            raw: Any = conn.connection.dbapi_connection  # a psycopg connection
            # Polars writes the CSV (strings quoted, so "" is an empty string and an unquoted
            # empty field is NULL); one buffer instead of a Python call per row
            data = df.write_csv(include_header=False, quote_style="non_numeric", null_value="")
            sql = f"COPY {table.name} ({', '.join(cols)}) FROM STDIN WITH (FORMAT csv)"
            with raw.cursor() as cur, cur.copy(sql) as copy:
                copy.write(data)
            return
        sql = f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        conn.exec_driver_sql(sql, df.rows())

    # PostgreSQL: two transaction-scoped advisory locks. LOG orders appends (sequence numbers
    # commit in order, the duplicate check is race-free); PROFILES serialises what writes
    # identities, profiles and the watermark. An append takes only LOG and the applier's write
    # phase only PROFILES, so appends never queue behind the applier's upserts (measured: its
    # write phase was most of the tail of single-event ingest); everything else takes both, in
    # that order. SQLite has one writer anyway (BEGIN IMMEDIATE): all three are no-ops there.
    _LOG_LOCK, _PROFILES_LOCK = 7731001, 7731002

    def lock_writers(self, conn: Connection) -> None:
        """Serialise with every other writer: appends and the applier alike."""
        if self.backend == "postgresql":
            conn.exec_driver_sql(
                f"SELECT pg_advisory_xact_lock({self._LOG_LOCK}),"
                f" pg_advisory_xact_lock({self._PROFILES_LOCK})"
            )

    def lock_log(self, conn: Connection) -> None:
        """Serialise with other appends and with :meth:`lock_writers` (not with the applier)."""
        if self.backend == "postgresql":
            conn.exec_driver_sql(self.log_lock_sql())

    def conninfo(self) -> str:
        """PostgreSQL: the store's URL as libpq takes it, for a driver connection of its own
        (outside the pool: the API's asyncio appends, see concierge.ingest.small)."""
        url = make_url(self.url).set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    def log_lock_sql(self) -> str:
        """:meth:`lock_log`'s statement (PostgreSQL), for a caller that pipelines it."""
        return f"SELECT pg_advisory_xact_lock({self._LOG_LOCK})"

    def lock_profiles(self, conn: Connection) -> None:
        """Serialise with other appliers and with :meth:`lock_writers` (not with appends)."""
        if self.backend == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({self._PROFILES_LOCK})")

    def prefer_indexes(self, conn: Connection) -> None:
        """PostgreSQL: plan the rest of this transaction with an index wherever one applies.

        For transactions that read only a bounded set of rows by key (the applier's reads: a
        range of the log, its items, identities and profiles by id). Without statistics (a new
        or fast-growing store, before autovacuum's first ANALYZE, up to a minute) the planner
        guessed such lookups to match a large share of a table and scanned all of it, in
        parallel workers: measured 6-30 ms per round instead of 0.1-0.3 ms at 100,000 events,
        growing with the log. A no-op on SQLite, whose planner uses the keys anyway.
        """
        if self.backend == "postgresql":
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")

    # meta rows are read and written several times per applier round: plain SQL on the driver
    # (SQLAlchemy's statement building cost ~10x the query, measured on PostgreSQL)
    def get_meta(self, conn: Connection, key: str) -> str | None:
        sql = f"SELECT value FROM meta WHERE key = {self.param}"
        value: str | None = conn.exec_driver_sql(sql, (key,)).scalar()
        return value

    def set_meta(self, conn: Connection, key: str, value: str) -> None:
        conn.exec_driver_sql(
            f"INSERT INTO meta (key, value) VALUES ({self.param}, {self.param})"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def dispose(self) -> None:
        self.engine.dispose()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
