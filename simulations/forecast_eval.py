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
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from scheduler.forecast import METHODS, ForecastSettings, build_forecaster
from simulations.traces import FORMATS, TraceFormatError, TraceSeries, read_series

log = logging.getLogger(__name__)

DEFAULT_WARMUP_MIN = 1440


@dataclass(frozen=True, eq=False)
class MethodScore:
    """Scores of one method on one file."""

    method: str  # forecasting method name
    mase: np.ndarray  # per series, mean over steps 1..H (NaN where undefined)
    mase_last: np.ndarray  # per series, at step H
    mae: np.ndarray  # per series, mean absolute error of the median, rate unit
    pinball: dict[float, np.ndarray]  # per quantile, per series mean pinball loss
    coverage: dict[float, np.ndarray]  # per quantile, per series share of actual ≤ quantile
    points: np.ndarray  # per series, scored (origin, step) pairs
    step_ms: float  # mean wall time of update + predict for all series, ms


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


def evaluate(
    rates: np.ndarray,
    config: ForecastSettings,
    methods: Sequence[str],
    *,
    start_s: float = 0.0,
    warmup_steps: int | None = None,
    origin_stride: int = 1,
) -> dict[str, MethodScore]:
    """Rolling-origin evaluation of `methods` on `rates` (series × steps, rps; NaN = missing)."""
    y = np.atleast_2d(np.asarray(rates, dtype=np.float64))
    n, steps = y.shape
    H = config.horizon_steps
    warm = (
        warmup_steps
        if warmup_steps is not None
        else min(DEFAULT_WARMUP_MIN * 60 // int(config.step_s), steps // 4)
    )
    last_origin = steps - H - 1
    if last_origin < warm:
        raise ValueError(f"series of {steps} steps is too short for warm-up {warm} and horizon {H}")
    scale = _mase_scale(y)
    taus = config.quantiles
    keys = [f"s{i}" for i in range(n)]
    out: dict[str, MethodScore] = {}
    for name in methods:
        f = build_forecaster(config, name)
        f.add_series(keys)
        abs_sum = np.zeros((n, H))
        cnt = np.zeros((n, H))
        pin = np.zeros((len(taus), n))
        cov = np.zeros((len(taus), n))
        elapsed = 0.0
        timed = 0
        for t in range(steps):
            now = start_s + t * config.step_s
            t0 = time.perf_counter()
            f.update_array(now, y[:, t])
            score = warm <= t <= last_origin and (t - warm) % origin_stride == 0
            if score:
                paths = f.predict_array(now, H)
            elapsed += time.perf_counter() - t0
            if not score:
                continue
            timed += 1
            actual = y[:, t + 1 : t + 1 + H]  # (n, H)
            ok = np.isfinite(actual)
            med = paths[:, taus.index(0.5), :]
            abs_sum += np.where(ok, np.abs(actual - med), 0.0)
            cnt += ok
            for j, tau in enumerate(taus):
                diff = np.where(ok, actual - paths[:, j, :], 0.0)
                pin[j] += np.sum(np.maximum(tau * diff, (tau - 1.0) * diff), axis=1)
                cov[j] += np.sum(ok & (actual <= paths[:, j, :]), axis=1)
        points = cnt.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mae_h = abs_sum / cnt
            mae = abs_sum.sum(axis=1) / points
            out[name] = MethodScore(
                method=name,
                mase=np.nanmean(mae_h, axis=1) / scale if H else mae / scale,
                mase_last=mae_h[:, -1] / scale,
                mae=mae,
                pinball={tau: pin[j] / points for j, tau in enumerate(taus)},
                coverage={tau: cov[j] / points for j, tau in enumerate(taus)},
                points=points,
                step_ms=1000.0 * elapsed / max(1, steps),
            )
        log.info("forecast_eval_method method=%s series=%d steps=%d step_ms=%.3f",
                 name, n, steps, out[name].step_ms)  # fmt: skip
    return out


def _mean(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else math.nan


def _pooled(per_series: np.ndarray, points: np.ndarray) -> float:
    ok = np.isfinite(per_series) & (points > 0)
    return float(np.sum(per_series[ok] * points[ok]) / np.sum(points[ok])) if ok.any() else math.nan


def summarize(scores: dict[str, MethodScore], baseline: str = "seasonal_naive") -> dict[str, Any]:
    """The JSON document of the command: per method aggregates, plus ratios to `baseline`."""
    methods: dict[str, Any] = {}
    base = scores.get(baseline)
    for name, s in scores.items():
        entry: dict[str, Any] = {
            "mase": _mean(s.mase),
            "mase_last_step": _mean(s.mase_last),
            "pinball": {str(q): _pooled(v, s.points) for q, v in s.pinball.items()},
            "coverage_0.95": _pooled(s.coverage[0.95], s.points)
            if 0.95 in s.coverage
            else math.nan,
            "step_ms": s.step_ms,
            "series": int(s.mase.size),
        }
        if base is not None and name != baseline:
            both = np.isfinite(s.mase) & np.isfinite(base.mase)
            ratio = s.mase[both] / base.mase[both]
            entry["mase_ratio_to_baseline"] = (
                _mean(s.mase[both]) / _mean(base.mase[both]) if both.any() else math.nan
            )
            entry["mase_ratio_median_series"] = float(np.median(ratio)) if ratio.size else math.nan
            entry["series_mase_15pct_better"] = int(np.sum(ratio <= 0.85))
            if 0.95 in s.coverage:
                c = s.coverage[0.95][both]
                entry["series_coverage_in_0.93_0.97"] = int(np.sum((c >= 0.93) & (c <= 0.97)))
            entry["series_compared"] = int(both.sum())
        methods[name] = entry
    return {"methods": methods}


def _fmt(v: float) -> str:
    return "n/a" if not math.isfinite(v) else (f"{v:.4g}")


def render(doc: dict[str, Any], trace: TraceSeries, horizon_min: int) -> str:
    """Human-readable table of `summarize` output."""
    lines = [
        f"{trace.source}: {trace.n_series} series × {trace.n_steps} min ({trace.unit}), "
        f"horizon {horizon_min} min",
    ]
    any_m = next(iter(doc["methods"].values()))
    qs = list(any_m["pinball"])
    head = [
        "method",
        "MASE",
        "MASE@H",
        *[f"pinball{q}" for q in qs],
        "cov0.95",
        "step_ms",
        "vs base",
    ]
    rows = [head]
    for name, m in doc["methods"].items():
        rows.append([
            name, _fmt(m["mase"]), _fmt(m["mase_last_step"]), *[_fmt(m["pinball"][q]) for q in qs],
            _fmt(m["coverage_0.95"]), f"{m['step_ms']:.3f}",
            _fmt(m.get("mase_ratio_to_baseline", math.nan)),
        ])  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    return "\n".join(lines)


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
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        print(f"error: unknown method {unknown[0]!r}; expected {sorted(METHODS)}", file=sys.stderr)
        return 2
    try:
        config = ForecastSettings(horizon_min=args.horizon_min, step_s=trace.step_s)
        warm = None if args.warmup_min is None else int(args.warmup_min * 60 / trace.step_s)
        scores = evaluate(
            trace.rates_per_s(), config, methods, start_s=trace.start_s, warmup_steps=warm
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    doc = summarize(scores)
    if args.json:
        if args.per_series:
            doc["series"] = {
                name: {
                    m: {
                        "mase": _num(s.mase[i]),
                        "coverage_0.95": _num(s.coverage.get(0.95, s.mase)[i]),
                    }
                    for m, s in scores.items()
                }
                for i, name in enumerate(trace.names)
            }
        print(json.dumps(_clean(doc), indent=2, allow_nan=False))
    else:
        print(render(doc, trace, args.horizon_min))
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
