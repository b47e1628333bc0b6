"""/api/v1/scaling: the autoscaler's latest decision, its limits and its recent history."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from starlette.responses import Response

from shoal.core.scaling_settings import ScalingSettings
from shoal.scheduler.api.deps import SettingsDep, StoreDep
from shoal.scheduler.api.responses import JSONBytesResponse

router = APIRouter(prefix="/scaling", tags=["scaling"])


async def scaling_settings(settings: SettingsDep) -> ScalingSettings:
    """The autoscaler's settings: the group of the app's settings."""
    return settings.scaling


ScalingSettingsDep = Annotated[ScalingSettings, Depends(scaling_settings)]


class ScalingDecisionPublic(BaseModel):
    ts: float
    current: int
    desired: int
    needed: int
    direction: Literal["up", "down", "hold"]
    reason: str
    manual_hold: bool
    applied: bool
    """False when the backend refused the change (the reason says why)."""
    backend: str
    min: int
    max: int


class ScalingPublic(BaseModel):
    backend: Literal["none", "local", "kubernetes"]
    current: int | None
    """Replicas when the latest decision was taken (null before the first one)."""
    desired: int | None
    reason: str | None
    ts: float | None
    """When the latest decision was taken (seconds since the epoch)."""
    min: int
    max: int
    history: list[ScalingDecisionPublic]
    """Recorded decisions, newest first."""


@router.get("", response_model=ScalingPublic, summary="Worker replicas: current, desired, why, and history")
async def get_scaling(
    store: StoreDep,
    settings: ScalingSettingsDep,
    limit: Annotated[int, Query(ge=1, le=200, description="History entries to return")] = 50,
) -> Response:
    history = await store.scaling_history(limit)
    latest = history[0] if history else {}
    return JSONBytesResponse(
        {
            "backend": settings.scaler_backend,
            "current": latest.get("current"),
            "desired": latest.get("desired"),
            "reason": latest.get("reason"),
            "ts": latest.get("ts"),
            "min": settings.scaler_min_replicas,
            "max": settings.scaler_max_replicas,
            "history": history,
        }
    )
