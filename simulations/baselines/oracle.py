"""`oracle`: perfect foresight of demand and spot capacity, solved offline over the
whole horizon; the lower bound on cost at full service, and a replay that serves it.

It solves two programs over the foresight's steps (step length h hours, boot time b):

* x[m,p,t] >= 0   nodes of model m ready in pool p at the start of step t
* s[m,p,t] >= 0   runs of nodes that start being ready at step t: s >= x[t] - x[t-1]
* y[k,l,t] >= 0   load of demand k (model, source region) served in location l, only
                  locations within the region's latency limit
* u[k,t]  >= 0    load left unserved (only when no allowed pool can take it)

s.t. sum_l y[k,l,t] + u[k,t] = D[k,t]; sum_k y[k,l,t] <= sum_{p in l} cap[m,p] x[m,p,t];
sum_m x[m,p,t] <= spot capacity of p at t; the unserved load pays a penalty. D is in
reference requests (`SizeFactors`), except for a model with a per-token SLO: there D is
the trace's requests and cap[m,p] becomes cap[m,p,t], a node's rate at step t's size
(`StepRates`; over a block of steps its least for the schedule, its most for the bound).

1. **The bound** (`lower_bound_cost_usd`, `bound_kind`) holds against any policy the
   replay engine can run, so it asks only what the engine and the simulated cloud
   enforce: `cap` is the profile's full rate at the SLO (the engine's capacity, not the
   planning utilisation), the spot limit at t is the most instances that can be
   running at the step's start (instances under notice still run), and none of the
   config's own rules (min_replicas, min_on_demand_share, quotas), which not every
   baseline follows. Its cost is what the engine bills at least, counted per run of a
   node (the steps t..t+k-1 in which it is counted as ready): billing is per second
   from the launch, the launch comes a boot time before the run, and nothing before the
   trace start is accounted, so a run costs at least price x ((k-1) h + min(b, t h)),
   and (k-1) h + b >= k min(h, b). Hence, with r = min(h, b) and
   c(t) = max(0, min(b, t h) - h):

       minimise  sum price_p (r sum_{t>=1} x[t] + sum_{t>=1} c(t) s[t])

   (step 0's fleet was launched during the unaccounted warm-up, and a node may leave
   just after being counted in its last step). Any policy that serves all demand gives
   a feasible point of this program: its ready nodes at each step's start and its runs.
   "ip" is the integer program proven optimal by SCIP (at most `ip_max_int_vars`
   integer variables, within `time_limit_s`); "lp" is its LP relaxation (GLOP), also a
   lower bound. Beyond `max_lp_steps` steps the LP runs on blocks: the first boot time
   (where c(t) varies) step by step, then blocks of consecutive steps with the block
   means of demand and spot limits. A block's constraints are the sums of its steps',
   and the block means of x never start more nodes than x does, so it is still a lower
   bound. A report quotes the bound with its kind. `max_lp_steps` (240) keeps a 7-day
   per-minute trace to blocks of about 44 steps, and its LP to a few seconds; blocks
   weaken the bound, never invalidate it (docs/baselines.md).

   With `config_bound=True` the same program is also solved under the config's rules at
   the planning utilisation (`config_bound_cost_usd`, `config_bound_kind`): what a
   policy that follows those rules pays at least. It is informational and as large as
   the bound's program, so it is off by default ("off", NaN).

2. **The schedule** (`schedule`, `schedule_cost_usd`) is what the oracle replays. It
   follows the config like capsched does: `cap` at `planning.target_utilization` (the
   headroom the engine's latency model needs to meet the SLO), min_replicas,
   min_on_demand_share and quotas every step, and only pools sold as available. The
   rounded relaxation (`Rounding`) keeps the relaxation's whole spot nodes, puts its
   on-demand capacity in one on-demand pool per model and reach group for the whole
   horizon, covers the rest with the pools that cover it cheapest, a start paying its
   boot, and restores min_on_demand_share and min_replicas with that on-demand pool
   (docs/baselines.md has the measurements behind these choices). A spot node counted at
   t must have been launched up to a boot time plus a tick earlier and kept since, and
   the replay gives a shrinking pool's nodes back at the last tick before it shrinks, so
   its spot limit at t is the fewest instances the pool holds from that launch to a tick
   (plus a step) after t. It pays what the engine accounts: price per step, and the boot
   time after the trace start of every node started after step 0. The IP when small
   enough, else the relaxation re-solved on block maxima of demand and block minima of
   spot capacity and rounded (within the spot room); blocks of ceil(steps /
   `max_lp_steps`) steps (42 on the week).

The programs are built and solved in `simulations.baselines.oracle_program`, a relaxed
schedule is rounded to whole nodes in `simulations.baselines.oracle_rounding`; this module
chooses the programs, their grids and pools, and replays the result.

As a Policy it replays the schedule: at time now it targets, per pool, the most the
schedule needs until nodes launched at the next tick could be ready (boot time plus
tick interval), so nodes are ready when needed. A spot pool's target never exceeds
what the pool holds from now until the next tick (the schedule's own counts there,
when the pool is about to shrink), so the oracle gives spot nodes back before the
cloud takes them. The replay costs somewhat more than the schedule (it launches
early), and the schedule at least the bound. Not foreseen: random interruptions of
spot pools without a trace (they depend on the launch order), and per-type boot
times shorter than the scenario's (the bound uses the scenario's boot time).
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from scheduler.config import Config
from scheduler.decide.observation import Observation, PolicyBase
from scheduler.decide.planner import resolve_location
from scheduler.domain import CapacityProfile, Market, Offering, Plan, PlanStatus, Pool, prices_of
from scheduler.fleet.capacity import NodeCapacity
from scheduler.fleet.catalog import Catalog
from simulations.baselines.common import (
    Foresight,
    OfferingIndex,
    StepRates,
    permitted,
    to_plan,
)
from simulations.baselines.oracle_program import Grid, Programs, split_blocks
from simulations.baselines.oracle_rounding import Rounding


class Oracle(PolicyBase):
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
        max_lp_steps: int = 240,
        config_bound: bool = False,
        seed: int = 0,
    ) -> None:
        self._config = config
        self._catalog = catalog
        self._capacity = NodeCapacity(config, catalog, profiles)  # planned rps (the schedule)
        self._full = NodeCapacity(config, catalog, profiles, utilization=1.0)  # engine rps (bound)
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
        # (pool, bound) -> spot limit per step; computed once, read by every program.
        self._limits: dict[tuple[Pool, bool], list[float] | None] = {}
        # (id of a series, bound) -> (the series, kept alive so its id stays its own; limit)
        self._limit_of_series: dict[tuple[int, bool], tuple[object, list[float]]] = {}
        offerings = foresight.offerings if foresight.offerings is not None else catalog.offerings
        self._offerings = tuple(o for o in offerings if permitted(config, catalog, o))
        self._prices = prices_of(offerings)
        self._index = OfferingIndex()  # the latest observation's prices by pool

        self._programs = Programs(
            config,
            catalog,
            self._capacity,
            self._full,
            foresight,
            self.boot_time_s,
            seed,
            time_limit_s,
            lp_time_limit_s,
        )
        started = time.perf_counter()
        # Steps from a launch decision to a ready node: boot time plus one tick.
        self._lead_steps = max(
            1, math.ceil((self.boot_time_s + self.tick_interval_s) / foresight.step_s - 1e-9)
        )
        # Steps the replay looks ahead when a spot pool is about to shrink: until the next
        # tick, and one step more for the tick's own actions to land (`_Targets`).
        self._hold_steps = math.ceil(self.tick_interval_s / foresight.step_s - 1e-9) + 1
        self._candidates = self._pools(bound=False, rules=True)  # the schedule's pools
        self.schedule: dict[tuple[str, Pool], list[int]] = {}  # nodes per step, replayed
        # The programs are independent. Building one is Python (it holds the GIL), solving
        # it is not: the schedule's program, the longest to solve, is built first and solved
        # in a thread while the bound's is built and solved here.
        built = threading.Event()  # set once the schedule's program is built (or not needed)

        def schedule() -> None:
            try:
                self._solve_schedule(built)
            finally:
                built.set()

        with ThreadPoolExecutor(max_workers=1) as pool:
            scheduled = pool.submit(schedule)
            built.wait()
            # "ip" | "lp"; "none" if the LP hit lp_time_limit_s. The bound on any policy's
            # cost (USD), and the load no pool can serve even there (rps x hours).
            self.bound_kind, self.lower_bound_cost_usd, self.unserved_rps_h = self._solve_bound(
                rules=False
            )
            # The same for policies that follow the config's rules at the planning
            # utilisation: informational, a third program as large as the bound's, so only
            # on request (`config_bound`); "off" and NaN otherwise.
            self.config_bound_kind, self.config_bound_cost_usd = "off", math.nan
            if config_bound:
                self.config_bound_kind, self.config_bound_cost_usd, _ = self._solve_bound(
                    rules=True
                )
            scheduled.result()
        self.schedule_cost_usd: float = self._cost(self.schedule)  # the schedule, as billed
        self._targets = _Targets.of(self)  # what `target_at` reads, per step
        self.solve_time_s: float = time.perf_counter() - started  # offline, informative only

    # -- the programs -----------------------------------------------------------------

    def _spot_limit(self, pool: Pool, *, bound: bool) -> Sequence[float] | None:
        """The pool's instance limit per step (None: no limit). The bound's is the most
        that can be running at a step's start; the schedule's the fewest the pool holds
        from the earliest launch for the step (boot time + tick before) to the end of the
        replay's next tick after it (see `_limit_of`)."""
        key = (pool, bound)
        if key not in self._limits:
            self._limits[key] = self._compute_spot_limit(pool, bound=bound)
        return self._limits[key]

    def _compute_spot_limit(self, pool: Pool, *, bound: bool) -> list[float] | None:
        fs = self._foresight
        low = fs.spot_capacity.get(pool)
        if low is None:
            return None
        series = fs.spot_capacity_peak.get(pool, low) if bound else low
        # Pools driven by one trace share its series: one limit for all of them.
        key = (id(series), bound)
        if key not in self._limit_of_series:
            self._limit_of_series[key] = (series, self._limit_of(series, bound=bound))
        return self._limit_of_series[key][1]

    def _limit_of(self, low: Sequence[int], *, bound: bool) -> list[float]:
        if bound:
            return [float(c) for c in low]
        # min(low[max(0, t - back) : t + ahead]) for every t, as a sliding window minimum:
        # the series padded with its first and last values, whose minimum it cannot lower.
        # Ahead: the replay gives a spot pool's nodes back at the last tick before the pool
        # shrinks (`_Targets`), so a node counted at t must be held until then too.
        back, ahead = self._lead_steps, self._hold_steps
        arr = np.asarray(low, dtype=np.float64)
        if arr.size == 0:
            return []
        padded = np.concatenate([np.full(back, arr[0]), arr, np.full(ahead - 1, arr[-1])])
        windows = np.lib.stride_tricks.sliding_window_view(padded, back + ahead)
        return [float(v) for v in windows.min(axis=1)]

    def _pools(self, *, bound: bool, rules: bool) -> dict[str, list[Offering]]:
        """Per model, the pools that can serve it, less the dominated ones.

        A pool without a capacity limit (on-demand, or spot without a trace) dominates
        any other pool of the same location that costs at least as much and serves at
        most as much: moving nodes to it never costs more and cannot break a limit,
        since it has none (ties go to the lower pool); under the config's `rules`, spot
        never dominates on-demand, which `min_on_demand_share` counts. Traced spot pools
        dominate nothing, as models share their capacity. Spot pools that hold nothing
        over the whole trace are dropped, pools beyond every source region's latency
        limit too, and for the schedule, pools not sold as available.
        """
        out: dict[str, list[Offering]] = {}
        limits = {p: self._spot_limit(p, bound=bound) for p in self._foresight.spot_capacity}
        origins = [
            (resolve_location(self._catalog, r.location), r.max_latency_ms)
            for r in self._config.regions
        ]
        locations = {o.pool.location for o in self._offerings}
        # Only pools some source region may use, as capsched's solver reduces to them: a
        # node beyond every latency limit serves nothing, and must not count for the
        # on-demand share either.
        reachable = {
            loc
            for loc in locations
            if any(self._catalog.rtt_ms(origin, loc) <= limit for origin, limit in origins)
        }
        # A model counted at each step's size: a pool's rates at all its sizes.
        rates = StepRates(self._capacity, self._foresight.sizes)
        for section in self._config.models:
            m = section.name
            offers = [
                o
                for o in self._offerings
                if max(rates.distinct(m, o.pool)) > 0
                and o.pool.location in reachable
                and (bound or o.available)
                and max(limits.get(o.pool) or [1.0], default=0) > 0
            ]
            free: dict[str, list[Offering]] = defaultdict(list)  # by location
            for o in offers:
                if limits.get(o.pool) is None:
                    free[o.pool.location].append(o)

            def dominated(o: Offering, m: str = m, free: dict[str, list[Offering]] = free) -> bool:
                cap = rates.distinct(m, o.pool)
                for q in free.get(o.pool.location, ()):
                    if q is o:
                        continue
                    if rules and q.pool.market is Market.SPOT and o.pool.market is Market.ON_DEMAND:
                        continue  # on-demand capacity counts for min_on_demand_share
                    q_cap = rates.distinct(m, q.pool)
                    pairs = list(zip(q_cap, cap, strict=True))
                    if q.usd_per_hour > o.usd_per_hour or any(a < b for a, b in pairs):
                        continue
                    strict = q.usd_per_hour < o.usd_per_hour or any(a > b for a, b in pairs)
                    if strict or limits.get(o.pool) is not None or q.pool < o.pool:
                        return True
                return False

            out[m] = [o for o in offers if not dominated(o)]
        return out

    def _grid(self, lengths: Sequence[int], *, bound: bool, aggregate: str) -> Grid:
        """Demand and spot limits on blocks of `lengths` steps; `aggregate` is "mean"
        (a relaxation) or "peak" (max demand, min spot limit: for the schedule)."""
        fs = self._foresight

        def blocks(series: Sequence[float], pick: str) -> list[float]:
            out, at = [], 0
            for n in lengths:
                chunk = series[at : at + n]
                at += n
                out.append(
                    sum(chunk) / len(chunk)
                    if pick == "mean"
                    else (max(chunk) if pick == "max" else min(chunk))
                )
            return out

        demand = {
            k: blocks(list(v), "mean" if aggregate == "mean" else "max")
            for k, v in fs.demand_for(bound=bound).items()
        }
        spot: dict[Pool, list[float]] = {}
        for pool in fs.spot_capacity:
            limit = self._spot_limit(pool, bound=bound)
            assert limit is not None
            spot[pool] = blocks([float(c) for c in limit], "mean" if aggregate == "mean" else "min")
        return Grid(demand, spot, tuple(lengths), fs.step_s / 3600.0)

    def _int_vars(self, candidates: dict[str, list[Offering]]) -> int:
        return self._foresight.steps * sum(len(v) for v in candidates.values())

    def _solve_bound(self, *, rules: bool) -> tuple[str, float, float]:
        """(kind, USD, unserved rps x h) of the bound; with `rules`, the bound for
        policies that follow the config's rules at the planning utilisation."""
        steps = self._foresight.steps
        if steps == 0:
            return "ip", 0.0, 0.0
        cands = self._pools(bound=True, rules=rules)
        if self._int_vars(cands) <= self.ip_max_int_vars:
            grid = self._grid([1] * steps, bound=True, aggregate="mean")
            ip = self._programs.solve(grid, cands, bound=True, rules=rules, integer=True)
            if ip is not None and ip.optimal:
                return "ip", ip.objective - ip.penalty_usd, ip.unserved_rps_h
        if steps <= self.max_lp_steps:
            lengths = [1] * steps
        else:
            # Step by step while the boot cost of a start still depends on the step, then
            # blocks (see the module docstring).
            fine = min(steps, math.ceil(self.boot_time_s / self._foresight.step_s) + 1)
            block = max(1, math.ceil((steps - fine) / max(1, self.max_lp_steps - fine)))
            lengths = [1] * fine + split_blocks(steps - fine, block)
        grid = self._grid(lengths, bound=True, aggregate="mean")
        lp = self._programs.solve(grid, cands, bound=True, rules=rules, integer=False)
        if lp is None:
            raise RuntimeError("oracle: the LP relaxation found no solution")
        if not lp.optimal:
            # A relaxation stopped by its time limit bounds nothing: say so, keep playing.
            return "none", math.nan, math.nan
        return "lp", lp.objective - lp.penalty_usd, lp.unserved_rps_h

    def _solve_schedule(self, built: threading.Event | None = None) -> None:
        """Solve the schedule; `built` is set once its program is built, before its solve."""
        steps = self._foresight.steps
        if steps == 0:
            return
        if self._int_vars(self._candidates) <= self.ip_max_int_vars:
            grid = self._grid([1] * steps, bound=False, aggregate="peak")
            ip = self._programs.solve(
                grid, self._candidates, bound=False, rules=True, integer=True, built=built
            )
            if ip is not None and ip.x:
                # Optimal or only feasible in time: either beats rounding the relaxation.
                self.schedule = {k: [round(v) for v in vs] for k, vs in ip.x.items()}
                return
        block = max(1, math.ceil(steps / self.max_lp_steps))
        lengths = split_blocks(steps, block)
        grid = self._grid(lengths, bound=False, aggregate="peak")
        play = self._programs.solve(
            grid, self._candidates, bound=False, rules=True, integer=False, built=built
        )
        if play is None:
            raise RuntimeError("oracle: the schedule LP found no solution")
        self.schedule = Rounding(
            self._config,
            self._capacity,
            self._prices,
            lambda pool: self._spot_limit(pool, bound=False),
            tuple(self._foresight.spot_capacity),
            steps,
            self._foresight.step_s / 3600.0,
            self.boot_time_s / 3600.0,
            self._reach(),
            StepRates(self._capacity, self._foresight.sizes),
        ).round(play, block)

    def _reach(self) -> dict[str, frozenset[str]]:
        """Per source region, the locations of the schedule's pools within its limit."""
        locations = {o.pool.location for offers in self._candidates.values() for o in offers}
        out: dict[str, frozenset[str]] = {}
        for r in self._config.regions:
            origin = resolve_location(self._catalog, r.location)
            out[r.name] = frozenset(
                loc for loc in locations if self._catalog.rtt_ms(origin, loc) <= r.max_latency_ms
            )
        return out

    def _cost(self, schedule: dict[tuple[str, Pool], list[int]]) -> float:
        """Cost of a schedule as the replay accounts it: price per step, and the boot
        time after the trace start of every node started after step 0."""
        step_h = self._foresight.step_s / 3600.0
        boot_h = self.boot_time_s / 3600.0
        total = 0.0
        for (_, pool), counts in schedule.items():
            if not counts:
                continue
            price = self._prices.get(pool, 0.0)
            c = np.asarray(counts, dtype=np.float64)
            starts = np.maximum(0.0, np.diff(c, prepend=c[0]))
            boot = np.minimum(boot_h, np.arange(len(c)) * step_h)
            total += price * float(c.sum() * step_h + (starts * boot).sum())
        return total

    # -- the policy -------------------------------------------------------------------

    def target_at(self, now_s: float) -> dict[tuple[str, Pool], int]:
        """Per (model, pool), the nodes to hold at `now_s`: the most the schedule needs
        before nodes launched at the next tick can be ready (boot time + tick interval).
        A spot pool that cannot hold that until the next tick holds the schedule's
        fewest until then instead (which fits, as the schedule's spot limit is the
        pool's fewest from launch on)."""
        fs = self._foresight
        if fs.steps == 0:
            return {}
        return self._targets.at(fs.step_at(now_s))

    def lower_bound(self) -> tuple[float, str] | None:
        """The lower bound on any policy's cost over the replay, and its kind."""
        return float(self.lower_bound_cost_usd), self.bound_kind

    def decide(self, obs: Observation) -> Plan:
        """The precomputed target for this moment."""
        status = PlanStatus.OPTIMAL if self.bound_kind == "ip" else PlanStatus.FEASIBLE
        ruled = (
            f"under the config's rules ({self.config_bound_kind}): "
            f"{self.config_bound_cost_usd:.2f} USD; "
            if self.config_bound_kind != "off"
            else ""
        )
        notes = (
            f"oracle bound ({self.bound_kind}): {self.lower_bound_cost_usd:.2f} USD; "
            f"{ruled}schedule {self.schedule_cost_usd:.2f} USD",
        )
        prices = self._index.update(obs.offerings).prices
        return to_plan(self.target_at(obs.now_s), prices, notes, status)


