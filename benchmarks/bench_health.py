"""Node-health benchmark: cost and SLO of every policy when model servers fail (issue 21).

Run:  .venv/bin/python benchmarks/bench_health.py [--days 1] [--fleet-gpus 50]
          [--policies capsched,reactive,spothedge,static-peak] [--trace burstgpt-week]
          [--sick-per-node-day 0.5]

One shared trace (the BurstGPT first week from ../shared/data, cut to `--days`, scaled
to `--fleet-gpus`), the world of simulations/data/scenarios/node-faults.toml: spot
capacity from the bundled series, `[health]` on, and the same injected faults for every
policy (seeded per launch number: 5 % of launches never serve, serving nodes turn sick at
2 % per node-day, every boot in aws/us-east-1/g6e.xlarge fails for the first 30 minutes).
Each policy runs through the same reconciler three times: with the faults and its
health checks, with the same faults and `[health]` off (nodes count as capacity whatever
they serve), and without faults. "boot failures" are booting -> failed transitions,
"unhealthy" ready -> unhealthy ones.

Prints one Markdown table (docs/health.md holds a run of it).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_simulate import TRACES, cut, unbudgeted_config

from simulations.engine import RunResult, World, run_policy
from simulations.world import WorldSpec, build_world

SCENARIO = Path(__file__).resolve().parents[1] / "simulations/data/scenarios/node-faults.toml"


def health_off(world: World) -> World:
    """The world with `[health]` off: the faults stay, the reconciler is blind to them."""
    health = world.config.health.model_copy(update={"enabled": False})
    return replace(world, config=world.config.model_copy(update={"health": health}))


def transitions(db: str, old: str, new: str) -> int:
    """Transitions `old -> new` in a replay's state database."""
    conn = sqlite3.connect(db)
    try:
        query = "select count(*) from node_events where old = ? and new = ?"
        return int(conn.execute(query, (old, new)).fetchone()[0])
    finally:
        conn.close()


def row(label: str, r: RunResult) -> str:
    s = r.summary(None)
    return (
        f"| {label} | {r.cost_usd:.2f} | {s['slo_attainment']:.4f} | {s['unserved_fraction']:.4f}"
        f" | {s['launches']} | {transitions(r.state_db, 'booting', 'failed')}"
        f" | {transitions(r.state_db, 'ready', 'unhealthy')} | {r.wall_s:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=float, default=1.0)
    parser.add_argument("--fleet-gpus", type=float, default=50.0)
    parser.add_argument("--trace", default="burstgpt-week", choices=sorted(TRACES))
    parser.add_argument("--policies", default="capsched,reactive,spothedge,static-peak")
    parser.add_argument(
        "--sick-per-node-day",
        type=float,
        default=None,
        help="override the scenario's rate of serving nodes turning sick (a stress run)",
    )
    args = parser.parse_args()
    path, fmt = TRACES[args.trace]
    with tempfile.TemporaryDirectory() as tmp:
        spec = WorldSpec(
            config_path=unbudgeted_config(Path(tmp)),
            trace_path=path,
            trace_format=fmt,
            scenario_path=SCENARIO,
            fleet_gpus=args.fleet_gpus,
        )
        world, _ = build_world(spec)
        world = cut(world, args.days)
        assert world.faults is not None
        stress = ""
        if args.sick_per_node_day is not None:
            faults = replace(world.faults, sick_per_node_day=args.sick_per_node_day)
            world = replace(world, faults=faults)
            stress = f", sick_per_node_day = {args.sick_per_node_day:g}"
        print(
            f"{args.trace}, {args.days:g} day(s), {args.fleet_gpus:g} GPUs, faults of"
            f" {SCENARIO.name}{stress}\n"
        )
        print(
            "| policy | cost USD | SLO attainment | unserved | launches | boot failures"
            " | unhealthy | wall s |"
        )
        print("|---|---|---|---|---|---|---|---|")
        variants = (
            ("faults, [health] on", world),
            ("faults, [health] off", health_off(world)),
            ("no faults", replace(world, faults=None)),
        )
        for name in args.policies.split(","):
            for i, (label, w) in enumerate(variants):
                r = run_policy(w, name, Path(tmp) / f"{name}-{i}.db")
                print(row(f"{name}: {label}", r), flush=True)


if __name__ == "__main__":
    main()
