"""Guards between a plan and the actions taken on it.

Each rule can only hold an action back, never add one, and says why in a line that
goes to the log, the tick report and the stored plan:

* no scale-down on a tick whose load signal is missing, NaN or negative;
* a node must have been ready `min_node_age_s` before a plan change may drain it
  (savings that churn nodes cost more than they save: karpenter #1019, #1293);
* make before break: a model's ready capacity never drops below what the plan wants
  ready, so a move waits until the replacements serve (the held nodes are
  `Guarded.waiting`: the fast check drains each once they do, not a tick later);
* at most `max_scale_down_fraction` of a model's nodes go per tick;
* launches stop where the fleet would bill more than the budget or hold more
  accelerators than a `[[quotas]]` cap allows: every live node (a draining one bills and
  holds its accelerators until it is gone) plus the launches let through stay within
  both, higher `[[models]] priority` first, then the model furthest from its planned
  capacity, cheapest per rps first (`within_limits`). A plan over a limit (a
  baseline's, which knows no budget or quota) launches what fits, never nothing, and
  each launch held is typed by the limit it would break; a move under a binding limit
  drains first and launches when the old nodes are gone (make before break would bill
  both: measured 72% over the budget, docs/solver.md).

A held-back item is a typed `Held` record (its `HoldKind`, how many nodes, and a line
for people); telemetry, the daemon, the simulator and the TUI read the kind, never the
text. A plan the budget or a quota cut short (`Plan.limited_by`, from the planner) is
reported here too, as a hold of the launches the demand asked for.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from scheduler.config import Config
from scheduler.decide.diff import Proposal
from scheduler.decide.observation import Observation
from scheduler.domain import (
    LAUNCH_LIMITS,
    Cloud,
    HoldKind,
    InstanceType,
    Market,
    Node,
    NodeState,
    Plan,
    Pool,
    prices_of,
)
from scheduler.domain.actions import Action, Drain, Launch, Terminate
from scheduler.fleet.quotas import QuotaUse, describe

log = logging.getLogger(__name__)

# Prices are sums of a few dozen floats: a plan at the budget is within it.
_USD_TOL = 1e-6
CapacityOf = Callable[[str, Pool], float]  # rps one node of a model serves in a pool
PriceOf = Callable[[Pool], float]  # USD per hour of one node in a pool


@dataclass(frozen=True, slots=True)
class Held:
    """One held-back action or group of actions, and why."""

    kind: HoldKind  # the guard or limit that held it
    nodes: int  # actions held (0 when a limit cut the plan itself, or for a whole tick)
    text: str  # the reason in words, for logs and people; never parsed

    def __str__(self) -> str:
        return self.text

    def to_json(self) -> dict[str, Any]:
        """The API's and the state store's shape: {"kind", "nodes", "text"}."""
        return {"kind": self.kind.value, "nodes": self.nodes, "text": self.text}


def launch_limits(held: Iterable[Held]) -> frozenset[HoldKind]:
    """The budget/quota kinds among `held`: what kept demanded capacity from launching."""
    return frozenset(h.kind for h in held if h.kind in LAUNCH_LIMITS)


@dataclass(frozen=True, slots=True)
class WaitingDrains:
    """Ready nodes a plan gives up that make before break held: their model's other ready
    nodes did not yet cover what the plan wants ready. The plan's replacements become
    ready between ticks; `release` drains each waiting node as soon as they cover it, so
    the node does not bill until the next tick (the fast check calls it every
    `scheduler.fast_interval_s`). Only the tick's own holds wait here, and the tick's
    scale-down limit still counts: a release is the tick's drain, made later."""

    node_ids: tuple[str, ...] = ()  # in the order the guard considered them
    wanted: Mapping[str, float] = field(default_factory=dict)  # per model: ready rps kept
    scale_down_left: Mapping[str, int] = field(default_factory=dict)  # drains the limit allows

    def release(
        self, serving: Iterable[Node], capacity_of: CapacityOf, exclude: Collection[str] = ()
    ) -> tuple[tuple[Drain, ...], WaitingDrains]:
        """The drains the ready capacity now allows, and what still waits. `serving`: the
        nodes that count as capacity (not under a notice, not draining; only the ready ones
        count); a waiting node that is no longer among the ready ones (gone, noticed,
        drained) stops waiting. The nodes of the models in `exclude` keep waiting."""
        ready_nodes = {n.node_id: n for n in serving if n.state is NodeState.READY}
        ready: defaultdict[str, float] = defaultdict(float)
        for n in ready_nodes.values():
            ready[n.model] += capacity_of(n.model, n.pool)
        left = dict(self.scale_down_left)
        drains: list[Drain] = []
        still: list[str] = []
        for node_id in self.node_ids:
            node = ready_nodes.get(node_id)
            if node is None:
                continue
            if node.model in exclude:
                still.append(node_id)
                continue
            cap = capacity_of(node.model, node.pool)
            covered = ready[node.model] - cap >= self.wanted.get(node.model, 0.0) - 1e-9
            if covered and left.get(node.model, 0) > 0:
                left[node.model] -= 1
                ready[node.model] -= cap
                why = "plan no longer needs it; its replacements serve"
                drains.append(Drain(node_id, reason=why))
            else:
                still.append(node_id)
        return tuple(drains), WaitingDrains(tuple(still), self.wanted, left)


