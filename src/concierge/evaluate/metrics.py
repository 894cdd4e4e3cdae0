"""Top-k ranking metrics, vectorized over all people at once.

``recs`` is a b x k array of item indices (best first, ``-1`` for an empty slot), ``relevant``
a b x n sparse matrix of what each person actually bought in the test period, ``n_relevant``
how many items each person bought (it may count items outside the item space, which no model
can recommend, so recall is not flattered by dropping them).

* Recall@k = hits in the top k / |R|
* NDCG@k = sum_{hit at rank r <= k} 1/log2(r + 1) divided by the ideal sum_{r <= min(|R|, k)}
* MAP@k = sum_{hit at rank r <= k} precision@r / min(|R|, k)
* hit rate@k = share of people with at least one hit in the top k
* coverage@k = distinct items recommended in anyone's top k / items in the space

Every metric is the mean over people with |R| > 0.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

I = npt.NDArray[np.int64]  # noqa: E741


def hit_matrix(recs: I, relevant: sp.csr_matrix) -> npt.NDArray[np.bool_]:
    """``hits[u, r]``: the item at rank ``r`` of person ``u`` is relevant to them."""
    b, k = recs.shape
    n = relevant.shape[1]
    rel = relevant.tocsr()
    rows = np.repeat(np.arange(b, dtype=np.int64), np.diff(rel.indptr))
    keys = np.sort(rows * n + rel.indices.astype(np.int64))
    cand = np.arange(b, dtype=np.int64)[:, None] * n + recs
    pos = np.searchsorted(keys, cand.ravel())
    pos = np.minimum(pos, max(keys.size - 1, 0))
    found = (keys[pos] == cand.ravel()) if keys.size else np.zeros(cand.size, dtype=bool)
    out: npt.NDArray[np.bool_] = found.reshape(b, k) & (recs >= 0)
    return out


def ranking_metrics(
    recs: I,
    relevant: sp.csr_matrix,
    *,
    n_relevant: npt.NDArray[np.int64] | None = None,
    n_items: int | None = None,
    ks: tuple[int, ...] = (10, 20),
) -> dict[str, float]:
    nrel = (
        np.diff(relevant.tocsr().indptr) if n_relevant is None else np.asarray(n_relevant)
    ).astype(np.float64)
    keep = nrel > 0
    hits = hit_matrix(recs, relevant)[keep]
    recs_k = recs[keep]
    nrel = nrel[keep]
    out: dict[str, float] = {"people": float(keep.sum())}
    if not keep.any():
        return out | {
            f"{m}@{k}": 0.0 for k in ks for m in ("recall", "ndcg", "map", "hit_rate", "coverage")
        }
    width = max(max(ks), recs.shape[1])
    if recs.shape[1] < width:  # fewer items than k (a small catalog): the rest are misses
        hits = np.pad(hits, ((0, 0), (0, width - recs.shape[1])))
        recs_k = np.pad(recs_k, ((0, 0), (0, width - recs.shape[1])), constant_values=-1)
    discounts = 1.0 / np.log2(np.arange(2, width + 2))
    for k in ks:
        h = hits[:, :k].astype(np.float64)
        out[f"recall@{k}"] = float(np.mean(h.sum(axis=1) / nrel))
        ideal = np.cumsum(discounts[:k])[np.minimum(nrel, k).astype(np.int64) - 1]
        out[f"ndcg@{k}"] = float(np.mean((h * discounts[:k]).sum(axis=1) / ideal))
        prec = np.cumsum(h, axis=1) / np.arange(1, k + 1)
        out[f"map@{k}"] = float(np.mean((prec * h).sum(axis=1) / np.minimum(nrel, k)))
        out[f"hit_rate@{k}"] = float(np.mean(h.sum(axis=1) > 0))
        shown = recs_k[:, :k]
        space = n_items if n_items is not None else relevant.shape[1]
        out[f"coverage@{k}"] = float(np.unique(shown[shown >= 0]).size / max(space, 1))
    return out
