"""Ranking metrics on tiny cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from concierge.evaluate.metrics import hit_matrix, ranking_metrics


def rel(rows: list[list[int]], n: int = 10) -> sp.csr_matrix:
    r = [i for i, row in enumerate(rows) for _ in row]
    c = [x for row in rows for x in row]
    return sp.csr_matrix((np.ones(len(c)), (r, c)), shape=(len(rows), n))


def test_known_answers() -> None:
    recs = np.array([[1, 2, 3], [4, 5, 6]])
    relevant = rel([[2, 9], [7]])
    assert hit_matrix(recs, relevant).tolist() == [[False, True, False], [False, False, False]]
    m = ranking_metrics(recs, relevant, ks=(3,))
    assert m["people"] == 2
    assert m["recall@3"] == pytest.approx((1 / 2 + 0) / 2)
    ndcg0 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert m["ndcg@3"] == pytest.approx(ndcg0 / 2)
    assert m["map@3"] == pytest.approx(((1 / 2) / 2) / 2)
    assert m["hit_rate@3"] == pytest.approx(0.5)
    assert m["coverage@3"] == pytest.approx(6 / 10)


def test_perfect_and_empty_slots() -> None:
    recs = np.array([[3, -1, -1]])
    m = ranking_metrics(recs, rel([[3]]), ks=(3,))
    assert m["recall@3"] == m["ndcg@3"] == m["map@3"] == m["hit_rate@3"] == 1.0
    # items outside the space count in |R| (no model could recommend them)
    m2 = ranking_metrics(recs, rel([[3]]), n_relevant=np.array([2]), ks=(3,))
    assert m2["recall@3"] == pytest.approx(0.5)
    # people without relevant items are not averaged
    m3 = ranking_metrics(np.array([[1, 2, 3], [3, 4, 5]]), rel([[], [3]]), ks=(3,))
    assert m3["people"] == 1 and m3["recall@3"] == 1.0
