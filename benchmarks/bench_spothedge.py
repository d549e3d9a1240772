"""SpotHedge's microbenchmark: capsched, spothedge and the oracle on the AWS spot traces
that the SpotHedge artifact calls `4-node` and `16-node`.

Run:  .venv/bin/python benchmarks/bench_spothedge.py [--sets 4-node,16-node] [--windows 4]
                                                    [--policies capsched,spothedge,oracle]

Setting (SpotHedge, EuroSys '25; artifact MaoZiming/spothedge_ae `eval/eval.py`): a fixed
target of 3 replicas of a 1-GPU node for 24 h, boot 120 s, on-demand = 3 x spot. The
scenarios are `simulations/data/spothedge_micro_4node.toml` and `..._16node.toml`; this
script writes their constant load (2.5 replicas' worth of planned load: 3 replicas are
needed, 2 are not) and replays `--windows` 24 h windows starting on days 1, 2, 3, ... of
the traces (several fixed windows keep the figure from hanging on one day), or with
`--artifact-window` the one window the artifact replays: `np.random.seed(0)`, then
`randint(0, shortest trace - 24 h)` in 30 s ticks, which is tick 2732 (day 0.9486) on
both trace sets in a fresh worker (`utils/init.py`, `utils/utils.py`).

Printed per trace set and policy: cost as a ratio to on-demand only (3 replicas at the
cheapest on-demand price for 24 h), availability (share of the accounted time with the
capacity of at least 3 ready replicas), preemptions and launches; per window and as the
mean over windows, next to the artifact's published SpotHedge figures. Where the two
simulators differ is written in docs/solver.md ("SpotHedge's microbenchmark").
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scratch import scratch_db

from scheduler.domain import Market
from scheduler.fleet.capacity import node_rps
from simulations.engine import RunResult, World, run_policy
from simulations.scenario import Scenario, load_scenario
from simulations.world import WorldSpec, build_world

DATA = Path(__file__).resolve().parents[1] / "simulations" / "data"
SETS = {
    "4-node": DATA / "spothedge_micro_4node.toml",
    "16-node": DATA / "spothedge_micro_16node.toml",
}
# The artifact's SpotHedge on these traces (MAF workload): (cost vs on-demand, availability).
PUBLISHED = {"4-node": (0.447, 1.000), "16-node": (0.589, 0.976)}
REPLICAS = 3  # the fixed target
LOAD_REPLICAS = 2.5  # the constant load, in replicas' worth of planned capacity
DAY_S = 86400.0
# The artifact's window start: tick 2732 of 30 s (see the module docstring).
ARTIFACT_START_DAY = 2732 * 30 / DAY_S
WINDOW_STRIDE_DAYS = 1.0


@dataclass(frozen=True)
class Score:
    """One replay in the microbenchmark's terms."""

    cost_ratio: float  # cost / (3 replicas on-demand for the window)
    availability: float  # share of steps with at least 3 replicas' capacity ready
    preemptions: int  # instances reclaimed
    launches: int  # instances created
    wall_s: float  # replay time


def replica_rps(world: World) -> tuple[float, float]:
    """(planned rps, profile rps) of one replica of the scenario's single type."""
    section = world.config.models[0]
    itype = world.catalog.instance_type(world.catalog.offerings[0].pool)
    rps = node_rps(world.config, world.profiles, section.name, itype, 1.0)
    return node_rps(world.config, world.profiles, section.name, itype), rps


