"""Priorities under a budget (issue 22): two models of different priority at 50 % of what
full service costs; the SLO attainment of each, per policy.

Run:  .venv/bin/python benchmarks/bench_priorities.py [--pairs azure-llm,functions-500]
          [--fleet-gpus 40] [--share 0.5] [--policies capsched,reactive,spothedge,static-peak]
          [--high llama-3.1-8b] [--scenario FILE] [--storm-at-min M] [--no-budget]
          [--spot-storm-pools N]

Each pair puts two shared traces on the embedded default config's two models (one source
region, us-east), as one per-minute CSV with model and region columns:

* ``azure-llm``: the Azure LLM inference 2023 code trace on llama-3.1-8b and the
  conversation trace on llama-3.1-70b (one hour);
* ``functions-500``: the two busiest functions of the Azure Functions 2019 500-function
  sample on llama-3.1-8b and llama-3.1-70b (eight hours; cut with ``--hours``).

The trace is scaled so its peak needs about ``--fleet-gpus`` GPUs. Full service is
capsched's cost with no budget (``--share`` of it is the budget, rounded to cents);
``--high`` gets ``[[models]] priority = 10``, the other 0. Prints one Markdown table
per pair (docs/solver.md holds a run of it) with each model's SLO attainment and share
served, the cost and the peak hourly spend against the budget. With ``--storm-at-min M``
the world is simulations/data/scenarios/preemption-storm.toml's (the bundled spot series,
half of every spot pool's nodes reclaimed at once M minutes in, no capacity back) and the
shares served count from minute M on; ``--no-budget`` drops the budget.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_simulate import FUNCS, SHARED
from scratch import scratch_db

from scheduler.config import DEFAULT_CONFIG_PATH
from simulations.engine import RunResult, World, run_policy
from simulations.scenario import load_scenario
from simulations.traces import read_series
from simulations.world import WorldSpec, build_world

HIGH, LOW = "llama-3.1-8b", "llama-3.1-70b"
STORM = Path(__file__).resolve().parents[1] / "simulations/data/scenarios/preemption-storm.toml"
PAIRS = {
    "azure-llm": (
        (SHARED / "azure_llm_inference_2023/AzureLLMInferenceTrace_code.csv", "auto", None),
        (SHARED / "azure_llm_inference_2023/AzureLLMInferenceTrace_conv.csv", "auto", None),
    ),
    # The two busiest functions of the 500-function sample (rows 0 and 1 by volume).
    "functions-500": (
        (FUNCS / "sample_500/invocations.csv", "auto", 0),
        (FUNCS / "sample_500/invocations.csv", "auto", 1),
    ),
}


def pair_trace(pair: str, out: Path, hours: float | None) -> Path:
    """The pair's two series as one per-minute CSV (minute index, requests, model, region),
    the first on llama-3.1-8b and the second on llama-3.1-70b, cut to their common span."""
    rows: list[np.ndarray] = []
    for path, fmt, rank in PAIRS[pair]:
        s = read_series(path, fmt)
        values = np.nan_to_num(s.values)
        i = 0 if rank is None else int(np.argsort(-values.sum(axis=1))[rank])
        rows.append(values[i])
    n = min(len(r) for r in rows)
    if hours is not None:
        n = min(n, int(hours * 60))
    lines = ["minute,requests,model,region"]
    for model, series in zip((HIGH, LOW), rows, strict=True):
        lines += [f"{t},{series[t]:.0f},{model},us-east" for t in range(n)]
    path = out / f"{pair}.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def config(
    out: Path, name: str, budget: float | None, high: str | None, storm_pools: int | None = None
) -> Path:
    """The embedded default with one source region (us-east), `budget`, `high` first and
    `guards.spot_storm_pools` at `storm_pools` (None: the embedded default's)."""
    text = DEFAULT_CONFIG_PATH.read_text(encoding="utf-8")
    if storm_pools is not None:
        text, n = re.subn(
            r"^spot_storm_pools = \d+", f"spot_storm_pools = {storm_pools}", text, flags=re.M
        )
        assert n == 1, "the embedded config names guards.spot_storm_pools once"
    drop = ("budget_usd_per_hour", "priority")
    lines = [ln for ln in text.splitlines() if not ln.startswith(drop)]
    text = "\n".join(lines) + "\n"
    if budget is not None:
        # The table's header only (a comment may name "[planning]" at a line's end).
        head = "\n[planning]\n"
        text = text.replace(head, f"{head}budget_usd_per_hour = {budget:.2f}\n", 1)
    # Only us-east: the traces have one region.
    i = text.index('[[regions]]\nname = "eu-west"')
    j = text.index("\n\n", i)
    text = text[:i] + text[j + 2 :]
    if high is not None:
        text = text.replace(f'name = "{high}"\n', f'name = "{high}"\npriority = 10\n', 1)
    path = out / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def hourly_peak_usd(r: RunResult) -> float:
    """The most the fleet cost over any hour of the trace, per hour (the budget is per
    hour; a trace shorter than an hour: its cost per hour)."""
    spent = sum(r.cost_by_market.values())  # cumulative USD per step
    per_step = np.diff(np.concatenate([[0.0], spent]))
    steps = round(3600 / float(r.times_s[1] - r.times_s[0]))
    if len(per_step) < steps:
        return float(per_step.sum()) * steps / max(len(per_step), 1)
    return float(np.convolve(per_step, np.ones(steps), mode="valid").max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", default=",".join(PAIRS))
    parser.add_argument("--fleet-gpus", type=float, default=40.0)
    parser.add_argument("--share", type=float, default=0.5, help="budget share of full service")
    parser.add_argument("--hours", type=float, help="cut the traces to this many hours")
    parser.add_argument("--policies", default="capsched,reactive,spothedge,static-peak")
    parser.add_argument("--high", default=HIGH, help="the model with priority 10")
    parser.add_argument("--scenario", type=Path, help="scenario TOML (default: embedded)")
    parser.add_argument(
        "--storm-at-min",
        type=float,
        help="a preemption storm (simulations/data/scenarios/preemption-storm.toml) this"
        " many minutes into the trace; the table then shows what was served from it on",
    )
    parser.add_argument("--no-budget", action="store_true", help="priorities without a budget")
    parser.add_argument(
        "--spot-storm-pools",
        type=int,
        default=None,
        help="capsched's guards.spot_storm_pools (default: the embedded config's)",
    )
    parser.add_argument(
        "--db",
        type=Path,
        default=scratch_db("priorities"),
        help="state database (default: a fresh one)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the tables only, not the replays' warnings
    policies = args.policies.split(",")
    scenario_path, scenario = args.scenario, None
    if args.storm_at_min is not None:
        scenario, scenario_path = load_scenario(STORM)
        storm = scenario.storm.model_copy(update={"at_min": args.storm_at_min})
        scenario = scenario.model_copy(update={"storm": storm})
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for pair in args.pairs.split(","):
            trace = pair_trace(pair, out, args.hours)

            def world(cfg: Path, trace: Path = trace) -> World:
                spec = WorldSpec(cfg, trace, "minute-csv", scenario_path, scenario, args.fleet_gpus)
                return build_world(spec)[0]

            free = run_policy(world(config(out, "free", None, None)), "capsched", args.db)
            hours = len(free.times_s) * float(free.times_s[1] - free.times_s[0]) / 3600
            full = free.cost_usd / hours
            budget = None if args.no_budget else round(args.share * full, 2)
            said = "no budget" if budget is None else f"budget {budget:.2f} USD/h"
            storm = "" if args.storm_at_min is None else f"; storm at minute {args.storm_at_min:g}"
            pools_said = "default" if args.spot_storm_pools is None else args.spot_storm_pools
            print(
                f"\n## {pair}: {hours:.1f} h, {args.fleet_gpus:g} GPUs; full service"
                f" (capsched, no budget) {full:.2f} USD/h; {said}; {args.high} priority 10"
                f"{storm}; spot_storm_pools {pools_said}\n"
            )
            print(
                "| policy | cost USD/h | peak hour USD | SLO high | SLO low | served high"
                " | served low | preemptions |"
            )
            print("|---|---|---|---|---|---|---|---|")
            w = world(config(out, "half", budget, args.high, args.spot_storm_pools))
            low = LOW if args.high == HIGH else HIGH
            for policy in policies:
                r = run_policy(w, policy, args.db)
                per = r.per_model()
                since = args.storm_at_min or 0.0
                print(
                    f"| {policy} | {r.cost_usd / hours:.2f} | {hourly_peak_usd(r):.2f}"
                    f" | {per[args.high]['slo_attainment']:.3f}"
                    f" | {per[low]['slo_attainment']:.3f}"
                    f" | {served_share(r, args.high, since):.3f}"
                    f" | {served_share(r, low, since):.3f} | {r.preemptions} |"
                )


def served_share(r: RunResult, model: str, since_min: float) -> float:
    """Share of `model`'s requests served from `since_min` minutes into the trace on."""
    m = r.models.index(model)
    at = (r.times_s - r.times_s[0]) / 60.0 >= since_min - 1e-9
    asked = float(r.demand_rps[m, at].sum())
    return float(r.served_rps[m, at].sum()) / asked if asked > 0 else 1.0


if __name__ == "__main__":
    main()
