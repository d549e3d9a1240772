"""A quantile of the lead-window peak, calibrated on realised lead-window peaks.

A plan made at ``now`` is served by nodes that are ready at ``now + boot`` and
is replaced at the next plan tick, so the rate it must cover is the **peak over
the lead window** (now + boot, now + boot + tick]. `QuantileForecast.peak_rps(q)`
is the highest per-step ``q`` quantile over the horizon, not the ``q`` quantile of
that peak (which is higher: the largest of several noisy steps), so a plan on it
is short more often than ``1 - q`` (docs/forecasting.md).

`LeadPeakQuantile` turns any per-series base forecast of the window (here: the
highest median forecast over the window's steps) into the ``q`` quantile of the
window's peak, per series, by split conformal prediction on the realised peaks
of exactly that window:

- score of a window: ``s = (peak - base) / (base + κ)``, with ``κ`` the series'
  mean realised peak, so the band is relative to the base on a busy window and
  to the usual peak on a quiet one (a zero base cannot make it blow up, and a
  score learnt on near-empty windows is not multiplied by a busy base);
- the plan is ``base + Q·(base + κ)`` where ``Q`` is the empirical quantile of
  the last ``memory`` scores of that series at a level moved by adaptive conformal
  inference (Gibbs & Candès 2021): every realised window that the plan made at its
  origin did not cover raises the level, every covered one lowers it a little,
  so the long-run share of uncovered windows converges to ``1 - q`` whatever the
  base forecaster;
- while fewer than ``1 / (1 - q)`` scores are known, ``Q`` is the largest score
  seen (an empirical quantile of a small sample never exceeds its maximum), and
  before any, 0 (the plan is the base);
- as a last safety net a plan is at most the larger of the base and
  ``BOUND_FACTOR`` × the largest rate seen lately (the forecasters' own bound).

Nothing here reads the clock: steps are passed in. `CapschedPolicy` plans each
series' rate with `LeadPeakQuantile.plan` when ``[forecast] plan_for =
"lead_window_peak"`` (opt-in: on the shared replays it reached SLO attainment
0.995 where the horizon peak did not, but cost more at equal SLO elsewhere; see
docs/forecasting.md); `forecast-eval` scores the same call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from scheduler.forecast.base import BOUND_FACTOR

FloatArray = npt.NDArray[np.float64]

KAPPA_FLOOR = 1e-9  # smallest κ, rate units
LEVEL_GAIN = 0.005  # adaptive-conformal step of the quantile level per realised window
PEAK_MEMORY = 1440  # realised windows the series' mean peak (κ) averages over


@dataclass(frozen=True)
class LeadWindow:
    """The steps a plan made at step ``t`` must cover: ``t + boot + 1 .. t + boot + tick``."""

    boot_steps: int  # steps from a plan to the first step its new nodes serve
    tick_steps: int  # steps until the next plan replaces it (window length, ≥ 1)

    @classmethod
    def of(cls, boot_s: float, tick_s: float, step_s: float) -> LeadWindow:
        """The window for a boot time and plan interval, in steps of `step_s`.

        The boot time is rounded to the nearest step, the tick up to whole steps
        (a series coarser than the tick has a one-step window).
        """
        if boot_s < 0 or tick_s <= 0 or step_s <= 0:
            raise ValueError("boot_s must be ≥ 0 and tick_s, step_s > 0")
        return cls(round(boot_s / step_s), max(1, math.ceil(tick_s / step_s - 1e-9)))

    @property
    def last_step(self) -> int:
        """Steps from a plan to the last step of its window."""
        return self.boot_steps + self.tick_steps


def window_base(median: npt.ArrayLike, window: LeadWindow) -> FloatArray:
    """The base forecast of the lead window: the highest median over its steps.

    `median` holds per-step medians on its last axis (index 0 = one step ahead). A
    horizon shorter than the window is read up to its end (at least its last step);
    NaN is read as 0.
    """
    m = np.asarray(median, dtype=np.float64)
    h = m.shape[-1]
    lo = min(window.boot_steps, h - 1)
    hi = max(lo + 1, min(window.last_step, h))
    return np.asarray(np.max(np.nan_to_num(m[..., lo:hi], nan=0.0), axis=-1), dtype=np.float64)


class LeadPeakQuantile:
    """Per-series ``q`` quantile of the lead-window peak (see module doc).

    Call `step` once per step, in order, with the observed rates (NaN = missing)
    and the base forecast of the window made at that step; it returns the plan.
    """

    def __init__(
        self,
        q: float,
        window: LeadWindow,
        n_series: int,
        memory: int = 1440,
        bound_memory_steps: float = 7 * 1440,
    ) -> None:
        """Calibrate the `q` quantile over `window` for `n_series` series on `memory` scores.

        `bound_memory_steps`: the recent maximum behind the safety bound forgets by a
        factor e over this many steps (a week of minutes by default).
        """
        if not 0.0 < q < 1.0:
            raise ValueError("q must be in (0, 1)")
        if memory < 2:
            raise ValueError("memory must be at least 2 scores")
        self.q = q  # quantile level to cover
        self.window = window  # the lead window, in steps
        self.memory = memory  # realised scores kept per series
        n, w = n_series, window.last_step + 1
        self._t: int | None = None  # last step seen
        self.recent = np.full((n, window.tick_steps), np.nan)  # last observed values (ring)
        self.base = np.full((n, w), np.nan)  # base forecast per origin slot
        self.kappa = np.full((n, w), np.nan)  # κ used at that origin
        self.thr = np.full((n, w), np.nan)  # score threshold planned at that origin
        self.scores = np.full((n, memory), np.nan)  # realised scores (ring)
        self.n_scores = np.zeros(n, dtype=np.int64)  # realised scores so far
        self.level = np.full(n, q)  # adaptive quantile level of the scores
        self.recent_max = np.zeros(n)  # forgetting maximum rate seen (safety bound)
        self._max_keep = math.exp(-1.0 / bound_memory_steps)  # its decay per step
        self.mean_peak = np.zeros(n)  # EW mean realised peak (κ)
        self.mean_w = np.zeros(n)  # EW weight mass behind `mean_peak`

    @property
    def n(self) -> int:
        """Number of series."""
        return int(self.level.shape[0])

    def step(self, t: int, y: npt.ArrayLike, base: npt.ArrayLike) -> FloatArray:
        """Observe rates `y` at step `t`, then plan from `base`: the `q` peak of t's window.

        `base` is the base forecast of the window (e.g. the highest median forecast
        over its steps); NaN or negative is read as 0. Returns one planned rate per
        series, finite and ≥ 0.
        """
        yv = np.asarray(y, dtype=np.float64).reshape(-1)
        bv = np.asarray(base, dtype=np.float64).reshape(-1)
        if yv.shape[0] != self.n or bv.shape[0] != self.n:
            raise ValueError(f"expected {self.n} values")
        if self._t is not None and t <= self._t:
            raise ValueError(f"step {t} is not after {self._t}")
        if self._t is not None and t - self._t > 1:  # gap: nothing observed in between
            for s in range(self._t + 1, min(t, self._t + 1 + self.base.shape[1])):
                self._close(s, np.full(self.n, np.nan))
                self.base[:, s % self.base.shape[1]] = np.nan
        good = np.isfinite(yv) & (yv >= 0)
        yv = np.where(good, yv, np.nan)
        self.recent_max *= self._max_keep ** (1 if self._t is None else t - self._t)
        np.fmax(self.recent_max, yv, out=self.recent_max)
        self._close(t, yv)
        self._t = t
        return self._plan(t, np.where(np.isfinite(bv) & (bv > 0), bv, 0.0))

    @property
    def calibrated(self) -> npt.NDArray[np.bool_]:
        """Per series: at least ``1 / (1 - q)`` realised windows scored (out of the
        small-sample regime, where the threshold is the largest score seen)."""
        return np.asarray(self.n_scores >= math.ceil(1.0 / (1.0 - self.q) - 1e-9))

    def plan(
        self, t: int, y: npt.ArrayLike, median: npt.ArrayLike, fallback: npt.ArrayLike
    ) -> FloatArray:
        """The planned rate per series at step `t`: `step` on the window's base
        (`window_base` of the per-step `median` paths, series × steps), and while a series
        is not `calibrated` at least its `fallback` (the per-step quantile peak the
        planner used before: a handful of realised windows is too few to lower it on).
        NaN or negative fallbacks are ignored."""
        planned = self.step(t, y, window_base(median, self.window))
        fb = np.asarray(fallback, dtype=np.float64).reshape(-1)
        fb = np.where(np.isfinite(fb) & (fb > 0), fb, 0.0)
        return np.asarray(np.where(self.calibrated, planned, np.maximum(planned, fb)))

    def _close(self, t: int, yv: FloatArray) -> None:
        """Record `yv` at step `t` and score the window that ends at `t`."""
        self.recent[:, t % self.window.tick_steps] = yv
        origin = t - self.window.last_step
        if origin < 0:
            return
        slot = origin % self.base.shape[1]
        b, kappa, thr = self.base[:, slot], self.kappa[:, slot], self.thr[:, slot]
        with np.errstate(all="ignore"):
            peak = np.nanmax(np.where(np.isfinite(self.recent), self.recent, -np.inf), axis=1)
        ok = np.isfinite(b) & np.isfinite(peak) & (np.sum(np.isfinite(self.recent), axis=1) > 0)
        if not ok.any():
            return
        s = (peak[ok] - b[ok]) / (b[ok] + kappa[ok])
        rows = np.nonzero(ok)[0]
        rho = 1.0 / PEAK_MEMORY
        self.mean_peak[rows] += rho * (peak[ok] - self.mean_peak[rows])
        self.mean_w[rows] += rho * (1.0 - self.mean_w[rows])
        self.scores[rows, self.n_scores[rows] % self.memory] = s
        self.n_scores[rows] += 1
        # Adaptive conformal level: a miss raises it by q·gain, a covered window lowers it
        # by (1 - q)·gain, so it settles where a share 1 - q of windows are missed.
        miss = (s > thr[ok]).astype(np.float64)
        lv = self.level[rows] + LEVEL_GAIN * (miss - (1.0 - self.q))
        self.level[rows] = np.clip(lv, 0.5 * self.q, 1.0)

    def _plan(self, t: int, base: FloatArray) -> FloatArray:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(self.mean_w > 0, self.mean_peak / self.mean_w, 0.0)
        kappa = np.maximum(mean, KAPPA_FLOOR)
        thr = self.threshold()
        slot = t % self.base.shape[1]
        self.base[:, slot], self.kappa[:, slot], self.thr[:, slot] = base, kappa, thr
        plan = base + thr * (base + kappa)
        plan = np.minimum(plan, np.maximum(base, BOUND_FACTOR * self.recent_max))
        return np.asarray(np.maximum(plan, 0.0), dtype=np.float64)

    def threshold(self) -> FloatArray:
        """Current score threshold per series (the plan is base + threshold·(base + κ))."""
        k = np.minimum(self.n_scores, self.memory)
        out = np.zeros(self.n)
        small = (k > 0) & (k < 1.0 / (1.0 - self.q))
        if small.any():
            out[small] = np.nanmax(self.scores[small], axis=1)
        big = k >= 1.0 / (1.0 - self.q)
        if big.any():
            # Finite-sample conformal level ⌈(k + 1)·level⌉ / k, capped at the largest score.
            srt = np.sort(self.scores[big], axis=1)  # NaN last
            kb = k[big]
            rank = np.minimum(np.ceil((kb + 1) * self.level[big]).astype(np.int64), kb) - 1
            out[big] = srt[np.arange(srt.shape[0]), np.maximum(rank, 0)]
        return out
