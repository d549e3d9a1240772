"""A quantile of the lead-window peak, calibrated on realised lead-window peaks.

A plan made at ``now`` is served by nodes that are ready at ``now + boot`` and
is replaced at the next plan tick, so the rate it must cover is the **peak over
the lead window** (now + boot, now + boot + tick]. `QuantileForecast.peak_rps(q)`
is the highest per-step ``q`` quantile over the horizon, not the ``q`` quantile of
that peak (which is higher: the largest of several noisy steps), so a plan on it
is short more often than ``1 - q`` (docs/forecasting.md).

`LeadPeakQuantile` learns, per series, the ``q`` quantile of the window's peak from
the realised peaks of exactly that window, by online quantile regression:

- the plan is ``σ · (w0 + w1·base/σ + w2·last/σ + w3·horizon/σ)``: ``base`` the highest
  median forecast over the window's steps, ``last`` the peak of the last tick's
  observations, ``horizon`` the highest per-step ``q`` quantile over the forecast
  horizon (the planner's rate before), ``σ`` the series' scale (its mean realised
  peak, at least a tenth of its recent maximum). The weights start at the horizon peak
  (0, 0, 0, 1); slopes stay ≥ 0, all weights within fixed bounds;
- every realised window moves the weights by a pinball-loss gradient step, judged on
  the plan made at the window's origin: a miss raises them by ``q·lr·x``, a covered
  window lowers them by ``(1 - q)·lr·x`` (each weight's step divided by its feature's
  mean square, at least 1; ``lr`` shrinks with the series' recent plan error, down to a
  twentieth, so a steady series settles on its level). The intercept's feature is 1,
  so it stays bounded only if a share ``1 - q`` of windows is missed: the plans'
  long-run coverage is ``q`` whatever the base forecaster;
- a band is not a multiple of the base: a base that runs ahead of the load loses weight
  to the other features instead of widening the plan (the conformal score it replaces,
  ``(peak - base) / (base + κ)``, multiplied its band by the base, and its adaptive level
  saturated at the largest score on bursty series: 3.4x the realised peak at 0.986
  coverage for a 0.95 target on BurstGPT);
- as a last safety net a plan is at most the larger of the base and
  ``BOUND_FACTOR`` × the largest rate seen lately (the forecasters' own bound);
- a second planner runs beside the regression: the recent level times the ``q``
  quantile of realised peak / level (`PeakRatioQuantile`, no feedback loop). Per series
  the plan is the one of the two whose own plans had the lower pinball loss over the
  last `SELECT_MEMORY` realised windows (the regression until both are scored on
  ``1 / (1 - q)`` windows). The regression's feedback comes a lead window late, so on a
  steady series it saws up to 1.4 scales above the peak; the ratio plans such a series
  at its peak and keeps to the regression where the ratio moves with the load.

Nothing here reads the clock: steps are passed in. `CapschedPolicy` plans each
series' rate with `LeadPeakQuantile.plan` when ``[forecast] plan_for =
"lead_window_peak"`` (opt-in; the measurements are in docs/forecasting.md);
`forecast-eval` scores the same call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from scheduler.forecast.base import BOUND_FACTOR, pinball
from scheduler.forecast.peak_ratio import LEVEL_TICKS, PeakRatioQuantile

FloatArray = npt.NDArray[np.float64]

SCALE_FLOOR = 1e-9  # smallest scale of a series, rate units
SCALE_RANGE = 10.0  # a series' scale is at least its recent maximum / this
LEARNING_RATE = 0.1  # regression step per realised window, in scales (docs/forecasting.md)
ERR_RHO = 1.0 / 500  # forgetting of the mean plan error (slow: see `_close`)
ERR_MIN = 0.05  # smallest step, as a share of the full step
PEAK_MEMORY = 1440  # realised windows the series' mean peak (the scale) averages over
# Features of the regression, in units of the series' scale: 1 (intercept), the base
# forecast, the peak of the last tick's observations, the horizon's quantile peak.
N_FEATURES = 4
SELECT_MEMORY = 200  # realised windows the two planners' pinball losses average over
INITIAL_WEIGHTS = np.array([0.0, 0.0, 0.0, 1.0])  # start at the horizon peak
WEIGHT_MIN = np.array([-1.0, 0.0, 0.0, 0.0])  # slopes ≥ 0; an intercept ≥ -1 scale
WEIGHT_MAX = np.array([10.0, 10.0, 10.0, 10.0])  # bounded: a plan stays finite


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

    Call `step` (or `plan`) once per step, in order, with the observed rates (NaN =
    missing) and the forecasts made at that step; it returns the plan.
    """

    def __init__(
        self,
        q: float,
        window: LeadWindow,
        n_series: int,
        learning_rate: float = LEARNING_RATE,
        bound_memory_steps: float = 7 * 1440,
    ) -> None:
        """Learn the `q` quantile over `window` for `n_series` series.

        `learning_rate`: step of the online quantile regression, in units of the series'
        scale per realised window. `bound_memory_steps`: the recent maximum behind the
        safety bound forgets by a factor e over this many steps (a week of minutes).
        """
        if not 0.0 < q < 1.0:
            raise ValueError("q must be in (0, 1)")
        if not learning_rate > 0.0:
            raise ValueError("learning_rate must be > 0")
        self.q = q  # quantile level to cover
        self.window = window  # the lead window, in steps
        self.learning_rate = learning_rate  # regression step per realised window
        n, w = n_series, window.last_step + 1
        self._t: int | None = None  # last step seen
        self.recent = np.full((n, window.tick_steps), np.nan)  # last observed values (ring)
        self.features = np.full((n, w, N_FEATURES), np.nan)  # features per origin slot
        self.scale = np.full((n, w), np.nan)  # the series' scale used at that origin
        self.planned = np.full((n, w), np.nan)  # the plan made at that origin, in scales
        self.weights = np.tile(INITIAL_WEIGHTS, (n, 1))  # regression weights per series
        self.n_windows = np.zeros(n, dtype=np.int64)  # realised windows learnt from
        self.recent_max = np.zeros(n)  # forgetting maximum rate seen (safety bound)
        self._max_keep = math.exp(-1.0 / bound_memory_steps)  # its decay per step
        self.mean_peak = np.zeros(n)  # EW mean realised peak (the scale)
        self.mean_sq = np.zeros((n, N_FEATURES))  # EW mean square of each feature
        self.mean_err = np.zeros(n)  # EW mean |realised - planned| peak, in scales
        self.err_w = np.zeros(n)  # EW weight mass behind `mean_err`
        self.mean_w = np.zeros(n)  # EW weight mass behind `mean_peak` and `mean_sq`
        # The second planner, its plans per origin slot (in scales), and per series the
        # EW mean pinball loss of each planner's own plans (regression, ratio).
        self.ratio = PeakRatioQuantile(q, n, LEVEL_TICKS * window.tick_steps, w)
        self.planned_ratio = np.full((n, w), np.nan)
        self.loss = np.zeros((n, 2))
        self.n_compared = np.zeros(n, dtype=np.int64)  # windows both planners were scored on
        self.uses_ratio = np.zeros(n, dtype=np.bool_)  # per series: the last plan was the ratio's

    @property
    def n(self) -> int:
        """Number of series."""
        return int(self.n_windows.shape[0])

    def step(
        self,
        t: int,
        y: npt.ArrayLike,
        base: npt.ArrayLike,
        horizon_peak: npt.ArrayLike | None = None,
    ) -> FloatArray:
        """Observe rates `y` at step `t`, then plan the `q` peak of t's window.

        `base` is the base forecast of the window (the highest median forecast over its
        steps), `horizon_peak` the highest per-step `q` quantile over the forecast
        horizon (the plan before calibration; `base` where not given). NaN or negative
        inputs are read as 0. Returns one planned rate per series, finite and ≥ 0.
        """
        yv = np.asarray(y, dtype=np.float64).reshape(-1)
        bv = _clean(base, self.n)
        hv = bv if horizon_peak is None else _clean(horizon_peak, self.n)
        if yv.shape[0] != self.n:
            raise ValueError(f"expected {self.n} values")
        if self._t is not None and t <= self._t:
            raise ValueError(f"step {t} is not after {self._t}")
        if self._t is not None and t - self._t > 1:  # gap: nothing observed in between
            slots = self.features.shape[1]
            for s in range(self._t + 1, min(t, self._t + 1 + slots)):
                self.ratio.observe(s, np.full(self.n, np.nan))
                self._close(s, np.full(self.n, np.nan))
                self.features[:, s % slots] = np.nan  # no plan was made at s
                self.scale[:, s % slots] = np.nan
                self.planned[:, s % slots] = np.nan
                self.planned_ratio[:, s % slots] = np.nan
        good = np.isfinite(yv) & (yv >= 0)
        yv = np.where(good, yv, np.nan)
        self.recent_max *= self._max_keep ** (1 if self._t is None else t - self._t)
        np.fmax(self.recent_max, yv, out=self.recent_max)
        self.ratio.observe(t, yv)
        self._close(t, yv)
        self._t = t
        return self._plan(t, bv, hv)

    @property
    def calibrated(self) -> npt.NDArray[np.bool_]:
        """Per series: at least ``1 / (1 - q)`` realised windows learnt from (before, a
        handful of windows is too few to lower the plan on)."""
        return np.asarray(self.n_windows >= math.ceil(1.0 / (1.0 - self.q) - 1e-9))

    def plan(
        self, t: int, y: npt.ArrayLike, median: npt.ArrayLike, horizon_peak: npt.ArrayLike
    ) -> FloatArray:
        """The planned rate per series at step `t`: `step` on the window's base
        (`window_base` of the per-step `median` paths, series × steps) and `horizon_peak`
        (the highest per-step `q` quantile over the horizon, the planner's rate before),
        and while a series is not `calibrated` at least its `horizon_peak`."""
        hp = _clean(horizon_peak, self.n)
        planned = self.step(t, y, window_base(median, self.window), hp)
        return np.asarray(np.where(self.calibrated, planned, np.maximum(planned, hp)))

    def _close(self, t: int, yv: FloatArray) -> None:
        """Record `yv` at step `t` and learn from the window that ends at `t`."""
        self.recent[:, t % self.window.tick_steps] = yv
        origin = t - self.window.last_step
        if origin < 0:
            return
        slot = origin % self.features.shape[1]
        x, scale = self.features[:, slot], self.scale[:, slot]
        seen = np.isfinite(self.recent)
        peak = np.max(np.where(seen, self.recent, -np.inf), axis=1)
        made = np.isfinite(scale) & np.isfinite(self.planned[:, slot])
        self._compare(slot, np.where(made & seen.any(axis=1), peak, np.nan))
        ok = made & np.isfinite(x).all(axis=1) & seen.any(axis=1)
        if not ok.any():
            return
        rows = np.nonzero(ok)[0]
        x, target = x[ok], peak[ok] / scale[ok]
        rho = 1.0 / PEAK_MEMORY
        self.mean_peak[rows] += rho * (peak[ok] - self.mean_peak[rows])
        self.mean_sq[rows] += rho * (x * x - self.mean_sq[rows])
        self.mean_w[rows] += rho * (1.0 - self.mean_w[rows])
        # Pinball-loss gradient step, each weight's step divided by the (bias-corrected)
        # mean square of its feature, at least 1. The intercept's feature is 1, so its
        # step is exactly +q·lr on a missed window and -(1 - q)·lr on a covered one: the
        # intercept stays bounded only if a share 1 - q of windows is missed, whatever the
        # other features do (the long-run coverage guarantee of online quantile tracking).
        # Judged on the plan made at the origin, not on today's weights: with a window
        # closing `last_step` steps later, a run of misses would otherwise count as
        # covered once the weights had moved, and the plans fell short more than 1 - q.
        pred = self.planned[rows, slot]
        miss = (target > pred).astype(np.float64)
        # A covered window whose plan was already ≤ 0 teaches nothing: without this a
        # long quiet stretch would push the intercept to its floor for no reason.
        learn = (miss > 0) | (pred > 0)
        grad = np.where(learn, miss - (1.0 - self.q), 0.0)[:, None] * x
        norm = np.maximum(1.0, self.mean_sq[rows] / self.mean_w[rows, None])
        # Steps shrink with the series' mean plan error (down to ERR_MIN of a full step): a
        # steady series settles near its level (full steps kept it about lr scales above);
        # one whose plans miss by a scale or more moves at the full step. The mean forgets
        # slowly: one following the last few dozen errors made the steps after a burst
        # larger than those before it, and the plans covered BurstGPT's minute windows
        # 0.934 of the time for a 0.95 target.
        err = np.abs(target - pred)
        self.mean_err[rows] += ERR_RHO * (err - self.mean_err[rows])
        self.err_w[rows] += ERR_RHO * (1.0 - self.err_w[rows])
        size = self.learning_rate * np.clip(self.mean_err[rows] / self.err_w[rows], ERR_MIN, 1.0)
        w = self.weights[rows] + size[:, None] * grad / norm
        self.weights[rows] = np.clip(w, WEIGHT_MIN, WEIGHT_MAX)
        self.n_windows[rows] += 1

    def _plan(self, t: int, base: FloatArray, horizon_peak: FloatArray) -> FloatArray:
        scale = self.series_scale()
        seen = np.isfinite(self.recent)
        last = np.where(seen.any(axis=1), np.max(np.where(seen, self.recent, 0.0), axis=1), 0.0)
        x = np.stack([np.ones(self.n), base / scale, last / scale, horizon_peak / scale], axis=1)
        slot = t % self.features.shape[1]
        bound = np.maximum(base, BOUND_FACTOR * self.recent_max)  # the safety net, for both
        plan = scale * np.sum(self.weights * x, axis=1)
        plan = np.maximum(np.minimum(plan, bound), 0.0)
        self.features[:, slot], self.scale[:, slot] = x, scale
        self.planned[:, slot] = plan / scale
        ratio = self.ratio.plan(slot)
        ratio = np.maximum(np.minimum(ratio, bound), 0.0)
        self.planned_ratio[:, slot] = ratio / scale  # NaN where it has no plan
        scored = self.n_compared >= math.ceil(1.0 / (1.0 - self.q) - 1e-9)
        self.uses_ratio = scored & np.isfinite(ratio) & (self.loss[:, 1] < self.loss[:, 0])
        return np.asarray(np.where(self.uses_ratio, ratio, plan), dtype=np.float64)

    def _compare(self, slot: int, peak: FloatArray) -> None:
        """Score both planners' plans for the window realised with `peak` (NaN where no
        plan was made or nothing observed), `slot` its origin's slot; the ratio planner
        learns the window's ratio."""
        self.ratio.learn(slot, peak)
        planned = self.planned[:, slot], self.planned_ratio[:, slot]
        ok = np.isfinite(peak) & np.isfinite(planned[0]) & np.isfinite(planned[1])
        rows = np.nonzero(ok)[0]
        if not rows.size:
            return
        target = peak[rows] / self.scale[rows, slot]
        for j, p in enumerate(planned):
            loss = pinball(self.q, target - p[rows])
            self.loss[rows, j] += (loss - self.loss[rows, j]) / SELECT_MEMORY
        self.n_compared[rows] += 1

    def series_scale(self) -> FloatArray:
        """Per series, the unit of the regression: the mean realised peak (bias-corrected
        while few are known), at least `1 / SCALE_RANGE` of the largest rate seen lately
        (so features stay within a few dozen units: a series quiet for days that wakes
        up is not measured in units of its quiet mean) and `SCALE_FLOOR`."""
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(self.mean_w > 0, self.mean_peak / self.mean_w, 0.0)
        floor = np.maximum(self.recent_max / SCALE_RANGE, SCALE_FLOOR)
        return np.asarray(np.maximum(mean, floor), dtype=np.float64)


def _clean(values: npt.ArrayLike, n: int) -> FloatArray:
    """`values` as `n` finite rates ≥ 0 (NaN, infinite or negative read as 0)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.shape[0] != n:
        raise ValueError(f"expected {n} values")
    return np.asarray(np.where(np.isfinite(v) & (v > 0), v, 0.0), dtype=np.float64)
