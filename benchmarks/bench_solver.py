"""Solver scaling benchmark: solve time, gap, and cost against greedy as the problem grows.

Run:  .venv/bin/python benchmarks/bench_solver.py [--time-limit 2] [--reference 30]

Every problem uses the bundled AWS+GCP catalog with every cloud region allowed
(pool counts are printed), models cycling through the bundled capacity profiles,
and demand per (model, source region) drawn from a seeded log-normal so every run
sees the same problems. `vs greedy` is solver cost / greedy cost (below 1 means the
solver is cheaper); `gap` is the solver's proven gap against its lower bound. With
`--reference S`, the same cold problem is solved again for S seconds (backend
`--reference-backend`, default the benchmark's): `vs ref` is objective / reference
objective, and `true gap` is (objective - best bound) / objective where the best bound is
the larger of both runs' proven bounds, so it is a proven gap too, and `ref gap` says how
close the reference itself is to optimal.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from greedy import greedy

from scheduler.config import Config
from scheduler.decide.planner import build_problem
from scheduler.domain import Demand
from scheduler.fleet.catalog import load_catalog
from scheduler.fleet.profiles import load_profiles
from solver import Problem, fleet_cost, solve
from solver.reduce import candidate_pools

# Source regions spread over the continents both clouds serve.
SOURCE_LOCATIONS = [
    "us-east-1",
    "us-west-2",
    "us-central1",
    "eu-west-1",
    "europe-west4",
    "eu-central-1",
    "asia-northeast1",
    "ap-southeast-1",
    "ap-south-1",
    "sa-east-1",
]


def make_config(n_models: int, n_regions: int) -> tuple[Config, list[Demand]]:
    """A config and demand with `n_models` models and `n_regions` source regions."""
    profiles = load_profiles()
    names = sorted({p.model for p in profiles})
    rng = np.random.default_rng(n_models * 100 + n_regions)
    models = []
    demand = []
    for i in range(n_models):
        base = names[i % len(names)]
        models.append(
            {
                "name": f"{base}-{i}",
                "profile": base,
                "min_replicas": 1,
                "min_on_demand_share": [0.0, 0.2, 0.3][i % 3],
            }
        )
    regions = [
        {"name": f"src-{j}", "location": SOURCE_LOCATIONS[j], "max_latency_ms": 60}
        for j in range(n_regions)
    ]
    raw = {
        "models": models,
        "regions": regions,
        "planning": {"robustness_fraction": 0.8},
        "solver": {"time_limit_s": 2.0, "workers": 2},
    }
    config = Config.model_validate(raw)
    for m in models:
        for r in regions:
            # rps per (model, region): a few nodes' worth, heavier for small models
            scale = 30.0 if "70b" not in str(m["profile"]) else 3.0
            demand.append(
                Demand(str(m["name"]), str(r["name"]), float(scale * rng.lognormal(0, 0.7)))
            )
    return config, demand


def greedy_cost(problem: Problem) -> tuple[float, float]:
    """Objective and unmet rps of the greedy fleet (routing by the solver with x fixed)."""
    nodes = greedy(problem)
    fixed = dataclasses.replace(problem, current=nodes)
    sol = solve(fixed, time_limit_s=5.0)  # churn-free: current == nodes, only routing is free
    return fleet_cost(problem, nodes, sol.unmet_rps), sum(sol.unmet_rps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--time-limit", type=float, default=2.0)
    ap.add_argument("--reference", type=float, default=0.0, help="seconds for a reference solve")
    ap.add_argument("--sizes", default="1x1,5x3,10x5,20x10", help="models x regions list")
    ap.add_argument("--backend", default="scip", choices=["scip", "highs"])
    ap.add_argument("--ticks", type=int, default=3, help="warm re-plans after the cold solve")
    ap.add_argument(
        "--reference-backend",
        default=None,
        choices=["scip", "highs"],
        help="backend of the reference solve (default: --backend)",
    )
    args = ap.parse_args()
    catalog = load_catalog()
    profiles = load_profiles()
    header = (
        f"{'models x regions':>16} {'pools':>6} {'vars':>6} {'status':>9} {'solve s':>8}"
        f" {'gap':>7} {'USD/h':>9} {'greedy USD/h':>12} {'vs greedy':>9}"
    )
    if args.ticks:
        header += f" {'warm s':>8} {'warm gap':>8}"
    if args.reference:
        header += f" {'vs ref':>7} {'true gap':>8} {'ref gap':>7}"
    print(header)
    for size in args.sizes.split(","):
        n_models, n_regions = (int(v) for v in size.split("x"))
        config, demand = make_config(n_models, n_regions)
        problem, _ = build_problem(config, catalog, profiles, demand, [])
        started = time.perf_counter()
        sol = solve(problem, time_limit_s=args.time_limit, backend=args.backend, workers=2)
        wall = time.perf_counter() - started
        g_cost, g_unmet = greedy_cost(problem)
        n_vars = sum(len(v) for v in candidate_pools(problem).values())
        line = (
            f"{size:>16} {len(problem.pools):>6} {n_vars:>6} {sol.status.value:>9} {wall:>8.2f} "
            f"{sol.gap:>7.2%} {sol.usd_per_hour:>9.1f} {g_cost:>12.1f}"
            f" {sol.objective / g_cost:>9.3f}"
        )
        if sum(sol.unmet_rps) > 1e-6 or g_unmet > 1e-6:
            line += f"  (unmet rps: solver {sum(sol.unmet_rps):.1f}, greedy {g_unmet:.1f})"
        # Steady state: demand drifts by up to 10% and the fleet is the previous plan.
        rng = np.random.default_rng(1)
        fleet, warm = sol.nodes, []
        for _ in range(args.ticks):
            drift = [
                type(d)(d.model, d.region, d.rps * float(rng.uniform(0.9, 1.1)), d.locations)
                for d in problem.demands
            ]
            tick = dataclasses.replace(problem, demands=tuple(drift), current=fleet)
            w = solve(tick, time_limit_s=args.time_limit, backend=args.backend, workers=2)
            warm.append(w)
            fleet = w.nodes
        if warm:
            line += f" {max(w.solve_time_s for w in warm):>8.2f} {max(w.gap for w in warm):>7.2%}"
        if args.reference:
            ref = solve(
                problem,
                time_limit_s=args.reference,
                backend=args.reference_backend or args.backend,
                workers=2,
                stall_nodes=0,  # the whole time, not stopping when the search stalls
            )
            bound = max(sol.bound, ref.bound)
            true_gap = (sol.objective - bound) / sol.objective if sol.objective > 0 else 0.0
            line += f" {sol.objective / ref.objective:>7.4f} {true_gap:>8.2%} {ref.gap:>7.2%}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
