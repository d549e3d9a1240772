"""The placement model on OR-Tools CP-SAT.

Formulation (docs/solver.md has the long form):

* x[m,p]  integer nodes of model m in pool p
* y[k,l]  load of demand k routed to serving location l (milli-rps, integer)
* u[k]    unmet load of demand k (milli-rps), penalised
* i/d     nodes added/removed against the current fleet, for churn cost

minimise  sum (price + risk) x + launch * added + remove * removed + penalty * u
s.t.      sum_l y[k,l] + u[k] = D[k]                      every demand is served or counted unmet
          sum_k y[k,l] <= sum_{p in l} cap[m,p] x[m,p]   per model and location
          quotas, budget, minimum replicas, minimum on-demand share of capacity
          for every failure domain z with spot pools of m:
            capacity of m outside z's spot pools >= alpha * served load of m

CP-SAT is integer-only, so load is scaled to milli-rps and money to 1e-4 USD/hour;
capacities are rounded down and demand up, so rounding never overstates service.
"""

from __future__ import annotations

import functools
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from ortools.sat.python import cp_model

from solver.problem import IntArray, Problem, Solution, Status

RPS_SCALE = 1000  # milli-rps
USD_SCALE = 10_000  # 1e-4 USD/hour
SHARE_SCALE = 1000  # fractions in thousandths


@dataclass
class _Model:
    """A built CP-SAT model and the handles to read a solution back."""

    cp: cp_model.CpModel
    x: dict[tuple[int, int], cp_model.IntVar] = field(default_factory=dict)
    u: dict[int, cp_model.IntVar] = field(default_factory=dict)
    y: dict[tuple[int, int], cp_model.IntVar] = field(default_factory=dict)
    aux: list[cp_model.IntVar] = field(default_factory=list)  # churn vars, hinted to 0


def _usd(v: float) -> int:
    return round(v * USD_SCALE)


def candidate_pools(problem: Problem) -> dict[int, list[int]]:
    """Pools worth a variable for each model.

    A pool is kept when the model can run there (capacity > 0) and either some
    demand of the model may be routed to its location, the model already runs
    there, or the model has no demand at all (minimum replicas may go anywhere).
    Among the rest, a pool is dropped when another pool in the same location,
    failure domain, market and quotas is at least as good in every respect
    (capacity, accelerators, price, risk, churn cost, availability), which
    cannot change the optimum. Pools holding current nodes are always kept.
    """
    quota_sig: dict[int, frozenset[int]] = defaultdict(frozenset)
    for qi, q in enumerate(problem.quotas):
        for p in q.pools:
            quota_sig[p] = quota_sig[p] | {qi}
    locations: dict[int, set[int]] = defaultdict(set)
    for d in problem.demands:
        locations[d.model].update(d.locations)

    out: dict[int, list[int]] = {}
    for m in range(len(problem.models)):
        cap = problem.capacity_rps[m]
        cur = problem.current[m]
        groups: dict[tuple[object, ...], list[int]] = defaultdict(list)
        keep: list[int] = []
        for p, pool in enumerate(problem.pools):
            if cur[p] > 0:
                keep.append(p)
                continue
            if cap[p] <= 0 or pool.max_nodes <= 0:
                continue
            if locations[m] and pool.location not in locations[m]:
                continue
            groups[(pool.location, pool.failure_domain, pool.spot, quota_sig[p])].append(p)
        for members in groups.values():
            keep.extend(_undominated(problem, m, members))
        out[m] = sorted(set(keep))
    return out


def _undominated(problem: Problem, m: int, members: list[int]) -> list[int]:
    def vec(p: int) -> tuple[float, ...]:
        pool = problem.pools[p]
        # smaller is better in every coordinate
        return (
            -problem.capacity_rps[m, p],
            pool.gpus,
            pool.usd_per_hour,
            pool.risk_usd_per_hour,
            pool.launch_usd_per_hour,
            -pool.max_nodes,
        )

    ordered = sorted(members, key=lambda p: (vec(p)[2] / problem.capacity_rps[m, p], p))
    kept: list[int] = []
    for p in ordered:
        vp = vec(p)
        if not any(all(a <= b for a, b in zip(vec(q), vp, strict=True)) for q in kept):
            kept.append(p)
    return kept


