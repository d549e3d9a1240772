"""Regenerate scheduler/data/latency_profiles.json: time to first token and time per
output token of a request, per (model, GPU kind, GPU count) of the bundled capacity
profiles (docs/profiles.md "Latency SLOs").

Usage: .venv/bin/python scripts/build_latency_profiles.py [--shared ../shared/data] [--out PATH]

The model (scheduler.domain.LatencyCost, used by scheduler.fleet.profiles):

    prefill(i)      = overhead + per_token x i + per_token_sq x i^2       (ms, one prompt alone)
    TTFT(i, b)      = prefill(i) x b^interference                        (a batch of b prompts)
    TPOT(b, c)      = tpot_ms of the profile row at batch b
                      x (1 + kv x b x c) / (1 + kv x b x c_ref)

`prefill` is fitted (least squares on relative error, coefficients >= 0) to the measured
single-request prefill sweeps (Splitwise llama2-70b on A100-80GB/H100, SageServe 8B/3B on
A100-80GB: prompt 128-8,192 tokens at batch 1), and carried to the GPU kinds those do not
measure by the prefill time per prompt token of the TensorRT-LLM v0.14 groups (the token
cost model's `prefill` term in seconds, scripts/build_token_profiles.py), or calibrated to
ShuntServe's measured first-token time at batch 1 (L4, A10G, L40S and A100 40GB).
`interference` is fitted to every measured batch sweep of the first-token (or batched
prompt) time. The decode step at batch b is the capacity profile row's latency less one
prefill of the reference prompt, over its 232 output tokens; `kv` (KV-cache bytes per
context token over weight bytes, from the model architecture) scales it to a context of
c tokens. Held-out errors (leave one out) and the checks against measurements that were
not fitted at all are printed and stored under "holdout". Output is byte-stable.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import build_token_profiles as tok  # noqa: E402

DEFAULT_SHARED = REPO.parent / "shared" / "data"
DEFAULT_OUT = REPO / "scheduler" / "data" / "latency_profiles.json"
PROFILES = REPO / "scheduler" / "data" / "profiles.json"
SHUNT = "profiles/llm_throughput_aws_gpus_shuntserve"
SPLIT = "profiles/llm_perf_profiles_splitwise_sageserve"
REF_INPUT, REF_OUTPUT = 763, 232

# KV-cache bytes per context token over weight bytes (bf16 both): 2 (K and V) x layers x
# KV heads x head dim / parameters (the models' published configurations).
KV_PER_WEIGHT = {
    "llama-3.2-3b": 2 * 28 * 8 * 128 / 3.21e9,
    "llama-3.1-8b": 2 * 32 * 8 * 128 / 8.03e9,
    "llama-3.1-70b": 2 * 80 * 8 * 128 / 70.6e9,
}

Curve = tuple[float, float, float]  # overhead ms, ms per token, ms per token squared


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _median_sweeps(
    rows: list[dict[str, str]], unit_ms: float, total_decode: bool
) -> dict[tuple[str, str, int], dict[tuple[int, int, int], tuple[float, float]]]:
    """Per (model, hardware, tp): (prompt, batch, output tokens) -> median (prompt ms,
    per-token decode ms)."""
    groups: dict[tuple[str, str, int], dict[tuple[int, int, int], list[tuple[float, float]]]]
    groups = defaultdict(lambda: defaultdict(list))
    for r in rows:
        o = int(r["token_size"])
        per_token = float(r["token_time"]) * unit_ms / (o if total_decode else 1)
        groups[(r["model"], r["hardware"], int(r["tensor_parallel"]))][
            (int(r["prompt_size"]), int(r["batch_size"]), o)
        ].append((float(r["prompt_time"]) * unit_ms, per_token))
    return {
        g: {
            k: (statistics.median(v[0] for v in vs), statistics.median(v[1] for v in vs))
            for k, vs in d.items()
        }
        for g, d in groups.items()
    }


def measured_sweeps(shared: Path) -> dict[str, dict[tuple[int, int, int], tuple[float, float]]]:
    """The Splitwise (ms, per-token decode) and SageServe (s, total decode) sweeps, by name."""
    out: dict[str, dict[tuple[int, int, int], tuple[float, float]]] = {}
    split = _median_sweeps(_read(shared / SPLIT / "splitwise_perf_model.csv"), 1.0, False)
    for (model, hw, tp), d in split.items():
        if model == "llama2-70b" and hw in ("a100-80gb", "h100-80gb"):
            out[f"splitwise llama2-70b {hw} TP{tp}"] = d
    for fname in (
        "sageserve_Llama-3.2-3B-tp-2.csv",
        "sageserve_Llama-3.2-3B-tp-4.csv",
        "sageserve_Llama-3.1-8B-tp-2.csv",
        "sageserve_Llama-3.1-8B-tp-4.csv",
    ):
        for (model, _, tp), d in _median_sweeps(
            _read(shared / SPLIT / fname), 1000.0, True
        ).items():
            out[f"sageserve {model} a100-80gb TP{tp}"] = d
    return out


def prefill_points(
    sweep: dict[tuple[int, int, int], tuple[float, float]],
) -> list[tuple[int, float]]:
    """(prompt tokens, prefill ms) at batch 1 and 128 output tokens."""
    return sorted((p, v[0]) for (p, b, o), v in sweep.items() if b == 1 and o == 128)


DENSE_8B = "sageserve Llama-3.1-8B a100-80gb TP4 single prefills"


def dense_8b_points(shared: Path) -> list[tuple[int, float]]:
    """SageServe's single-request prefill timings of Llama-3.1-8B on 4 x A100-80GB
    (`sageserve_llama-3.1-8B-tp-4-test.csv`, 16-8,160 tokens, ~10 runs per length):
    (prompt tokens, median ms)."""
    runs: dict[int, list[float]] = defaultdict(list)
    for r in _read(shared / SPLIT / "sageserve_llama-3.1-8B-tp-4-test.csv"):
        runs[int(r["PromptLength"])].append(float(r["ExecTime"]) * 1000.0)
    return sorted((p, statistics.median(v)) for p, v in runs.items())


def fit_curve(points: list[tuple[int, float]]) -> Curve:
    """prefill(i) = a + k i + q i^2, least squares on relative error, coefficients >= 0
    (a negative one is dropped and the fit redone)."""
    i = np.array([p for p, _ in points], dtype=float)
    y = np.array([t for _, t in points], dtype=float)
    design = np.stack([np.ones_like(i), i, i * i], axis=1)
    keep = [0, 1, 2]
    while True:
        a = design[:, keep] / y[:, None]
        coef, *_ = np.linalg.lstsq(a, np.ones_like(y), rcond=None)
        if (coef >= 0).all() or len(keep) == 1:
            break
        keep = [k for k, c in zip(keep, coef, strict=True) if c >= 0]
    full = [0.0, 0.0, 0.0]
    for k, c in zip(keep, coef, strict=True):
        full[k] = max(0.0, float(c))
    return (full[0], full[1], full[2])


def prefill_ms(curve: Curve, tokens: float) -> float:
    """The curve at `tokens`."""
    return curve[0] + curve[1] * tokens + curve[2] * tokens * tokens


def scaled(curve: Curve, factor: float) -> Curve:
    """The curve with every term x factor."""
    return (curve[0] * factor, curve[1] * factor, curve[2] * factor)


def loo_prefill(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Leave one out: each point predicted from a fit to the others; (tokens, error)."""
    out = []
    for j, (p, t) in enumerate(points):
        curve = fit_curve(points[:j] + points[j + 1 :])
        out.append((p, prefill_ms(curve, p) / t - 1.0))
    return out


