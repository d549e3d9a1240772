"""The lead-window peak as an empirical quantile of its ratio to the recent level.

A second planner of the quantity `LeadPeakQuantile` learns (the ``q`` quantile of the
peak over a plan's lead window), made the way the calibrated trivial anchor of
`forecast-eval` is made and without feedback from its own plans:

- the **level** of a series at a step is the mean of its last `level_steps` good
  observations (two ticks by default: ten minutes at a 5-minute tick);
- when a window is realised, the ratio of its peak to the level at its origin is kept
  (the last `memory` ratios per series; a window whose level was 0 gives no ratio);
- the plan is the level now times the ``q`` quantile of the kept ratios, once at least
  `RATIO_MIN` are kept (before, or without a level: NaN, no plan).

Why: an online quantile regression judged on its own plans, with feedback a lead window
(15 steps) late, steps up once per missed window of a run before the first miss is
known, then creeps down by ``(1 - q)`` steps: on a steady series (a timer that fires
every 5 minutes, common among Azure Functions) its plan saws between the peak and 1.4
scales above it and over-provisions 60 %. An empirical quantile of realised ratios has
no loop and plans such a series at its peak. It is worse where the ratio moves with the
level (bursty series, outages), so `LeadPeakQuantile` uses it per series only while its
recent pinball loss is the lower (docs/forecasting.md, "Two planners of the peak").

Pure numpy; nothing reads the clock. `LeadPeakQuantile` owns one and calls
`observe` every step, `learn` when a window is realised and `plan` after.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

RATIO_MEMORY = 240  # realised windows whose ratios are kept per series
RATIO_MIN = 10  # ratios kept before a plan is made (the anchor's minimum sample)
LEVEL_TICKS = 2  # the level is the mean over this many plan ticks of steps


class PeakRatioQuantile:
    """Per series: level × the ``q`` quantile of realised (window peak / level)."""

    def __init__(
        self, q: float, n_series: int, level_steps: int, origins: int, memory: int = RATIO_MEMORY
    ) -> None:
        """`level_steps`: observations the level averages; `origins`: plans in flight at
        once (the lead window's length in steps plus one: one slot per origin)."""
        if not 0.0 < q < 1.0:
            raise ValueError("q must be in (0, 1)")
        if level_steps < 1 or origins < 1 or memory < RATIO_MIN:
            raise ValueError("level_steps and origins must be ≥ 1, memory ≥ RATIO_MIN")
        self.q = q  # quantile level of the ratio
        self._seen = np.full((n_series, level_steps), np.nan)  # last observations (ring)
        self._level_at = np.full((n_series, origins), np.nan)  # the level at each origin slot
        self._ratios = np.full((n_series, memory), np.nan)  # realised ratios (ring)
        self._next = np.zeros(n_series, dtype=np.int64)  # ring position of the next ratio

    def observe(self, t: int, y: FloatArray) -> None:
        """Record step `t`'s rates (NaN = missing; negatives are read as missing)."""
        self._seen[:, t % self._seen.shape[1]] = np.where(np.isfinite(y) & (y >= 0), y, np.nan)

    def learn(self, slot: int, peak: FloatArray) -> None:
        """Keep the ratio of each realised window's `peak` (NaN: nothing observed) to the
        level at its origin, `slot` the origin's slot."""
        level = self._level_at[:, slot]
        ok = np.isfinite(peak) & np.isfinite(level) & (level > 0)
        rows = np.nonzero(ok)[0]
        if rows.size:
            pos = self._next[rows] % self._ratios.shape[1]
            self._ratios[rows, pos] = peak[rows] / level[rows]
            self._next[rows] += 1

    def plan(self, slot: int) -> FloatArray:
        """The planned peak per series for the origin `slot` (NaN: no plan yet), from the
        level of the observations so far."""
        seen = self._seen
        count = np.isfinite(seen).sum(axis=1)
        total = np.where(np.isfinite(seen), seen, 0.0).sum(axis=1)
        level = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        self._level_at[:, slot] = level
        return np.asarray(level * self.ratio_quantile(), dtype=np.float64)

    def ratio_quantile(self) -> FloatArray:
        """Per series the ``q`` quantile of the kept ratios (linear interpolation, as
        `numpy.quantile`), NaN while fewer than `RATIO_MIN` are kept."""
        kept = np.isfinite(self._ratios).sum(axis=1)
        ordered = np.sort(self._ratios, axis=1)  # NaN sorts last
        pos = self.q * np.maximum(kept - 1, 0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, np.maximum(kept - 1, 0))
        rows = np.arange(ordered.shape[0])
        a, b = ordered[rows, lo], ordered[rows, hi]
        value = a + (pos - lo) * (b - a)
        return np.asarray(np.where(kept >= RATIO_MIN, value, np.nan), dtype=np.float64)
