"""Spot losses: correlated loss in the SkyPilot traces, and the late minutes that follow a loss.

Run:  CAPSCHED_SPOT_TRACES=../shared/data/spot/skypilot_spot_traces \
      .venv/bin/python benchmarks/bench_spot_losses.py [--correlation-only]
                       [--traces azure-llm-conv] [--fleet-gpus 20] [--max-days 1] [--config CFG]

Part 1 (correlation, no replay): for every experiment folder of the SkyPilot spot traces
(their files ran side by side: one start, one tick), the share of a trace's loss ticks
with a loss of another zone of its region (same instance type), of another region (same
type), and of another instance type of its zone, in the same tick, next to the share
independent traces with the same loss rates would give (`simulations.spot_losses`).

Part 2 (late minutes): capsched replayed on the shared traces as `bench_simulate.py`
replays them (SkyPilot spot scenario, default config without its budget); every
(model, minute) with demand late or unserved, its capacity and plan, and the spot
notices of its model within one default boot time before it. The last line of each
row splits the late share of demand into what followed a notice and what did not.
docs/solver.md, "Spot-loss cover when a loss and a demand rise coincide".
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections import defaultdict
from pathlib import Path

from bench_simulate import TRACES, cut, unbudgeted_config
from scratch import scratch_db

from adapters.sim import load_spot_trace
from scheduler.domain import NodeState
from scheduler.loop.store import StateReader
from simulations.engine import run_policy
from simulations.scenario import SKYPILOT_SCENARIO_PATH, spot_traces_dir
from simulations.spot_losses import coincidence, late_steps
from simulations.world import WorldSpec, build_world


def _zone(name: str) -> str:
    return name.split("_", 1)[0]  # "us-east-1c_v100_1" -> "us-east-1c"


def _region(name: str) -> str:
    return _zone(name)[:-1]  # the zone letter dropped


def _itype(name: str) -> str:
    return name.split("_", 1)[1]


RELATIONS = {
    "other zone of the region, same type": lambda a, b: (
        _region(a) == _region(b) and _zone(a) != _zone(b) and _itype(a) == _itype(b)
    ),
    "other region, same type": lambda a, b: _region(a) != _region(b) and _itype(a) == _itype(b),
    "other type, same zone": lambda a, b: _zone(a) == _zone(b) and _itype(a) != _itype(b),
}


def correlation_part(root: Path) -> None:
    print("## losses in the same tick (SkyPilot spot traces)\n")
    header = (
        f"{'folder':<38}{'tick s':>7}  {'related trace':<38}{'losses':>7}{'together':>10}"
        f"{'share':>8}{'indep.':>8}"
    )
    print(header)
    print("-" * len(header))
    for folder in sorted(p for p in root.glob("*/*/*") if p.is_dir()):
        loaded = {f.stem: load_spot_trace(f) for f in sorted(folder.glob("*.json"))}
        if not loaded or len({t.gap_s for t in loaded.values()}) != 1:
            continue  # one tick for every file, or no comparison
        gap = next(iter(loaded.values())).gap_s
        counts = {name: t.counts for name, t in loaded.items()}
        for label, related in RELATIONS.items():
            c = coincidence(counts, related)
            if c.losses:
                print(
                    f"{folder.relative_to(root)!s:<38}{gap:>7g}  {label:<38}{c.losses:>7}"
                    f"{c.together:>10}{c.share:>8.3f}{c.independent_share:>8.3f}"
                )


def late_part(args: argparse.Namespace) -> None:
    print("\n## late minutes of capsched and the spot notices before them\n")
    for name in args.traces:
        path, fmt = TRACES[name]
        for gpus in args.fleet_gpus:
            spec = WorldSpec(args.config, path, fmt, SKYPILOT_SCENARIO_PATH, fleet_gpus=gpus)
            world, _ = build_world(spec)
            world = cut(world, args.max_days)
            run = run_policy(world, "capsched", args.db)
            state = StateReader(run.state_db)
            model_of = state.node_models()
            notices: dict[str, list[float]] = defaultdict(list)
            for ev in state.events():
                if ev["new"] == NodeState.INTERRUPTED.value:
                    notices[model_of[ev["node_id"]]].append(float(ev["at_s"]))
            state.close()
            window_s = world.config.planning.default_boot_time_s
            late = late_steps(
                run.models,
                run.times_s,
                run.demand_rps,
                run.within_slo_rps,
                run.capacity_rps,
                run.forecast_rps,
                notices,
                window_s,
            )
            slo = run.summary(None)["slo_attainment"]
            print(f"{name} {gpus:g} GPUs: cost {run.cost_usd:.2f} USD, SLO {slo:.4f}")
            t0 = float(run.times_s[0])
            for s in late:
                since = ", ".join(f"{v / 60:.0f}" for v in s.since_notice_s) or "-"
                print(
                    f"  {s.model:<16} min {(s.at_s - t0) / 60:7.1f}  demand {s.demand_rps:9.1f}"
                    f"  planned {s.planned_rps:9.1f}  capacity {s.capacity_rps:9.1f}"
                    f"  late {s.late_rps:9.1f}  min since notices: {since}"
                )
            total = float(run.demand_rps.sum())
            after = sum(s.late_rps for s in late if s.since_notice_s)
            every = sum(s.late_rps for s in late)
            print(
                f"  late share {every / total:.4f}: {after / total:.4f} within"
                f" {window_s / 60:g} min after a notice, {(every - after) / total:.4f} not\n"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--correlation-only", action="store_true", help="skip the replays")
    parser.add_argument("--traces", default="azure-llm-conv", help="comma-separated, or all")
    parser.add_argument("--fleet-gpus", default="20,200", help="comma-separated GPU targets")
    parser.add_argument("--max-days", type=float, default=1.0, help="cut longer traces")
    parser.add_argument(
        "--db",
        type=Path,
        default=scratch_db("spot-losses"),
        help="state database (default: a fresh one)",
    )
    parser.add_argument("--config", type=Path, help="config (default: embedded, no budget)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    root = spot_traces_dir()
    if root is None:
        raise SystemExit("SkyPilot spot traces not found: set CAPSCHED_SPOT_TRACES")
    correlation_part(root)
    if args.correlation_only:
        return
    if args.config is None:
        args.config = unbudgeted_config(Path(tempfile.mkdtemp()))
    args.fleet_gpus = [float(x) for x in args.fleet_gpus.split(",")]
    args.traces = list(TRACES) if args.traces == "all" else args.traces.split(",")
    late_part(args)


if __name__ == "__main__":
    main()
