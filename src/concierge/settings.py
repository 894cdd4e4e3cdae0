"""Settings, loaded once by the entry points (CLI, API, worker) and passed down.

Nothing is read at import."""

from __future__ import annotations

from pathlib import Path

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


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
