"""`oracle`: perfect foresight of demand and spot capacity, solved offline over the
whole horizon; the lower bound on cost at full service.

The program (per step t of the foresight's grid, step length h hours, boot time b hours):

* x[m,p,t] >= 0   nodes of model m serving in pool p during step t (integer in the IP)
* s[m,p,t] >= 0   nodes started for step t: s >= x[t] - x[t-1], x[-1] = 0
* y[k,l,t] >= 0   load of demand k (model, source region) served in location l,
                  only locations within the region's latency limit
* u[k,t]  >= 0    load left unserved (only when no allowed pool can take it)

minimise  sum price_p (h x + b s) + penalty h u
s.t.      sum_l y[k,l,t] + u[k,t] = D[k,t]                 serve everything
          sum_k y[k,l,t] <= sum_{p in l} cap[m,p] x[m,p,t]  per model, location, step
          sum_m x[m,p,t] <= spot capacity of p at t         the spot trace
          quotas, min_replicas and min_on_demand_share of the config, every step

`cap` is the profile's rps at the SLO times `planning.target_utilization`, as the
planner uses; pools are the config's allowed ones. Every node pays its boot time
(b s), since every policy does. Not included: `robustness_fraction` (a hedge against
preemptions the oracle foresees) and the budget cap.

Why it is a lower bound: any policy that serves all demand with nodes that change only
between steps gives a feasible point (its ready nodes per step and its launches), and
pays at least this objective. Two ways to get it:

* "ip": the integer program itself, solved to optimality with SCIP, when it has at
  most `ip_max_int_vars` integer variables and is proven optimal within the time limit;
* "lp": its LP relaxation (GLOP), otherwise. Beyond `max_lp_steps` steps the LP runs on
  blocks of consecutive steps with the block means of demand and spot capacity: the sum
  of a block's constraints, so still a relaxation (and the block means of x never
  start more nodes than x does), hence still a lower bound.

As a Policy it replays a schedule: the IP's solution, or with the LP the relaxation
re-solved on block maxima and block minimum spot capacity and rounded up (rounding
down where a spot pool would overflow). At time now it targets, per pool, the most
the schedule needs until nodes launched at the next tick could be ready (boot time
plus tick interval), so nodes are ready when needed; a spot pool's target never
exceeds what it holds at the current step. The replay therefore costs somewhat more
than the schedule, and the schedule at least the bound.
`lower_bound_cost_usd`, `bound_kind` and `schedule_cost_usd` are what reports quote.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from ortools.linear_solver import pywraplp

from scheduler.catalog import Catalog
from scheduler.config import Config
from scheduler.domain import CapacityProfile, Market, Offering, Plan, PlanStatus, Pool
from scheduler.observation import Observation
from scheduler.planner import resolve_location
from simulations.baselines.common import (
    UNLIMITED,
    Capacity,
    Foresight,
    location_key,
    permitted,
    prices_of,
    to_plan,
)

_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class _Grid:
    """The time grid one solve runs on."""

    demand: dict[tuple[str, str], list[float]]  # (model, region) -> rps per block
    spot: dict[Pool, list[float]]  # spot pool -> capacity per block
    step_h: float  # length of one block in hours
    block: int  # foresight steps per block


@dataclass(frozen=True, slots=True)
class _Result:
    """One solve's outcome."""

    optimal: bool  # proven optimal
    objective: float  # USD over the horizon, penalty included
    penalty_usd: float  # part of the objective from unserved load
    unserved_rps_h: float  # unserved load, rps x hours
    x: dict[tuple[str, Pool], list[float]]  # nodes per (model, pool) per block


