"""Micro-segments: hundreds of small homogeneous groups, with personas, stable ids and flows.

* **Features** (one row per person, :mod:`concierge.models.person_frame`): RFM (orders, orders
  per year, net revenue, average order value, recency), tenure, views, returns, resale activity,
  brand loyalty and department concentration, price level, channel consent and engagement,
  lifecycle stage (one-hot), cadence (``cadence_days``, ``overdue``) and any lifetime columns
  present (``clv``, ``churn_risk``, ``p_alive``). Heavy-tailed counts and money are
  ``log1p``-transformed, missing values take the column's median, then every column is
  standardized (z-scores), so a distance counts every feature alike.
* **Clustering**: scikit-learn's ``MiniBatchKMeans`` (Sculley 2010, "Web-scale k-means
  clustering") with ``k = min(n_segments, n // min_segment_size)``; mini-batches keep a refit of
  a million people within the time budget where Lloyd's full batches would not (measured in
  ``bench/bench_segments.py``).
* **Personas**: each centroid, compared with the population (its z-scores), names its strongest
  distinguishing features with a phrase each ("frequent buyers", "loyal to one brand", "high
  value", "email-responsive"), prefixed by the segment's dominant department and category.
* **Stable identities**: a refit's centroids are matched to the previous run's (both expressed in
  the new run's z-scores) by the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``);
  a match closer than the typical distance between neighbouring centroids keeps its segment id,
  the others get new ids. Memberships of every run are kept (``segment_members``), so a person's
  history and the flows between two runs are a join.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from pydantic import Field
from scipy.optimize import linear_sum_assignment

from concierge.models.base import ModelBase, ModelConfig
from concierge.models.person_frame import STAGES

F = npt.NDArray[np.float64]

# (column, transform): "log1p" for counts and money, "log" for positive scales, "" as is
FEATURES: tuple[tuple[str, str], ...] = (
    ("orders", "log1p"),
    ("orders_per_year", "log1p"),
    ("net_revenue", "log1p"),
    ("average_order_value", "log1p"),
    ("recency_days", "log1p"),
    ("tenure_days", "log1p"),
    ("views", "log1p"),
    ("return_share", ""),
    ("listings", "log1p"),
    ("brand_loyalty", ""),
    ("department_share", ""),
    ("price_level", "log1p"),
    ("consent.email", ""),
    ("engagement.email", ""),
    ("engagement.sms", ""),
    ("engagement.push", ""),
    ("cadence_days", "log1p"),
    ("overdue", ""),
    ("clv", "log1p"),
    ("churn_risk", ""),
    ("p_alive", ""),
)

# feature -> (phrase when high, phrase when low); None: not worth saying
PHRASES: dict[str, tuple[str | None, str | None]] = {
    "orders": ("many orders", "few orders"),
    "orders_per_year": ("frequent buyers", "rare buyers"),
    "net_revenue": ("high value", "low value"),
    "clv": ("high future value", "low future value"),
    "average_order_value": ("big baskets", "small baskets"),
    "recency_days": ("not bought for a long time", "bought recently"),
    "tenure_days": ("long-standing", "newcomers"),
    "views": ("heavy browsers", "light browsers"),
    "return_share": ("frequent returners", None),
    "listings": ("resellers", None),
    "brand_loyalty": ("loyal to one brand", "brand explorers"),
    "department_share": ("one department", "across departments"),
    "price_level": ("premium price", "budget price"),
    "consent.email": ("reachable by email", "no email consent"),
    "engagement.email": ("email-responsive", None),
    "engagement.sms": ("SMS-responsive", None),
    "engagement.push": ("push-responsive", None),
    "overdue": ("overdue for their next purchase", None),
    "churn_risk": ("at risk of churning", "unlikely to churn"),
    "p_alive": ("likely still active", "probably gone"),
}


class SegmentConfig(ModelConfig):
    """Hyper-parameters of :class:`SegmentModel`."""

    n_segments: int = Field(300, ge=1, le=5000, description="Most segments to make.")
    min_segment_size: int = Field(
        20, ge=1, description="k is at most people / this, so segments stay meaningful."
    )
    batch_size: int = Field(4096, ge=64, description="MiniBatchKMeans batch size.")
    max_iter: int = Field(30, ge=1, description="Passes over the data at most.")
    n_init: int = Field(1, ge=1, description="Restarts of k-means (the best inertia wins).")
    phrases: int = Field(4, ge=1, le=8, description="Most distinguishing phrases in a persona.")
    min_z: float = Field(0.5, gt=0.0, description="|z| a feature needs to enter a persona.")
    match_factor: float = Field(
        1.0,
        gt=0.0,
        description="A refit keeps an id when the centroid moved less than this "
        "times the median distance between neighbouring centroids.",
    )
    seed: int = 42


def design(frame: pl.DataFrame) -> tuple[F, list[str]]:
    """The transformed feature matrix (NaN where missing) and its column names."""
    cols: list[F] = []
    names: list[str] = []
    for name, how in FEATURES:
        if name not in frame.columns:
            continue
        x = frame.get_column(name).cast(pl.Float64).fill_null(np.nan).to_numpy().astype(float)
        if how == "log1p":
            x = np.log1p(np.maximum(x, 0.0))
        if np.all(np.isnan(x)):
            continue
        cols.append(x)
        names.append(name)
    if "lifecycle_stage" in frame.columns:
        stage = frame.get_column("lifecycle_stage").to_numpy()
        for s in STAGES:
            cols.append((stage == s).astype(float))
            names.append(f"stage={s}")
    if not cols:
        return np.zeros((frame.height, 0)), []
    return np.column_stack(cols), names


class SegmentModel(ModelBase[SegmentConfig]):
    """Standardize, cluster with MiniBatchKMeans, describe each cluster against the population.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = np.vstack([rng.normal(0, 0.1, (50, 2)), rng.normal(5, 0.1, (50, 2))])
    >>> m = SegmentModel(n_segments=2, min_segment_size=10).fit(x, ["orders", "views"])
    >>> sorted(np.bincount(m.labels_).tolist())
    [50, 50]
    """

    name = "segments"
    Config = SegmentConfig

    def fit(
        self,
        x: F,
        features: Sequence[str],
        *,
        previous: tuple[F, npt.NDArray[np.int64], Sequence[str]] | None = None,
    ) -> SegmentModel:
        """Fit on a feature matrix (rows: people; NaN: missing).

        Parameters
        ----------
        x
            The matrix of :func:`design`.
        features
            Its column names.
        previous
            The last run's (raw centroids, segment ids, feature names), to keep ids stable.
        """
        from sklearn.cluster import MiniBatchKMeans

        cfg = self.config
        x = np.asarray(x, dtype=np.float64)
        n = x.shape[0]
        fill = np.nanmedian(np.where(np.isnan(x), np.nan, x), axis=0) if n else np.zeros(x.shape[1])
        fill = np.where(np.isnan(fill), 0.0, fill)
        x = np.where(np.isnan(x), fill[None, :], x)
        mean = x.mean(axis=0) if n else np.zeros(x.shape[1])
        scale = x.std(axis=0) if n else np.ones(x.shape[1])
        scale = np.where(scale > 1e-9, scale, 1.0)
        z = (x - mean) / scale
        k = int(max(1, min(cfg.n_segments, n // cfg.min_segment_size, n)))
        km = MiniBatchKMeans(
            n_clusters=k,
            batch_size=cfg.batch_size,
            max_iter=cfg.max_iter,
            n_init=cfg.n_init,
            random_state=cfg.seed,
            reassignment_ratio=0.01,
        ).fit(z)
        labels = km.labels_.astype(np.int64)
        sizes = np.bincount(labels, minlength=k)
        # centroids as the means of their members (empty ones dropped and renumbered)
        used = np.nonzero(sizes > 0)[0]
        remap = np.full(k, -1, dtype=np.int64)
        remap[used] = np.arange(used.size)
        labels = remap[labels]
        sums = np.zeros((used.size, z.shape[1]))
        np.add.at(sums, labels, z)
        centroids = sums / np.bincount(labels, minlength=used.size)[:, None]
        self.features_ = list(features)
        self.fill_, self.mean_, self.scale_ = fill, mean, scale
        self.centroids_ = centroids  # z-scores
        self.labels_ = labels  # cluster index per row of x
        self.inertia_ = float(np.sum((z - centroids[labels]) ** 2))
        self.ids_ = self._stable_ids(previous)
        return self._fitted()

    def _stable_ids(
        self, previous: tuple[F, npt.NDArray[np.int64], Sequence[str]] | None
    ) -> npt.NDArray[np.int64]:
        k = self.centroids_.shape[0]
        if previous is None or previous[0].size == 0:
            return np.arange(1, k + 1, dtype=np.int64)
        raw, ids, names = previous
        common = [f for f in self.features_ if f in names]
        if not common:
            return np.arange(int(ids.max()) + 1, int(ids.max()) + 1 + k, dtype=np.int64)
        mine = [self.features_.index(f) for f in common]
        theirs = [list(names).index(f) for f in common]
        old = (raw[:, theirs] - self.mean_[mine]) / self.scale_[mine]
        new = self.centroids_[:, mine]
        d = np.sqrt(((new[:, None, :] - old[None, :, :]) ** 2).sum(axis=2))
        rows, cols = linear_sum_assignment(d)
        if k > 1:
            nn = np.sqrt(((new[:, None, :] - new[None, :, :]) ** 2).sum(axis=2))
            np.fill_diagonal(nn, np.inf)
            typical = float(np.median(nn.min(axis=1)))
        else:
            typical = float(np.median(d)) if d.size else 1.0
        limit = self.config.match_factor * max(typical, 1e-6)
        out = np.full(k, -1, dtype=np.int64)
        for r, c in zip(rows, cols, strict=True):
            if d[r, c] <= limit:
                out[r] = ids[c]
        fresh = np.nonzero(out < 0)[0]
        start = int(ids.max()) + 1
        out[fresh] = np.arange(start, start + fresh.size)
        return out

    # -- using it --------------------------------------------------------------------------

    @property
    def segment_of(self) -> npt.NDArray[np.int64]:
        """The stable segment id of each fitted row."""
        self.check_fitted()
        out: npt.NDArray[np.int64] = self.ids_[self.labels_]
        return out

    def raw_centroids(self) -> F:
        self.check_fitted()
        return self.centroids_ * self.scale_ + self.mean_

    def predict(self, x: F) -> npt.NDArray[np.int64]:
        """Segment ids of new rows (nearest centroid)."""
        self.check_fitted()
        x = np.where(np.isnan(x), self.fill_[None, :], x)
        z = (x - self.mean_) / self.scale_
        d = ((z[:, None, :] - self.centroids_[None, :, :]) ** 2).sum(axis=2)
        out: npt.NDArray[np.int64] = self.ids_[d.argmin(axis=1)]
        return out

    def personas(self) -> dict[int, dict[str, Any]]:
        """Per segment id: its distinguishing features (z against the population) and phrases."""
        self.check_fitted()
        cfg = self.config
        out: dict[int, dict[str, Any]] = {}
        for j, sid in enumerate(self.ids_.tolist()):
            zs = self.centroids_[j]
            ranked = sorted(range(len(self.features_)), key=lambda i: -abs(zs[i]))
            phrases: list[str] = []
            distinct: list[dict[str, Any]] = []
            for i in ranked:
                name, zi = self.features_[i], float(zs[i])
                if abs(zi) < cfg.min_z:
                    break
                distinct.append({"feature": name, "z": round(zi, 2)})
                if name.startswith("stage="):
                    phrase = f"{name[6:]} customers" if zi > 0 else None
                else:
                    hi, lo = PHRASES.get(name, (None, None))
                    phrase = hi if zi > 0 else lo
                if phrase and phrase not in phrases and len(phrases) < cfg.phrases:
                    phrases.append(phrase)
            out[int(sid)] = {"phrases": phrases, "distinguishing": distinct[:8]}
        return out

    # -- artifacts -----------------------------------------------------------------------

    def _state(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        return (
            {
                "fill": self.fill_,
                "mean": self.mean_,
                "scale": self.scale_,
                "centroids": self.centroids_,
                "labels": self.labels_,
                "segment_ids": self.ids_,
            },
            {"features": self.features_, "inertia": self.inertia_},
        )

    def _load_state(self, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> None:
        self.fill_, self.mean_, self.scale_ = arrays["fill"], arrays["mean"], arrays["scale"]
        self.centroids_, self.labels_ = arrays["centroids"], arrays["labels"]
        self.ids_ = arrays["segment_ids"]
        self.features_ = list(meta["features"])
        self.inertia_ = float(meta["inertia"])


def _mode(values: pl.Series) -> str | None:
    v = values.drop_nulls()
    if v.len() == 0:
        return None
    return str(v.mode().sort()[0])


def describe(
    frame: pl.DataFrame, segment_of: npt.NDArray[np.int64], personas: dict[int, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Label, size and key figures of every segment (frame rows align with ``segment_of``)."""
    f = frame.with_columns(pl.Series("segment_id", segment_of))
    figs = [
        c
        for c in (
            "orders",
            "net_revenue",
            "average_order_value",
            "recency_days",
            "orders_per_year",
            "clv",
            "churn_risk",
            "cadence_days",
        )
        if c in f.columns
    ]
    agg = f.group_by("segment_id").agg(
        pl.len().alias("size"),
        *[pl.col(c).cast(pl.Float64).mean().alias(c) for c in figs],
        *(
            [pl.col("consent.email").cast(pl.Float64).mean().alias("email_consent_share")]
            if "consent.email" in f.columns
            else []
        ),
        pl.col("top_department").alias("_dept")
        if "top_department" in f.columns
        else pl.lit(None).alias("_dept"),
        pl.col("top_category").alias("_cat")
        if "top_category" in f.columns
        else pl.lit(None).alias("_cat"),
    )
    out = []
    for row in agg.sort("segment_id").iter_rows(named=True):
        sid = int(row["segment_id"])
        dept = _mode(pl.Series(row.pop("_dept"), dtype=pl.String))
        cat = _mode(pl.Series(row.pop("_cat"), dtype=pl.String))
        phrases = personas.get(sid, {}).get("phrases", [])
        where = " ".join(x for x in (dept, cat.split(">")[-1].lower() if cat else None) if x)
        label = (f"{where}: " if where else "") + (", ".join(phrases) or "typical customers")
        figures = {
            k: (None if v is None else round(float(v), 3))
            for k, v in row.items()
            if k not in ("segment_id", "size")
        }
        out.append(
            {
                "segment_id": sid,
                "label": label,
                "size": int(row["size"]),
                "figures": figures | {"top_department": dept, "top_category": cat},
                "distinguishing": personas.get(sid, {}).get("distinguishing", []),
            }
        )
    return out
