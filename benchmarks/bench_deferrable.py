"""Deferrable (batch) demand (issue 22): the cost of serving a share of the load as batch
with a deadline, against the same load served as interactive.

Run:  .venv/bin/python benchmarks/bench_deferrable.py [--trace burstgpt-week] [--days 1]
          [--batch-share 0.3] [--deadline-h 6] [--fleet-gpus 40]
          [--policies capsched,reactive,static-peak]

One shared trace's busiest series (default: the BurstGPT first week, cut to ``--days``)
is split in two series on one source region (us-east): ``1 - batch-share`` of every
minute on llama-3.1-8b (interactive) and ``batch-share`` on llama-3.1-8b-batch (the same
profile), scaled so the peak needs about ``--fleet-gpus`` GPUs. The batch model runs twice: with
``deferrable_deadline_s`` (its requests queue and may wait up to the deadline; unserved
past it is a miss) and without (interactive, the same demand). Prints one Markdown table:
cost, the batch model's served share and deadline misses, the interactive model's SLO
attainment, and the cost ratio (docs/solver.md holds a run of it).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_simulate import TRACES
from scratch import scratch_db

from scheduler.config import DEFAULT_CONFIG_PATH
from simulations.engine import run_policy
from simulations.traces import read_series
from simulations.world import WorldSpec, build_world

ONLINE, BATCH = "llama-3.1-8b", "llama-3.1-8b-batch"


def split_trace(name: str, out: Path, days: float, share: float) -> Path:
    """The trace's busiest series as two: `1 - share` on ONLINE and `share` on BATCH."""
    path, fmt = TRACES[name]
    values = np.nan_to_num(read_series(path, fmt).values)
    series = values[int(np.argmax(values.sum(axis=1)))][: int(days * 1440)]
    lines = ["minute,requests,model,region"]
    for model, part in ((ONLINE, 1 - share), (BATCH, share)):
        lines += [f"{t},{v * part:.4f},{model},us-east" for t, v in enumerate(series)]
    trace = out / "split.csv"
    trace.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return trace


def config(out: Path, deadline_s: float | None) -> Path:
    """The embedded default with one source region and the two models, without a budget;
    the batch model deferrable with `deadline_s` (None: interactive)."""
    text = DEFAULT_CONFIG_PATH.read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if not ln.startswith("budget_usd_per_hour")]
    text = "\n".join(lines) + "\n"
    i = text.index('[[regions]]\nname = "eu-west"')
    text = text[:i] + text[text.index("\n\n", i) + 2 :]
    i = text.index('[[models]]\nname = "llama-3.1-70b"')
    j = text.index("\n\n", i)
    batch = f'[[models]]\nname = "{BATCH}"\nprofile = "{ONLINE}"\nmin_on_demand_share = 0.2\n'
    if deadline_s is not None:
        batch += f"deferrable_deadline_s = {deadline_s:g}\n"
    text = text[:i] + batch + text[j:]
    path = out / f"c-{deadline_s}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trace", default="burstgpt-week", choices=sorted(TRACES))
    parser.add_argument("--days", type=float, default=1.0)
    parser.add_argument("--batch-share", type=float, default=0.3)
    parser.add_argument("--deadline-h", type=float, default=6.0)
    parser.add_argument("--fleet-gpus", type=float, default=40.0)
    parser.add_argument("--policies", default="capsched,reactive,static-peak")
    parser.add_argument(
        "--db",
        type=Path,
        default=scratch_db("deferrable"),
        help="state database (default: a fresh one)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        trace = split_trace(args.trace, out, args.days, args.batch_share)
        print(
            f"\n## {args.trace}, {args.days:g} days, {args.fleet_gpus:g} GPUs:"
            f" {args.batch_share:.0%} batch, deadline {args.deadline_h:g} h\n"
        )
        print(
            "| policy | batch as | cost USD | vs interactive | batch served | deadline missed"
            " | waiting at end | interactive SLO |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for policy in args.policies.split(","):
            base = None
            for deadline in (None, args.deadline_h * 3600):
                spec = WorldSpec(
                    config(out, deadline), trace, "minute-csv", None, None, args.fleet_gpus
                )
                world, _ = build_world(spec)
                r = run_policy(world, policy, args.db)
                per = r.per_model()
                b = per[BATCH]
                base = r.cost_usd if base is None else base
                served = b["served"] / b["requests"] if b["requests"] else 1.0
                print(
                    f"| {policy} | {'interactive' if deadline is None else 'deferrable'}"
                    f" | {r.cost_usd:.2f} | {r.cost_usd / base:.3f} | {served:.4f}"
                    f" | {b.get('deadline_missed', 0.0):.0f}"
                    f" | {b.get('waiting_at_end', 0.0):.0f}"
                    f" | {per[ONLINE]['slo_attainment']:.4f} |"
                )


if __name__ == "__main__":
    main()
