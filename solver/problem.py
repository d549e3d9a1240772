"""The placement problem and its solution as plain, index-based data.

The solver knows nothing of clouds: a pool is a row with a price, a serving
location, a failure domain and a market flag; a model is a row of capacities.
`scheduler.decide.planner` turns config, catalog, profiles, forecast and fleet into a
`Problem` and a `Solution` back into a plan.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class Status(enum.StrEnum):
    """Outcome of a solve."""

    OPTIMAL = "optimal"  # proven optimal within the solver's tolerance
    FEASIBLE = "feasible"  # valid, not proven optimal within the time limit
    INFEASIBLE = "infeasible"  # hard constraints conflict (or no plan found in time)


class Relaxation(enum.StrEnum):
    """A hard constraint a solve dropped because the budget or a quota could not pay for it
    (the alternative was no plan at all, and no node launched)."""

    MIN_REPLICAS = "min_replicas"  # every model's minimum replicas: dropped, demand decides
    COMMITTED = "committed"  # nodes still booting, kept by every plan: may be cancelled
    # A model's min_on_demand_share, dropped for that model alone (`Solution.share_relaxed`
    # names it) when the budget cannot pay for its demand with the share, now or one node's
    # growth ahead: priority comes before a model's own on-demand floor (docs/solver.md,
    # "On-demand share under a budget", "Top priority under a budget").
    ON_DEMAND_SHARE = "on_demand_share"


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """One place nodes can come from."""

    key: str  # caller's label, carried through untouched
    location: int  # index of the serving location (a cloud region) demand is routed to
    failure_domain: int  # index of the unit that loses spot capacity at once (zone)
    spot: bool  # True for spot pools, which robustness assumes can vanish
    usd_per_hour: float  # price of one node for an hour
    risk_usd_per_hour: float = 0.0  # expected interruption cost of one node-hour
    launch_usd_per_hour: float = 0.0  # one-off cost of adding a node, amortised per hour
    remove_usd_per_hour: float = 0.0  # one-off cost of removing a node, amortised per hour
    gpus: int = 1  # accelerators per node, counted against quotas
    max_nodes: int = 10_000  # nodes the pool can hold now (0 after a stock-out)
    # Price of a node counted against the budget; None: `usd_per_hour`. A committed pool
    # (capacity already paid for) costs nothing more to use, but the budget still counts
    # its nodes at their list price, as the budget guard does (docs/commitments.md).
    budget_usd_per_hour: float | None = None
    # A spot pool whose loss costs (next to) no serving time: its nodes' notice outlasts a
    # replacement's boot, or losses are rare enough for the gap they leave (the caller's
    # tolerance). Spot-loss robustness does not count it as capacity that can vanish
    # (docs/solver.md, "Spot losses that need no cover").
    loss_tolerated: bool = False

    @property
    def vanishes(self) -> bool:
        """True when robustness must assume this pool's capacity can be lost at once."""
        return self.spot and not self.loss_tolerated

    @property
    def listed_usd_per_hour(self) -> float:
        """Price of one node as the budget counts it."""
        return self.usd_per_hour if self.budget_usd_per_hour is None else self.budget_usd_per_hour


@dataclass(frozen=True, slots=True)
class DemandSpec:
    """Load of one model from one source region."""

    model: int  # index into Problem.models
    region: str  # caller's label of the source region
    rps: float  # requests per second to serve (the planned quantile)
    locations: tuple[int, ...]  # serving locations close enough (latency/affinity)
    # Index into Problem.size_classes: the requests' size class, when the model's demand
    # is placed by size; None: the model's nodes serve its whole mix at capacity_rps.
    size_class: int | None = None


@dataclass(frozen=True, slots=True)
class LossCoverGroup:
    """Serving locations whose surviving capacity must cover, after any failure domain's
    loss, the robustness share of the demands that can be served only there
    (`Problem.loss_cover_groups`)."""

    locations: tuple[int, ...]  # location indices whose pools count as cover
    demands: tuple[int, ...]  # indices into Problem.demands of the load to cover
    rps: float  # their total load


