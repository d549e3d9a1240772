"""Multi-seasonal Holt-Winters with a bank of smoothing constants, on log-scaled rates.

Per series, in the working space ``z = log(1 + y / c)`` (``c``: a fraction of the
series' own early mean rate, so daily swings are multiplicative and a zero is
finite), the model is

    z(t) ≈ level(t) + trend(t) + Σ_p S_p(t)

- ``S_p``: one seasonal profile per configured period (a day, a week), piecewise
  linear between knots (default 15 min for the day, 105 min for the week). A knot
  starts as the running mean of what it has seen, then forgets over a few
  periods. A profile is used once the series has one full period of history;
  before that the model is level + trend only (the cold-start fallback).
- ``level``/``trend``: a bank of exponentially smoothed levels of the
  deseasonalised series (α from 0.5 to 0.01, with and without a damped trend).
  Every candidate is scored on its own recent forecast errors at a few
  horizons up to the planning horizon and the forecast combines them with
  weights ∝ 1 / error² (online model selection: a smooth series leans on fast
  levels, a noisy one on slow levels), so there is no per-trace tuning. A
  candidate's error is the larger of that long-run mean and the mean of its
  recent one-step errors, so after a level shift (up or down) the candidates
  that still sit on the old level lose their weight within a few steps.

Each update is O(series × (candidates + periods)): nothing is refitted. Quantiles
come from the shared conformal calibrator; see docs/forecasting.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from scheduler.forecast.base import FloatArray, IntArray, VectorForecaster
from scheduler.forecast.codec import decode_array, encode_array
from scheduler.forecast.config import ForecastConfig, ForecastSettings

# Level smoothing constants of the candidate bank (per step).
ALPHAS = (0.5, 0.2, 0.08, 0.03, 0.01)
TREND_BETA = 0.02  # trend smoothing per step (trend candidates only)
TREND_PHI = 0.97  # trend damping per step: a trend fades over ~30 steps
SELECT_MEMORY = 240.0  # scored errors the candidate weights average over
RECENT_MEMORY_HORIZONS = 8.0  # memory of the recent one-step errors, in planning horizons
WEIGHT_POWER = 2.0  # candidate weight ∝ 1 / error ** WEIGHT_POWER
SEASON_MEMORY_PERIODS = 4.0  # a seasonal knot forgets over this many periods
REF_MEMORY_PERIODS = 0.5  # reference level (for learning the profiles) memory, in shortest periods
# c = SCALE_FRACTION × the series' mean rate over its warm-up, which lasts until
# SCALE_WARMUP non-zero rates have been seen, and at least SCALE_POSITIVE_FRACTION × the
# mean of those non-zero rates. A warm-up that ended after 60 observations, zeros or not,
# left a series that starts with an hour of zeros at c = 1e-6: its 1-20 requests/minute
# became jumps of 13 in log space, and the trend and seasonal terms fitted to those jumps
# extrapolated to 2.7e301 rps. A small c relative to the mean keeps a sparse series'
# forecast near its (zero) median, which is what its absolute error wants.
SCALE_FRACTION = 0.5
SCALE_POSITIVE_FRACTION = 0.02
SCALE_WARMUP = 60  # non-zero observations after which c is frozen
SCALE_FLOOR = 1e-6  # smallest c, rps (a series that has only ever been zero)
# A trend candidate's whole future effect, trend·φ/(1-φ), is at most this much in log
# space (a factor of 2): a trend is a slow drift, a sudden change is the level's job, and
# an unbounded trend in log space is exponential growth in rps.
TREND_MAX_EFFECT = math.log(2.0)


class HoltWinters(VectorForecaster):
    """Level + damped trend + several seasonal profiles, with conformal quantiles."""

    method: ClassVar[str] = "holt_winters"

    def __init__(
        self, config: ForecastSettings | ForecastConfig | None = None, *, capacity: int = 16
    ) -> None:
        """Create an empty Holt-Winters forecaster."""
        super().__init__(config, capacity=capacity)
        self.alphas = np.array(ALPHAS * 2)  # candidate level constants
        self.has_trend = np.repeat([0.0, 1.0], len(ALPHAS))  # 1 where the candidate has a trend
        self.trend_max = TREND_MAX_EFFECT * (1.0 - TREND_PHI) / TREND_PHI  # |trend| per step
        k = self.alphas.size
        H = self.horizon_steps
        self.sel_h = np.unique(np.array([1, max(1, H // 2), H], dtype=np.int64))  # scored horizons
        self.sel_ring = int(self.sel_h[-1]) + 1
        self.periods = list(self.config.period_steps)
        self.knots = list(self.config.knot_steps)
        self.n_knots = [p // w for p, w in zip(self.periods, self.knots, strict=True)]
        self.season_gamma = [1.0 / (SEASON_MEMORY_PERIODS * w) for w in self.knots]
        ref_steps = REF_MEMORY_PERIODS * min(self.periods) if self.periods else 60.0
        self.ref_alpha = 1.0 / max(1.0, ref_steps)
        self.c = self._register_array("c", 0.0)  # scale of the log transform, rps
        self.c_sum = self._register_array("c_sum", 0.0)  # sum of warm-up rates (for c)
        self.c_cnt = self._register_array("c_cnt", 0)  # warm-up rates seen (for c)
        self.c_n = self._register_array("c_n", 0)  # warm-up non-zero rates seen (for c)
        self.level = self._register_array("level", np.nan, (k,))  # candidate levels
        self.trend = self._register_array("trend", 0.0, (k,))  # candidate trends per step
        self.ref = self._register_array("ref", np.nan)  # slow level the profiles are learnt against
        self.sel_err = self._register_array("sel_err", 0.0, (k,))  # EW mean |error| per candidate
        self.sel_w = self._register_array("sel_w", 0.0)  # EW weight mass behind sel_err
        # The same over the last planning horizon: a candidate that is wrong now (a
        # level shift it has not followed) loses its weight within a few steps.
        self.recent_rho = 1.0 / max(2.0, RECENT_MEMORY_HORIZONS * H)
        self.rec_err = self._register_array("rec_err", 0.0, (k,))
        self.rec_w = self._register_array("rec_w", 0.0)
        # sel_fc[i, slot, j, s]: candidate j's forecast from the slot's origin, horizon sel_h[s]
        self.sel_fc = self._register_array("sel_fc", np.nan, (self.sel_ring, k, self.sel_h.size))
        self.sel_origin = np.full(self.sel_ring, -1, dtype=np.int64)  # origin held per slot
        for i, nk in enumerate(self.n_knots):
            setattr(self, f"season{i}", self._register_array(f"season{i}", 0.0, (nk,)))
            setattr(self, f"count{i}", self._register_array(f"count{i}", 0.0, (nk,)))

    # ---- transform

    log_transform: ClassVar[bool] = True

    def _to_work(self, y: FloatArray) -> FloatArray:
        if not self.log_transform:
            return y
        n = self.n
        warming = np.isfinite(y) & (self.c_n[:n] < SCALE_WARMUP)
        if warming.any():
            yw = y[warming]
            self.c_sum[:n][warming] += yw
            self.c_cnt[:n][warming] += 1
            self.c_n[:n][warming] += yw > 0
            total = self.c_sum[:n][warming]
            mean = total / self.c_cnt[:n][warming]
            mean_pos = total / np.maximum(1, self.c_n[:n][warming])
            c = np.maximum(SCALE_FRACTION * mean, SCALE_POSITIVE_FRACTION * mean_pos)
            self.c[:n][warming] = np.maximum(c, SCALE_FLOOR)
        c = np.where(self.c[:n] > 0, self.c[:n], SCALE_FLOOR)
        return np.log1p(y / c)

    def _from_work(self, z: FloatArray) -> FloatArray:
        if not self.log_transform:
            return z
        c = np.where(self.c[: self.n] > 0, self.c[: self.n], SCALE_FLOOR)
        shape = (-1,) + (1,) * (z.ndim - 1)
        return np.expm1(np.minimum(z, 700.0)) * c.reshape(shape)

    # ---- seasonality

    def _knot_pos(self, i: int, t: IntArray) -> tuple[IntArray, IntArray, FloatArray]:
        w = self.knots[i]
        phase = t % self.periods[i]
        k0 = phase // w
        f = (phase - k0 * w) / w
        return k0, (k0 + 1) % self.n_knots[i], f

    def _active(self) -> npt.NDArray[np.bool_]:
        """(n, periods): the profile has seen a full period of this series."""
        need = np.array(self.periods, dtype=np.int64)
        return np.asarray(self.n_good[: self.n, None] >= need[None, :])

    def _seasonal(self, t: IntArray, active: npt.NDArray[np.bool_]) -> FloatArray:
        """Σ of active profiles at steps `t`: (n, len(t))."""
        n = self.n
        out = np.zeros((n, t.size))
        for i in range(len(self.periods)):
            if not active[:, i].any():
                continue
            k0, k1, f = self._knot_pos(i, t)
            s = getattr(self, f"season{i}")
            out += active[:, i, None] * ((1.0 - f) * s[:n, k0] + f * s[:n, k1])
        return out

    # ---- model steps

    def _model_step(self, t: int, z: FloatArray, good: npt.NDArray[np.bool_]) -> None:
        n = self.n
        ts = np.array([t], dtype=np.int64)
        active = self._active()
        season_now = self._seasonal(ts, active)[:, 0]
        x = z - season_now  # deseasonalised
        lvl, tr = self.level[:n], self.trend[:n]
        # Score candidates on forecasts they made for this step.
        self._score_candidates(t, z, good, n)
        first = good & np.isnan(self.ref[:n])
        self.ref[:n][first] = x[first]
        lvl[first] = x[first, None]
        g = good & ~first
        if g.any():
            xg = x[g, None]
            prev = lvl[g]
            pred = prev + self.has_trend * TREND_PHI * tr[g]
            new = pred + self.alphas * (xg - pred)
            tr[g] = self.has_trend * np.clip(
                TREND_PHI * tr[g] + TREND_BETA * ((new - prev) - TREND_PHI * tr[g]),
                -self.trend_max, self.trend_max,
            )  # fmt: skip
            lvl[g] = new
            # A young knot (less weight seen than 1/γ) is the weighted running mean of the
            # residuals seen near it (weights: the linear interpolation's), against the
            # slow reference level and the other profiles in use: a convex combination of
            # what was observed, so it stays within their range. A mature knot then moves
            # by a small gradient step (γ·weight) on the interpolated profile's error,
            # which fits the shape between knots without the mean's smoothing. (Knots that
            # took a full gradient step when first seen at weight ~0 doubled from knot to
            # knot: a profile learning a sparse series' first week reached 1e8 in log
            # space, and the forecast 1e298 rps once it came into use.)
            ref = self.ref[:n]
            rest = (z - ref)[g]  # residual before any profile
            season_g = season_now[g]
            act = active[g]
            for i in range(len(self.periods)):
                k0, k1, f = self._knot_pos(i, ts)
                s = getattr(self, f"season{i}")[:n]
                cnt = getattr(self, f"count{i}")[:n]
                a, b, fr = int(k0[0]), int(k1[0]), float(f[0])
                own = (1.0 - fr) * s[g, a] + fr * s[g, b]
                target = rest - (season_g - act[:, i] * own)  # what is left for profile i
                gamma = self.season_gamma[i]
                for k, wgt in ((a, 1.0 - fr), (b, fr)):
                    if wgt <= 0.0:
                        continue
                    cnt[g, k] += wgt
                    young = cnt[g, k] * gamma < 1.0
                    rate = np.where(young, wgt / cnt[g, k], gamma * wgt)
                    s[g, k] += rate * (target - np.where(young, s[g, k], own))
            ref[g] += self.ref_alpha * (x[g] - ref[g])
        self._record_candidates(t, n)

    def _score_candidates(self, t: int, z: FloatArray, good: npt.NDArray[np.bool_], n: int) -> None:
        origins = t - self.sel_h
        slots = origins % self.sel_ring
        live = self.sel_origin[slots] == origins
        if not live.any():
            return
        si = np.nonzero(live)[0]
        pred = self.sel_fc[:n, slots[si], :, si]  # (len(si), n, k)
        err = np.abs(z[None, :, None] - pred)
        ok = np.isfinite(err).all(axis=2) & good[None, :]
        # Average over the scored horizons (only where every candidate has a forecast).
        errsum = np.where(ok[:, :, None], err, 0.0).sum(axis=0)
        cnt = ok.sum(axis=0)
        has = cnt > 0
        if not has.any():
            return
        mean_err = errsum[has] / cnt[has, None]
        e, w = self.sel_err[:n], self.sel_w[:n]
        rho = 1.0 / SELECT_MEMORY
        e[has] += rho * (mean_err - e[has])
        w[has] += rho * (1.0 - w[has])
        # Recent one-step errors: the first evidence that a candidate has lost the level.
        if si[0] == 0:  # sel_h[0] == 1
            one = ok[0]
            e, w = self.rec_err[:n], self.rec_w[:n]
            e[one] += self.recent_rho * (err[0, one] - e[one])
            w[one] += self.recent_rho * (1.0 - w[one])

    def _record_candidates(self, t: int, n: int) -> None:
        fc = self._candidate_points(t, self.sel_h, n)  # (n, k, S)
        slot = t % self.sel_ring
        self.sel_fc[:n, slot] = fc
        self.sel_origin[slot] = t

    def _candidate_points(self, origin: int, h: IntArray, n: int) -> FloatArray:
        """(n, k, len(h)) forecasts of every candidate."""
        damp = TREND_PHI * (1.0 - TREND_PHI ** h.astype(np.float64)) / (1.0 - TREND_PHI)
        season = self._seasonal(origin + h, self._active())
        out = self.level[:n, :, None] + self.trend[:n, :, None] * damp + season[:, None, :]
        return np.asarray(out, dtype=np.float64)

    def _weights(self, n: int) -> FloatArray:
        with np.errstate(divide="ignore", invalid="ignore"):
            # A candidate is judged by the worse of its long-run and recent errors.
            err = np.fmax(  # fmax: a side not scored yet (NaN) does not count
                self.sel_err[:n] / self.sel_w[:n, None], self.rec_err[:n] / self.rec_w[:n, None]
            )
        known = self.sel_w[:n] > 0
        # Until candidates have been scored, all weigh the same.
        inv = np.where(known[:, None], 1.0 / np.maximum(err, 1e-12) ** WEIGHT_POWER, 1.0)
        return np.asarray(inv / inv.sum(axis=1, keepdims=True))

    def _extra_state(self) -> dict[str, Any]:
        return {"sel_origin": encode_array(self.sel_origin)}

    def _load_extra_state(self, extra: Mapping[str, Any]) -> None:
        self.sel_origin[:] = decode_array(extra["sel_origin"])

    def _model_skip(self, first: int, count: int) -> None:
        # Levels are held; trends keep fading; no candidate forecasts were made.
        self.trend[: self.n] *= TREND_PHI ** min(count, 10_000)
        for t in range(first, first + min(count, self.sel_ring)):
            self.sel_origin[t % self.sel_ring] = -1

    def _point(self, origin: int, h: IntArray) -> FloatArray:
        n = self.n
        fc = self._candidate_points(origin, h, n)
        w = self._weights(n)
        return np.asarray(np.einsum("nk,nkh->nh", w, fc))