@dataclass(frozen=True, slots=True)
class Guarded:
    """Actions allowed this tick and what was held back."""

    actions: tuple[Action, ...]  # to execute, launches first
    held_back: tuple[Held, ...]  # one per held-back action or group
    # Drains make before break held, for the fast check to release (`WaitingDrains`).
    waiting: WaitingDrains = field(default_factory=WaitingDrains)


def apply_guards(
    obs: Observation,
    plan: Plan,
    proposal: Proposal,
    config: Config,
    capacity_of: CapacityOf,
    new_node_id: Callable[[], str],
    price_of: PriceOf | None = None,
    instance_types: Mapping[tuple[Cloud, str], InstanceType] | None = None,
) -> Guarded:
    """The actions of `proposal` that every guard allows. `price_of` gives the USD/h of a
    node in a pool the observation's offerings do not price (default: the plan's mean
    price per node); `instance_types` (the catalog's) counts nodes against the
    `[[quotas]]` caps, and is required when the config has any."""
    g = config.guards
    held: list[Held] = [_limited(plan, kind, config) for kind in plan.limited_by]
    actions: list[Action] = []

    admission = within_limits(obs, plan, proposal, config, capacity_of, price_of, instance_types)
    for model, pool in admission.admitted:
        actions.append(Launch(new_node_id(), model, pool, reason=f"plan wants more in {pool.key}"))
    held.extend(_launch_holds(plan, proposal, config, admission))
    # Launches `diff.propose` left out: the plan wants more than a pool may hold.
    held.extend(
        Held(
            HoldKind.POOL_LIMIT,
            n,
            f"{n} launches held: {model} in {pool.key} would pass the most nodes a pool holds",
        )
        for model, pool, n in proposal.over_limit
    )

    if proposal.removals and not obs.demand_complete:
        n = len(proposal.removals)
        held.append(
            Held(
                HoldKind.LOAD_SIGNAL,
                n,
                f"scale-down held: load signal missing or not finite ({n} nodes)",
            )
        )
        return Guarded(tuple(actions), tuple(held))

    wanted = _ready_wanted(
        obs,
        plan,
        config,
        capacity_of,
        tuple((h.model, h.pool) for h in admission.held),
        proposal.removals,
    )
    ready: defaultdict[str, float] = defaultdict(float)
    count: Counter[str] = Counter()
    for node in obs.serving():
        count[node.model] += 1
        if node.state is NodeState.READY:
            ready[node.model] += capacity_of(node.model, node.pool)
    budget_left = {m: max(1, math.floor(g.max_scale_down_fraction * n)) for m, n in count.items()}

    by_reason: dict[tuple[HoldKind, str], int] = defaultdict(int)
    waiting: list[str] = []
    for node in proposal.removals:
        if node.state is not NodeState.READY:
            # Requested or booting: serves nothing yet, cancelling loses nothing.
            actions.append(
                Terminate(node.node_id, reason="plan no longer needs it (not serving yet)")
            )
            continue
        reason = _hold_ready_removal(
            node, obs.now_s, g.min_node_age_s, budget_left, ready, wanted, capacity_of
        )
        if reason:
            by_reason[reason] += 1
            if reason[0] is HoldKind.MAKE_BEFORE_BREAK:
                waiting.append(node.node_id)
            continue
        budget_left[node.model] -= 1
        ready[node.model] -= capacity_of(node.model, node.pool)
        actions.append(Drain(node.node_id, reason="plan no longer needs it"))
    held.extend(
        Held(kind, n, f"{n} drains held: {reason}")
        for (kind, reason), n in sorted(by_reason.items())
    )
    later = WaitingDrains(tuple(waiting), dict(wanted), budget_left) if waiting else WaitingDrains()
    return Guarded(tuple(actions), tuple(held), later)


