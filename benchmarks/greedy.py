"""Greedy cheapest-pool-first placement: the heuristic the solver benchmark compares to.

What a hand-written provisioner does: serve each demand from the pool with the lowest
price per rps it may use, then top up to satisfy the on-demand share, spot-loss
robustness and minimum replicas, each time with the cheapest node that helps. It
honours quotas and pool limits; it does not look ahead, so it overbuys where
constraints interact.
"""

from __future__ import annotations

import math

import numpy as np

from solver import Problem
from solver.problem import IntArray


def greedy(problem: Problem) -> IntArray:
    """Node counts per (model, pool) chosen greedily."""
    pools = problem.pools
    nodes = np.zeros_like(problem.current)
    quota_left = [q.max_gpus for q in problem.quotas]
    quota_of: list[list[int]] = [[] for _ in pools]
    for qi, q in enumerate(problem.quotas):
        for p in q.pools:
            quota_of[p].append(qi)

    def room(p: int) -> int:
        gpus = pools[p].gpus
        fits = min((quota_left[qi] // gpus for qi in quota_of[p]), default=10**9)
        return min(fits, pools[p].max_nodes - int(nodes[:, p].sum()))

    def add(m: int, p: int, n: int) -> int:
        n = min(n, room(p))
        if n > 0:
            nodes[m, p] += n
            for qi in quota_of[p]:
                quota_left[qi] -= n * pools[p].gpus
        return max(n, 0)

    def cost_per_rps(m: int, p: int) -> float:
        cap = problem.capacity_rps[m, p]
        return (pools[p].usd_per_hour + pools[p].risk_usd_per_hour) / cap if cap > 0 else math.inf

    def cheapest(m: int, ok: list[int]) -> list[int]:
        usable = [p for p in ok if problem.capacity_rps[m, p] > 0]
        return sorted(usable, key=lambda p: (cost_per_rps(m, p), p))

    def fill(m: int, order: list[int], rps: float) -> None:
        for p in order:
            if rps <= 1e-9:
                return
            want = math.ceil(rps / problem.capacity_rps[m, p] - 1e-9)
            got = add(m, p, want)
            rps -= got * problem.capacity_rps[m, p]

    all_pools = list(range(len(pools)))
    for m in range(len(problem.models)):
        demands = [d for d in problem.demands if d.model == m]
        reach = sorted({p for d in demands for p in all_pools if pools[p].location in d.locations})
        reach = reach or all_pools
        # 1. each demand from its cheapest reachable pools, using spare capacity first
        for d in demands:
            ok = [p for p in all_pools if pools[p].location in d.locations]
            fill(m, cheapest(m, ok), d.rps)
        total_demand = sum(d.rps for d in demands)
        cap = problem.capacity_rps[m]

        # 2. on-demand share of capacity
        share = problem.on_demand_share_min(m)
        od = [p for p in reach if not pools[p].spot]
        for p in cheapest(m, od):
            while (
                share > 0
                and (cap * nodes[m] * ~_spot(problem)).sum() < share * (cap * nodes[m]).sum() - 1e-9
            ):
                if add(m, p, 1) == 0:
                    break

        # 3. spot-loss robustness, domain by domain
        alpha = problem.robustness_share(m, float(total_demand))
        for z in sorted({pools[p].failure_domain for p in reach if pools[p].spot}):
            outside = [p for p in reach if not (pools[p].spot and pools[p].failure_domain == z)]
            lost = _spot(problem) & (_domains(problem) == z)
            short = alpha * total_demand - float((cap * nodes[m] * ~lost).sum())
            if short > 1e-9:
                fill(m, cheapest(m, outside), short)

        # 4. minimum replicas
        missing = problem.replicas_min(m) - int(nodes[m].sum())
        if missing > 0:
            by_price = [p for p in reach if cap[p] > 0]
            for p in sorted(by_price, key=lambda p: (pools[p].usd_per_hour, p)):
                missing -= add(m, p, missing)
                if missing <= 0:
                    break
    return nodes


def _spot(problem: Problem) -> np.ndarray:
    return np.array([p.spot for p in problem.pools], dtype=bool)


def _domains(problem: Problem) -> np.ndarray:
    return np.array([p.failure_domain for p in problem.pools], dtype=np.int64)
