"""Placement by size: what serving one model's prompt-length buckets on different GPU
kinds saves against the best plan on a single GPU kind (issue 20, target <= 0.85x).

Run:  PYTHONPATH=. .venv/bin/python benchmarks/bench_size_placement.py [--model llama-3.1-8b]
                    [--rps 8,80,800] [--edges 1024,4096] [--replay] [--token-slo TTFT,TPOT]

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
mean size`, and which GPU kinds serve which bucket: a plan-level (steady-state solver)
comparison. With `--replay`, each approach's plan (made for h x the peak minute's rate)
is also checked minute by minute at each minute's own rate and bucket mix (nodes fixed,
routing free; no queueing, boots or spot loss), and the costs compared at the least h
serving 99.5 % of the requests (docs/profiles.md "Placement by size").

Run from the repository with PYTHONPATH=. (it imports the working tree's packages).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scheduler.config import Config, load_config
from scheduler.decide.planner import build_problem, make_plan
from scheduler.domain import Demand, Placement, Plan, SizeBucket
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


@dataclass(frozen=True)
class Requests:
    """Every request of the merged traces."""

    input_tokens: np.ndarray  # prompt tokens per request
    output_tokens: np.ndarray  # output tokens per request
    at_s: np.ndarray  # arrival, seconds since the epoch
    rps: float  # mean rate: requests over each trace's own span, added
    start_s: float  # the first second every trace covers
    end_s: float  # the last second every trace covers


def read_requests(paths: list[Path]) -> Requests:
    """The requests of `paths`, merged."""
    inp: list[int] = []
    out: list[int] = []
    at: list[np.ndarray] = []
    rate, start, end = 0.0, -np.inf, np.inf
    for path in paths:
        stamps: list[str] = []
        with path.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                inp.append(int(row["ContextTokens"]))
                out.append(int(row["GeneratedTokens"]))
                stamps.append(row["TIMESTAMP"][:26])
        times = np.array(stamps, dtype="datetime64[us]").astype(np.int64) / 1e6
        rate += len(stamps) / float(times.max() - times.min())
        start, end = max(start, float(times.min())), min(end, float(times.max()))
        at.append(times)
    return Requests(
        np.array(inp, dtype=float), np.array(out, dtype=float), np.concatenate(at), rate, start, end
    )


def minutes(reqs: Requests, edges: list[float]) -> list[tuple[SizeBucket, ...]]:
    """Each full minute both traces cover, as its requests' buckets (their shares of the
    minute and sizes), and the minute's rate in `minute_rps`."""
    first, last = int(np.ceil(reqs.start_s / 60)), int(reqs.end_s // 60)
    out: list[tuple[SizeBucket, ...]] = []
    for m in range(first, last):
        inside = (reqs.at_s >= m * 60) & (reqs.at_s < (m + 1) * 60)
        out.append(split_by_prompt(reqs.input_tokens[inside], reqs.output_tokens[inside], edges))
    return out


def minute_rps(reqs: Requests) -> np.ndarray:
    """Requests per second of each full minute both traces cover (as `minutes`)."""
    first, last = int(np.ceil(reqs.start_s / 60)), int(reqs.end_s // 60)
    inside = (reqs.at_s >= first * 60) & (reqs.at_s < last * 60)
    index = (reqs.at_s[inside] // 60).astype(np.int64) - first
    return np.bincount(index, minlength=last - first) / 60.0


# `--token-slo TTFT,TPOT` (ms): the model's SLO as time to first token and per output
# token instead of its end-to-end default (docs/profiles.md "Latency SLOs"); None: default.
TOKEN_SLO: tuple[float, float] | None = None


def bench_config(model: str, gpu_kind: str | None) -> Config:
    """The embedded default config with only `model`, no budget, and every cloud allowed
    only `gpu_kind` (None: every kind); with `TOKEN_SLO`, the model's per-token SLO."""
    raw: dict[str, Any] = load_config(None).model_dump(mode="json")
    raw["models"] = [m for m in raw["models"] if m["name"] == model]
    if TOKEN_SLO is not None:
        for m in raw["models"]:
            m["latency_slo_ms"] = None
            m["ttft_slo_ms"], m["tpot_slo_ms"] = TOKEN_SLO
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


def eval_config(model: str) -> Config:
    """The config a fleet is checked under minute by minute: capacity only (no
    robustness, on-demand share or minimum replicas, which shape a plan but serve nothing)."""
    raw: dict[str, Any] = bench_config(model, None).model_dump(mode="json")
    raw["planning"]["robustness_fraction"] = 0.0
    for m in raw["models"]:
        m["min_on_demand_share"] = 0.0
        m["min_replicas"] = 0
    return Config.model_validate(raw)


def attainment(
    plan: Plan,
    model: str,
    by_minute: list[tuple[SizeBucket, ...]],
    rates: np.ndarray,
    catalog: Catalog,
) -> float:
    """Share of the requests of every minute the plan's nodes serve (each minute at its
    own rate and bucket mix, every node at its profile rate x target utilisation, the
    buckets routed to the nodes as the solver can with the node counts fixed)."""
    config, profiles = eval_config(model), load_profiles()
    fleet = [Placement(pl.model, pl.pool, pl.count) for pl in plan.placements]
    served = total = 0.0
    for buckets, rps in zip(by_minute, rates, strict=True):
        if rps <= 0 or not buckets:
            continue
        demand = bucketed_demand(model, REGION, float(rps), buckets)
        problem, _ = build_problem(config, catalog, profiles, [demand], fleet, committed=fleet)
        held = problem.current.sum(axis=0)
        pools = tuple(
            dataclasses.replace(pool, max_nodes=int(n))
            for pool, n in zip(problem.pools, held, strict=True)
        )
        found = solve(dataclasses.replace(problem, pools=pools), time_limit_s=5.0, workers=1)
        total += float(rps)
        served += float(rps) - sum(found.unmet_rps)
    return served / total


def least_headroom(
    make: Callable[[float], Plan],
    check: Callable[[Plan], float],
    target: float = 0.995,
) -> tuple[float, Plan, float]:
    """The smallest factor h on the planned rate (to 1 %, within 0.5-2) whose plan serves
    at least `target` of the requests, with that plan and its share served."""
    lo, hi = 0.5, 2.0
    best = make(hi)
    best_share = check(best)
    while hi - lo > 0.01:
        mid = (lo + hi) / 2
        plan = make(mid)
        share = check(plan)
        if share >= target:
            hi, best, best_share = mid, plan, share
        else:
            lo = mid
    return hi, best, best_share


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
    parser.add_argument(
        "--replay",
        action="store_true",
        help="also check the plans minute by minute at equal share served (slower)",
    )
    parser.add_argument(
        "--token-slo", help="TTFT,TPOT in ms: a per-token SLO instead of the end-to-end one"
    )
    args = parser.parse_args()
    if args.token_slo:
        global TOKEN_SLO
        ttft, tpot = (float(x) for x in args.token_slo.split(","))
        TOKEN_SLO = (ttft, tpot)
    logging.basicConfig(level=logging.WARNING)
    reqs = read_requests(TRACES)
    inp, trace_rps = reqs.input_tokens, reqs.rps
    edges = [float(e) for e in args.edges.split(",") if e]
    buckets: tuple[SizeBucket, ...] = split_by_prompt(inp, reqs.output_tokens, edges)
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
        if args.replay and full:
            replay(
                args.model,
                rps,
                reqs,
                edges,
                buckets,
                min(full, key=lambda k: full[k].usd_per_hour),
                plan,
                catalog,
            )
        for label, per in kinds_by_bucket(by_size, catalog).items():
            names = ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]))
            print(f"  {label:>10} tokens on: {names}")
        print()


