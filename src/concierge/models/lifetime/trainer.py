"""The ``lifetime`` trainer of ``concierge train``: fit :class:`Lifetime`, store per-person scores.

The artifact follows the per-person contract: an array ``person_id`` (the profiles' person ids)
and one array per column of :data:`~concierge.models.lifetime.clv.COLUMNS`, listed in the meta
as ``per_person`` with ``per_person_doc``; plus the fitted parameters of every sub-model (so the
artifact rebuilds the model, :meth:`Lifetime.from_artifact`), their log-likelihoods and the
churn model's holdout metrics.
"""

from __future__ import annotations

import numpy as np

from concierge.clock import to_us
from concierge.errors import InputError
from concierge.models.lifetime.clv import COLUMNS, Lifetime, LifetimeConfig
from concierge.models.lifetime.data import log_transactions
from concierge.models.lifetime.summary import rfm_summary
from concierge.models.training import TrainContext, TrainReport

NAME = "lifetime"


class LifetimeTrainer:
    """Fits BG/NBD (or Pareto/NBD) + Gamma-Gamma + churn on the log up to ``as_of``."""

    name = NAME

    def __init__(self, config: LifetimeConfig | None = None) -> None:
        self.config = config or LifetimeConfig()

    def train(self, ctx: TrainContext) -> TrainReport:
        ctx.report(NAME, 0.0)
        tx = log_transactions(
            ctx.store, as_of_us=ctx.as_of_us, include_anonymous=self.config.include_anonymous
        )
        ctx.report(NAME, 0.2)
        try:
            model = Lifetime(self.config).fit(tx, as_of=ctx.as_of_us)
        except InputError as exc:
            return TrainReport(NAME, skipped=str(exc))
        ctx.report(NAME, 0.7)
        summary = rfm_summary(tx, as_of=ctx.as_of_us)
        scores = model.score(summary, tx)
        state, meta = model.to_artifact()
        arrays = dict(state)
        arrays["person_id"] = summary.get_column("person_id").to_numpy().astype(np.str_)
        arrays |= scores
        cfg = self.config
        meta |= {
            "per_person": list(COLUMNS),
            "per_person_doc": COLUMNS,
            "unit": "days",
            "clv_horizon_days": cfg.clv_horizon_days,
            "discount_rate": cfg.discount_rate,
            "churn_window_days": cfg.churn_window_days,
        }
        churn = model.metrics_.get("churn", {})
        held = churn.get("holdout", {}) if isinstance(churn, dict) else {}
        metrics = {
            "customers": model.metrics_["customers"],
            "purchase_model": cfg.purchase_model,
            "params": model.purchase_.params_,
            "log_likelihood": round(model.purchase_.log_likelihood_, 3),
            "spend_params": model.spend_.params_ if model.spend_ else None,
            "churn_brier": held.get("brier"),
            "churn_auc": held.get("auc"),
            "churn_log_loss": held.get("log_loss"),
            "churn_rhythm": (
                None
                if model.churn_ is None
                else "cadence"
                if model.rhythm_prior_ is not None
                else "shrunk_mean"
            ),
        }
        info = ctx.registry.save(
            NAME,
            arrays,
            config=model.get_config(),
            metrics=metrics,
            meta=meta,
            as_of_us=ctx.as_of_us,
            log_seq=ctx.log_seq,
            created_us=to_us(ctx.clock.now()),
        )
        ctx.report(NAME, 1.0)
        return TrainReport(NAME, artifacts=[info], metrics=metrics)
