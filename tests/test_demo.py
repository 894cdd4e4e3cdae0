"""`make demo`'s store: built once from the simulator ending today, trained, reused on a second
run; the second demo store from the bundled Online Retail sample."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from concierge import Concierge
from concierge.clock import FrozenClock
from concierge.demo import build_demo
from concierge.settings import Settings

KEY = "demo-key-for-tests"


@pytest.mark.slow
def test_simulator_demo_is_built_once_ends_today_and_is_reused(tmp_path: Path) -> None:
    clock = FrozenClock(datetime(2026, 12, 1, 15, 30, tzinfo=UTC))
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'concierge.db'}")
    first = build_demo(settings, dataset="simulator", admin_key=KEY, clock=clock)
    assert not first["reused"]
    assert first["stats"]["profiles"] > 1000 and first["stats"]["events"] > 100_000
    with Concierge(settings=settings, clock=clock) as c:
        assert c.authenticate(KEY) is not None
        last = c.overview()["last_event"]
        assert last is not None
        # the simulated year ends at the start of the build day
        assert "2026-11-30" <= last[:10] <= "2026-12-01"
        assert c.customer(first["example_customer"])["features"]["orders"] > 0
        versions = {m["name"] for m in c.models()}
    assert versions == {n for r in first["trained"] for n in r["versions"]}
    again = build_demo(settings, dataset="simulator", admin_key=KEY, clock=clock)
    assert again["reused"] and again["stats"] == first["stats"] and again["trained"] == []
    with pytest.raises(Exception, match="already holds"):
        build_demo(settings, dataset="online-retail", admin_key=KEY, clock=clock)


def test_online_retail_demo_from_the_bundled_sample(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'retail.db'}")
    report = build_demo(settings, dataset="online-retail", admin_key=KEY)
    assert not report["reused"]
    assert report["stats"]["events"] > 1000 and report["example_customer"]
