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
error in rps (Bates and Granger's combination), scored per series on the horizons
Holt-Winters scores its own candidates on (1, H/2, H); equal until scored. A part
that is plainly worse on a series (the flat median of a strongly seasonal one)
fades, while parts about as good share the weight and their errors average out.

Every other quantile is Holt-Winters' (its point plus the conformal offsets learnt on
its own errors, `ConformalCalibrator`), so the planned 0.95 quantile, and with it
every plan of the default `horizon_peak` planner, is exactly `holt_winters`'; the
combined median has its own bias correction (a `ConformalCalibrator` of the 0.5 level on
its errors) and is kept between its neighbouring quantiles so the levels never cross.
Why two models: a point forecast closer to the median is not a better plan. Calibrated
on the combined point, the quantiles sat lower on bursty series while the calibration
learnt, and SLO attainment fell on 6 of the 12 one-day replays (docs/forecasting.md,
"ensemble"); the combined point alone has the lower absolute error on every shared
series (the median that minimises it stays at the load between bursts, where a mean
such as Holt-Winters' level is pulled up by each burst). Combining a model with robust
simple forecasts of different kinds is the forecasting literature's most reliable gain
(the M-competitions' combinations); nothing is fitted per trace.

Measured (docs/forecasting.md, "Benchmark"): MASE 0.90x-0.98x the best trivial anchor on
the BurstGPT and Azure LLM series where holt_winters is 0.93x-1.03x.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from scheduler.forecast.base import FloatArray, IntArray, SeriesKey
from scheduler.forecast.calibration import ConformalCalibrator
from scheduler.forecast.codec import decode_array, encode_array
from scheduler.forecast.config import ForecastConfig, ForecastSettings
from scheduler.forecast.holt_winters import SCALE_FLOOR, SELECT_MEMORY, WEIGHT_POWER, HoltWinters

RECENT_MEDIAN_MIN = 30  # window of the recent median, minutes
SEASONAL_WINDOW_MIN = 30  # width of the window around the same time yesterday, minutes
DAY_S = 86_400
PARTS = 3  # Holt-Winters, recent median, same time yesterday
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
        # The parts' forecasts from the last origins at the scored horizons `sel_h`
        # (part_fc[i, slot, part, s]), and each part's EW mean absolute error in rps.
        shape = (self.sel_ring, PARTS, self.sel_h.size)
        self.part_fc = self._register_array("part_fc", np.nan, shape)
        self.part_origin = np.full(self.sel_ring, -1, dtype=np.int64)  # origin held per slot
        self.part_err = self._register_array("part_err", 0.0, (PARTS,))
        self.part_w = self._register_array("part_w", 0.0, (PARTS,))  # EW mass behind part_err
        # Cache of `_yesterday` per target step (a function of the history only).
        self._yest = np.full((self._cap, YEST_RING), np.nan)
        self._yest_target = np.full(YEST_RING, -1, dtype=np.int64)
        # The combined point's own bias correction: a median calibrated on its errors, as
        # Holt-Winters' median is on Holt-Winters' (same calibrator, the 0.5 level only).
        self.median_cal = ConformalCalibrator(
            (0.5,), self.horizon_steps, self.config.calibration_memory, self._cap
        )

    def add_series(self, keys: Iterable[SeriesKey]) -> None:
        super().add_series(keys)
        self.median_cal.grow(self._cap)  # as the base class grows its calibrator

    def _model_step(self, t: int, z: FloatArray, good: npt.NDArray[np.bool_]) -> None:
        n = self.n
        y = np.where(good, self._rps_of(z), np.nan)
        self.median_cal.observe(t, y, n)
        self._score_parts(t, y, n)
        super()._model_step(t, z, good)
        self.history[:n, t % self.ring] = y
        slot = t % self.sel_ring
        self.part_fc[:n, slot] = np.moveaxis(self._parts(t, self.sel_h), 0, 1)
        self.part_origin[slot] = t
        point = self._rps_of(self._combined(t, self.median_cal.grid))
        point[~good] = np.nan  # as the base class: forecasts from stale data are not scored
        self.median_cal.record(t, point, n)

    def _score_parts(self, t: int, y: FloatArray, n: int) -> None:
        """Score the parts' forecasts that targeted step `t` (rates `y`, NaN: missing)."""
        origins = t - self.sel_h
        slots = origins % self.sel_ring
        live = np.nonzero(self.part_origin[slots] == origins)[0]
        if live.size == 0:
            return
        pred = self.part_fc[:n, slots[live], :, live]  # (len(live), n, PARTS)
        err = np.abs(y[None, :, None] - pred)
        ok = np.isfinite(err)
        cnt = ok.sum(axis=0)  # (n, PARTS)
        scored = cnt > 0  # per part: it had a forecast for this step
        if not scored.any():
            return
        mean_err = np.where(ok, err, 0.0).sum(axis=0) / np.maximum(cnt, 1)
        rho = 1.0 / SELECT_MEMORY
        e, w = self.part_err[:n], self.part_w[:n]
        e[scored] += rho * (mean_err[scored] - e[scored])
        w[scored] += rho * (1.0 - w[scored])

    def _part_weights(self, parts: FloatArray) -> FloatArray:
        """(PARTS, n, H) weights: ∝ 1 / each part's mean error once every part with a
        forecast has been scored, equal before; a part without a forecast (NaN) weighs
        nothing."""
        n = self.n
        has = np.isfinite(parts)  # (P, n, H)
        with np.errstate(divide="ignore", invalid="ignore"):
            err = self.part_err[:n] / self.part_w[:n]  # (n, P), NaN where never scored
        floor = 1e-9 + 1e-6 * np.nanmax(np.where(np.isfinite(err), err, 0.0), axis=1)
        inv = 1.0 / np.maximum(err, floor[:, None]) ** WEIGHT_POWER  # NaN: never scored
        # A series whose present parts are not all scored yet weighs them equally.
        known = np.isfinite(inv).T[:, :, None] | ~has  # (P, n, H)
        all_known = known.all(axis=0, keepdims=True)
        w = np.where(all_known, np.nan_to_num(inv.T)[:, :, None], 1.0)
        w = np.where(has, w, 0.0)
        total = w.sum(axis=0, keepdims=True)
        return np.asarray(w / np.where(total > 0, total, 1.0))

    def _model_skip(self, first: int, count: int) -> None:
        super()._model_skip(first, count)
        self.median_cal.skip(first, count)
        for t in range(first, first + min(count, self.sel_ring)):
            self.part_origin[t % self.sel_ring] = -1
        n = self.n
        if count >= self.ring:
            self.history[:n] = np.nan
            return
        self.history[:n, (first + np.arange(count)) % self.ring] = np.nan

    def _rps_of(self, z: FloatArray) -> FloatArray:
        """Rates of working-space values `z`, one per series row (as `_from_work`)."""
        return self._from_work(z)

    def _work_of(self, y: FloatArray) -> FloatArray:
        """Working-space values of rates `y` (n, k), with the current scale and no
        side effect (`_to_work` also learns the scale during warm-up)."""
        if not self.log_transform:
            return y
        c = np.where(self.c[: self.n] > 0, self.c[: self.n], SCALE_FLOOR)
        return np.log1p(np.maximum(y, 0.0) / c[:, None])

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
        """(PARTS, n, len(h)) the three forecasts in rps; NaN where a part has none."""
        hw = self._rps_of(super()._point(origin, h))  # (n, H)
        recent = np.broadcast_to(self._recent_median(origin)[:, None], hw.shape)
        return np.stack([hw, recent, self._yesterday(origin, h)])

    def predict_array(self, now_s: float, horizon_steps: int) -> FloatArray:
        """Holt-Winters' quantile paths with the median replaced by the combined point,
        kept within its neighbouring quantiles (see the module doc)."""
        out = super().predict_array(now_s, horizon_steps)
        n = self.n
        if self._tick is None or n == 0:
            return out
        lag = max(0, self.tick_of(now_s) - self._tick)
        h = np.arange(lag + 1, lag + horizon_steps + 1, dtype=np.int64)
        stale = lag + np.maximum(0, self._tick - self.last_good[:n])
        bias = self.median_cal.offsets(h, stale, n)[:, 0, :]
        median = np.nan_to_num(self._rps_of(self._combined(self._tick, h)) + bias, nan=0.0)
        k = self.quantiles.index(0.5)
        lo = out[:, k - 1] if k > 0 else np.zeros_like(median)
        hi = out[:, k + 1] if k + 1 < len(self.quantiles) else np.maximum(median, lo)
        seen = (self.last_good[:n] >= 0)[:, None]  # nothing seen: every level stays 0
        out[:, k] = np.where(seen, np.clip(median, lo, hi), out[:, k])
        return out

    def _combined(self, origin: int, h: IntArray) -> FloatArray:
        """The weighted mean of the parts for steps origin + h, in working space."""
        parts = self._parts(origin, h)
        hw = parts[0]
        mean = (self._part_weights(parts) * np.nan_to_num(parts)).sum(axis=0)
        mean = np.where(np.isfinite(hw), mean, hw)
        return self._work_of(mean)

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
