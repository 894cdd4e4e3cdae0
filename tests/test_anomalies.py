"""Out-of-pattern behaviour: scoring, clarifying questions and answers, end to end on both
backends (the dress in a menswear history), plus a property: a question is never asked twice."""

from __future__ import annotations

import math
from typing import Any

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from concierge import Concierge
from concierge.models import anomalies
from helpers import at, purchase


def garment(
    pid: str,
    *,
    dept: str,
    cat: str,
    sizes: tuple[str, ...],
    price: float = 40.0,
    brand: str = "North",
) -> dict[str, Any]:
    return {
        "product_id": pid,
        "title": f"{brand} {cat} {pid}",
        "brand": brand,
        "category": ["Clothing", cat],
        "department": dept,
        "price": price,
        "currency": "EUR",
        "colour": "navy",
        "variants": [{"variant_id": f"{pid}-{s}", "size": s, "stock": 5} for s in sizes],
    }


CATALOG = [
    *(garment(f"m{i}", dept="men", cat="Shirts", sizes=("M", "L")) for i in range(1, 7)),
    garment("d1", dept="women", cat="Dresses", sizes=("S",), price=70.0),
    garment("d2", dept="women", cat="Dresses", sizes=("S",), price=75.0),
    *(garment(f"w{i}", dept="women", cat="Tops", sizes=("S", "M")) for i in range(1, 4)),
]


def buy(
    eid: str, cid: str, days: float, pid: str, size: str, price: float = 40.0
) -> dict[str, Any]:
    ev = purchase(eid, cid, days, [(pid, 1, price)])
    ev["lines"][0]["variant_id"] = f"{pid}-{size}"
    return ev


def menswear_store(cg: Concierge) -> None:
    cg.upsert_products(CATALOG)
    events = [buy(f"b{i}", "bob", 10.0 * i, f"m{i}", "L") for i in range(1, 6)]
    # other shoppers, so the population knows women's wear too
    events += [buy(f"a{i}", "ann", 12.0 * i, f"w{1 + i % 3}", "S") for i in range(1, 5)]
    events += [buy("a9", "ann", 70, "d2", "S", 75.0)]
    # a shopper who buys for both departments all along
    events += [
        buy(f"c{i}", "cal", 9.0 * i, f"m{i}" if i % 2 else f"w{1 + i % 3}", "M" if i % 2 else "S")
        for i in range(1, 7)
    ]
    cg.ingest(events)


def dept_shares(cg: Concierge, cid: str) -> dict[str, float]:
    aff = cg.customer(cid, history=0)["features"]["affinities"]
    return {d["value"]: d["share"] for d in aff.get("dept", [])}


def test_a_dress_in_a_menswear_history_asks_once_and_the_answer_keeps_it_apart(
    cg: Concierge,
) -> None:
    menswear_store(cg)
    assert cg.scan_behaviour()["questions"] == 0  # nothing unusual yet (old history is not asked)
    cg.ingest(
        [buy("b-dress", "bob", 140, "d1", "S", 70.0), buy("c-dress", "cal", 140, "d1", "S", 70.0)]
    )
    got = cg.scan_behaviour()
    assert got["unusual"] >= 1 and got["questions"] == 1
    qs = cg.questions("bob")
    assert len(qs) == 1
    q = qs[0]
    assert q["kind"] == "gift" and q["text"] == "Was this a gift?"
    assert q["about_product_id"] == "d1" and q["status"] == "pending"
    assert q["dimension"] in ("dept", "size") and q["surprise"] > 2.0
    assert cg.questions("cal") == []  # mixed history: the answer would change nothing
    view = cg.customer("bob", history=0)
    assert view["predictions"]["anomalies"]["pending"] == 1
    assert dept_shares(cg, "bob")["women"] > 0.1  # before the answer, the dress counts as taste

    cg.ingest(
        [
            {
                "type": "answer",
                "customer_id": "bob",
                "question_id": q["question_id"],
                "answer": "yes",
                "about_product_id": "d1",
                "timestamp": at(141),
            }
        ]
    )
    assert dept_shares(cg, "bob") == {"men": 1.0}
    view = cg.customer("bob", history=0)
    anom = view["predictions"]["anomalies"]
    assert anom["pending"] == 0 and anom["questions"][0]["status"] == "answered"
    assert [x["product_id"] for x in anom["kept_apart_from_taste"]] == ["d1"]
    assert view["features"]["orders"] == 6  # still an order: only taste leaves it out

    cg.rebuild()  # the correction comes from the log: it survives a rebuild
    assert dept_shares(cg, "bob") == {"men": 1.0}

    # a second dress: the same question is never asked again, and the period limit holds
    cg.ingest([buy("b-dress2", "bob", 145, "d2", "S", 75.0)])
    cg.scan_behaviour()
    assert [x["question_id"] for x in cg.questions("bob")] == [q["question_id"]]


def test_a_no_answer_keeps_the_item_as_taste(cg: Concierge) -> None:
    menswear_store(cg)
    cg.ingest([buy("b-dress", "bob", 140, "d1", "S", 70.0)])
    cg.scan_behaviour()
    q = cg.questions("bob")[0]
    cg.ingest(
        [
            {
                "type": "answer",
                "customer_id": "bob",
                "question_id": q["question_id"],
                "answer": "no",
                "about_product_id": "d1",
                "timestamp": at(141),
            }
        ]
    )
    assert dept_shares(cg, "bob")["women"] > 0.1
    assert cg.customer("bob", history=0)["predictions"]["anomalies"]["kept_apart_from_taste"] == []


