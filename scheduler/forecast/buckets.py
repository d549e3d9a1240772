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
from dataclasses import dataclass

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


@dataclass(frozen=True, eq=False)
class BucketSteps:
    """Per series and step, the requests split by prompt length at `edges`: each
    bucket's share of the step's requests and their mean sizes (what a trace with
    per-request sizes gives; docs/profiles.md "Placement by size"). Bucket i is the range
    [lo, hi) of `ranges()[i]`; a step without a request has NaN shares."""

    edges: tuple[float, ...]  # prompt lengths cut at (increasing, > 0)
    shares: np.ndarray  # (buckets, series, steps): share of the step's requests; NaN: none
    tokens: np.ndarray  # (2, buckets, series, steps): mean input, output tokens; NaN: empty

    @property
    def n_buckets(self) -> int:
        """Number of prompt ranges (len(edges) + 1)."""
        return len(self.edges) + 1

    @property
    def n_steps(self) -> int:
        """Number of steps."""
        return int(self.shares.shape[2])

    def ranges(self) -> tuple[tuple[float, float], ...]:
        """(min, max) prompt tokens of each bucket, in order."""
        bounds = [0.0, *self.edges, math.inf]
        return tuple((bounds[i], bounds[i + 1]) for i in range(self.n_buckets))

    def at(self, row: int, step: int) -> tuple[SizeBucket, ...]:
        """Series `row`'s non-empty buckets at `step` (clamped to the trace); () for a
        step without a request."""
        t = min(max(step, 0), self.n_steps - 1)
        out: list[SizeBucket] = []
        for b, (lo, hi) in enumerate(self.ranges()):
            share = float(self.shares[b, row, t])
            if not (math.isfinite(share) and share > 0):
                continue
            size = RequestSize(float(self.tokens[0, b, row, t]), float(self.tokens[1, b, row, t]))
            out.append(SizeBucket(lo, hi, share, size))
        return tuple(out)

    @classmethod
    def of_requests(
        cls,
        row_series: ArrayLike,
        step: ArrayLike,
        input_tokens: ArrayLike,
        output_tokens: ArrayLike,
        shape: tuple[int, int],
        edges: Sequence[float] = PROMPT_EDGES,
    ) -> BucketSteps:
        """The buckets of requests given one per entry: their series, step and sizes, on a
        grid of `shape` (series, steps); cut as `split_by_prompt` cuts."""
        cuts = tuple(float(e) for e in edges)
        rows, steps = np.asarray(row_series, np.int64), np.asarray(step, np.int64)
        inp, out = np.asarray(input_tokens, np.float64), np.asarray(output_tokens, np.float64)
        which = np.searchsorted(np.asarray(cuts), inp, side="right")
        n_b = len(cuts) + 1
        counts = np.zeros((n_b, *shape))
        sums = np.zeros((2, n_b, *shape))
        np.add.at(counts, (which, rows, steps), 1.0)
        np.add.at(sums[0], (which, rows, steps), inp)
        np.add.at(sums[1], (which, rows, steps), out)
        total = counts.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            shares = np.where(total > 0, counts / total, np.nan)
            tokens = np.where(counts > 0, sums / counts, np.nan)
        return cls(cuts, shares, tokens)

    def merged(self, rows: Sequence[int], n_keys: int, rates: np.ndarray) -> BucketSteps:
        """The buckets of `n_keys` sums of series: series s goes into key `rows[s]`,
        weighted by its rate (`rates`, (series, steps)); a key with no rate at a step has
        NaN shares there."""
        n_b, n_t = self.n_buckets, self.n_steps
        weight = np.zeros((n_b, n_keys, n_t))
        sums = np.zeros((2, n_b, n_keys, n_t))
        for s, row in enumerate(rows):
            w = np.nan_to_num(self.shares[:, s]) * np.nan_to_num(rates[s])[None, :]
            weight[:, row] += w
            for k in range(2):
                sums[k, :, row] += w * np.nan_to_num(self.tokens[k, :, s])
        total = weight.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            shares = np.where(total > 0, weight / total, np.nan)
            tokens = np.where(weight > 0, sums / weight, np.nan)
        return BucketSteps(self.edges, shares, tokens)

    def select(self, rows: Sequence[int]) -> BucketSteps:
        """The buckets of series `rows` only, in that order."""
        return BucketSteps(self.edges, self.shares[:, rows], self.tokens[:, :, rows])

    def prepended(self, columns: Sequence[int], n: int) -> BucketSteps:
        """`n` steps before the first, per series a copy of its step `columns[series]`
        (a warm-up replaying one step's mix), then these steps."""
        idx = np.asarray(columns, dtype=np.int64)
        series = np.arange(len(idx))
        head_s = np.repeat(self.shares[:, series, idx][:, :, None], n, axis=2)
        head_t = np.repeat(self.tokens[:, :, series, idx][:, :, :, None], n, axis=3)
        return BucketSteps(
            self.edges,
            np.concatenate([head_s, self.shares], axis=2),
            np.concatenate([head_t, self.tokens], axis=3),
        )
