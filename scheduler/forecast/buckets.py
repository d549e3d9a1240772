"""Request-size buckets: a demand's requests split by prompt length, so that the planner
may serve each range on the GPU kind that is cheapest for it (docs/profiles.md
"Placement by size").

The split is fixed and simple: prompt lengths cut at `PROMPT_EDGES` (tokens), each
bucket keeping its share of the requests and their mean prompt and output tokens; empty
ranges are left out. It needs per-request sizes (a `requests` trace, the Azure LLM
traces), or a prompt-length histogram (`from_histogram`: vLLM's
`vllm:request_prompt_tokens` buckets, read by the Prometheus source); where only mean
sizes are known (per-minute traces) a demand is one bucket, as before.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence

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


def from_histogram(
    le_rates: Mapping[float, float],
    size: RequestSize,
    edges: Sequence[float] = PROMPT_EDGES,
) -> tuple[SizeBucket, ...]:
    """Buckets cut at `edges` from a Prometheus histogram of prompt lengths: `le_rates`
    maps each `le` (the bucket's inclusive upper end in tokens, `math.inf` for `+Inf`) to
    its cumulative rate (e.g. `rate(vllm:request_prompt_tokens_bucket[5m])`); `size` is
    the series' mean size (its token counters over the same window).

    The histogram's ranges rarely match `edges` (vLLM cuts at 1-2-5 steps: ..., 500,
    1000, 2000, 5000, ...), so each range's requests are spread evenly over it, as
    Prometheus' `histogram_quantile` assumes, and split where an edge falls inside it.
    A bucket's mean prompt is the mean of those even spreads. The open last range (above
    the highest finite `le`) has no spread: its requests count at the prompt length that
    makes the whole mix's mean `size.input_tokens` (at least that `le`). The histogram says
    nothing of output lengths: every bucket gets `size.output_tokens`.

    () (one bucket at the mean, as without a histogram) when the histogram cannot be
    read: a rate NaN, infinite or negative, no `+Inf` bucket, no requests in the window,
    or `size` not finite and positive. Cumulative rates that dip (rate() of summed
    counters at a reset) are lifted to the running maximum, as Prometheus does."""
    cuts = [float(e) for e in edges]
    if any(not (e > 0 and math.isfinite(e)) for e in cuts) or cuts != sorted(set(cuts)):
        raise ValueError(f"edges must be increasing finite numbers > 0, got {list(edges)}")
    if not (
        math.isfinite(size.input_tokens)
        and math.isfinite(size.output_tokens)
        and size.input_tokens > 0
        and size.output_tokens > 0
    ):
        return ()
    points = sorted((float(le), float(v)) for le, v in le_rates.items())
    if not points or points[-1][0] != math.inf or any(le != le for le, _ in points):
        return ()
    if any(not (math.isfinite(v) and v >= 0) for _, v in points):
        return ()
    # Per histogram range (lo, hi]: its rate, lifted so the cumulative never falls.
    ranges: list[tuple[float, float, float]] = []
    lo, top = 0.0, 0.0
    for le, cum in points:
        rate = max(cum, top) - top
        top = max(cum, top)
        ranges.append((lo, max(le, lo), rate))
        lo = max(le, lo)
    total = top
    if total <= 0:
        return ()
    bounds = [0.0, *cuts, math.inf]
    weight = [0.0] * (len(bounds) - 1)  # rate per capsched bucket
    tokens = [0.0] * (len(bounds) - 1)  # rate x mean prompt per capsched bucket

    def add(at: float, rate: float) -> None:
        i = max(0, min(len(weight) - 1, bisect_right(cuts, at)))
        weight[i] += rate
        tokens[i] += rate * at

    open_rate = 0.0
    for lo, hi, rate in ranges:
        if rate <= 0:
            continue
        if hi == math.inf:
            open_rate += rate
            continue
        if hi <= lo:
            add(lo, rate)
            continue
        for i in range(len(weight)):
            a, b = max(lo, bounds[i]), min(hi, bounds[i + 1])
            if b > a:
                part = rate * (b - a) / (hi - lo)
                weight[i] += part
                tokens[i] += part * (a + b) / 2
    if open_rate > 0:
        floor = ranges[-1][0]
        rest = size.input_tokens * total - sum(tokens)
        add(max(floor, rest / open_rate), open_rate)
    return tuple(
        SizeBucket(
            bounds[i],
            bounds[i + 1],
            weight[i] / total,
            RequestSize(max(tokens[i] / weight[i], 1.0), size.output_tokens),
        )
        for i in range(len(weight))
        if weight[i] > 0
    )


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
