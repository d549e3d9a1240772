"""The fast loop: between plan ticks, launch at once when observed load outruns capacity.

A plan tick looks every `scheduler.tick_interval_s` (300 s) and a node takes a boot
time (600 s) to serve, so a burst that starts just after a tick waits up to 15
minutes for capacity. Every `scheduler.fast_interval_s` (30 s; 0 turns it off) the
fast check compares, per model, the sustained rate of each source region with the
capacity of the model's requested, booting and ready nodes within that region's latency
reach, at the planning utilisation and the observed mean request size of the model
(`scheduler.fleet.capacity.sample_sizes`; the reference request where the source gives no
sizes). The reading is the source's current rate (and,
where the source reports the model servers' queue, that rate plus the backlog cleared
within one fast interval; missing or non-finite readings are skipped, never read as
zero); it is sustained when every check over the last `scheduler.fast_sustain_s` (60 s)
read it, and the lowest of those readings is what counts. A node launched now serves
only after its boot time, so a spike that is over by the time a launch could help must
not launch anything: the tick-window peak (which the plan tick provisions for) is not
read here, and one reading alone never launches. Regions share the capacity they both
reach, so the check is per set of regions: a set's demand must fit in what its
regions reach together (Hall's condition; exact for the few source regions a config
has, see `_worst`).

When a set is short it launches, one node at a time, into the pool that closes the
shortfall at the lowest price per hour (nodes needed × USD/h, among the pools the config
allows within reach and available; on a tie a pool of the current plan, then the lower
USD per planned rps): no search. The plan's own pools are not preferred beyond a tie:
at low load the plan keeps its minimum replica on the cheapest node, which can serve a
burst at thirty times the price per request of another type (docs/forecasting.md, "Fast
loop between plan ticks", has the case that showed it). Each node must keep the fleet
within the budget, every [[quotas]] cap and the most nodes a pool holds; what cannot
be launched is a typed `Held`. Models are served in `[[models]] priority` order (highest
first, then by name), so a higher priority's launches take the budget first.

It removes nodes for one reason only, strict priority under the budget: when a model's
launch is held by the budget alone, nodes of lower-priority models give the budget up
(`Yield`). The lowest priority first; within it the nodes its sustained load (at the
planning utilisation) and its `min_replicas` do not need before those they do, the dearest
first (fewest nodes), then nodes not serving yet (terminated at once) before ready ones
(drained); just as many as free the launch's price, and none when all that may go together
would not. Nodes a lower priority needs may go only while the higher one's load is beyond
the whole rate of its capacity (overloaded now, not only into its planning headroom): with
them going for headroom, on two Azure functions with the 8B on top the 70B's share served
fell from 0.32 to 0.05 while the 8B's SLO was 1.000 either way. A node bills until it is
gone, so the launch waits: the next checks hold it (counting what the nodes already leaving
will free, so nothing is yielded twice) and launch once they are gone. Each check also
terminates the nodes whose drain has finished (any drain, the plan tick's too), so a drained
node stops billing within a fast interval instead of at the next plan tick. Scale-down for
cost stays with the plan tick, so the two never flap (the plan tick serves priorities in the
same strict order, but a launch it holds for the budget waits a tick for its drains and then
a boot). docs/solver.md, "A higher priority's rise between ticks", has the measurements.
The loop acts only in `daemon.approval_mode = "auto"` (a plan a person must approve is not
bypassed) and never in a dry run.

The launches go through the reconciler's journaled actuator like any other, so a
crash between journal and cloud call is recovered the same way. The next plan tick
sees them as booting nodes, which `CapschedPolicy` keeps in every plan.

`decide_fast` is pure (typed inputs, a `FastDecision` out); `FastLoop.check(now_s)` is
the one call the daemon (scheduler.service.daemon) and the simulator (simulations.engine)
make between ticks.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from scheduler.config import Config
from scheduler.decide.guards import CapacityOf, Held, priority_of
from scheduler.decide.planner import allowed, resolve_location
from scheduler.domain import MAX_NODES_PER_POOL, HoldKind, Node, NodeState, Offering, Plan, Pool
from scheduler.domain.actions import Action, Drain, Launch, Terminate
from scheduler.fleet.capacity import sample_sizes
from scheduler.fleet.catalog import Catalog
from scheduler.fleet.quotas import QuotaUse
from scheduler.loop.logs import event, held_events
from scheduler.loop.reconciler import Reconciler
from scheduler.ports.metrics import DemandSample
from scheduler.ports.provider import ProviderError

log = logging.getLogger(__name__)

_EPS = 1e-9
# Above this many source regions the subsets are not enumerated: each region alone and
# all together are checked instead (a config has a handful of regions).
MAX_EXACT_REGIONS = 10
_ALIVE = frozenset({NodeState.REQUESTED, NodeState.BOOTING, NodeState.READY})
# Nodes on their way out: they bill until gone, then free their price.
_LEAVING = frozenset({NodeState.DRAINING, NodeState.TERMINATING})


@dataclass(frozen=True, slots=True)
class Shortfall:
    """Source regions of one model whose observed load the capacity in reach misses."""

    model: str  # the model short of capacity
    regions: tuple[str, ...]  # the source regions whose load together does not fit
    demand_rps: float  # their observed short-window rate, summed
    capacity_rps: float  # planned capacity (target utilisation) of the nodes they reach

    @property
    def short_rps(self) -> float:
        """Load beyond capacity."""
        return self.demand_rps - self.capacity_rps


@dataclass(frozen=True, slots=True)
class Yield:
    """A node of a lower priority given up so that a higher priority's launch fits the
    budget: drained when it serves, terminated at once when it does not yet."""

    action: Drain | Terminate  # what happens to the node
    model: str  # the node's model (the lower priority)
    to_model: str  # the model whose held launch it makes room for
    needed: bool  # whether its model's sustained load needed it (strict priority took it)


@dataclass(frozen=True, slots=True)
class FastDecision:
    """What one fast check found and wants to do."""

    now_s: float  # time of the check
    shortfalls: tuple[Shortfall, ...]  # per model, the worst set of regions short (before)
    launches: tuple[Launch, ...]  # nodes to launch now
    held: tuple[Held, ...]  # launches the limits or the approval mode held back
    yields: tuple[Yield, ...] = ()  # lower-priority nodes given up to the budget


@dataclass(frozen=True, slots=True)
class FastReport:
    """One fast check as carried out."""

    decision: FastDecision  # what it decided
    launched: tuple[Launch, ...]  # launches the cloud accepted
    failed: tuple[tuple[Launch, str], ...]  # launches refused, with the error
    yielded: tuple[Drain | Terminate, ...] = ()  # yields carried out
    drained: tuple[Terminate, ...] = ()  # terminations of nodes whose drain had finished
    # Drains make before break held at the tick, released now that replacements serve.
    released: tuple[Drain, ...] = ()


def observed_rates(sample: DemandSample, drain_s: float) -> dict[tuple[str, str], float]:
    """Per (model, region), the current rate where it is a finite number >= 0; where the
    source also reports the servers' queue, the rate plus that backlog cleared within
    `drain_s`. Missing or garbage readings are left out (a queue alone, without a rate,
    is no reading). The tick-window peak is not read: it still holds a spike that ended
    minutes ago, and the plan tick already provisions for it."""
    clean = sample.cleaned()
    out: dict[tuple[str, str], float] = {}
    for key, rate in clean.rps.items():
        if not (math.isfinite(rate) and rate >= 0):
            continue
        queued = clean.waiting.get(key, math.nan)
        if math.isfinite(queued) and queued > 0:
            rate += queued / max(drain_s, 1.0)
        out[key] = rate
    return out


class SustainedRates:
    """The load that has lasted: per series, the lowest reading over the last
    `window_s`, once the checks cover that window without a gap.

    `update(now_s, rates)` takes one check's readings and returns the sustained rate
    of every series whose readings span the window (the reading in force at the window's
    start included); a series missing from a check starts over, and so does every series
    when time runs backwards. With `window_s = 0` a reading counts at once."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s  # how long load must last before it counts
        self._seen: dict[tuple[str, str], list[tuple[float, float]]] = {}

    def update(
        self, now_s: float, rates: Mapping[tuple[str, str], float]
    ) -> dict[tuple[str, str], float]:
        """Record one check's readings; the sustained rate per covered series."""
        for key in [k for k, h in self._seen.items() if k not in rates or h[-1][0] > now_s]:
            del self._seen[key]
        cut = now_s - self.window_s
        out: dict[tuple[str, str], float] = {}
        for key, rps in rates.items():
            seen = self._seen.setdefault(key, [])
            seen.append((now_s, rps))
            while len(seen) >= 2 and seen[1][0] <= cut + _EPS:
                del seen[0]  # the newest reading at or before the cut stays
            if seen[0][0] <= cut + _EPS:
                out[key] = min(v for _, v in seen)
        return out


