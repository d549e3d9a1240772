"""Per-step size buckets of a trace: each step's requests split by prompt length as the
planner splits a demand (`scheduler.forecast.buckets.split_by_prompt`), per series; what
a replay with per-request sizes carries to place by size (docs/profiles.md "Placement by
size", "In the replay").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from scheduler.domain import RequestSize, SizeBucket
from scheduler.forecast.buckets import PROMPT_EDGES


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
