"""Regenerate scheduler/data/profiles.json: sustainable load of each model per GPU kind.

Usage: .venv/bin/python scripts/build_profiles.py [--shared ../shared/data] [--out PATH]

Every row is one (model, GPU kind, tensor-parallel degree, batch size) with the
requests/s one replica sustains and the end-to-end latency of a request, for one
reference token mix (input 763 / output 232 tokens). Rows come from measured batch
sweeps where they exist and are scaled to the missing (model, GPU) cells with ratios
computed from the data; each row's `source` says which. The method, the choices and
their weaknesses are written up in docs/profiles.md.

Reads, under --shared (each folder has a PROVENANCE.md):
  profiles/llm_throughput_aws_gpus_shuntserve/*.csv       measured, exact reference mix
  profiles/llm_perf_profiles_splitwise_sageserve/*.csv    measured, converted to the mix
  profiles/trtllm_perf_overview_v0.14/*_long.csv          ratios between GPUs
and scheduler/data/catalog.json (memory per GPU kind). Output is byte-stable.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = REPO.parent / "shared" / "data"
DEFAULT_OUT = REPO / "scheduler" / "data" / "profiles.json"
CATALOG = REPO / "scheduler" / "data" / "catalog.json"

SHUNT = "profiles/llm_throughput_aws_gpus_shuntserve"
SPLIT = "profiles/llm_perf_profiles_splitwise_sageserve"
TRT = "profiles/trtllm_perf_overview_v0.14/trtllm_v0.14_throughput_long.csv"

# The reference token mix: ShuntServe's fixed input/output lengths, which are close to
# the Azure 2023 conversation trace's averages. All rows are for this mix; sweeps
# measured with other lengths are converted to it.
REF_INPUT_TOKENS = 763
REF_OUTPUT_TOKENS = 232

# Weights in bf16 (2 bytes per parameter) plus ~20% for KV cache and activations. A
# replica gets no profile on a GPU group with less memory than this.
BYTES_PER_PARAM = 2.0
KV_OVERHEAD = 1.2

# The default SLO of a model is the end-to-end latency at this batch size on L4 (the
# cheapest GPU kind that has data for every model), rounded up to a whole second: the
# cheap GPU stays usable at moderate load and faster GPUs can batch more.
SLO_BATCH = 8
SLO_GPU = "L4"


@dataclass(frozen=True)
class ModelSpec:
    """A served model: name used in config and its parameter count (model card)."""

    name: str  # capsched's model name
    params_b: float  # parameters, billions (Hugging Face model card)
    hf_id: str  # the checkpoint the name stands for

    @property
    def gpu_memory_gb(self) -> float:
        return round(self.params_b * BYTES_PER_PARAM * KV_OVERHEAD, 1)


MODELS = (
    ModelSpec("llama-3.2-3b", 3.21, "meta-llama/Llama-3.2-3B-Instruct"),
    ModelSpec("llama-3.1-8b", 8.03, "meta-llama/Llama-3.1-8B-Instruct"),
    ModelSpec("llama-3.1-70b", 70.6, "meta-llama/Llama-3.1-70B-Instruct"),
)
GPU_KINDS = ("L4", "A10G", "L40S", "A100", "A100-80GB", "H100", "H200")

SOURCES: list[dict[str, str]] = [
    {
        "id": "shuntserve",
        "what": "measured throughput and latency vs batch on AWS g5/g6/g6e/p4d, input 763 / "
        "output 232 tokens (Llama-3.2-3B on 1 L4 with vLLM; Llama-3.1-70B TP8 with "
        "TensorRT-LLM 0.21 static batching)",
        "repository": "https://github.com/ddps-lab/HeteroSpotLLMServe",
        "path": "ArtifactEvaluation/PerformanceEstimation/",
        "commit": "861aed51987ed816c89416c64cb126a158c701d4 (3B); per-row commits in the CSV",
        "license": "none stated",
    },
    {
        "id": "splitwise",
        "what": "measured prefill and decode latency vs batch, llama2-70b on A100-80GB and "
        "H100 (ms)",
        "repository": "https://github.com/Mutinifni/splitwise-sim",
        "path": "data/perf_model.csv",
        "commit": "378088013a54df6f2052c27ff5ae6ea7619c3ecc",
        "license": "MIT",
    },
    {
        "id": "sageserve",
        "what": "measured prefill and decode latency vs batch, Llama-3.1-8B and Llama-3.2-3B "
        "on A100-80GB TP2/TP4 (seconds; token_time is the whole decode)",
        "repository": "https://github.com/kjain1810/SageServe",
        "path": "data/",
        "commit": "635bcbd2bcb117ff894c75565bd048fa0c8bc019",
        "license": "none stated",
    },
    {
        "id": "trtllm_v0.14",
        "what": "NVIDIA TensorRT-LLM v0.14 published max throughput (output tokens/s per TP "
        "group), H200/H100/A100/L40S; used only for ratios between GPUs and TP degrees",
        "repository": "https://github.com/arthurrasmusson/TensorRT-LLM",
        "path": "docs/source/performance/perf-overview.md",
        "commit": "e00d4e6564921307dd264b61fe1d46f116095e0e",
        "license": "Apache-2.0",
    },
]

# A100 40GB SXM4 vs 80GB SXM4: same chip and clocks, HBM bandwidth 1,555 vs 2,039 GB/s
# (NVIDIA A100 datasheet). No data set measures both on the same software, and decode
# (232 of the mix's tokens) is bandwidth-bound, so the 40GB part is scaled by this
# spec-sheet ratio. The one ratio here not computed from a measurement.
A100_40_OVER_80 = 1555.0 / 2039.0


@dataclass(frozen=True)
class Point:
    """One batch size of a sweep."""

    batch: int  # batch size / concurrency setting
    rps: float  # requests per second of one replica
    latency_ms: float  # end-to-end latency of a request
    tpot_ms: float  # time per output token (the decode step) at that batch size


@dataclass(frozen=True)
class Sweep:
    """Rows of one (model, GPU kind, TP degree) with how they were obtained."""

    model: str  # capsched model name
    gpu_kind: str  # normalised GPU kind
    tp: int  # GPUs per replica
    points: tuple[Point, ...]  # by batch size
    source: str  # provenance text, copied into every row
    measured: bool  # True when measured (possibly converted to the mix), False when scaled

    def scaled(self, model: str, gpu_kind: str, tp: int, factor: float, why: str) -> Sweep:
        """The sweep with throughput x factor and latency (and time per token) / factor
        (same batch sizes)."""
        pts = tuple(
            Point(p.batch, p.rps * factor, p.latency_ms / factor, p.tpot_ms / factor)
            for p in self.points
        )
        src = f"derived: [{self.source}] x {factor:.3f} ({why})"
        return Sweep(model, gpu_kind, tp, pts, src, measured=False)


# --- measured sweeps ------------------------------------------------------------------


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


SHUNT_GPU = {"A10G-24GB": "A10G", "L4-24GB": "L4", "L40S-48GB": "L40S", "A100-40GB": "A100"}


def shuntserve_sweeps(shared: Path) -> list[Sweep]:
    """ShuntServe sweeps, measured at exactly the reference mix."""
    sweeps: list[Sweep] = []
    rows = _read(shared / SHUNT / "llama32_3b_g6xlarge_L4_batch_sweep.csv")
    pts = tuple(
        Point(
            int(r["batch_size"]),
            float(r["throughput_rps"]),
            float(r["p50_e2el_ms"]),
            float(r["mean_tpot_ms"]),
        )
        for r in rows
    )
    sweeps.append(
        Sweep(
            "llama-3.2-3b",
            "L4",
            1,
            tuple(sorted(pts, key=lambda p: p.batch)),
            "measured: shuntserve llama32_3b_g6xlarge_L4_batch_sweep.csv, g6.xlarge, vLLM, "
            "763/232 tokens; rps = throughput_rps, latency = p50 e2e, tpot = mean TPOT",
            measured=True,
        )
    )
    by_instance: dict[tuple[str, int], list[Point]] = defaultdict(list)
    for r in _read(shared / SHUNT / "trtllm_llama31_70b_tp8_static_batch_aws.csv"):
        if int(r["pp"]) != 1:
            continue
        # rps from output tokens/s / 232: the g6 rows' seq_throughput_rps has only two
        # decimals (transcribed from .log files); token throughput keeps full precision.
        rps = float(r["token_throughput_tok_s"]) / REF_OUTPUT_TOKENS
        by_instance[(r["gpu"], int(r["tp"]))].append(
            Point(
                int(r["batch_size"]),
                rps,
                float(r["p50_seq_latency_ms"]),
                float(r["avg_itl_ms"]),
            )
        )
    for (gpu, tp), points in sorted(by_instance.items()):
        sweeps.append(
            Sweep(
                "llama-3.1-70b",
                SHUNT_GPU[gpu],
                tp,
                tuple(sorted(points, key=lambda p: p.batch)),
                f"measured: shuntserve trtllm_llama31_70b_tp8_static_batch_aws.csv, {gpu} "
                f"TP{tp}, TensorRT-LLM static batching, 763/232 tokens; rps = output tok/s / "
                "232, latency = p50 sequence latency, tpot = mean inter-token latency",
                measured=True,
            )
        )
    return sweeps


def _interp(x: float, xs: list[float], ys: list[float]) -> float:
    """Piecewise-linear interpolation (xs ascending, x inside the range)."""
    for i in range(len(xs) - 1):
        if xs[i] <= x <= xs[i + 1]:
            return ys[i] + (ys[i + 1] - ys[i]) * (x - xs[i]) / (xs[i + 1] - xs[i])
    raise ValueError(f"{x} outside {xs[0]}..{xs[-1]}")


def prefill_decode_sweeps(
    rows: list[dict[str, str]],
    model: str,
    gpu_kind: str,
    unit_ms: float,
    decode_is_total: bool,
    label: str,
) -> list[Sweep]:
    """Convert a Splitwise-format batch sweep (prompt 512, 128 output tokens) to the mix.

    latency(b) = prompt_time(b) x prefill_scale + per-token decode time(b) x 232, with
    prefill_scale = batch-1 prompt time at 763 tokens (interpolated between the 512 and
    1024 measurements) / batch-1 prompt time at 512; rps(b) = b / latency(b). Repeated
    measurements are reduced to their median.
    """
    groups: dict[tuple[int, int, int, int], list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        key = (
            int(r["tensor_parallel"]),
            int(r["prompt_size"]),
            int(r["batch_size"]),
            int(r["token_size"]),
        )
        groups[key].append((float(r["prompt_time"]) * unit_ms, float(r["token_time"]) * unit_ms))
    base_tokens = 128  # output tokens of the batch sweep in both data sets

    def med(tp: int, prompt: int, batch: int, i: int) -> float:
        return statistics.median(v[i] for v in groups[(tp, prompt, batch, base_tokens)])

    sweeps: list[Sweep] = []
    for tp in sorted({k[0] for k in groups}):
        prompts = sorted(p for (t, p, b, o) in groups if t == tp and b == 1 and o == base_tokens)
        prefill_1 = [med(tp, p, 1, 0) for p in prompts]
        scale = _interp(REF_INPUT_TOKENS, [float(p) for p in prompts], prefill_1) / med(
            tp, 512, 1, 0
        )
        points: list[Point] = []
        for b in sorted(b for (t, p, b, o) in groups if t == tp and p == 512 and o == base_tokens):
            per_token = med(tp, 512, b, 1) / (base_tokens if decode_is_total else 1.0)
            latency = med(tp, 512, b, 0) * scale + per_token * REF_OUTPUT_TOKENS
            points.append(Point(b, b / latency * 1000.0, latency, per_token))
        sweeps.append(
            Sweep(
                model,
                gpu_kind,
                tp,
                tuple(points),
                f"measured: {label} TP{tp}, batch sweep at prompt 512 / 128 output tokens "
                f"converted to 763/232: latency = prompt_time x {scale:.3f} + per-token "
                "time x 232, rps = batch / latency, tpot = per-token time",
                measured=True,
            )
        )
    return sweeps


def splitwise_sageserve_sweeps(shared: Path) -> list[Sweep]:
    """Splitwise (ms, per-token decode) and SageServe (s, total decode) sweeps."""
    sweeps: list[Sweep] = []
    split_rows = _read(shared / SPLIT / "splitwise_perf_model.csv")
    for hardware, kind in (("a100-80gb", "A100-80GB"), ("h100-80gb", "H100")):
        rows = [r for r in split_rows if r["model"] == "llama2-70b" and r["hardware"] == hardware]
        sweeps += prefill_decode_sweeps(
            rows,
            "llama-3.1-70b",
            kind,
            unit_ms=1.0,
            decode_is_total=False,
            label=f"splitwise perf_model.csv llama2-70b (stand-in for Llama-3.1-70B: same "
            f"layers, width and GQA) on {hardware}",
        )
    for fname, model in (
        ("sageserve_Llama-3.2-3B-tp-2.csv", "llama-3.2-3b"),
        ("sageserve_Llama-3.2-3B-tp-4.csv", "llama-3.2-3b"),
        ("sageserve_Llama-3.1-8B-tp-2.csv", "llama-3.1-8b"),
        ("sageserve_Llama-3.1-8B-tp-4.csv", "llama-3.1-8b"),
    ):
        sweeps += prefill_decode_sweeps(
            _read(shared / SPLIT / fname),
            model,
            "A100-80GB",
            unit_ms=1000.0,
            decode_is_total=True,
            label=f"sageserve {fname} on a100-80gb",
        )
    return sweeps


# --- ratios ---------------------------------------------------------------------------

TRT_GPU = {
    "H200-141GB": "H200",
    "H100-80GB-SXM": "H100",
    "A100-SXM4-80GB": "A100-80GB",
    "L40S-48GB": "L40S",
}
TRT_MODEL = {"llama-3.1-8b": "LLaMA v3.1 8B", "llama-3.1-70b": "LLaMA v3.1 70B"}


@dataclass(frozen=True)
class Ratio:
    """A throughput ratio with the text that says how it was computed."""

    value: float  # target / reference throughput of one replica
    how: str  # provenance text

    def __mul__(self, other: Ratio) -> Ratio:
        return Ratio(self.value * other.value, f"{self.how}; x {other.how}")


def _geomean(values: Iterable[float]) -> float:
    vals = list(values)
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


class TrtTable:
    """TensorRT-LLM v0.14 throughput: output tokens/s of one TP group."""

    def __init__(self, shared: Path) -> None:
        self.tps: dict[tuple[str, str, str, int, int, int], float] = {}
        for r in _read(shared / TRT):
            if r["gpu"] not in TRT_GPU:
                continue
            key = (
                r["model"],
                TRT_GPU[r["gpu"]],
                r["precision"],
                int(r["tp"]),
                int(r["isl"]),
                int(r["osl"]),
            )
            self.tps[key] = float(r["output_tokens_per_s"])

    def ratio(
        self,
        model: str,
        target: tuple[str, str, int],
        reference: tuple[str, str, int],
    ) -> Ratio:
        """Replica throughput ratio target/reference, each (gpu kind, precision, tp).

        Geometric mean over the two ISL/OSL pairs nearest the reference mix (log
        distance) that the table reports for both.
        """
        name = TRT_MODEL[model]

        def pairs(g: str, prec: str, tp: int) -> set[tuple[int, int]]:
            return {(k[4], k[5]) for k in self.tps if k[:4] == (name, g, prec, tp)}

        common = pairs(*target) & pairs(*reference)

        def distance(p: tuple[int, int]) -> float:
            return math.hypot(math.log(p[0] / REF_INPUT_TOKENS), math.log(p[1] / REF_OUTPUT_TOKENS))

        chosen = sorted(common, key=lambda p: (distance(p), p))[:2]
        if len(chosen) < 2:
            raise ValueError(f"TRT table lacks common ISL/OSL for {model} {target} {reference}")
        value = _geomean(
            self.tps[(name, *target, *p)] / self.tps[(name, *reference, *p)] for p in chosen
        )
        tg, tprec, ttp = target
        rg, rprec, rtp = reference
        io = " and ".join(f"{i}/{o}" for i, o in chosen)
        how = (
            f"TRT-LLM v0.14 {name} {tg} {tprec} TP{ttp} / {rg} {rprec} TP{rtp} = "
            f"{value:.3f}, geomean over ISL/OSL {io}"
        )
        return Ratio(value, how)


def sweep_ratio(target: Sweep, reference: Sweep, what: str) -> Ratio:
    """Geometric mean of rps(target)/rps(reference) over the batch sizes both measured."""
    ref = {p.batch: p.rps for p in reference.points}
    common = [(p.rps, ref[p.batch]) for p in target.points if p.batch in ref]
    if not common:
        raise ValueError(f"no common batch sizes for {what}")
    value = _geomean(a / b for a, b in common)
    batches = ",".join(str(p.batch) for p in target.points if p.batch in ref)
    return Ratio(value, f"{what} = {value:.3f}, geomean over batch {batches}")


# --- assembling the table -------------------------------------------------------------


def gpu_memory_by_kind(catalog_path: Path) -> dict[str, float]:
    """Memory per GPU of each kind in the bundled catalog."""
    doc = json.loads(catalog_path.read_text())
    sizes: dict[str, set[float]] = defaultdict(set)
    for t in doc["instance_types"]:
        sizes[t["gpu_kind"]].add(float(t["gpu_memory_gb"]))
    return {k: min(v) for k, v in sizes.items()}


def build(shared: Path, catalog_path: Path = CATALOG) -> tuple[str, list[str]]:
    """The profiles JSON text and a human-readable summary."""
    memory = gpu_memory_by_kind(catalog_path)
    models = {m.name: m for m in MODELS}
    measured = shuntserve_sweeps(shared) + splitwise_sageserve_sweeps(shared)

    def get(model: str, kind: str, tp: int) -> Sweep:
        (s,) = [s for s in measured if (s.model, s.gpu_kind, s.tp) == (model, kind, tp)]
        return s

    trt = TrtTable(shared)
    a100 = ("A100-80GB", "FP16", 1)
    h100_fp16 = trt.ratio("llama-3.1-8b", ("H100", "FP16", 1), a100)
    # H200 and L40S appear only in FP8: take their FP8 ratio to H100 and chain it to the
    # like-for-like FP16 ratio H100/A100 (we serve bf16).
    gpu_vs_a100: dict[str, Ratio] = {
        "H100": h100_fp16,
        "H200": h100_fp16 * trt.ratio("llama-3.1-8b", ("H200", "FP8", 1), ("H100", "FP8", 1)),
        "L40S": h100_fp16 * trt.ratio("llama-3.1-8b", ("L40S", "FP8", 1), ("H100", "FP8", 1)),
        "A100": Ratio(
            A100_40_OVER_80, f"A100 40GB/80GB HBM bandwidth 1555/2039 = {A100_40_OVER_80:.3f}"
        ),
    }
    a10g_vs_l4 = sweep_ratio(
        get("llama-3.1-70b", "A10G", 8),
        get("llama-3.1-70b", "L4", 8),
        "shuntserve 70B TP8 rps A10G/L4",
    )
    # Model size: 8B vs 3B on the same A100-80GB and TP degree (SageServe), pooled over TP.
    r2 = sweep_ratio(
        get("llama-3.1-8b", "A100-80GB", 2), get("llama-3.2-3b", "A100-80GB", 2), "8B/3B TP2"
    )
    r4 = sweep_ratio(
        get("llama-3.1-8b", "A100-80GB", 4), get("llama-3.2-3b", "A100-80GB", 4), "8B/3B TP4"
    )
    b8_vs_3b = Ratio(
        _geomean([r2.value, r4.value]),
        f"sageserve A100-80GB rps 8B/3B = {_geomean([r2.value, r4.value]):.3f} "
        f"(TP2 {r2.value:.3f}, TP4 {r4.value:.3f}, geomean over batch 1-32)",
    )
    # A replica of a model that fits one GPU gains little from more GPUs in SageServe's
    # A100 sweeps (TP4/TP2 below), so the TP2 sweep stands in for TP1.
    tp4_vs_tp2 = {
        m: sweep_ratio(get(m, "A100-80GB", 4), get(m, "A100-80GB", 2), f"sageserve {m} TP4/TP2")
        for m in ("llama-3.2-3b", "llama-3.1-8b")
    }

    sweeps: list[Sweep] = list(measured)
    for m in ("llama-3.2-3b", "llama-3.1-8b"):
        tp2 = get(m, "A100-80GB", 2)
        tp1 = tp2.scaled(m, "A100-80GB", 1, 1.0, f"TP2 replica taken as TP1: {tp4_vs_tp2[m].how}")
        sweeps.append(tp1)
        for kind, r in gpu_vs_a100.items():
            sweeps.append(tp1.scaled(m, kind, 1, r.value, r.how))
    l4_3b = get("llama-3.2-3b", "L4", 1)
    l4_8b = l4_3b.scaled("llama-3.1-8b", "L4", 1, b8_vs_3b.value, b8_vs_3b.how)
    sweeps.append(l4_8b)
    sweeps.append(l4_3b.scaled("llama-3.2-3b", "A10G", 1, a10g_vs_l4.value, a10g_vs_l4.how))
    sweeps.append(l4_8b.scaled("llama-3.1-8b", "A10G", 1, a10g_vs_l4.value, a10g_vs_l4.how))
    m70 = "llama-3.1-70b"
    for tp in (4, 8):
        r = trt.ratio(m70, ("H200", "FP8", tp), ("H100", "FP8", tp))
        sweeps.append(get(m70, "H100", tp).scaled(m70, "H200", tp, r.value, r.how))
    r = trt.ratio(m70, ("H200", "FP8", 2), ("H100", "FP8", 4))
    sweeps.append(get(m70, "H100", 4).scaled(m70, "H200", 2, r.value, r.how))
    r = trt.ratio(m70, ("L40S", "FP8", 4), ("L40S", "FP8", 8))
    sweeps.append(get(m70, "L40S", 8).scaled(m70, "L40S", 4, r.value, r.how))

    # Memory rule: drop (model, GPU group) pairs whose memory is below the model's need.
    kept: list[Sweep] = []
    dropped: list[str] = []
    for s in sweeps:
        if memory[s.gpu_kind] * s.tp < models[s.model].gpu_memory_gb:
            dropped.append(f"{s.model} on {s.tp} x {s.gpu_kind}: does not fit, dropped")
            continue
        kept.append(s)

    slo_ms: dict[str, float] = {}
    slo_how: dict[str, str] = {}
    for spec in MODELS:
        candidates = [s for s in kept if s.model == spec.name and s.gpu_kind == SLO_GPU]
        s = min(candidates, key=lambda s: s.tp)
        (p,) = [p for p in s.points if p.batch == SLO_BATCH]
        slo_ms[spec.name] = math.ceil(p.latency_ms / 1000.0) * 1000.0
        slo_how[spec.name] = (
            f"latency at batch {SLO_BATCH} on {s.tp} x {SLO_GPU} ({p.latency_ms:.0f} ms, "
            f"{'measured' if s.measured else 'derived'}) rounded up to a whole second"
        )

    rows: list[list[Any]] = []
    for s in sorted(kept, key=lambda s: (s.model, s.gpu_kind, s.tp, s.source)):
        for p in s.points:
            rows.append(
                [
                    s.model,
                    s.gpu_kind,
                    s.tp,
                    p.batch,
                    round(p.rps, 5),
                    round(p.latency_ms, 1),
                    round(p.tpot_ms, 2),
                    s.source,
                ]
            )
    keys = [tuple(r[:4]) for r in rows]
    if len(set(keys)) != len(keys):
        raise ValueError("two rows for the same (model, gpu, tp, batch)")

    ratios = {
        "gpu_vs_A100-80GB_tp1": {
            k: {"value": round(v.value, 4), "how": v.how} for k, v in sorted(gpu_vs_a100.items())
        },
        "A10G_vs_L4": {"value": round(a10g_vs_l4.value, 4), "how": a10g_vs_l4.how},
        "8b_vs_3b": {"value": round(b8_vs_3b.value, 4), "how": b8_vs_3b.how},
        "tp4_vs_tp2_small_models": {
            m: {"value": round(r.value, 4), "how": r.how} for m, r in sorted(tp4_vs_tp2.items())
        },
    }
    doc: dict[str, Any] = {
        "sources": SOURCES,
        "reference_mix": {
            "input_tokens": REF_INPUT_TOKENS,
            "output_tokens": REF_OUTPUT_TOKENS,
            "why": "ShuntServe's fixed lengths, close to the Azure 2023 conversation trace",
        },
        "memory_rule": f"a replica needs params x {BYTES_PER_PARAM:g} bytes (bf16) x "
        f"{KV_OVERHEAD:g} (KV cache); no row for a GPU group with less memory",
        "slo_rule": f"default latency SLO = end-to-end latency at batch {SLO_BATCH} on "
        f"{SLO_GPU}, rounded up to a whole second",
        "ratios": ratios,
        "models": [
            {
                "name": m.name,
                "params_b": m.params_b,
                "gpu_memory_gb": m.gpu_memory_gb,
                "latency_slo_ms": slo_ms[m.name],
                "checkpoint": m.hf_id,
                "slo_source": slo_how[m.name],
            }
            for m in MODELS
        ],
        "profile_columns": [
            "model",
            "gpu_kind",
            "gpu_count",
            "batch_size",
            "rps",
            "latency_ms",
            "tpot_ms",
            "source",
        ],
        "profiles": rows,
    }
    summary = [f"{len(rows)} rows, {len(kept)} sweeps", *dropped]
    summary += [f"SLO {m}: {slo_ms[m]:.0f} ms ({slo_how[m]})" for m in slo_ms]
    summary += [f"ratio {k}: {json.dumps(v)}" for k, v in ratios.items()]
    summary += best_table(rows, slo_ms)
    return render(doc), summary


def best_table(rows: list[list[Any]], slo_ms: dict[str, float]) -> list[str]:
    """Best rps per replica at the SLO, per (model, GPU kind, TP)."""
    best: dict[tuple[str, str, int], tuple[float, int]] = {}
    for model, kind, tp, batch, rps, latency, _, _ in rows:
        if latency <= slo_ms[model] and rps > best.get((model, kind, tp), (0.0, 0))[0]:
            best[(model, kind, tp)] = (rps, batch)
    out = ["best rps per replica within the SLO (model, gpu, tp: rps @ batch):"]
    out += [
        f"  {m:14s} {k:10s} TP{tp}: {r:8.3f} @ {b}" for (m, k, tp), (r, b) in sorted(best.items())
    ]
    return out


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def render(doc: dict[str, Any]) -> str:
    """Compact JSON with one profile row per line."""
    parts: list[str] = []
    for key, value in doc.items():
        if key == "profiles":
            body = ",\n".join(_dumps(row) for row in value)
            parts.append(f"{_dumps(key)}:[\n{body}\n]")
        else:
            parts.append(f"{_dumps(key)}:{_dumps(value)}")
    return "{" + ",\n".join(parts) + "}\n"


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    """Build the profiles and print a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="shared data root")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output JSON path")
    parser.add_argument("--catalog", type=Path, default=CATALOG, help="catalog JSON (GPU memory)")
    args = parser.parse_args(argv)
    text, summary = build(args.shared, args.catalog)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="ascii")
    for line in summary:
        out(line)
    out(f"wrote {args.out} ({len(text.encode('ascii')):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
