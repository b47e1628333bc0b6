"""Settings of the worker autoscaler, read from `SHOAL_SCALER_*` environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BackendName = Literal["none", "local", "kubernetes"]


class ScalingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHOAL_", extra="ignore", env_file=None)

    scaler_backend: BackendName = "none"
    """What the autoscaler changes: `kubernetes` (the worker Deployment's scale), `local`
    (worker processes on this host) or `none` (decisions are computed and recorded, nothing changes)."""
    scaler_min_replicas: int = Field(default=0, ge=0, le=10_000)
    """Fewest workers; 0 allows scale to zero (a worker is started as soon as work arrives)."""
    scaler_max_replicas: int = Field(default=10, ge=1, le=10_000)
    """Most workers the autoscaler will ask for."""
    scaler_interval_s: float = Field(default=5.0, ge=0.05, le=3600)
    """How often the autoscaler decides."""
    scaler_scale_down_window_s: float = Field(default=60.0, ge=0, le=86_400)
    """Stabilisation window: scale in only to the highest need seen over this many seconds."""
    scaler_max_step_up: int = Field(default=4, ge=1, le=10_000)
    """Most workers added in one decision."""
    scaler_max_step_down: int = Field(default=1, ge=1, le=10_000)
    """Most workers removed in one decision."""
    scaler_manual_hold_s: float = Field(default=300.0, ge=0, le=86_400)
    """A replica count changed outside Shoal (`kubectl scale`) is respected this long."""

    @field_validator("scaler_backend", mode="before")
    @classmethod
    def _backend_lowercase(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _limits_are_consistent(self) -> ScalingSettings:
        if self.scaler_min_replicas > self.scaler_max_replicas:
            raise ValueError(
                f"SHOAL_SCALER_MIN_REPLICAS ({self.scaler_min_replicas}) must not exceed "
                f"SHOAL_SCALER_MAX_REPLICAS ({self.scaler_max_replicas})"
            )
        return self
