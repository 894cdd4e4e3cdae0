"""The lifetime and churn predictions of one person, with their reasons, for the customer 360."""

from __future__ import annotations

from typing import Any

from concierge.clock import from_us
from concierge.models.lifetime.clv import Lifetime
from concierge.models.per_person import Scores
from concierge.schema.events import ANON_PREFIX

_DRIVER_TEXT = {
    "p_alive": "probability still active",
    "log_frequency": "number of repeat purchases",
    "log_days_since_last": "days since the last purchase",
    "log_overdue": "lateness against their own rhythm (typical gap)",
    "log_past_window": "lateness against the window of their next purchase",
}


def _reason(code: str, text: str, **data: Any) -> dict[str, Any]:
    return {"code": code, "text": text, "data": data}


def _model(scores: Scores) -> Lifetime:
    # the artifact carries every sub-model's parameters; building it is a few small arrays
    cached = scores.cache.get("model")
    if isinstance(cached, Lifetime):
        return cached
    model = Lifetime.from_artifact(scores.artifact)
    scores.cache["model"] = model
    return model


def predictions(scores: Scores | None, person_id: str) -> dict[str, Any]:
    """``{"lifetime": {...}, "churn": {...}}`` for one person; ``{}`` when never trained."""
    if scores is None:
        return {}
    meta = scores.info.meta
    version = scores.info.version
    as_of = from_us(scores.info.as_of_us).isoformat()
    row = scores.row(person_id)
    if row is None:
        if person_id.startswith(ANON_PREFIX) and not scores.info.config.get("include_anonymous"):
            why = _reason(
                "anonymous",
                "not identified: lifetime models only follow known customers (an anonymous id "
                "may stand for one device or one guest order, not one person)",
            )
        else:
            why = _reason(
                "no_purchase",
                "no purchase up to the model's as-of date: lifetime value and churn are "
                "predicted from the first purchase on",
            )
        base = {"version": version, "as_of": as_of, "scored": False, "reasons": [why]}
        return {"lifetime": dict(base), "churn": dict(base)}
    x = int(row["repeat_purchases"])
    since = row["days_since_last_purchase"]
    gap = row["usual_gap_days"]
    ratio = row["overdue_ratio"]
    history = _reason(
        "history",
        f"{x + 1} purchase{'s' if x else ''}, last {since:.0f} days ago, usual gap "
        f"{gap:.0f} days" + (f" → overdue ×{ratio:.1f}" if ratio > 1 else " → on rhythm"),
        purchases=x + 1,
        days_since_last=round(since, 1),
        usual_gap_days=round(gap, 1),
        overdue_ratio=round(ratio, 2),
    )
    lifetime = {
        "version": version,
        "as_of": as_of,
        "scored": True,
        "p_alive": row["p_alive"],
        "expected_purchases_30d": row["expected_purchases_30d"],
        "expected_purchases_90d": row["expected_purchases_90d"],
        "expected_spend": row["expected_spend"],
        "clv": row["clv"],
        "clv_horizon_days": meta.get("clv_horizon_days"),
        "discount_rate": meta.get("discount_rate"),
        "reasons": [
            history,
            _reason(
                "p_alive",
                f"P(still active) {row['p_alive']:.2f} from {x} repeat purchases "
                f"over {row['customer_age_days']:.0f} days",
                p_alive=round(row["p_alive"], 4),
            ),
            _reason(
                "value",
                f"{row['expected_purchases_90d']:.2f} purchases expected in 90 days at "
                f"{row['expected_spend']:.2f} per order",
                expected_spend=round(row["expected_spend"], 2),
            ),
        ],
    }
    model = _model(scores)
    drivers = model.churn_drivers(row)
    skipped = (
        [
            _reason(
                "churn_model_skipped",
                f"no churn model could be fitted ({model.churn_skipped_}): the risk shown is "
                "1 - P(alive)",
                why=model.churn_skipped_,
            )
        ]
        if model.churn_ is None
        else []
    )
    churn_reasons = [history, *skipped] + [
        _reason(
            "driver",
            f"{_DRIVER_TEXT[name]} {'raises' if c > 0 else 'lowers'} the risk",
            feature=name,
            log_odds=round(c, 3),
        )
        for name, c in drivers[:3]
    ]
    churn = {
        "version": version,
        "as_of": as_of,
        "scored": True,
        "churn_risk": row["churn_risk"],
        "window_days": meta.get("churn_window_days"),
        "overdue_ratio": ratio,
        "usual_gap_days": gap,
        "rhythm_window_high_days": row.get("rhythm_window_high_days"),
        "rhythm": scores.info.metrics.get("churn_rhythm"),
        "days_since_last_purchase": since,
        "reasons": churn_reasons,
    }
    return {"lifetime": lifetime, "churn": churn}