@dataclass(frozen=True, slots=True)
class CoverShortfall:
    """Served load of one model within one group of locations that a plan leaves without
    spot-loss cover (the budget pays for serving it, not for covering it: docs/solver.md,
    "Cover under a binding budget")."""

    model: int  # index into Problem.models
    locations: tuple[int, ...]  # the group's location indices (`LossCoverGroup.locations`)
    capacity_rps: float  # capacity missing after the worst failure domain's loss
    load_rps: float  # served load that capacity would cover (capacity_rps / the share)
    # True: missing after a preemption storm instead (`Problem.storm_share`; only a search
    # cut short leaves it: docs/solver.md, "Storm cover for the top priorities")
    storm: bool = False


@dataclass(frozen=True, slots=True)
class SizeClassSpec:
    """Requests of one model of one size (a bucket of prompt lengths): a node's capacity
    for them differs by pool, so the solver may route them to pools of their own."""

    model: int  # index into Problem.models
    key: str  # caller's label, carried through untouched
    capacity_rps: FloatArray  # (pools,) sustainable rps of one node for these requests


@dataclass(frozen=True, slots=True)
class QuotaSpec:
    """A cap on accelerators over a set of pools (summed over models)."""

    name: str  # caller's label, reported when binding
    pools: tuple[int, ...]  # pool indices the quota covers
    max_gpus: int  # accelerators allowed in those pools together


@dataclass(frozen=True, slots=True)
class SpendCap:
    """An amount per hour that nodes in a set of pools draw from (a savings plan): the
    nodes there, summed over models, times what each draws, stay within it."""

    name: str  # caller's label
    pools: tuple[int, ...]  # pool indices that draw from it
    usd_per_hour: tuple[float, ...]  # per pool of `pools`: what one node draws per hour
    max_usd_per_hour: float  # the amount

    def drawn(self, per_pool: IntArray) -> float:
        """What a fleet with `per_pool` nodes per pool (summed over models) draws."""
        pairs = zip(self.pools, self.usd_per_hour, strict=True)
        return float(sum(int(per_pool[p]) * w for p, w in pairs))