def region_reach(config: Config, catalog: Catalog) -> dict[str, frozenset[str]]:
    """Per source region, the "cloud:region" locations within its latency limit (the
    planner's and the simulator's routing rule)."""
    locations = {f"{o.pool.cloud}:{o.pool.region}" for o in catalog.offerings}
    out: dict[str, frozenset[str]] = {}
    for r in config.regions:
        origin = resolve_location(catalog, r.location)
        out[r.name] = frozenset(
            loc for loc in locations if catalog.rtt_ms(origin, loc) <= r.max_latency_ms
        )
    return out


def _location(pool: Pool) -> str:
    return f"{pool.cloud}:{pool.region}"


def _subsets(regions: Sequence[str]) -> list[tuple[str, ...]]:
    if len(regions) <= MAX_EXACT_REGIONS:
        return [
            combo
            for k in range(1, len(regions) + 1)
            for combo in itertools.combinations(regions, k)
        ]
    return [(r,) for r in regions] + [tuple(regions)]


def _worst(
    model: str,
    rates: Mapping[str, float],
    capacity_at: Mapping[str, float],
    reach: Mapping[str, frozenset[str]],
) -> tuple[Shortfall, frozenset[str]] | None:
    """The set of regions with the largest load beyond the capacity they reach together,
    and the locations they reach; None when every set fits. By Hall's theorem the load
    can be routed within reach exactly when no set is short."""
    best: tuple[Shortfall, frozenset[str]] | None = None
    for combo in _subsets(sorted(rates)):
        near = frozenset().union(*(reach.get(r, frozenset()) for r in combo))
        # Exactly rounded sums: a sum in a set's iteration order (which changes with the
        # process's string hashing) made equal shortfalls differ in the last bit, and the
        # same replay launched into different pools from run to run.
        demand = math.fsum(rates[r] for r in combo)
        cap = math.fsum(capacity_at.get(loc, 0.0) for loc in near)
        # On a tie (within _EPS) the set found first, the smaller, stays the worst.
        if demand - cap > _EPS and (best is None or demand - cap > best[0].short_rps + _EPS):
            best = (Shortfall(model, combo, demand, cap), near)
    return best


