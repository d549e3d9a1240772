"""The recent request-size bucket mix per series: what a policy placing by size splits a
planned rate into (`[planning] place_by_size`, docs/profiles.md "Placement by size").

Where the load signal reports each series' requests split by prompt length
(`DemandSample.buckets`: a trace with per-request sizes; the daemon's source where it has
a prompt-length histogram), this keeps per (model, region) and prompt range an
exponentially weighted mean of the range's share of the requests and of its mean prompt
and output tokens, with the half-life of the size mean (`SIZE_HALF_LIFE_S`, in time, not
ticks). A range missing from a reading counts as share 0 in it.

The planned split is per range the larger of its mean share and its share in the latest
reading, as the planned size is the heavier of the mean and the latest
(`scheduler.forecast.sizes`): a minute with more long prompts counts at once. Those
shares then sum to at least 1; the planned demand is the rate times that sum, split in
proportion (so every range is planned for at least its larger share of the rate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from scheduler.domain import Demand, RequestSize, SizeBucket
from scheduler.forecast.buckets import mean_size
from scheduler.forecast.sizes import SIZE_HALF_LIFE_S
from scheduler.ports.metrics import DemandSample

Range = tuple[float, float]  # (min, max) prompt tokens of a bucket

# Shares below this are left out of a plan (a range the mix has all but left).
MIN_SHARE = 1e-4


@dataclass
class _RangeMean:
    """One prompt range's weighted means within one series."""

    share: float  # mean share of the series' requests
    input_tokens: float  # mean prompt tokens of the range's requests
    output_tokens: float  # mean output tokens of the range's requests


@dataclass
class BucketMix:
    """Exponentially weighted bucket mix per (model, region)."""

    half_life_s: float = SIZE_HALF_LIFE_S  # time for an old reading's weight to halve
    # (model, region) -> (time of the last reading, per range its means)
    means: dict[tuple[str, str], tuple[float, dict[Range, _RangeMean]]] = field(
        default_factory=dict
    )
    # (model, region) -> the buckets of the last reading
    latest: dict[tuple[str, str], tuple[SizeBucket, ...]] = field(default_factory=dict)

    def update(self, sample: DemandSample) -> None:
        """Take the buckets of `sample` (at `sample.at_s`); a series without buckets, or
        with shares that do not add up to a positive number, keeps its mean."""
        for key, buckets in sample.buckets.items():
            if not _usable(buckets):
                continue
            total = sum(b.share for b in buckets)
            now = {(b.min_input_tokens, b.max_input_tokens): b for b in buckets}
            self.latest[key] = tuple(
                SizeBucket(b.min_input_tokens, b.max_input_tokens, b.share / total, b.size)
                for b in buckets
            )
            last = self.means.get(key)
            if last is None:
                self.means[key] = (
                    sample.at_s,
                    {
                        r: _RangeMean(b.share / total, b.size.input_tokens, b.size.output_tokens)
                        for r, b in now.items()
                    },
                )
                continue
            at, ranges = last
            dt = max(0.0, sample.at_s - at)
            w = 1.0 - 0.5 ** (dt / self.half_life_s) if self.half_life_s > 0 else 1.0
            for r in set(ranges) | set(now):
                b = now.get(r)
                m = ranges.get(r)
                if m is None:
                    assert b is not None
                    ranges[r] = _RangeMean(
                        w * b.share / total, b.size.input_tokens, b.size.output_tokens
                    )
                    continue
                share = b.share / total if b is not None else 0.0
                m.share += w * (share - m.share)
                if b is not None:
                    m.input_tokens += w * (b.size.input_tokens - m.input_tokens)
                    m.output_tokens += w * (b.size.output_tokens - m.output_tokens)
            self.means[key] = (max(at, sample.at_s), ranges)

    def buckets(self, key: tuple[str, str]) -> tuple[tuple[SizeBucket, ...], float]:
        """The buckets to plan series `key` with (shares summing to 1, in increasing
        prompt range) and the factor on its rate (>= 1: the larger shares of the mean and
        the latest reading, summed); ((), 1.0) before any reading."""
        got = self.means.get(key)
        if got is None:
            return (), 1.0
        latest = {(b.min_input_tokens, b.max_input_tokens): b for b in self.latest.get(key, ())}
        planned: list[tuple[Range, float, RequestSize]] = []
        for r, m in sorted(got[1].items()):
            now = latest.get(r)
            share = max(m.share, now.share if now is not None else 0.0)
            if share < MIN_SHARE:
                continue
            size = RequestSize(m.input_tokens, m.output_tokens)
            if now is not None and now.size.tokens > size.tokens:
                size = now.size  # the heavier, as for the mean size
            planned.append((r, share, size))
        total = sum(share for _, share, _ in planned)
        if total <= 0:
            return (), 1.0
        out = tuple(SizeBucket(r[0], r[1], share / total, size) for r, share, size in planned)
        return out, total

    def split(self, demand: Demand) -> Demand:
        """`demand` split into its series' planned buckets (rate times their factor, size
        their mean); unchanged without a reading or with one bucket."""
        buckets, factor = self.buckets((demand.model, demand.region))
        if len(buckets) < 2:
            return demand
        return Demand(demand.model, demand.region, demand.rps * factor, mean_size(buckets), buckets)


def _usable(buckets: tuple[SizeBucket, ...]) -> bool:
    """Whether a reading's buckets can be taken: finite non-negative shares with a
    positive sum, finite positive sizes."""
    if not buckets:
        return False
    for b in buckets:
        if not (math.isfinite(b.share) and b.share >= 0):
            return False
        if not (math.isfinite(b.size.input_tokens) and math.isfinite(b.size.output_tokens)):
            return False
    return sum(b.share for b in buckets) > 0
