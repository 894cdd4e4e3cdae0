"""The group committer (ingest/batcher.py) on both backends: concurrent requests share commits,
each gets its own part of the result (duplicates included), a request that arrives alone never
waits to gather, and requests arriving together do."""

from __future__ import annotations

import asyncio

from concierge import Concierge
from concierge.ingest.batcher import GroupCommitter
from helpers import at


def _view(eid: str, who: str) -> dict[str, object]:
    return {
        "type": "view",
        "event_id": eid,
        "customer_id": who,
        "product_id": "p1",
        "timestamp": at(1),
    }


def _stored(cg: Concierge) -> list[str]:
    with cg.store.read() as conn:
        return list(conn.exec_driver_sql("SELECT event_id FROM events ORDER BY seq").scalars())


def test_requests_one_after_another_commit_alone_without_waiting(db_url: str) -> None:
    with Concierge(db_url) as cg:

        async def go() -> GroupCommitter:
            gc = GroupCommitter(cg)
            await gc.start()
            try:
                for i in range(5):
                    out = await gc.submit(cg.validate_events([_view(f"a{i}", "ann")]))
                    assert out.accepted == 1 and out.duplicates == []
            finally:
                await gc.stop()
            return gc

        gc = asyncio.run(go())
        assert gc.groups == 5 and gc.gathers == 0  # each alone: no wait to gather
        assert _stored(cg) == [f"a{i}" for i in range(5)]


def test_concurrent_requests_share_commits_and_each_gets_its_own_result(db_url: str) -> None:
    with Concierge(db_url) as cg:

        async def go() -> tuple[GroupCommitter, list[tuple[int, list[str]]]]:
            gc = GroupCommitter(cg, gather_s=0.005)
            await gc.start()
            try:
                waves = []
                for w in range(4):  # waves of 30 requests sent together
                    batch = [
                        gc.submit(cg.validate_events([_view(f"w{w}-{i}", f"u{i}")]))
                        for i in range(30)
                    ]
                    # a request repeating an event of this wave, and one of the wave before
                    batch.append(gc.submit(cg.validate_events([_view(f"w{w}-0", "u0")])))
                    if w:
                        batch.append(gc.submit(cg.validate_events([_view(f"w{w - 1}-1", "u1")])))
                    outs = await asyncio.gather(*batch)
                    waves += [(o.accepted, o.duplicates) for o in outs]
            finally:
                await gc.stop()
            return gc, waves

        gc, results = asyncio.run(go())
        accepted = sum(a for a, _ in results)
        dups = [d for _, ds in results for d in ds]
        assert accepted == 120  # every event once
        assert sorted(dups) == sorted(["w0-0", "w1-0", "w2-0", "w3-0", "w0-1", "w1-1", "w2-1"])
        assert gc.groups < 60  # requests shared commits
        assert gc.gathers >= 1  # after a group of several requests, the next one gathered
        stored = _stored(cg)
        assert len(stored) == 120 and len(set(stored)) == 120


def test_no_gathering_when_switched_off(db_url: str) -> None:
    with Concierge(db_url) as cg:

        async def go() -> GroupCommitter:
            gc = GroupCommitter(cg, gather_s=0)
            await gc.start()
            try:
                await asyncio.gather(
                    *[gc.submit(cg.validate_events([_view(f"x{i}", f"u{i}")])) for i in range(40)]
                )
            finally:
                await gc.stop()
            return gc

        gc = asyncio.run(go())
        assert gc.gathers == 0
        assert len(_stored(cg)) == 40
