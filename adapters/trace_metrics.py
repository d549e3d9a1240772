"""A `MetricsSource` that replays a demand trace in virtual time.

The trace is a matrix of request rates, one row per (model, source region), one
column per step (a minute). `demand(now_s)` answers what a Prometheus
``rate(requests[1m])`` would at `now_s`: the rate of the last complete step. Before
the first step has completed it answers the first step's rate (as if the minute
before the trace looked like its first minute), so a replay can size its first
fleet. A NaN in the trace (a minute the trace does not cover) is passed on as a
missing reading, never as zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from scheduler.ports.metrics import DemandSample


class TraceMetrics:
    """Replays per-step request rates per (model, region)."""

    def __init__(
        self,
        keys: Sequence[tuple[str, str]],
        rps: np.ndarray,
        *,
        start_s: float,
        step_s: float = 60.0,
        peak_window_s: float = 0.0,
    ) -> None:
        values = np.asarray(rps, dtype=np.float64)
        if values.ndim != 2 or values.shape[0] != len(keys):
            raise ValueError(f"rps must have one row per key: {values.shape} for {len(keys)} keys")
        if step_s <= 0:
            raise ValueError("step_s must be positive")
        self.keys = tuple(keys)  # (model, region) of each row
        self.rps = values  # rows per key, columns per step
        self.start_s = start_s  # time of the first step
        self.step_s = step_s  # step length, seconds
        self.peak_window_s = peak_window_s  # report the highest step rate over this window
        self.calls = 0  # number of demand() calls, for tests and counters

    def step_at(self, now_s: float) -> int:
        """Index of the last complete step at `now_s` (0 before the first completes)."""
        i = math.floor((now_s - self.start_s) / self.step_s) - 1
        return min(max(i, 0), int(self.rps.shape[1]) - 1)

    async def demand(self, now_s: float) -> DemandSample:
        """Request rates of the last complete step; NaN where the trace has no value."""
        self.calls += 1
        last = self.step_at(now_s)
        column = self.rps[:, last]
        peak: dict[tuple[str, str], float] = {}
        if self.peak_window_s > 0:
            # What a `max_over_time(rate[1m])` over the tick window would answer.
            first = max(0, last - max(1, round(self.peak_window_s / self.step_s)) + 1)
            window = self.rps[:, first : last + 1]
            with np.errstate(all="ignore"):
                top = np.where(
                    np.isnan(window).all(axis=1),
                    np.nan,
                    np.nanmax(np.where(np.isnan(window), -np.inf, window), axis=1),
                )
            peak = {k: float(v) for k, v in zip(self.keys, top, strict=True)}
        return DemandSample(
            at_s=now_s,
            rps={k: float(v) for k, v in zip(self.keys, column, strict=True)},
            peak_rps=peak,
        )
