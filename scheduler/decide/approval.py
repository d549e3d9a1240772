"""Which plan the fleet follows under `daemon.approval_mode` (explicit reconciler state).

In "auto" mode every plan acts. In "manual" mode every plan, and in "threshold" mode a
plan that changes the price by more than `approval_cost_delta_usd_per_hour` or drains
more than `approval_max_drains` ready nodes, waits for a person; meanwhile the fleet
follows the last approved plan. `verdict` is pure; `follow`, `ask`, `approve` and
`reject` are the only state changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from scheduler.config import DaemonSection
from scheduler.decide.decision import Approval
from scheduler.decide.diff import propose
from scheduler.decide.observation import Observation
from scheduler.domain import NodeState, Plan, Pool

log = logging.getLogger(__name__)


def same_targets(a: Plan, b: Plan) -> bool:
    """Whether two plans want the same nodes in the same pools."""
    return {(p.model, p.pool, p.count) for p in a.placements} == {
        (p.model, p.pool, p.count) for p in b.placements
    }


def needs_approval(
    obs: Observation, plan: Plan, daemon: DaemonSection, price_of: Callable[[Pool], float]
) -> bool:
    """Whether the configured approval mode holds `plan` for a person to approve."""
    if daemon.approval_mode == "auto":
        return False
    if daemon.approval_mode == "manual":
        return True
    price_now = sum(price_of(n.pool) for n in obs.serving())
    drains = sum(1 for n in propose(obs, plan).removals if n.state is NodeState.READY)
    return (
        abs(plan.usd_per_hour - price_now) > daemon.approval_cost_delta_usd_per_hour
        or drains > daemon.approval_max_drains
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """What approval makes of one plan."""

    approval: Approval  # auto, approved or pending
    target: Plan | None  # the plan the fleet follows now (None: nothing approved yet)
    ask: bool  # `plan` is new and waits for a person: store it as pending


class ApprovalState:
    """The plan the fleet follows and the one waiting for a person."""

    def __init__(self) -> None:
        self.approved: Plan | None = None  # the plan the fleet follows
        self.pending: tuple[int, Plan] | None = None  # a stored plan waiting, with its id

    def verdict(self, plan: Plan, needed: bool) -> Verdict:
        """Which plan the fleet follows this tick, given whether `plan` needs approval."""
        if not needed:
            return Verdict(Approval.AUTO, plan, ask=False)
        if self.approved is not None and same_targets(plan, self.approved):
            return Verdict(Approval.APPROVED, self.approved, ask=False)
        ask = self.pending is None or not same_targets(self.pending[1], plan)
        return Verdict(Approval.PENDING, self.approved, ask=ask)

    def follow(self, plan: Plan) -> None:
        """The fleet follows `plan` (it needed no approval)."""
        self.approved = plan

    def ask(self, plan_id: int, plan: Plan) -> None:
        """`plan`, stored as `plan_id`, waits for a person."""
        self.pending = (plan_id, plan)
        log.info("plan_pending plan_id=%d usd_per_hour=%.2f", plan_id, plan.usd_per_hour)

    def approve(self, plan_id: int) -> bool:
        """Let the pending plan `plan_id` act; False when it is not the pending one."""
        if self.pending is None or self.pending[0] != plan_id:
            return False
        self.approved = self.pending[1]
        self.pending = None
        log.info("plan_approved plan_id=%d", plan_id)
        return True

    def reject(self, plan_id: int) -> bool:
        """Drop the pending plan `plan_id`; False when it is not the pending one."""
        if self.pending is None or self.pending[0] != plan_id:
            return False
        self.pending = None
        log.info("plan_rejected plan_id=%d", plan_id)
        return True
