"""Cost at equal SLO: each policy's cost/SLO curve from a sweep of its own knob.

A cheaper policy at a worse SLO attainment is not a win, and neither is the reverse. So a
fair comparison sweeps each policy's knob (capsched's `forecast.plan_quantile`, the
reactive autoscaler's `planning.target_utilization`, SpotHedge's over-provisioning), keeps
the curve's efficient points and reads the cost at one SLO attainment off it:

    points = [SweepPoint("0.9", cost_usd=31.2, slo=0.991), SweepPoint("0.95", 33.0, 0.996)]
    cost_at_slo(points, 0.995)   # -> 32.64 (linear between the two efficient points)

`benchmarks/bench_frontier.py` runs the sweeps over the shared traces and plots them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SweepPoint:
    """One run of a sweep: the knob's value, what it cost and the SLO it reached."""

    knob: str  # the knob's value as set, for tables
    cost_usd: float  # the run's total cost
    slo: float  # its SLO attainment, 0..1


def efficient(points: Sequence[SweepPoint]) -> list[SweepPoint]:
    """The points no other point beats on both cost and SLO (ties: the first listed),
    ordered by SLO attainment; cost rises along them."""
    usable = [p for p in points if math.isfinite(p.cost_usd) and math.isfinite(p.slo)]
    out: list[SweepPoint] = []
    # From the highest SLO down, a point is efficient when it is cheaper than every point
    # of higher (or equal) SLO kept so far.
    for p in sorted(usable, key=lambda p: (-p.slo, p.cost_usd)):
        if not out or p.cost_usd < out[-1].cost_usd:
            out.append(p)
    return out[::-1]


def cost_at_slo(points: Sequence[SweepPoint], target: float) -> float | None:
    """The cost of reaching SLO attainment `target` on the curve of `points`: linear between
    the efficient points around it, the cheapest point's cost when every point reaches it,
    None when none does (no extrapolation beyond what was run)."""
    front = efficient(points)
    if not front or front[-1].slo < target:
        return None
    if front[0].slo >= target:
        return front[0].cost_usd
    for lo, hi in itertools.pairwise(front):
        if lo.slo < target <= hi.slo:
            share = (target - lo.slo) / (hi.slo - lo.slo)
            return lo.cost_usd + share * (hi.cost_usd - lo.cost_usd)
    raise AssertionError("unreachable: the front brackets the target")
