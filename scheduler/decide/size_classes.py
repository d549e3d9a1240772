"""Size classes: which models the planner places by size, and the requests of each
class (docs/solver.md "Placement by size").

A model is placed by size when its demand names more than one prompt-length range
(`Demand.buckets`); each range is a class whose size is the rate-weighted mean of that
range's buckets over the model's source regions. A model with one range (or none: every
demand without buckets) is no class at all, and the planner builds exactly the problem
it built before sizes were placed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scheduler.domain import Demand, RequestSize
from scheduler.forecast.buckets import demand_buckets


@dataclass(frozen=True, slots=True)
class SizeClass:
    """The requests of one model whose prompts fall in one range."""

    model: str  # model name
    min_input_tokens: float  # prompt tokens, inclusive lower end
    max_input_tokens: float  # prompt tokens, exclusive upper end (inf: no end)
    size: RequestSize  # their mean size over the model's demand (rate-weighted)

    @property
    def range(self) -> tuple[float, float]:
        """(min, max) prompt tokens: the class's identity within its model."""
        return (self.min_input_tokens, self.max_input_tokens)


def size_classes(demand: Sequence[Demand]) -> dict[str, tuple[SizeClass, ...]]:
    """Per model placed by size, its classes in increasing prompt range. A class's size
    is its buckets' mean weighted by rate (by share where the range has no rate, and
    equally where it has neither)."""
    found: dict[str, dict[tuple[float, float], list[tuple[float, float, RequestSize]]]] = {}
    for d in demand:
        ranges = found.setdefault(d.model, {})
        for b in demand_buckets(d):
            entry = (max(d.rps, 0.0) * b.share, b.share, b.size)
            ranges.setdefault((b.min_input_tokens, b.max_input_tokens), []).append(entry)
    out: dict[str, tuple[SizeClass, ...]] = {}
    for model, ranges in found.items():
        if len(ranges) >= 2:
            out[model] = tuple(
                SizeClass(model, lo, hi, _weighted(entries))
                for (lo, hi), entries in sorted(ranges.items())
            )
    return out


def _weighted(entries: Sequence[tuple[float, float, RequestSize]]) -> RequestSize:
    """The mean size of (rate, share, size) entries: rate-weighted, else share-, else
    plainly."""
    rates, shares = [e[0] for e in entries], [e[1] for e in entries]
    weights = rates if sum(rates) > 0 else shares if sum(shares) > 0 else [1.0] * len(entries)
    total = sum(weights)
    inp = sum(w * e[2].input_tokens for w, e in zip(weights, entries, strict=True)) / total
    out = sum(w * e[2].output_tokens for w, e in zip(weights, entries, strict=True)) / total
    return RequestSize(inp, out)
