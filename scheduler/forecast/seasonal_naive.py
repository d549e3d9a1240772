"""Seasonal naive: tomorrow at 14:05 looks like today (or last week) at 14:05.

The baseline every other method is measured against. The forecast for step
``T`` is the value observed one season earlier, using the longest configured
period for which that value is known (weekly, else daily), and the last good
value when no season is known yet (cold start, gaps). It keeps one season of
history per series (float32), the largest state of any method.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import numpy.typing as npt

from scheduler.forecast.base import FloatArray, IntArray, VectorForecaster
from scheduler.forecast.config import ForecastConfig, ForecastSettings


class SeasonalNaive(VectorForecaster):
    """Seasonal naive forecasts with conformal quantiles."""

    method: ClassVar[str] = "seasonal_naive"

    def __init__(
        self, config: ForecastSettings | ForecastConfig | None = None, *, capacity: int = 16
    ) -> None:
        """Create an empty seasonal naive forecaster."""
        super().__init__(config, capacity=capacity)
        periods = sorted(self.config.period_steps, reverse=True)
        self.periods = [p for p in periods if p >= 1]  # longest first
        self.ring = max([*self.periods, 1])  # history kept, steps
        # history[i, t % ring] = value at step t (NaN when missing or not seen yet)
        self.history = self._register_array("history", np.nan, (self.ring,), np.float32)
        self.last = self._register_array("last", np.nan)  # last good value

    def _model_step(self, t: int, z: FloatArray, good: npt.NDArray[np.bool_]) -> None:
        n = self.n
        self.history[:n, t % self.ring] = z
        self.last[:n][good] = z[good]

    def _model_skip(self, first: int, count: int) -> None:
        n = self.n
        if count >= self.ring:
            self.history[:n] = np.nan
            return
        cols = (first + np.arange(count)) % self.ring
        self.history[:n, cols] = np.nan

    def _point(self, origin: int, h: IntArray) -> FloatArray:
        n = self.n
        out = np.full((n, h.size), np.nan)
        target = origin + h
        for p in self.periods:
            # The most recent step of the same phase that is not in the future.
            k = np.ceil(h / p).astype(np.int64)
            src = target - k * p
            usable = (origin - src) < self.ring  # still in the kept history
            if not usable.any():
                continue
            vals = self.history[:n, src % self.ring].astype(np.float64)
            vals[:, ~usable] = np.nan
            out = np.where(np.isnan(out), vals, out)
        return np.where(np.isnan(out), self.last[:n, None], out)
