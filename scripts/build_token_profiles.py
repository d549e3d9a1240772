"""Regenerate scheduler/data/token_profiles.json: how a model's throughput depends on
request size, per (model, GPU kind, GPU count) of the bundled capacity profiles.

Usage: .venv/bin/python scripts/build_token_profiles.py [--shared ../shared/data] [--out PATH]

The capacity profiles (scheduler/data/profiles.json) are for one reference request of
763 prompt + 232 output tokens. This script fits, per TensorRT-LLM v0.14 measurement
group (model, GPU, precision, TP), a token cost model of the GPU time one request takes
at maximum throughput (in-flight batching, so batch effects are in the data):

    t(i, o) = prefill x i + decode x o + context x i x o + growth x o^2

i prompt tokens, o output tokens. `prefill` is the compute per prompt token, `decode`
the per-output-token share of the weight reads at a full batch, and the two quadratic
terms the KV-cache reads of each decoded token (its context is i + the tokens already
decoded), which also shrink the batch that fits in memory. Coefficients are >= 0
(terms whose least-squares coefficient comes out negative are dropped and the fit
redone) and fitted on relative error. Throughput at size (i, o) relative to the
reference is t(763, 232) / t(i, o): that factor scales the bundled rps table, so the
reference request keeps exactly today's figures (scheduler/fleet/profiles.py).

Every held-out point (leave one out within its group) is printed with its error; the
summary goes into docs/profiles.md ("Request size"). Output is byte-stable.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = REPO.parent / "shared" / "data"
DEFAULT_OUT = REPO / "scheduler" / "data" / "token_profiles.json"
PROFILES = REPO / "scheduler" / "data" / "profiles.json"
TRT = "profiles/trtllm_perf_overview_v0.14/trtllm_v0.14_throughput_long.csv"

TERMS = ("prefill", "decode", "context", "growth")

# capsched model -> TRT-LLM table model. No 3B in the table: the 8B (same family, same
# layer shapes scaled) stands in for it.
TRT_MODEL = {
    "llama-3.2-3b": "LLaMA v3.1 8B",
    "llama-3.1-8b": "LLaMA v3.1 8B",
    "llama-3.1-70b": "LLaMA v3.1 70B",
}
# capsched GPU kind -> TRT-LLM GPU whose size behaviour it takes. The table has no L4,
# A10G or A100 40GB: L4 and A10G take L40S (the other inference cards; compute to memory
# bandwidth is 0.40 TFLOP/GB/s for L4 and 0.42 for L40S at bf16, but 0.21 for A10G, whose
# long-prompt factors are therefore optimistic), A100 40GB the SXM4 80GB.
TRT_GPU = {
    "H200": "H200-141GB",
    "H100": "H100-80GB-SXM",
    "A100-80GB": "A100-SXM4-80GB",
    "A100": "A100-SXM4-80GB",
    "L40S": "L40S-48GB",
    "L4": "L40S-48GB",
    "A10G": "L40S-48GB",
}
# Our rps tables are bf16/fp16 measurements: take FP16 rows where the table has them.
PRECISIONS = ("FP16", "FP8")
MIN_POINTS = 7  # groups with fewer ISL/OSL pairs are not fitted (4 coefficients)


@dataclass(frozen=True)
class Point:
    """One TRT-LLM table cell."""

    isl: int  # prompt tokens
    osl: int  # output tokens
    tokens_per_s: float  # output tokens/s of the whole TP group at max throughput

    @property
    def seconds(self) -> float:
        """GPU-group seconds per request at max throughput."""
        return self.osl / self.tokens_per_s


Group = tuple[str, str, str, int]  # (TRT model, TRT GPU, precision, TP)


def read_groups(shared: Path) -> dict[Group, list[Point]]:
    """TRT-LLM table rows per measurement group, in file order."""
    groups: dict[Group, list[Point]] = defaultdict(list)
    with (shared / TRT).open(newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            key = (r["model"], r["gpu"], r["precision"], int(r["tp"]))
            groups[key].append(Point(int(r["isl"]), int(r["osl"]), float(r["output_tokens_per_s"])))
    return dict(groups)


def _design(isl: np.ndarray, osl: np.ndarray) -> np.ndarray:
    return np.stack([isl, osl, isl * osl, osl * osl], axis=1)


def fit(points: list[Point]) -> tuple[float, ...]:
    """Non-negative coefficients of `TERMS`, least squares on relative error."""
    isl = np.array([p.isl for p in points], dtype=float)
    osl = np.array([p.osl for p in points], dtype=float)
    t = np.array([p.seconds for p in points])
    full = _design(isl, osl) / t[:, None]
    active = list(range(len(TERMS)))
    while True:
        coef, *_ = np.linalg.lstsq(full[:, active], np.ones_like(t), rcond=None)
        if (coef >= 0).all():
            out = [0.0] * len(TERMS)
            for k, c in zip(active, coef, strict=True):
                out[k] = float(c)
            return tuple(out)
        # Drop the most negative term and refit (a small active-set NNLS).
        active.pop(int(np.argmin(coef)))


def seconds(coef: tuple[float, ...], isl: float, osl: float) -> float:
    """t(isl, osl) of a fitted group (same formula as scheduler.fleet.profiles)."""
    prefill, decode, context, growth = coef
    return prefill * isl + decode * osl + context * isl * osl + growth * osl * osl


def holdout_errors(groups: dict[Group, list[Point]]) -> list[tuple[Group, Point, float]]:
    """Leave-one-out: each point predicted by the fit to the rest of its group."""
    out = []
    for key, pts in groups.items():
        if len(pts) < MIN_POINTS + 1:
            continue
        for j, p in enumerate(pts):
            coef = fit(pts[:j] + pts[j + 1 :])
            predicted = p.osl / seconds(coef, p.isl, p.osl)
            out.append((key, p, predicted / p.tokens_per_s - 1.0))
    return out


def pick_group(
    groups: dict[Group, list[Point]], model: str, gpu_kind: str, tp: int
) -> Group | None:
    """The fitted group standing in for (model, GPU kind, TP): the mapped model and GPU,
    FP16 before FP8, the nearest TP (ties: the smaller)."""
    name, gpu = TRT_MODEL.get(model), TRT_GPU.get(gpu_kind)
    for prec in PRECISIONS:
        tps = sorted(
            g[3]
            for g, pts in groups.items()
            if g[:3] == (name, gpu, prec) and len(pts) >= MIN_POINTS
        )
        if tps:
            best = min(tps, key=lambda x: (abs(np.log2(x / tp)), x))
            return (str(name), str(gpu), prec, best)
    return None


def summary(errors: list[float]) -> dict[str, float]:
    """Median, mean, 90th percentile and max of |error|, and the share within 15 %."""
    a = np.abs(np.array(errors))
    return {
        "points": len(a),
        "median": round(float(np.median(a)), 4),
        "mean": round(float(a.mean()), 4),
        "p90": round(float(np.quantile(a, 0.9)), 4),
        "max": round(float(a.max()), 4),
        "within_15pct": round(float((a <= 0.15).mean()), 4),
    }


def build(shared: Path) -> tuple[dict[str, object], list[str]]:
    """The token_profiles document and the report lines."""
    groups = read_groups(shared)
    with PROFILES.open(encoding="utf-8") as f:
        prof = json.load(f)
    ref = prof["reference_mix"]
    cells = sorted({(r[0], r[1], r[2]) for r in prof["profiles"]})
    errors = holdout_errors(groups)
    used: set[Group] = set()
    rows = []
    for model, kind, tp in cells:
        g = pick_group(groups, model, kind, tp)
        if g is None:
            raise SystemExit(f"no TRT-LLM group stands in for {model} on {kind} TP{tp}")
        used.add(g)
        coef = fit(groups[g])
        # Scale so that the reference request costs 1: coefficients in "reference requests".
        t_ref = seconds(coef, ref["input_tokens"], ref["output_tokens"])
        norm = [float(f"{c / t_ref:.6g}") for c in coef]
        rows.append([model, kind, tp, *norm, f"TRT-LLM v0.14 {g[0]} {g[1]} {g[2]} TP{g[3]}"])
    lines = ["held-out error (leave one out within each group), |predicted/measured - 1|:"]
    lines.append(f"  all groups:   {summary([e for _, _, e in errors])}")
    lines.append(f"  groups used:  {summary([e for g, _, e in errors if g in used])}")
    for g in sorted(used):
        errs = [e for k, _, e in errors if k == g]
        worst = max((abs(e), p) for k, p, e in errors if k == g)
        lines.append(
            f"  {g[0]} {g[1]} {g[2]} TP{g[3]}: median {statistics.median(map(abs, errs)):.3f} "
            f"max {worst[0]:.3f} at {worst[1].isl}/{worst[1].osl}"
        )
    doc: dict[str, object] = {
        "what": "per (model, GPU kind, GPU count): t(i, o) = prefill*i + decode*o + "
        "context*i*o + growth*o^2, GPU time of one request of i prompt and o output tokens "
        "in units of the reference request's; throughput at (i, o) = rps of profiles.json "
        "x t(ref) / t(i, o). Fitted to the TensorRT-LLM v0.14 ISL/OSL grid "
        "(scripts/build_token_profiles.py, docs/profiles.md 'Request size').",
        "reference_mix": ref,
        "holdout": {
            "all_groups": summary([e for _, _, e in errors]),
            "groups_used": summary([e for g, _, e in errors if g in used]),
        },
        "columns": ["model", "gpu_kind", "gpu_count", *TERMS, "source"],
        "rows": rows,
    }
    return doc, lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    doc, lines = build(args.shared)
    args.out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