@dataclass(frozen=True)
class _Targets:
    """The schedule as arrays, with the windows `Oracle.target_at` takes at each step."""

    keys: list[tuple[str, Pool]]  # (model, pool) rows with a node at some step
    ahead: np.ndarray  # (keys, steps): most nodes over the lead time from each step
    until: np.ndarray  # (keys, steps): fewest nodes until the next tick lands
    # Per traced spot pool: its rows and its fewest instances until the next tick lands.
    spot: list[tuple[np.ndarray, np.ndarray]]

    @classmethod
    def of(cls, oracle: Oracle) -> _Targets:
        fs = oracle._foresight
        keys = [k for k, v in oracle.schedule.items() if any(v)]
        steps = fs.steps
        counts = np.array([oracle.schedule[k] for k in keys], dtype=np.int64).reshape(-1, steps)
        # Until the next tick, and one step more for the tick's own actions to land.
        tick = math.ceil(oracle.tick_interval_s / fs.step_s - 1e-9) + 1

        def window(a: np.ndarray, n: int, pick: str) -> np.ndarray:
            """pick(a[..., i : i + n]) for every i, the window cut at the end."""
            if a.shape[-1] == 0:
                return a
            pad = np.repeat(a[..., -1:], n - 1, axis=-1)
            view = np.lib.stride_tricks.sliding_window_view(
                np.concatenate([a, pad], axis=-1), n, axis=-1
            )
            return np.asarray(view.max(axis=-1) if pick == "max" else view.min(axis=-1))

        rows: dict[Pool, list[int]] = defaultdict(list)
        for r, (_, pool) in enumerate(keys):
            if pool in fs.spot_capacity:
                rows[pool].append(r)
        spot = [
            (
                np.array(rs, dtype=np.int64),
                window(_fit(fs.spot_capacity[pool], steps), tick, "min"),
            )
            for pool, rs in rows.items()
        ]
        return cls(
            keys,
            window(counts, oracle._lead_steps, "max"),
            window(counts, tick, "min"),
            spot,
        )

    def at(self, i: int) -> dict[tuple[str, Pool], int]:
        """Per (model, pool), the nodes to hold at step `i` (see `Oracle.target_at`)."""
        want = self.ahead[:, i].copy()
        for rs, held in self.spot:
            if want[rs].sum() > held[i]:
                want[rs] = self.until[rs, i]
        return {self.keys[r]: int(want[r]) for r in np.nonzero(want > 0)[0]}


def _fit(series: Sequence[int], steps: int) -> np.ndarray:
    """`series` as `steps` values: cut, or padded with its last value."""
    a = np.asarray(series[:steps], dtype=np.int64)
    if a.size < steps:
        a = np.concatenate([a, np.full(steps - a.size, a[-1] if a.size else 0, dtype=np.int64)])
    return a
