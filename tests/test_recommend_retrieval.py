"""Candidate retrieval (``concierge.decide.retrieval``): the pool answers exactly as the whole
catalog does.

The factor index against a brute-force product (hypothesis), then a real store of 1,000 items
where a recommender reading the lists only ``depth`` deep is compared with one that scores the
whole catalog on every request, for any stock, rules, shopper and slot; and the widening when
filters leave too few candidates.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from concierge import Concierge
from concierge.clock import FrozenClock
from concierge.decide.recommend import Recommender
from concierge.decide.retrieval import FactorIndex
from concierge.settings import Settings
from helpers import close, purchase, shoe

N = 1000
BRANDS = ("Asics", "Nike", "Hoka", "On", "Saucony")
CATEGORIES = (["shoes", "running"], ["shoes", "trail"], ["shoes", "walking"], ["socks"])
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 400),
    dim=st.integers(1, 8),
    depth=st.integers(1, 60),
    seed=st.integers(0, 2**16),
)
def test_factor_index_finds_the_exact_top(n: int, dim: int, depth: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # norms spread over orders of magnitude, as ALS leaves them
    y = (rng.standard_normal((n, dim)) * rng.lognormal(0, 2, (n, 1))).astype(np.float32)
    x = rng.standard_normal(dim).astype(np.float32)
    positions = rng.permutation(5 * n)[:n].astype(np.int64)
    got = FactorIndex(positions, y).search(x, depth)
    exact = y @ x
    kth = np.sort(exact)[::-1][min(depth, n) - 1]
    top = set(got.top.tolist())
    # every item scoring above the depth-th best is found; whatever is left out is bounded
    assert {int(p) for p in positions[exact > kth + 1e-4 * abs(kth)]} <= top
    left = np.array([int(p) not in top for p in positions])
    if left.any():
        assert exact[left].max() <= got.bound + 1e-4 * abs(got.bound) + 1e-6
    assert got.best == pytest.approx(max(float(exact.max()), 0.0), rel=1e-5, abs=1e-6)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Concierge]:
    path: Path = tmp_path_factory.mktemp("retrieval") / "store.db"
    c = Concierge(settings=Settings(database_url=f"sqlite:///{path}"), clock=FrozenClock(NOW))
    rng = np.random.default_rng(42)
    c.upsert_products(
        [
            shoe(
                f"p{i:04d}",
                brand=BRANDS[i % len(BRANDS)],
                colour=("grey", "blue", "red")[i % 3],
                category=CATEGORIES[(i // 5) % len(CATEGORIES)],
            )
            for i in range(N)
        ]
    )
    # a long tail: a few items bought by many, most by few or none
    weights = 1.0 / np.arange(1, N + 1) ** 0.8
    weights /= weights.sum()
    events = []
    for u in range(120):
        picks = rng.choice(N, size=4, replace=False, p=weights)
        for j, p in enumerate(picks.tolist()):
            events.append(purchase(f"b{u}-{j}", f"c{u}", u % 60 + j, [(f"p{p:04d}", 1, 120.0)]))
    c.ingest(events)
    c.train()
    yield c
    c.close()


def _pair(c: Concierge, depth: int) -> tuple[Recommender, Recommender]:
    pool = Recommender(c.store, c.registry, depth=depth, check_every_s=0.0)
    whole = Recommender(c.store, c.registry, exact=True, check_every_s=0.0)
    return pool, whole


def _same(a: Any, b: Any) -> None:
    """The same answer; scores equal up to float32 rounding (the ALS scale is a dot product
    that the pool and the whole pass may compute in products of different shapes)."""
    da, db = a.as_dict(), b.as_dict()
    assert [i["product_id"] for i in da["items"]] == [i["product_id"] for i in db["items"]]
    for x, y in zip(da["items"], db["items"], strict=True):
        assert x["score"] == pytest.approx(y["score"], rel=1e-5, abs=1e-6)
        assert [r["code"] for r in x["reasons"]] == [r["code"] for r in y["reasons"]]
        x["score"] = y["score"]
        for rx, ry in zip(x["reasons"], y["reasons"], strict=True):
            if "score" in rx["data"]:  # an ALS share, rounded to 4 places
                assert rx["data"]["score"] == pytest.approx(ry["data"]["score"], abs=1e-4)
                rx["data"]["score"] = ry["data"]["score"]
    assert close(da, db) == []


NOW_US = int(NOW.timestamp() * 1_000_000)
rule = st.one_of(
    st.builds(lambda b: {"action": "exclude", "facet": f"brand={b}"}, st.sampled_from(BRANDS)),
    st.builds(
        lambda b, w: {"action": "boost", "facet": f"brand={b}", "weight": w},
        st.sampled_from(BRANDS),
        st.floats(0.05, 2),
    ),
    st.builds(
        lambda c, w: {"action": "bury", "facet": f"colour={c}", "weight": w},
        st.sampled_from(("grey", "blue", "red")),
        st.floats(0.05, 2),
    ),
    st.builds(
        lambda i, pos: {"action": "pin", "product_id": f"p{i:04d}", "weight": pos},
        st.integers(0, N - 1),
        st.integers(1, 5),
    ),
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    out_of_stock=st.lists(st.integers(0, N - 1), max_size=300),
    rules=st.lists(rule, max_size=3),
    who=st.sampled_from(["c0", "c7", "c42", "c99", "stranger", None]),
    slot=st.sampled_from(["home", "cart", "post_purchase", "email"]),
    k=st.integers(1, 20),
    depth=st.sampled_from([30, 60, 120, 300]),
)
def test_the_pool_answers_as_the_whole_catalog(
    shop: Concierge,
    out_of_stock: list[int],
    rules: list[dict[str, Any]],
    who: str | None,
    slot: str,
    k: int,
    depth: int,
) -> None:
    gone = sorted(set(out_of_stock))
    shop.set_stock(
        [
            {"product_id": f"p{i:04d}", "variant_id": f"p{i:04d}-{s}", "stock": 0}
            for i in gone
            for s in ("42", "43")
        ]
    )
    made = []
    for n, r in enumerate(rules):
        try:
            made.append(shop.create_rule({"name": f"r{n}", **r}))
        except Exception as exc:  # a conflicting rule is refused (tested elsewhere)
            assert "conflicts" in str(exc) or "already pinned" in str(exc)
    try:
        pool, whole = _pair(shop, depth)
        a = pool.recommend(who, slot=slot, k=k, now_us=NOW_US)
        b = whole.recommend(who, slot=slot, k=k, now_us=NOW_US)
        _same(a, b)
        assert whole.passes["whole"] == 1
    finally:
        for m in made:
            shop.delete_rule(m["rule_id"])
        shop.set_stock(
            [
                {"product_id": f"p{i:04d}", "variant_id": f"p{i:04d}-{s}", "stock": 5}
                for i in gone
                for s in ("42", "43")
            ]
        )


def test_a_shallow_pool_answers_without_the_whole_catalog(shop: Concierge) -> None:
    pool, whole = _pair(shop, 100)
    for who in ("c0", "c7", "c42", None):
        _same(pool.recommend(who, now_us=NOW_US), whole.recommend(who, now_us=NOW_US))
    assert pool.passes["pool"] == 4 and pool.passes["whole"] == 0


def test_a_pool_covering_the_catalog_is_the_whole_pass(shop: Concierge) -> None:
    pool, whole = _pair(shop, N)
    _same(pool.recommend("c7", now_us=NOW_US), whole.recommend("c7", now_us=NOW_US))
    assert pool.passes["whole"] == 1


def test_filters_that_remove_most_candidates_widen_the_pool(shop: Concierge) -> None:
    # four brands of five excluded: 200 items remain, and a pool of fewer items than the 200
    # the ranking needs is scored again over the whole catalog
    made = [
        shop.create_rule({"name": f"no {b}", "action": "exclude", "facet": f"brand={b}"})
        for b in BRANDS[:4]
    ]
    try:
        pool, whole = _pair(shop, 100)
        a = pool.recommend("c7", k=10, now_us=NOW_US)
        _same(a, whole.recommend("c7", k=10, now_us=NOW_US))
        assert len(a.items) == 10 and {i.product_id for i in a.items} <= {
            f"p{i:04d}" for i in range(4, N, 5)
        }
        assert pool.passes["widened"] >= 1
    finally:
        for m in made:
            shop.delete_rule(m["rule_id"])