class Oracle:
    """Offline optimum over the whole horizon (see the module docstring)."""

    name = "oracle"

    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        profiles: Sequence[CapacityProfile],
        foresight: Foresight,
        *,
        boot_time_s: float | None = None,
        tick_interval_s: float | None = None,
        ip_max_int_vars: int = 2_000,
        time_limit_s: float = 30.0,
        lp_time_limit_s: float = 900.0,
        max_lp_steps: int = 2_000,
        seed: int = 0,
    ) -> None:
        self._config = config
        self._catalog = catalog
        self._capacity = Capacity(config, catalog, profiles)
        self._foresight = foresight
        self.boot_time_s = (
            config.planning.default_boot_time_s if boot_time_s is None else boot_time_s
        )
        self.tick_interval_s = (
            config.scheduler.tick_interval_s if tick_interval_s is None else tick_interval_s
        )
        self.ip_max_int_vars = ip_max_int_vars
        self.time_limit_s = time_limit_s
        self.lp_time_limit_s = lp_time_limit_s
        self.max_lp_steps = max_lp_steps
        self.seed = seed
        offerings = foresight.offerings if foresight.offerings is not None else catalog.offerings
        self._offerings = tuple(o for o in offerings if permitted(config, catalog, o))
        self._prices = prices_of(offerings)

        started = time.perf_counter()
        self._candidates = self._pools()
        self.bound_kind: str = "lp"  # "ip" | "lp"; "none" if the LP hit lp_time_limit_s
        self.lower_bound_cost_usd: float = 0.0  # lower bound on cost at full service, USD
        self.unserved_rps_h: float = 0.0  # load no allowed pool can serve, rps x hours
        self.schedule: dict[tuple[str, Pool], list[int]] = {}  # nodes per step, replayed
        self._solve()
        self.schedule_cost_usd: float = self._cost(self.schedule)  # cost of the replay
        self.solve_time_s: float = time.perf_counter() - started  # offline, informative only

    # -- the program ------------------------------------------------------------------

    def _pools(self) -> dict[str, list[Offering]]:
        """Per model, the pools that can serve it, less the dominated ones.

        A pool without a capacity limit (on-demand, or spot without a trace) dominates
        any other pool of the same location that costs at least as much and serves at
        most as much: moving nodes to it never costs more and cannot break a limit,
        since it has none (ties go to the lower pool); spot never dominates on-demand,
        which `min_on_demand_share` counts. Traced spot pools dominate
        nothing, as models share their capacity. Spot pools that hold nothing over the
        whole trace are dropped.
        """
        out: dict[str, list[Offering]] = {}
        spot = self._foresight.spot_capacity
        for section in self._config.models:
            m = section.name
            offers = [
                o
                for o in self._offerings
                if self._capacity.rps(m, o.pool) > 0
                and (o.pool not in spot or max(spot[o.pool], default=0) > 0)
            ]
            free = [o for o in offers if o.pool not in spot]

            def dominated(o: Offering, m: str = m, free: list[Offering] = free) -> bool:
                cap = self._capacity.rps(m, o.pool)
                for q in free:
                    if q is o or location_key(q.pool) != location_key(o.pool):
                        continue
                    if q.pool.market is Market.SPOT and o.pool.market is Market.ON_DEMAND:
                        continue  # on-demand capacity counts for min_on_demand_share
                    q_cap = self._capacity.rps(m, q.pool)
                    if q.usd_per_hour > o.usd_per_hour or q_cap < cap:
                        continue
                    strict = q.usd_per_hour < o.usd_per_hour or q_cap > cap
                    if strict or o.pool in spot or q.pool < o.pool:
                        return True
                return False

            out[m] = [o for o in offers if not dominated(o)]
        return out

    def _grid(self, block: int, aggregate: str) -> _Grid:
        """Demand and spot capacity on blocks of `block` steps; `aggregate` is "mean"
        (for the bound) or "peak" (max demand, min spot capacity: for the schedule)."""
        fs = self._foresight

        def blocks(series: Sequence[float], pick: str) -> list[float]:
            out = []
            for i in range(0, len(series), block):
                chunk = series[i : i + block]
                out.append(
                    sum(chunk) / len(chunk)
                    if pick == "mean"
                    else (max(chunk) if pick == "max" else min(chunk))
                )
            return out

        demand = {
            k: blocks(list(v), "mean" if aggregate == "mean" else "max")
            for k, v in fs.demand_rps.items()
        }
        spot = {
            p: blocks([float(c) for c in v], "mean" if aggregate == "mean" else "min")
            for p, v in fs.spot_capacity.items()
        }
        return _Grid(demand, spot, block * fs.step_s / 3600.0, block)

    def _solve(self) -> None:
        steps = self._foresight.steps
        if steps == 0:
            self.bound_kind = "ip"
            return
        n_int = steps * sum(len(v) for v in self._candidates.values())
        ip: _Result | None = None
        if n_int <= self.ip_max_int_vars:
            ip = self._run(self._grid(1, "mean"), integer=True)
        if ip is not None and ip.optimal:
            self.bound_kind = "ip"
            self._set_bound(ip)
            self.schedule = {k: [round(v) for v in vs] for k, vs in ip.x.items()}
            return
        block = max(1, math.ceil(steps / self.max_lp_steps))
        bound = self._run(self._grid(block, "mean"), integer=False)
        if bound is None:
            raise RuntimeError("oracle: the LP relaxation found no solution")
        if bound.optimal:
            self.bound_kind = "lp"
            self._set_bound(bound)
        else:
            # A relaxation stopped by its time limit bounds nothing: say so, keep playing.
            self.bound_kind = "none"
            self.lower_bound_cost_usd = math.nan
        if ip is not None and ip.x:
            # A feasible integer schedule found in time beats rounding the relaxation.
            self.schedule = {k: [round(v) for v in vs] for k, vs in ip.x.items()}
            return
        play = self._run(self._grid(block, "peak"), integer=False) if block > 1 else bound
        if play is None:
            raise RuntimeError("oracle: the schedule LP found no solution")
        self.schedule = self._round(play, block)

    def _set_bound(self, r: _Result) -> None:
        self.lower_bound_cost_usd = r.objective - r.penalty_usd
        self.unserved_rps_h = r.unserved_rps_h

    def _run(self, grid: _Grid, *, integer: bool) -> _Result | None:
        """Build and solve the program on `grid`."""
        lp = pywraplp.Solver.CreateSolver("SCIP" if integer else "GLOP")
        if lp is None:  # pragma: no cover - both ship in the ortools wheel
            raise RuntimeError("OR-Tools backend not available")
        if integer:
            lp.SetSolverSpecificParametersAsString(f"randomization/randomseedshift = {self.seed}")
        limit_s = self.time_limit_s if integer else self.lp_time_limit_s
        lp.SetTimeLimit(max(10, int(limit_s * 1000)))
        inf = lp.infinity()
        T = len(next(iter(grid.demand.values()), [])) or len(next(iter(grid.spot.values()), []))
        boot_h = self.boot_time_s / 3600.0
        penalty = self._config.solver.unmet_penalty_usd_per_rps_hour
        obj = lp.Objective()
        obj.SetMinimization()

        x: dict[tuple[str, Pool], list[pywraplp.Variable]] = {}
        for m, offers in self._candidates.items():
            for o in offers:
                ub = inf
                xs = []
                for t in range(T):
                    if o.pool in grid.spot:
                        ub = grid.spot[o.pool][t]
                        ub = math.floor(ub + _EPS) if integer else ub
                    var = lp.IntVar(0, ub, "") if integer else lp.NumVar(0, ub, "")
                    obj.SetCoefficient(var, o.usd_per_hour * grid.step_h)
                    xs.append(var)
                    start = lp.NumVar(0, inf, "")
                    obj.SetCoefficient(start, o.usd_per_hour * boot_h)
                    row = lp.Constraint(0, inf)  # start - x[t] + x[t-1] >= 0
                    row.SetCoefficient(start, 1)
                    row.SetCoefficient(var, -1)
                    if t > 0:
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

        origins = {
            r.name: resolve_location(self._catalog, r.location) for r in self._config.regions
        }
        limits = {r.name: r.max_latency_ms for r in self._config.regions}
        cap_rows: dict[tuple[str, str, int], pywraplp.Constraint] = {}
        u_vars: list[pywraplp.Variable] = []
        for (m, region), series in sorted(grid.demand.items()):
            if m not in self._candidates or region not in origins:
                continue
            locs = sorted(
                {
                    location_key(o.pool)
                    for o in self._candidates[m]
                    if self._catalog.rtt_ms(origins[region], location_key(o.pool)) <= limits[region]
                }
            )
            for t in range(T):
                d = series[t]
                if d <= 0:
                    continue
                served = lp.Constraint(d, d)
                u = lp.NumVar(0, d, "")
                u_vars.append(u)
                obj.SetCoefficient(u, penalty * grid.step_h)
                served.SetCoefficient(u, 1)
                for loc in locs:
                    y = lp.NumVar(0, d, "")
                    served.SetCoefficient(y, 1)
                    key = (m, loc, t)
                    if key not in cap_rows:
                        row = lp.Constraint(-inf, 0)
                        for o in self._candidates[m]:
                            if location_key(o.pool) == loc:
                                row.SetCoefficient(x[m, o.pool][t], -self._capacity.rps(m, o.pool))
                        cap_rows[key] = row
                    cap_rows[key].SetCoefficient(y, 1)

        for section in self._config.models:
            m = section.name
            offers = self._candidates.get(m, [])
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
                            x[m, o.pool][t], (od - share) * self._capacity.rps(m, o.pool)
                        )
        for q in self._config.quotas:
            members = [
                (key, xs)
                for key, xs in x.items()
                if key[1].cloud is q.cloud
                and (q.region is None or key[1].region == q.region)
                and (q.market is None or key[1].market is q.market)
                and (q.gpu_kind is None or self._capacity.itype(key[1]).gpu_kind == q.gpu_kind)
            ]
            if members:
                for t in range(T):
                    row = lp.Constraint(-inf, q.max_gpus)
                    for (_, pool), xs in members:
                        row.SetCoefficient(xs[t], self._capacity.itype(pool).gpu_count)

        code = lp.Solve()
        if code not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
            return None
        unserved = sum(u.solution_value() for u in u_vars)
        return _Result(
            optimal=code == pywraplp.Solver.OPTIMAL,
            objective=lp.Objective().Value(),
            penalty_usd=penalty * grid.step_h * unserved,
            unserved_rps_h=unserved * grid.step_h,
            x={k: [v.solution_value() for v in xs] for k, xs in x.items()},
        )

    def _round(self, r: _Result, block: int) -> dict[tuple[str, Pool], list[int]]:
        """An integer schedule from a relaxed one, per model, location and block: every
        pool keeps the whole nodes it had, then the capacity the fractions carried is
        made up with whole nodes, at each step the pool that covers the rest (or as much
        as its room allows) for the least per covered rps.
        Blocks are then spread back over the foresight's steps."""
        steps = self._foresight.steps
        n_blocks = len(next(iter(r.x.values()), []))
        counts: dict[tuple[str, Pool], list[int]] = {
            k: [math.floor(v + _EPS) for v in vs] for k, vs in r.x.items()
        }
        room: dict[Pool, list[float]] = {}
        for pool, cap in self._foresight.spot_capacity.items():
            room[pool] = [
                float(min(cap[t * block : (t + 1) * block], default=0)) for t in range(n_blocks)
            ]
        for (_, pool), vs in counts.items():
            if pool in room:
                for t, v in enumerate(vs):
                    room[pool][t] -= v
        groups: dict[tuple[str, str], list[tuple[str, Pool]]] = defaultdict(list)
        for key in r.x:
            groups[key[0], location_key(key[1])].append(key)
        for (m, _), keys in groups.items():
            for t in range(n_blocks):
                short = sum((r.x[k][t] - counts[k][t]) * self._capacity.rps(m, k[1]) for k in keys)
                while short > _EPS:
                    # The cheapest way to cover what is left: whole nodes of one pool.
                    best: tuple[float, tuple[str, Pool], int] | None = None
                    for k in keys:
                        per = self._capacity.rps(m, k[1])
                        n = math.ceil(short / per - _EPS)
                        if k[1] in room:
                            n = min(n, math.floor(room[k[1]][t] + _EPS))
                        if n <= 0:
                            continue
                        cand = (self._prices.get(k[1], 0.0) * n / min(1.0, n * per / short), k, n)
                        if best is None or cand[:2] < best[:2]:
                            best = cand
                    if best is None:
                        break  # nowhere left with room: the LP's fractions cannot be covered
                    _, k, n = best
                    counts[k][t] += n
                    short -= n * self._capacity.rps(m, k[1])
                    if k[1] in room:
                        room[k[1]][t] -= n
        return {k: [vs[t // block] for t in range(steps)] for k, vs in counts.items()}

    def _cost(self, schedule: dict[tuple[str, Pool], list[int]]) -> float:
        """Price and boot cost of a schedule, as the program counts them."""
        step_h = self._foresight.step_s / 3600.0
        boot_h = self.boot_time_s / 3600.0
        total = 0.0
        for (_, pool), counts in schedule.items():
            price = self._prices.get(pool, 0.0)
            prev = 0
            for c in counts:
                total += price * (c * step_h + max(0, c - prev) * boot_h)
                prev = c
        return total

    # -- the policy -------------------------------------------------------------------

    def target_at(self, now_s: float) -> dict[tuple[str, Pool], int]:
        """Per (model, pool), the nodes to hold at `now_s`: the most the schedule needs
        before nodes launched at the next tick can be ready (boot time + tick interval),
        capped by what a spot pool holds now."""
        fs = self._foresight
        if fs.steps == 0:
            return {}
        i = fs.step_at(now_s)
        lead = math.ceil((self.boot_time_s + self.tick_interval_s) / fs.step_s - 1e-9) - 1
        lead = max(lead, 0)
        last = min(fs.steps - 1, i + lead)
        want = {k: max(v[i : last + 1]) for k, v in self.schedule.items()}
        by_pool: dict[Pool, list[tuple[str, Pool]]] = defaultdict(list)
        for key in want:
            by_pool[key[1]].append(key)
        for pool, keys in by_pool.items():
            cap = fs.spot_capacity.get(pool)
            held = UNLIMITED if cap is None else cap[i]
            if sum(want[k] for k in keys) > held:
                for k in keys:
                    want[k] = self.schedule[k][i]
        return {k: v for k, v in want.items() if v > 0}

    def decide(self, obs: Observation) -> Plan:
        """The precomputed target for this moment."""
        status = PlanStatus.OPTIMAL if self.bound_kind == "ip" else PlanStatus.FEASIBLE
        notes = (
            f"oracle bound ({self.bound_kind}): {self.lower_bound_cost_usd:.2f} USD; "
            f"schedule {self.schedule_cost_usd:.2f} USD",
        )
        return to_plan(self.target_at(obs.now_s), prices_of(obs.offerings), notes, status)
