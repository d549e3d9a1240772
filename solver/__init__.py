"""The placement solver: a pure function from `Problem` to `Solution` on OR-Tools CP-SAT.

No I/O, no clock reads that affect the answer, no cloud knowledge.
"""

from solver.cpsat import fleet_cost, fleet_price, solve
from solver.problem import DemandSpec, PoolSpec, Problem, QuotaSpec, Solution, Status

__all__ = [
    "DemandSpec",
    "PoolSpec",
    "Problem",
    "QuotaSpec",
    "Solution",
    "Status",
    "fleet_cost",
    "fleet_price",
    "solve",
]
