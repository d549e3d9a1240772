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

A held-back item is a typed `Held` record (its `HoldKind`, how many nodes, and a line
for people); telemetry, the daemon, the simulator and the TUI read the kind, never the
text. A plan the budget or a quota cut short (`Plan.limited_by`, from the planner) is
reported here too, as a hold of the launches the demand asked for.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from scheduler.actions import Action, Drain, Launch, Terminate
from scheduler.config import Config
from scheduler.diff import Proposal
from scheduler.domain import LAUNCH_LIMITS, HoldKind, Node, NodeState, Plan, Pool
from scheduler.observation import Observation

log = logging.getLogger(__name__)

CapacityOf = Callable[[str, Pool], float]  # rps one node of a model serves in a pool


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
class Guarded:
    """Actions allowed this tick and what was held back."""

    actions: tuple[Action, ...]  # to execute, launches first
    held_back: tuple[Held, ...]  # one per held-back action or group


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
    held: list[Held] = [_limited(plan, kind, config) for kind in plan.limited_by]
    actions: list[Action] = []

    budget = config.planning.budget_usd_per_hour
    if proposal.launches and budget is not None and plan.usd_per_hour > budget + 1e-9:
        n = len(proposal.launches)
        held.append(
            Held(
                HoldKind.BUDGET,
                n,
                f"launches held: plan costs {plan.usd_per_hour:.2f} USD/h over the budget"
                f" {budget:.2f} USD/h ({n} nodes)",
            )
        )
    else:
        for model, pool in proposal.launches:
            actions.append(
                Launch(new_node_id(), model, pool, reason=f"plan wants more in {pool.key}")
            )
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

    by_reason: dict[tuple[HoldKind, str], int] = defaultdict(int)
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
    held.extend(
        Held(kind, n, f"{n} drains held: {reason}")
        for (kind, reason), n in sorted(by_reason.items())
    )
    return Guarded(tuple(actions), tuple(held))


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