def _ready_wanted(
    obs: Observation,
    plan: Plan,
    config: Config,
    capacity_of: CapacityOf,
    limit_held: tuple[tuple[str, Pool], ...],
    removals: Iterable[Node] = (),
) -> defaultdict[str, float]:
    """Ready capacity each model keeps before a node of it may drain (make before break).

    What the plan wants ready, less the launches the budget or a quota holds (they will
    not come: waiting for them would keep the nodes the plan gives up, over the limit,
    forever); but for the highest priority whose launches a limit holds, and above, never less
    than what the model's demand asks for (the plan's rates, or the rates seen now for a
    plan that does not say). A move under a binding budget drained first and launched
    after, leaving the model short for a boot: on two busy Azure functions at half the
    cost of full service, the priority-10 model lost half its capacity for 12 minutes
    so the lower one could get a dearer node (docs/solver.md, "Budgets and
    priorities"). Lower priorities still drain first: that frees the budget the higher
    ones' launches wait for (preemption through the usual drain path).

    A model of those priorities that is short already (its ready nodes serve less than
    the demand seen now: `Observation.short_models`) may drain the nodes the plan gives up
    when its held on-demand launches add more of it than they take: the floor would keep
    it short for good on a fleet that costs more than the one it needs, since the launches
    wait for the budget the drains free (a storm's on-demand fallback under a budget:
    docs/solver.md, "Preemption storms under a budget"). For a boot it has the removed
    capacity less. Not for spot launches: a spot pool may refuse (a storm's do) and the
    drained capacity would not come back."""
    wanted: defaultdict[str, float] = defaultdict(float)
    for pl in plan.placements:
        wanted[pl.model] += pl.count * capacity_of(pl.model, pl.pool)
    if not limit_held:
        return wanted
    short: defaultdict[str, float] = defaultdict(float)
    for model, pool in limit_held:
        short[model] += capacity_of(model, pool)
    first = max(priority_of(config, m) for m in short)
    need: defaultdict[str, float] = defaultdict(float)
    if plan.demand:
        for d in plan.demand:
            need[d.model] += d.rps
    else:
        for (model, _), rps in obs.demand.rps.items():
            need[model] += rps if math.isfinite(rps) else 0.0
    util = config.planning.target_utilization
    short_now = obs.short_models(lambda m, p: capacity_of(m, p) / util)
    given_up: defaultdict[str, float] = defaultdict(float)
    for node in removals:
        if node.state is NodeState.READY:
            given_up[node.model] += capacity_of(node.model, node.pool)
    on_demand: defaultdict[str, float] = defaultdict(float)
    for model, pool in limit_held:
        if pool.market is not Market.SPOT:
            on_demand[model] += capacity_of(model, pool)
    for model, rps in short.items():
        floor = need[model] if priority_of(config, model) >= first else 0.0
        if floor > 0 and model in short_now and on_demand[model] > given_up[model] + 1e-9:
            floor = 0.0  # short either way: the swap pays for more than it takes
        wanted[model] = min(wanted[model], max(wanted[model] - rps, floor))
    return wanted


@dataclass(frozen=True, slots=True)
class HeldLaunch:
    """A launch of the proposal that a hard limit holds back this tick."""

    model: str  # model it would serve
    pool: Pool  # pool it would go to
    limit: HoldKind  # QUOTA when it would pass a [[quotas]] cap, else BUDGET
    quotas: tuple[int, ...]  # indices of the [[quotas]] caps it would pass (may be empty)


