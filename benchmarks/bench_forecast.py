"""Forecast benchmark: accuracy vs seasonal naive and AutoETS, and speed at fleet scale.

Run on demand (not part of the tests):

    .venv/bin/python benchmarks/bench_forecast.py [--data DIR] [--horizon-min 30] [--quick]

1. Accuracy: every shared multi-minute series (BurstGPT first week per minute;
   each Azure Functions sample file, all series at once) is replayed through
   every method with a rolling origin (`simulations.forecast_eval.evaluate`);
   printed per file: MASE, pinball, coverage of the 0.95 quantile, step time,
   and the ratio to seasonal naive in the same run. For files of many series the
   per-series share meeting the targets (MASE ≥ 15% lower, coverage in
   [0.93, 0.97]) is shown for all series and for the dense ones (≥ 50% of
   minutes non-zero), because a 0/1 count series cannot have a 0.95 quantile
   exceeded 5% of the time.
2. Anchor: statsforecast's AutoETS (optional, `pip install statsforecast`),
   refitted on the trailing history at every scored origin (every
   `--ets-stride-min` minutes), against holt_winters at the same origins.
3. Speed: 1,000 series, one `update` + `predict` per tick through the public
   mapping API, median over ticks.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from scheduler.forecast import ForecastSettings, build_forecaster
from simulations.forecast_eval import _mase_scale, evaluate, summarize
from simulations.traces import TraceSeries, read_series

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"
FILES = [
    ("burstgpt_derived_aggregates/burstgpt1_first_week_per_minute_tokens.csv", "burstgpt"),
    ("azure_functions_2019_samples_invitro/sample_500/invocations.csv", "azure-functions"),
    ("azure_functions_2019_samples_invitro/sample_100/invocations.csv", "azure-functions"),
    ("azure_functions_2019_samples_invitro/example/invocations.csv", "azure-functions"),
]
METHODS = ("seasonal_naive", "holt_winters")


def _f(v: float, digits: int = 3) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.{digits}f}"


def accuracy(trace: TraceSeries, cfg: ForecastSettings) -> dict[str, Any]:
    """Evaluate every method on `trace`; print and return the summary."""
    rates = trace.rates_per_s()
    scores = evaluate(rates, cfg, METHODS, start_s=trace.start_s)
    doc = summarize(scores)["methods"]
    name = Path(trace.source).parent.name + "/" + Path(trace.source).name
    print(f"\n## {name}: {trace.n_series} series × {trace.n_steps} min, {trace.unit}")
    print("method          MASE    ratio  pinball0.5  pinball0.95  cov0.95  step_ms  ms/series")
    for m in METHODS:
        d = doc[m]
        print(
            f"{m:<15} {_f(d['mase']):>6}  {_f(d.get('mase_ratio_to_baseline', 1.0), 2):>5}  "
            f"{d['pinball']['0.5']:>10.4g}  {d['pinball']['0.95']:>11.4g}  "
            f"{_f(d['coverage_0.95']):>7}  {d['step_ms']:>7.3f}  "
            f"{d['step_ms'] / trace.n_series:.4f}"
        )
    if trace.n_series > 1:
        hw, sn = scores["holt_winters"], scores["seasonal_naive"]
        ratio = hw.mase / sn.mase
        cov = hw.coverage[0.95]
        dense = np.mean(trace.values > 0, axis=1) >= 0.5
        for label, sel in (("all", np.ones_like(dense)), ("dense", dense)):
            ok = sel & np.isfinite(ratio)
            if not ok.any():
                continue
            pooled = float(np.sum(cov[ok] * hw.points[ok]) / np.sum(hw.points[ok]))
            print(
                f"  {label:<5} series={int(ok.sum()):4d}  "
                f"MASE ratio median={np.median(ratio[ok]):.3f} "
                f"mean-MASE ratio={np.mean(hw.mase[ok]) / np.mean(sn.mase[ok]):.3f}  "
                f"≥15% better: {np.mean(ratio[ok] <= 0.85):.0%}  "
                f"coverage pooled={pooled:.3f}  "
                f"in [0.93,0.97]: {np.mean((cov[ok] >= 0.93) & (cov[ok] <= 0.97)):.0%}"
            )
    return doc


def autoets_anchor(
    trace: TraceSeries, cfg: ForecastSettings, stride_min: int, max_series: int, window: int
) -> None:
    """AutoETS refitted at every `stride_min`-th origin vs holt_winters at the same origins."""
    try:
        from statsforecast.models import AutoETS
    except Exception as exc:  # absent, or broken by a pandas it does not support
        print(f"  AutoETS: statsforecast unavailable ({type(exc).__name__}: {exc}); skipped")
        return
    rates = trace.rates_per_s()[:max_series]
    n, steps = rates.shape
    H = cfg.horizon_steps
    warm = min(1440, steps // 4)
    stride = max(1, int(stride_min * 60 / cfg.step_s))
    ours = evaluate(rates, cfg, ["holt_winters"], start_s=trace.start_s, origin_stride=stride)
    ours_sn = evaluate(rates, cfg, ["seasonal_naive"], start_s=trace.start_s, origin_stride=stride)
    scale = _mase_scale(rates)
    abs_err = np.zeros(n)
    cnt = np.zeros(n)
    cov = np.zeros(n)
    fit_s = 0.0
    fits = 0
    for t in range(warm, steps - H - 1 + 1, stride):
        for i in range(n):
            hist = rates[i, max(0, t + 1 - window) : t + 1]
            hist = hist[np.isfinite(hist)]
            t0 = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = AutoETS(season_length=1).fit(hist)
                    fc = model.predict(h=H, level=[90])
                mean, hi = fc["mean"], fc["hi-90"]
            except Exception:  # constant or too-short history: hold the last value
                mean = np.full(H, hist[-1] if hist.size else 0.0)
                hi = mean
            fit_s += time.perf_counter() - t0
            fits += 1
            actual = rates[i, t + 1 : t + 1 + H]
            ok = np.isfinite(actual)
            abs_err[i] += np.sum(np.abs(actual - np.maximum(mean, 0.0))[ok])
            cov[i] += np.sum((actual <= hi)[ok])
            cnt[i] += ok.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        ets_mase = abs_err / cnt / scale
        ets_cov = float(np.sum(cov) / np.sum(cnt))
    hw = ours["holt_winters"]
    both = np.isfinite(ets_mase) & np.isfinite(hw.mase)
    ets_step_ms = 1000.0 * fit_s / max(1, fits)  # per series per origin
    hw_step_ms = hw.step_ms / n  # per series per step
    ets_mean = float(np.mean(ets_mase[both]))
    ratio = np.mean(hw.mase[both]) / ets_mean if ets_mean > 0 else math.inf
    print(
        f"  AutoETS anchor ({int(both.sum())} series, origin every {stride_min} min, "
        f"window {window} min): MASE AutoETS={np.mean(ets_mase[both]):.3f} "
        f"holt_winters={np.mean(hw.mase[both]):.3f} "
        f"seasonal_naive={np.mean(ours_sn['seasonal_naive'].mase[both]):.3f} "
        f"ratio hw/AutoETS={ratio:.3f}  "
        f"coverage0.95 AutoETS={ets_cov:.3f} hw={_pooled(hw):.3f}  "
        f"step ms/series AutoETS={ets_step_ms:.2f} hw={hw_step_ms:.4f} "
        f"speed-up={ets_step_ms / hw_step_ms:.0f}x"
    )


def _pooled(s: Any) -> float:
    c, p = s.coverage[0.95], s.points
    ok = p > 0
    return float(np.sum(c[ok] * p[ok]) / np.sum(p[ok]))


def fleet_speed(cfg: ForecastSettings, n_series: int = 1000, ticks: int = 300) -> None:
    """Median wall time of update + predict for `n_series` series through the mapping API."""
    rng = np.random.default_rng(0)
    keys = [f"model{i % 20}/region{i // 20}" for i in range(n_series)]
    base = rng.uniform(0.5, 50.0, n_series)
    for method in METHODS:
        f = build_forecaster(cfg, method)
        times = []
        for t in range(ticks):
            y = np.maximum(
                0.0, base * (1.0 + 0.3 * np.sin(2 * np.pi * t / 1440)) + rng.normal(0, 1, n_series)
            )
            y[rng.random(n_series) < 0.01] = np.nan
            obs = dict(zip(keys, y.tolist(), strict=True))
            t0 = time.perf_counter()
            f.update(t * cfg.step_s, obs)
            out = f.predict(t * cfg.step_s)
            times.append(time.perf_counter() - t0)
        assert len(out) == n_series
        ms = 1000.0 * np.median(times[ticks // 3 :])
        p95 = 1000.0 * np.percentile(times[ticks // 3 :], 95)
        state_kb = len(f.state_bytes()) / 1024
        print(
            f"  {method:<15} {n_series} series: update+predict median {ms:.1f} ms, "
            f"p95 {p95:.1f} ms "
            f"per tick (target < 50 ms); state {state_kb:,.0f} KiB"
        )


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared traces folder")
    parser.add_argument("--horizon-min", type=int, default=30)
    parser.add_argument("--ets-stride-min", type=int, default=60, help="AutoETS origin spacing")
    parser.add_argument(
        "--ets-window-min", type=int, default=1440, help="AutoETS trailing fit window"
    )
    parser.add_argument(
        "--ets-max-series", type=int, default=100, help="series per file for AutoETS"
    )
    parser.add_argument("--quick", action="store_true", help="skip AutoETS")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = ForecastSettings(horizon_min=args.horizon_min)
    print(f"# forecast benchmark, horizon {args.horizon_min} min, default ForecastSettings")
    for rel, fmt in FILES:
        path = args.data / rel
        if not path.exists():
            print(f"\n## {rel}: not found, skipped")
            continue
        trace = read_series(path, fmt)
        accuracy(trace, cfg)
        if not args.quick:
            stride = (
                args.ets_stride_min if trace.n_series == 1 else max(30, args.ets_stride_min // 2)
            )
            autoets_anchor(trace, cfg, stride, args.ets_max_series, args.ets_window_min)
    print("\n## speed")
    fleet_speed(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
