"""The CLI on a real store (both backends): init, rebuild, stats, customer, keys; JSON output."""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner

from concierge import Concierge
from concierge.cli.main import app
from helpers import close, purchase, shoe

runner = CliRunner()


def run(*args: str, code: int = 0) -> Any:
    res = runner.invoke(app, list(args))
    assert res.exit_code == code, res.output
    return json.loads(res.stdout) if "--json" in args else res.output


def test_init_creates_and_migrates_the_store(db_url: str) -> None:
    out = run("init", "--db", db_url, "--json")
    assert out["database"] and out["revision"]
    again = run("init", "--db", db_url, "--json")  # idempotent
    assert again["revision"] == out["revision"]
    assert run("stats", "--db", db_url, "--json")["events"] == 0


def test_rebuild_stats_and_customer(db_url: str) -> None:
    with Concierge(db_url) as c:
        c.upsert_products([shoe("p1"), shoe("p2", brand="Nike")])
        c.ingest(
            [
                purchase("o1", "ann", 1, [("p1", 1, 120.0)]),
                purchase("o2", "ann", 8, [("p2", 2, 60.0)]),
                {
                    "type": "view",
                    "anonymous_id": "d1",
                    "product_id": "p1",
                    "timestamp": "2026-01-01T00:00:00Z",
                },
            ]
        )
        before = c.profile_docs()
    out = run("rebuild", "--db", db_url, "--json")
    assert (out["events"], out["people"]) == (3, 2)
    with Concierge(db_url) as c:
        assert close(c.profile_docs(), before) == []
    human = run("rebuild", "--db", db_url)
    assert "rebuilt 2 profiles from 3 events" in human
    stats = run("stats", "--db", db_url, "--json")
    assert stats["events"] == 3 and stats["products"] == 2 and stats["profiles"] == 2
    ann = run("customer", "ann", "--db", db_url, "--json")
    assert ann["features"]["orders"] == 2 and len(ann["history"]) == 2
    anon = run("customer", "d1", "--anonymous", "--db", db_url, "--json")
    assert anon["known"] is False
    missing = run("customer", "nobody", "--db", db_url, "--json", code=2)
    assert missing["error"] == "NotFoundError"


def test_keys_create_list_revoke(db_url: str) -> None:
    made = run("keys", "create", "frontend", "--role", "ingest", "--db", db_url, "--json")
    assert made["role"] == "ingest" and len(made["secret"]) >= 32
    listed = run("keys", "list", "--db", db_url, "--json")
    assert [k["key_id"] for k in listed] == [made["key_id"]]
    assert "secret" not in json.dumps(listed)
    with Concierge(db_url) as c:
        assert c.authenticate(made["secret"]) is not None
    run("keys", "revoke", made["key_id"], "--db", db_url, "--json")
    with Concierge(db_url) as c:
        assert c.authenticate(made["secret"]) is None
    bad = run("keys", "create", "x", "--role", "superuser", "--db", db_url, "--json", code=2)
    assert bad["detail"][0]["field"] == "role"