def constant_trace(path: Path, requests_per_min: float) -> Path:
    """A 24 h minute-csv trace at a constant rate."""
    rows = [f"{m},{requests_per_min:.6f}" for m in range(int(DAY_S // 60))]
    path.write_text("minute,requests\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def windowed(scenario: Scenario, start_s: float) -> Scenario:
    """The scenario with every spot trace read `start_s` later (one shared clock, each
    trace from its own aligning offset on)."""
    traces = tuple(
        t.model_copy(update={"offset_s": t.offset_s + start_s}) for t in scenario.spot_traces
    )
    return scenario.model_copy(update={"spot_traces": traces})


def score(world: World, run: RunResult) -> Score:
    """Cost ratio and availability of a replay."""
    _, profile_rps = replica_rps(world)
    on_demand = min(
        o.usd_per_hour for o in world.catalog.offerings if o.pool.market is Market.ON_DEMAND
    )
    hours = len(run.times_s) * world.info.step_s / 3600
    ready = run.capacity_rps.sum(axis=0) / profile_rps
    return Score(
        cost_ratio=run.cost_usd / (REPLICAS * on_demand * hours),
        availability=float(np.mean(ready >= REPLICAS - 1e-6)),
        preemptions=run.preemptions,
        launches=run.launches,
        wall_s=run.wall_s,
    )


def build(scenario_path: Path, start_s: float, tmp: Path) -> World:
    """The world of one window: the scenario, its constant load, the window's offset."""
    scenario, _ = load_scenario(scenario_path)
    probe = constant_trace(tmp / "probe.csv", 60.0)
    world, _ = build_world(
        WorldSpec(None, probe, "minute-csv", scenario_path, windowed(scenario, start_s))
    )
    planned, _ = replica_rps(world)
    trace = constant_trace(tmp / "load.csv", LOAD_REPLICAS * planned * 60)
    world, _ = build_world(
        WorldSpec(None, trace, "minute-csv", scenario_path, windowed(scenario, start_s))
    )
    return world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sets", default="4-node,16-node", help=f"of {', '.join(SETS)}")
    parser.add_argument("--windows", type=int, default=10, help="24 h windows per trace set")
    parser.add_argument("--start-days", help="comma-separated window starts (days); overrides")
    parser.add_argument(
        "--artifact-window", action="store_true", help="only the artifact's window (day 0.9486)"
    )
    parser.add_argument("--policies", default="capsched,spothedge,oracle")
    parser.add_argument(
        "--db",
        type=Path,
        default=scratch_db("spothedge"),
        help="state database (default: a fresh one)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    policies = args.policies.split(",")
    tmp = Path(tempfile.mkdtemp())
    starts = (
        [float(x) for x in args.start_days.split(",")]
        if args.start_days
        else [ARTIFACT_START_DAY]
        if args.artifact_window
        else [1 + WINDOW_STRIDE_DAYS * w for w in range(args.windows)]
    )
    started = time.perf_counter()
    header = (
        f"{'set':<9}{'policy':<11}{'window':>11}{'cost/OD':>9}{'avail.':>9}"
        f"{'preempt':>9}{'launches':>10}{'wall s':>8}"
    )
    print(header)
    print("-" * len(header))
    summary: list[str] = []
    for name in args.sets.split(","):
        scores: dict[str, list[Score]] = {p: [] for p in policies}
        for start_day in starts:
            start_s = start_day * DAY_S
            world = build(SETS[name], start_s, tmp)
            for policy in policies:
                s = score(world, run_policy(world, policy, args.db))
                scores[policy].append(s)
                print(
                    f"{name:<9}{policy:<11}{f'day {start_s / DAY_S:.4g}':>11}"
                    f"{s.cost_ratio:>9.3f}{s.availability:>9.4f}"
                    f"{s.preemptions:>9}{s.launches:>10}{s.wall_s:>8.1f}",
                    flush=True,
                )
        cost_pub, avail_pub = PUBLISHED[name]
        for policy, ss in scores.items():
            cost = sum(s.cost_ratio for s in ss) / len(ss)
            avail = sum(s.availability for s in ss) / len(ss)
            worst = min(s.availability for s in ss)
            summary.append(
                f"{name:<9}{policy:<11}{cost:>9.3f}{avail:>9.4f}{worst:>9.4f}"
                f"{cost / cost_pub:>13.3f}{cost_pub:>10.3f}{avail_pub:>10.3f}"
            )
    head = (
        f"{'set':<9}{'policy':<11}{'cost/OD':>9}{'avail.':>9}{'worst':>9}"
        f"{'vs pub. SH':>13}{'pub. cost':>10}{'pub. av.':>10}"
    )
    print(f"\n## mean over {len(starts)} windows (published: the artifact's SpotHedge)\n")
    print(head)
    print("-" * len(head))
    print("\n".join(summary))
    print(f"\ntotal wall {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
