"""The load signal interface: request rate per (model, source region).

A sample is either a finite rate or missing (NaN); a source never turns a missing or
stale reading into zero, because a zero would let the planner scale the fleet down.
"""

from __future__ import annotations

import math
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

    def complete(self, expected: set[tuple[str, str]]) -> bool:
        """Whether every expected series has a finite, non-negative rate."""
        for key in expected:
            v = self.rps.get(key, math.nan)
            if not (math.isfinite(v) and v >= 0):
                return False
        return True


class MetricsSource(Protocol):
    """Where demand comes from: Prometheus in the daemon, a trace in the simulator."""

    async def demand(self, now_s: float) -> DemandSample:
        """Current request rates; missing series are absent or NaN."""
        ...
