"""Configuration of the forecaster (the `[forecast]` table). See docs/forecasting.md."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MethodName = Literal["seasonal_naive", "holt_winters"]


class ForecastConfig(BaseModel):
    """How demand is forecast over the capacity lead time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: MethodName = "holt_winters"  # forecasting method (see scheduler.forecast.METHODS)
    horizon_min: int = Field(default=30, ge=1, le=24 * 60)  # lead time to plan for, minutes
    plan_quantile: float = Field(default=0.95, gt=0.0, lt=1.0)  # quantile the planner provisions
    quantiles: tuple[float, ...] = (0.5, 0.9, 0.95, 0.99)  # quantile levels every forecast carries
    seasonal_periods_min: tuple[int, ...] = (1440, 10080)  # daily and weekly seasonality, minutes
    step_s: float = Field(default=60.0, gt=0, le=3600)  # spacing of observations and forecast steps
    # Width of one knot of each seasonal profile (one per seasonal period): the
    # profile is piecewise linear between knots, so a day is learnt from 96
    # quarter-hours rather than 1,440 single noisy minutes.
    seasonal_knot_min: tuple[int, ...] = (15, 60)
    calibration_memory: int = Field(
        default=200, ge=10
    )  # errors the calibration scale averages over

    @model_validator(mode="after")
    def _check(self) -> ForecastConfig:
        qs = self.quantiles
        if not qs or any(not 0.0 < q < 1.0 for q in qs):
            raise ValueError("quantiles must be in (0, 1)")
        if list(qs) != sorted(set(qs)):
            raise ValueError("quantiles must be strictly increasing")
        if 0.5 not in qs:
            raise ValueError("quantiles must include 0.5 (the point forecast)")
        if self.plan_quantile not in qs:
            raise ValueError(f"plan_quantile {self.plan_quantile} must be one of quantiles {qs}")
        if len(self.seasonal_knot_min) != len(self.seasonal_periods_min):
            raise ValueError("seasonal_knot_min needs one entry per seasonal period")
        for period, knot in zip(self.seasonal_periods_min, self.seasonal_knot_min, strict=True):
            if period <= 0 or knot <= 0 or period % knot:
                raise ValueError(
                    f"seasonal period {period} min must be a multiple of its knot {knot}"
                )
            if (period * 60) % self.step_s or (knot * 60) % self.step_s:
                raise ValueError(f"seasonal period {period} min is not a whole number of steps")
        if (self.horizon_min * 60) % self.step_s:
            raise ValueError("horizon_min must be a whole number of steps")
        return self

    @property
    def horizon_steps(self) -> int:
        """The planning horizon in steps."""
        return round(self.horizon_min * 60 / self.step_s)

    @property
    def period_steps(self) -> tuple[int, ...]:
        """Seasonal periods in steps."""
        return tuple(round(p * 60 / self.step_s) for p in self.seasonal_periods_min)

    @property
    def knot_steps(self) -> tuple[int, ...]:
        """Seasonal knot widths in steps."""
        return tuple(round(k * 60 / self.step_s) for k in self.seasonal_knot_min)
