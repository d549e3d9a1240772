"""Decisions as data: what the reconciler asks the actuator to do.

Actions are frozen, carry the node id (our idempotency token) and a reason, and are
stored, logged, counted and asserted on in tests and simulations.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.domain import Pool


@dataclass(frozen=True, slots=True)
class Grounds:
    """The numbers behind an action toward a plan, for its log line: the model's planned
    demand against the capacity it has and the capacity the plan gives it, and the
    action's pool now and in the plan. Taken when the action is decided."""

    model: str  # the node's model
    planned_rps: float  # the model's demand the plan provisions for (NaN: the policy does not say)
    capacity_rps: float  # what the model's live nodes serve (requested, booting, ready)
    planned_capacity_rps: float  # what the plan's nodes of the model serve
    pool_nodes: int  # nodes of the model in the pool now
    pool_planned: int  # nodes of the model the plan wants in the pool


@dataclass(frozen=True, slots=True)
class Launch:
    """Start a node of `model` in `pool`."""

    node_id: str  # new node's id, also the cloud idempotency token
    model: str  # model it will serve
    pool: Pool  # where
    reason: str  # why, for logs and the journal
    grounds: Grounds | None = None  # the plan's numbers behind it, when a plan asked


@dataclass(frozen=True, slots=True)
class Drain:
    """Take a node out of rotation, let in-flight requests finish, then terminate it."""

    node_id: str  # node to drain
    reason: str
    grounds: Grounds | None = None  # the plan's numbers behind it, when a plan asked


@dataclass(frozen=True, slots=True)
class Terminate:
    """Terminate a node now (it serves nothing: booting, drained, or being reclaimed)."""

    node_id: str  # node to terminate
    reason: str
    grounds: Grounds | None = None  # the plan's numbers behind it, when a plan asked


Action = Launch | Drain | Terminate