def shortfalls(
    rates: Mapping[tuple[str, str], float],
    nodes: Sequence[Node],
    capacity_of: CapacityOf,
    reach: Mapping[str, frozenset[str]],
) -> tuple[Shortfall, ...]:
    """Per model, its worst short set of regions (models that fit are left out).
    `nodes` are the nodes that count as capacity (requested, booting, ready)."""
    by_model: defaultdict[str, dict[str, float]] = defaultdict(dict)
    for (model, region), rps in rates.items():
        by_model[model][region] = rps
    cap: defaultdict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
    for n in nodes:
        if n.model in by_model:
            cap[n.model][_location(n.pool)] += capacity_of(n.model, n.pool)
    out: list[Shortfall] = []
    for model in sorted(by_model):
        worst = _worst(model, by_model[model], cap[model], reach)
        if worst is not None:
            out.append(worst[0])
    return tuple(out)


@dataclass(frozen=True, slots=True)
class FastInputs:
    """Everything `decide_fast` reads: one observation's worth of facts and the plan."""

    now_s: float  # time of the check
    rates: Mapping[tuple[str, str], float]  # observed short-window rate per (model, region)
    nodes: tuple[Node, ...]  # nodes counting as capacity (requested, booting, ready)
    billed: tuple[Node, ...]  # every live node (all billed), for the budget and quotas
    offerings: tuple[Offering, ...]  # prices and availability now (cooled pools unavailable)
    plan: Plan | None  # the plan the fleet follows; its pools are tried first