def batch_sweeps(
    shared: Path, sweeps: dict[str, dict[tuple[int, int, int], tuple[float, float]]]
) -> dict[str, list[tuple[int, float]]]:
    """First-token (or batched prompt) time by batch size, per measured sweep. SageServe's
    batched prompt times are left out: they do not grow with the batch (0.048 s for 32
    prompts of 512 tokens of the 8B, which no A100 computes), so they are not a batch's
    prefill. Splitwise points where the time falls as the batch grows (batch 64 on TP2,
    where the batch no longer fits) are left out too."""
    out: dict[str, list[tuple[int, float]]] = {}
    for name, d in sweeps.items():
        if not name.startswith("splitwise"):
            continue
        pts = sorted((b, v[0]) for (p, b, o), v in d.items() if p == 512 and o == 128)
        kept = [pts[0]]
        for b, t in pts[1:]:
            if t > kept[-1][1]:
                kept.append((b, t))
        out[name + " (batched prompt time at 512 tokens)"] = kept
    rows = _read(shared / SHUNT / "llama32_3b_g6xlarge_L4_batch_sweep.csv")
    out["shuntserve llama-3.2-3b L4 vLLM (mean TTFT at 763 tokens)"] = sorted(
        (int(r["batch_size"]), float(r["mean_ttft_ms"])) for r in rows
    )
    by_gpu: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in _read(shared / SHUNT / "trtllm_llama31_70b_tp8_static_batch_aws.csv"):
        by_gpu[r["gpu"]].append((int(r["batch_size"]), float(r["avg_ttft_ms"])))
    for gpu, pts in sorted(by_gpu.items()):
        out[f"shuntserve llama-3.1-70b {gpu} TP8 TensorRT-LLM (mean TTFT at 763 tokens)"] = sorted(
            pts
        )
    return out


