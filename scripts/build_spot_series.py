"""Regenerate simulations/data/spot/*.json: the synthetic spot capacity the embedded
default scenario of `capsched simulate` replays.

Usage: .venv/bin/python scripts/build_spot_series.py [--out DIR] [--seed N] [--days D]
           [--gap-s G] [--slots N] [--outage-min M]

Why synthetic: the real SkyPilot spot traces state no license, so they cannot ship with
capsched, and a default that reads them from a folder beside the checkout gave other
numbers on every machine without it. These series are ours: made from the bundled
catalog's interruption rates and a fixed seed, so every clone replays the same market.
The real traces stay available as an opt-in scenario
(simulations/data/scenarios/skypilot-spot-traces.toml).

Model, per pool group of the default scenario (an AWS region: AWS pools leave the zone
to EC2; a GCP zone): `--slots` units of spot capacity, each one node. Every tick of
`--gap-s` seconds an available slot is reclaimed with probability 1 - exp(-rate * gap),
where rate is the mean interruption rate per node-hour of the group's spot offerings in
scheduler/data/catalog.json (docs/catalog.md says where those come from); a reclaimed
slot comes back with probability 1 - exp(-gap / outage), outage being `--outage-min`
(an assumption: the catalog has no figure for how long reclaimed capacity stays gone).
Every slot starts available. A file's `data[i]` is the number of available slots in
tick i, in the SkyPilot format `{"metadata": {"gap_seconds": G, ...}, "data": [...]}`.

Python's `random.Random` (Mersenne Twister, stable across Python versions) drives the
draws, seeded per group with `seed` and the group's index; the output is byte-stable.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scheduler.domain import Cloud, Market  # noqa: E402
from scheduler.fleet.catalog import load_catalog  # noqa: E402

DEFAULT_OUT = REPO / "simulations" / "data" / "spot"
# The pool groups the embedded default scenario drives: (cloud, region or zone).
GROUPS: tuple[tuple[Cloud, str], ...] = (
    (Cloud.AWS, "us-east-1"),
    (Cloud.AWS, "us-east-2"),
    (Cloud.AWS, "us-west-2"),
    (Cloud.GCP, "us-central1-a"),
    (Cloud.GCP, "us-central1-b"),
    (Cloud.GCP, "us-central1-c"),
)


def group_rate(cloud: Cloud, where: str) -> float:
    """Mean interruptions per node-hour of the catalog's spot offerings in the group."""
    rates = [
        o.interruptions_per_hour
        for o in load_catalog().offerings
        if o.pool.market is Market.SPOT
        and o.pool.cloud is cloud
        and (o.pool.zone if cloud is Cloud.GCP else o.pool.region) == where
    ]
    if not rates:
        raise SystemExit(f"error: the catalog has no spot offering in {cloud.value}/{where}")
    return sum(rates) / len(rates)


def series(
    rate_per_hour: float, *, seed: int, ticks: int, gap_s: float, slots: int, outage_s: float
) -> list[int]:
    """Available slots per tick under the two-state model of the module docstring."""
    rng = random.Random(seed)
    p_lose = 1.0 - math.exp(-rate_per_hour * gap_s / 3600.0)
    p_back = 1.0 - math.exp(-gap_s / outage_s)
    up = [True] * slots
    out: list[int] = []
    for _ in range(ticks):
        out.append(sum(up))
        up = [(rng.random() >= p_lose) if u else (rng.random() < p_back) for u in up]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--seed", type=int, default=16, help="seed of the first group")
    parser.add_argument("--days", type=float, default=7.0, help="length of each series")
    parser.add_argument("--gap-s", type=float, default=300.0, help="seconds per tick")
    parser.add_argument("--slots", type=int, default=16, help="nodes a pool can hold")
    parser.add_argument(
        "--outage-min", type=float, default=60.0, help="mean time reclaimed capacity stays gone"
    )
    args = parser.parse_args(argv)
    ticks = math.ceil(args.days * 86400.0 / args.gap_s)
    args.out.mkdir(parents=True, exist_ok=True)
    for index, (cloud, where) in enumerate(GROUPS):
        rate = group_rate(cloud, where)
        data = series(
            rate,
            seed=args.seed + index,
            ticks=ticks,
            gap_s=args.gap_s,
            slots=args.slots,
            outage_s=args.outage_min * 60.0,
        )
        doc = {
            "metadata": {
                "gap_seconds": args.gap_s,
                "generator": "scripts/build_spot_series.py",
                "pools": f"{cloud.value}/{where}/*/spot",
                "interruptions_per_node_hour": round(rate, 9),
                "mean_outage_s": args.outage_min * 60.0,
                "slots": args.slots,
                "seed": args.seed + index,
            },
            "data": data,
        }
        path = args.out / f"{cloud.value}-{where}.json"
        path.write_text(json.dumps(doc, separators=(",", ":")) + "\n", encoding="utf-8")
        lost = sum(args.slots - n for n in data) / (args.slots * len(data))
        print(f"{path}: {len(data)} ticks, rate {rate:.6f}/node-h, capacity lost {lost:.2%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
