"""The placement solver: a pure function from `Problem` to `Solution` on OR-Tools.

No I/O, no clock reads that affect the answer, no cloud knowledge.
"""

from solver.mip import Backend, fleet_cost, fleet_price, solve
from solver.problem import (
    DemandSpec,
    PoolSpec,
    Problem,
    QuotaSpec,
    Relaxation,
    SizeClassSpec,
    Solution,
    SpendCap,
    Status,
)

__all__ = [
    "Backend",
    "DemandSpec",
    "PoolSpec",
    "Problem",
    "QuotaSpec",
    "Relaxation",
    "SizeClassSpec",
    "Solution",
    "SpendCap",
    "Status",
    "fleet_cost",
    "fleet_price",
    "solve",
]