def batch_ttft(t0: float, b0: int, b: int, gamma: float) -> float:
    """First-token time at batch b from the time t0 at batch b0: t0 x (b / b0)^gamma."""
    return t0 * (b / b0) ** gamma


def fit_interference(sweeps: dict[str, list[tuple[int, float]]]) -> float:
    """gamma in TTFT(b) = TTFT(1) x b^gamma, least squares on relative error over every
    sweep (each from its smallest batch b0)."""
    best, best_err = 0.0, float("inf")
    for alpha in np.arange(0.0, 1.5001, 0.005):
        err = 0.0
        for pts in sweeps.values():
            b0, t0 = pts[0]
            for b, t in pts[1:]:
                err += (batch_ttft(t0, b0, b, float(alpha)) / t - 1.0) ** 2
        if err < best_err:
            best, best_err = float(alpha), err
    return round(best, 3)


def loo_interference(sweeps: dict[str, list[tuple[int, float]]]) -> list[tuple[str, int, float]]:
    """Leave one sweep out: its points predicted with alpha fitted to the other sweeps."""
    out = []
    for name, pts in sweeps.items():
        alpha = fit_interference({k: v for k, v in sweeps.items() if k != name})
        b0, t0 = pts[0]
        for b, t in pts[1:]:
            pred = batch_ttft(t0, b0, b, alpha)
            out.append((name, b, pred / t - 1.0))
    return out


def trt_prefill_ms_per_token(shared: Path) -> dict[tuple[str, str, str, int], float]:
    """Per TRT-LLM v0.14 group: prefill ms per prompt token at maximum throughput (the
    token cost model's `prefill` term, made absolute by the group's measured seconds per
    request; scripts/build_token_profiles.py)."""
    out = {}
    for key, pts in tok.read_groups(shared).items():
        if len(pts) < tok.MIN_POINTS:
            continue
        coef = tok.fit(pts)
        unit = statistics.median(p.seconds / tok.seconds(coef, p.isl, p.osl) for p in pts)
        out[key] = coef[0] * unit * 1000.0
    return out


