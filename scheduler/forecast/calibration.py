"""Conformal calibration of forecast quantiles from each series' own recent errors.

For every series and every horizon on a small grid (1, 2, 3, 5, … steps up to
the planning horizon) the calibrator keeps the point forecasts it was given, and
when the target step arrives it scores the error ``e = y - ŷ``:

- two one-sided scales: ``u``, the exponentially weighted mean of ``max(e, 0)``
  (under-forecasts), and ``d``, that of ``max(-e, 0)`` (over-forecasts) (memory
  ``calibration_memory`` errors, bias-corrected while few errors are known).
  Quantiles above the median are in units of ``u``, below it of ``d``, the
  median of ``u + d`` (the mean ``|e|``). A fall in demand is an over-forecast:
  it can only narrow the band above the forecast, never widen it, so a drop in
  load cannot raise the quantile the planner provisions for;
- per quantile level ``τ`` a threshold ``q`` on the scaled score ``s = e / unit``,
  moved by online quantile tracking (adaptive conformal inference, Gibbs &
  Candès 2021; Angelopoulos et al. 2023): ``q += η (1[s > q] - (1 - τ))``.
  Whatever the error distribution, the long-run share of steps with ``s > q``
  converges to ``1 - τ``: a stated 0.95 quantile is exceeded about 5% of the time.

The offset added to the point forecast at horizon ``h`` is ``q·unit`` interpolated
over the grid; a forecast made ``g`` steps after the last good observation uses
horizon ``h + g`` (wider), and beyond the grid the offset grows like ``√h``.
Before any error is known the scales fall back to ``√h`` times the mean one-step
rise (for ``u``) or fall (for ``d``) of the series. While fewer than ``1/(1-τ)``
errors are known at a horizon (fewer than 20 for the 0.95 quantile), the offset
is pulled towards a bound: the largest error of its side seen there (or, before
any, the largest one-step move of the series) — an empirical quantile of a
small sample never exceeds its maximum, while a scale times a tail multiplier
from two or three errors can be many times the move that caused them. The pull
fades linearly as errors accrue. The median's offset corrects the point
forecast's bias and counts ``n / (n + 50)`` of its tracked value after ``n``
errors: the point forecast is its prior. See docs/forecasting.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from scheduler.forecast.codec import decode_array, encode_array

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Tracker step size in units of the scale m; large while a tracker has seen few
# errors (fast warm-up), then settling to ETA_MIN so it still follows drift.
ETA_START = 0.5
ETA_MIN = 0.05
ETA_HALF_LIFE = 50.0  # errors after which the step size has roughly halved
# A threshold stays within ±Q_MAX scale units. A series whose scale is ~0 (a long run of
# exact forecasts) sees every error as a miss; unbounded, its threshold kept climbing and,
# once the scale was normal again, the quantile sat hundreds of scales above the forecast.
# A Laplace 0.999 quantile is 6.2 units.
Q_MAX = 30.0
# The median's threshold is a bias correction of the point forecast, trusted in proportion
# to the errors behind it: it counts n / (n + MEDIAN_PRIOR_ERRORS) of its tracked value
# after n errors at a horizon (the model's own point is the prior, worth this many errors).
# The tracker moves the median by ±η/2 units of the mean |error| at every error, so while
# it warms up (η from ETA_START) it is mostly noise: on the Azure LLM hours (12-45 errors)
# it made the point forecast's MASE 1.17-1.21x a 10-minute mean. Set to ETA_HALF_LIFE.
MEDIAN_PRIOR_ERRORS = 50.0


def laplace_quantile(tau: float) -> float:
    """τ-quantile of a Laplace error in units of its mean absolute error."""
    if tau >= 0.5:
        return -math.log(2.0 * (1.0 - tau))
    return math.log(2.0 * tau)


def horizon_grid(horizon_steps: int) -> IntArray:
    """Horizons (steps) at which errors are tracked: dense near 1, sparse further out."""
    pts = {1, 2, 3, horizon_steps}
    pts.update(round(float(x)) for x in np.geomspace(1, max(1, horizon_steps), 10))
    return np.array(sorted(p for p in pts if 1 <= p <= horizon_steps), dtype=np.int64)


def grid_position(grid: IntArray, h: IntArray) -> tuple[IntArray, IntArray, FloatArray]:
    """Where horizons `h` (≥ 1, any shape) fall on `grid` (sorted, from 1): the grid
    indices below and above each, and the linear weight of the one above. A horizon
    beyond the grid takes its last point."""
    hc = np.minimum(h, int(grid[-1]))
    hi = np.searchsorted(grid, hc, side="left")  # first grid point ≥ hc
    hi = np.clip(hi, 0, grid.size - 1)
    lo = np.maximum(hi - 1, 0)
    glo, ghi = grid[lo], grid[hi]
    w = np.where(ghi > glo, (hc - glo) / np.maximum(ghi - glo, 1), 1.0)  # weight of hi
    return lo, hi, np.asarray(w, dtype=np.float64)


class ConformalCalibrator:
    """Per-series, per-horizon conformal quantile offsets (see module doc)."""

    def __init__(
        self, quantiles: Sequence[float], horizon_steps: int, memory: int, capacity: int
    ) -> None:
        """Track errors up to `horizon_steps` ahead for up to `capacity` series."""
        self.taus = np.asarray(quantiles, dtype=np.float64)  # quantile levels
        self.grid = horizon_grid(horizon_steps)  # tracked horizons, steps
        self.rho = 1.0 / memory  # weight of a new error in the scale
        self.ring = int(self.grid[-1]) + 1  # origins kept for scoring
        g, q = self.grid.size, self.taus.size
        self._origin = np.full(self.ring, -1, dtype=np.int64)  # origin step held in each ring slot
        self._prior_q = np.array([laplace_quantile(t) for t in self.taus])
        # Which one-sided scale each quantile's threshold is in units of (see `_units`).
        self._upper = self.taus > 0.5
        self._lower = self.taus < 0.5
        self._tail = np.minimum(self.taus, 1.0 - self.taus)  # share of errors beyond a quantile
        self._median = self.taus == 0.5  # the point forecast's bias correction (see `offsets`)
        self._cap = 0
        self.fc = np.empty((0, self.ring, g))  # point forecasts by origin slot and grid horizon
        self.up = np.empty((0, g))  # EW mean of under-forecasts max(e, 0) (not bias-corrected)
        self.dn = np.empty((0, g))  # EW mean of over-forecasts max(-e, 0) (not bias-corrected)
        self.wsum = np.empty((0, g))  # EW weight mass behind `up`/`dn` (bias correction)
        self.q = np.empty((0, g, q))  # score thresholds per quantile
        self.nscore = np.empty((0, g))  # errors scored so far
        self.dup = np.empty(0)  # EW mean rise max(Δy, 0) of the target (prior of `up`)
        self.ddn = np.empty(0)  # EW mean fall max(-Δy, 0) of the target (prior of `dn`)
        self.dsum = np.empty(0)  # EW weight mass behind `dup`/`ddn`
        self.last = np.empty(0)  # last good target value (for the changes)
        # Largest under-/over-forecast seen per grid horizon, and largest one-step rise
        # and fall of the target, each forgetting by (1 - 1/memory) per observation:
        # the bound on a quantile's offset (see `offsets`).
        self.mxu = np.empty((0, g))
        self.mxd = np.empty((0, g))
        self.mru = np.empty(0)
        self.mrd = np.empty(0)
        self.grow(capacity)

    _FIELDS = (
        "fc", "up", "dn", "wsum", "q", "nscore", "dup", "ddn", "dsum", "last",
        "mxu", "mxd", "mru", "mrd",
    )  # fmt: skip

    def _fill(self, name: str) -> float:
        return math.nan if name in ("fc", "last") else 0.0

    def grow(self, capacity: int) -> None:
        """Make room for `capacity` series."""
        if capacity <= self._cap:
            return
        for name in self._FIELDS:
            old = getattr(self, name)
            new = np.full((capacity, *old.shape[1:]), self._fill(name))
            if name == "q":
                new[:] = self._prior_q
            new[: self._cap] = old
            setattr(self, name, new)
        self._cap = capacity

    # ---- scoring

    def observe(self, t: int, y: FloatArray, n: int) -> None:
        """Score every stored forecast that targeted step `t` against `y` (NaN = missing)."""
        origins = t - self.grid
        slots = origins % self.ring
        live = self._origin[slots] == origins  # (G,) forecasts exist for these horizons
        # Prior scales from one-step rises and falls, updated whatever the forecasts.
        good = np.isfinite(y)
        step = y - self.last[:n]
        ok = good & np.isfinite(step)
        rise, fall = np.maximum(step[ok], 0.0), np.maximum(-step[ok], 0.0)
        self.dup[:n][ok] += self.rho * (rise - self.dup[:n][ok])
        self.ddn[:n][ok] += self.rho * (fall - self.ddn[:n][ok])
        self.dsum[:n][ok] += self.rho * (1.0 - self.dsum[:n][ok])
        keep = 1.0 - self.rho
        self.mru[:n][ok] = np.maximum(rise, keep * self.mru[:n][ok])
        self.mrd[:n][ok] = np.maximum(fall, keep * self.mrd[:n][ok])
        self.last[:n][good] = y[good]
        if not live.any():
            return
        gi = np.nonzero(live)[0]
        pred = self.fc[:n, slots[gi], gi]  # (n, g')
        err = y[:, None] - pred
        valid = np.isfinite(err)
        if not valid.any():
            return
        unit = self._units(n)[:, gi, :]  # (n, g', Q)
        score = np.where(valid[:, :, None], err[:, :, None] / unit, 0.0)
        # Quantile tracking: move each threshold towards the level it should hold.
        q = self.q[:n, gi, :]
        miss = (score > q).astype(np.float64)
        ns = self.nscore[:n, gi]
        eta = np.maximum(ETA_MIN, ETA_START / (1.0 + ns / ETA_HALF_LIFE))
        step_q = eta[:, :, None] * (miss - (1.0 - self.taus))
        self.q[:n, gi, :] = np.where(valid[:, :, None], np.clip(q + step_q, -Q_MAX, Q_MAX), q)
        self.nscore[:n, gi] = ns + valid
        e = np.where(valid, err, 0.0)
        keep = 1.0 - self.rho
        for name, big, part in (
            ("up", "mxu", np.maximum(e, 0.0)),
            ("dn", "mxd", np.maximum(-e, 0.0)),
        ):
            sc = getattr(self, name)[:n, gi]
            getattr(self, name)[:n, gi] = np.where(valid, sc + self.rho * (part - sc), sc)
            mx = getattr(self, big)[:n, gi]
            getattr(self, big)[:n, gi] = np.where(valid, np.maximum(part, keep * mx), mx)
        ws = self.wsum[:n, gi]
        self.wsum[:n, gi] = np.where(valid, ws + self.rho * (1.0 - ws), ws)

    def _one_sided(self, n: int) -> tuple[FloatArray, FloatArray]:
        """Current (rise, fall) scales per (series, grid horizon), with the prior where unknown."""
        trust = np.minimum(1.0, self.nscore[:n] / 10.0)
        root_h = np.sqrt(self.grid)[None, :]
        out = []
        for err_sum, change in ((self.up[:n], self.dup[:n]), (self.dn[:n], self.ddn[:n])):
            with np.errstate(invalid="ignore", divide="ignore"):
                known = err_sum / self.wsum[:n]
                prior = (change / self.dsum[:n])[:, None] * root_h
            prior = np.where(np.isfinite(prior), prior, 0.0)
            # Blend towards the measured scale as errors accumulate (weight ~ errors seen / 10).
            m = np.where(
                self.wsum[:n] > 0, trust * known + (1.0 - trust) * np.maximum(known, prior), prior
            )
            out.append(np.nan_to_num(m))
        return out[0], out[1]

    def _units(self, n: int) -> FloatArray:
        """Scale each threshold is in units of, per (series, grid horizon, quantile).

        Upper quantiles use the rise scale (under-forecasts), lower ones the fall
        scale (over-forecasts), the median both (the mean ``|e|``): a fall in
        demand never widens the band above the forecast, nor a rise the band below.
        """
        up, dn = self._one_sided(n)
        side = np.where(self._upper, up[:, :, None], dn[:, :, None])
        unit = np.where(self._upper | self._lower, side, (up + dn)[:, :, None])
        floor = 1e-9 + 1e-6 * np.abs(np.nan_to_num(self.last[:n]))[:, None, None]
        return np.asarray(np.maximum(unit, floor), dtype=np.float64)

    def record(self, t: int, point: FloatArray, n: int) -> None:
        """Keep the point forecasts made at step `t` for grid horizons (n, G), NaN = none."""
        slot = t % self.ring
        self.fc[:n, slot, :] = point
        self._origin[slot] = t

    def skip(self, first: int, count: int) -> None:
        """Steps `first`..`first+count-1` had no update: no forecasts were made there."""
        for t in range(first, first + min(count, self.ring)):
            self._origin[t % self.ring] = -1

    # ---- offsets

    def offsets(self, h: IntArray, stale: IntArray, n: int) -> FloatArray:
        """Offsets (n, Q, len(h)) to add to point forecasts at horizons `h`.

        `stale[i]` (steps since series i was last observed) is added to every horizon.
        """
        grid_off = self.grid_offsets(n)
        heff = h[None, :] + stale[:, None]  # (n, H)
        gmax = int(self.grid[-1])
        lo, hi, w = grid_position(self.grid, heff)
        rows = np.arange(n)[:, None]
        off = (1.0 - w)[:, :, None] * grid_off[rows, lo] + w[:, :, None] * grid_off[rows, hi]
        beyond = np.sqrt(np.maximum(heff, gmax) / gmax)  # ≥ 1, widening past the grid
        off *= beyond[:, :, None]
        return np.transpose(off, (0, 2, 1))

    def grid_offsets(self, n: int) -> FloatArray:
        """Offsets (n, G, Q) at the grid horizons, for a forecast from a fresh observation."""
        ns = self.nscore[:n, :, None]
        trust = np.where(self._median[None, None, :], ns / (ns + MEDIAN_PRIOR_ERRORS), 1.0)
        grid_off = trust * self.q[:n] * self._units(n)  # (n, G, Q)
        # While few errors are known (fewer than 1/(1-τ)), pull each offset towards
        # the largest error of its side seen at that horizon (or, before any, the
        # largest one-step move): an empirical quantile never exceeds its sample's
        # maximum, whatever two or three errors make of the scale. The pull fades
        # as errors accrue, so it never binds a calibrated series.
        cap_up = np.maximum(self.mxu[:n], self.mru[:n, None])[:, :, None]
        cap_dn = np.maximum(self.mxd[:n], self.mrd[:n, None])[:, :, None]
        capped = np.clip(grid_off, -cap_dn, cap_up)
        lift = np.minimum(1.0, self.nscore[:n, :, None] * self._tail[None, None, :])
        return np.asarray(capped + lift * (grid_off - capped))

    # ---- state

    def state_dict(self, n: int) -> dict[str, Any]:
        """JSON-able state for the first `n` series."""
        out: dict[str, Any] = {name: encode_array(getattr(self, name)[:n]) for name in self._FIELDS}
        out["origin"] = encode_array(self._origin)
        return out

    def load_state(self, state: Mapping[str, Any], n: int) -> None:
        """Restore what `state_dict` wrote."""
        for name in self._FIELDS:
            getattr(self, name)[:n] = decode_array(state[name])
        self._origin[:] = decode_array(state["origin"])
