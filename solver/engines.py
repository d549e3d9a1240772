"""OR-Tools solver objects for the searches: one SCIP solver per thread, cleared and reused.

Creating an OR-Tools SCIP solver builds a SCIP instance with all its plugins, and
deleting one builds another (the destructor clears the solver, and clearing re-creates
SCIP) before freeing both: two instances per search where one does. A solver cleared with
`Solver.Clear` holds a fresh SCIP instance with default settings and no model, hint or
parameters of the search before, so the same problem gives the same plan as on a new
solver. With SCIP's statistics clocks off (solver.mip), 3-4% less solve time on the 7-day
BurstGPT replay (docs/solver.md, "Replay speed of the BurstGPT week").

A reused solver's variables and constraints die at its next `Clear`: a caller reads
everything it needs from one search before it builds the next on the same thread.
LP solvers (GLOP, for relaxations) are cheap to create and are not reused.
"""

from __future__ import annotations

import threading

from ortools.linear_solver import pywraplp

_REUSED = frozenset({"SCIP"})


class _PerThread(threading.local):
    """The reusable solvers of one thread, by OR-Tools solver id."""

    def __init__(self) -> None:
        self.solvers: dict[str, pywraplp.Solver] = {}


_LOCAL = _PerThread()


def new_solver(solver_id: str) -> pywraplp.Solver:
    """An empty OR-Tools solver `solver_id` ("SCIP", "HIGHS", "GLOP"): a cleared one of
    this thread for SCIP (see the module docstring), a new one otherwise."""
    if solver_id in _REUSED and (lp := _LOCAL.solvers.get(solver_id)) is not None:
        lp.Clear()
        return lp
    lp = pywraplp.Solver.CreateSolver(solver_id)
    if lp is None:  # pragma: no cover - every backend ships in the ortools wheel
        raise RuntimeError(f"OR-Tools backend {solver_id} is not available")
    if solver_id in _REUSED:
        _LOCAL.solvers[solver_id] = lp
    return lp
