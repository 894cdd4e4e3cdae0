"""The lifetime models on a real store (SQLite and PostgreSQL): train, the 360, predictions,
the API, the CLI, and evaluation on CDNOW, Online Retail and the simulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from concierge import Concierge
from concierge.api.app import create_app
from concierge.cli.main import app
from concierge.clock import to_us
from concierge.errors import InputError
from concierge.ingest.bulk import import_file
from concierge.models.lifetime.clv import COLUMNS, LifetimeConfig
from concierge.models.lifetime.data import log_transactions
from concierge.models.lifetime.trainer import LifetimeTrainer
from concierge.models.training import TrainContext

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # the cg fixture's clock
START = datetime(2025, 6, 1, tzinfo=UTC)
runner = CliRunner()


def buy(eid: str, cid: str | None, when: datetime, amount: float, **kw: Any) -> dict[str, Any]:
    return {
        "type": "purchase",
        "event_id": eid,
        "customer_id": cid,
        "timestamp": when.isoformat(),
        "order_id": eid,
        "currency": "EUR",
        "lines": [{"product_id": "p1", "quantity": 1, "unit_price": amount}],
        **kw,
    }


def shop(n: int = 60, seed: int = 5) -> list[dict[str, Any]]:
    """``n`` customers buying at their own pace over the year before NOW, some lapsing."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        gap = float(rng.gamma(2.0, 15.0))
        lapse = float(rng.exponential(250.0))
        t = float(rng.uniform(0, 200))
        first = t
        k = 0
        while t < 365 and (k == 0 or t - first < lapse):
            when = START + timedelta(days=t)
            out.append(buy(f"e{i}-{k}", f"c{i:03d}", when, float(rng.gamma(4.0, 10.0))))
            k += 1
            t += float(rng.exponential(gap))
    return out


@pytest.fixture
def trained(cg: Concierge) -> Concierge:
    events = shop()
    events.append(
        {
            "type": "view",
            "customer_id": "window",
            "product_id": "p1",
            "timestamp": (NOW - timedelta(days=3)).isoformat(),
        }
    )
    cg.ingest(events)
    reports = cg.train(only=["lifetime"])
    assert [r.name for r in reports] == ["lifetime"] and reports[0].skipped is None
    return cg


def test_train_stores_the_per_person_contract(trained: Concierge) -> None:
    art = trained.registry.load("lifetime")
    assert art.info.version == 1
    assert art.info.as_of_us == int(NOW.timestamp() * 1e6)
    assert art.meta["per_person"] == list(COLUMNS)
    assert set(art.meta["per_person_doc"]) == set(COLUMNS)
    for col in (
        "p_alive",
        "expected_purchases_30d",
        "expected_purchases_90d",
        "expected_spend",
        "clv",
        "churn_risk",
    ):
        assert col in art.meta["per_person"]
    ids = art.arrays["person_id"]
    assert ids.dtype.kind == "U" and len(set(ids.tolist())) == ids.size
    assert set(ids.tolist()) == {f"c{i:03d}" for i in range(60)}  # not the views-only person
    for col in COLUMNS:
        assert art.arrays[col].shape == ids.shape
    assert art.meta["clv_horizon_days"] == 365 and art.meta["unit"] == "days"
    assert art.info.metrics["purchase_model"] == "bgnbd"
    assert set(art.info.metrics["params"]) == {"r", "alpha", "a", "b"}
    assert art.meta["metrics"]["churn"]["holdout"]["reliability"]


def test_the_360_shows_predictions_with_version_and_reasons(trained: Concierge) -> None:
    doc = trained.customer("c001", history=0)
    life, churn = doc["predictions"]["lifetime"], doc["predictions"]["churn"]
    assert life["version"] == churn["version"] == 1 and life["scored"]
    assert 0 <= life["p_alive"] <= 1 and 0 < churn["churn_risk"] < 1
    assert life["expected_purchases_90d"] >= life["expected_purchases_30d"] >= 0
    assert life["clv"] >= 0 and life["expected_spend"] > 0
    texts = [r["text"] for r in churn["reasons"]]
    assert "purchase" in texts[0] and "days ago" in texts[0] and "usual gap" in texts[0]
    assert {r["code"] for r in churn["reasons"]} >= {"history", "driver"}
    assert all(r["data"] for r in life["reasons"])
    # someone who only looked is not scored, and says why
    window = trained.customer("window", history=0)["predictions"]
    assert window["lifetime"]["scored"] is False
    assert window["churn"]["reasons"][0]["code"] == "no_purchase"