def decide_fast(
    inputs: FastInputs,
    config: Config,
    catalog: Catalog,
    capacity_of: CapacityOf,
    reach: Mapping[str, frozenset[str]],
    new_node_id: Callable[[], str],
) -> FastDecision:
    """Launches that close every shortfall, cheapest pool first, within the limits."""
    found = shortfalls(inputs.rates, inputs.nodes, capacity_of, reach)
    if not found:
        return FastDecision(inputs.now_s, (), (), ())
    short_nodes = sum(
        max(1, math.ceil(s.short_rps / max(_best_rps(s.model, inputs, capacity_of), _EPS)))
        for s in found
    )
    if config.daemon.dry_run or config.daemon.approval_mode != "auto":
        why = "dry run" if config.daemon.dry_run else f"approval_mode {config.daemon.approval_mode}"
        return FastDecision(
            inputs.now_s,
            found,
            (),
            (
                Held(
                    HoldKind.APPROVAL,
                    short_nodes,
                    f"fast launches held ({why}): {_describe(found)}",
                ),
            ),
        )
    offer = {o.pool: o for o in inputs.offerings if o.available}
    limits = _Limits(config, catalog, inputs.billed, offer)
    launches: list[Launch] = []
    held: list[Held] = []
    yields: list[Yield] = []
    by_model: defaultdict[str, dict[str, float]] = defaultdict(dict)
    for (model, region), rps in inputs.rates.items():
        by_model[model][region] = rps
    # The highest priority first: its launches take the budget first.
    for first in sorted(found, key=lambda s: (-priority_of(config, s.model), s.model)):
        model = first.model
        cap: defaultdict[str, float] = defaultdict(float)
        for n in inputs.nodes:
            if n.model == model:
                cap[_location(n.pool)] += capacity_of(n.model, n.pool)
        pools = _candidates(model, inputs, config, catalog, offer, capacity_of)
        while (worst := _worst(model, by_model[model], cap, reach)) is not None:
            sf, near = worst
            blocked: set[HoldKind] = set()
            choice: Pool | None = None
            best: tuple[float, bool, int] | None = None
            over_budget: tuple[tuple[float, bool, int], Pool] | None = None  # best held by it alone
            for rank, (pool, rps, in_plan) in enumerate(pools):
                if _location(pool) not in near:
                    continue
                # What closing the whole shortfall in this pool costs per hour.
                usd = math.ceil(sf.short_rps / rps - _EPS) * offer[pool].usd_per_hour
                key = (usd, not in_plan, rank)
                broken = limits.breaks(pool)
                if broken:
                    blocked |= broken
                    alone = broken == {HoldKind.BUDGET}
                    if alone and (over_budget is None or key < over_budget[0]):
                        over_budget = (key, pool)
                    continue
                if best is None or key < best:
                    best, choice = key, pool
            if choice is None:
                per_node = max(_best_rps(model, inputs, capacity_of), _EPS)
                nodes = max(1, math.ceil(sf.short_rps / per_node))
                # Beyond its capacity's whole rate (not only the planning headroom) the
                # model is overloaded now: then nodes a lower priority needs may go too.
                util = config.planning.target_utilization
                whole = {loc: c / util for loc, c in cap.items()}
                overloaded = _worst(model, by_model[model], whole, reach) is not None
                waiting = over_budget[1] if over_budget is not None else None
                room = (
                    _make_room(
                        model, waiting, overloaded, limits, inputs, config, capacity_of, reach
                    )
                    if waiting is not None
                    else None
                )
                if waiting is not None and room is not None:  # lower priorities make room
                    yields.extend(room)
                    # The room is the launch's: no lower priority may take it meanwhile.
                    limits.reserve(waiting)
                    held.append(
                        Held(
                            HoldKind.BUDGET,
                            nodes,
                            f"fast launch of {model} waits for lower-priority nodes to leave"
                            f" ({len(room)} yielded now): {_describe((sf,))}",
                        )
                    )
                    break
                held.extend(
                    Held(kind, nodes, f"fast launches held by the {kind.value}: {_describe((sf,))}")
                    for kind in sorted(blocked)
                )
                if not blocked:  # nothing allowed and available in reach: the plan tick's
                    log.info(
                        "fast_no_pool model=%s regions=%s short_rps=%.2f",
                        model,
                        ",".join(sf.regions),
                        sf.short_rps,
                    )
                break
            limits.add(choice)
            cap[_location(choice)] += capacity_of(model, choice)
            launches.append(
                Launch(
                    new_node_id(),
                    model,
                    choice,
                    reason=(
                        f"fast loop: {model} from {','.join(sf.regions)} at"
                        f" {sf.demand_rps:.2f} rps, capacity {sf.capacity_rps:.2f} rps"
                    ),
                )
            )
    return FastDecision(inputs.now_s, found, tuple(launches), tuple(held), tuple(yields))


