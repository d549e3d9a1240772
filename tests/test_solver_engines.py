"""Reused SCIP solvers (solver.engines): a cleared solver plans as a new one does."""

from __future__ import annotations

import threading

import numpy as np

from solver import DemandSpec, PoolSpec, Problem, solve
from solver.engines import new_solver


def _problem(rps: float) -> Problem:
    pools = (
        PoolSpec("od", 0, 0, False, 3.0),
        PoolSpec("spot", 0, 1, True, 1.0, risk_usd_per_hour=0.2),
        PoolSpec("big", 0, 0, False, 5.0, gpus=2),
    )
    return Problem(
        models=("m",),
        pools=pools,
        capacity_rps=np.array([[10.0, 10.0, 25.0]]),
        demands=(DemandSpec(0, "r", rps, (0,)),),
        current=np.array([[1, 0, 0]], dtype=np.int64),
    )


def test_scip_solver_is_reused_and_cleared() -> None:
    first = new_solver("SCIP")
    first.IntVar(0, 3, "x")
    second = new_solver("SCIP")
    assert second is first
    assert second.NumVariables() == 0 and second.NumConstraints() == 0


def test_lp_solvers_are_new_each_time() -> None:
    assert new_solver("GLOP") is not new_solver("GLOP")


def test_each_thread_has_its_own_solver() -> None:
    mine = new_solver("SCIP")
    theirs: list[object] = []
    worker = threading.Thread(target=lambda: theirs.append(new_solver("SCIP")))
    worker.start()
    worker.join()
    assert theirs and theirs[0] is not mine


def test_searches_on_a_reused_solver_give_the_same_plans() -> None:
    # The same problems, in turn, with other searches between: the same plans each time.
    problems = [_problem(rps) for rps in (5.0, 37.0, 12.0, 61.0)]
    first = [solve(p, node_limit=100) for p in problems]
    again = [solve(p, node_limit=100) for p in reversed(problems)][::-1]
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a.nodes, b.nodes)
        assert a.objective == b.objective and a.unmet_rps == b.unmet_rps
