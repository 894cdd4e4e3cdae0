"""PostgreSQL connections and the single-event append path (store/engine.py, ingest/service.py).

Pooled connections are pinged only after sitting idle (``IDLE_PING_S``): one that the server
dropped meanwhile is replaced without the caller seeing an error. A small append on PostgreSQL
goes in two round trips (pipeline mode) and commits once; duplicates, a refused currency and a
sale take the same path and behave as on SQLite."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa

from concierge import Concierge
from concierge.errors import InputError
from concierge.ingest.small import AsyncPgAppender
from concierge.store import engine as store_engine
from concierge.store.engine import Store
from helpers import at, purchase


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    store = Store(pg_url)
    store.migrate()
    yield store
    store.dispose()


def _backend_pid(store: Store) -> int:
    with store.read() as conn:
        return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar())  # type: ignore[arg-type]


def _terminate(pg_url: str, pid: int) -> None:
    eng = sa.create_engine(pg_url)
    with eng.begin() as conn:
        assert conn.exec_driver_sql(f"SELECT pg_terminate_backend({pid})").scalar()
    eng.dispose()
    time.sleep(0.2)  # the backend exits


def test_a_connection_dropped_while_idle_is_replaced(
    pg_store: Store, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_engine, "IDLE_PING_S", 0.1)
    first = _backend_pid(pg_store)
    _terminate(pg_url, first)  # the server drops the pooled connection
    time.sleep(0.2)  # idle past IDLE_PING_S: pinged on checkout, found dead, replaced
    second = _backend_pid(pg_store)
    assert second != first
    with pg_store.write() as conn:  # and writes go through too
        conn.exec_driver_sql("SELECT 1")


def test_a_connection_used_a_moment_ago_is_not_pinged(
    pg_store: Store, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_engine, "IDLE_PING_S", 60.0)
    first = _backend_pid(pg_store)
    _terminate(pg_url, first)
    # not idle long enough to be pinged: the dead connection is handed out and the
    # transaction fails (as it would between a pre-ping and the query); the pool then
    # discards it, and the next checkout connects afresh
    with pytest.raises(sa.exc.DBAPIError):
        _backend_pid(pg_store)
    assert _backend_pid(pg_store) != first


def _view(eid: str, who: str, product: str = "p1") -> dict[str, object]:
    return {
        "type": "view",
        "event_id": eid,
        "customer_id": who,
        "product_id": product,
        "timestamp": at(1),
    }


def _purchase(eid: str, currency: str) -> dict[str, object]:
    return {**purchase(eid, "ann", 1, [("p1", 1, 10.0)]), "currency": currency}


def test_small_appends_on_postgres_store_events_items_and_facets(pg_url: str) -> None:
    with Concierge(pg_url) as cg:
        cg.upsert_products(
            [
                {
                    "product_id": "p1",
                    "title": "Trail shoe",
                    "brand": "Hoka",
                    "category": ["Shoes", "Trail"],
                    "price": 120.0,
                    "currency": "EUR",
                    "variants": [{"variant_id": "p1-42", "size": "42", "stock": 3}],
                }
            ]
        )
        events = cg.validate_events(
            [
                _view("v1", "ann"),
                {**_view("v2", "ann"), "variant_id": "p1-42"},
                _view("v1", "ann"),  # repeated in the batch
            ]
        )
        result = cg._ingestor.append(events, now_us=1)
        assert result.accepted == 2 and result.duplicates == ["v1"]
        again = cg._ingestor.append(cg.validate_events([_view("v1", "ann")]), now_us=2)
        assert again.accepted == 0 and again.duplicates == ["v1"]  # stored before
        with cg.store.read() as conn:
            rows = conn.exec_driver_sql(
                "SELECT event_id, facets FROM event_items ORDER BY event_id"
            ).all()
        assert rows[0][0] == "v1" and "brand=hoka" in rows[0][1].lower()
        assert rows[1][0] == "v2" and "size=42" in rows[1][1]
        assert "price=64-128" in rows[0][1]


def test_a_small_append_on_postgres_is_one_transaction(pg_url: str) -> None:
    """Events and items of one append are written by one transaction (one ``xmin``), and each
    append is a transaction of its own: the commit sent in the pipeline is the only one."""
    with Concierge(pg_url) as cg:
        ing = cg._ingestor
        for k in range(10):
            batch = cg.validate_events([_view(f"c{k}-{i}", f"u{i}") for i in range(5)])
            ing.append(batch, now_us=1)
        with cg.store.read() as conn:
            by_append = conn.exec_driver_sql(
                "SELECT split_part(e.event_id, '-', 1), count(DISTINCT e.xmin::text),"
                " count(DISTINCT i.xmin::text), count(*), bool_and(e.xmin = i.xmin)"
                " FROM events e JOIN event_items i USING (event_id) GROUP BY 1"
            ).all()
            transactions = conn.exec_driver_sql(
                "SELECT count(DISTINCT xmin::text) FROM events"
            ).scalar()
            left_open = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state = 'idle in transaction'"
            ).scalar()
        assert len(by_append) == 10
        assert all(r[1] == 1 and r[2] == 1 and r[3] == 5 and r[4] for r in by_append)
        assert transactions == 10
        assert left_open == 0  # no pooled connection is left inside a transaction


def test_a_refused_currency_on_postgres_stores_nothing_of_the_batch(pg_url: str) -> None:
    with Concierge(pg_url) as cg:
        ing = cg._ingestor
        ing.append(cg.validate_events([_purchase("o1", "EUR")]), now_us=1)
        with pytest.raises(InputError) as err:
            ing.append(cg.validate_events([_view("v9", "bob"), _purchase("o2", "USD")]), now_us=2)
        assert err.value.errors[0].field == "currency"
        with cg.store.read() as conn:
            ids = conn.exec_driver_sql("SELECT event_id FROM events ORDER BY seq").scalars().all()
            items = conn.exec_driver_sql("SELECT count(*) FROM event_items").scalar()
        assert ids == ["o1"] and items == 1
        # the connection is usable afterwards: the next append goes through
        assert ing.append(cg.validate_events([_view("v9", "bob")]), now_us=3).accepted == 1


def test_the_applier_reads_by_key_on_a_store_without_statistics(pg_url: str) -> None:
    """Every query of an applier round's read phase uses an index on a fresh store (no ANALYZE
    has run): none scans the log or the profiles whole (see Store.prefer_indexes)."""
    with Concierge(pg_url) as cg:
        ing = cg._ingestor
        for k in range(40):  # 4,000 events, 500 people, applied as they come
            ing.append(
                cg.validate_events(
                    [_view(f"s{k}-{i}", f"u{(k * 100 + i) % 500}") for i in range(100)]
                ),
                now_us=1,
            )
            cg.apply_pending()
        with cg.store.read() as conn:
            analyzed = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_user_tables WHERE schemaname = current_schema()"
                " AND relname IN ('events', 'event_items')"
                " AND (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL)"
            ).scalar()
        assert analyzed == 0  # the planner has no statistics to go by
        ing.append(cg.validate_events([_view(f"t-{i}", f"u{i}") for i in range(50)]), now_us=2)
        seen: list[tuple[str, object]] = []

        def record(_conn: object, _cur: object, statement: str, params: object, *_: object) -> None:
            if statement.lstrip().upper().startswith("SELECT"):
                seen.append((statement, params))

        sa.event.listen(cg.store.engine, "before_cursor_execute", record)
        try:
            assert cg.apply_pending() == 50
        finally:
            sa.event.remove(cg.store.engine, "before_cursor_execute", record)
        assert len(seen) >= 4
        with cg.store.read() as conn:
            cg.store.prefer_indexes(conn)
            for statement, params in seen:
                plan = "\n".join(
                    conn.exec_driver_sql("EXPLAIN " + statement, params).scalars()  # type: ignore[arg-type]
                )
                for table in ("events", "event_items", "profiles", "identities"):
                    assert f"Seq Scan on {table}" not in plan, (statement, plan)


# -- the asyncio path (ingest/small.py: AsyncPgAppender) ---------------------------------------


def _appender(cg: Concierge) -> AsyncPgAppender:
    return AsyncPgAppender(cg.store.conninfo(), cg.store.log_lock_sql(), cg._now_us)


def test_asyncio_appends_store_like_the_thread_path(pg_url: str) -> None:
    with Concierge(pg_url) as cg:

        async def go() -> list[object]:
            app = _appender(cg)
            try:
                out: list[object] = []
                batch = [_view("a1", "ann"), _view("a2", "bob"), _view("a1", "ann")]
                out.append(await app.append(cg.validate_events(batch)))
                out.append(await app.append(cg.validate_events([_view("a1", "ann")])))
                out.append(await app.append(cg.validate_events([_purchase("o1", "EUR")])))
                with pytest.raises(InputError) as err:  # another currency: nothing stored
                    await app.append(
                        cg.validate_events([_view("a3", "cy"), _purchase("o2", "USD")])
                    )
                assert err.value.errors[0].field == "currency"
                out.append(await app.append(cg.validate_events([_view("a3", "cy")])))  # usable
                sale = {
                    **_view("s1", "ann"),
                    "type": "sale",
                    "listing_id": "l1",
                    "price": 5.0,
                    "currency": "EUR",
                }
                out.append(await app.append(cg.validate_events([sale])))  # left to the thread
                return out
            finally:
                await app.close()

        r = asyncio.run(go())
        assert [(x.accepted, x.duplicates) if x else None for x in r] == [  # type: ignore[attr-defined]
            (2, ["a1"]),
            (0, ["a1"]),
            (1, []),
            (1, []),
            None,
        ]
        with cg.store.read() as conn:
            ids = conn.exec_driver_sql("SELECT event_id FROM events ORDER BY seq").scalars().all()
            items = conn.exec_driver_sql("SELECT event_id FROM event_items ORDER BY event_id")
            item_ids = items.scalars().all()
            currency = cg.store.get_meta(conn, "currency")
            one_txn = conn.exec_driver_sql(
                "SELECT count(DISTINCT xmin::text) FROM events WHERE event_id IN ('a1', 'a2')"
            ).scalar()
        assert ids == ["a1", "a2", "o1", "a3"]
        assert item_ids == ["a1", "a2", "a3", "o1"]
        assert currency == "EUR"  # recorded by the first priced append
        assert one_txn == 1


def test_asyncio_appender_reconnects_after_the_server_drops_it(pg_url: str) -> None:
    with Concierge(pg_url) as cg:

        async def go() -> tuple[int, int]:
            app = _appender(cg)
            try:
                await app.append(cg.validate_events([_view("b1", "ann")]))
                pid = (await (await app._conn.execute("SELECT pg_backend_pid()")).fetchone())[0]
                await app._conn.rollback()
                _terminate(pg_url, pid)
                with pytest.raises(
                    psycopg.OperationalError
                ):  # this group fails: nothing of it is stored
                    await app.append(cg.validate_events([_view("b2", "ann")]))
                out = await app.append(cg.validate_events([_view("b3", "ann")]))  # connects afresh
                assert out is not None
                return pid, out.accepted
            finally:
                await app.close()

        _, accepted = asyncio.run(go())
        assert accepted == 1
        with cg.store.read() as conn:
            ids = conn.exec_driver_sql("SELECT event_id FROM events ORDER BY seq").scalars().all()
        assert ids == ["b1", "b3"]