@dataclass(frozen=True, slots=True)
class Admission:
    """The launches of a proposal that fit the budget and every quota, and those held."""

    admitted: tuple[tuple[str, Pool], ...]  # (model, pool) to launch, in the proposal's order
    held: tuple[HeldLaunch, ...]  # the rest, in the proposal's order


def within_limits(
    obs: Observation,
    plan: Plan,
    proposal: Proposal,
    config: Config,
    capacity_of: CapacityOf,
    price_of: PriceOf | None = None,
    instance_types: Mapping[tuple[Cloud, str], InstanceType] | None = None,
) -> Admission:
    """The launches of `proposal` that fit `planning.budget_usd_per_hour` and every
    `[[quotas]]` cap, and those held.

    The fleet that bills and holds accelerators is counted (every live node but those
    not serving yet that the plan drops: they are cancelled this tick), and launches are
    let through one at a time while that fleet plus theirs stays within the budget and
    every cap: the model of highest priority first, within a priority the one whose
    kept and admitted capacity is the smallest share of what the plan wants for it (so
    no model is starved), and within a model the launch cheapest per planned rps (then
    the pool key). A launch that does not fit is held and the next one is tried: a
    cheaper node, or one in a pool the full cap does not cover, may still fit. So a plan
    that knows no budget or quota (a baseline's) launches what fits, never nothing.
    `instance_types` (the catalog's) says which caps count a pool and how many
    accelerators its node holds; it is required when the config has quotas.
    Deterministic."""
    launches = proposal.launches
    budget = config.planning.budget_usd_per_hour
    if (budget is None and not config.quotas) or not launches:
        return Admission(launches, ())
    if config.quotas and instance_types is None:
        raise ValueError("within_limits: the config has [[quotas]]; pass instance_types")
    prices = prices_of(obs.offerings)

    planned = sum(pl.count for pl in plan.placements)
    mean = plan.usd_per_hour / planned if planned else 0.0

    def price(pool: Pool) -> float:
        if pool in prices:
            return prices[pool]
        return price_of(pool) if price_of is not None else mean

    removed = {n.node_id for n in proposal.removals}
    # Every live node bills and holds its accelerators until it is gone, draining ones
    # too; only a node not serving yet that the plan drops is cancelled this tick.
    staying = [n for n in obs.nodes if n.node_id not in removed or n.state is NodeState.READY]
    spend = sum(price(n.pool) for n in staying)
    quotas = QuotaUse(config.quotas, instance_types or {}, (n.pool for n in staying))
    have: defaultdict[str, float] = defaultdict(float)  # capacity kept and admitted
    for node in obs.serving():
        if node.node_id not in removed:
            have[node.model] += capacity_of(node.model, node.pool)
    want = defaultdict(float, have)
    queue: defaultdict[str, list[tuple[float, str, int]]] = defaultdict(list)
    for i, (model, pool) in enumerate(launches):
        rps = capacity_of(model, pool)
        want[model] += rps
        queue[model].append((price(pool) / rps if rps > 0 else math.inf, pool.key, i))
    for q in queue.values():
        q.sort(reverse=True)  # cheapest per rps last: popped first

    def rank(model: str) -> tuple[int, float, str]:
        share = have[model] / want[model] if want[model] > 0 else 1.0
        return (-priority_of(config, model), share, model)

    admitted: set[int] = set()
    held: dict[int, HeldLaunch] = {}
    while queue:
        model = min(queue, key=rank)
        q = queue[model]
        while q:
            i = q.pop()[2]
            pool = launches[i][1]
            over_budget = budget is not None and spend + price(pool) > budget + _USD_TOL
            over_quota = quotas.broken_by(pool)
            if not over_budget and not over_quota:
                spend += price(pool)
                quotas.add(pool)
                have[model] += capacity_of(model, pool)
                admitted.add(i)
                break
            # The fleet only grows this tick: a launch that does not fit now never will.
            limit = HoldKind.QUOTA if over_quota else HoldKind.BUDGET
            held[i] = HeldLaunch(model, pool, limit, over_quota)
        if not q:
            del queue[model]
    return Admission(
        tuple(lc for i, lc in enumerate(launches) if i in admitted),
        tuple(held[i] for i in sorted(held)),
    )


