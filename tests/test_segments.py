"""Micro-segments: the contract kit, clusters known by construction, personas, stable ids across
refits, runs with memberships and flows on both backends, and the lifetime columns joined in."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from concierge import Concierge
from concierge.cli.main import app
from concierge.models.base import ModelBase
from concierge.models.segments import SegmentModel
from concierge.testing.estimators import EstimatorContract
from helpers import at, purchase, shoe

NAMES = ["orders", "engagement.email", "brand_loyalty"]


def blobs(
    seed: int = 0, n: int = 60, centres: tuple[tuple[float, ...], ...] | None = None
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = centres or ((0.0, 0.0, 0.0), (6.0, 0.0, 0.0), (0.0, 6.0, 0.0), (0.0, 0.0, 6.0))
    return np.vstack([rng.normal(c, 0.2, (n, 3)) for c in centres])


class TestSegmentContract(EstimatorContract):
    def make_model(self, **overrides: Any) -> ModelBase[Any]:
        return SegmentModel(**({"n_segments": 4, "min_segment_size": 5} | overrides))

    def fit(self, model: ModelBase[Any]) -> ModelBase[Any]:
        assert isinstance(model, SegmentModel)
        return model.fit(blobs(), NAMES)

    def output(self, model: ModelBase[Any]) -> Any:
        assert isinstance(model, SegmentModel)
        return {"ids": model.segment_of, "centroids": model.raw_centroids()}


def test_clusters_known_by_construction_are_recovered_and_described() -> None:
    x = blobs()
    m = SegmentModel(n_segments=4, min_segment_size=5).fit(x, NAMES)
    seg = m.segment_of
    truth = np.repeat(np.arange(4), 60)
    for k in range(4):  # every true blob is one segment, and no segment mixes blobs
        assert np.unique(seg[truth == k]).size == 1
    assert np.unique(seg).size == 4
    personas = m.personas()
    email = int(seg[truth == 2][0])
    assert "email-responsive" in personas[email]["phrases"]
    loyal = int(seg[truth == 3][0])
    assert "loyal to one brand" in personas[loyal]["phrases"]
    assert personas[loyal]["distinguishing"][0]["feature"] == "brand_loyalty"
    # k is bounded by the minimum segment size
    small = SegmentModel(n_segments=300, min_segment_size=60).fit(x, NAMES)
    assert np.unique(small.segment_of).size <= 4


def test_refits_keep_segment_ids_and_new_groups_get_new_ones() -> None:
    first = SegmentModel(n_segments=4, min_segment_size=5).fit(blobs(0), NAMES)
    previous = (first.raw_centroids(), first.ids_, first.features_)
    again = SegmentModel(n_segments=4, min_segment_size=5, seed=7).fit(
        blobs(1), NAMES, previous=previous
    )
    truth = np.repeat(np.arange(4), 60)
    for k in range(4):
        assert again.segment_of[truth == k][0] == first.segment_of[truth == k][0]
    moved = ((0.0, 0.0, 0.0), (6.0, 0.0, 0.0), (0.0, 6.0, 0.0), (6.0, 6.0, 6.0))
    third = SegmentModel(n_segments=4, min_segment_size=5).fit(
        blobs(2, centres=moved), NAMES, previous=previous
    )
    kept = set(third.ids_.tolist()) & set(first.ids_.tolist())
    assert len(kept) == 3 and int(third.ids_.max()) == 5  # one new id after 1..4


def shop(cg: Concierge, *, extra: int = 0) -> None:
    cg.upsert_products(
        [shoe("p1"), shoe("p2", brand="Nike", price=60.0), shoe("p3", brand="Hoka", price=180.0)]
    )
    ev: list[dict[str, Any]] = []
    for i in range(40 + extra):
        cid = f"c{i:02d}"
        kind = i % 4
        n = (1, 2, 6, 3)[kind]
        pid = ("p1", "p2", "p3", "p1")[kind]
        ev += [purchase(f"{cid}-{k}", cid, 3 + 9 * k + i % 3, [(pid, 1, 100.0)]) for k in range(n)]
        if kind == 3:
            ev.append(
                {
                    "type": "consent",
                    "customer_id": cid,
                    "channel": "email",
                    "granted": True,
                    "timestamp": at(1),
                }
            )
            ev += [
                {"type": kind_, "customer_id": cid, "channel": "email", "timestamp": at(2 + j)}
                for j in range(3)
                for kind_ in ("delivered", "open", "click")
            ]
    cg.ingest(ev)


def test_runs_memberships_flows_and_the_360(cg: Concierge) -> None:
    shop(cg)
    (lifetime,) = cg.train(only=["lifetime"])  # the real lifetime model, joined by segments
    assert lifetime.skipped is None and cg.registry.latest_version("lifetime") == 1
    reports = cg.train(only=["segments"])
    assert reports[0].metrics["people"] == 40
    art = cg.registry.load("segments")
    assert "clv" in art.meta["features"] and "churn_risk" in art.meta["features"]
    assert art.meta["per_person"] == ["segment_id"]
    segs = cg.segments()
    assert segs["run_id"] == 1 and sum(s["size"] for s in segs["segments"]) == 40
    assert all(s["label"] for s in segs["segments"])
    assert all("orders" in s["figures"] for s in segs["segments"])
    view = cg.customer("c03", history=0)["predictions"]["segments"]
    assert view["version"] == 1 and view["segment_id"] is not None and view["reasons"]
    # more shoppers, a second run: stable ids, flows and history
    shop(cg, extra=8)
    cg.train(only=["segments"])
    flows = cg.segment_flows()
    assert (flows["from_run"], flows["to_run"]) == (1, 2)
    assert flows["people"] == 48 and flows["stayed"] + flows["moved"] == 48
    entered = sum(f["people"] for f in flows["flows"] if f["from"] is None)
    assert entered == 8
    hist = cg.segment_history("c03")
    assert [h["run_id"] for h in hist] == [1, 2]
    assert [r["run_id"] for r in cg.segment_runs()] == [2, 1]
    # an audience over the segment id
    sid = hist[-1]["segment_id"]
    aud = cg.create_audience("one segment", f"segment_id == {sid}")
    assert aud["members"] == next(
        s["size"] for s in cg.segments()["segments"] if s["segment_id"] == sid
    )


def test_cli_train_only_segments_and_flows(tmp_path: Any) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    with Concierge(db) as c:
        shop(c)
    run = CliRunner()
    for _ in range(2):
        r = run.invoke(app, ["train", "--only", "segments", "--db", db, "--json"])
        assert r.exit_code == 0, r.output
    r = run.invoke(app, ["segments", "flows", "--db", db, "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["stayed"] == 40
    r = run.invoke(app, ["segments", "list", "--db", db])
    assert r.exit_code == 0 and "run 2" in r.output
    r = run.invoke(app, ["segments", "history", "c01", "--db", db, "--json"])
    assert r.exit_code == 0 and len(json.loads(r.output)) == 2


def test_segment_routes(cg: Concierge) -> None:
    from fastapi.testclient import TestClient

    from concierge.api.app import create_app

    shop(cg)
    _, secret = cg.create_api_key("r", "read")
    h = {"Authorization": f"Bearer {secret}"}
    with TestClient(create_app(concierge=cg)) as client:
        assert client.get("/v1/segments", headers=h).status_code == 404  # no run yet
        cg.train(only=["segments"])
        r = client.get("/v1/segments", headers=h)
        assert r.status_code == 200 and r.json()["run_id"] == 1
        assert client.get("/v1/segments/runs", headers=h).json()[0]["people"] == 40
        assert client.get("/v1/segments/flows", headers=h).status_code == 404  # one run only
        assert len(client.get("/v1/customers/c01/segments", headers=h).json()) == 1


@pytest.mark.parametrize("bad", [{"no_such_option": 1}, {"n_segments": 0}])
def test_bad_config_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SegmentModel(**bad)


def test_the_scheduled_refresh_refits_only_when_stale(db_url: str) -> None:
    from datetime import UTC, datetime, timedelta

    from concierge.clock import FrozenClock
    from concierge.settings import Settings

    clock = FrozenClock(datetime(2026, 6, 1, 12, tzinfo=UTC))
    with Concierge(settings=Settings(database_url=db_url), clock=clock) as c:
        shop(c)
        c.create_audience("repeat", "orders >= 2")
        first = c.refresh_behaviour(max_age_hours=24)
        assert first["refitted"] and {r["name"] for r in first["trained"]} == {
            "lifetime",
            "cadence",
            "segments",
            "anomalies",
        }
        clock.at += timedelta(hours=1)
        again = c.refresh_behaviour(max_age_hours=24)
        assert not again["refitted"] and again["scanned"] is not None
        assert again["audiences"][0]["name"] == "repeat"
        clock.at += timedelta(hours=24)
        assert c.refresh_behaviour(max_age_hours=24)["refitted"]
        assert [r["run_id"] for r in c.segment_runs()] == [2, 1]


def test_old_runs_memberships_are_pruned(cg: Concierge) -> None:
    from concierge.clock import to_us
    from concierge.models.behaviour_train import SegmentsTrainer
    from concierge.models.training import TrainContext

    shop(cg)
    ctx = TrainContext(
        store=cg.store,
        registry=cg.registry,
        settings=cg.settings,
        clock=cg.clock,
        as_of_us=to_us(cg.clock.now()),
        log_seq=0,
    )
    trainer = SegmentsTrainer(keep_runs=2)
    for _ in range(3):
        trainer.train(ctx)
    assert [h["run_id"] for h in cg.segment_history("c01")] == [2, 3]
    assert [r["run_id"] for r in cg.segment_runs()] == [3, 2, 1]  # runs and personas stay
