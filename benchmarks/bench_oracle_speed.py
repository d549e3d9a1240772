"""Oracle wall-time benchmark: the perfect-foresight oracle's replay on the request-size files.

Run:  nice -n 10 .venv/bin/python benchmarks/bench_oracle_speed.py
                                              [--cases reference:10,trace:10,long:3,default]

Each case is `file:scale` (one of `bench_tokens.write_requests`' files, "reference",
"trace" or "long", with prompts x scale in "long") replayed under config C of
docs/profiles.md ("Latency SLOs": the embedded config with the 8B model's end-to-end SLO
stated as TTFT 2000 ms / TPOT 99.1379 ms), or "default" (the embedded config and bundled
trace, as `capsched simulate` runs it). Printed per case: the replay's cost and SLO
attainment and its wall time (the oracle's schedule included). docs/profiles.md (issue
#20) has the figures.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from bench_tokens import TRACES, write_requests

from scheduler.config import DEFAULT_CONFIG_PATH
from simulations.engine import run_policy
from simulations.world import WorldSpec, build_world

E2E_SLO = "latency_slo_ms = 25000\n"  # the 8B model's, the only one in the embedded config
TOKEN_SLO = "ttft_slo_ms = 2000\ntpot_slo_ms = 99.1379\n"


def config_c(out_dir: Path) -> Path:
    """The embedded config with the 8B model's SLO per token (config C)."""
    text = DEFAULT_CONFIG_PATH.read_text(encoding="utf-8")
    assert text.count(E2E_SLO) == 1, "the embedded config's 8B SLO moved"
    path = out_dir / "c.toml"
    path.write_text(text.replace(E2E_SLO, TOKEN_SLO), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="reference:10,trace:10,long:3,default")
    parser.add_argument("--trace", choices=sorted(TRACES), default="conv")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    header = f"{'case':<14}{'cost USD':>10}{'SLO att.':>10}{'wall s':>8}"
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        c = config_c(Path(tmp))
        for case in args.cases.split(","):
            if case == "default":
                spec = WorldSpec(None, None)
            else:
                which, scale = case.split(":")
                paths = write_requests(TRACES[args.trace], Path(tmp), float(scale))
                spec = WorldSpec(c, paths[which], "requests")
            world, _ = build_world(spec)
            t0 = time.perf_counter()
            r = run_policy(world, "oracle", Path(tmp) / f"{case}.db")
            wall = time.perf_counter() - t0
            s = r.summary(None)
            print(f"{case:<14}{r.cost_usd:>10.2f}{s['slo_attainment']:>10.4f}{wall:>8.1f}")


if __name__ == "__main__":
    main()
