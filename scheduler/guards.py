"""Guards between a plan and the actions taken on it.

Each rule can only hold an action back, never add one, and says why in a line that
goes to the log, the tick report and the stored plan:

* no scale-down on a tick whose load signal is missing, NaN or negative;
* a node must have been ready `min_node_age_s` before a plan change may drain it
  (savings that churn nodes cost more than they save: karpenter #1019, #1293);
* make before break: a model's ready capacity never drops below what the plan wants
  ready, so a move waits until the replacements serve;
* at most `max_scale_down_fraction` of a model's nodes go per tick;
* launches stop when the plan's price is above the budget.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from scheduler.actions import Action, Drain, Launch, Terminate
from scheduler.config import Config
from scheduler.diff import Proposal
from scheduler.domain import Node, NodeState, Plan, Pool
from scheduler.observation import Observation

CapacityOf = Callable[[str, Pool], float]  # rps one node of a model serves in a pool


@dataclass(frozen=True, slots=True)
class Guarded:
    """Actions allowed this tick and what was held back."""

    actions: tuple[Action, ...]  # to execute, launches first
    held_back: tuple[str, ...]  # one line per held-back action or group


def apply_guards(
    obs: Observation,
    plan: Plan,
    proposal: Proposal,
    config: Config,
    capacity_of: CapacityOf,
    new_node_id: Callable[[], str],
) -> Guarded:
    """The actions of `proposal` that every guard allows."""
    g = config.guards
    held: list[str] = []
    actions: list[Action] = []

    budget = config.planning.budget_usd_per_hour
    if proposal.launches and budget is not None and plan.usd_per_hour > budget + 1e-9:
        held.append(
            f"launches held: plan costs {plan.usd_per_hour:.2f} USD/h over the budget"
            f" {budget:.2f} USD/h ({len(proposal.launches)} nodes)"
        )
    else:
        for model, pool in proposal.launches:
            actions.append(
                Launch(new_node_id(), model, pool, reason=f"plan wants more in {pool.key}")
            )
    # Launches `diff.propose` left out: the plan wants more than a pool may hold.
    held.extend(
        f"{n} launches held: {model} in {pool.key} would pass the most nodes a pool holds"
        for model, pool, n in proposal.over_limit
    )

    if proposal.removals and not obs.demand_complete:
        held.append(
            f"scale-down held: load signal missing or not finite ({len(proposal.removals)} nodes)"
        )
        return Guarded(tuple(actions), tuple(held))

    # Ready capacity the plan wants per model (make before break), and what is ready now.
    wanted: defaultdict[str, float] = defaultdict(float)
    for pl in plan.placements:
        wanted[pl.model] += pl.count * capacity_of(pl.model, pl.pool)
    ready: defaultdict[str, float] = defaultdict(float)
    count: Counter[str] = Counter()
    for node in obs.serving():
        count[node.model] += 1
        if node.state is NodeState.READY:
            ready[node.model] += capacity_of(node.model, node.pool)
    budget_left = {m: max(1, math.floor(g.max_scale_down_fraction * n)) for m, n in count.items()}

    by_reason: dict[str, int] = defaultdict(int)
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
            continue
        budget_left[node.model] -= 1
        ready[node.model] -= capacity_of(node.model, node.pool)
        actions.append(Drain(node.node_id, reason="plan no longer needs it"))
    held.extend(f"{n} drains held: {reason}" for reason, n in sorted(by_reason.items()))
    return Guarded(tuple(actions), tuple(held))


def _hold_ready_removal(
    node: Node,
    now_s: float,
    min_age_s: float,
    budget_left: dict[str, int],
    ready: dict[str, float],
    wanted: dict[str, float],
    capacity_of: CapacityOf,
) -> str | None:
    since = node.state_since_s if node.state_since_s is not None else -math.inf
    if now_s - since < min_age_s:
        return f"ready for less than {min_age_s:.0f} s"
    if budget_left.get(node.model, 0) <= 0:
        return "scale-down limit per tick reached"
    if (
        ready.get(node.model, 0.0) - capacity_of(node.model, node.pool)
        < wanted.get(node.model, 0.0) - 1e-9
    ):
        return "replacements not ready yet (make before break)"
    return None