def test_predictions_frame_joins_by_person(trained: Concierge) -> None:
    df = trained.predictions()
    assert df.height == 60 and df.columns == ["person_id", *COLUMNS]
    some = trained.predictions(["c002", "window", "nobody", "c001"])
    assert some["person_id"].to_list() == ["c002", "window", "nobody", "c001"]
    assert some["p_alive"].null_count() == 2
    full = df.filter(df["person_id"] == "c001").row(0, named=True)
    assert some.row(3, named=True) == full
    assert (
        full["p_alive"] == trained.customer("c001", history=0)["predictions"]["lifetime"]["p_alive"]
    )


def test_a_new_version_is_served_at_once_and_old_data_is_not_used(trained: Concierge) -> None:
    before = trained.predictions(["c001"]).row(0, named=True)
    # a purchase after the as-of of the next training does not count in it
    trained.ingest([buy("late", "c001", NOW + timedelta(days=1), 50.0)])
    trained.train(only=["lifetime"], as_of=NOW)
    assert trained.customer("c001", history=0)["predictions"]["lifetime"]["version"] == 2
    again = trained.predictions(["c001"]).row(0, named=True)
    assert again == before
    trained.train(only=["lifetime"], as_of=NOW + timedelta(days=2))
    later = trained.predictions(["c001"]).row(0, named=True)
    assert later["repeat_purchases"] == before["repeat_purchases"] + 1
    assert later["days_since_last_purchase"] == pytest.approx(1.0, abs=0.51)


def test_too_little_history_skips_training(cg: Concierge) -> None:
    cg.ingest(shop(5))
    (report,) = cg.train(only=["lifetime"])
    assert report.skipped and "customers" in report.skipped
    assert cg.registry.latest("lifetime") is None
    shown = cg.customer("c001", history=0)["predictions"]
    assert "lifetime" not in shown and "churn" not in shown
    assert cg.predictions(["c001"]).columns == ["person_id"]


def test_purchases_follow_identity_stitching(cg: Concierge) -> None:
    events = shop()
    events += [
        buy("anon-1", None, START + timedelta(days=10), 30.0, anonymous_id="dev-9"),
        {
            "type": "identify",
            "customer_id": "zed",
            "anonymous_id": "dev-9",
            "timestamp": (START + timedelta(days=11)).isoformat(),
            "traits": {},
        },
        buy("zed-1", "zed", START + timedelta(days=40), 30.0),
        buy("ghost-1", None, START + timedelta(days=50), 20.0, anonymous_id="dev-7"),
        buy("ghost-2", None, START + timedelta(days=90), 20.0, anonymous_id="dev-7"),
    ]
    cg.ingest(events)
    cg.train(only=["lifetime"])
    row = cg.predictions(["zed", "anon:dev-9", "anon:dev-7"]).rows(named=True)
    assert row[0]["repeat_purchases"] == 1  # the anonymous purchase is zed's first
    assert row[1]["p_alive"] is None and row[2]["p_alive"] is None
    # never identified: not modelled by default, and the 360 says why
    ghost = cg.customer(anonymous_id="dev-7", history=0)["predictions"]["lifetime"]
    assert ghost["scored"] is False and ghost["reasons"][0]["code"] == "anonymous"
    with_anon = log_transactions(cg.store, include_anonymous=True)
    assert with_anon.filter(pl.col("person_id") == "anon:dev-7").height == 2
    assert log_transactions(cg.store).filter(pl.col("person_id") == "anon:dev-7").height == 0
    # a trainer configured to include them scores them
    ctx = TrainContext(
        store=cg.store,
        registry=cg.registry,
        settings=cg.settings,
        clock=cg.clock,
        as_of_us=to_us(NOW),
        log_seq=0,
    )
    LifetimeTrainer(LifetimeConfig(include_anonymous=True)).train(ctx)
    cg.per_person.refresh()
    assert cg.predictions(["anon:dev-7"])["repeat_purchases"].to_list() == [1.0]


