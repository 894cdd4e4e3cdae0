"""Crowd models: known co-occurrence, trending against its own baseline, contracts."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from concierge.models.crowd import CrowdModel, top_k_rows
from concierge.models.idmap import IdMap
from concierge.profiles.doc import DAY_US
from concierge.testing.estimators import EstimatorContract
from concierge.testing.recommenders import RecommenderContract


def lines(rows: list[tuple[str, str, str, int, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "person_id": [r[0] for r in rows],
            "product_id": [r[1] for r in rows],
            "variant_id": [None] * len(rows),
            "type": [r[2] for r in rows],
            "ts_us": [r[3] for r in rows],
            "quantity": [1] * len(rows),
            "facets": ["size=42" if r[1] == "x" else "" for r in rows],
            "event_id": [r[4] for r in rows],
        },
        schema={
            "person_id": pl.String,
            "product_id": pl.String,
            "variant_id": pl.String,
            "type": pl.String,
            "ts_us": pl.Int64,
            "quantity": pl.Int64,
            "facets": pl.String,
            "event_id": pl.String,
        },
    )


D = DAY_US
BASKETS = lines(
    [
        ("a", "x", "purchase", 1 * D, "o1"),
        ("a", "y", "purchase", 1 * D, "o1"),
        ("b", "x", "purchase", 2 * D, "o2"),
        ("b", "y", "purchase", 2 * D, "o2"),
        ("c", "x", "purchase", 3 * D, "o3"),
        ("c", "z", "purchase", 3 * D, "o3"),
        ("a", "w", "purchase", 10 * D, "o4"),
        ("b", "w", "purchase", 12 * D, "o5"),
        ("d", "v", "view", 20 * D, "e1"),
        ("d", "u", "view", 20 * D + 60_000_000, "e2"),
    ]
)


def test_also_bought_is_the_shrunk_cosine() -> None:
    m = CrowdModel(shrink=0.0).fit(BASKETS, as_of_us=30 * D)
    names, s = m.neighbours("also_bought", "x")
    assert names[0] == "y"  # 2 shared baskets; x in 3, y in 2: 2 / sqrt(6)
    assert s[0] == pytest.approx(2 / np.sqrt(6), rel=1e-6)
    after, _ = m.neighbours("bought_after", "y")
    assert after == ["w"]  # a and b bought w in their next order
    viewed, _ = m.neighbours("also_viewed", "v")
    assert viewed == ["u"]
    assert m.neighbours("also_bought", "nope") == ([], pytest.approx(np.zeros(0)))


def test_trending_rises_against_its_own_baseline() -> None:
    rows = [(f"p{i}", "steady", "purchase", (i % 60) * D, f"s{i}") for i in range(60)]
    rows += [(f"q{i}", "rising", "purchase", (55 + i % 5) * D, f"r{i}") for i in range(10)]
    m = CrowdModel(recent_days=7, baseline_days=49).fit(lines(rows), as_of_us=60 * D)
    top = m.trending(2)
    assert top[0][0] == "rising" and top[0][1] > 2.0
    assert dict(top).get("steady", 0.0) < 1.5


def test_top_k_rows_keeps_the_largest() -> None:
    m = sp.csr_matrix(np.array([[0, 3, 1, 2], [5, 0, 0, 4]], dtype=np.float32))
    out = top_k_rows(m, 2).toarray()
    np.testing.assert_array_equal(out, [[0, 3, 0, 2], [5, 0, 0, 4]])


def test_size_and_repeat_rate() -> None:
    rows = [
        ("a", "x", "purchase", 1 * D, "o1"),
        ("a", "x", "purchase", 5 * D, "o2"),
        ("b", "y", "purchase", 2 * D, "o3"),
    ]
    m = CrowdModel(repeat_prior=0.0).fit(lines(rows), as_of_us=10 * D)
    rate = dict(zip(m.item_ids_.tolist(), m.repeat_rate_.tolist(), strict=True))
    assert rate == {"x": 1.0, "y": 0.0}
    size = m.size_popularity("42")
    assert size is not None and size[m.items.to_internal(["x"])[0]] > 0


class TestCrowdEstimator(EstimatorContract):
    def make_model(self, **o: Any) -> CrowdModel:
        return CrowdModel(**o)

    def fit(self, model: Any) -> Any:
        return model.fit(BASKETS, as_of_us=30 * D)

    def output(self, model: Any) -> Any:
        return model.outputs()


class TestAlsoBoughtRecommender(RecommenderContract):
    """The crowd's item-to-item scores (a person's items times also-bought) as a recommender."""

    def make_model(self, **o: Any) -> CrowdModel:
        return CrowdModel(**({"shrink": 0.0} | o))

    def fit(self, model: Any, user_items: sp.csr_matrix) -> Any:
        c = user_items.tocoo()
        rows = [
            (f"u{u}", f"i{i:03d}", "purchase", D, f"o{u}")
            for u, i in zip(c.row, c.col, strict=True)
        ]
        items = IdMap(np.array([f"i{i:03d}" for i in range(user_items.shape[1])], dtype=np.str_))
        return model.fit(lines(rows), as_of_us=2 * D, items=items)

    def scores(self, model: Any, row: sp.csr_matrix) -> Any:
        sim = model.matrices_["also_bought"]
        return np.asarray(sim[row.indices].T @ row.data).ravel()
