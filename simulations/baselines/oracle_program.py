"""The oracle's linear programs over the foresight's steps (docs/baselines.md).

`Programs.solve` builds and solves one program on a `Grid` of blocks of steps: the
bound's (what the engine enforces and bills at least, no config rules) or the
schedule's (capacity at the planning utilisation, the config's min_replicas,
min_on_demand_share and quotas), as an integer program (SCIP) or its relaxation (GLOP).
The variables and rows are written out in `simulations.baselines.oracle`'s docstring.
Nothing here reads the clock or chooses between programs; `Oracle` does.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from dataclasses import dataclass

from ortools.linear_solver import pywraplp

from scheduler.config import Config
from scheduler.decide.planner import resolve_location
from scheduler.domain import Market, Offering, Pool
from scheduler.fleet.capacity import NodeCapacity
from scheduler.fleet.catalog import Catalog
from simulations.baselines.common import Foresight, StepRates

EPS = 1e-6  # counts within this of an integer are that integer


def split_blocks(steps: int, block: int) -> list[int]:
    """Lengths of consecutive blocks of `block` steps covering `steps` (the last shorter)."""
    return [block] * (steps // block) + ([steps % block] if steps % block else [])


@dataclass(frozen=True, slots=True)
class Grid:
    """The time grid one solve runs on: consecutive blocks of foresight steps."""

    demand: dict[tuple[str, str], list[float]]  # (model, region) -> rps per block
    spot: dict[Pool, list[float]]  # spot pool -> instance limit per block
    lengths: tuple[int, ...]  # foresight steps per block
    step_h: float  # length of one foresight step in hours

    @property
    def firsts(self) -> list[int]:
        """Index of the first foresight step of every block."""
        out, at = [], 0
        for n in self.lengths:
            out.append(at)
            at += n
        return out


@dataclass(frozen=True, slots=True)
class ProgramResult:
    """One solve's outcome."""

    optimal: bool  # proven optimal
    objective: float  # USD over the horizon, penalty included
    penalty_usd: float  # part of the objective from unserved load
    unserved_rps_h: float  # unserved load, rps x hours
    x: dict[tuple[str, Pool], list[float]]  # nodes per (model, pool) per block
    # (model, source region) -> the load served per block (rps): demand less unserved.
    served: dict[tuple[str, str], list[float]]


