"""Shared fixtures: one parametrized store fixture runs integration tests on SQLite and PostgreSQL.

PostgreSQL is the real server of the machine (127.0.0.1:5432, trust auth, database ``test``);
each test gets a schema of its own, dropped afterwards. Set ``CONCIERGE_TEST_PG_URL`` to use
another server. When the server is down the PostgreSQL half is skipped with a clear message,
except in CI (``CI`` set), where it fails: CI starts the server first.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import settings as hypothesis_settings

from concierge import Concierge
from concierge.clock import FrozenClock
from concierge.settings import Settings

PG_URL = os.environ.get(
    "CONCIERGE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

# Property tests draw the same examples on every run (CI stays reproducible); set
# CONCIERGE_TEST_FREE_RNG=1 to let hypothesis explore new ones.
hypothesis_settings.register_profile("fixed", derandomize=True, print_blob=True)
hypothesis_settings.register_profile("free", print_blob=True)
hypothesis_settings.load_profile("free" if os.environ.get("CONCIERGE_TEST_FREE_RNG") else "fixed")


def _pg_available() -> bool:
    try:
        eng = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with eng.connect():
            pass
        eng.dispose()
        return True
    except Exception:
        return False


_PG: bool | None = None


def pg_available() -> bool:
    global _PG
    if _PG is None:
        _PG = _pg_available()
    return _PG


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema; the URL points its search_path there."""
    if not pg_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG_URL} (CI must start it)")
        pytest.skip(f"PostgreSQL is not reachable at {PG_URL}")
    schema = "t_" + uuid.uuid4().hex[:12]
    eng = sa.create_engine(PG_URL)
    with eng.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with eng.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        eng.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'concierge.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
def cg(db_url: str, clock: FrozenClock) -> Iterator[Concierge]:
    """A Concierge on an empty store (both backends), with a frozen clock."""
    c = Concierge(settings=Settings(database_url=db_url), clock=clock)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared datasets are not at {SHARED_DATA}")
    return SHARED_DATA