def _make_room(
    model: str,
    pool: Pool,
    overloaded: bool,
    limits: _Limits,
    inputs: FastInputs,
    config: Config,
    capacity_of: CapacityOf,
    reach: Mapping[str, frozenset[str]],
) -> list[Yield] | None:
    """Lower-priority nodes to give up so that one node of `model` in `pool` fits the
    budget once they are gone (see the module docstring for the order); [] when the nodes
    already leaving free enough, None when all those that may go together would not. Nodes
    their own model's sustained load needs may go only when `model` is `overloaded`."""
    budget = config.planning.budget_usd_per_hour
    if budget is None:
        return None
    over = limits.usd_per_hour + limits.prices.get(pool, 0.0) - budget - limits.leaving
    if over <= _EPS:
        return []
    rank = priority_of(config, model)
    lower = [
        n
        for n in inputs.billed
        if n.state in _ALIVE
        and n.node_id not in limits.gone
        and priority_of(config, n.model) < rank
    ]
    serving = {n.node_id for n in inputs.nodes}
    cap: defaultdict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
    for n in inputs.nodes:
        if n.node_id not in limits.gone:
            cap[n.model][_location(n.pool)] += capacity_of(n.model, n.pool)
    rates: defaultdict[str, dict[str, float]] = defaultdict(dict)
    for (m, region), rps in inputs.rates.items():
        rates[m][region] = rps

    alive = Counter(n.model for n in lower)

    def floor(name: str) -> int:
        """The model's `min_replicas` (0 for a model the config does not name)."""
        try:
            return config.model(name).min_replicas
        except KeyError:
            return 0

    def needed(n: Node) -> bool:
        """Whether the node's model needs it: its sustained load or its `min_replicas`
        (no reading: assume so)."""
        if n.model not in rates or alive[n.model] - 1 < floor(n.model):
            return True
        if n.node_id not in serving:
            return False
        left = defaultdict(float, cap[n.model])
        left[_location(n.pool)] -= capacity_of(n.model, n.pool)
        return _worst(n.model, rates[n.model], left, reach) is not None

    out: list[Yield] = []
    taken: list[Node] = []
    freed = 0.0
    while freed < over - _EPS:
        candidates = [(needed(n), n) for n in lower]
        candidates = [(need, n) for need, n in candidates if overloaded or not need]
        if not candidates:  # not enough may go: nothing goes (limits untouched so far)
            return None
        need, victim = min(
            candidates,
            key=lambda c: (
                priority_of(config, c[1].model),
                c[0],
                -limits.prices.get(c[1].pool, 0.0),
                c[1].state is NodeState.READY,
                c[1].node_id,
            ),
        )
        lower.remove(victim)
        alive[victim.model] -= 1
        if victim.node_id in serving:
            cap[victim.model][_location(victim.pool)] -= capacity_of(victim.model, victim.pool)
        why = (
            f"fast loop: yields to {model} (priority {rank}), whose launch the budget holds;"
            f" {victim.model} is priority {priority_of(config, victim.model)}"
        )
        action: Drain | Terminate = (
            Drain(victim.node_id, reason=why)
            if victim.state is NodeState.READY
            else Terminate(victim.node_id, reason=why)
        )
        out.append(Yield(action, victim.model, model, need))
        freed += limits.prices.get(victim.pool, 0.0)
        taken.append(victim)
    for n in taken:
        limits.leave(n)
    return out


