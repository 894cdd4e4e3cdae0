"""The configs of the predictive models (issue 3) from :class:`~concierge.settings.Settings`.

The trainers of ``concierge train`` get their configs from here
(:func:`concierge.models.training.trainers` passes the run's settings), and so do the
out-of-pattern scans of the facade, so a
``CONCIERGE_CHURN_WINDOW_DAYS=60`` in the environment reaches the fitted model and is recorded in
its artifact's config. Everything not exposed as a setting keeps the config's default.
"""

from __future__ import annotations

from typing import Any

from concierge.settings import Settings


def lifetime_config(s: Settings) -> Any:
    """:class:`~concierge.models.lifetime.clv.LifetimeConfig` of the ``lifetime`` trainer."""
    from concierge.models.lifetime.clv import LifetimeConfig

    return LifetimeConfig(
        purchase_model=s.lifetime_purchase_model,
        clv_horizon_days=s.lifetime_clv_horizon_days,
        discount_rate=s.lifetime_discount_rate,
        churn_window_days=s.churn_window_days,
        churn_rhythm=s.churn_rhythm,
    )


def cadence_config(s: Settings) -> Any:
    """:class:`~concierge.models.cadence.CadenceConfig` of the ``cadence`` trainer."""
    from concierge.models.cadence import CadenceConfig

    return CadenceConfig(window=s.cadence_window, due_soon_days=s.cadence_due_soon_days)


def segment_options(s: Settings) -> dict[str, Any]:
    """Keyword options of :class:`~concierge.models.segments.SegmentModel`."""
    return {"n_segments": s.segments_count, "min_segment_size": s.segments_min_size}


def questions_config(s: Settings) -> Any:
    """:class:`~concierge.models.anomalies.OutOfPatternConfig` of the scans and questions."""
    from concierge.models.anomalies import OutOfPatternConfig

    return OutOfPatternConfig(
        max_per_period=s.questions_max_per_period, period_days=s.questions_period_days
    )
