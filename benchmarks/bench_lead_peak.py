"""Lead-window peak plans as the policy makes them, offline: coverage and size per series.

Run:  .venv/bin/python benchmarks/bench_lead_peak.py [--quantile 0.95] [--max-days 1]

`capsched forecast-eval` scores `LeadPeakQuantile` on per-minute series (window +11..+15
minutes). `CapschedPolicy` calibrates it on something coarser: one observation per plan
tick (300 s), the tick's peak per-minute rate, and a lead window of one tick, two ticks
after the plan (the 8B and 70B boot times, docs/profiles.md). This benchmark replays
exactly that without the simulator: for every shared trace of `bench_simulate.py` (the
world at 20 GPUs, cut to `--max-days`; the policy's forecaster is scale-free) and for the
raw per-function series behind the Azure Functions worlds and the whole BurstGPT week, it
feeds the per-tick peaks to the default forecaster at the tick step, and compares the two
`[forecast] plan_for` rates, each raised to the rate now as the policy raises them:

- `horizon_peak`: the highest per-step `plan_quantile` over the horizon;
- `lead_window_peak`: `LeadPeakQuantile.plan` on the same forecasts.

Per set and plan, over the origins after the calibration's first `1/(1 - q)` windows:
`coverage` (share of windows whose realised peak is at most the plan), `req. coverage`
(the same weighted by the realised peak: roughly the share of requests that found their
capacity, what SLO attainment counts), and `size` (sum of plans over sum of realised
peaks; its ratio between the two plans is what the fleet's cost follows).

`vs perfect` is each plan over what `capsched-perfect-forecast` plans at the same ticks
(the true peak of the next `horizon_min`: the highest of the next horizon's tick peaks),
summed over every origin from the first (the cold start included, where most of the
excess of short replays is): capsched's cost over the perfect forecast's follows it.
`--warmup` replays the simulator's warm-up first, as the policy sees it in
`bench_simulate.py`: boot time + one tick at the peak of the trace's first boot time + one
tick (`simulations.engine.warmup_load`), ticks from the warm-up's start, for the worlds
(not the raw sets); the `vs perfect` origins then start at the trace's time 0.
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
from pathlib import Path

import numpy as np
from bench_simulate import SHARED, TRACES, unbudgeted_config

from scheduler.forecast import ForecastSettings, LeadPeakQuantile, LeadWindow, build_forecaster
from scheduler.forecast.config import ForecastConfig
from simulations.engine import warmup_load
from simulations.scenario import SKYPILOT_SCENARIO_PATH
from simulations.traces import read_series
from simulations.world import WorldSpec, build_world

TICK_S = 300.0  # scheduler.tick_interval_s
WINDOW = LeadWindow(2, 1)  # a 600-s boot at 300-s ticks: the tick that ends 3 ticks out
FUNCS = SHARED / "azure_functions_2019_samples_invitro"
RAW = {
    "burstgpt week (raw, 7 d)": (
        SHARED / "burstgpt_derived_aggregates/burstgpt1_first_week_per_minute_tokens.csv",
        "burstgpt",
    ),
    "azure-functions-500 per function": (FUNCS / "sample_500/invocations.csv", "auto"),
    "azure-functions-100 per function": (FUNCS / "sample_100/invocations.csv", "auto"),
    "azure-functions-day per function": (FUNCS / "example/invocations.csv", "auto"),
}  # fmt: skip


def tick_peaks(per_minute: np.ndarray, step_s: float) -> np.ndarray:
    """Peak rate of every tick (series × ticks) from per-step rates; all-NaN ticks NaN."""
    k = max(1, round(TICK_S / step_s))
    n, m = per_minute.shape
    ticks = m // k
    blocks = per_minute[:, : ticks * k].reshape(n, ticks, k)
    seen = np.isfinite(blocks).any(axis=2)
    peaks = np.max(np.where(np.isfinite(blocks), blocks, -np.inf), axis=2)
    out = np.where(seen, peaks, np.nan)
    return np.asarray(out[np.nanmax(np.where(seen, out, 0.0), axis=1) > 0])


def with_warmup(obs: np.ndarray, per_step: np.ndarray, step_s: float, boot_s: float) -> np.ndarray:
    """The per-tick peaks the policy reads in a replay: the warm-up's ticks (from the
    warm-up's start to the trace's time 0, both included: boot + one tick, 4 ticks for a
    600 s boot) at `warmup_load` over the first boot + one tick, then `obs`."""
    early_s = boot_s + TICK_S
    warm = warmup_load(per_step, math.ceil(early_s / step_s - 1e-9))
    n_warm = math.ceil(early_s / TICK_S - 1e-9) + 1
    rows = np.nanmax(np.where(np.isfinite(per_step), per_step, 0.0), axis=1) > 0
    return np.concatenate([np.repeat(warm[rows, None], n_warm, axis=1), obs], axis=1)


def vs_perfect(plan: np.ndarray, obs: np.ndarray, horizon: int, first: int) -> float:
    """Sum of `plan` over the sum of the perfect forecast's plan (the highest tick peak of
    the next `horizon` ticks), over the origins from `first` whose horizon is known."""
    ticks = obs.shape[1]
    origins = np.arange(first, ticks - horizon)
    if origins.size == 0:
        return math.nan
    ahead = np.stack([obs[:, origins + h] for h in range(1, horizon + 1)], axis=2)
    truth = np.max(np.nan_to_num(ahead), axis=2)
    return float(np.sum(plan[:, origins]) / max(float(truth.sum()), 1e-12))


def score(obs: np.ndarray, q: float, first_origin: int = 0) -> dict[str, tuple[float, ...]]:
    """(coverage, request coverage, size, vs perfect) of both plans on per-tick peaks
    `obs`; `vs perfect` over the origins from `first_origin`."""
    n, ticks = obs.shape
    settings = ForecastSettings.of(ForecastConfig(plan_quantile=q), step_s=TICK_S)
    forecaster = build_forecaster(settings)
    forecaster.add_series([f"s{i}" for i in range(n)])
    lead = LeadPeakQuantile(q, WINDOW, n)
    qs = list(settings.quantiles)
    plans = {"horizon_peak": np.zeros((n, ticks)), "lead_window_peak": np.zeros((n, ticks))}
    for t in range(ticks):
        now_s = (t + 1) * TICK_S
        forecaster.update_array(now_s, obs[:, t])
        paths = forecaster.predict_array(now_s, settings.horizon_steps)
        horizon = paths[:, qs.index(q)].max(axis=1)
        lead_plan = lead.plan(t, obs[:, t], paths[:, qs.index(0.5)], horizon)
        now = np.nan_to_num(obs[:, t])
        plans["horizon_peak"][:, t] = np.maximum(horizon, now)
        plans["lead_window_peak"][:, t] = np.maximum(lead_plan, now)
    first = min(math.ceil(1.0 / (1.0 - q)), max(0, ticks - WINDOW.last_step - 1))
    origins = np.arange(first, ticks - WINDOW.last_step)
    truth = obs[:, origins + WINDOW.last_step]
    ok = np.isfinite(truth)
    load = np.where(ok, truth, 0.0)
    out = {}
    for name, plan in plans.items():
        p = plan[:, origins]
        covered = ok & (p >= truth)
        out[name] = (
            float(covered.sum() / max(1, ok.sum())),
            float(np.sum(np.where(covered, load, 0.0)) / max(load.sum(), 1e-12)),
            float(np.sum(np.where(ok, p, 0.0)) / max(load.sum(), 1e-12)),
            vs_perfect(plan, obs, settings.horizon_steps, first_origin),
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quantile", type=float, default=0.95, help="plan_quantile")
    parser.add_argument("--max-days", type=float, default=1.0, help="cut the worlds' traces")
    parser.add_argument("--warmup", action="store_true", help="replay the simulator's warm-up")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    config = unbudgeted_config(Path(tempfile.mkdtemp()))
    sets: list[tuple[str, np.ndarray, int]] = []  # (name, tick peaks, first perfect origin)
    for name, (path, fmt) in TRACES.items():
        spec = WorldSpec(config, path, fmt, SKYPILOT_SCENARIO_PATH, fleet_gpus=20.0)
        world, _ = build_world(spec)
        info = world.info
        per_step = info.demand_rps[:, : int(args.max_days * 86400 / info.step_s)]
        obs = tick_peaks(per_step, info.step_s)
        if args.warmup:
            warmed = with_warmup(obs, per_step, info.step_s, info.boot_time_s)
            sets.append((name, warmed, warmed.shape[1] - obs.shape[1] - 1))
        else:
            sets.append((name, obs, 0))
    for name, (path, fmt) in RAW.items():
        series = read_series(path, fmt)
        sets.append((name, tick_peaks(series.values, series.step_s), 0))
    print(f"lead window: tick +{WINDOW.last_step} ({TICK_S:g} s ticks), q = {args.quantile}\n")
    print("| set | series × ticks | horizon_peak cov. / req. cov. / size "
          "| lead_window_peak cov. / req. cov. / size | size ratio "
          "| vs perfect: horizon / lead |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, obs, first in sets:
        s = score(obs, args.quantile, first)
        h, lw = s["horizon_peak"], s["lead_window_peak"]
        print(
            f"| {name} | {obs.shape[0]} × {obs.shape[1]} "
            f"| {h[0]:.3f} / {h[1]:.3f} / {h[2]:.2f} | {lw[0]:.3f} / {lw[1]:.3f} / {lw[2]:.2f} "
            f"| {lw[2] / h[2]:.2f} | {h[3]:.3f} / {lw[3]:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