def _describe(found: Sequence[Shortfall]) -> str:
    return "; ".join(
        f"{s.model} from {','.join(s.regions)} {s.demand_rps:.2f} rps against"
        f" {s.capacity_rps:.2f} rps"
        for s in found
    )


def _best_rps(model: str, inputs: FastInputs, capacity_of: CapacityOf) -> float:
    """Planned rps of one node of `model` in the plan's pools (for counting held nodes)."""
    rates = [
        capacity_of(pl.model, pl.pool)
        for pl in (inputs.plan.placements if inputs.plan else ())
        if pl.model == model
    ]
    return max(rates, default=1.0)


def _candidates(
    model: str,
    inputs: FastInputs,
    config: Config,
    catalog: Catalog,
    offer: Mapping[Pool, Offering],
    capacity_of: CapacityOf,
) -> list[tuple[Pool, float, bool]]:
    """Pools to launch `model` into, with the planned rps of one node there and whether
    the plan uses the pool for the model: the plan's own available pools and every other
    pool the config allows, cheapest per planned rps first (the plan's pools first on a
    tie)."""

    def ranked(pools: set[Pool], preferred: set[Pool]) -> list[tuple[Pool, float, bool]]:
        scored: list[tuple[float, bool, Pool, float]] = []
        for pool in pools:
            try:
                rps = capacity_of(model, pool)
            except KeyError:  # a pool of an instance type the catalog does not know
                continue
            if rps > 0:
                scored.append((offer[pool].usd_per_hour / rps, pool not in preferred, pool, rps))
        return [(pool, rps, not other) for _, other, pool, rps in sorted(scored)]

    planned = {
        pl.pool
        for pl in (inputs.plan.placements if inputs.plan else ())
        if pl.model == model and pl.pool in offer
    }
    rest = {
        pool
        for pool, o in offer.items()
        if pool not in planned
        and (pool.cloud, pool.instance_type) in catalog.instance_types
        and allowed(config, o, catalog.instance_type(pool))
    }
    return ranked(planned | rest, planned)


class _Limits:
    """The budget, quota and pool-size limits, as nodes are added one at a time."""

    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        billed: Sequence[Node],
        offer: Mapping[Pool, Offering],
    ) -> None:
        self.config = config
        prices = {o.pool: o.usd_per_hour for o in catalog.offerings}
        prices.update({p: o.usd_per_hour for p, o in offer.items()})
        self.prices = prices
        self.usd_per_hour = sum(prices.get(n.pool, 0.0) for n in billed)
        self.in_pool: Counter[Pool] = Counter(n.pool for n in billed if n.state in _ALIVE)
        self.quotas = QuotaUse(config.quotas, catalog.instance_types, (n.pool for n in billed))
        # What the nodes already on their way out will free once gone, and the nodes given
        # up by this decision.
        self.leaving = math.fsum(prices.get(n.pool, 0.0) for n in billed if n.state in _LEAVING)
        self.gone: set[str] = set()

    def breaks(self, pool: Pool) -> set[HoldKind]:
        """The limits one more node in `pool` would break."""
        out: set[HoldKind] = set()
        budget = self.config.planning.budget_usd_per_hour
        if budget is not None and self.usd_per_hour + self.prices.get(pool, 0.0) > budget + _EPS:
            out.add(HoldKind.BUDGET)
        if self.quotas.broken_by(pool):
            out.add(HoldKind.QUOTA)
        if self.in_pool[pool] >= MAX_NODES_PER_POOL:
            out.add(HoldKind.POOL_LIMIT)
        return out

    def add(self, pool: Pool) -> None:
        """Count one more node in `pool`."""
        self.usd_per_hour += self.prices.get(pool, 0.0)
        self.in_pool[pool] += 1
        self.quotas.add(pool)

    def reserve(self, pool: Pool) -> None:
        """Count a node in `pool` that waits for room against the budget (not launched)."""
        self.usd_per_hour += self.prices.get(pool, 0.0)

    def leave(self, node: Node) -> None:
        """Count `node` as on its way out: it bills until gone, then frees its price."""
        self.leaving += self.prices.get(node.pool, 0.0)
        self.gone.add(node.node_id)