def priority_of(config: Config, model: str) -> int:
    """The model's `[[models]] priority` (0 for a model the config does not name)."""
    try:
        return config.model(model).priority
    except KeyError:
        return 0


def _launch_holds(
    plan: Plan, proposal: Proposal, config: Config, admission: Admission
) -> list[Held]:
    """One hold per limit that kept launches of the proposal back, quota first."""
    out: list[Held] = []
    total, went = len(proposal.launches), len(admission.admitted)
    fit = f"the {went} that fit go, higher priority and cheaper per rps first"
    by_quota = [h for h in admission.held if h.limit is HoldKind.QUOTA]
    if by_quota:
        caps = sorted({i for h in by_quota for i in h.quotas})
        names = ", ".join(describe(i, config.quotas[i]) for i in caps)
        out.append(
            Held(
                HoldKind.QUOTA,
                len(by_quota),
                f"{len(by_quota)} of {total} launches held: they would pass {names}; {fit}",
            )
        )
    by_budget = len(admission.held) - len(by_quota)
    if by_budget:
        budget = config.planning.budget_usd_per_hour or 0.0
        out.append(
            Held(
                HoldKind.BUDGET,
                by_budget,
                f"{by_budget} of {total} launches held: the plan costs"
                f" {plan.usd_per_hour:.2f} USD/h, over the budget {budget:.2f} USD/h; {fit}",
            )
        )
    return out


def _limited(plan: Plan, kind: HoldKind, config: Config) -> Held:
    """The hold of a plan that `kind` (budget or quota) cut short."""
    unmet = sum(u.rps for u in plan.unmet)
    if kind is HoldKind.BUDGET:
        limit = f"the budget {config.planning.budget_usd_per_hour or 0.0:.2f} USD/h"
    else:
        limit = "a [[quotas]] cap"
    return Held(
        kind,
        0,
        f"launches held: plan leaves {unmet:.2f} rps unmet, one more node would break {limit}"
        f" (plan costs {plan.usd_per_hour:.2f} USD/h)",
    )


def _hold_ready_removal(
    node: Node,
    now_s: float,
    min_age_s: float,
    budget_left: dict[str, int],
    ready: dict[str, float],
    wanted: dict[str, float],
    capacity_of: CapacityOf,
) -> tuple[HoldKind, str] | None:
    since = node.state_since_s if node.state_since_s is not None else -math.inf
    if now_s - since < min_age_s:
        return HoldKind.MIN_NODE_AGE, f"ready for less than {min_age_s:.0f} s"
    if budget_left.get(node.model, 0) <= 0:
        return HoldKind.SCALE_DOWN_LIMIT, "scale-down limit per tick reached"
    if (
        ready.get(node.model, 0.0) - capacity_of(node.model, node.pool)
        < wanted.get(node.model, 0.0) - 1e-9
    ):
        return HoldKind.MAKE_BEFORE_BREAK, "replacements not ready yet (make before break)"
    return None


class LaunchLimitWatch:
    """Says when the budget or a quota starts or stops holding launches back: one
    WARNING per change of the set of limits, not one per tick (a binding budget holds
    every tick until the load falls or the config changes)."""

    def __init__(self) -> None:
        self.active: frozenset[HoldKind] = frozenset()  # limits holding launches at last tick

    def update(self, held: Iterable[Held], now_s: float) -> bool:
        """Take one tick's held-back items; log and return True when the limits changed."""
        held = tuple(held)
        limits = launch_limits(held)
        if limits == self.active:
            return False
        if limits:
            log.warning(
                "launches_held limits=%s now_s=%.0f reason=%r",
                ",".join(sorted(k.value for k in limits)),
                now_s,
                next(h.text for h in held if h.kind in limits),
            )
        else:
            log.info(
                "launches_no_longer_held was=%s now_s=%.0f",
                ",".join(sorted(k.value for k in self.active)),
                now_s,
            )
        self.active = limits
        return True
