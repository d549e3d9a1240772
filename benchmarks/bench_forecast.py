"""Forecast benchmark: accuracy vs seasonal naive and AutoETS, and speed at fleet scale.

Run on demand (not part of the tests):

    .venv/bin/python benchmarks/bench_forecast.py [--data DIR] [--horizon-min 30] [--quick]

1. Accuracy: every shared request/load series, each file's series at once, at
   the file's own step (`simulations.forecast_eval.evaluate`, rolling origin):
   BurstGPT's first week per minute, and the same week averaged to 10 minutes
   and to an hour; the Azure Functions samples; the two ~1-hour Azure LLM
   traces. (BurstGPT's 61 daily counts are not scored: a step is at most an
   hour in `ForecastSettings`.) Per
   file one markdown row: MASE of the default method, holt_winters and
   seasonal_naive, and of the trivial anchors
   (`last_value`, `mean_10min`, `seasonal_naive_1d`), the MASE of the future's
   own median held flat (an oracle: the floor of any flat forecast), the
   default method's ratio to the best anchor and how many series are at or
   below 0.9× their best anchor, and for the lead-window peak (steps +11..+15
   at 1 minute) coverage and over-provision of `LeadPeakQuantile` on
   the default method's median against the calibrated c × mean-of-10-minutes
   anchor: the mean of planned / true peak over windows, and in total
   (Σ planned / Σ true peak).
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
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from scheduler.forecast import ForecastSettings, build_forecaster
from simulations.forecast_eval import (
    ANCHORS,
    _mase_scale,
    at_native_step,
    evaluate,
    series_rates,
    settings_for,
    summarize,
)
from simulations.traces import TraceSeries, read_series

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"
BURST_WEEK = "burstgpt_derived_aggregates/burstgpt1_first_week_per_minute_tokens.csv"
FILES = [
    (BURST_WEEK, "burstgpt"),
    ("azure_functions_2019_samples_invitro/sample_500/invocations.csv", "azure-functions"),
    ("azure_functions_2019_samples_invitro/sample_100/invocations.csv", "azure-functions"),
    ("azure_functions_2019_samples_invitro/example/invocations.csv", "azure-functions"),
    ("azure_llm_inference_2023/AzureLLMInferenceTrace_code.csv", "azure-llm"),
    ("azure_llm_inference_2023/AzureLLMInferenceTrace_conv.csv", "azure-llm"),
]
DEFAULT = ForecastSettings().method  # the default method: scored first, it feeds the peak quantile
METHODS = tuple(dict.fromkeys((DEFAULT, "holt_winters", "seasonal_naive")))


def _f(v: float, digits: int = 3) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def coarsened(trace: TraceSeries, every_min: int, label: str) -> TraceSeries:
    """`trace` averaged over `every_min` minutes, one row per block on the minute grid
    (as a reader gives a file with a row every `every_min` minutes)."""
    n, steps = trace.values.shape
    blocks = steps // every_min
    mean = trace.values[:, : blocks * every_min].reshape(n, blocks, every_min).mean(axis=2)
    grid = np.full((n, blocks * every_min), np.nan)
    grid[:, ::every_min] = mean
    return replace(trace, source=label, values=grid)


def oracle_flat_median(rates: np.ndarray, H: int, warm: int, last: int) -> np.ndarray:
    """Per series MASE of the next H steps' own median held flat: not a forecast (it
    knows the future), the floor of any forecast that is flat over the horizon."""
    scale = _mase_scale(rates)
    err = np.zeros(rates.shape[0])
    cnt = np.zeros(rates.shape[0])
    for t in range(warm, last + 1):
        fut = rates[:, t + 1 : t + 1 + H]
        ok = np.isfinite(fut)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(fut, axis=1, keepdims=True)
        err += np.sum(np.where(ok, np.abs(fut - med), 0.0), axis=1) / H
        cnt += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(err / cnt / scale)


def accuracy(trace: TraceSeries, horizon_min: int, warmup_steps: int | None = None) -> list[str]:
    """Evaluate every method and anchor on `trace` at its own step; one markdown row."""
    trace = at_native_step(trace)
    cfg = settings_for(trace, horizon_min)
    rates = series_rates(trace)
    ev = evaluate(rates, cfg, METHODS, start_s=trace.start_s, warmup_steps=warmup_steps)
    doc = summarize(ev)
    m = doc["methods"]
    ours_m = m[DEFAULT]
    lp = doc["lead_peak"]["planners"]
    H = cfg.horizon_steps
    warm = (
        warmup_steps
        if warmup_steps is not None
        else min(1440 * 60 // int(cfg.step_s), trace.n_steps // 4)
    )
    last = trace.n_steps - max(H, ev.window.last_step) - 1
    oracle = float(np.nanmean(oracle_flat_median(rates, H, warm, last)))
    name = Path(trace.source).parent.name + "/" + Path(trace.source).name
    ours, anchor = lp[DEFAULT], lp["c_x_mean_10min"]
    row = [
        name,
        f"{trace.n_series}×{trace.n_steps}@{trace.step_s / 60:g}m",
        _f(ours_m["mase"]),
        _f(m["holt_winters"]["mase"]),
        _f(m["seasonal_naive"]["mase"]),
        *[_f(m[a]["mase"]) for a in ANCHORS],
        _f(oracle),
        f"**{_f(ours_m.get('mase_ratio_to_best_anchor', math.nan), 2)}**",
        f"{ours_m.get('series_mase_le_0.9_best_anchor', 0)}/{ours_m.get('series_vs_anchors', 0)}",
        f"{_f(ours['coverage'])} / {_f(anchor['coverage'])}",
        f"{_f(ours['over_provision'], 2)} / {_f(anchor['over_provision'], 2)}",
        _f(ours.get("over_provision_ratio_to_anchor", math.nan), 2),
        f"{_f(ours['over_provision_total'], 2)} / {_f(anchor['over_provision_total'], 2)}",
        _f(ours.get("over_provision_total_ratio_to_anchor", math.nan), 2),
        _f(ours_m["step_ms"], 2),
    ]
    return row


HEAD = [
    "series", "series×steps@step", f"{DEFAULT} (default)", "holt_winters", "seasonal_naive",
    *ANCHORS, "oracle flat median", "default / best anchor", "series ≤ 0.9×",
    "peak cov default / anchor", "over-prov default / anchor", "over-prov ratio",
    "over-prov in total default / anchor", "in total ratio", "step ms",
]  # fmt: skip


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
    ours = evaluate(
        rates, cfg, ["holt_winters"], start_s=trace.start_s, origin_stride=stride
    ).methods
    ours_sn = evaluate(
        rates, cfg, ["seasonal_naive"], start_s=trace.start_s, origin_stride=stride
    ).methods
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
    print("MASE (mean over series); lead-window peak: steps +11..+15 at 1 min, quantile 0.95\n")
    rows = [HEAD, ["---"] * len(HEAD)]
    traces: list[tuple[TraceSeries, int | None]] = []
    for rel, fmt in FILES:
        path = args.data / rel
        if not path.exists():
            print(f"{rel}: not found, skipped")
            continue
        trace = read_series(path, fmt)
        traces.append((trace, None))
        if rel == BURST_WEEK:  # the week again, as a 10-minute and an hourly series
            for every in (10, 60):
                label = str(path).replace(".csv", f"_{every}min_mean.csv")
                traces.append((coarsened(trace, every, label), None))
    for trace, warm in traces:
        rows.append(accuracy(trace, args.horizon_min, warm))
        print("| " + " | ".join(rows[-1]) + " |", flush=True)
    print("\n" + "\n".join("| " + " | ".join(r) + " |" for r in rows))
    if not args.quick:
        for trace, _ in traces[:1]:
            autoets_anchor(
                trace, cfg, args.ets_stride_min, args.ets_max_series, args.ets_window_min
            )
    print("\n## speed")
    fleet_speed(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
