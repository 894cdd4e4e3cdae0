"""Store roles (store/engine.py): the applier process commits without waiting for the disk, the
API process leaves WAL checkpoints to it, and everyone else commits durably. The settings must
hold on every pooled connection, including after a rolled-back transaction, and profiles applied
through an applier-role store equal a clean rebuild."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from concierge import Concierge
from concierge.store.engine import Store
from helpers import at, close, purchase

EXPECTED = {  # role -> (SQLite synchronous, SQLite wal_autocheckpoint, PostgreSQL synchronous_commit)
    "default": (2, 1000, "on"),  # 2 = FULL
    "api": (2, 100_000, "on"),
    "applier": (1, 1000, "off"),  # 1 = NORMAL
}


def _settings(store: Store) -> tuple[object, ...]:
    with store.read() as conn:
        if store.backend == "sqlite":
            return (
                conn.exec_driver_sql("PRAGMA synchronous").scalar(),
                conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar(),
            )
        return (conn.exec_driver_sql("SHOW synchronous_commit").scalar(),)


@pytest.mark.parametrize("role", ["default", "api", "applier"])
def test_each_role_tunes_every_connection(db_url: str, role: str) -> None:
    store = Store(db_url, role=role)  # type: ignore[arg-type]
    try:
        want = EXPECTED[role][:2] if store.backend == "sqlite" else EXPECTED[role][2:]
        with store.write() as conn:
            conn.execute(text("CREATE TABLE roles_t (x INTEGER)"))
        assert _settings(store) == want
        with pytest.raises(RuntimeError), store.write() as conn:  # a rolled-back transaction
            conn.execute(text("INSERT INTO roles_t VALUES (1)"))
            raise RuntimeError("roll back")
        # several connections at once: each new one is tuned too
        conns = [store.engine.connect() for _ in range(3)]
        try:
            for conn in conns:
                if store.backend == "sqlite":
                    got = (
                        conn.exec_driver_sql("PRAGMA synchronous").scalar(),
                        conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar(),
                    )
                else:
                    got = (conn.exec_driver_sql("SHOW synchronous_commit").scalar(),)
                assert got == want
                conn.rollback()
        finally:
            for conn in conns:
                conn.close()
        assert _settings(store) == want
        with store.read() as conn:
            assert conn.execute(text("SELECT count(*) FROM roles_t")).scalar() == 0
    finally:
        store.dispose()


def test_an_applier_role_store_applies_exactly_what_a_rebuild_gives(db_url: str) -> None:
    events = [
        purchase(f"e{i}", f"c{i % 7}", i / 100, [(f"p{i % 11}", 1, 10.0 + i % 3)])
        if i % 5 == 0
        else {
            "type": "view",
            "event_id": f"e{i}",
            "customer_id": f"c{i % 7}",
            "product_id": f"p{i % 11}",
            "timestamp": at(i / 100),
        }
        for i in range(300)
    ]
    with Concierge(db_url, role="api") as api:
        for start in range(0, 300, 40):  # appended in groups, as the API does
            api.append_events(Concierge.validate_events(events[start : start + 40]))
            if start == 120:  # the applier catches up part-way, then the rest arrives
                with Concierge(db_url, migrate=False, role="applier") as applier:
                    assert applier.apply_pending() == 160
        with Concierge(db_url, migrate=False, role="applier") as applier:
            assert applier.apply_pending() == 140
            assert applier.apply_pending() == 0  # exactly once: nothing is applied twice
            live = applier.profile_docs()
        assert api.watermark() == (300, 300)
        api.rebuild()
        rebuilt = api.profile_docs()
        assert len(live) == 7 and set(rebuilt) == set(live)
        assert close(live, rebuilt) == []


def test_appends_do_not_wait_for_the_applier_on_postgresql(pg_url: str) -> None:
    """On PostgreSQL an append takes only the log's lock and the applier's write phase only the
    profiles' lock: an append goes through while an applier holds its lock, and a second
    applier waits for it (exactly once)."""
    import threading
    import time

    view = {
        "type": "view",
        "customer_id": "ann",
        "product_id": "p1",
        "timestamp": at(0.5),
    }
    with Concierge(pg_url) as cg:
        holder = cg.store.engine.connect()
        try:
            holder.begin()
            cg.store.lock_profiles(holder)  # an applier in its write phase
            t0 = time.monotonic()
            cg.append_events(Concierge.validate_events([{**view, "event_id": "a1"}]))
            assert time.monotonic() - t0 < 2, "the append waited for the profiles' lock"
            done: list[int] = []
            applier = threading.Thread(target=lambda: done.append(cg.apply_pending()))
            applier.start()
            applier.join(1.0)
            assert applier.is_alive() and not done, "the applier did not wait for the lock"
            holder.rollback()
            applier.join(10)
            assert done == [1]
        finally:
            holder.close()
        assert cg.watermark() == (1, 1)
        assert cg.apply_pending() == 0
