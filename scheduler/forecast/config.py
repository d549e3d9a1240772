"""Configuration of the forecaster (the `[forecast]` table)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ForecastConfig(BaseModel):
    """How demand is forecast over the capacity lead time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = "seasonal_naive"  # forecasting method name
    horizon_min: int = Field(default=30, ge=1, le=24 * 60)  # lead time to plan for, minutes
    plan_quantile: float = Field(default=0.95, gt=0.0, lt=1.0)  # quantile the planner provisions
    seasonal_periods_min: tuple[int, ...] = (1440, 10080)  # daily and weekly seasonality, minutes
