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


FEED_CSV = """product_id,title,brand,category,department,price,currency,colour,images,attributes,variant_id,size,stock,seller_id,condition,one_of_a_kind
p1,Gel Nimbus,Asics,Shoes > Running,men,150,EUR,blue,https://i/p1.jpg|https://i/p1b.jpg,drop: 8 mm; pronation: neutral,p1-42,42,3,,,
p1,,,,,,,,,,p1-43,43,0,,,
p2,Trail Pro,Hoka,Shoes / Trail,women,-5,EUR,red,,,,,,,,
L1,Pre-owned Speedgoat,Hoka,Shoes > Trail,women,60,EUR,black,,,L1-39,39,1,bob,good,true
"""


def test_catalog_feed_import_csv_and_json(db_url: str, tmp_path: Any) -> None:
    feed = tmp_path / "feed.csv"
    feed.write_text(FEED_CSV)
    out = run("catalog", "import", str(feed), "--db", db_url, "--json")
    assert (out["rows"], out["products"], out["created"]) == (4, 2, 2)
    assert out["bad_rows"] == [{"row": 3, "field": "price", "reason": out["bad_rows"][0]["reason"]}]
    with Concierge(db_url) as c:
        p1 = c.product("p1")
        assert p1.category == ["Shoes", "Running"] and len(p1.images) == 2
        assert p1.attributes == {"drop": "8 mm", "pronation": "neutral"}
        assert [(v.size, v.stock) for v in p1.variants] == [("42", 3), ("43", 0)]
        assert c.available("p1", size="42") and not c.available("p1", size="43")
        listing = c.product("L1")
        assert listing.seller_id == "bob" and listing.one_of_a_kind and listing.condition == "good"
    strict = run("catalog", "import", str(feed), "--strict", "--db", db_url, "--json", code=1)
    assert strict["refused"] is True
    js = tmp_path / "feed.json"
    js.write_text(json.dumps({"products": [shoe("p9"), {**shoe("p10"), "currency": "usd"}]}))
    out = run("catalog", "import", str(js), "--db", db_url, "--json")
    assert out["products"] == 1 and out["bad_rows"][0]["field"] == "currency"
    with Concierge(db_url) as c:
        assert c.product("p9").brand == "Asics"