class FastLoop:
    """Runs the fast check against a reconciler's edges (its metrics source, store,
    provider and actuator); one per reconciler."""

    def __init__(self, reconciler: Reconciler, *, launches: bool = True) -> None:
        self.reconciler = reconciler
        # False: the check only finishes drains (the simulator's baselines: the reconciler's
        # drain handling is the same for every policy, the launches are capsched's own).
        self.launches = launches
        self._reach: tuple[Config, dict[str, frozenset[str]]] | None = None  # per config
        self.sustained = SustainedRates(reconciler.config.scheduler.fast_sustain_s)
        # Request sizes must last as the rate must: per series the lightest reading of
        # prompt and of output tokens over the same window.
        window = reconciler.config.scheduler.fast_sustain_s
        self.sustained_sizes = (SustainedRates(window), SustainedRates(window))
        self.launches_by_model: Counter[str] = Counter()  # fast launches accepted, by model

    def _no_reading(self, now_s: float) -> None:
        for tracker in (self.sustained, *self.sustained_sizes):
            tracker.update(now_s, {})

    def reach(self) -> dict[str, frozenset[str]]:
        """Locations in reach of each source region under the running config."""
        config = self.reconciler.config
        if self._reach is None or self._reach[0] is not config:
            self._reach = (config, region_reach(config, self.reconciler.catalog))
        return self._reach[1]

    async def check(self, now_s: float) -> FastReport:
        """One fast check: terminate the nodes whose drain has finished; read the load; when
        a model is short of capacity, look at the cloud and launch (or make room under the
        budget). Cheap when nothing is short and nothing drains (no cloud call)."""
        rec = self.reconciler
        live = rec.store.live_nodes()
        drained = await self._finish_drains(now_s, live)
        if drained:
            live = rec.store.live_nodes()
        empty = FastReport(FastDecision(now_s, (), (), ()), (), (), drained=drained)
        if not self.launches:
            released = await self._release(now_s, ())
            return dataclasses.replace(empty, released=released)
        try:
            sample: object = await rec.metrics.demand(now_s)
        except Exception as exc:  # a broken load signal: no information, no action
            log.warning("fast_check_no_load now_s=%.0f error=%s", now_s, exc)
            self._no_reading(now_s)  # a check without readings breaks every run
            return empty
        if not isinstance(sample, DemandSample):
            self._no_reading(now_s)
            return empty
        window = rec.config.scheduler.fast_sustain_s  # a reload may change it
        for tracker in (self.sustained, *self.sustained_sizes):
            tracker.window_s = window
        batch = {m.name for m in rec.config.models if m.deferrable_deadline_s is not None}
        interactive = {
            key: rate
            for key, rate in observed_rates(sample, rec.config.scheduler.fast_interval_s).items()
            if key[0] not in batch  # deferrable demand waits for the plan: no fast launch
        }
        rates = self.sustained.update(now_s, interactive)
        clean = sample.cleaned()
        inp, out = (
            tracker.update(now_s, {k: v for k, v in readings.items() if math.isfinite(v)})
            for tracker, readings in zip(
                self.sustained_sizes, (clean.input_tokens, clean.output_tokens), strict=True
            )
        )
        noticed = set(rec.notices)
        known = tuple(n for n in live if n.state in _ALIVE and n.node_id not in noticed)
        # Nodes count at the sustained mean request size of their model (the reference
        # request where the source gives no sizes), as the planner counts them.
        sizes = sample_sizes(DemandSample(now_s, rates, input_tokens=inp, output_tokens=out))

        def capacity_of(model: str, pool: Pool) -> float:
            return rec.capacity_of(model, pool, sizes.get(model))

        found = shortfalls(rates, known, capacity_of, self.reach())
        # A model short now keeps the nodes its plan gives up until the next tick.
        released = await self._release(now_s, {sf.model for sf in found})
        empty = dataclasses.replace(empty, released=released)
        if not found:
            return empty
        # Short on what the store knows: look at the cloud before acting on it.
        try:
            obs, _ = await rec.observe(now_s)
        except ProviderError as exc:  # without the listing, a launch could double one
            log.warning("fast_check_skipped now_s=%.0f reason=listing_failed error=%s", now_s, exc)
            return empty
        decision = decide_fast(
            FastInputs(
                now_s=now_s,
                rates=rates,
                nodes=obs.serving(),
                billed=obs.nodes,
                offerings=obs.offerings,
                plan=rec.approval.approved,
            ),
            rec.config,
            rec.catalog,
            capacity_of,
            self.reach(),
            rec.store.next_node_id,
        )
        for sf in decision.shortfalls:
            event(
                log,
                logging.INFO,
                "fast_short",
                now_s=round(now_s),
                model=sf.model,
                regions=",".join(sf.regions),
                demand_rps=sf.demand_rps,
                capacity_rps=sf.capacity_rps,
            )
        held_events(log, "fast_held", now_s, decision.held)
        for y in decision.yields:
            event(
                log,
                logging.INFO,
                "fast_yield",
                now_s=round(now_s),
                node_id=y.action.node_id,
                model=y.model,
                to_model=y.to_model,
                needed=y.needed,
                action=type(y.action).__name__.lower(),
            )
        todo: list[Action] = [*(y.action for y in decision.yields), *decision.launches]
        if not todo:
            return FastReport(decision, (), (), drained=drained, released=released)
        result = await rec.actuator.execute(todo, now_s)
        for pool in result.exhausted_pools:
            rec.cool(pool, now_s)
        failed = tuple((a, msg) for a, msg in result.failed if isinstance(a, Launch))
        done = tuple(a for a in result.done if isinstance(a, Launch))
        yielded = tuple(a for a in result.done if isinstance(a, Drain | Terminate))
        for a in done:
            self.launches_by_model[a.model] += 1
            event(
                log,
                logging.INFO,
                "fast_launch",
                now_s=round(now_s),
                node_id=a.node_id,
                model=a.model,
                pool=a.pool.key,
                reason=a.reason,
            )
        return FastReport(decision, done, failed, yielded, drained, released)

    async def _release(self, now_s: float, exclude: Collection[str]) -> tuple[Drain, ...]:
        """Drain the nodes the tick's make before break held that their replacements now
        cover (`Reconciler.release_waiting`). The cloud is listed only when a replacement
        should serve by its boot estimate and the store does not know yet; no call at
        all when nothing waits."""
        rec = self.reconciler
        if rec.waiting_due(now_s):
            try:  # the replacements should serve by now: learn whether they do
                await rec.refresh_nodes(now_s)
            except ProviderError as exc:
                log.warning("fast_release_skipped now_s=%.0f error=%s", now_s, exc)
                return ()
        todo = rec.release_waiting(exclude)
        if not todo:
            return ()
        result = await rec.actuator.execute(list(todo), now_s)
        done = tuple(a for a in result.done if isinstance(a, Drain))
        for a in done:
            event(log, logging.INFO, "fast_release", now_s=round(now_s), node_id=a.node_id)
        return done

    async def _finish_drains(self, now_s: float, live: Sequence[Node]) -> tuple[Terminate, ...]:
        """Terminate the draining nodes whose drain is over (`live`: the store's live nodes;
        no call at all when none drains)."""
        rec = self.reconciler
        if not any(n.state is NodeState.DRAINING for n in live):
            return ()
        todo = await rec.finish_drains(now_s)
        if not todo:
            return ()
        result = await rec.actuator.execute(todo, now_s)
        return tuple(a for a in result.done if isinstance(a, Terminate))
