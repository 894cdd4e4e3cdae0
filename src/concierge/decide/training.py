"""The trainers ``concierge train`` runs for recommendations: crowd, collaborative, ranker.

* ``crowd`` - :class:`~concierge.models.crowd.CrowdModel` on the log up to ``as_of``;
* ``collaborative`` - ALS (or BPR) on the person x item weights up to ``as_of``; the metrics
  record the training time and matrix size;
* ``ranker`` - the blend weights of :mod:`concierge.decide.rank`, tuned on the last
  ``val_days`` before ``as_of`` (models fitted on the data before that window, scored on the
  purchases inside it); with too little data it stores the defaults and says so.
"""

from __future__ import annotations

import time
from typing import Any

import polars as pl

from concierge.clock import to_us
from concierge.models.collaborative import CollaborativeConfig, CollaborativeModel
from concierge.models.crowd import CrowdModel
from concierge.models.interactions import idmap_of, matrix, read_interactions
from concierge.models.training import TrainContext, TrainReport
from concierge.profiles.doc import DAY_US


def _lines(ctx: TrainContext) -> tuple[pl.DataFrame, pl.DataFrame]:
    with ctx.store.read() as conn:
        return read_interactions(conn, as_of_us=ctx.as_of_us)


def _save(
    ctx: TrainContext, model: Any, metrics: dict[str, Any], extra_meta: dict[str, Any] | None = None
) -> Any:
    arrays, meta = model.to_artifact()
    return ctx.registry.save(
        model.name,
        arrays,
        config=model.get_config(),
        metrics=metrics,
        meta=meta | (extra_meta or {}),
        as_of_us=ctx.as_of_us,
        log_seq=ctx.log_seq,
        created_us=to_us(ctx.clock.now()),
    )


class CrowdTrainer:
    name = "crowd"

    def train(self, ctx: TrainContext) -> TrainReport:
        ctx.report("crowd: reading interactions", 0.0)
        lines, countries = _lines(ctx)
        if lines.height == 0:
            return TrainReport(self.name, skipped="no interactions in the log yet")
        ctx.report("crowd: popularity and co-occurrence", 0.3)
        start = time.perf_counter()
        model = CrowdModel().fit(lines, as_of_us=ctx.as_of_us, countries=countries)
        metrics = {
            "items": int(model.item_ids_.size),
            "lines": lines.height,
            "fit_seconds": round(time.perf_counter() - start, 3),
            **{
                f"{k}_pairs": int(m.nnz)
                for k, m in model.matrices_.items()
                if k in CrowdModel.KINDS
            },
            "trending_items": int((model.trending_ > 0).sum()),
        }
        info = _save(ctx, model, metrics)
        ctx.report("crowd: saved", 1.0)
        return TrainReport(self.name, artifacts=[info], metrics=metrics)


class CollaborativeTrainer:
    name = "collaborative"

    def __init__(self, config: CollaborativeConfig | None = None) -> None:
        self.config = config or CollaborativeConfig()

    def train(self, ctx: TrainContext) -> TrainReport:
        ctx.report("collaborative: reading interactions", 0.0)
        lines, _countries = _lines(ctx)
        if lines.height == 0:
            return TrainReport(self.name, skipped="no interactions in the log yet")
        users = idmap_of(lines.get_column("person_id"))
        items = idmap_of(lines.get_column("product_id"))
        m = matrix(
            lines, users, items, as_of_us=ctx.as_of_us, half_life_days=self.config.half_life_days
        )
        ctx.report("collaborative: fitting ALS", 0.3)
        start = time.perf_counter()
        model = CollaborativeModel(self.config).fit(m, users, items)
        metrics = {
            "people": len(users),
            "items": len(items),
            "nonzeros": int(m.nnz),
            "fit_seconds": round(time.perf_counter() - start, 3),
        }
        info = _save(ctx, model, metrics)
        ctx.report("collaborative: saved", 1.0)
        return TrainReport(self.name, artifacts=[info], metrics=metrics)


class RankerTrainer:
    """Tunes the blend on a validation window; stores it as the ``ranker`` artifact's meta."""

    name = "ranker"

    def __init__(
        self,
        val_days: float = 28.0,
        config: CollaborativeConfig | None = None,
        max_people: int = 2000,
    ) -> None:
        self.val_days = val_days
        self.max_people = max_people
        self.config = config or CollaborativeConfig()

    def train(self, ctx: TrainContext) -> TrainReport:
        import numpy as np

        from concierge.decide.rank import BlendParams
        from concierge.evaluate.recommendations import fit_als, make_split, tune_blend

        ctx.report("ranker: reading interactions", 0.0)
        lines, countries = _lines(ctx)
        if lines.height == 0:
            return TrainReport(self.name, skipped="no interactions in the log yet")
        val_us = ctx.as_of_us - int(self.val_days * DAY_US)
        blend = BlendParams()
        metrics: dict[str, Any] = {"tuned": False}
        if lines.filter(pl.col("ts_us") <= val_us).height:
            split = make_split(lines, countries, val_us, end_us=ctx.as_of_us).sample(
                self.max_people
            )
            if len(split.people) >= 5:
                ctx.report("ranker: tuning the blend on the validation window", 0.2)
                crowd = CrowdModel().fit(
                    split.train, as_of_us=val_us, countries=countries, items=split.items
                )
                collab = fit_als(split, self.config)
                blend, objective = tune_blend(split, crowd, collab)
                metrics = {
                    "tuned": True,
                    "validation_people": len(split.people),
                    "validation_recall@20": objective,
                }
        if not metrics["tuned"]:
            metrics["reason"] = f"fewer than 5 people bought in the last {self.val_days:g} days"
        info = ctx.registry.save(
            self.name,
            {"version": np.array([1])},
            config={"val_days": self.val_days},
            metrics=metrics,
            meta={"blend": blend.model_dump()},
            as_of_us=ctx.as_of_us,
            log_seq=ctx.log_seq,
            created_us=to_us(ctx.clock.now()),
        )
        ctx.report("ranker: saved", 1.0)
        return TrainReport(
            self.name, artifacts=[info], metrics=metrics | {"blend": blend.model_dump()}
        )


def recommendation_trainers() -> list[Any]:
    return [CrowdTrainer(), CollaborativeTrainer(), RankerTrainer()]
