"""Prices that move: every policy's cost with and without the shared AWS spot price history.

Run:  .venv/bin/python benchmarks/bench_prices.py [--traces all] [--fleet-gpus 20]
                                                 [--policies capsched,spothedge,reactive]

The worlds are `benchmarks/bench_simulate.py`'s (the embedded default config without
its budget cap, the SkyPilot spot-traces scenario, each shared request trace scaled to
`--fleet-gpus`, cut to `--max-days`), replayed three ways:

* `catalog`: spot prices fixed at the catalog's (what bench_simulate measures);
* `absolute`: every AWS spot pool of the five allowed regions follows the recorded
  USD/hour of its instance type in the shared history
  (`$PRICES/aws_spot_price_history_ericpauley/2022-05.tsv`), at the mean over the
  region's zones that have a series for it (as the AWS adapter prices a pool without a
  zone); types without a series keep the catalog's price;
* `relative`: the same series as a ratio to their price at the replay's start, times
  the catalog price: only the movement, not the 2022 level.

Printed per (trace, GPUs, policy): cost USD in each mode, the ratios absolute/catalog
and relative/catalog, SLO attainment and launches per day in each mode. The shared
month-file holds 5.7 h (2022-05-31 18:20 to 23:59 UTC) and its prices barely move (5
of the GPU series change, by less than 1%); after its last record each price holds.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from bench_simulate import TRACES, cut, days, unbudgeted_config
from scratch import scratch_db

from simulations.engine import RunResult, run_policy
from simulations.scenario import (
    SKYPILOT_SCENARIO_PATH,
    Scenario,
    SpotPriceSection,
    load_scenario,
    spot_prices_dir,
)
from simulations.world import WorldSpec, build_world

HISTORY = "$PRICES/aws_spot_price_history_ericpauley/2022-05.tsv"
# Allowed AWS region of the default config -> prefix of its zone IDs in the history.
ZONE_IDS = {
    "us-east-1": "use1",
    "us-east-2": "use2",
    "us-west-2": "usw2",
    "eu-west-1": "euw1",
    "eu-central-1": "euc1",
}
MODES = ("catalog", "absolute", "relative")


def priced(scenario: Scenario, mode: str) -> Scenario:
    """The scenario with the shared history driving every AWS spot pool (`mode`)."""
    if mode == "catalog":
        return scenario
    entries = tuple(
        SpotPriceSection(
            file=HISTORY,
            zone_id=f"{prefix}-*",
            pools=f"aws/{region}/*/spot",
            mode="absolute" if mode == "absolute" else "relative",
        )
        for region, prefix in ZONE_IDS.items()
    )
    return scenario.model_copy(update={"spot_prices": entries, "name": f"prices-{mode}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--traces", default="all", help=f"comma-separated of {', '.join(TRACES)}")
    parser.add_argument("--fleet-gpus", default="20", help="comma-separated GPU targets")
    parser.add_argument("--policies", default="capsched,spothedge,reactive,static-peak")
    parser.add_argument("--max-days", type=float, default=1.0, help="cut longer traces")
    parser.add_argument(
        "--db",
        type=Path,
        default=scratch_db("prices"),
        help="state database (default: a fresh one)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if spot_prices_dir() is None:
        parser.exit(2, f"{HISTORY}: the shared price history is not on this machine\n")
    traces = list(TRACES) if args.traces == "all" else args.traces.split(",")
    policies = args.policies.split(",")
    config = unbudgeted_config(Path(tempfile.mkdtemp()))
    base, _ = load_scenario(SKYPILOT_SCENARIO_PATH)
    head = (
        f"{'trace':<22}{'GPUs':>5}  {'policy':<12}"
        + "".join(f"{m + ' USD':>14}" for m in MODES)
        + f"{'abs/cat':>9}{'rel/cat':>9}"
        + "".join(f"{'SLO ' + m[:3]:>9}" for m in MODES)
        + "".join(f"{'l/d ' + m[:3]:>9}" for m in MODES)
    )
    print(head)
    print("-" * len(head))
    totals = {(p, m): 0.0 for p in policies for m in MODES}
    for name in traces:
        path, fmt = TRACES[name]
        for gpus in (float(g) for g in args.fleet_gpus.split(",")):
            runs: dict[str, dict[str, RunResult]] = {p: {} for p in policies}
            for mode in MODES:
                spec = WorldSpec(
                    config,
                    path,
                    fmt,
                    SKYPILOT_SCENARIO_PATH,
                    scenario=priced(base, mode),
                    fleet_gpus=gpus,
                )
                world, _ = build_world(spec)
                world = cut(world, args.max_days)
                for policy in policies:
                    runs[policy][mode] = run_policy(world, policy, args.db)
            for policy, by_mode in runs.items():
                cost = {m: r.cost_usd for m, r in by_mode.items()}
                for m in MODES:
                    totals[policy, m] += cost[m]
                print(
                    f"{name:<22}{gpus:>5g}  {policy:<12}"
                    + "".join(f"{cost[m]:>14.2f}" for m in MODES)
                    + f"{cost['absolute'] / cost['catalog']:>9.3f}"
                    + f"{cost['relative'] / cost['catalog']:>9.3f}"
                    + "".join(f"{by_mode[m].summary(None)['slo_attainment']:>9.4f}" for m in MODES)
                    + "".join(f"{by_mode[m].launches / days(by_mode[m]):>9.0f}" for m in MODES),
                    flush=True,
                )
    print("\n## totals\n")
    for policy in policies:
        cat, ab, rel = (totals[policy, m] for m in MODES)
        print(
            f"{policy:<12} catalog {cat:>11.2f}  absolute {ab:>11.2f} ({ab / cat:.3f})"
            f"  relative {rel:>11.2f} ({rel / cat:.3f})"
        )


if __name__ == "__main__":
    main()