def _build(problem: Problem, cands: dict[int, list[int]], fixed: IntArray | None) -> _Model:
    cp = cp_model.CpModel()
    mdl = _Model(cp)
    pools = problem.pools
    cap_int = np.floor(problem.capacity_rps * RPS_SCALE).astype(np.int64)
    demand_int = [math.ceil(d.rps * RPS_SCALE - 1e-9) for d in problem.demands]
    total_demand = np.zeros(len(problem.models), dtype=np.int64)
    for k, d in enumerate(problem.demands):
        total_demand[d.model] += demand_int[k]

    objective: list[cp_model.LinearExprT] = []
    for m, plist in cands.items():
        for p in plist:
            c = int(problem.current[m, p])
            if fixed is not None:
                ub = lb = int(fixed[m, p])
            else:
                lb = 0
                need = math.ceil(total_demand[m] / cap_int[m, p]) if cap_int[m, p] > 0 else 0
                ub = min(pools[p].max_nodes, max(need, problem.replicas_min(m), c))
            x = cp.new_int_var(lb, ub, f"x_{m}_{p}")
            mdl.x[m, p] = x
            pool = pools[p]
            objective.append(_usd(pool.usd_per_hour + pool.risk_usd_per_hour) * x)
            if c == 0:
                objective.append(_usd(pool.launch_usd_per_hour) * x)
            else:
                if pool.launch_usd_per_hour > 0 and ub > c:
                    inc = cp.new_int_var(0, ub - c, f"inc_{m}_{p}")
                    cp.add(inc >= x - c)
                    objective.append(_usd(pool.launch_usd_per_hour) * inc)
                    mdl.aux.append(inc)
                if pool.remove_usd_per_hour > 0:
                    dec = cp.new_int_var(0, c, f"dec_{m}_{p}")
                    cp.add(dec >= c - x)
                    objective.append(_usd(pool.remove_usd_per_hour) * dec)
                    mdl.aux.append(dec)

    # Routing: demand k to location l, capacity per (model, location).
    loc_pools: dict[tuple[int, int], list[int]] = defaultdict(list)
    for m, plist in cands.items():
        for p in plist:
            loc_pools[m, pools[p].location].append(p)
    penalty = _usd(problem.unmet_penalty_usd_per_rps_hour) / RPS_SCALE
    routed: dict[tuple[int, int], list[cp_model.IntVar]] = defaultdict(list)
    unmet_by_model: dict[int, list[cp_model.IntVar]] = defaultdict(list)
    for k, d in enumerate(problem.demands):
        dk = demand_int[k]
        u = cp.new_int_var(0, dk, f"u_{k}")
        mdl.u[k] = u
        unmet_by_model[d.model].append(u)
        served: list[cp_model.IntVar] = []
        for loc in sorted(set(d.locations)):
            if (d.model, loc) not in loc_pools:
                continue
            y = cp.new_int_var(0, dk, f"y_{k}_{loc}")
            mdl.y[k, loc] = y
            served.append(y)
            routed[d.model, loc].append(y)
        cp.add(sum(served) + u == dk)
        objective.append(max(1, round(penalty)) * u)
    for (m, loc), ys in routed.items():
        cp.add(sum(ys) <= sum(int(cap_int[m, p]) * mdl.x[m, p] for p in loc_pools[m, loc]))

    for q in problem.quotas:
        terms = [
            pools[p].gpus * mdl.x[m, p]
            for p in q.pools
            for m in range(len(problem.models))
            if (m, p) in mdl.x
        ]
        if terms:
            cp.add(sum(terms) <= q.max_gpus)

    if problem.budget_usd_per_hour is not None:
        cp.add(
            sum(_usd(pools[p].usd_per_hour) * x for (_, p), x in mdl.x.items())
            <= _usd(problem.budget_usd_per_hour)
        )

    alpha = round(problem.robustness_fraction * SHARE_SCALE)
    for m, plist in cands.items():
        if problem.replicas_min(m) > 0:
            cp.add(sum(mdl.x[m, p] for p in plist) >= problem.replicas_min(m))
        share = round(problem.on_demand_share_min(m) * SHARE_SCALE)
        if share > 0:
            cp.add(
                sum(
                    ((0 if pools[p].spot else SHARE_SCALE) - share)
                    * int(cap_int[m, p])
                    * mdl.x[m, p]
                    for p in plist
                )
                >= 0
            )
        if alpha > 0 and total_demand[m] > 0:
            served_m = int(total_demand[m]) - sum(unmet_by_model[m])
            domains = {pools[p].failure_domain for p in plist if pools[p].spot}
            for z in sorted(domains):
                surviving = [
                    int(cap_int[m, p]) * mdl.x[m, p]
                    for p in plist
                    if not (pools[p].spot and pools[p].failure_domain == z)
                ]
                cp.add(SHARE_SCALE * sum(surviving) >= alpha * served_m)

    cp.minimize(sum(objective))
    return mdl


@dataclass(frozen=True)
class _Run:
    status: Status
    nodes: IntArray
    unmet_int: tuple[int, ...]
    values: dict[str, int]  # full assignment by variable name, for hints
    bound_usd: float


