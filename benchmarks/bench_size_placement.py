"""Placement by size: what serving one model's prompt-length buckets on different GPU
kinds saves against the best plan on a single GPU kind (issue 20, target <= 0.85x).

Run:  .venv/bin/python benchmarks/bench_size_placement.py [--model llama-3.1-8b]
                                                          [--rps 8,80,800] [--edges 1024,4096]

The demand: the two shared Azure LLM 2023 traces (code and conversation,
../shared/data/traces/azure_llm_inference_2023) merged into one model's demand from
us-east, split by prompt length at `--edges` (`scheduler.forecast.buckets.
split_by_prompt`, every request of both traces), at each rate of `--rps` (the traces'
own mean rate is printed; the split is the same at every rate). Per rate, under the
embedded default config's rules with only this model (min replicas, on-demand share,
spot-loss robustness; no budget, so that every plan serves the demand, to 0.1 %), one solve
each, same solver and seed:

* `by size`: the buckets placed by size on every GPU kind (this change);
* `one kind K`: the same buckets, every cloud allowed only GPU kind K; the best of these
  (cheapest plan leaving nothing unmet) is the baseline of the issue's target;
* `mean size`: every GPU kind, the demand as one mix at its mean size (the planner before
  this change).

Printed: USD/h of the model's nodes, the ratios `by size / best one kind` and `by size /
mean size`, and which GPU kinds serve which bucket. This is a plan-level (steady-state
solver) comparison at equal demand served in full; it does not replay the traces, so SLO
attainment is not measured (docs/profiles.md "Placement by size").
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from scheduler.config import Config, load_config
from scheduler.decide.planner import build_problem, make_plan
from scheduler.domain import Demand, Plan, SizeBucket
from scheduler.fleet.capacity import node_rps
from scheduler.fleet.catalog import Catalog, load_catalog
from scheduler.fleet.profiles import load_profiles
from scheduler.forecast.buckets import bucketed_demand, mean_size, split_by_prompt
from solver import DemandSpec, solve

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"
TRACES = [
    SHARED / "azure_llm_inference_2023" / "AzureLLMInferenceTrace_code.csv",
    SHARED / "azure_llm_inference_2023" / "AzureLLMInferenceTrace_conv.csv",
]
REGION = "us-east"


def read_requests(paths: list[Path]) -> tuple[np.ndarray, np.ndarray, float]:
    """Prompt and output tokens of every request of `paths`, and their mean rate (rps:
    requests over each trace's own span, added)."""
    inp: list[int] = []
    out: list[int] = []
    rate = 0.0
    for path in paths:
        stamps: list[str] = []
        with path.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                inp.append(int(row["ContextTokens"]))
                out.append(int(row["GeneratedTokens"]))
                stamps.append(row["TIMESTAMP"][:26])
        times = np.array(stamps, dtype="datetime64[us]")
        span_s = float((times.max() - times.min()) / np.timedelta64(1, "s"))
        rate += len(stamps) / span_s
    return np.array(inp, dtype=float), np.array(out, dtype=float), rate


def bench_config(model: str, gpu_kind: str | None) -> Config:
    """The embedded default config with only `model`, no budget, and every cloud allowed
    only `gpu_kind` (None: every kind)."""
    raw: dict[str, Any] = load_config(None).model_dump(mode="json")
    raw["models"] = [m for m in raw["models"] if m["name"] == model]
    raw["planning"]["budget_usd_per_hour"] = None
    for cloud in raw["clouds"].values():
        cloud["gpu_kinds"] = [gpu_kind] if gpu_kind else []
    return Config.model_validate(raw)


def one_mix_exact(config: Config, catalog: Catalog, demand: Demand) -> float:
    """USD/h of the plan under `config` where every node serves the demand's whole mix,
    counted as placement by size counts it: a node's capacity for the mix is its
    time-shared rate 1 / sum(share / capacity of the bucket) (the mean size instead
    undercounts it: the time of the mean request is below the mean time). Same solver
    and rules, only the routing by size taken away."""
    problem, _ = build_problem(config, catalog, load_profiles(), [demand], [])
    total = sum(d.rps for d in problem.demands)
    time = np.zeros(len(problem.pools))
    for d in problem.demands:
        assert d.size_class is not None, "the demand has more than one bucket"
        caps = problem.size_classes[d.size_class].capacity_rps
        with np.errstate(divide="ignore"):
            time += d.rps / total / caps
    cap = np.where(np.isfinite(time) & (time > 0), 1.0 / time, 0.0)
    first = problem.demands[0]
    mix = dataclasses.replace(
        problem,
        capacity_rps=cap[None, :],
        demands=(DemandSpec(first.model, first.region, total, first.locations),),
        size_classes=(),
    )
    s = config.solver
    found = solve(
        mix,
        time_limit_s=s.time_limit_s,
        seed=s.seed,
        workers=s.workers,
        backend=s.backend,
        gap_tolerance=s.gap_tolerance,
        node_limit=s.node_limit,
    )
    return found.usd_per_hour if sum(found.unmet_rps) <= 1e-3 * total else float("nan")


def served(plan: Plan, rps: float) -> bool:
    """Whether `plan` serves the demand: at most 0.1 % of it unmet (the solver leaves a
    sliver unmet where its penalty is below the price of one more node)."""
    return sum(u.rps for u in plan.unmet) <= 1e-3 * rps


def kinds_by_bucket(plan: Plan, catalog: Catalog) -> dict[str, dict[str, float]]:
    """Per bucket label (shortest prompts first), rps served per GPU kind."""
    out: dict[tuple[float, str], dict[str, float]] = {}
    for pl in plan.placements:
        kind = catalog.instance_type(pl.pool).gpu_kind
        for r in pl.routes:
            per = out.setdefault((r.min_input_tokens, r.label), {})
            per[kind] = per.get(kind, 0.0) + r.rps
    return {label: per for (_, label), per in sorted(out.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="llama-3.1-8b")
    parser.add_argument("--rps", default="8,80,800", help="comma-separated demand rates")
    parser.add_argument("--edges", default="1024,4096", help="prompt lengths to cut at")
    parser.add_argument("--time-limit-s", type=float, default=10.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    inp, out, trace_rps = read_requests(TRACES)
    edges = [float(e) for e in args.edges.split(",") if e]
    buckets: tuple[SizeBucket, ...] = split_by_prompt(inp, out, edges)
    mean = mean_size(buckets)
    catalog, profiles = load_catalog(), load_profiles()
    base = bench_config(args.model, None)
    kinds = sorted(
        {
            it.gpu_kind
            for it in catalog.instance_types.values()
            if node_rps(base, profiles, args.model, it) > 0
        }
    )
    print(
        f"## {args.model}: Azure LLM 2023 code + conversation, {len(inp)} requests,"
        f" {trace_rps:.2f} rps, mean {mean.input_tokens:.0f} / {mean.output_tokens:.0f} tokens\n"
    )
    for b in buckets:
        print(
            f"bucket {b.label:>10} tokens: {b.share:6.1%} of requests,"
            f" mean {b.size.input_tokens:7.0f} / {b.size.output_tokens:4.0f}"
        )
    print()

    def timed(config: Config) -> Config:
        update = {"time_limit_s": args.time_limit_s, "workers": 1}
        return config.model_copy(update={"solver": config.solver.model_copy(update=update)})

    def plan(config: Config, demand: Demand) -> Plan:
        return make_plan(timed(config), catalog, profiles, [demand])

    for rps in [float(r) for r in args.rps.split(",") if r]:
        demand = bucketed_demand(args.model, REGION, rps, buckets)
        by_size = plan(base, demand)
        mixed = plan(base, Demand(args.model, REGION, rps, mean))
        exact = one_mix_exact(timed(base), catalog, demand)
        single: dict[str, Plan] = {k: plan(bench_config(args.model, k), demand) for k in kinds}
        full = {k: p for k, p in single.items() if served(p, rps)}
        print(f"### {rps:g} rps\n")
        print(f"{'plan':<30}{'USD/h':>10}{'unmet rps':>11}")
        rows = [("by size", by_size), ("mean size", mixed)]
        rows += [(f"one kind {k} (by size)", p) for k, p in single.items()]
        for name, p in rows:
            unmet = sum(u.rps for u in p.unmet)
            print(f"{name:<30}{p.usd_per_hour:>10.2f}{unmet:>11.3f}")
        print(f"{'one mix, time-shared capacity':<30}{exact:>10.2f}{'':>11}")
        if full and served(by_size, rps):
            best_kind = min(full, key=lambda k: full[k].usd_per_hour)
            best = full[best_kind].usd_per_hour
            cost = by_size.usd_per_hour
            print(
                f"\nby size / best one kind ({best_kind}): {cost / best:.3f}x;"
                f" by size / mean size: {cost / mixed.usd_per_hour:.3f}x;"
                f" by size / one mix, time-shared: {cost / exact:.3f}x"
            )
        for label, per in kinds_by_bucket(by_size, catalog).items():
            names = ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]))
            print(f"  {label:>10} tokens on: {names}")
        print()


if __name__ == "__main__":
    main()
