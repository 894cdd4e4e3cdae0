"""Settings, loaded once by the entry points (CLI, API, worker) and passed down.

Nothing is read at import."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DB_URL = "sqlite:///concierge.db"


class Settings(BaseSettings):
    """Every key can be set as an environment variable `CONCIERGE_<KEY>`."""

    model_config = SettingsConfigDict(env_prefix="CONCIERGE_", extra="forbid")

    database_url: str = Field(DEFAULT_DB_URL, description="SQLAlchemy URL of the store.")
    currency: str = Field("EUR", description="Currency of a new store (kept in the store).")
    affinity_half_life_days: float = Field(
        90.0, gt=0, description="Half-life of the time decay of affinities."
    )
    session_gap_minutes: float = Field(
        30.0, gt=0, description="Inactivity that ends a browsing session."
    )
    max_batch: int = Field(10_000, gt=0, description="Largest batch of events in one request.")
    max_body_bytes: int = Field(32 * 1024 * 1024, description="Largest request body accepted.")
    artifacts_dir: Path = Field(Path("artifacts"), description="Where trained models are kept.")
    bootstrap_admin_key: str | None = Field(
        None, description="If set, an admin API key with this secret is ensured at start."
    )

    # -- predictive models (issue 3): read by the trainers of ``concierge train`` through
    # TrainContext.settings (see concierge.models.from_settings); each default is the model
    # config's own (a test keeps them equal)
    lifetime_purchase_model: Literal["bgnbd", "pareto_nbd"] = Field(
        "bgnbd", description="Repeat-purchase model of the lifetime trainer: BG/NBD or Pareto/NBD."
    )
    lifetime_clv_horizon_days: int = Field(
        365, ge=1, description="Horizon of the CLV (days of expected repeat purchases valued)."
    )
    lifetime_discount_rate: float = Field(
        0.10, ge=0.0, description="Yearly discount rate of the CLV (0.10 = 10% a year)."
    )
    churn_window_days: int = Field(
        90,
        ge=1,
        description="Churn = no purchase within this many days; also the holdout of its fit.",
    )
    churn_rhythm: Literal["cadence", "shrunk_mean"] = Field(
        "cadence",
        description="Rhythm churn compares lateness with: the hierarchical cadence posterior, "
        "or the mean gap shrunk toward the population's (the older reference rule).",
    )
    cadence_window: float = Field(
        0.8, gt=0.0, lt=1.0, description="Probability mass of the predicted purchase window."
    )
    cadence_due_soon_days: float = Field(
        14.0, ge=0.0, description="'Due soon': the expected next purchase is at most this far off."
    )
    segments_count: int = Field(
        300, ge=1, le=5000, description="Most micro-segments a segmentation run makes."
    )
    segments_min_size: int = Field(
        20, ge=1, description="Smallest typical segment: k is at most people / this."
    )
    segments_keep_runs: int = Field(
        30, ge=1, description="Segmentation runs whose memberships are kept (history, flows)."
    )
    questions_max_per_period: int = Field(
        1, ge=0, description="Most new clarifying questions per person per period (0: none)."
    )
    questions_period_days: float = Field(
        30.0, gt=0.0, description="The period of the question limit, days."
    )


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