@dataclass(frozen=True, slots=True)
class Problem:
    """Everything one solve needs. Arrays are (models x pools)."""

    models: tuple[str, ...]  # model labels
    pools: tuple[PoolSpec, ...]  # candidate pools
    capacity_rps: FloatArray  # sustainable rps of one node of model m in pool p (0 = cannot)
    demands: tuple[DemandSpec, ...]  # load to serve
    current: IntArray  # nodes running now per (model, pool)
    min_replicas: tuple[int, ...] = ()  # per model; empty means 0
    min_on_demand_share: tuple[float, ...] = ()  # per model, of capacity; empty means 0
    quotas: tuple[QuotaSpec, ...] = ()  # accelerator caps
    spend_caps: tuple[SpendCap, ...] = ()  # amounts per hour that pools draw from
    budget_usd_per_hour: float | None = None  # cap on the fleet's price
    robustness_fraction: float = 0.0  # served demand still covered after losing a domain's spot
    # Small fleets (see `robustness_share`): losing a domain may cost this many nodes'
    # capacity when that is more than (1 - robustness_fraction) of the load; 0 = off.
    robustness_spare_nodes: int = 0
    # Share of every vanishing spot pool's nodes a preemption storm takes at once (rounded
    # up per pool): without a budget, the models of a priority above the lowest keep the
    # robustness share of their served load on what such a storm leaves (`storm_share`).
    priority_storm_share: float = 0.0
    # The share of their served load those models keep on what the storm leaves.
    priority_storm_fraction: float = 1.0
    unmet_penalty_usd_per_rps_hour: float = 1000.0  # cost of each unserved rps
    # Nodes per (model, pool) a plan must keep: launched and still booting. Cancelling
    # them for a marginally cheaper mix throws away their boot and delays capacity.
    committed: IntArray | None = None
    # Per model; empty means all 0. When the budget or a quota leaves demand unmet, a
    # higher priority's unmet demand is minimised first, strictly (docs/solver.md).
    priorities: tuple[int, ...] = ()
    # Per model; empty means all False. True: its ready nodes serve less than the demand
    # seen now, so its moves are not counted twice under a budget (`moves_bill_twice`).
    short: tuple[bool, ...] = ()
    # Per model; empty means all True. False: the model's load need not survive the loss
    # of a failure domain's spot pools (batch demand that waits out an interruption).
    robust: tuple[bool, ...] = ()
    # Size classes of the models placed by size (docs/solver.md "Placement by size"): a
    # model's demands then all name a class, and its nodes time-share between classes.
    # Empty: every model's nodes serve its mix at capacity_rps, as without sizes.
    size_classes: tuple[SizeClassSpec, ...] = ()

    def __post_init__(self) -> None:
        shape = (len(self.models), len(self.pools))
        if self.capacity_rps.shape != shape or self.current.shape != shape:
            raise ValueError(f"capacity and current must have shape {shape}")
        if self.committed is not None and (
            self.committed.shape != shape or (self.committed > self.current).any()
        ):
            raise ValueError(f"committed must have shape {shape} and be within current")
        if self.min_replicas and len(self.min_replicas) != len(self.models):
            raise ValueError("min_replicas needs one entry per model")
        if self.min_on_demand_share and len(self.min_on_demand_share) != len(self.models):
            raise ValueError("min_on_demand_share needs one entry per model")
        if self.priorities and len(self.priorities) != len(self.models):
            raise ValueError("priorities needs one entry per model")
        if self.short and len(self.short) != len(self.models):
            raise ValueError("short needs one entry per model")
        if self.robust and len(self.robust) != len(self.models):
            raise ValueError("robust needs one entry per model")
        for c in self.spend_caps:
            if len(c.usd_per_hour) != len(c.pools) or min(c.usd_per_hour, default=0) < 0:
                raise ValueError(f"spend cap {c.name}: one draw >= 0 per pool")
        if not 0.0 <= self.robustness_fraction <= 1.0:
            raise ValueError("robustness_fraction must be within [0, 1]")
        if not 0.0 <= self.priority_storm_share <= 1.0:
            raise ValueError("priority_storm_share must be within [0, 1]")
        if not 0.0 < self.priority_storm_fraction <= 1.0:
            raise ValueError("priority_storm_fraction must be within (0, 1]")
        for d in self.demands:
            if d.rps < 0 or not np.isfinite(d.rps):
                raise ValueError(f"demand {self.models[d.model]}/{d.region}: rps must be >= 0")
        for cls in self.size_classes:
            if cls.capacity_rps.shape != (len(self.pools),):
                raise ValueError(f"size class {cls.key}: capacity must have shape ({shape[1]},)")
        for d in self.demands:
            if (d.size_class is None) == self.by_size(d.model):
                raise ValueError(
                    f"demand {self.models[d.model]}/{d.region}: every demand of a model placed"
                    " by size names a size class of that model, and no other does"
                )
            if d.size_class is not None and self.size_classes[d.size_class].model != d.model:
                raise ValueError(f"demand {self.models[d.model]}/{d.region}: another model's class")

    def by_size(self, m: int) -> bool:
        """Whether model m's demand is placed by size (it has size classes)."""
        return any(c.model == m for c in self.size_classes)

    def classes_of(self, m: int) -> list[int]:
        """Indices of model m's size classes (empty: not placed by size)."""
        return [i for i, c in enumerate(self.size_classes) if c.model == m]

    def robustness_share(self, m: int, demand_rps: float) -> float:
        """Share of model m's served load that must survive the loss of any one failure
        domain's spot pools, for a total demand of `demand_rps`.

        `robustness_fraction`, except for small fleets when `robustness_spare_nodes` is
        set: with 3 replicas' load, 0.8 of it still needs all 3 replicas after losing a
        domain, i.e. a spare in every domain or on-demand nodes. There the share is
        `1 - spare_nodes x node / demand` (losing a domain costs at most that many nodes'
        capacity, SpotHedge's one over-provisioned replica), but never below one node's
        worth of the load (`node / demand`): spot still spreads over at least two
        domains, so no single domain's loss leaves the model with nothing. `node` is the
        capacity of one node of the model's cheapest spot pool per rps (at most the
        demand). Large fleets are unchanged: the spare rule applies only while
        (1 - fraction) x demand is less than the spare nodes' capacity (under 5 nodes'
        load at 0.8 and one spare). See docs/solver.md ("Small fleets")."""
        alpha = self.robustness_fraction
        if self.robust and not self.robust[m]:
            return 0.0
        if alpha <= 0 or self.robustness_spare_nodes <= 0 or demand_rps <= 0:
            return alpha
        best: tuple[float, int] | None = None
        for p, pool in enumerate(self.pools):
            cap = float(self.capacity_rps[m, p])
            if pool.vanishes and cap > 0 and pool.max_nodes > 0:
                cand = (pool.usd_per_hour / min(cap, demand_rps), p)
                best = cand if best is None or cand < best else best
        if best is None:
            return alpha  # no spot pool: no domain row uses the share
        node = min(float(self.capacity_rps[m, best[1]]), demand_rps)
        spare = 1.0 - self.robustness_spare_nodes * node / demand_rps
        return max(min(alpha, spare), min(alpha, node / demand_rps))

    def storm_share(self, m: int) -> float:
        """Share of each vanishing spot pool's nodes of model m that its cover must also
        survive losing at once, rounded up per pool (a preemption storm): the
        `priority_storm_share` for a model of a priority above the lowest present, 0 for
        every other model, every model without priorities and batch demand. Under a
        budget that cannot pay for the storm-covered fleet, `solver.mip.solve` plans the
        problem with `priority_storm_share` 0: there the storm cover took budget the lower
        priorities' load needed (docs/solver.md, "Storm cover for the top priorities")."""
        if self.priority_storm_share <= 0 or not self.priorities:
            return 0.0
        if self.robust and not self.robust[m]:
            return 0.0
        return self.priority_storm_share if self.priority(m) > min(self.priorities) else 0.0

    @staticmethod
    def storm_survivors(nodes: int, share: float) -> int:
        """Nodes of a pool's `nodes` a storm taking `share` of them (rounded up) leaves."""
        return math.floor(nodes * (1.0 - share) + 1e-9)

    def priority(self, m: int) -> int:
        """Priority of model m (higher is served first when capacity is short)."""
        return self.priorities[m] if self.priorities else 0

    def moves_bill_twice(self, m: int) -> bool:
        """Whether a move of model m's nodes counts against the budget twice while it is
        under way (the old nodes bill until the new ones serve): for every model of a
        priority above the lowest, whose moves must not leave it short (make before
        break). With one priority, moves drain first as before.

        Not for a model that is `short` (its ready nodes serve less than the demand seen
        now): it misses its SLO with or without the move, and the overlap, which the
        budget could not pay for, kept such a model for good on a fleet that cost more
        than the one it needed (a storm's on-demand fallback under a budget: docs/solver.md,
        "Preemption storms under a budget"). Its move then drains first; the guard lets
        the drain go only when the on-demand launches it pays for add more of the model
        than it takes."""
        if self.short and self.short[m]:
            return False
        return bool(self.priorities) and self.priority(m) > min(self.priorities)

    def loss_cover_groups(self, m: int, pools: Collection[int]) -> tuple[LossCoverGroup, ...]:
        """The sets of serving locations whose capacity must survive a failure domain's
        loss for model m, each with the demands that can be served only inside it: per
        distinct reach (location set) of m's demands with load, and their union; `pools`
        are m's candidate pools (docs/solver.md, "Spot-loss robustness by reach").

        After a domain's loss the surviving nodes serve only the demand within their
        latency reach, so counting every node of the model (as one row over all its
        locations did) took nodes that no source region could reach as cover. By Hall's
        theorem the survivors can serve alpha x the load iff every set of demands finds
        that much in the union of their reaches; the groups check each reach and the
        union of all, which is every such set for up to two distinct reaches (the
        embedded default's two regions) and a necessary condition beyond. A reach no
        fleet can cover (each of its candidate pools is spot in one same domain) has no
        group, and its load counts in no union: there is nothing to buy for it, and a
        row would only turn its load into unmet load. With one reach holding every pool
        of the model, the one group is the old row."""
        sets: list[frozenset[int]] = []
        for d in self.demands:
            reach = frozenset(d.locations)
            if d.model != m or d.rps <= 0 or reach in sets:
                continue
            if self._coverable(m, reach, pools):
                sets.append(reach)
        if len(sets) > 1:
            sets.append(frozenset().union(*sets))
        out: list[LossCoverGroup] = []
        for locs in sets:
            ks = tuple(
                k
                for k, d in enumerate(self.demands)
                if d.model == m
                and d.rps > 0
                and locs.issuperset(d.locations)
                and frozenset(d.locations) in sets
            )
            rps = sum(self.demands[k].rps for k in ks)
            out.append(LossCoverGroup(tuple(sorted(locs)), ks, rps))
        return tuple(out)

    def _coverable(self, m: int, locations: frozenset[int], pools: Collection[int]) -> bool:
        """Whether some fleet of `pools` at `locations` keeps capacity for model m after
        any one failure domain's loss: a pool there that does not vanish, or vanishing
        pools in two domains."""
        domains: set[int] = set()
        for p in pools:
            pool = self.pools[p]
            if pool.location not in locations or self.capacity_rps[m, p] <= 0:
                continue
            if pool.max_nodes <= 0:
                continue
            if not pool.vanishes:
                return True
            domains.add(pool.failure_domain)
        return len(domains) > 1

    def replicas_min(self, m: int) -> int:
        """Minimum nodes of model m."""
        return self.min_replicas[m] if self.min_replicas else 0

    def on_demand_share_min(self, m: int) -> float:
        """Minimum on-demand share of model m's capacity."""
        return self.min_on_demand_share[m] if self.min_on_demand_share else 0.0

    def without_share(self, models: Collection[int]) -> Problem:
        """This problem with the minimum on-demand share of `models` dropped (0)."""
        if not models or not self.min_on_demand_share:
            return self
        shares = tuple(0.0 if m in models else s for m, s in enumerate(self.min_on_demand_share))
        return dataclasses.replace(self, min_on_demand_share=shares)