def test_surprise_is_minus_log_of_the_smoothed_probability() -> None:
    cfg = anomalies.OutOfPatternConfig(prior_strength=2.0, min_history=1.0)
    rows = pl.DataFrame(
        {
            "person_id": ["p"] * 4,
            "event_id": ["e1", "e2", "e3", "e4"],
            "line": [0, 0, 0, 0],
            "type": ["purchase"] * 4,
            "product_id": ["a", "b", "c", "d"],
            "ts_us": [1, 2, 3, 4],
            "seq": [1, 2, 3, 4],
            "w": [5.0, 5.0, 5.0, 5.0],
            "dept": ["men", "men", "men", "women"],
            "size": [None] * 4,
            "price": [None] * 4,
            "cat": [None] * 4,
            "gift": [False] * 4,
        },
        schema_overrides={"size": pl.String, "price": pl.String, "cat": pl.String},
    )
    pop = pl.DataFrame({"dim": ["dept", "dept"], "value": ["men", "women"], "p0": [0.5, 0.5]})
    out = anomalies.score(rows, pop, cfg, since_seq=3)
    row = out.row(0, named=True)
    p_hat = (0.0 + 2.0 * 0.5) / (15.0 + 2.0)
    assert math.isclose(row["surprise"], -math.log(p_hat))
    assert math.isclose(row["lift"], math.log(0.5) - math.log(p_hat))
    assert row["history"] == 15.0 and row["top_share"] == 1.0 and row["unusual"]


def test_the_questions_route(cg: Concierge) -> None:
    from fastapi.testclient import TestClient

    from concierge.api.app import create_app

    menswear_store(cg)
    cg.ingest([buy("b-dress", "bob", 140, "d1", "S", 70.0)])
    cg.scan_behaviour()
    _, secret = cg.create_api_key("reader", "read")
    with TestClient(create_app(concierge=cg)) as client:
        r = client.get("/v1/customers/bob/questions", headers={"Authorization": f"Bearer {secret}"})
        assert r.status_code == 200 and r.json()[0]["about_product_id"] == "d1"
        r = client.get(
            "/v1/customers/nobody/questions", headers={"Authorization": f"Bearer {secret}"}
        )
        assert r.status_code == 404


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["d1", "d2", "w1", "w2", "m6"]), st.booleans()),
        min_size=1,
        max_size=6,
    )
)
def test_a_question_is_never_asked_twice(
    tmp_path_factory: Any, steps: list[tuple[str, bool]]
) -> None:
    from concierge.clock import FrozenClock
    from concierge.settings import Settings
    from conftest import NOW

    path = tmp_path_factory.mktemp("q") / "q.db"
    c = Concierge(settings=Settings(database_url=f"sqlite:///{path}"), clock=FrozenClock(NOW))
    try:
        menswear_store(c)
        cfg = anomalies.OutOfPatternConfig(max_per_period=10)
        for i, (pid, scan_now) in enumerate(steps):
            size = "L" if pid.startswith("m") else "S"
            c.ingest([buy(f"x{i}", "bob", 120 + i, pid, size)])
            if scan_now:
                anomalies.scan(c.store, now_us=int(NOW.timestamp() * 1e6), config=cfg)
        anomalies.scan(c.store, now_us=int(NOW.timestamp() * 1e6), config=cfg)
        qs = c.questions("bob")
        keys = [(q["kind"], q["dimension"], q["value"]) for q in qs]
        assert len(keys) == len(set(keys))
        assert len({q["question_id"] for q in qs}) == len(qs)
    finally:
        c.close()


def test_erasure_removes_questions_and_moves_memberships(cg: Concierge) -> None:
    menswear_store(cg)
    cg.ingest([buy("b-dress", "bob", 140, "d1", "S", 70.0)])
    cg.scan_behaviour()
    cg.create_audience("buyers", "orders >= 1")
    assert "bob" in [m["person_id"] for m in cg.audience_members("buyers")["members"]]
    with cg.store.read() as conn:
        assert anomalies.n_questions(conn) == 1
    pseudonym = cg.erase_customer("bob")["pseudonym"]
    with cg.store.read() as conn:
        assert anomalies.n_questions(conn) == 0
    cg.refresh_audiences()
    members = [m["person_id"] for m in cg.audience_members("buyers")["members"]]
    assert "bob" not in members and pseudonym in members
    assert all(c["person_id"] != "bob" for c in cg.audience_changes("buyers"))


def test_train_stores_the_population_and_scans(cg: Concierge) -> None:
    menswear_store(cg)
    cg.ingest([buy("b-dress", "bob", 140, "d1", "S", 70.0)])
    (report,) = cg.train(only=["anomalies"])
    assert report.metrics["questions"] == 1 and report.artifacts[0].version == 1
    art = cg.registry.load("anomalies")
    pop = anomalies.population_of(art.arrays)
    dept = dict(pop.filter(pl.col("dim") == "dept").select("value", "p0").iter_rows())
    assert set(dept) == {"men", "women"} and math.isclose(sum(dept.values()), 1.0)
    view = cg.customer("bob", history=0)["predictions"]["anomalies"]
    assert view["version"] == 1 and view["pending"] == 1
    assert view["reasons"][0]["code"] == "anomalies.question"
    assert cg.scan_behaviour()["scanned"] == 0  # nothing new since the trainer's scan