@dataclass(frozen=True)
class Programs:
    """What every program of one oracle shares: the world and the solver's limits."""

    config: Config
    catalog: Catalog
    capacity: NodeCapacity  # planned rps per node (the schedule's)
    full: NodeCapacity  # the engine's rps per node (the bound's)
    foresight: Foresight
    boot_time_s: float
    seed: int  # SCIP's random seed shift
    time_limit_s: float  # for integer programs
    lp_time_limit_s: float  # for relaxations

    def solve(
        self,
        grid: Grid,
        candidates: dict[str, list[Offering]],
        *,
        bound: bool,
        rules: bool,
        integer: bool,
        built: threading.Event | None = None,
    ) -> ProgramResult | None:
        """Build and solve a program on `grid`: the bound's billing and spot limits
        (`bound`) or the schedule's; with the config's rules at the planning utilisation
        (`rules`) or with neither. `built` is set when the program is built."""
        lp = pywraplp.Solver.CreateSolver("SCIP" if integer else "GLOP")
        if lp is None:  # pragma: no cover - both ship in the ortools wheel
            raise RuntimeError("OR-Tools backend not available")
        if integer:
            lp.SetSolverSpecificParametersAsString(f"randomization/randomseedshift = {self.seed}")
        elif bound:
            # Only the bound's value is read, and every optimal vertex has it: the dual simplex
            # reaches one sooner. Not for the schedule, which is rounded from its vertex (on
            # the embedded slice the dual's vertex rounded to a schedule 18% dearer).
            lp.SetSolverSpecificParametersAsString("use_dual_simplex: true")
        limit_s = self.time_limit_s if integer else self.lp_time_limit_s
        lp.SetTimeLimit(max(10, int(limit_s * 1000)))
        inf = lp.infinity()
        T = len(grid.lengths)
        firsts = grid.firsts
        h = grid.step_h
        boot_h = self.boot_time_s / 3600.0
        capacity = self.capacity if rules else self.full
        penalty = self.config.solver.unmet_penalty_usd_per_rps_hour
        obj = lp.Objective()
        obj.SetMinimization()

        def step_cost(b: int) -> float:
            """USD per hour of price for one node through block b."""
            if not bound:
                return h * grid.lengths[b]
            # Step 0 is paid by the warm-up; a node may leave just after its last count.
            return 0.0 if firsts[b] == 0 else min(h, boot_h) * grid.lengths[b]

        def start_cost(b: int) -> float:
            """USD per hour of price for one run starting at block b."""
            if firsts[b] == 0:
                return 0.0  # launched during the warm-up
            accounted = min(boot_h, firsts[b] * h)  # boot time after the trace start
            return max(0.0, accounted - h) if bound else accounted

        x: dict[tuple[str, Pool], list[pywraplp.Variable]] = {}
        for m, offers in candidates.items():
            for o in offers:
                ub = inf
                xs = []
                for t in range(T):
                    if o.pool in grid.spot:
                        ub = grid.spot[o.pool][t]
                        ub = math.floor(ub + EPS) if integer else ub
                    var = lp.IntVar(0, ub, "") if integer else lp.NumVar(0, ub, "")
                    obj.SetCoefficient(var, o.usd_per_hour * step_cost(t))
                    xs.append(var)
                    c = start_cost(t)
                    if t > 0 and c > 0:
                        start = lp.NumVar(0, inf, "")
                        obj.SetCoefficient(start, o.usd_per_hour * c)
                        row = lp.Constraint(0, inf)  # start - x[t] + x[t-1] >= 0
                        row.SetCoefficient(start, 1)
                        row.SetCoefficient(var, -1)
                        row.SetCoefficient(xs[t - 1], 1)
                x[m, o.pool] = xs

        # Spot capacity is shared by the models placed in a pool.
        by_pool: dict[Pool, list[list[pywraplp.Variable]]] = defaultdict(list)
        for (_, pool), xs in x.items():
            if pool in grid.spot:
                by_pool[pool].append(xs)
        for pool, groups in by_pool.items():
            if len(groups) > 1:
                for t in range(T):
                    row = lp.Constraint(-inf, grid.spot[pool][t])
                    for xs in groups:
                        row.SetCoefficient(xs[t], 1)

        origins = {r.name: resolve_location(self.catalog, r.location) for r in self.config.regions}
        limits = {r.name: r.max_latency_ms for r in self.config.regions}
        cap_rows: dict[tuple[str, str, int], pywraplp.Constraint] = {}
        u_vars: list[tuple[pywraplp.Variable, float]] = []
        # (model, region) -> per block, its demand and its unserved variable (None: no load)
        loads: dict[tuple[str, str], list[tuple[float, pywraplp.Variable | None]]] = {}
        # Per model and location, its candidate pools (in candidate order) and their rps.
        # Per block the rate at its steps' sizes (`StepRates`): the least for the schedule,
        # the most for the bound; one rate throughout for a model planned at one size.
        rates = StepRates(capacity, self.foresight.sizes)
        at_loc: dict[str, dict[str, list[tuple[Pool, list[float]]]]] = {}
        for m, offers in candidates.items():
            at_loc[m] = defaultdict(list)
            for o in offers:
                per_block = [
                    rates.over(m, o.pool, f, n, most=bound)
                    for f, n in zip(firsts, grid.lengths, strict=True)
                ]
                at_loc[m][o.pool.location].append((o.pool, per_block))
        for (m, region), series in sorted(grid.demand.items()):
            if m not in candidates or region not in origins:
                continue
            locs = sorted(
                loc
                for loc in at_loc[m]
                if self.catalog.rtt_ms(origins[region], loc) <= limits[region]
            )
            # Whole nodes: a step with load d needs at least ceil(d / the largest node
            # within reach) of them there (a cut every integer point meets; per block, the
            # mean of the steps' counts). It closes most of the LP's gap on small loads.
            reach = [o for o in candidates[m] if o.pool.location in locs]
            top = max((capacity.rps(m, o.pool) for o in reach), default=0.0)
            fine = self.foresight.demand_for(bound=bound).get((m, region), ())
            if rates.sized(m):
                tops = [
                    max((rates.at(m, o.pool, i) for o in reach), default=0.0)
                    for i in range(len(fine))
                ]
            if (top > 0 or rates.sized(m)) and len(fine) == sum(grid.lengths):
                for t in range(T):
                    first, n = firsts[t], grid.lengths[t]
                    chunk = fine[first : first + n]
                    if rates.sized(m):
                        need = sum(
                            math.ceil(v / tops[first + i] - 1e-9)
                            for i, v in enumerate(chunk)
                            if v > 0 and tops[first + i] > 0
                        ) / len(chunk)
                    else:
                        need = sum(math.ceil(v / top - 1e-9) for v in chunk if v > 0) / len(chunk)
                    if need > 0:
                        row = lp.Constraint(need, inf)
                        for o in reach:
                            row.SetCoefficient(x[m, o.pool][t], 1)
            loads[m, region] = [(0.0, None)] * T
            for t in range(T):
                d = series[t]
                if d <= 0:
                    continue
                served = lp.Constraint(d, d)
                u = lp.NumVar(0, d, "")
                loads[m, region][t] = (d, u)
                block_h = h * grid.lengths[t]
                u_vars.append((u, block_h))
                obj.SetCoefficient(u, penalty * block_h)
                served.SetCoefficient(u, 1)
                for loc in locs:
                    y = lp.NumVar(0, d, "")
                    served.SetCoefficient(y, 1)
                    key = (m, loc, t)
                    if key not in cap_rows:
                        row = lp.Constraint(-inf, 0)
                        for pool, rps in at_loc[m][loc]:
                            row.SetCoefficient(x[m, pool][t], -rps[t])
                        cap_rows[key] = row
                    cap_rows[key].SetCoefficient(y, 1)

        if rules:
            self._config_rules(lp, x, candidates, T)

        if built is not None:
            built.set()
        code = lp.Solve()
        if code not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
            return None
        unserved_rps_h = sum(u.solution_value() * bh for u, bh in u_vars)
        return ProgramResult(
            optimal=code == pywraplp.Solver.OPTIMAL,
            objective=lp.Objective().Value(),
            penalty_usd=penalty * unserved_rps_h,
            unserved_rps_h=unserved_rps_h,
            x={k: [v.solution_value() for v in xs] for k, xs in x.items()},
            served={
                k: [0.0 if u is None else max(0.0, d - u.solution_value()) for d, u in vs]
                for k, vs in loads.items()
            },
        )

    def _config_rules(
        self,
        lp: pywraplp.Solver,
        x: dict[tuple[str, Pool], list[pywraplp.Variable]],
        candidates: dict[str, list[Offering]],
        T: int,
    ) -> None:
        """min_replicas, min_on_demand_share and quotas at every block (the schedule's)."""
        inf = lp.infinity()
        for section in self.config.models:
            m = section.name
            offers = candidates.get(m, [])
            for t in range(T):
                if section.min_replicas > 0 and offers:
                    row = lp.Constraint(section.min_replicas, inf)
                    for o in offers:
                        row.SetCoefficient(x[m, o.pool][t], 1)
                share = section.min_on_demand_share
                if share > 0 and offers:
                    row = lp.Constraint(0, inf)
                    for o in offers:
                        od = 1.0 if o.pool.market is Market.ON_DEMAND else 0.0
                        row.SetCoefficient(
                            x[m, o.pool][t], (od - share) * self.capacity.rps(m, o.pool)
                        )
        for q in self.config.quotas:
            members = [
                (key, xs)
                for key, xs in x.items()
                if key[1].cloud is q.cloud
                and (q.region is None or key[1].region == q.region)
                and (q.market is None or key[1].market is q.market)
                and (q.gpu_kind is None or self.capacity.itype(key[1]).gpu_kind == q.gpu_kind)
            ]
            if members:
                for t in range(T):
                    row = lp.Constraint(-inf, q.max_gpus)
                    for (_, pool), xs in members:
                        row.SetCoefficient(xs[t], self.capacity.itype(pool).gpu_count)