@dataclass(frozen=True, slots=True)
class Solution:
    """What the solver decided."""

    status: Status  # outcome
    nodes: IntArray  # target nodes per (model, pool); the current fleet when infeasible
    objective: float  # USD/hour: price + risk + churn + unmet penalty of `nodes`
    bound: float  # best proven lower bound on the objective
    gap: float  # (objective - bound) / objective, 0 when proven optimal
    solve_time_s: float  # wall time of the whole call
    unmet_rps: tuple[float, ...]  # per demand, load `nodes` cannot serve
    usd_per_hour: float  # price of `nodes`
    kept_current: bool  # True when the current fleet was returned (no better plan found)
    kept_models: tuple[int, ...] = ()  # models kept as they run without a search (keep_models)
    # Constraints dropped because the budget or quotas could not pay for them, in the
    # order they were dropped (empty: every constraint holds).
    relaxed: tuple[Relaxation, ...] = ()
    # With Relaxation.ON_DEMAND_SHARE in `relaxed`: the models whose min_on_demand_share
    # the plan does not keep, highest priority first (empty otherwise).
    share_relaxed: tuple[int, ...] = ()
    # Load of each size class routed to each pool, (size classes x pools) rps; None when
    # the problem has no size classes or no plan was found.
    class_rps: FloatArray | None = None
    # Served load left without spot-loss cover, per model and group of locations (empty:
    # every group is covered; only a binding budget or quota leaves cover short).
    uncovered: tuple[CoverShortfall, ...] = ()
