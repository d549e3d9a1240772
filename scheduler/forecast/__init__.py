"""Demand forecasting: quantile forecasts of request rate over the capacity lead time.

`build_forecaster(config)` makes the configured method; `load_forecaster(state)`
restores one from `state_dict()`. See docs/forecasting.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from scheduler.forecast.base import (
    Forecaster,
    QuantileForecast,
    SeriesKey,
    VectorForecaster,
    demand_key,
)
from scheduler.forecast.config import ForecastConfig, ForecastSettings
from scheduler.forecast.ensemble import Ensemble
from scheduler.forecast.holt_winters import HoltWinters
from scheduler.forecast.lead_peak import LeadPeakQuantile, LeadWindow
from scheduler.forecast.seasonal_naive import SeasonalNaive

METHODS: dict[str, type[VectorForecaster]] = {
    SeasonalNaive.method: SeasonalNaive,
    HoltWinters.method: HoltWinters,
    Ensemble.method: Ensemble,
}


def build_forecaster(
    config: ForecastSettings | ForecastConfig | None = None, method: str | None = None
) -> VectorForecaster:
    """A new forecaster for `config` (method from `method`, else from the config)."""
    if config is None:
        cfg = ForecastSettings()
    elif isinstance(config, ForecastConfig):
        cfg = ForecastSettings.of(config)
    else:
        cfg = config
    name = method or cfg.method
    try:
        cls = METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown forecast method {name!r}; expected one of {sorted(METHODS)}"
        ) from None
    return cls(cfg)


def load_forecaster(state: Mapping[str, Any] | bytes | str) -> VectorForecaster:
    """Restore a forecaster of whichever method wrote `state`."""
    if isinstance(state, bytes | str):
        state = json.loads(state)
    assert isinstance(state, Mapping)
    name = state.get("method")
    if name not in METHODS:
        raise ValueError(f"unknown forecast method {name!r} in state")
    return METHODS[str(name)].from_state(state)


__all__ = [
    "METHODS",
    "Ensemble",
    "ForecastConfig",
    "ForecastSettings",
    "Forecaster",
    "HoltWinters",
    "LeadPeakQuantile",
    "LeadWindow",
    "QuantileForecast",
    "SeasonalNaive",
    "SeriesKey",
    "VectorForecaster",
    "build_forecaster",
    "demand_key",
    "load_forecaster",
]