@pytest.fixture
def api(trained: Concierge) -> Iterator[tuple[TestClient, dict[str, str]]]:
    _, secret = trained.create_api_key("reader", "read")
    with TestClient(create_app(concierge=trained)) as client:
        yield client, {"Authorization": f"Bearer {secret}"}


def test_the_api_360_carries_the_predictions(api: tuple[TestClient, dict[str, str]]) -> None:
    client, headers = api
    body = client.get("/v1/customers/c003", headers=headers).json()
    assert body["predictions"]["lifetime"]["version"] == 1
    assert 0 < body["predictions"]["churn"]["churn_risk"] < 1


def test_cli_evaluate_predictions(trained: Concierge, db_url: str) -> None:
    res = runner.invoke(
        app,
        [
            "evaluate",
            "predictions",
            "--calibration-end",
            "2026-02-01",
            "--holdout-end",
            "2026-06-01",
            "--db",
            db_url,
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert set(report["models"]) == {"bgnbd", "pareto_nbd", "gamma_gamma"}
    assert report["models"]["bgnbd"]["purchases"]["n"] == report["customers"] > 20
    assert "holdout" in report["churn"] or "skipped" in report["churn"]
    text = runner.invoke(
        app,
        [
            "evaluate",
            "predictions",
            "--calibration-end",
            "2026-02-01",
            "--holdout-end",
            "2026-06-01",
            "--db",
            db_url,
            "--no-lifetimes",
        ],
    )
    assert text.exit_code == 0 and "repeat purchases in the holdout" in text.output
    bad = runner.invoke(
        app,
        [
            "evaluate",
            "predictions",
            "--calibration-end",
            "2026-02-01",
            "--holdout-end",
            "2026-01-01",
            "--db",
            db_url,
            "--json",
        ],
    )
    assert bad.exit_code == 2
    assert json.loads(bad.stdout)["detail"][0]["field"] == "holdout_end"
    unit = runner.invoke(
        app,
        [
            "evaluate",
            "predictions",
            "--calibration-end",
            "2026-02-01",
            "--unit",
            "months",
            "--db",
            db_url,
            "--json",
        ],
    )
    assert unit.exit_code == 2 and json.loads(unit.stdout)["detail"][0]["field"] == "unit"


@pytest.mark.realdata
def test_cdnow_through_the_store_gives_the_paper(cg: Concierge, shared_data: Path) -> None:
    path = shared_data / "cdnow" / "CDNOW_sample.txt"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    import_file(cg, "cdnow", path)
    report = cg.evaluate_predictions(
        calibration_end=datetime(1997, 9, 30, tzinfo=UTC),
        holdout_end=datetime(1998, 6, 30, tzinfo=UTC),
        period_days=7.0,
        compare_lifetimes=False,
    )
    bg = report["models"]["bgnbd"]
    assert report["customers"] == 2357
    assert round(bg["log_likelihood"], 1) == -9582.4
    assert f"{bg['params']['alpha']:.4g}" == "4.414"
    assert [r["predicted"] for r in bg["by_frequency"][:6]] == pytest.approx(
        [0.23, 0.52, 1.04, 1.52, 2.16, 2.65], abs=0.02
    )
    gg = report["models"]["gamma_gamma"]["params"]
    assert f"{gg['p']:.3g}" == "6.25"


@pytest.mark.realdata
@pytest.mark.slow
def test_online_retail_evaluation(tmp_path: Path, shared_data: Path) -> None:
    path = shared_data / "online_retail" / "online_retail.csv.gz"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    with Concierge(f"sqlite:///{tmp_path / 'or.db'}") as c:
        import_file(c, "online-retail", path)
        report = c.evaluate_predictions(
            calibration_end=datetime(2011, 9, 1, tzinfo=UTC),
            holdout_end=datetime(2011, 12, 10, tzinfo=UTC),
        )
    bg = report["models"]["bgnbd"]["purchases"]
    assert bg["correlation"] > 0.6
    lt = report["lifetimes_bgnbd"]
    if lt["converged"]:
        assert lt["max_abs_difference_to_ours"] < 1e-2
    else:  # on this split lifetimes' optimizer stops with "precision loss" (a -> 0)
        assert "ConvergenceError" in lt["error"]
    assert report["customers"] == 3317  # known customers only: guest invoices are not people
    churn = report["churn"]["holdout"]
    assert churn["auc"] > 0.7
    assert churn["brier"] < report["churn"]["baseline_1_minus_p_alive"]["brier"]
    # churn reads the cadence rhythm; the shrunk-mean rhythm is the reference of the same run
    assert report["churn"]["rhythm"] == "cadence"
    ref = report["churn"]["reference_shrunk_mean_rhythm"]["holdout"]
    assert churn["brier"] <= ref["brier"] and churn["log_loss"] <= ref["log_loss"]
    assert churn["auc"] > ref["auc"] - 0.005
    mean_predicted = sum(r["mean_predicted"] * r["n"] for r in churn["reliability"]) / churn["n"]
    # fitted on May-September, scored on the autumn peak, when fewer customers lapse
    assert abs(mean_predicted - churn["observed_rate"]) < 0.15


@pytest.mark.slow
def test_simulator_against_the_hidden_truth(tmp_path: Path) -> None:
    from concierge.demo import load_simulation

    truth = tmp_path / "truth.json"
    with Concierge(f"sqlite:///{tmp_path / 'sim.db'}") as c:
        load_simulation(c, shoppers=400, days=365, seed=42, truth_path=truth)
        report = c.evaluate_predictions(
            calibration_end=datetime(2026, 2, 1, tzinfo=UTC),
            holdout_end=datetime(2026, 6, 1, tzinfo=UTC),
            truth_path=truth,
            compare_lifetimes=False,
        )
    t = report["truth"]
    assert t["customers"] > 200
    assert t["auc_p_alive_vs_truth"] > 0.6
    assert t["mean_p_alive_truly_alive"] > t["mean_p_alive_truly_churned"]
    # the same evaluation reports the recovered cadences and sell delays (evaluate cadence)
    cad = t["cadence"]
    assert abs(cad["holdout_days"] - 120.0) < 1.0  # the split of the predictions evaluation
    assert cad["cadence"]["purchases>=2"]["pairs"] > 100
    two = cad["cadence"]["purchases>=2"]
    assert two["corr_log"] > 0.3
    assert two["mae_days"] < two["plain_average"]["mae_days"]  # shrinkage beats the plain mean
    assert 0.6 < cad["coverage"]["covered"] < 0.95
    assert cad["sell_delay"]["sellers"] >= 3 and cad["sell_delay"]["corr_log"] > 0.3
    # and the CLI prints them
    res = runner.invoke(
        app,
        [
            "evaluate",
            "predictions",
            "--calibration-end",
            "2026-02-01",
            "--holdout-end",
            "2026-06-01",
            "--truth",
            str(truth),
            "--no-lifetimes",
            "--db",
            f"sqlite:///{tmp_path / 'sim.db'}",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "recovered cadence" in res.output and "sell delays:" in res.output
    assert "reference with the shrunk mean gap" in res.output


def test_evaluation_and_refused_input_write_nothing(trained: Concierge) -> None:
    before = trained.stats(), [m["version"] for m in trained.models()]
    trained.evaluate_predictions(
        calibration_end=datetime(2026, 2, 1, tzinfo=UTC), compare_lifetimes=False
    )
    for bad in (
        {
            "calibration_end": datetime(2026, 2, 1, tzinfo=UTC),
            "holdout_end": datetime(2026, 1, 1, tzinfo=UTC),
        },
        {"calibration_end": datetime(2020, 1, 1, tzinfo=UTC)},  # nobody had bought yet
    ):
        with pytest.raises(InputError) as err:
            trained.evaluate_predictions(**bad)  # type: ignore[arg-type]
        assert err.value.errors[0].field in ("holdout_end", "calibration_end")
    with pytest.raises(InputError) as err:
        trained.train(only=["no-such-model"])
    assert err.value.errors[0].field == "only"
    assert (trained.stats(), [m["version"] for m in trained.models()]) == before
