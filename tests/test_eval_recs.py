"""Ranking metrics on tiny cases with known answers."""

from __future__ import annotations

import math
from typing import Any

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


def test_lists_shorter_than_k_count_the_missing_ranks_as_misses() -> None:
    """A catalog of 3 items asked for k=5: the metrics equal those of the list padded with
    misses (found by a 4-item store in the training run)."""
    recs = np.array([[1, 2, 0], [2, 0, 1]])
    relevant = rel([[2, 5, 6], [1]], n=10)
    short = ranking_metrics(recs, relevant, ks=(5,))
    padded = ranking_metrics(np.pad(recs, ((0, 0), (0, 2)), constant_values=-1), relevant, ks=(5,))
    assert short == padded
    assert short["recall@5"] == pytest.approx((1 / 3 + 1) / 2)


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.timeout(1200)  # 80 s on a quiet machine; several minutes when the cores are shared
def test_online_retail_the_full_ranker_beats_every_baseline(
    shared_data: Any, tmp_path: Any
) -> None:
    """The issue's acceptance run: Online Retail, split 2011-11-09, both variants."""
    from datetime import UTC, datetime

    from concierge import Concierge
    from concierge.ingest.bulk import import_file

    path = shared_data / "online_retail" / "online_retail.csv.gz"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    with Concierge(f"sqlite:///{tmp_path / 'or.db'}") as c:
        import_file(c, "online-retail", path)
        out = c.evaluate_recommendations(split=datetime(2011, 11, 9, tzinfo=UTC))
    for variant in ("all", "new"):
        m = out["margins"][variant]
        assert m["beats_every_baseline_on_recall@20"], (variant, m)
        assert m["margin_recall@20"] > 0
    assert out["margins"]["all"]["best_baseline"] in {"own_most_bought", "als_tuned"}


def test_cross_check_with_implicits_own_evaluation() -> None:
    """Our NDCG@k and MAP@k equal implicit's ranking_metrics_at_k on the same recommendations."""
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.evaluation import ranking_metrics_at_k

    rng = np.random.default_rng(42)
    full = sp.csr_matrix(((rng.random((80, 60)) < 0.12) * 1.0).astype(np.float32))
    mask = rng.random(full.nnz) < 0.3
    coo = full.tocoo()
    train = sp.csr_matrix((coo.data[~mask], (coo.row[~mask], coo.col[~mask])), shape=full.shape)
    test = sp.csr_matrix((coo.data[mask], (coo.row[mask], coo.col[mask])), shape=full.shape)
    model = AlternatingLeastSquares(factors=8, iterations=5, random_state=42, num_threads=1)
    model.fit(train, show_progress=False)
    theirs = ranking_metrics_at_k(model, train, test, K=10, show_progress=False)
    users = np.arange(full.shape[0])
    ids, _ = model.recommend(users, train, N=10, filter_already_liked_items=True)
    has_test = np.diff(test.indptr) > 0
    ours = ranking_metrics(np.asarray(ids, dtype=np.int64)[has_test], test[has_test], ks=(10,))
    assert ours["ndcg@10"] == pytest.approx(theirs["ndcg"], rel=1e-6)
    assert ours["map@10"] == pytest.approx(theirs["map"], rel=1e-6)