def replay(
    model: str,
    rps: float,
    reqs: Requests,
    edges: list[float],
    buckets: tuple[SizeBucket, ...],
    best_kind: str,
    plan: Callable[[Config, Demand], Plan],
    catalog: Catalog,
) -> None:
    """Each plan made for h x the peak minute's rate (the traces scaled to a mean of
    `rps`) at the traces' mix, checked minute by minute at each minute's rate and mix;
    h the least that serves 99.5 % of the requests. Printed: h, USD/h, share served."""
    rates = minute_rps(reqs)
    rates = rates * rps / rates.mean()
    by_minute = minutes(reqs, edges)
    peak = float(rates.max())
    mean = mean_size(buckets)
    approaches: dict[str, Callable[[float], Plan]] = {
        "by size": lambda h: plan(
            bench_config(model, None), bucketed_demand(model, REGION, h * peak, buckets)
        ),
        f"one kind {best_kind}": lambda h: plan(
            bench_config(model, best_kind), bucketed_demand(model, REGION, h * peak, buckets)
        ),
        "mean size": lambda h: plan(
            bench_config(model, None), Demand(model, REGION, h * peak, mean)
        ),
    }
    print(f"\nminute by minute ({len(rates)} minutes, peak {peak:.2f} rps), 99.5 % served:")
    cost: dict[str, float] = {}
    for name, make in approaches.items():
        h, found, share = least_headroom(
            make, lambda p: attainment(p, model, by_minute, rates, catalog)
        )
        cost[name] = found.usd_per_hour
        print(f"  {name:<20} h {h:5.3f}  {found.usd_per_hour:9.2f} USD/h  served {share:.4f}")
    print(
        f"  by size / one kind {best_kind}: {cost['by size'] / cost[f'one kind {best_kind}']:.3f}x;"
        f" by size / mean size: {cost['by size'] / cost['mean size']:.3f}x"
    )


if __name__ == "__main__":
    main()
