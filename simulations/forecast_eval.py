"""`capsched forecast-eval`: replay a demand series through every forecasting method.

Every step of the series is a forecast origin (rolling origin): each method is
updated with the step's rate, then asked for quantile paths over the next
``--horizon-min`` minutes, which are scored against what came next. Scoring
starts after a warm-up (default: a day, or a quarter of the series if shorter)
so every method has had the same history; all series of a file run at once.

Reported per method (docs/forecasting.md defines each):
- ``mase``: mean absolute error of the 0.5 quantile over steps 1..H, divided by
  the series' mean absolute one-step change (Hyndman's MASE scale), averaged
  over series; ``mase_last_step`` is the same at step H only;
- ``pinball``: mean pinball loss per quantile, in the series' rate unit per second;
- ``coverage_0.95``: share of (origin, step) pairs with actual ≤ the 0.95 quantile;
- ``step_ms``: wall time of one update + predict for all series of the file.

Next to the methods, three trivial anchors are scored the same way on their
point forecasts (``ANCHORS``): ``last_value``, ``mean_10min`` (mean of the last
10 minutes) and ``seasonal_naive_1d`` (the value a day earlier, the last value
where that is missing; n/a before a day of history). ``mase_ratio_to_best_anchor``
is a method's MASE over the lowest anchor MASE of the file.

The scheduler's own quantity is scored too (`score_lead_peak`): the planned
``plan_quantile`` of the lead-window peak, the highest rate over
(now + boot, now + boot + tick], from `LeadPeakQuantile.plan` on the default
method's paths exactly as `CapschedPolicy` plans it (`plan_for =
"lead_window_peak"`), next to a calibrated trivial anchor (c × the mean of the last 10
minutes, c the trailing empirical quantile of realised peak / mean): coverage
(planned ≥ true peak) and mean over-provision (planned / true peak, over
windows whose true peak is above zero), and beside it the over-provision in total
(Σ planned / Σ true peak over the same windows: the capacity bought per unit needed).
The mean of ratios counts a window whose true peak is a trace's idle minimum
(0.04 tokens/s in an hour of BurstGPT) as much as a busy one, and a few such windows
decide it; the total weighs each window by its load, as a bill does.
``ratio_planner_share`` is the share of scored windows whose plan came from
`LeadPeakQuantile`'s ratio planner rather than its regression (0 for the anchor).

A series coarser than a minute (rows every 10 minutes, every hour) is scored at
its own step (`at_native_step`): its counts are per row, the horizon is rounded
up to whole steps, and the seasonal knots are whole steps.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from scheduler.forecast import METHODS, ForecastSettings, build_forecaster
from scheduler.forecast.base import pinball
from scheduler.forecast.lead_peak import LeadPeakQuantile, LeadWindow
from simulations.traces import FORMATS, TraceFormatError, TraceSeries, read_series

log = logging.getLogger(__name__)

DEFAULT_WARMUP_MIN = 1440
ANCHORS = ("last_value", "mean_10min", "seasonal_naive_1d")  # trivial point forecasts
ANCHOR_MEAN_MIN = 10  # window of the `mean_10min` anchor, minutes
DAY_MIN = 1440
DEFAULT_BOOT_S = 600.0  # boot-to-ready time of the lead window (planning.default_boot_time_s)
DEFAULT_TICK_S = 300.0  # plan interval of the lead window (scheduler.tick_interval_s)
PEAK_ANCHOR = "c_x_mean_10min"  # the calibrated trivial anchor of the lead-window peak


@dataclass(frozen=True, eq=False)
class MethodScore:
    """Scores of one method (or anchor) on one file."""

    method: str  # forecasting method or anchor name
    mase: np.ndarray  # per series, mean over steps 1..H (NaN where undefined)
    mase_last: np.ndarray  # per series, at step H
    mae: np.ndarray  # per series, mean absolute error of the median, rate unit
    pinball: dict[float, np.ndarray]  # per quantile, per series mean pinball loss (none: anchors)
    coverage: dict[float, np.ndarray]  # per quantile, per series share of actual ≤ quantile
    points: np.ndarray  # per series, scored (origin, step) pairs
    step_ms: float  # mean wall time of update + predict for all series, ms
    anchor: bool = False  # a trivial anchor (point forecast only), not a forecaster


@dataclass(frozen=True, eq=False)
class PeakScore:
    """How a plan for the lead-window peak did, per series."""

    name: str  # planner of the peak (`LeadPeakQuantile` on a method, or the anchor)
    covered: np.ndarray  # per series, windows with planned ≥ true peak
    windows: np.ndarray  # per series, scored windows
    over_sum: np.ndarray  # per series, Σ planned / true peak over windows with true peak > 0
    over_n: np.ndarray  # per series, windows with true peak > 0
    planned_sum: np.ndarray  # per series, Σ planned over windows with true peak > 0
    truth_sum: np.ndarray  # per series, Σ true peak over those windows
    # per series, scored windows planned by `LeadPeakQuantile`'s ratio planner (0: anchor)
    from_ratio: np.ndarray


@dataclass(frozen=True, eq=False)
class Evaluation:
    """Everything `evaluate` measured on one file."""

    methods: dict[str, MethodScore]  # methods and anchors, by name
    peaks: dict[str, PeakScore]  # lead-window peak planners, by name
    quantile: float  # the planned quantile of the lead-window peak
    window: LeadWindow  # the lead window, in steps
    default_method: str  # the method whose median feeds `LeadPeakQuantile`


def _mase_scale(y: np.ndarray) -> np.ndarray:
    """Per series mean |y_t - y_{t-1}| over the whole series (NaN-aware)."""
    d = np.abs(np.diff(y, axis=1))
    with np.errstate(invalid="ignore"):
        scale = (
            np.nanmean(np.where(np.isfinite(d), d, np.nan), axis=1)
            if d.size
            else np.full(len(y), np.nan)
        )
    return np.where(scale > 0, scale, np.nan)


def _ffill(y: np.ndarray) -> np.ndarray:
    """Each series' last finite value at or before every step (NaN before the first)."""
    idx = np.where(np.isfinite(y), np.arange(y.shape[1])[None, :], 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    out = y[np.arange(y.shape[0])[:, None], idx]
    seen = np.maximum.accumulate(np.isfinite(y), axis=1)
    return np.where(seen, out, np.nan)


def _trailing_mean(y: np.ndarray, width: int) -> np.ndarray:
    """Mean of the finite values of (t - width, t] per step; the last such mean when none."""
    ok = np.isfinite(y)
    csum = np.cumsum(np.where(ok, y, 0.0), axis=1)
    ccnt = np.cumsum(ok, axis=1)
    pad = np.zeros((y.shape[0], width))
    s = csum - np.concatenate([pad, csum], axis=1)[:, : y.shape[1]]
    c = ccnt - np.concatenate([pad, ccnt], axis=1)[:, : y.shape[1]]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(c > 0, s / c, np.nan)
    return _ffill(mean)


class _Anchors:
    """Point forecasts of the trivial anchors from the whole series (they look back only)."""

    def __init__(self, y: np.ndarray, step_s: float) -> None:
        self.last = _ffill(y)
        self.mean = _trailing_mean(y, max(1, round(ANCHOR_MEAN_MIN * 60 / step_s)))
        day = DAY_MIN * 60 / step_s
        self.day = int(day) if day == int(day) else 0  # a day in steps (0: not whole)
        self.y = y

    def defined(self, name: str, t: int) -> bool:
        """Whether anchor `name` has a forecast at origin `t` (a day of history for the 1d one)."""
        return name != "seasonal_naive_1d" or (self.day > 0 and t + 1 - self.day >= 0)

    def paths(self, name: str, t: int, H: int) -> np.ndarray:
        """(n, H) point forecasts of anchor `name` made at step `t`."""
        if name == "last_value":
            return np.repeat(self.last[:, t : t + 1], H, axis=1)
        if name == "mean_10min":
            return np.repeat(self.mean[:, t : t + 1], H, axis=1)
        h = np.arange(1, H + 1)
        src = t + h - np.ceil(h / self.day).astype(np.int64) * self.day
        vals = self.y[:, src]  # a day (or whole days) earlier, never after t
        return np.where(np.isfinite(vals), vals, self.last[:, t : t + 1])


def _peak_truth(y: np.ndarray, t: int, window: LeadWindow) -> np.ndarray:
    """True peak of the lead window of origin `t` per series (NaN where nothing observed)."""
    seg = y[:, t + window.boot_steps + 1 : t + window.last_step + 1]
    with np.errstate(all="ignore"):
        return np.where(
            np.isfinite(seg).any(axis=1), np.nanmax(np.where(np.isfinite(seg), seg, -1), axis=1),
            np.nan,
        )  # fmt: skip


def evaluate(
    rates: np.ndarray,
    config: ForecastSettings,
    methods: Sequence[str],
    *,
    start_s: float = 0.0,
    warmup_steps: int | None = None,
    origin_stride: int = 1,
    anchors: Sequence[str] = ANCHORS,
    boot_s: float = DEFAULT_BOOT_S,
    tick_s: float = DEFAULT_TICK_S,
) -> Evaluation:
    """Rolling-origin evaluation of `methods` on `rates` (series × steps, rps; NaN = missing).

    Anchors are scored at the same origins. The lead-window peak (boot `boot_s`, plan
    interval `tick_s`) is planned at ``config.plan_quantile`` by `LeadPeakQuantile` on
    the first method's median and by the calibrated anchor.
    """
    y = np.atleast_2d(np.asarray(rates, dtype=np.float64))
    n, steps = y.shape
    H = config.horizon_steps
    window = LeadWindow.of(boot_s, tick_s, config.step_s)
    H_pred = max(H, window.last_step)
    warm = (
        warmup_steps
        if warmup_steps is not None
        else min(DEFAULT_WARMUP_MIN * 60 // int(config.step_s), steps // 4)
    )
    last_origin = steps - max(H, window.last_step) - 1
    if last_origin < warm:
        raise ValueError(
            f"series of {steps} steps is too short for warm-up {warm} and horizon "
            f"{max(H, window.last_step)} steps"
        )
    scale = _mase_scale(y)
    taus = config.quantiles
    q_plan = config.plan_quantile
    keys = [f"s{i}" for i in range(n)]
    out: dict[str, MethodScore] = {}
    peaks: dict[str, PeakScore] = {}

    def scored(t: int) -> bool:
        return warm <= t <= last_origin and (t - warm) % origin_stride == 0

    def finish(name: str, abs_sum: np.ndarray, cnt: np.ndarray, **extra: Any) -> MethodScore:
        points = cnt.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a series with nothing scored
            mae_h = abs_sum / cnt
            mae = abs_sum.sum(axis=1) / points
            mase = np.nanmean(np.where(cnt > 0, mae_h, np.nan), axis=1) / scale
        return MethodScore(
            method=name, mase=mase, mase_last=mae_h[:, -1] / scale, mae=mae,
            points=points, **extra,
        )  # fmt: skip

    for mi, name in enumerate(methods):
        f = build_forecaster(config, name)
        f.add_series(keys)
        lead = LeadPeakQuantile(q_plan, window, n) if mi == 0 else None
        abs_sum = np.zeros((n, H))
        cnt = np.zeros((n, H))
        pin = np.zeros((len(taus), n))
        cov = np.zeros((len(taus), n))
        pk = _PeakTally(n)
        elapsed = 0.0
        for t in range(steps):
            now = start_s + t * config.step_s
            t0 = time.perf_counter()
            f.update_array(now, y[:, t])
            score = scored(t)
            if score or lead is not None:
                paths = f.predict_array(now, H_pred)
            elapsed += time.perf_counter() - t0
            if lead is not None:
                # What the planner plans (CapschedPolicy): the learnt peak on the
                # window's median and the horizon's per-step quantile peak (a feature of
                # the regression, and its floor until the series is calibrated).
                planned = lead.plan(
                    t,
                    y[:, t],
                    paths[:, taus.index(0.5), :],
                    paths[:, taus.index(q_plan), :].max(axis=1),
                )
                if score:
                    pk.add(planned, _peak_truth(y, t, window), lead.uses_ratio)
            if not score:
                continue
            actual = y[:, t + 1 : t + 1 + H]  # (n, H)
            ok = np.isfinite(actual)
            med = paths[:, taus.index(0.5), :H]
            abs_sum += np.where(ok, np.abs(actual - med), 0.0)
            cnt += ok
            for j, tau in enumerate(taus):
                diff = np.where(ok, actual - paths[:, j, :H], 0.0)
                pin[j] += np.sum(pinball(tau, diff), axis=1)
                cov[j] += np.sum(ok & (actual <= paths[:, j, :H]), axis=1)
        points = cnt.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = finish(
                name, abs_sum, cnt,
                pinball={tau: pin[j] / points for j, tau in enumerate(taus)},
                coverage={tau: cov[j] / points for j, tau in enumerate(taus)},
                step_ms=1000.0 * elapsed / max(1, steps),
            )  # fmt: skip
        if lead is not None:
            peaks[name] = pk.result(f"lead_peak({name})")
        log.info("forecast_eval_method method=%s series=%d steps=%d step_ms=%.3f",
                 name, n, steps, out[name].step_ms)  # fmt: skip
    anchor_fc = _Anchors(y, config.step_s)
    for name in anchors:
        abs_sum = np.zeros((n, H))
        cnt = np.zeros((n, H))
        for t in range(warm, last_origin + 1, origin_stride):
            if not anchor_fc.defined(name, t):
                continue
            actual = y[:, t + 1 : t + 1 + H]
            ok = np.isfinite(actual)
            pred = anchor_fc.paths(name, t, H)
            ok &= np.isfinite(pred)
            abs_sum += np.where(ok, np.abs(actual - pred), 0.0)
            cnt += ok
        out[name] = finish(
            name, abs_sum, cnt, pinball={}, coverage={}, step_ms=math.nan, anchor=True
        )
    peaks[PEAK_ANCHOR] = _peak_anchor(y, anchor_fc.mean, window, q_plan, scored, config.step_s)
    return Evaluation(out, peaks, q_plan, window, methods[0] if methods else "")


class _PeakTally:
    """Running coverage and over-provision of planned lead-window peaks."""

    def __init__(self, n: int) -> None:
        self.covered = np.zeros(n)
        self.windows = np.zeros(n)
        self.over_sum = np.zeros(n)
        self.over_n = np.zeros(n)
        self.planned_sum = np.zeros(n)
        self.truth_sum = np.zeros(n)
        self.from_ratio = np.zeros(n)

    def add(
        self, planned: np.ndarray, truth: np.ndarray, from_ratio: np.ndarray | None = None
    ) -> None:
        ok = np.isfinite(truth) & np.isfinite(planned)
        self.windows += ok
        if from_ratio is not None:
            self.from_ratio += ok & from_ratio
        self.covered += ok & (planned >= truth)
        pos = ok & (truth > 0)
        self.over_sum += np.where(pos, planned / np.where(pos, truth, 1.0), 0.0)
        self.over_n += pos
        self.planned_sum += np.where(pos, planned, 0.0)
        self.truth_sum += np.where(pos, truth, 0.0)

    def result(self, name: str) -> PeakScore:
        return PeakScore(
            name,
            self.covered,
            self.windows,
            self.over_sum,
            self.over_n,
            self.planned_sum,
            self.truth_sum,
            self.from_ratio,
        )


def _peak_anchor(
    y: np.ndarray,
    mean10: np.ndarray,
    window: LeadWindow,
    q: float,
    scored: Callable[[int], bool],
    step_s: float,
) -> PeakScore:
    """c × mean of the last 10 minutes, c the trailing q-quantile of realised peak / mean.

    The trailing sample is the windows of the last day (at least 10 windows) that had
    been realised at the origin and had a mean above zero; none yet: c = 1.
    """
    n = y.shape[0]
    tally = _PeakTally(n)
    steps = y.shape[1]
    day = max(10, round(DAY_MIN * 60 / step_s))
    ratio = np.full((n, steps), np.nan)
    for t in range(steps - window.last_step):
        truth = _peak_truth(y, t, window)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio[:, t] = np.where(mean10[:, t] > 0, truth / mean10[:, t], np.nan)
    for t in range(steps):
        if not scored(t):
            continue
        hi = t - window.last_step + 1  # origins whose window had ended by t
        past = ratio[:, max(0, hi - day) : max(0, hi)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a series with no ratio yet
            c = np.nanquantile(past, q, axis=1) if past.shape[1] else np.full(n, np.nan)
        c = np.where(np.isfinite(c), c, 1.0)
        tally.add(np.nan_to_num(c * mean10[:, t]), _peak_truth(y, t, window))
    return tally.result(PEAK_ANCHOR)


def _mean(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else math.nan


def _pooled(per_series: np.ndarray, points: np.ndarray) -> float:
    ok = np.isfinite(per_series) & (points > 0)
    return float(np.sum(per_series[ok] * points[ok]) / np.sum(points[ok])) if ok.any() else math.nan


def _ratio(a: float, b: float) -> float:
    """a / b, NaN when b is zero or either is undefined."""
    return a / b if math.isfinite(a) and math.isfinite(b) and b != 0 else math.nan


def _best_anchor(scores: dict[str, MethodScore]) -> str | None:
    """The anchor with the lowest mean MASE (None when no anchor has one)."""
    means = {n: _mean(s.mase) for n, s in scores.items() if s.anchor}
    means = {n: m for n, m in means.items() if math.isfinite(m)}
    return min(means, key=lambda n: means[n]) if means else None


def summarize(ev: Evaluation, baseline: str = "seasonal_naive") -> dict[str, Any]:
    """The JSON document of the command: per method and anchor aggregates, ratios, peaks."""
    scores = ev.methods
    methods: dict[str, Any] = {}
    base = scores.get(baseline)
    best = _best_anchor(scores)
    anchors = [n for n, s in scores.items() if s.anchor]
    for name, s in scores.items():
        entry: dict[str, Any] = {
            "mase": _mean(s.mase),
            "mase_last_step": _mean(s.mase_last),
            "pinball": {str(q): _pooled(v, s.points) for q, v in s.pinball.items()},
            "coverage_0.95": _pooled(s.coverage[0.95], s.points)
            if 0.95 in s.coverage
            else math.nan,
            "step_ms": s.step_ms,
            "series": int(np.sum(np.isfinite(s.mase))),
            "anchor": s.anchor,
        }
        if s.anchor:
            methods[name] = entry
            continue
        if base is not None and name != baseline:
            both = np.isfinite(s.mase) & np.isfinite(base.mase)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = s.mase[both] / base.mase[both]
            entry["mase_ratio_to_baseline"] = _ratio(_mean(s.mase[both]), _mean(base.mase[both]))
            entry["mase_ratio_median_series"] = float(np.median(ratio)) if ratio.size else math.nan
            entry["series_mase_15pct_better"] = int(np.sum(ratio <= 0.85))
            if 0.95 in s.coverage:
                c = s.coverage[0.95][both]
                entry["series_coverage_in_0.93_0.97"] = int(np.sum((c >= 0.93) & (c <= 0.97)))
            entry["series_compared"] = int(both.sum())
        if best is not None:
            b = scores[best].mase
            both = np.isfinite(s.mase) & np.isfinite(b)
            entry["best_anchor"] = best
            entry["mase_ratio_to_best_anchor"] = _ratio(_mean(s.mase[both]), _mean(b[both]))
            # Per series, against whichever anchor is best on that series.
            per = np.vstack([scores[a].mase for a in anchors])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a series no anchor scores
                best_per = np.nanmin(per, axis=0)
            ok = np.isfinite(s.mase) & np.isfinite(best_per)
            entry["series_mase_le_0.9_best_anchor"] = int(np.sum(s.mase[ok] <= 0.9 * best_per[ok]))
            entry["series_vs_anchors"] = int(ok.sum())
        methods[name] = entry
    peaks: dict[str, Any] = {}
    for name, p in ev.peaks.items():
        w, o = np.sum(p.windows), np.sum(p.over_n)
        truth = float(np.sum(p.truth_sum))
        peaks[name] = {
            "coverage": float(np.sum(p.covered) / w) if w else math.nan,
            "over_provision": float(np.sum(p.over_sum) / o) if o else math.nan,
            "over_provision_total": float(np.sum(p.planned_sum)) / truth if truth > 0 else math.nan,
            "windows": int(w),
            "windows_with_load": int(o),
            "ratio_planner_share": float(np.sum(p.from_ratio) / w) if w else math.nan,
        }
    anchor = peaks.get(PEAK_ANCHOR, {})
    for name, entry in peaks.items():
        if name != PEAK_ANCHOR:
            for key in ("over_provision", "over_provision_total"):
                entry[f"{key}_ratio_to_anchor"] = _ratio(entry[key], anchor.get(key, math.nan))
    return {
        "methods": methods,
        "anchors": anchors,
        "lead_peak": {
            "quantile": ev.quantile,
            "boot_steps": ev.window.boot_steps,
            "tick_steps": ev.window.tick_steps,
            "planners": peaks,
        },
    }


def _fmt(v: float) -> str:
    return "n/a" if not math.isfinite(v) else (f"{v:.4g}")


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]


def render(doc: dict[str, Any], trace: TraceSeries, horizon_min: int) -> str:
    """Human-readable table of `summarize` output."""
    lines = [
        f"{trace.source}: {trace.n_series} series × {trace.n_steps} steps of "
        f"{trace.step_s / 60:g} min, horizon {horizon_min} min",
    ]
    forecasters = {n: m for n, m in doc["methods"].items() if not m["anchor"]}
    qs = list(next(iter(forecasters.values()))["pinball"]) if forecasters else []
    head = ["method", "MASE", "MASE@H", *[f"pinball{q}" for q in qs], "cov0.95", "step_ms",
            "vs base", "vs best anchor"]  # fmt: skip
    rows = [head]
    for name, m in doc["methods"].items():
        rows.append([
            name + (" (anchor)" if m["anchor"] else ""), _fmt(m["mase"]),
            _fmt(m["mase_last_step"]),
            *[_fmt(m["pinball"].get(q, math.nan)) for q in qs],
            _fmt(m["coverage_0.95"]), _fmt(m["step_ms"]),
            _fmt(m.get("mase_ratio_to_baseline", math.nan)),
            _fmt(m.get("mase_ratio_to_best_anchor", math.nan)),
        ])  # fmt: skip
    lines += _table(rows)
    lp = doc["lead_peak"]
    lines.append(
        f"lead-window peak (steps +{lp['boot_steps'] + 1}..+{lp['boot_steps'] + lp['tick_steps']}"
        f"), planned quantile {lp['quantile']:g}:"
    )
    rows = [["planner", "coverage", "over-provision", "vs anchor", "in total", "vs anchor",
             "windows", "by ratio"]]  # fmt: skip
    for name, p in lp["planners"].items():
        rows.append([name, _fmt(p["coverage"]), _fmt(p["over_provision"]),
                     _fmt(p.get("over_provision_ratio_to_anchor", math.nan)),
                     _fmt(p["over_provision_total"]),
                     _fmt(p.get("over_provision_total_ratio_to_anchor", math.nan)),
                     str(p["windows"]), _fmt(p["ratio_planner_share"])])  # fmt: skip
    lines += ["  " + r for r in _table(rows)]
    return "\n".join(lines)


def at_native_step(trace: TraceSeries) -> TraceSeries:
    """`trace` on the grid its rows are on (a row every 10 minutes: a 10-minute series).

    Readers put every file on a minute grid, where a coarser series is missing
    between its rows: no two neighbouring steps are both known and MASE's scale
    (the mean one-step change) is undefined. The native step is the largest
    that divides the spacing of every step holding a value.
    """
    cols = np.nonzero(np.isfinite(trace.values).any(axis=0))[0]
    if cols.size < 2:
        return trace
    k = int(np.gcd.reduce(np.diff(cols)))
    if k <= 1:
        return trace
    first = int(cols[0])
    return replace(
        trace,
        start_s=trace.start_s + first * trace.step_s,
        step_s=k * trace.step_s,
        values=trace.values[:, first::k].copy(),
    )


def series_rates(trace: TraceSeries) -> np.ndarray:
    """Rates per second on the trace's own step: a count per row is divided by the step."""
    if trace.step_s != 60.0 and trace.unit.endswith("/min"):
        return trace.values / trace.step_s  # the readers' count per row, now one per step
    return trace.rates_per_s()


def settings_for(trace: TraceSeries, horizon_min: int) -> ForecastSettings:
    """Default settings on the trace's step: horizon rounded up to whole steps, and only
    the seasonal periods that are whole steps and at least two of them."""
    step_min = trace.step_s / 60.0
    h_steps = max(1, math.ceil(horizon_min / step_min - 1e-9))
    periods = tuple(
        p for p in ForecastSettings().seasonal_periods_min
        if (p * 60) % trace.step_s == 0 and p * 60 / trace.step_s >= 2
    )  # fmt: skip
    return ForecastSettings(
        horizon_min=round(h_steps * step_min), step_s=trace.step_s, seasonal_periods_min=periods
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `forecast-eval` options to `parser`."""
    parser.add_argument("--series", required=True, help="trace file to replay")
    parser.add_argument("--format", required=True, choices=FORMATS, help="trace format")
    parser.add_argument("--horizon-min", type=int, default=30, help="forecast horizon, minutes")
    parser.add_argument("--json", action="store_true", help="print a JSON document")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods")
    parser.add_argument("--time-column", default=None, help="CSV time column (default: first)")
    parser.add_argument(
        "--count-column", default=None, help="CSV count/value column (default: second)"
    )
    parser.add_argument("--time-unit", default="auto", choices=("auto", "min", "s", "iso"))
    parser.add_argument(
        "--warmup-min",
        type=int,
        default=None,
        help="minutes replayed before scoring starts (default: min(1 day, 1/4 of the series))",
    )
    parser.add_argument("--per-series", action="store_true", help="add per-series scores to --json")
    parser.add_argument("--max-series", type=int, default=None, help="use only the first N series")
    parser.add_argument(
        "--boot-s", type=float, default=DEFAULT_BOOT_S,
        help="boot time before the lead window starts, seconds (default 600)",
    )  # fmt: skip
    parser.add_argument(
        "--tick-s", type=float, default=DEFAULT_TICK_S,
        help="plan interval: length of the lead window, seconds (default 300)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Run the evaluation described by `args`; 0 on success, 2 on a bad input."""
    try:
        trace = read_series(args.series, args.format, time_column=args.time_column,
                            count_column=args.count_column, time_unit=args.time_unit)  # fmt: skip
    except (TraceFormatError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.max_series is not None:
        trace = trace.select(trace.names[: args.max_series])
    trace = at_native_step(trace)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        print(f"error: unknown method {unknown[0]!r}; expected {sorted(METHODS)}", file=sys.stderr)
        return 2
    # The default method first: its median feeds the lead-window peak quantile.
    default = ForecastSettings().method
    methods.sort(key=lambda m: m != default)
    try:
        config = settings_for(trace, args.horizon_min)
        warm = None if args.warmup_min is None else int(args.warmup_min * 60 / trace.step_s)
        ev = evaluate(
            series_rates(trace), config, methods, start_s=trace.start_s, warmup_steps=warm,
            boot_s=args.boot_s, tick_s=args.tick_s,
        )  # fmt: skip
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    doc = summarize(ev)
    scores = ev.methods
    if args.json:
        if args.per_series:
            doc["series"] = {
                name: {
                    m: {
                        "mase": _num(s.mase[i]),
                        "coverage_0.95": _num(s.coverage[0.95][i]) if 0.95 in s.coverage else None,
                    }
                    for m, s in scores.items()
                }
                for i, name in enumerate(trace.names)
            }
        print(json.dumps(_clean(doc), indent=2, allow_nan=False))
    else:
        print(render(doc, trace, config.horizon_min))
    return 0


def _clean(obj: Any) -> Any:
    """Replace non-finite floats by None so the output is strict JSON."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return _num(obj)
    return obj


def _num(v: Any) -> float | None:
    f = float(v)
    return f if math.isfinite(f) else None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for `python -m simulations.forecast_eval`."""
    parser = argparse.ArgumentParser(
        prog="capsched forecast-eval", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
