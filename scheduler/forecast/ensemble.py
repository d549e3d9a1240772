"""The default forecaster: Holt-Winters' calibrated quantiles, and a combined median.

`Ensemble` is `HoltWinters` whose **median** (the point forecast: what MASE scores and
the TUI and logs show) is a weighted mean of three forecasts of each future step, in rps:

- Holt-Winters' own point forecast (level, damped trend, seasonal profiles);
- the **recent median**: the median of the good rates of the last
  `RECENT_MEDIAN_MIN` minutes, held flat over the horizon;
- the **same time yesterday**: the median of the good rates within
  `SEASONAL_WINDOW_MIN` / 2 minutes of the target step a day earlier (left out of
  the mean while a day of history is not kept yet).

Weights: each part's weight is inversely proportional to its recent mean absolute
error in rps (Bates and Granger's combination), scored per series **per horizon** on
the calibrator's grid (1, 2, 3, 5, ... H steps) and interpolated between, equal until
scored at every grid horizon. A recent median is often the better part a step ahead
and yesterday's value at the end of the horizon; one weight averaged over the
horizons gave each the other's horizons too. A part that is plainly worse on a series
(the flat median of a strongly seasonal one) fades, while parts about as good share
the weight and their errors average out.

Every other quantile is Holt-Winters' (its point plus the conformal offsets learnt on
its own errors, `ConformalCalibrator`), so the planned 0.95 quantile, and with it
every plan of the default `horizon_peak` planner, is exactly `holt_winters`'. The
combined median is one of three candidates, scored per series and grid horizon like the
parts: the combined point uncorrected, with its calibrated bias correction (a
`ConformalCalibrator` of the 0.5 level on its errors, quick to learn a real bias), and
with a slow one (a median tracker of its errors that moves `SLOW_BIAS_STEP` of their mean
|error| per error, which little noise moves). The one with the lowest mean |error| at a
horizon is used there (ties: the less corrected), the uncorrected point until all three
are scored at that horizon. (On some series the calibrated correction is mostly noise: it
cost the BurstGPT minutes 1.3% MASE.) The median is kept between its neighbouring
quantiles so the levels never cross.
Why two models: a point forecast closer to the median is not a better plan. Calibrated
on the combined point, the quantiles sat lower on bursty series while the calibration
learnt, and SLO attainment fell on 6 of the 12 one-day replays (docs/forecasting.md,
"ensemble"); the combined point alone has the lower absolute error on every shared
series (the median that minimises it stays at the load between bursts, where a mean
such as Holt-Winters' level is pulled up by each burst). Combining a model with robust
simple forecasts of different kinds is the forecasting literature's most reliable gain
(the M-competitions' combinations); nothing is fitted per trace.

Measured (docs/forecasting.md, "Benchmark", "Per-horizon weights", "Three median
candidates"): MASE 0.65x-0.94x the best trivial anchor on the 7 shared series; 0.89x-0.94x
on the BurstGPT minutes and the Azure LLM hours, where holt_winters is 0.93x-1.00x.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from scheduler.forecast.base import FloatArray, IntArray, SeriesKey
from scheduler.forecast.calibration import ConformalCalibrator, grid_position
from scheduler.forecast.codec import decode_array, encode_array
from scheduler.forecast.config import ForecastConfig, ForecastSettings
from scheduler.forecast.holt_winters import SELECT_MEMORY, WEIGHT_POWER, HoltWinters

RECENT_MEDIAN_MIN = 30  # window of the recent median, minutes
SEASONAL_WINDOW_MIN = 60  # width of the window around the same time yesterday, minutes (was 30)
DAY_S = 86_400
PARTS = 3  # Holt-Winters, recent median, same time yesterday
POINTS = 3  # the combined point: uncorrected, with the calibrated and the slow bias correction
SLOW_BIAS_STEP = 0.01  # the slow correction's step per scored error, in mean |errors|
YEST_RING = 256  # targets whose medians around yesterday are kept (a cache, not state)


class Ensemble(HoltWinters):
    """Mean of Holt-Winters, the recent median and yesterday's median, calibrated."""

    method: ClassVar[str] = "ensemble"

    def __init__(
        self, config: ForecastSettings | ForecastConfig | None = None, *, capacity: int = 16
    ) -> None:
        """Create an empty ensemble forecaster."""
        super().__init__(config, capacity=capacity)
        self.recent_steps = max(1, round(RECENT_MEDIAN_MIN * 60 / self.step_s))
        day = DAY_S / self.step_s
        # A day in steps; 0 when a day is not a whole number of steps (no seasonal part).
        self.day_steps = int(day) if day == int(day) and day >= 2 else 0
        self.half_window = max(0, round(SEASONAL_WINDOW_MIN * 60 / self.step_s) // 2)
        ring = self.recent_steps
        if self.day_steps:
            ring = max(ring, self.day_steps + self.half_window + 1)
        self.ring = ring
        # history[i, t % ring] = the rate of step t in rps (NaN when missing or not yet seen)
        self.history = self._register_array("history", np.nan, (self.ring,), np.float32)
        # The combined point's own bias correction: a median calibrated on its errors, as
        # Holt-Winters' median is on Holt-Winters' (same calibrator, the 0.5 level only).
        self.median_cal = ConformalCalibrator(
            (0.5,), self.horizon_steps, self.config.calibration_memory, self._cap
        )
        # Parts and points are scored at the calibrator's horizons (1, 2, 3, 5, ... H):
        # dense where a recent median and a seasonal value differ most in skill.
        self.grid = self.median_cal.grid
        self.grid_ring = int(self.grid[-1]) + 1
        g = self.grid.size
        # The parts' forecasts from the last origins at the grid horizons
        # (part_fc[i, slot, part, g]), each part's EW mean absolute error per grid
        # horizon in rps, and the EW mass behind it.
        self.part_fc = self._register_array("part_fc", np.nan, (self.grid_ring, PARTS, g))
        self.part_origin = np.full(self.grid_ring, -1, dtype=np.int64)  # origin held per slot
        self.part_err = self._register_array("part_err", 0.0, (PARTS, g))
        self.part_w = self._register_array("part_w", 0.0, (PARTS, g))
        # The same for the combined point uncorrected, with the calibrated bias
        # correction and with the slow one (POINTS): the median is the one that has
        # scored the best at its horizon.
        self.point_fc = self._register_array("point_fc", np.nan, (self.grid_ring, POINTS, g))
        self.point_err = self._register_array("point_err", 0.0, (POINTS, g))
        self.point_w = self._register_array("point_w", 0.0, (POINTS, g))
        # The slow bias correction per grid horizon, rps: a median tracker of the
        # uncorrected point's errors, moved by SLOW_BIAS_STEP × their mean |error| per error.
        self.slow_bias = self._register_array("slow_bias", 0.0, (g,))
        # The recent median at the last step (the update's and the predictions' part).
        self.recent = self._register_array("recent", np.nan)
        # Cache of `_yesterday` per target step (a function of the history only).
        self._yest = np.full((self._cap, YEST_RING), np.nan)
        self._yest_target = np.full(YEST_RING, -1, dtype=np.int64)

    def add_series(self, keys: Iterable[SeriesKey]) -> None:
        super().add_series(keys)
        self.median_cal.grow(self._cap)  # as the base class grows its calibrator

    def _model_step(self, t: int, z: FloatArray, good: npt.NDArray[np.bool_]) -> None:
        n = self.n
        y = np.where(good, self._rps_of(z), np.nan)
        self.median_cal.observe(t, y, n)
        self._score(t, y, n)
        super()._model_step(t, z, good)
        self.history[:n, t % self.ring] = y
        self.recent[:n] = self._recent_median(t)
        parts = self._parts(t, self.grid)  # (PARTS, n, G)
        err = _mean_errors(self.part_err[:n], self.part_w[:n], self.grid, self.grid)
        point = _combine(parts, err)
        point[~good] = np.nan  # as the base class: forecasts from stale data are not scored
        self.median_cal.record(t, point, n)
        corrected = point + self.median_cal.grid_offsets(n)[:, :, 0]
        slow = point + self.slow_bias[:n]
        slot = t % self.grid_ring
        self.part_fc[:n, slot] = np.moveaxis(parts, 0, 1)
        self.point_fc[:n, slot] = np.maximum(np.stack([point, corrected, slow], axis=1), 0.0)
        self.part_origin[slot] = t

    def _score(self, t: int, y: FloatArray, n: int) -> None:
        """Score the parts' and points' forecasts that targeted step `t` (rates `y`, NaN:
        missing) into their EW mean absolute errors per grid horizon."""
        origins = t - self.grid
        slots = origins % self.grid_ring
        live = np.nonzero(self.part_origin[slots] == origins)[0]
        if live.size == 0:
            return
        rho = 1.0 / SELECT_MEMORY
        # The slow correction: the uncorrected point's signed errors (before its mean
        # |error| takes them in), a step of SLOW_BIAS_STEP mean |errors| towards each.
        raw = self.point_fc[:n, slots[live], 0, live]  # (n, len(live))
        e = y[:, None] - raw
        ok = np.isfinite(e)
        with np.errstate(divide="ignore", invalid="ignore"):
            unit = self.point_err[:n, 0, live] / self.point_w[:n, 0, live]
        b = self.slow_bias[:n, live]
        step = SLOW_BIAS_STEP * np.where(np.isfinite(unit), unit, np.abs(e))
        self.slow_bias[:n, live] = np.where(ok, b + step * np.sign(e - b), b)
        for fc, err, mass in (
            (self.part_fc, self.part_err, self.part_w),
            (self.point_fc, self.point_err, self.point_w),
        ):
            pred = np.moveaxis(fc[:n, slots[live], :, live], 0, 2)  # (n, K, len(live))
            e = np.abs(y[:, None, None] - pred)
            ok = np.isfinite(e)  # a forecast was made and its target observed
            e_live, w_live = err[:n][:, :, live], mass[:n][:, :, live]
            err[:n, :, live] = np.where(ok, e_live + rho * (e - e_live), e_live)
            mass[:n, :, live] = np.where(ok, w_live + rho * (1.0 - w_live), w_live)

    def _model_skip(self, first: int, count: int) -> None:
        super()._model_skip(first, count)
        self.median_cal.skip(first, count)
        for t in range(first, first + min(count, self.grid_ring)):
            self.part_origin[t % self.grid_ring] = -1
        n = self.n
        if count >= self.ring:
            self.history[:n] = np.nan
            return
        self.history[:n, (first + np.arange(count)) % self.ring] = np.nan

    def _rps_of(self, z: FloatArray) -> FloatArray:
        """Rates of working-space values `z`, one per series row (as `_from_work`)."""
        return self._from_work(z)

    def _recent_median(self, origin: int) -> FloatArray:
        """(n,) median of the good rates of the last `recent_steps` steps up to `origin`."""
        n = self.n
        cols = (origin - np.arange(self.recent_steps)) % self.ring
        return _nanmedian(self.history[:n, cols].astype(np.float64))

    def _yesterday(self, origin: int, h: IntArray) -> FloatArray:
        """(n, len(h)) median around each target step a day earlier; NaN where none is
        kept (no day of history yet, or no seasonal part at this step size). A target's
        median is final once its window is past, and is then kept (`_yest`) for the next
        origins, whose horizons overlap this one's."""
        n = self.n
        if not self.day_steps:
            return np.full((n, h.size), np.nan)
        if self._yest.shape[0] < n:  # series were added: start the cache afresh
            self._yest = np.full((self._cap, YEST_RING), np.nan)
            self._yest_target[:] = -1
        target = origin + h
        slots = target % YEST_RING
        cached = self._yest_target[slots] == target
        if not cached.all():
            todo = np.nonzero(~cached)[0]
            offsets = np.arange(-self.half_window, self.half_window + 1)
            src = target[todo, None] - self.day_steps + offsets[None, :]  # (todo, w)
            usable = (src <= origin) & (origin - src < self.ring) & (src >= 0)
            vals = self.history[:n][:, src % self.ring].astype(np.float64)  # (n, todo, w)
            vals[:, ~usable] = np.nan
            med = _nanmedian(vals)
            final = src[:, -1] <= origin  # the whole window is past: it never changes
            keep = todo[final]
            self._yest[:n, slots[keep]] = med[:, final]
            self._yest_target[slots[keep]] = target[keep]
            out = np.empty((n, h.size))
            out[:, cached] = self._yest[:n, slots[cached]]
            out[:, todo] = med
            return out
        return np.asarray(self._yest[:n, slots])

    def _parts(self, origin: int, h: IntArray) -> FloatArray:
        """(PARTS, n, len(h)) the three forecasts in rps from the last step `origin`;
        NaN where a part has none."""
        hw = self._rps_of(super()._point(origin, h))  # (n, H)
        recent = np.broadcast_to(self.recent[: self.n, None], hw.shape)
        return np.stack([hw, recent, self._yesterday(origin, h)])

    def predict_array(self, now_s: float, horizon_steps: int) -> FloatArray:
        """Holt-Winters' quantile paths with the median replaced by the combined point
        (bias-corrected where that has scored the better), kept within its neighbouring
        quantiles (see the module doc)."""
        out = super().predict_array(now_s, horizon_steps)
        n = self.n
        if self._tick is None or n == 0:
            return out
        lag = max(0, self.tick_of(now_s) - self._tick)
        h = np.arange(lag + 1, lag + horizon_steps + 1, dtype=np.int64)
        stale = lag + np.maximum(0, self._tick - self.last_good[:n])
        err = _mean_errors(self.part_err[:n], self.part_w[:n], self.grid, h)
        point = _combine(self._parts(self._tick, h), err)
        bias = self.median_cal.offsets(h, stale, n)[:, 0, :]
        lo_g, hi_g, w_g = grid_position(self.grid, h[None, :] + stale[:, None])
        rows = np.arange(n)[:, None]
        slow = (1.0 - w_g) * self.slow_bias[rows, lo_g] + w_g * self.slow_bias[rows, hi_g]
        # The point that has scored the best at this horizon (ties: the less corrected);
        # the uncorrected one until all three are scored there.
        point_err = _mean_errors(self.point_err[:n], self.point_w[:n], self.grid, h)
        scored = np.isfinite(point_err).all(axis=1)
        best = np.argmin(np.where(np.isfinite(point_err), point_err, np.inf), axis=1)
        pick = np.where(scored, best, 0)
        median = np.choose(pick, (point, point + bias, point + slow))
        median = np.nan_to_num(median, nan=0.0)
        k = self.quantiles.index(0.5)
        lo = out[:, k - 1] if k > 0 else np.zeros_like(median)
        hi = out[:, k + 1] if k + 1 < len(self.quantiles) else np.maximum(median, lo)
        seen = (self.last_good[:n] >= 0)[:, None]  # nothing seen: every level stays 0
        out[:, k] = np.where(seen, np.clip(median, lo, hi), out[:, k])
        return out

    def part_weights(self, horizon_steps: int) -> FloatArray:
        """(n, PARTS, horizon_steps) the weights of Holt-Winters, the recent median and
        yesterday's median in the median of the next `predict_array` (diagnostics)."""
        n = self.n
        if self._tick is None or n == 0:
            return np.zeros((n, PARTS, horizon_steps))
        h = np.arange(1, horizon_steps + 1, dtype=np.int64)
        err = _mean_errors(self.part_err[:n], self.part_w[:n], self.grid, h)
        return np.moveaxis(_weights(self._parts(self._tick, h), err), 0, 1)

    def _extra_state(self) -> dict[str, Any]:
        return {
            **super()._extra_state(),
            "part_origin": encode_array(self.part_origin),
            "median_cal": self.median_cal.state_dict(self.n),
        }

    def _load_extra_state(self, extra: Mapping[str, Any]) -> None:
        super()._load_extra_state(extra)
        self.part_origin[:] = decode_array(extra["part_origin"])
        self.median_cal.load_state(extra["median_cal"], self.n)


def _mean_errors(err: FloatArray, mass: FloatArray, grid: IntArray, h: IntArray) -> FloatArray:
    """(n, K, len(h)) mean absolute errors at horizons `h`, linear between the grid
    horizons they were scored at (`err`, `mass`: (n, K, G) EW sums); NaN where a
    forecast is not yet scored at both grid horizons around `h`. (Until December 7,
    second session: NaN at every horizon until scored at every grid horizon, which on
    an hour-long series is after 31 steps: the short horizons' evidence went unused.)"""
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = err / mass
    lo, hi, w = grid_position(grid, h)
    out = (1.0 - w) * mean[:, :, lo] + w * mean[:, :, hi]
    scored = (mass[:, :, lo] > 0) & (mass[:, :, hi] > 0)
    return np.asarray(np.where(scored, out, np.nan))


def _weights(parts: FloatArray, err: FloatArray) -> FloatArray:
    """(PARTS, n, H) combination weights of `parts` (PARTS, n, H; NaN: a part has no
    forecast): ∝ 1 / each part's mean error at that horizon (`err`: (n, PARTS, H), NaN:
    not scored yet) once every present part is scored there, equal before; 0 for a
    part without a forecast."""
    has = np.isfinite(parts)
    e = np.moveaxis(err, 1, 0)  # (PARTS, n, H)
    scored = np.isfinite(e)
    floor = 1e-9 + 1e-6 * np.max(np.where(scored, e, 0.0), axis=0)
    inv = 1.0 / np.maximum(e, floor) ** WEIGHT_POWER  # NaN: not scored
    w = np.where((scored | ~has).all(axis=0), inv, 1.0)
    w = np.where(has, w, 0.0)  # also clears the NaN of a part without a forecast
    total = w.sum(axis=0)
    return np.asarray(w / np.where(total > 0, total, 1.0))


def _combine(parts: FloatArray, err: FloatArray) -> FloatArray:
    """(n, H) the weighted mean of `parts` (see `_weights`); NaN where Holt-Winters
    (part 0) has no forecast."""
    has = np.isfinite(parts)
    mean = (_weights(parts, err) * np.where(has, parts, 0.0)).sum(axis=0)
    return np.asarray(np.where(has[0], mean, np.nan))


def _nanmedian(a: FloatArray) -> FloatArray:
    """Median over the last axis ignoring NaN; NaN where every value is NaN. (A sort:
    NaN sorts last, so the median is read at the finite count's middle; numpy's
    nanmedian is an order of magnitude slower on many short rows.)"""
    s = np.sort(a, axis=-1)
    k = np.isfinite(a).sum(axis=-1)
    lo = np.take_along_axis(s, np.maximum((k - 1) // 2, 0)[..., None], axis=-1)[..., 0]
    hi = np.take_along_axis(s, np.maximum(k // 2, 0)[..., None], axis=-1)[..., 0]
    return np.asarray(np.where(k > 0, 0.5 * (lo + hi), np.nan), dtype=np.float64)


__all__ = ["RECENT_MEDIAN_MIN", "SEASONAL_WINDOW_MIN", "Ensemble"]
