"""A real uvicorn server serves recommendations and picks up a new model version without a
restart; the CLI trains (with its progress), recommends, manages rules and evaluates."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from concierge import Concierge
from concierge.cli.main import app
from concierge.clock import FrozenClock
from concierge.settings import Settings
from conftest import NOW
from test_api_durability import free_port, start_server
from test_recommend import store

runner = CliRunner()
SECRET = "test-read-key-0123456789"


def cli(*args: str, code: int = 0) -> Any:
    res = runner.invoke(app, list(args))
    assert res.exit_code == code, res.output
    return json.loads(res.stdout) if "--json" in args else res.output


def test_server_serves_and_hot_reloads(db_url: str) -> None:
    with Concierge(settings=Settings(database_url=db_url), clock=FrozenClock(NOW)) as c:
        store(c)
        c.ensure_api_key("reader", "read", SECRET)
    port = free_port()
    server = start_server(db_url, port)
    url = f"http://127.0.0.1:{port}/v1/recommendations"
    h = {"Authorization": f"Bearer {SECRET}"}
    try:
        with httpx.Client(timeout=10) as http:
            r = http.get(url, params={"customer_id": "ann"}, headers=h)
            assert r.status_code == 200 and r.json()["fallback"] == "catalog"  # not trained
            assert (
                http.get(
                    url, params={"customer_id": "ghost", "slot": "email"}, headers=h
                ).status_code
                == 200
            )
            out = cli("train", "--db", db_url, "--json")
            assert {x["name"] for x in out} >= {"crowd", "collaborative", "ranker"}
            version = None
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # LiveModels looks every 2 s
                body = http.get(url, params={"customer_id": "ann"}, headers=h).json()
                version = body["model_versions"].get("collaborative")
                if version == 1 and body["fallback"] is None:
                    break
                time.sleep(0.2)
            assert version == 1
            cli("train", "--db", db_url, "--only", "collaborative", "--json")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                version = http.get(url, params={"customer_id": "ann"}, headers=h).json()[
                    "model_versions"
                ]["collaborative"]
                if version == 2:
                    break
                time.sleep(0.2)
            assert version == 2  # the new version is served, no restart
            bad = http.get(url, params={"slot": "nope"}, headers=h)
            assert bad.status_code == 422
            page = http.get(
                url, params={"slot": "product", "anchor_product_id": "no-such"}, headers=h
            )
            assert page.status_code == 200 and page.json()["items"]  # unknown anchor: still answers
    finally:
        server.terminate()
        server.wait(timeout=15)


def test_cli_recommend_and_rules(db_url: str) -> None:
    with Concierge(settings=Settings(database_url=db_url), clock=FrozenClock(NOW)) as c:
        store(c)
        c.train()
    out = cli("recommend", "ann", "--db", db_url, "--json", "-k", "3")
    assert len(out["items"]) == 3 and out["items"][0]["reasons"]
    assert "rank" in cli("recommend", "--anonymous", "dev-1", "--db", db_url)
    rule = cli(
        "rules",
        "create",
        json.dumps({"name": "pin", "action": "pin", "product_id": "p2"}),
        "--db",
        db_url,
        "--json",
    )
    bad = cli(
        "rules",
        "create",
        json.dumps({"name": "x", "action": "exclude", "product_id": "p2"}),
        "--db",
        db_url,
        "--json",
        code=2,
    )
    assert bad["detail"][0]["field"] == "product_id"
    assert [r["rule_id"] for r in cli("rules", "list", "--db", db_url, "--json")] == [
        rule["rule_id"]
    ]
    cli("rules", "delete", rule["rule_id"], "--db", db_url, "--json")
    assert cli("rules", "list", "--db", db_url, "--json") == []
    bad = cli(
        "evaluate", "recommendations", "--split-date", "yesterday", "--db", db_url, "--json", code=2
    )
    assert bad["detail"][0]["field"] == "split_date"


def test_cli_evaluate_on_a_small_simulation(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sim.db'}"
    truth = tmp_path / "truth.json"
    cli(
        "simulate",
        "--db",
        url,
        "--shoppers",
        "300",
        "--days",
        "150",
        "--truth",
        str(truth),
        "--json",
    )
    out = cli(
        "evaluate",
        "recommendations",
        "--split-date",
        "2025-10-01",
        "--db",
        url,
        "--truth",
        str(truth),
        "--json",
    )
    assert set(out["metrics"]["all"]) == {
        "global_popularity",
        "recent_popularity",
        "own_most_bought",
        "item_cosine",
        "item_bm25",
        "als_tuned",
        "concierge",
    }
    m = out["metrics"]["new"]["concierge"]
    assert {
        "recall@10",
        "recall@20",
        "ndcg@10",
        "ndcg@20",
        "map@20",
        "hit_rate@20",
        "coverage@20",
    } <= set(m)
    assert 0 <= m["recall@20"] <= 1 and out["people"]["all"] > 0
    assert set(out["taste@10"]) == set(out["metrics"]["all"])
