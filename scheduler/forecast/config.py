"""Configuration of the forecaster. See docs/forecasting.md.

`ForecastConfig` is the `[forecast]` table of the config file: what an operator
chooses (method, horizon, quantile to plan for, seasonal periods).
`ForecastSettings` is everything a forecaster runs with: the table plus
defaults an operator rarely changes (quantile levels carried, step length,
seasonal knot width, calibration memory). `ForecastSettings.of(config)` fills
them in; tests, `forecast-eval` and the simulator may override them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MethodName = Literal["seasonal_naive", "holt_winters", "ensemble"]
# What the planned rate of a series is: the calibrated quantile of the peak over the lead
# window (now + boot, now + boot + tick], or the highest per-step quantile over the horizon.
PlanFor = Literal["lead_window_peak", "horizon_peak"]
DEFAULT_QUANTILES = (0.5, 0.9, 0.95, 0.99)
KNOTS_PER_PERIOD = 96  # a day in quarter-hours; a week in 105-minute knots


class ForecastConfig(BaseModel):
    """How demand is forecast over the capacity lead time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: MethodName = "ensemble"  # forecasting method (see scheduler.forecast.METHODS)
    horizon_min: int = Field(default=30, ge=1, le=24 * 60)  # lead time to plan for, minutes
    plan_quantile: float = Field(default=0.95, gt=0.0, lt=1.0)  # quantile the planner provisions
    seasonal_periods_min: tuple[int, ...] = (1440, 10080)  # daily and weekly seasonality, minutes
    plan_for: PlanFor = "horizon_peak"  # planned rate: see PlanFor and docs/forecasting.md
    # Learn per model how wide a band to plan (scheduler.forecast.band_feedback): the band
    # above the median widens after plans that left load above capacity, narrows otherwise.
    band_feedback: bool = True
    # The mean share of a tick's peak load above the capacity its plan placed, aimed at.
    band_feedback_target: float = Field(default=0.015, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check(self) -> ForecastConfig:
        if any(p <= 0 for p in self.seasonal_periods_min):
            raise ValueError("seasonal periods must be positive")
        # A year at most: longer periods cannot be learnt, and bound the knot search.
        if any(p > MAX_PERIOD_MIN for p in self.seasonal_periods_min):
            raise ValueError(f"seasonal periods must be at most {MAX_PERIOD_MIN} min (a year)")
        if len(self.seasonal_periods_min) > 4:
            raise ValueError("at most 4 seasonal periods")
        return self


MAX_PERIOD_MIN = 366 * 24 * 60


def auto_knot_min(period_min: int, step_s: float = 60.0) -> int:
    """Knot width for a period: the divisor of the period nearest below period / 96
    that is a whole number of steps, else the smallest such divisor above it
    (on a day: 10-minute knots for a 10-minute series, 60-minute for an hourly one)."""
    target = max(1, period_min // KNOTS_PER_PERIOD)

    def fits(knot: int) -> bool:
        return period_min % knot == 0 and (knot * 60) % step_s == 0

    for knot in range(target, 0, -1):
        if fits(knot):
            return knot
    return next((k for k in range(target + 1, period_min + 1) if fits(k)), period_min)


class ForecastSettings(BaseModel):
    """Everything a forecaster runs with (the `[forecast]` table plus tuning)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: MethodName = "ensemble"  # forecasting method
    horizon_min: int = Field(default=30, ge=1, le=24 * 60)  # horizon calibrated for, minutes
    plan_quantile: float = Field(default=0.95, gt=0.0, lt=1.0)  # quantile the planner provisions
    seasonal_periods_min: tuple[int, ...] = (1440, 10080)  # seasonal periods, minutes
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES  # levels every forecast carries (with 0.5)
    step_s: float = Field(default=60.0, gt=0, le=3600)  # spacing of observations and steps
    # Knot width of each period's piecewise-linear profile (None: period / 96,
    # so a day is learnt from quarter-hours rather than 1,440 noisy minutes).
    seasonal_knot_min: tuple[int, ...] | None = None
    calibration_memory: int = Field(default=200, ge=10)  # errors the calibration scale averages

    @classmethod
    def of(cls, config: ForecastConfig, **overrides: object) -> ForecastSettings:
        """Settings for a `[forecast]` table, with `overrides` of the tuning defaults.
        `plan_for` and the band feedback are the planner's choices, not the forecaster's:
        they are left out."""
        planner = {"plan_for", "band_feedback", "band_feedback_target"}
        return cls.model_validate({**config.model_dump(exclude=planner), **overrides})

    @model_validator(mode="after")
    def _check(self) -> ForecastSettings:
        qs = self.quantiles
        if not qs or any(not 0.0 < q < 1.0 for q in qs):
            raise ValueError("quantiles must be in (0, 1)")
        if list(qs) != sorted(set(qs)):
            raise ValueError("quantiles must be strictly increasing")
        if self.plan_quantile not in qs:
            qs = tuple(sorted({*qs, self.plan_quantile}))
            object.__setattr__(self, "quantiles", qs)
        if 0.5 not in qs:
            raise ValueError("quantiles must include 0.5 (the point forecast)")
        if any(not 0 < p <= MAX_PERIOD_MIN for p in self.seasonal_periods_min):
            raise ValueError(f"seasonal periods must be within 1 to {MAX_PERIOD_MIN} min")
        knots = self.seasonal_knot_min
        if knots is None:
            knots = tuple(auto_knot_min(p, self.step_s) for p in self.seasonal_periods_min)
            object.__setattr__(self, "seasonal_knot_min", knots)
        if len(knots) != len(self.seasonal_periods_min):
            raise ValueError("seasonal_knot_min needs one entry per seasonal period")
        for period, knot in zip(self.seasonal_periods_min, knots, strict=True):
            if period <= 0 or knot <= 0 or period % knot:
                raise ValueError(f"seasonal period {period} min must be a multiple of knot {knot}")
            if (period * 60) % self.step_s or (knot * 60) % self.step_s:
                raise ValueError(f"seasonal period {period} min is not a whole number of steps")
        if (self.horizon_min * 60) % self.step_s:
            raise ValueError("horizon_min must be a whole number of steps")
        return self

    @property
    def horizon_steps(self) -> int:
        """The calibrated horizon in steps."""
        return round(self.horizon_min * 60 / self.step_s)

    @property
    def period_steps(self) -> tuple[int, ...]:
        """Seasonal periods in steps."""
        return tuple(round(p * 60 / self.step_s) for p in self.seasonal_periods_min)

    @property
    def knot_steps(self) -> tuple[int, ...]:
        """Seasonal knot widths in steps."""
        knots = self.seasonal_knot_min or ()
        return tuple(round(k * 60 / self.step_s) for k in knots)
