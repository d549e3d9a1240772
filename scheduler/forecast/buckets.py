"""Request-size buckets: a demand's requests split by prompt length, so that the planner
may serve each range on the GPU kind that is cheapest for it (docs/profiles.md
"Placement by size").

The split is fixed and simple: prompt lengths cut at `PROMPT_EDGES` (tokens), each
bucket keeping its share of the requests and their mean prompt and output tokens; empty
ranges are left out. It needs per-request sizes (a `requests` trace, the Azure LLM
traces); where only mean sizes are known (the Prometheus source, per-minute traces) a
demand is one bucket, as before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from scheduler.domain import REFERENCE_SIZE, Demand, RequestSize, SizeBucket

# Prompt lengths (tokens) where buckets are cut: short chat turns, the bulk of the
# Azure 2023 traces (conversation median 1,020, code mean 2,048), and long contexts.
PROMPT_EDGES: tuple[float, ...] = (1024.0, 4096.0)


def split_by_prompt(
    input_tokens: ArrayLike,
    output_tokens: ArrayLike,
    edges: Sequence[float] = PROMPT_EDGES,
) -> tuple[SizeBucket, ...]:
    """The requests given by their prompt and output tokens, split at the prompt lengths
    `edges` (increasing, > 0): one bucket per non-empty range [lo, hi) with its share of
    the requests and their mean size, in increasing prompt length; () for no request.
    The shares sum to 1 (to rounding), so a bucketed demand's rate is conserved."""
    inp = np.asarray(input_tokens, dtype=np.float64)
    out = np.asarray(output_tokens, dtype=np.float64)
    if inp.shape != out.shape or inp.ndim != 1:
        raise ValueError("input and output tokens must be 1-d arrays of the same length")
    cuts = [float(e) for e in edges]
    if any(not (e > 0 and math.isfinite(e)) for e in cuts) or cuts != sorted(set(cuts)):
        raise ValueError(f"edges must be increasing finite numbers > 0, got {list(edges)}")
    if inp.size == 0:
        return ()
    bounds = [0.0, *cuts, math.inf]
    which = np.searchsorted(np.asarray(cuts), inp, side="right")
    out_buckets: list[SizeBucket] = []
    for i in range(len(bounds) - 1):
        members = which == i
        n = int(members.sum())
        if n == 0:
            continue
        size = RequestSize(float(inp[members].mean()), float(out[members].mean()))
        out_buckets.append(SizeBucket(bounds[i], bounds[i + 1], n / inp.size, size))
    return tuple(out_buckets)


def mean_size(buckets: Sequence[SizeBucket]) -> RequestSize:
    """The share-weighted mean size of `buckets` (non-empty)."""
    total = sum(b.share for b in buckets)
    inp = sum(b.share * b.size.input_tokens for b in buckets) / total
    out = sum(b.share * b.size.output_tokens for b in buckets) / total
    return RequestSize(inp, out)


def bucketed_demand(model: str, region: str, rps: float, buckets: Sequence[SizeBucket]) -> Demand:
    """A demand of `rps` split into `buckets`, its `size` their mean (what a planner that
    does not place by size counts it as)."""
    if not buckets:
        return Demand(model, region, rps)
    return Demand(model, region, rps, mean_size(buckets), tuple(buckets))


def demand_buckets(demand: Demand) -> tuple[SizeBucket, ...]:
    """`demand`'s buckets; a demand without any is one bucket of every prompt length at
    its size (the reference request when it has none)."""
    if demand.buckets:
        return demand.buckets
    return (SizeBucket(0.0, math.inf, 1.0, demand.size or REFERENCE_SIZE),)


def merge_buckets(demand: Sequence[Demand]) -> tuple[SizeBucket, ...]:
    """The buckets of the sum of `demand` (entries of one series): per prompt range, the
    entries' rates added and their sizes averaged by rate (by share when no entry has a
    rate), in increasing range; () when no entry has buckets (the sum is one bucket)."""
    if not any(d.buckets for d in demand):
        return ()
    total = sum(max(d.rps, 0.0) for d in demand)
    acc: dict[tuple[float, float], list[float]] = {}
    for d in demand:
        for b in demand_buckets(d):
            w = max(d.rps, 0.0) * b.share if total > 0 else b.share / len(demand)
            row = acc.setdefault((b.min_input_tokens, b.max_input_tokens), [0.0, 0.0, 0.0])
            row[0] += w
            row[1] += w * b.size.input_tokens
            row[2] += w * b.size.output_tokens
    weight = sum(row[0] for row in acc.values())
    return tuple(
        SizeBucket(lo, hi, w / weight, RequestSize(i / w, o / w))
        for (lo, hi), (w, i, o) in sorted(acc.items())
        if w > 0
    )
