"""Issue 3 closing pass: the predictive models' configs come from Settings (env CONCIERGE_…),
reach the trainers of ``concierge train`` and are recorded in the artifacts they store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from pydantic import ValidationError

from concierge import Concierge
from concierge.models import from_settings as fs
from concierge.models.anomalies import OutOfPatternConfig
from concierge.models.cadence import CadenceConfig
from concierge.models.lifetime.clv import LifetimeConfig
from concierge.models.segments import SegmentConfig
from concierge.models.training import trainers
from concierge.settings import Settings
from test_lifetime_store import NOW, shop


def test_every_model_setting_defaults_to_the_model_configs_default() -> None:
    s = Settings()
    assert fs.lifetime_config(s) == LifetimeConfig()
    assert fs.cadence_config(s) == CadenceConfig()
    assert SegmentConfig(**fs.segment_options(s)) == SegmentConfig()
    assert fs.questions_config(s) == OutOfPatternConfig()
    # each setting is documented
    for name, f in Settings.model_fields.items():
        assert f.description, name


def test_environment_reaches_every_trainer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONCIERGE_CHURN_WINDOW_DAYS", "60")
    monkeypatch.setenv("CONCIERGE_LIFETIME_DISCOUNT_RATE", "0.05")
    monkeypatch.setenv("CONCIERGE_LIFETIME_CLV_HORIZON_DAYS", "730")
    monkeypatch.setenv("CONCIERGE_CADENCE_DUE_SOON_DAYS", "3")
    monkeypatch.setenv("CONCIERGE_SEGMENTS_COUNT", "7")
    monkeypatch.setenv("CONCIERGE_QUESTIONS_MAX_PER_PERIOD", "0")
    found = {tr.name: tr for tr in trainers(Settings())}
    # issue 3's trainers, in this order (the recommenders' follow them)
    assert list(found)[:4] == ["lifetime", "cadence", "segments", "anomalies"]
    assert found["lifetime"].config.churn_window_days == 60  # type: ignore[attr-defined]
    assert found["lifetime"].config.discount_rate == 0.05  # type: ignore[attr-defined]
    assert found["cadence"].config.due_soon_days == 3.0  # type: ignore[attr-defined]
    assert found["segments"].config == {"n_segments": 7, "min_segment_size": 20}  # type: ignore[attr-defined]
    assert found["anomalies"].config.max_per_period == 0  # type: ignore[attr-defined]


def test_bad_setting_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONCIERGE_CHURN_WINDOW_DAYS", "0")
    with pytest.raises(ValidationError) as err:
        Settings()
    assert err.value.errors()[0]["loc"] == ("churn_window_days",)
    monkeypatch.setenv("CONCIERGE_CHURN_WINDOW_DAYS", "90")
    monkeypatch.setenv("CONCIERGE_CHURN_RHYTHM", "moon")
    with pytest.raises(ValidationError) as err:
        Settings()
    assert err.value.errors()[0]["loc"] == ("churn_rhythm",)


def test_settings_are_recorded_in_the_trained_artifacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from concierge.clock import FrozenClock

    monkeypatch.setenv("CONCIERGE_CHURN_WINDOW_DAYS", "60")
    monkeypatch.setenv("CONCIERGE_LIFETIME_DISCOUNT_RATE", "0.05")
    monkeypatch.setenv("CONCIERGE_CADENCE_DUE_SOON_DAYS", "3")
    monkeypatch.setenv("CONCIERGE_SEGMENTS_COUNT", "4")
    monkeypatch.setenv("CONCIERGE_SEGMENTS_MIN_SIZE", "5")
    with Concierge(f"sqlite:///{tmp_path / 's.db'}", clock=FrozenClock(NOW)) as c:
        c.ingest(shop(80))
        reports = {r.name: r for r in c.train(as_of=datetime(2026, 6, 1, tzinfo=UTC))}
        assert reports["lifetime"].skipped is None and reports["segments"].skipped is None
        life = c.registry.load("lifetime").info
        assert life.config["churn_window_days"] == 60
        assert life.config["discount_rate"] == 0.05
        assert life.meta["churn_window_days"] == 60
        assert c.registry.load("cadence").info.config["due_soon_days"] == 3.0
        seg = c.registry.load("segments").info
        assert seg.config["n_segments"] == 4 and seg.metrics["segments"] <= 4


@pytest.mark.slow
def test_the_api_360_carries_every_models_prediction_with_version_and_reasons(
    tmp_path: Path,
) -> None:
    """Point 6 of issue 3 over the whole run of ``concierge train`` on a simulated store:
    every predictive model's section in the customer 360, by the facade and by the API, has
    the model version, and the scored ones their reasons."""
    from fastapi.testclient import TestClient

    from concierge.api.app import create_app
    from concierge.clock import FrozenClock
    from concierge.demo import load_simulation

    with Concierge(
        f"sqlite:///{tmp_path / 'sim.db'}", clock=FrozenClock(datetime(2026, 6, 1, tzinfo=UTC))
    ) as c:
        load_simulation(c, shoppers=150, days=365, seed=3, truth_path=tmp_path / "truth.json")
        reports = c.train()
        names = [r.name for r in reports]
        assert names == [
            "lifetime",
            "cadence",
            "segments",
            "anomalies",
            "crowd",
            "collaborative",
            "ranker",
        ]
        assert all(r.skipped is None for r in reports), [r.as_dict() for r in reports]
        versions = {m["name"]: m["version"] for m in c.models()}
        buyer = (
            c.predictions()
            .filter(~pl.col("person_id").str.starts_with("anon:"))
            .drop_nulls("clv")
            .sort("clv", descending=True)["person_id"][0]
        )
        _, secret = c.create_api_key("reader", "read")
        with TestClient(create_app(concierge=c)) as client:
            cid = str(buyer)  # a known customer's person id is their customer id
            assert not cid.startswith("anon:")
            api = client.get(
                f"/v1/customers/{cid}", headers={"Authorization": f"Bearer {secret}"}
            ).json()["predictions"]
        facade = c.customer(cid, history=0)["predictions"]
    for preds in (api, facade):
        assert {"lifetime", "churn", "cadence", "segments", "anomalies"} <= set(preds)
        for name in ("lifetime", "churn"):
            assert preds[name]["version"] == versions["lifetime"] and preds[name]["reasons"]
        for name in ("cadence", "segments"):
            assert preds[name]["version"] == versions[name] and preds[name]["reasons"]
        assert preds["anomalies"]["version"] == versions["anomalies"]
        churn_features = {r["data"].get("feature") for r in preds["churn"]["reasons"]}
        assert churn_features & {
            "log_overdue",
            "log_past_window",
            "log_days_since_last",
            "p_alive",
            "log_frequency",
        }
        assert preds["churn"]["rhythm"] == "cadence"


@pytest.mark.slow
def test_the_360_says_when_no_churn_model_could_be_fitted(tmp_path: Path) -> None:
    """A store too young for the churn window: the lifetime model is fitted, churn is not; the
    360 says so among the churn reasons instead of showing an unexplained 1 - P(alive)."""
    from concierge.clock import FrozenClock
    from concierge.demo import load_simulation

    with Concierge(
        f"sqlite:///{tmp_path / 'young.db'}", clock=FrozenClock(datetime(2026, 6, 1, tzinfo=UTC))
    ) as c:
        load_simulation(c, shoppers=150, days=240, seed=3, truth_path=tmp_path / "truth.json")
        (report,) = c.train(only=["lifetime"])
        assert report.skipped is None and report.metrics["churn_rhythm"] is None
        who = (
            c.predictions()
            .filter(~pl.col("person_id").str.starts_with("anon:"))
            .drop_nulls("clv")["person_id"][0]
        )
        preds = c.customer(str(who), history=0)["predictions"]
    churn = preds["churn"]
    assert churn["churn_risk"] == pytest.approx(1.0 - preds["lifetime"]["p_alive"])
    codes = [r["code"] for r in churn["reasons"]]
    assert codes[:2] == ["history", "churn_model_skipped"]
    assert churn["reasons"][1]["data"]["why"]