def build(shared: Path) -> tuple[dict[str, Any], list[str]]:
    """The latency profiles document and the lines printed."""
    lines: list[str] = []
    sweeps = measured_sweeps(shared)
    # Prefill curves: Splitwise's 70B sweeps and SageServe's 3B sweeps (7 prompt lengths
    # each), the 8B from SageServe's dense single-prefill timings (287 lengths); SageServe's
    # 8B sweeps (whose points scatter +-30 % about any smooth curve, e.g. 2,048 tokens
    # faster per token than 1,024 and 4,096) are only checked against it.
    curves = {name: fit_curve(prefill_points(d)) for name, d in sweeps.items() if "8B" not in name}
    dense = dense_8b_points(shared)
    curves[DENSE_8B] = fit_curve(dense)
    prefill_err: dict[str, list[float]] = defaultdict(list)
    for name, d in sorted(sweeps.items()):
        if "8B" in name:
            continue
        for p, e in loo_prefill(prefill_points(d)):
            prefill_err[name.split()[0] + " " + name.split()[1]].append(e)
            lines.append(f"prefill held out  {name:45s} {p:5d} tokens  {e:+.1%}")
    for _p, e in loo_prefill(dense):
        prefill_err[DENSE_8B].append(e)
    lines.append(f"prefill held out  {DENSE_8B}: {json.dumps(tok.summary(prefill_err[DENSE_8B]))}")
    sweep_8b = []
    for name, d in sorted(sweeps.items()):
        if "8B" in name:
            for p, t in prefill_points(d):
                e = prefill_ms(curves[DENSE_8B], p) / t - 1.0
                sweep_8b.append(e)
                lines.append(f"8B curve vs sweep {name:45s} {p:5d} tokens  {e:+.1%}")
    batch = batch_sweeps(shared, sweeps)
    alpha = fit_interference(batch)
    batch_err = []
    for name, b, e in loo_interference(batch):
        batch_err.append(e)
        lines.append(f"batch held out    {name:70s} b={b:3d}  {e:+.1%}")
    lines.append(f"batch interference alpha = {alpha}")

    trt = trt_prefill_ms_per_token(shared)
    m8, m70 = "LLaMA v3.1 8B", "LLaMA v3.1 70B"

    def trt_ratio(a: tuple[str, str, str, int], b: tuple[str, str, str, int]) -> float:
        return trt[a] / trt[b]

    a100_16 = ("A100-SXM4-80GB", "FP16")
    h100_16, h100_8 = ("H100-80GB-SXM", "FP16"), ("H100-80GB-SXM", "FP8")
    # Prefill time relative to A100-80GB (TP1 of the 8B; FP8-only kinds chained through
    # H100 FP8 -> FP16, as the capacity profiles do). A100 40GB: the same chip and clocks
    # (prefill is compute-bound), so 1.
    h100 = trt_ratio((m8, *h100_16, 1), (m8, *a100_16, 1))
    vs_a100 = {
        "A100-80GB": (1.0, "measured"),
        "A100": (1.0, "A100 40GB = 80GB (same chip and clocks; prefill is compute-bound)"),
        "H100": (h100, f"TRT-LLM 8B prefill ms/token H100 FP16 / A100 FP16 = {h100:.3f}"),
        "H200": (
            h100 * trt_ratio((m8, "H200-141GB", "FP8", 1), (m8, *h100_8, 1)),
            "TRT-LLM 8B prefill ms/token H100 FP16 / A100 FP16 x H200 FP8 / H100 FP8",
        ),
        "L40S": (
            h100 * trt_ratio((m8, "L40S-48GB", "FP8", 1), (m8, *h100_8, 1)),
            "TRT-LLM 8B prefill ms/token H100 FP16 / A100 FP16 x L40S FP8 / H100 FP8",
        ),
    }
    # A check that fits nothing: the 8B's TRT prefill per token on A100 against
    # SageServe's measured prefill of one prompt (a different serving stack).
    cross = []
    for p, t in dense:
        if p >= 1024:
            e = trt[(m8, *a100_16, 1)] * p / t - 1.0
            cross.append(e)
    lines.append(f"TRT vs SageServe 8B A100 single prefills >= 1024 tokens: {tok.summary(cross)}")

    shunt = {}
    for name, pts in batch.items():
        if name.startswith("shuntserve"):
            shunt[name] = pts[0]
    l4_3b_b, l4_3b_ttft = shunt["shuntserve llama-3.2-3b L4 vLLM (mean TTFT at 763 tokens)"]

    def shunt70(gpu: str) -> float:
        b, t = shunt[f"shuntserve llama-3.1-70b {gpu} TP8 TensorRT-LLM (mean TTFT at 763 tokens)"]
        return t / b**alpha  # one prompt alone

    base = {
        "llama-3.2-3b": "sageserve Llama-3.2-3B a100-80gb TP2",
        "llama-3.1-8b": DENSE_8B,
    }
    rows: list[list[Any]] = []
    cells = sorted(
        {(r[0], r[1], r[2]) for r in json.loads(PROFILES.read_text(encoding="utf-8"))["profiles"]}
    )
    for model, kind, tp in cells:
        curve: Curve
        if model in base:
            small = base[model]
            if kind == "A100-80GB":
                # The 3B by TP degree; the 8B's timings are on TP4 (SageServe's 8B and 3B
                # sweeps prefill no faster on TP4 than on TP2, so TP1/TP2 take them too).
                name = small if model == "llama-3.1-8b" or tp <= 2 else small.replace("TP2", "TP4")
                curve, src = curves[name], f"measured: {name}, batch 1"
            elif kind in vs_a100:
                r, how = vs_a100[kind]
                curve, src = scaled(curves[small], r), f"{small} x {r:.3f} ({how})"
            else:
                # L4 measured for the 3B at 763 tokens (ShuntServe TTFT at batch 1); the 8B
                # on L4 by the measured 8B/3B prefill ratio (SageServe A100); A10G by
                # ShuntServe's measured A10G/L4 first-token time (70B TP8, batch 1).
                l4_3b = l4_3b_ttft / prefill_ms(curves[base["llama-3.2-3b"]], REF_INPUT)
                b83 = prefill_ms(curves[base["llama-3.1-8b"]], REF_INPUT) / prefill_ms(
                    curves[base["llama-3.2-3b"]], REF_INPUT
                )
                r = l4_3b * (b83 if model == "llama-3.1-8b" else 1.0)
                how = (
                    f"3B sweep shape calibrated to ShuntServe 3B L4 TTFT {l4_3b_ttft:.0f} ms "
                    f"at 763 tokens, batch {l4_3b_b}"
                    + (
                        f", x 8B/3B prefill {b83:.2f} (SageServe A100)"
                        if b83 and r != l4_3b
                        else ""
                    )
                )
                if kind == "A10G":
                    a10g = shunt70("A10G-24GB") / shunt70("L4-24GB")
                    r *= a10g
                    how += f", x A10G/L4 first-token time {a10g:.2f} (ShuntServe 70B TP8)"
                curve, src = scaled(curves[base["llama-3.2-3b"]], r), how
        else:
            a100 = {tp_: curves[f"splitwise llama2-70b a100-80gb TP{tp_}"] for tp_ in (2, 4, 8)}
            h100c = {tp_: curves[f"splitwise llama2-70b h100-80gb TP{tp_}"] for tp_ in (2, 4, 8)}
            if kind in ("A100-80GB", "H100"):
                hw = "a100-80gb" if kind == "A100-80GB" else "h100-80gb"
                name = f"splitwise llama2-70b {hw} TP{tp}"
                curve, src = curves[name], f"measured: {name}, batch 1, prompt 128-8192"
            elif kind == "H200":
                ref_tp = 4 if tp == 2 else tp
                r = trt_ratio((m70, "H200-141GB", "FP8", tp), (m70, *h100_8, ref_tp))
                curve = scaled(h100c[ref_tp], r)
                src = (
                    f"splitwise llama2-70b h100-80gb TP{ref_tp} x {r:.3f} (TRT-LLM 70B prefill"
                    f" ms/token H200 FP8 TP{tp} / H100 FP8 TP{ref_tp})"
                )
            else:
                gpu = {
                    "L4": "L4-24GB",
                    "A10G": "A10G-24GB",
                    "L40S": "L40S-48GB",
                    "A100": "A100-40GB",
                }[kind]
                r = shunt70(gpu) / prefill_ms(a100[8], REF_INPUT)
                how = (
                    f"splitwise A100-80GB TP8 shape calibrated to ShuntServe {gpu} TP8 TTFT"
                    " at 763 tokens"
                )
                if tp == 4:
                    t4 = trt_ratio((m70, "L40S-48GB", "FP8", 4), (m70, "L40S-48GB", "FP8", 8))
                    r *= t4
                    how += f", x TRT-LLM 70B L40S prefill ms/token TP4/TP8 {t4:.3f}"
                curve, src = scaled(a100[8], r), f"{how} (x {r:.3f})"
        rows.append(
            [
                model,
                kind,
                tp,
                round(curve[0], 4),
                float(f"{curve[1]:.6g}"),
                float(f"{curve[2]:.6g}"),
                src,
            ]
        )
        lines.append(
            f"{model:14s} {kind:10s} TP{tp}: prefill 763 {prefill_ms(curve, 763):7.1f} ms,"
            f" 6000 {prefill_ms(curve, 6000):7.1f} ms, 30000 {prefill_ms(curve, 30000):8.1f} ms"
        )

    # TPOT: the profile rows carry the measured decode step at the reference context
    # (scripts/build_profiles.py, `tpot_ms`); what is checked here is its growth with the
    # context, against the per-token times at batch 1 over the prompt lengths (nothing
    # is fitted to these, so every point is out of sample).
    ctx_err = []
    for name, d in sorted(sweeps.items()):
        model = (
            "llama-3.1-70b"
            if name.startswith("splitwise")
            else ("llama-3.1-8b" if "8B" in name else "llama-3.2-3b")
        )
        at = {p: v[1] for (p, b, o), v in d.items() if b == 1 and o == 128}
        kv = KV_PER_WEIGHT[model]
        for p, t in sorted(at.items()):
            pred = at[512] * (1 + kv * (p + 64)) / (1 + kv * (512 + 64))
            ctx_err.append(pred / t - 1.0)
            lines.append(f"context held out  {name:45s} prompt {p:5d}  {pred / t - 1.0:+.1%}")

    holdout = {
        "prefill_leave_one_out": tok.summary([e for v in prefill_err.values() for e in v]),
        **{f"prefill_leave_one_out {k}": tok.summary(v) for k, v in sorted(prefill_err.items())},
        "prefill_8b_curve_vs_sageserve_8b_sweeps": tok.summary(sweep_8b),
        "batch_interference_leave_one_sweep_out": tok.summary(batch_err),
        "context_vs_measured": tok.summary(ctx_err),
        "trt_prefill_vs_sageserve_8b_single_prefills": tok.summary(cross),
    }
    for k, v in holdout.items():
        lines.append(f"{k}: {json.dumps(v)}")
    doc: dict[str, Any] = {
        "what": "per (model, GPU kind, GPU count): prefill(i) = overhead_ms + ms_per_token x i + "
        "ms_per_token_sq x i^2 of one prompt alone; TTFT(i, b) = prefill(i) x "
        "b^batch_interference; TPOT(b, c) = profile tpot_ms(b) x (1 + kv_per_weight x b x c) / "
        "(1 + kv_per_weight x b x (763 + 116)), c = i + o / 2. "
        "scripts/build_latency_profiles.py, docs/profiles.md 'Latency SLOs'.",
        "reference_mix": {"input_tokens": REF_INPUT, "output_tokens": REF_OUTPUT},
        "batch_interference": alpha,
        "kv_per_weight": {m: float(f"{v:.6g}") for m, v in sorted(KV_PER_WEIGHT.items())},
        "holdout": holdout,
        "columns": [
            "model",
            "gpu_kind",
            "gpu_count",
            "overhead_ms",
            "ms_per_token",
            "ms_per_token_sq",
            "source",
        ],
        "rows": rows,
    }
    return doc, lines


def render(doc: dict[str, Any]) -> str:
    """JSON with one row per line."""
    parts = []
    for key, value in doc.items():
        if key == "rows":
            body = ",\n".join(json.dumps(r, ensure_ascii=True) for r in value)
            parts.append(f'"rows": [\n{body}\n]')
        else:
            parts.append(
                f"{json.dumps(key)}: {json.dumps(value, ensure_ascii=True, sort_keys=True)}"
            )
    return "{\n" + ",\n".join(parts) + "\n}\n"


def main(argv: list[str] | None = None) -> int:
    """Build the latency profiles and print the held-out errors."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="shared data root")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output JSON path")
    args = parser.parse_args(argv)
    doc, lines = build(args.shared)
    for line in lines:
        print(line)
    text = render(doc)
    args.out.write_text(text, encoding="ascii")
    print(f"wrote {args.out} ({len(text):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