def _run(
    problem: Problem,
    mdl: _Model,
    *,
    time_limit_s: float,
    seed: int,
    workers: int,
    deterministic: bool,
    hint: dict[str, int] | None,
) -> _Run:
    if hint:
        for var in [*mdl.x.values(), *mdl.y.values(), *mdl.u.values(), *mdl.aux]:
            name = var.name
            if name in hint:
                mdl.cp.add_hint(var, hint[name])
            elif name.startswith(("inc_", "dec_")):
                mdl.cp.add_hint(var, 0)
    solver = cp_model.CpSolver()
    params = solver.parameters
    params.random_seed = seed
    params.num_workers = workers
    if deterministic:
        # Wall-clock limits and parallel races make runs differ; deterministic
        # time and interleaved workers make replays repeat exactly.
        params.interleave_search = True
        params.max_deterministic_time = time_limit_s
    else:
        params.max_time_in_seconds = max(time_limit_s, 0.01)
    code = solver.solve(mdl.cp)
    nodes = np.zeros_like(problem.current)
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return _Run(Status.INFEASIBLE, problem.current.copy(), (), {}, math.inf)
    for (m, p), x in mdl.x.items():
        nodes[m, p] = solver.value(x)
    unmet = tuple(int(solver.value(mdl.u[k])) for k in range(len(problem.demands)))
    values = {
        v.name: int(solver.value(v))
        for v in [*mdl.x.values(), *mdl.y.values(), *mdl.u.values(), *mdl.aux]
    }
    status = Status.OPTIMAL if code == cp_model.OPTIMAL else Status.FEASIBLE
    return _Run(status, nodes, unmet, values, solver.best_objective_bound / USD_SCALE)


def fleet_cost(problem: Problem, nodes: IntArray, unmet_rps: tuple[float, ...]) -> float:
    """Objective of a fleet in USD/hour: price, risk, churn against current, unmet penalty."""
    total = 0.0
    for p, pool in enumerate(problem.pools):
        col = nodes[:, p]
        cur = problem.current[:, p]
        total += float(col.sum()) * (pool.usd_per_hour + pool.risk_usd_per_hour)
        total += float(np.maximum(col - cur, 0).sum()) * pool.launch_usd_per_hour
        total += float(np.maximum(cur - col, 0).sum()) * pool.remove_usd_per_hour
    return total + problem.unmet_penalty_usd_per_rps_hour * sum(unmet_rps)


def fleet_price(problem: Problem, nodes: IntArray) -> float:
    """Price of a fleet in USD/hour."""
    prices = np.array([pool.usd_per_hour for pool in problem.pools], dtype=np.float64)
    return float((nodes * prices[None, :]).sum())


def solve(
    problem: Problem,
    *,
    time_limit_s: float = 2.0,
    seed: int = 0,
    workers: int = 2,
    deterministic: bool = False,
) -> Solution:
    """Find the cheapest fleet for `problem` within `time_limit_s`.

    The current fleet is evaluated first and given to CP-SAT as a hint; the
    result is never worse than keeping it when it is feasible. When no
    feasible plan exists (or none is found in time) the status is INFEASIBLE
    and `nodes` is the current fleet, so acting on it changes nothing.
    With `deterministic=True` the limit is CP-SAT deterministic time and the
    result depends only on the problem and the seed.
    """
    started = time.perf_counter()
    cands = candidate_pools(problem)
    run = functools.partial(_run, problem, seed=seed, workers=workers, deterministic=deterministic)

    # Keeping the current fleet: only the routing is free, which solves in milliseconds.
    keep = run(
        _build(problem, cands, fixed=problem.current),
        time_limit_s=max(0.05, 0.1 * time_limit_s),
        hint=None,
    )
    keep_ok = keep.status is not Status.INFEASIBLE
    keep_unmet = tuple(v / RPS_SCALE for v in keep.unmet_int)

    remaining = max(0.05, time_limit_s - (time.perf_counter() - started))
    best = run(
        _build(problem, cands, fixed=None),
        time_limit_s=remaining,
        hint=keep.values if keep_ok else None,
    )
    elapsed = time.perf_counter() - started

    if best.status is Status.INFEASIBLE:
        nodes = problem.current.copy()
        unmet = keep_unmet if keep_ok else tuple(d.rps for d in problem.demands)
        cost = fleet_cost(problem, nodes, unmet)
        return Solution(
            status=Status.FEASIBLE if keep_ok else Status.INFEASIBLE,
            nodes=nodes,
            objective=cost,
            bound=best.bound_usd if math.isfinite(best.bound_usd) else cost,
            gap=0.0 if keep_ok else math.inf,
            solve_time_s=elapsed,
            unmet_rps=unmet,
            usd_per_hour=fleet_price(problem, nodes),
            kept_current=True,
        )

    unmet = tuple(v / RPS_SCALE for v in best.unmet_int)
    cost = fleet_cost(problem, best.nodes, unmet)
    nodes = best.nodes
    kept = False
    if keep_ok:
        keep_cost = fleet_cost(problem, problem.current, keep_unmet)
        if keep_cost <= cost:
            nodes, unmet, cost, kept = problem.current.copy(), keep_unmet, keep_cost, True
    bound = min(best.bound_usd, cost)
    gap = 0.0 if best.status is Status.OPTIMAL else (cost - bound) / max(abs(cost), 1e-9)
    return Solution(
        status=best.status if not kept or best.status is Status.OPTIMAL else Status.FEASIBLE,
        nodes=nodes,
        objective=cost,
        bound=bound,
        gap=max(gap, 0.0),
        solve_time_s=elapsed,
        unmet_rps=unmet,
        usd_per_hour=fleet_price(problem, nodes),
        kept_current=kept,
    )
