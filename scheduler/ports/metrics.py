"""The load signal interface: request rate per (model, source region).

A sample is either a finite rate or missing (NaN); a source never turns a missing or
stale reading into zero, because a zero would let the planner scale the fleet down.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class DemandSample:
    """Request rates at one moment."""

    at_s: float  # time the rates describe
    rps: Mapping[tuple[str, str], float] = field(default_factory=dict)  # (model, region) -> rps
    # Highest short-window rate (e.g. per minute) since the previous sample, where the source
    # knows it: capacity must cover the peaks inside a tick, not the average over it.
    peak_rps: Mapping[tuple[str, str], float] = field(default_factory=dict)
    # Requests waiting in the model servers' queues (e.g. vLLM's num_requests_waiting), where
    # the source knows it: a standing queue is load the rate alone does not show.
    waiting: Mapping[tuple[str, str], float] = field(default_factory=dict)

    def complete(self, expected: set[tuple[str, str]]) -> bool:
        """Whether every expected series has a finite, non-negative rate (and peak, where
        one is given). Readings that are not numbers count as missing."""
        rps, peak = _rates(self.rps), _rates(self.peak_rps)
        for key in expected:
            v, p = rps.get(key, math.nan), peak.get(key, 0.0)
            if not (math.isfinite(v) and v >= 0 and math.isfinite(p) and p >= 0):
                return False
        return True

    def cleaned(self) -> DemandSample:
        """The same sample with every reading a float: anything that is not a real number
        (None, text, a list) reads as missing (NaN), never as zero."""
        return DemandSample(
            self.at_s, _rates(self.rps), _rates(self.peak_rps), _rates(self.waiting)
        )


def _rate(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return math.nan
    try:
        return float(value)
    except OverflowError:  # an int too big for a float
        return math.inf


def _rates(readings: object) -> dict[tuple[str, str], float]:
    if not isinstance(readings, Mapping):
        return {}
    return {key: _rate(v) for key, v in readings.items()}


class MetricsSource(Protocol):
    """Where demand comes from: Prometheus in the daemon, a trace in the simulator."""

    async def demand(self, now_s: float) -> DemandSample:
        """Current request rates; missing series are absent or NaN."""
        ...
