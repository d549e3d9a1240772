"""The placement model on OR-Tools' linear solver wrapper, with a choice of backend.

Formulation (docs/solver.md has the long form):

* x[m,p]  integer nodes of model m in pool p
* y[k,l]  load of demand k routed to serving location l (rps, continuous)
* u[k]    unmet load of demand k (rps), penalised
* inc/dec nodes added to / removed from pools that hold nodes now, for churn cost

minimise  sum (price + risk) x + launch * added + remove * removed + penalty * u
s.t.      sum_l y[k,l] + u[k] = D[k]                      every demand is served or counted unmet
          sum_k y[k,l] <= sum_{p in l} cap[m,p] x[m,p]   per model and location
          quotas, budget, minimum replicas, minimum on-demand share of capacity
          for every failure domain z with spot pools of m, and every group G of locations
          (Problem.loss_cover_groups: each demand's reach and their union):
            capacity of m in G outside z's spot pools + short[m,G]
              >= alpha * served load only G serves
          with a budget, short[m,G] >= 0 penalised below the unmet penalty (solver.cover:
          serve first, cover second, when the budget cannot pay for both); else short = 0
          for a model of a priority above the lowest (Problem.storm_share), also: capacity
          of m in G after every spot pool keeps s[m,p] <= (1 - share) x[m,p] nodes, s
          integer, >= alpha * served load only G serves (only without a budget)

A model placed by size (Problem.size_classes) has instead of its capacity rows, with
z[c,p] the load of size class c served by pool p (docs/solver.md "Placement by size"):
          sum_c z[c,p] / cap[c,p] <= x[m,p]                per pool: nodes' time shared
          sum_{k of class c} y[k,l] <= sum_{p in l} z[c,p] per class and location

Backends: "scip" (default) and "highs"; benchmarks/bench_solver.py compares them. CP-SAT
was the first backend and is not offered: docs/solver.md says why.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from ortools.linear_solver import pywraplp

from solver.cover import cover_penalty, shortfalls
from solver.engines import new_solver
from solver.problem import (
    CoverShortfall,
    FloatArray,
    IntArray,
    LossCoverGroup,
    Problem,
    Relaxation,
    Solution,
    Status,
)
from solver.reduce import candidate_pools

Backend = Literal["highs", "scip"]
_BACKENDS: dict[str, str] = {"highs": "HIGHS", "scip": "SCIP"}
_RELAXATION = "GLOP"  # the LP solver for relaxations: it reads integer variables as continuous
# Feasibility tolerance used when reading values back and checking the current fleet.
_TOL = 1e-6
# What a priority stage's cap on unmet load allows above the least found: below what a
# plan reports as unmet (more than _TOL), so the next stage cannot leave a sliver unmet.
_CAP_SLACK = 1e-7
# Load (rps) that dropping a model's on-demand share must serve beyond the search with it
# for the plan to drop it: less is the search's noise, not what the budget frees.
_RELAX_GAIN_RPS = 1e-3
# SCIP's cutting-plane rounds at the root, and none below it. The measured trade-off
# (benchmarks/bench_solver.py, docs/solver.md): with SCIP's default separation a
# 400-pool model spends its whole 0.2 s share at the root and ends 16 % above the best
# plan on average; without cuts the search reaches branching and its diving heuristics
# at once and ends within 1 %, at the price of a weaker proven bound.
ROOT_CUT_ROUNDS = 0
# A model's search stops after this many branch-and-bound nodes without a better plan.
# Without cuts the bound rarely proves the gap tolerance, so a search would otherwise
# always run to its time share; measured (docs/solver.md) at 20 models x 2 regions,
# warm re-plans take 0.80-0.88 s instead of 0.97-1.28 s and end within 0.1% of the
# plan of a 20 s solve, and at 20 x 10 plans are as good as without the limit.
STALL_NODES = 200
# A search over fewer candidate pools than this is small: it runs without SCIP's
# large-neighbourhood heuristics (each solves a sub-MIP) and stops after
# SMALL_SEARCH_STALL_NODES nodes without a better plan, and branches on a variable's history
# after one strong-branching probe instead of five (SMALL_SEARCH_MAX_RELIABLE). Measured
# (docs/solver.md, "Small searches"): over one simulated day of each shared trace at 20 and
# 200 GPUs (about 110 pools per search) the same total cost and SLO attainment in 26% less
# replay time, and 13% less search time from the fewer probes; at 20 models x 10 regions
# (about 400 pools per model) the heuristics off made plans 0.5% dearer, so large searches
# keep SCIP's defaults.
SMALL_SEARCH_POOLS = 200
SMALL_SEARCH_STALL_NODES = 100
SMALL_SEARCH_MAX_RELIABLE = 1
_SUB_MIP_HEURISTICS = (
    "alns",
    "crossover",
    "dins",
    "gins",
    "localbranching",
    "lpface",
    "mutation",
    "rens",
    "rins",
)


@dataclass
class _Model:
    """A built model and the handles to read a solution back."""

    lp: pywraplp.Solver
    x: dict[tuple[int, int], pywraplp.Variable] = field(default_factory=dict)
    u: dict[int, pywraplp.Variable] = field(default_factory=dict)
    # Nodes removed from a pool that holds nodes, where the budget row counts them (moves
    # of a priority above the lowest bill twice while under way: `Problem.moves_bill_twice`)
    dec: dict[tuple[int, int], pywraplp.Variable] = field(default_factory=dict)
    # Load of a size class routed to a pool (rps), for the models placed by size.
    z: dict[tuple[int, int], pywraplp.Variable] = field(default_factory=dict)
    # Per (size class, location): its pools; per demand placed by size: its rate and its
    # load routed to each (size class, location) (y).
    class_pools: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    class_load: dict[int, tuple[float, list[tuple[int, int, pywraplp.Variable]]]] = field(
        default_factory=dict
    )


def _new_solver(backend: str) -> pywraplp.Solver:
    if backend not in _BACKENDS and backend != _RELAXATION:
        raise ValueError(f"unknown backend {backend!r}; use one of {sorted(_BACKENDS)}")
    return new_solver(_BACKENDS.get(backend, backend))


def _build(
    problem: Problem,
    cands: dict[int, list[int]],
    fixed: IntArray | None,
    backend: str,
    *,
    coupling: bool,
    penalised: Collection[int] | None = None,
    unmet_caps: Sequence[tuple[tuple[int, ...], float]] = (),
    on_demand_floors: Sequence[tuple[int, float]] = (),
    soft: bool = False,
    grow: Collection[int] = (),
) -> _Model:
    """The model over the models in `cands`; quotas and budget only with `coupling`;
    with `soft`, spot-loss cover may fall short at a penalty (solver.cover).

    `penalised`: the demands whose unmet load costs the penalty (None: all); the others'
    is free. `unmet_caps`: (demands, rps) rows, the unmet load of those demands summed
    at most rps. `on_demand_floors`: (model, rps) rows, the model's on-demand capacity
    at least rps. All serve the priority stages of `_by_priority`. `grow`: models that
    keep at least their current nodes in every pool (`solve`'s `grow_kept`)."""
    lp = _new_solver(backend)
    mdl = _Model(lp)
    inf = lp.infinity()
    pools = problem.pools
    cap = problem.capacity_rps
    objective = lp.Objective()
    objective.SetMinimization()
    total_demand = np.zeros(len(problem.models))
    for d in problem.demands:
        total_demand[d.model] += d.rps

    for m, plist in cands.items():
        for p in plist:
            c = int(problem.current[m, p])
            pool = pools[p]
            if fixed is not None:
                lb = ub = int(fixed[m, p])
            else:
                need = _nodes_to_serve_alone(problem, m, p, float(total_demand[m]))
                lb = int(problem.committed[m, p]) if problem.committed is not None else 0
                if m in grow:
                    lb = max(lb, c)
                ub = max(lb, min(pool.max_nodes, max(need, problem.replicas_min(m), c)))
            x = lp.IntVar(lb, ub, f"x_{m}_{p}")
            mdl.x[m, p] = x
            unit = pool.usd_per_hour + pool.risk_usd_per_hour
            if c == 0:
                objective.SetCoefficient(x, unit + pool.launch_usd_per_hour)
                continue
            objective.SetCoefficient(x, unit)
            # inc >= x - c and dec >= c - x; both are pushed down by their positive cost.
            if pool.launch_usd_per_hour > 0 and ub > c:
                inc = lp.NumVar(0, ub - c, f"inc_{m}_{p}")
                ct = lp.Constraint(-c, inf)
                ct.SetCoefficient(inc, 1)
                ct.SetCoefficient(x, -1)
                objective.SetCoefficient(inc, pool.launch_usd_per_hour)
            twice = coupling and problem.moves_bill_twice(m)
            if pool.remove_usd_per_hour > 0 or twice:
                dec = lp.NumVar(0, c, f"dec_{m}_{p}")
                ct = lp.Constraint(c, inf)
                ct.SetCoefficient(dec, 1)
                ct.SetCoefficient(x, 1)
                objective.SetCoefficient(dec, pool.remove_usd_per_hour)
                if twice:
                    mdl.dec[m, p] = dec

    # Routing: demand k to location l; capacity per (model, location).
    loc_pools: dict[tuple[int, int], list[int]] = defaultdict(list)
    for m, plist in cands.items():
        for p in plist:
            loc_pools[m, pools[p].location].append(p)
    # Coefficient tightening, the same on integer x and much tighter in the LP: a location
    # never serves more than the demand that may reach it, so one node there counts for at
    # most that much (one node, or several, covering it all). Big nodes (an 8-GPU spot
    # instance serves more than a region's demand) otherwise count fractionally in the LP.
    reach: dict[tuple[int, int], float] = defaultdict(float)
    for d in problem.demands:
        for loc in set(d.locations):
            reach[d.model, loc] += d.rps
    # Rows keyed (model, size class or -1, location): sum of routed load <= capacity.
    capacity_rows: dict[tuple[int, int, int], pywraplp.Constraint] = {}
    for (m, loc), plist in loc_pools.items():
        if problem.by_size(m):
            continue
        row = lp.Constraint(-inf, 0)
        for p in plist:
            row.SetCoefficient(mdl.x[m, p], -min(float(cap[m, p]), reach[m, loc]))
        capacity_rows[m, -1, loc] = row
    _size_rows(problem, cands, mdl, loc_pools, capacity_rows)
    unmet_by_model: dict[int, list[pywraplp.Variable]] = defaultdict(list)
    for k, d in enumerate(problem.demands):
        if d.model not in cands:
            continue
        u = lp.NumVar(0, d.rps, f"u_{k}")
        mdl.u[k] = u
        unmet_by_model[d.model].append(u)
        if penalised is None or k in penalised:
            objective.SetCoefficient(u, problem.unmet_penalty_usd_per_rps_hour)
        served = lp.Constraint(d.rps, inf)  # u is pushed down by its penalty
        served.SetCoefficient(u, 1)
        c = -1 if d.size_class is None else d.size_class
        for loc in sorted(set(d.locations)):
            if (d.model, c, loc) in capacity_rows:
                y = lp.NumVar(0, d.rps, f"y_{k}_{loc}")
                served.SetCoefficient(y, 1)
                capacity_rows[d.model, c, loc].SetCoefficient(y, 1)
                if c >= 0:
                    mdl.class_load.setdefault(k, (d.rps, []))[1].append((c, loc, y))

    for m, floor in on_demand_floors:
        if m in cands and floor > _TOL:
            row = lp.Constraint(floor - _TOL, inf)
            for p in cands[m]:
                if not pools[p].spot:
                    row.SetCoefficient(mdl.x[m, p], float(cap[m, p]))

    for ks, cap_rps in unmet_caps:
        row = lp.Constraint(-inf, cap_rps)
        for k in ks:
            if k in mdl.u:
                row.SetCoefficient(mdl.u[k], 1)

    for q in problem.quotas if coupling else ():
        row = lp.Constraint(-inf, q.max_gpus)
        for p in q.pools:
            for m in cands:
                if (m, p) in mdl.x:
                    row.SetCoefficient(mdl.x[m, p], pools[p].gpus)

    # Spend caps hold in each model's own search too (each model alone may draw all of
    # the amount, as a count commitment's copy holds at most its count): otherwise one
    # model alone planned every copy's whole nodes, the union broke the cap although no
    # other model drew from it, and the joint search of every model ran (and moved the
    # others) on many ticks (docs/commitments.md, "Why the g6e family plan did not beat
    # no commitment").
    for spend in problem.spend_caps:
        row = lp.Constraint(-inf, spend.max_usd_per_hour)
        for p, w in zip(spend.pools, spend.usd_per_hour, strict=True):
            for m in cands:
                if (m, p) in mdl.x:
                    row.SetCoefficient(mdl.x[m, p], w)

    if coupling and problem.budget_usd_per_hour is not None:
        row = lp.Constraint(-inf, problem.budget_usd_per_hour)
        for (_, p), x in mdl.x.items():
            row.SetCoefficient(x, pools[p].listed_usd_per_hour)
        # The higher priorities' nodes a plan removes bill until their replacements serve
        # (the guard drains them no sooner: scheduler.decide.guards), so a plan that moves them
        # must pay for both: otherwise it is not executable make-before-break within the
        # budget, and the move either left the model short for a boot or never happened.
        # Not when those models' fleet alone is over the budget (it must shrink anyway).
        if _moves_counted(problem):
            for (_, p), dec in mdl.dec.items():
                row.SetCoefficient(dec, pools[p].listed_usd_per_hour)

    for m, plist in cands.items():
        alpha = problem.robustness_share(m, float(total_demand[m]))
        if problem.replicas_min(m) > 0:
            row = lp.Constraint(problem.replicas_min(m), inf)
            for p in plist:
                row.SetCoefficient(mdl.x[m, p], 1)
        share = problem.on_demand_share_min(m)
        if share > 0:
            row = lp.Constraint(0, inf)
            for p in plist:
                row.SetCoefficient(
                    mdl.x[m, p], ((0.0 if pools[p].spot else 1.0) - share) * cap[m, p]
                )
        if alpha > 0 and total_demand[m] > 0:
            groups = problem.loss_cover_groups(m, plist)
            penalty = cover_penalty(problem, alpha, groups)
            for group in groups:
                _loss_cover_rows(problem, mdl, m, alpha, plist, group, penalty, soft)
    return mdl


def _loss_cover_rows(
    problem: Problem,
    mdl: _Model,
    m: int,
    alpha: float,
    plist: Sequence[int],
    group: LossCoverGroup,
    penalty_usd_per_rps_hour: float,
    soft: bool,
) -> None:
    """Spot-loss robustness of model m for one group of locations: the capacity of its
    pools there, less any one failure domain's vanishing spot pools among them, covers
    alpha x the group's served load (its demands less their unmet load); with `soft`
    the missing capacity is a slack that costs `penalty_usd_per_rps_hour` per rps
    (solver.cover). A model with a storm share also gets the storm's row
    (`_storm_cover_row`)."""
    lp, inf, pools, cap = mdl.lp, mdl.lp.infinity(), problem.pools, problem.capacity_rps
    top = alpha * group.rps
    if top <= 0:
        return
    inside = [p for p in plist if pools[p].location in group.locations]
    # margin = capacity there - alpha * served load, as one variable, so that each
    # failure domain's row only holds that domain's spot pools (sparse rows keep the LP
    # small): spot capacity of the domain there <= margin.
    margin = lp.NumVar(-inf, inf, f"margin_{m}_{'_'.join(map(str, group.locations))}")
    row = lp.Constraint(top, top)
    row.SetCoefficient(margin, -1)
    if soft:
        short = lp.NumVar(0, top, f"short_{m}_{'_'.join(map(str, group.locations))}")
        row.SetCoefficient(short, 1)
        lp.Objective().SetCoefficient(short, penalty_usd_per_rps_hour)
    # Surviving capacity beyond alpha x the load never matters: the same tightening.
    for p in inside:
        row.SetCoefficient(mdl.x[m, p], min(float(cap[m, p]), top))
    for k in group.demands:
        if k in mdl.u:
            row.SetCoefficient(mdl.u[k], alpha)
    by_domain: dict[int, list[int]] = defaultdict(list)
    for p in inside:
        if pools[p].vanishes:
            by_domain[pools[p].failure_domain].append(p)
    for z in sorted(by_domain):
        row = lp.Constraint(-inf, 0)
        row.SetCoefficient(margin, -1)
        for p in by_domain[z]:
            row.SetCoefficient(mdl.x[m, p], min(float(cap[m, p]), top))
    if problem.storm_share(m) > 0 and by_domain:
        _storm_cover_row(problem, mdl, m, problem.priority_storm_fraction, inside, group)


def _storm_cover_row(
    problem: Problem,
    mdl: _Model,
    m: int,
    alpha: float,
    inside: Sequence[int],
    group: LossCoverGroup,
) -> None:
    """Storm cover of model m for one group of locations (docs/solver.md, "Storm cover
    for the top priorities"): every vanishing pool of `inside` (m's pools there) keeps
    s[m,p] <= (1 - share) x[m,p] nodes, s integer (the storm rounds its take up), and
    what every pool keeps covers alpha x the group's served load. A hard row: the joint
    searches under a binding budget plan without storm shares (`solve`)."""
    lp, inf, pools, cap = mdl.lp, mdl.lp.infinity(), problem.pools, problem.capacity_rps
    share, top = problem.storm_share(m), alpha * group.rps
    tag = f"{m}_{'_'.join(map(str, group.locations))}"
    row = lp.Constraint(top, inf)
    for k in group.demands:
        if k in mdl.u:
            row.SetCoefficient(mdl.u[k], alpha)
    for p in inside:
        x, node = mdl.x[m, p], min(float(cap[m, p]), top)
        if not pools[p].vanishes:
            row.SetCoefficient(x, node)
            continue
        left = problem.storm_survivors(round(x.ub()), share)
        kept = lp.IntVar(left if x.lb() == x.ub() else 0, left, f"storm_{tag}_{p}")
        if x.lb() != x.ub():
            keep = lp.Constraint(-inf, _TOL)
            keep.SetCoefficient(kept, 1)
            keep.SetCoefficient(x, -(1.0 - share))
        row.SetCoefficient(kept, node)


def _nodes_to_serve_alone(problem: Problem, m: int, p: int, demand_rps: float) -> int:
    """Nodes of pool p that serve all of model m's demand on their own: at its mix's
    capacity, or placed by size at its least favourable class's (0: cannot serve)."""
    caps = [float(problem.capacity_rps[m, p])]
    caps += [float(problem.size_classes[c].capacity_rps[p]) for c in problem.classes_of(m)]
    if caps[0] <= 0:
        return 0
    return math.ceil(demand_rps / min(c for c in caps if c > 0) - 1e-9)


def _size_rows(
    problem: Problem,
    cands: dict[int, list[int]],
    mdl: _Model,
    loc_pools: dict[tuple[int, int], list[int]],
    capacity_rows: dict[tuple[int, int, int], pywraplp.Constraint],
) -> None:
    """The capacity rows of the models placed by size (docs/solver.md "Placement by
    size"): z[c,p], the load of size class c a pool serves, and per pool the nodes'
    time shared between classes, sum_c z[c,p] / cap[c,p] <= x[m,p]; per (class,
    location) the load routed there is at most what the location's pools serve of it."""
    lp, inf = mdl.lp, mdl.lp.infinity()
    reach: dict[int, float] = defaultdict(float)  # per class, its whole demand
    for d in problem.demands:
        if d.size_class is not None:
            reach[d.size_class] += d.rps
    for m, plist in cands.items():
        classes = problem.classes_of(m)
        if not classes:
            continue
        for p in plist:
            row = lp.Constraint(-inf, 0)
            row.SetCoefficient(mdl.x[m, p], -1)
            for c in classes:
                cap = float(problem.size_classes[c].capacity_rps[p])
                if cap <= 0 or reach[c] <= 0:
                    continue
                z = lp.NumVar(0, reach[c], f"z_{c}_{p}")
                mdl.z[c, p] = z
                row.SetCoefficient(z, 1.0 / cap)
        for c in classes:
            for (mm, loc), members in loc_pools.items():
                if mm != m:
                    continue
                row = lp.Constraint(-inf, 0)
                for p in members:
                    if (c, p) in mdl.z:
                        row.SetCoefficient(mdl.z[c, p], -1)
                capacity_rows[m, c, loc] = row
                mdl.class_pools[c, loc] = [p for p in members if (c, p) in mdl.z]


def _routed(mdl: _Model) -> dict[tuple[int, int], float]:
    """The size classes' load per pool read back, 0 within the feasibility tolerance.

    The rows only bound the routed load from one side: z[c,p] by the nodes' time, and a
    demand's y by its rate less its unmet load (u + sum y >= rate). Where nodes have time
    to spare either may read back above the load the plan serves, so each demand's y are
    scaled to what it serves (rate - u), and each location's z of a class to the y routed
    there: what a pool serves of a class, which the plan reports as its routes."""
    load: dict[tuple[int, int], float] = defaultdict(float)  # (class, location) -> rps
    for k, (rps, ys) in mdl.class_load.items():
        got = [(c, loc, y.solution_value()) for c, loc, y in ys]
        total = sum(v for _, _, v in got)
        served = max(0.0, rps - mdl.u[k].solution_value()) if k in mdl.u else rps
        scale = min(1.0, served / total) if total > _TOL else 0.0
        for c, loc, v in got:
            load[c, loc] += v * scale
    out: dict[tuple[int, int], float] = {}
    for (c, loc), plist in mdl.class_pools.items():
        offered = [mdl.z[c, p].solution_value() for p in plist]
        total = sum(offered)
        scale = min(1.0, load[c, loc] / total) if total > _TOL else 0.0
        for p, v in zip(plist, offered, strict=True):
            out[c, p] = v * scale
    return {key: v for key, v in out.items() if v > _TOL}


def _clean(unmet_rps: float) -> float:
    """An unmet load read back: 0 within the feasibility tolerance (a priority stage's cap
    lets a sliver through)."""
    return unmet_rps if unmet_rps > _TOL else 0.0


@dataclass(frozen=True)
class _Run:
    status: Status  # INFEASIBLE also when no solution was found in time
    nodes: IntArray  # full (models x pools) array; zero outside the solved models
    unmet_rps: dict[int, float]  # by demand index, for the solved models' demands
    bound: float  # proven lower bound on the solved part's objective
    # (size class, pool) -> rps routed there, for the solved models placed by size
    routed: dict[tuple[int, int], float] = field(default_factory=dict)

    @property
    def unmet_rps_total(self) -> float:
        """Load left unserved, 0 below the feasibility tolerance."""
        total = sum(self.unmet_rps.values())
        return total if total > _TOL else 0.0


def _run(
    problem: Problem,
    mdl: _Model,
    *,
    time_limit_s: float,
    seed: int,
    backend: str,
    hint: IntArray | None,
    gap_tolerance: float,
    node_limit: int = 0,
    stall_nodes: int = STALL_NODES,
    small_search: bool = False,
) -> _Run:
    lp = mdl.lp
    lp.SetTimeLimit(max(10, int(time_limit_s * 1000)))
    lp.SetNumThreads(1)  # parallelism is across models (see solve)
    params = {
        "highs": f"random_seed={seed}\noutput_flag=false\nmip_rel_gap={gap_tolerance}",
        "scip": (
            f"randomization/randomseedshift = {seed}\nlimits/gap = {gap_tolerance}"
            f"\nseparating/maxroundsroot = {ROOT_CUT_ROUNDS}\nseparating/maxrounds = 0"
            f"\nlimits/stallnodes = {stall_nodes if stall_nodes > 0 else -1}"
            # SCIP would install its own SIGINT handler for the solve and put back the one
            # it found after: two solves in threads (solver.workers) put back each other's,
            # leaving SCIP's for good, and Ctrl-C then only printed "pressed CTRL-C" while
            # the daemon ran on. The caller owns SIGINT (the daemon stops, commands exit 130).
            "\nmisc/catchctrlc = FALSE"
            # No clock per plugin call: those times only feed SCIP's statistics, which
            # nothing reads (the same plans; with the solver reuse of solver.engines,
            # 3-4% less solve time on the BurstGPT week: docs/solver.md, "Replay speed of
            # the BurstGPT week"). The time limit keeps its own clock.
            "\ntiming/statistictiming = FALSE"
        ),
    }[backend]
    if node_limit > 0 and backend == "scip":
        # A work limit instead of a clock: the same problem gives the same plan anywhere.
        # That also takes no restarts and no conflict analysis: with either, the same
        # problem and seed could end on either of two plans from run to run (captured
        # re-plans: 7 and 9 of 40 solves on the other plan), so replays diverged. Under a
        # clock (the daemon) plans depend on the machine's load anyway, and both help:
        # at 20 models x 10 regions the plan is 0.88-0.89% above the best bound with them and
        # 1.22-1.28% without (benchmarks/bench_solver.py).
        params += f"\nlimits/nodes = {node_limit}"
        params += "\npresolving/maxrestarts = 0\nconflict/enable = FALSE"
    if small_search and backend == "scip":  # see SMALL_SEARCH_POOLS
        params += "".join(f"\nheuristics/{h}/freq = -1" for h in _SUB_MIP_HEURISTICS)
        params += f"\nbranching/relpscost/maxreliable = {SMALL_SEARCH_MAX_RELIABLE}"
    lp.SetSolverSpecificParametersAsString(params)
    if hint is not None and backend == "scip":  # HiGHS ignores hints through this wrapper
        pairs = list(mdl.x.items())
        lp.SetHint([v for _, v in pairs], [float(hint[m, p]) for (m, p), _ in pairs])
    code = lp.Solve()
    if code not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        return _Run(Status.INFEASIBLE, problem.current.copy(), {}, math.inf)
    nodes = np.zeros_like(problem.current)
    for (m, p), x in mdl.x.items():
        nodes[m, p] = round(x.solution_value())
    unmet = {k: _clean(u.solution_value()) for k, u in mdl.u.items()}
    status = Status.OPTIMAL if code == pywraplp.Solver.OPTIMAL else Status.FEASIBLE
    return _Run(status, nodes, unmet, lp.Objective().BestBound(), _routed(mdl))


def _route(
    problem: Problem, cands: dict[int, list[int]], fixed: IntArray, *, soft: bool = False
) -> _Run:
    """The fleet `fixed` evaluated: with every node count fixed only routing is left, a
    linear program (an LP solver is ten times quicker at it than a MIP solver's setup).
    With `soft` it serves what it can and leaves cover short (as the joint searches)."""
    mdl = _build(problem, cands, fixed, _RELAXATION, coupling=False, soft=soft)
    if mdl.lp.Solve() != pywraplp.Solver.OPTIMAL:
        return _Run(Status.INFEASIBLE, problem.current.copy(), {}, math.inf)
    nodes = np.zeros_like(problem.current)
    for (m, p), x in mdl.x.items():
        nodes[m, p] = round(x.solution_value())
    unmet = {k: _clean(u.solution_value()) for k, u in mdl.u.items()}
    return _Run(Status.OPTIMAL, nodes, unmet, mdl.lp.Objective().Value(), _routed(mdl))


def _rounded_relaxation(problem: Problem, cands: dict[int, list[int]]) -> IntArray:
    """The LP relaxation's node counts rounded up, then topped up with on-demand nodes
    where rounding spot nodes up diluted a minimum on-demand share: a fleet that serves
    the demand (rounding up only adds capacity, so demand and spot-loss rows still hold).

    It is what a search cut short (a loaded machine) falls back on instead of a plan with
    no nodes and all demand unmet. (As the search's start it made plans worse: measured
    1163-1225 against 1161 USD/h from the current fleet at 20 models x 10 regions.)
    """
    mdl = _build(problem, cands, None, _RELAXATION, coupling=False)
    nodes = np.zeros_like(problem.current)
    if mdl.lp.Solve() != pywraplp.Solver.OPTIMAL:
        return nodes
    for (m, p), x in mdl.x.items():
        nodes[m, p] = math.ceil(x.solution_value() - 1e-6)
    pools, cap = problem.pools, problem.capacity_rps
    for m, plist in cands.items():
        share = problem.on_demand_share_min(m)
        on_demand = [p for p in plist if not pools[p].spot and cap[m, p] > 0]
        if share <= 0 or not on_demand:
            continue
        od = sum(cap[m, p] * nodes[m, p] for p in plist if not pools[p].spot)
        spot = sum(cap[m, p] * nodes[m, p] for p in plist if pools[p].spot)
        deficit = share * spot - (1 - share) * od  # > 0: the share is not met
        if deficit <= 1e-9:
            continue
        need = {p: math.ceil(deficit / ((1 - share) * cap[m, p]) - 1e-9) for p in on_demand}
        room = [p for p in on_demand if nodes[m, p] + need[p] <= pools[p].max_nodes]
        if room:  # else the share stays short and the start is simply not used
            q = min(room, key=lambda p: (pools[p].usd_per_hour / cap[m, p], p))
            nodes[m, q] += need[q]
    return nodes


def fleet_cost(
    problem: Problem,
    nodes: IntArray,
    unmet_rps: tuple[float, ...],
    cands: dict[int, list[int]] | None = None,
) -> float:
    """Objective of a fleet in USD/hour: price, risk, churn against current, unmet penalty,
    and the penalty of the spot-loss cover it leaves short (solver.cover). `cands` are
    `candidate_pools(problem)` when the caller has them already (`solve` compares several
    fleets of one problem; the presolve was two thirds of the replay's dominance work)."""
    unit, launch, remove = _pool_costs(problem)
    added = np.maximum(nodes - problem.current, 0).sum(axis=0)
    removed = np.maximum(problem.current - nodes, 0).sum(axis=0)
    total = float(nodes.sum(axis=0) @ unit + added @ launch + removed @ remove)
    if cands is None:
        cands = candidate_pools(problem)
    short = sum(usd for _, usd in shortfalls(problem, nodes, unmet_rps, cands))
    return total + problem.unmet_penalty_usd_per_rps_hour * sum(unmet_rps) + short


def _pool_costs(problem: Problem) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pool: USD/h of a node (price and risk), of a launch, of a removal."""
    pools = problem.pools
    return (
        np.array([p.usd_per_hour + p.risk_usd_per_hour for p in pools], dtype=np.float64),
        np.array([p.launch_usd_per_hour for p in pools], dtype=np.float64),
        np.array([p.remove_usd_per_hour for p in pools], dtype=np.float64),
    )


def fleet_price(problem: Problem, nodes: IntArray, *, listed: bool = False) -> float:
    """Price of a fleet in USD/hour; with `listed`, as the budget counts it (committed
    nodes at their list price, see `PoolSpec.budget_usd_per_hour`)."""
    prices = np.array(
        [pool.listed_usd_per_hour if listed else pool.usd_per_hour for pool in problem.pools],
        dtype=np.float64,
    )
    return float((nodes * prices[None, :]).sum())


def _coupling_ok(problem: Problem, nodes: IntArray) -> bool:
    """Whether a fleet respects the constraints that link models: quotas, spend caps
    and budget."""
    gpus = np.array([pool.gpus for pool in problem.pools], dtype=np.int64)
    per_pool = nodes.sum(axis=0) * gpus
    if any(int(per_pool[list(q.pools)].sum()) > q.max_gpus for q in problem.quotas):
        return False
    in_pools = nodes.sum(axis=0)
    if any(c.drawn(in_pools) > c.max_usd_per_hour + _TOL for c in problem.spend_caps):
        return False
    budget = problem.budget_usd_per_hour
    if budget is None:
        return True
    return fleet_price(problem, nodes, listed=True) + _moving_usd(problem, nodes) <= budget + _TOL


def _twice(problem: Problem) -> list[int]:
    """The models whose moves bill twice while under way (`Problem.moves_bill_twice`)."""
    return [m for m in range(len(problem.models)) if problem.moves_bill_twice(m)]


def _moves_counted(problem: Problem) -> bool:
    """Whether the budget counts the nodes those models' plans remove (see `_build`): with
    a budget, and unless their current fleet alone is over it (then it must shrink)."""
    budget = problem.budget_usd_per_hour
    twice = _twice(problem)
    return (
        budget is not None
        and bool(twice)
        and fleet_price(problem, problem.current[twice], listed=True) <= budget + _TOL
    )


def _moving_usd(problem: Problem, nodes: IntArray) -> float:
    """What the nodes a fleet removes from the models whose moves bill twice cost while
    their replacements boot (0 where the budget does not count them)."""
    if not _moves_counted(problem):
        return 0.0
    twice = _twice(problem)
    return fleet_price(problem, np.maximum(problem.current[twice] - nodes[twice], 0), listed=True)


def _merge(problem: Problem, runs: list[_Run]) -> _Run:
    """One run from per-model runs (each solved its own models' rows)."""
    if any(r.status is Status.INFEASIBLE for r in runs):
        return _Run(Status.INFEASIBLE, problem.current.copy(), {}, math.inf)
    nodes = np.sum([r.nodes for r in runs], axis=0).astype(np.int64)
    unmet = {k: v for r in runs for k, v in r.unmet_rps.items()}
    optimal = all(r.status is Status.OPTIMAL for r in runs)
    bound = sum(r.bound for r in runs)
    routed = {key: v for r in runs for key, v in r.routed.items()}
    return _Run(Status.OPTIMAL if optimal else Status.FEASIBLE, nodes, unmet, bound, routed)


def _classes(problem: Problem) -> list[tuple[int, tuple[int, ...]]]:
    """(priority, its demand indices) per priority that has demand, highest first."""
    by: dict[int, list[int]] = defaultdict(list)
    for k, d in enumerate(problem.demands):
        by[problem.priority(d.model)].append(k)
    return [(prio, tuple(by[prio])) for prio in sorted(by, reverse=True)]


def _rank(problem: Problem, unmet: Sequence[float], cost: float) -> tuple[float, ...]:
    """What a fleet is compared on: the unmet load of each priority above the lowest,
    highest first (strictly: to 1e-6 rps), then the objective (its penalty prices the
    lowest priority's unmet load). With one priority, the objective alone."""
    head = [round(sum(unmet[k] for k in ks), 6) for _, ks in _classes(problem)[:-1]]
    return (*head, cost)


_Runner = Callable[..., _Run]


def _by_priority(
    problem: Problem,
    best: _Run,
    unmet: Sequence[float],
    run: _Runner,
    cands: dict[int, list[int]],
    deadline: float,
    time_limit_s: float,
    node_limit: int,
) -> tuple[_Run, tuple[int, ...]]:
    """The joint plan when the budget or a quota leaves load unmet, in stages: for each
    priority from the highest, the least unmet load it can have given the priorities
    above (a search where lower priorities' unmet load costs nothing, so their nodes
    free the budget and quotas; with one priority, the usual objective), kept as a cap
    in every later search; then the cheapest fleet (price, risk, churn) within all caps.

    Under a budget, a priority still left with load unmet gets its models'
    min_on_demand_share dropped (those of its models with load unmet and a share) when
    that serves more of it (`_RELAX_GAIN_RPS`): priority before a model's own on-demand
    floor, highest priority first, each lower one only within what the higher ones
    keep. A priority served in full while a lower one is left unmet gets its models'
    share dropped when, with their load grown by one node each, it would serve more of
    that load (`_share_bound`): decided before the fleet settles around the share.
    Returns the plan and the models whose share it dropped, in that order (the plan is
    then feasible for `problem.without_share(models)`).

    The last stage is what keeps plans from churning under a binding budget: there the
    unmet penalty dominates the objective, and the gap tolerance (relative to the
    objective) exceeds the cost of moving a node, so any of many fleets serving the
    same load would do, and successive ticks picked different ones (measured:
    docs/solver.md, "Budgets and priorities"). `best` (the joint plan of the usual
    objective) is returned as it is when it leaves no load unmet, or when a search finds
    nothing. Only the budget and quotas couple models, so only the joint search needs
    this."""
    classes = _classes(problem)
    if sum(unmet) <= _TOL:
        return best, ()
    caps: list[tuple[tuple[int, ...], float]] = []
    found = best
    relaxed: tuple[int, ...] = ()
    # Per model of each priority searched so far, the on-demand capacity of its stage's
    # fleet; held as a floor once a lower priority's share is dropped.
    kept_od: list[tuple[int, float]] = []
    floors_on: list[tuple[int, float]] = []
    stages = len(classes) + 1

    def stage(
        left: int,
        hint: IntArray,
        penalised: Collection[int],
        dropped: tuple[int, ...],
        floors: list[tuple[int, float]],
        of: Problem = problem,
    ) -> _Run:
        """One joint search of `of` (the problem, or it with a priority's load grown:
        `_ShareTest`) within the caps so far, `left` stages to go: unmet load of
        `penalised` demands costs, the on-demand shares of `dropped` models are off and
        `floors` hold."""
        return run(
            cands,
            None,
            _stage_limit(deadline, time_limit_s, node_limit, left),
            hint=hint,
            coupling=True,
            penalised=penalised,
            unmet_caps=caps,
            of=of.without_share(dropped),
            on_demand_floors=floors,
        )

    def unmet_in(r: _Run, ks: Sequence[int]) -> float:
        return sum(r.unmet_rps.get(k, 0.0) for k in ks)

    for i, (_, ks) in enumerate(classes):
        models = sorted({problem.demands[k].model for k in ks})
        penalised = {k for _, kk in classes[: i + 1] for k in kk}
        served = unmet_in(found, ks) <= _TOL
        if not served and len(classes) > 1:
            found = stage(stages - i, found.nodes, penalised, relaxed, floors_on)
            if found.status is Status.INFEASIBLE:
                return best, ()
        # The cap on this priority's unmet load in the later stages.
        cap = _CAP_SLACK if served else unmet_in(found, ks) + _CAP_SLACK
        test = _share_bound(problem, classes, i, found, relaxed)
        if test is not None:
            # The budget cannot pay for this priority's load (now, or one node's growth
            # ahead: `_ShareTest`) with its models' on-demand share: the same search
            # without it. The priorities above keep their caps, and the on-demand capacity
            # their own stages gave them: the budget this frees for spot must not come out
            # of their cover against losing spot.
            dropped = (*relaxed, *test.models)
            with_share = found
            if test.grown:
                with_share = stage(stages - i, found.nodes, penalised, relaxed, floors_on, test.of)
            freed = stage(stages - i, found.nodes, penalised, dropped, kept_od, test.of)
            short = unmet_in(with_share, ks)
            gain = short - unmet_in(freed, ks)
            ok = Status.INFEASIBLE not in (with_share.status, freed.status)
            if ok and gain > _RELAX_GAIN_RPS and test.grown:
                # Dropped before the fleet settles: this stage at the load now, without
                # the share, unless that search serves less than the one with it.
                freed = stage(stages - i, found.nodes, penalised, dropped, kept_od)
                ok = freed.status is not Status.INFEASIBLE
                ok = ok and unmet_in(freed, ks) <= unmet_in(found, ks) + _RELAX_GAIN_RPS
            if ok and gain > _RELAX_GAIN_RPS:
                found, relaxed = freed, dropped
                floors_on = list(kept_od)
                left = unmet_in(found, ks) if test.grown else short - gain
                cap = left + _CAP_SLACK
        caps.append((ks, cap))
        kept_od += [(m, _on_demand_rps(problem, found.nodes, m)) for m in models]
    cheapest = stage(1, found.nodes, (), relaxed, floors_on)
    if cheapest.status is Status.INFEASIBLE:
        cheapest = found
    # The stages' bounds are of other objectives: the first search's bounds the plan's.
    return dataclasses.replace(cheapest, bound=best.bound), relaxed


def _on_demand_rps(problem: Problem, nodes: IntArray, m: int) -> float:
    """Model m's on-demand capacity in `nodes` (rps, at its mix's capacity)."""
    return float(
        sum(
            problem.capacity_rps[m, p] * nodes[m, p]
            for p, pool in enumerate(problem.pools)
            if not pool.spot and nodes[m, p]
        )
    )


@dataclass(frozen=True)
class _ShareTest:
    """Models of one priority whose min_on_demand_share `_by_priority` tries dropping, and
    the problem whose load it tries: the problem itself (the priority has load unmet
    now), or with `grown` the problem with each of those models' load grown by one of its
    largest nodes (the priority is served now, but the budget may not pay for its next
    node with the share kept)."""

    models: tuple[int, ...]
    of: Problem
    grown: bool = False


def _share_bound(
    problem: Problem,
    classes: Sequence[tuple[int, tuple[int, ...]]],
    i: int,
    found: _Run,
    relaxed: Collection[int],
) -> _ShareTest | None:
    """Which min_on_demand_shares of priority `classes[i]` may be dropped for it, given
    the stages' fleet `found`, and for what load; None: none. Only under a budget (the
    decision of issue 22 is about what a budget cannot pay for), and only models with a
    share not dropped yet, in model order:

    * its models with load unmet in `found`, for the load now;
    * when it has no load unmet but a lower priority has, its models in `found`, for
      their load grown by one node each (the largest capacity of one node among the
      pools `found` gives the model). A fleet formed around the share while the budget
      still paid for it cannot leave it later: under the budget, moving the higher
      priority's on-demand nodes to spot bills both ends while under way
      (`Problem.moves_bill_twice`), which the budget left to the lower priorities cannot
      pay for (docs/solver.md, "Top priority under a budget"). So the share is dropped
      before the fleet settles when the budget could not pay for its next node with it."""
    if problem.budget_usd_per_hour is None:
        return None
    ks = classes[i][1]
    short = {problem.demands[k].model for k in ks if found.unmet_rps.get(k, 0.0) > _RELAX_GAIN_RPS}
    if short or sum(found.unmet_rps.get(k, 0.0) for k in ks) > _TOL:
        models = tuple(
            sorted(m for m in short if m not in relaxed and problem.on_demand_share_min(m) > 0)
        )
        return _ShareTest(models, problem) if models else None
    lower = [k for _, kk in classes[i + 1 :] for k in kk]
    if sum(found.unmet_rps.get(k, 0.0) for k in lower) <= _RELAX_GAIN_RPS:
        return None
    step: dict[int, float] = {}
    for m in sorted({problem.demands[k].model for k in ks}):
        held = found.nodes[m] > 0
        if m in relaxed or problem.on_demand_share_min(m) <= 0 or not held.any():
            continue
        step[m] = float(problem.capacity_rps[m, held].max())
    if not step:
        return None
    load: dict[int, float] = defaultdict(float)
    for d in problem.demands:
        load[d.model] += d.rps
    demands = tuple(
        dataclasses.replace(d, rps=d.rps * (1.0 + step[d.model] / load[d.model]))
        if d.model in step and load[d.model] > 0
        else d
        for d in problem.demands
    )
    grown = dataclasses.replace(problem, demands=demands)
    return _ShareTest(tuple(sorted(step)), grown, grown=True)


def _stage_limit(deadline: float, time_limit_s: float, node_limit: int, stages: int) -> float:
    """Time for one of `stages` searches left: a share of the time left, or under a node
    limit the whole limit (the clock is then only a safety net, as for every search)."""
    if node_limit > 0:
        return time_limit_s
    return max(0.05, (deadline - time.perf_counter()) / stages)


def _relax(problem: Problem) -> tuple[Problem, Relaxation] | None:
    """The problem without the next hard constraint a budget or quota may be unable to
    pay for (minimum replicas, then nodes still booting), and which; None when none is
    left to drop."""
    if any(problem.replicas_min(m) > 0 for m in range(len(problem.models))):
        return dataclasses.replace(problem, min_replicas=()), Relaxation.MIN_REPLICAS
    if problem.committed is not None and problem.committed.any():
        return dataclasses.replace(problem, committed=None), Relaxation.COMMITTED
    return None


def _storm_covered(problem: Problem) -> bool:
    """Whether some model of `problem` must keep storm cover (`Problem.storm_share`)."""
    return any(problem.storm_share(m) > 0 for m in range(len(problem.models)))


def solve(
    problem: Problem,
    *,
    time_limit_s: float = 2.0,
    seed: int = 0,
    workers: int = 1,
    backend: Backend = "scip",
    gap_tolerance: float = 1e-3,
    node_limit: int = 0,
    keep_models: Collection[int] = (),
    stall_nodes: int = STALL_NODES,
    grow_kept: bool = False,
) -> Solution:
    """Find the cheapest fleet for `problem` within `time_limit_s`.

    Models in `keep_models` keep their current nodes without a search when those nodes
    are feasible for the model on their own and serve all its demand (a caller passes
    the models whose demand barely moved since their last plan); the others are searched
    as usual. `Solution.kept_models` lists the models kept this way. With `grow_kept`, a
    model of `keep_models` whose nodes no longer serve it is searched for additions
    only: every pool keeps at least its current nodes (the joint search under quotas or
    the budget stays free to move them).

    Each search also stops after `stall_nodes` branch-and-bound nodes without a better
    plan (0: only the limits above); a reference solve that should use its whole time
    turns this off. A small search (fewer than `SMALL_SEARCH_POOLS` candidate pools)
    stops after at most `SMALL_SEARCH_STALL_NODES`, runs without sub-MIP heuristics and
    makes one strong-branching probe per variable (`SMALL_SEARCH_MAX_RELIABLE`).

    With `node_limit > 0` each search stops after that many branch-and-bound nodes and
    `time_limit_s` only caps each model's search as a safety net: the plan then depends
    on the problem and the seed alone, not on the machine (simulations use this).

    Models interact only through quotas and the budget, so each model is solved on
    its own first (a sum of small searches instead of one product-sized search);
    when the union breaks a quota or the budget, the joint model is solved with
    the remaining time, starting from that union where the backend takes hints.

    When the union leaves load unmet under the budget or quotas, the joint plan is found
    in stages (`_by_priority`): each priority's unmet load minimised in turn, highest
    first, then the cheapest fleet serving that much. When no fleet keeps the minimum
    replicas (then the nodes still booting) within the budget and quotas, those are
    dropped and the best fleet without them is returned, naming them in
    `Solution.relaxed`, instead of no plan. Under a budget, a priority's models whose
    demand the budget cannot pay for with their min_on_demand_share (now, or one node's
    growth ahead while a lower priority is left unmet) have it dropped (highest priority
    first; `Relaxation.ON_DEMAND_SHARE`, `Solution.share_relaxed`).

    The current fleet is evaluated too (only routing free); the result is never
    worse than keeping it when it is feasible (compared on the unmet load of each
    priority above the lowest, highest first, then on the objective). When no feasible
    plan exists (or none is found in time) `nodes` is the current fleet, so acting on
    the result changes nothing, and the status is INFEASIBLE unless keeping the current
    fleet is itself feasible.
    """
    started = time.perf_counter()
    deadline = started + time_limit_s
    cands = candidate_pools(problem)
    share_relaxed: tuple[int, ...] = ()  # models whose on-demand share the plan drops

    def run(
        subset: dict[int, list[int]],
        fixed: IntArray | None,
        limit_s: float,
        hint: IntArray | None = None,
        coupling: bool = False,
        penalised: Collection[int] | None = None,
        unmet_caps: Sequence[tuple[tuple[int, ...], float]] = (),
        of: Problem | None = None,
        on_demand_floors: Sequence[tuple[int, float]] = (),
        grow: Collection[int] = (),
    ) -> _Run:
        """One search of `of` (default: the problem) over `subset`."""
        prob = problem if of is None else of
        mdl = _build(
            prob,
            subset,
            fixed,
            backend,
            coupling=coupling,
            penalised=penalised,
            unmet_caps=unmet_caps,
            on_demand_floors=on_demand_floors,
            soft=coupling and prob.budget_usd_per_hour is not None,
            grow=grow,
        )
        small = sum(map(len, subset.values())) < SMALL_SEARCH_POOLS
        stall = stall_nodes
        if small and stall_nodes > 0:
            stall = min(stall_nodes, SMALL_SEARCH_STALL_NODES)
        return _run(
            prob,
            mdl,
            time_limit_s=limit_s,
            seed=seed,
            backend=backend,
            hint=hint,
            gap_tolerance=gap_tolerance,
            node_limit=node_limit,
            stall_nodes=stall,
            small_search=small,
        )

    # Each model alone, `workers` at a time (the backend releases the GIL while it
    # searches). A model's share of the time left is its share of the candidate pools not
    # yet searched, so time a model does not need (proven optimal early) goes to the rest.
    lock = threading.Lock()
    keep_set = frozenset(keep_models)

    def keep_alone(m: int) -> _Run:
        """Keeping the current fleet: routing only."""
        return _route(problem, {m: cands[m]}, problem.current)

    def alone(m: int) -> _Run:
        with lock:
            weight = len(cands[m]) / max(1, unstarted[0])
            unstarted[0] -= len(cands[m])
        sub = {m: cands[m]}
        grow = (m,) if grow_kept and m in keep_set else ()
        if node_limit > 0:  # the node limit decides; the clock is only a safety net
            found = run(sub, None, time_limit_s, hint=problem.current, grow=grow)
        else:
            left = deadline - time.perf_counter()
            limit = max(0.05, min(left, left * workers * weight))
            found = run(sub, None, limit, hint=problem.current, grow=grow)
        if found.status is not Status.INFEASIBLE and served_covered(found, sub):
            return found
        # A search cut short (a loaded machine) may end with demand unmet, or no plan:
        # the rounded relaxation serves it all, at some cost.
        fallback = _route(problem, sub, _rounded_relaxation(problem, sub))
        if fallback.status is Status.INFEASIBLE:
            return found
        if found.status is Status.INFEASIBLE or _cost(fallback) < _cost(found):
            return fallback
        return found

    def unmet_of(r: _Run) -> tuple[float, ...]:
        return tuple(r.unmet_rps.get(k, 0.0) for k in range(len(problem.demands)))

    def served_covered(r: _Run, sub: dict[int, list[int]]) -> bool:
        """Whether a run of the models in `sub` serves all their load with its cover."""
        return not r.unmet_rps_total and not shortfalls(problem, r.nodes, unmet_of(r), sub)

    def _cost(r: _Run) -> float:
        return fleet_cost(problem, r.nodes, unmet_of(r), cands)

    order = sorted(cands, key=lambda m: -len(cands[m]))
    # Keeping is a small LP per model: run inline. Threads only pay for several searches.
    keep_runs = {m: keep_alone(m) for m in order}
    held = tuple(
        sorted(
            m
            for m in keep_set & set(cands)
            if keep_runs[m].status is not Status.INFEASIBLE
            and served_covered(keep_runs[m], {m: cands[m]})
        )
    )
    search = [m for m in order if m not in held]
    unstarted = [max(1, sum(len(cands[m]) for m in search))]
    if workers > 1 and len(search) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            searched = list(pool.map(alone, search))
    else:
        searched = [alone(m) for m in search]
    runs = [keep_runs[m] for m in held] + searched
    keep = _merge(problem, list(keep_runs.values()))
    keep_ok = keep.status is not Status.INFEASIBLE and _coupling_ok(problem, problem.current)
    best = _merge(problem, runs)

    def time_left() -> float:
        """Time for the searches still to come (the whole limit under a node limit)."""
        return time_limit_s if node_limit > 0 else max(0.1, deadline - time.perf_counter())

    def again(sub: Problem, keep: Collection[int] = ()) -> Solution:
        """`sub` (the problem with a rule dropped) solved in the time left, same settings."""
        found = solve(
            sub,
            time_limit_s=time_left(),
            seed=seed,
            workers=workers,
            backend=backend,
            gap_tolerance=gap_tolerance,
            node_limit=node_limit,
            keep_models=keep,
            stall_nodes=stall_nodes,
        )
        return dataclasses.replace(found, solve_time_s=time.perf_counter() - started)

    coupled = problem.quotas or problem.spend_caps or problem.budget_usd_per_hour is not None
    if coupled and (best.status is Status.INFEASIBLE or not _coupling_ok(problem, best.nodes)):
        if problem.budget_usd_per_hour is not None and _storm_covered(problem):
            # The storm-covered fleet breaks the budget or a quota: under a budget the
            # storm cover took what the lower priorities' load needed (docs/solver.md,
            # "Storm cover for the top priorities"), so plan as without it.
            return again(dataclasses.replace(problem, priority_storm_share=0.0), keep_models)
        hint = best.nodes if best.status is not Status.INFEASIBLE else None
        best = run(cands, None, time_left(), hint=hint, coupling=True)
        held = ()  # the joint search was free to move every model
        if problem.budget_usd_per_hour is not None:
            # The joint searches leave cover short where the budget cannot pay for it
            # (solver.cover): the current fleet is evaluated the same way, serving first.
            soft_keep = [_route(problem, {m: cands[m]}, problem.current, soft=True) for m in order]
            keep = _merge(problem, soft_keep)
            keep_ok = keep.status is not Status.INFEASIBLE and _coupling_ok(
                problem, problem.current
            )
        if best.status is not Status.INFEASIBLE:
            best, share_relaxed = _by_priority(
                problem, best, unmet_of(best), run, cands, deadline, time_limit_s, node_limit
            )
        elif (relaxed := _relax(problem)) is not None:
            # No plan keeps every hard constraint within the budget and quotas: the best
            # fleet without the one that cannot be paid for, rather than none at all.
            sub, dropped = relaxed
            found = again(sub)
            return dataclasses.replace(found, relaxed=(dropped, *found.relaxed))
    elapsed = time.perf_counter() - started

    if best.status is Status.INFEASIBLE:
        nodes = problem.current.copy()
        unmet = unmet_of(keep) if keep_ok else tuple(d.rps for d in problem.demands)
        cost = fleet_cost(problem, nodes, unmet, cands)
        return Solution(
            status=Status.FEASIBLE if keep_ok else Status.INFEASIBLE,
            nodes=nodes,
            objective=cost,
            bound=cost if keep_ok else math.inf,
            gap=math.inf,
            solve_time_s=elapsed,
            unmet_rps=unmet,
            usd_per_hour=fleet_price(problem, nodes),
            kept_current=True,
            kept_models=held,
            class_rps=_class_rps(problem, keep) if keep_ok else None,
            uncovered=_uncovered(problem, nodes, unmet, cands) if keep_ok else (),
        )

    nodes, unmet = best.nodes, unmet_of(best)
    cost = fleet_cost(problem, nodes, unmet, cands)
    kept = False
    chosen = best
    if keep_ok:
        keep_cost = fleet_cost(problem, problem.current, unmet_of(keep), cands)
        keep_rank = _rank(problem, unmet_of(keep), keep_cost)
        if keep_rank <= _rank(problem, unmet, cost + _TOL):
            nodes, unmet, cost, kept = problem.current.copy(), unmet_of(keep), keep_cost, True
            chosen = keep
            share_relaxed = ()  # the current fleet keeps every share (keep_ok)
    bound = min(best.bound, cost)
    gap = (cost - bound) / max(abs(cost), 1e-9) if cost > 0 else 0.0
    return Solution(
        status=best.status,
        nodes=nodes,
        objective=cost,
        bound=bound,
        gap=max(gap, 0.0),
        solve_time_s=elapsed,
        unmet_rps=unmet,
        usd_per_hour=fleet_price(problem, nodes),
        kept_current=kept,
        kept_models=held,
        relaxed=(Relaxation.ON_DEMAND_SHARE,) if share_relaxed else (),
        share_relaxed=share_relaxed,
        class_rps=_class_rps(problem, chosen),
        uncovered=_uncovered(problem, nodes, unmet, cands),
    )


def _uncovered(
    problem: Problem, nodes: IntArray, unmet: Sequence[float], cands: dict[int, list[int]]
) -> tuple[CoverShortfall, ...]:
    """The groups a plan leaves short of spot-loss cover (`Solution.uncovered`)."""
    return tuple(rec for rec, _ in shortfalls(problem, nodes, unmet, cands))


def _class_rps(problem: Problem, run: _Run) -> FloatArray | None:
    """A run's routed load as (size classes x pools) rps; None without size classes."""
    if not problem.size_classes:
        return None
    out = np.zeros((len(problem.size_classes), len(problem.pools)), dtype=np.float64)
    for (c, p), rps in run.routed.items():
        out[c, p] = rps
    return out
