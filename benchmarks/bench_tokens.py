"""Request-size benchmark: what the same request rate costs at different request sizes.

Run:  .venv/bin/python benchmarks/bench_tokens.py [--trace conv|code] [--prompt-scale 10]
                                                  [--policies capsched,oracle,static-peak]
                                                  [--config C.toml]

Turns a shared Azure LLM 2023 trace (../shared/data/traces/azure_llm_inference_2023) into
three `requests` files with the same timestamps: without token columns (every request
the reference request of 763 prompt / 232 output tokens, as before token-aware demand),
with the trace's own token counts, and with every prompt x `--prompt-scale` (a
long-context what-if). Each is replayed unscaled (the trace's own rate, one model) under
the embedded default config (or `--config`, e.g. one stating TTFT/TPOT SLOs) and
scenario. Printed per file and policy: cost, SLO
attainment, GPU-hours, USD per million tokens served, and the cost as a ratio to the
same policy on the file without sizes (the baseline of this run). docs/profiles.md
("Request size") has the figures.
"""

from __future__ import annotations

import argparse
import csv
import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from simulations.engine import run_policy
from simulations.world import WorldSpec, build_world

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"
TRACES = {
    "conv": SHARED / "azure_llm_inference_2023" / "AzureLLMInferenceTrace_conv.csv",
    "code": SHARED / "azure_llm_inference_2023" / "AzureLLMInferenceTrace_code.csv",
}


def write_requests(src: Path, out_dir: Path, prompt_scale: float) -> dict[str, Path]:
    """The three requests files: "reference" (no tokens), "trace", "long"."""
    paths = {k: out_dir / f"{k}.csv" for k in ("reference", "trace", "long")}
    with (
        src.open(newline="", encoding="utf-8") as f,
        paths["reference"].open("w", encoding="utf-8") as ref,
        paths["trace"].open("w", encoding="utf-8") as sized,
        paths["long"].open("w", encoding="utf-8") as long,
    ):
        ref.write("timestamp\n")
        sized.write("timestamp,input_tokens,output_tokens\n")
        long.write("timestamp,input_tokens,output_tokens\n")
        for row in csv.DictReader(f):
            ts = datetime.fromisoformat(row["TIMESTAMP"][:26]).replace(tzinfo=UTC).timestamp()
            inp, out = int(row["ContextTokens"]), int(row["GeneratedTokens"])
            ref.write(f"{ts:.3f}\n")
            sized.write(f"{ts:.3f},{inp},{out}\n")
            long.write(f"{ts:.3f},{round(inp * prompt_scale)},{out}\n")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", choices=sorted(TRACES), default="conv")
    parser.add_argument("--prompt-scale", type=float, default=10.0)
    parser.add_argument("--policies", default="capsched,oracle,static-peak")
    parser.add_argument("--config", type=Path, help="config (default: the embedded one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    policies = args.policies.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_requests(TRACES[args.trace], Path(tmp), args.prompt_scale)
        base: dict[str, float] = {}
        header = (
            f"{'file':<10}{'policy':<14}{'cost USD':>10}{'vs no sizes':>13}{'SLO att.':>10}"
            f"{'GPU-h':>8}{'USD/Mtok':>10}"
        )
        print(f"## {args.trace} trace, prompts x{args.prompt_scale:g} in `long`\n")
        print(header)
        print("-" * len(header))
        for name, path in paths.items():
            world, _ = build_world(WorldSpec(args.config, path, "requests"))
            for policy in policies:
                r = run_policy(world, policy, Path(tmp) / "state.db")
                s = r.summary(None)
                base.setdefault(policy, r.cost_usd)
                ratio = r.cost_usd / base[policy] if base[policy] > 0 else float("nan")
                print(
                    f"{name:<10}{policy:<14}{r.cost_usd:>10.2f}{ratio:>13.2f}"
                    f"{s['slo_attainment']:>10.4f}{s['gpu_hours']:>8.1f}"
                    f"{s['usd_per_million_tokens'] or float('nan'):>10.3f}"
                )


if __name__ == "__main__":
    main()
