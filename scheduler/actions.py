"""Decisions as data: what the reconciler asks the actuator to do.

Actions are frozen, carry the node id (our idempotency token) and a reason, and are
stored, logged, counted and asserted on in tests and simulations.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.domain import Pool


@dataclass(frozen=True, slots=True)
class Launch:
    """Start a node of `model` in `pool`."""

    node_id: str  # new node's id, also the cloud idempotency token
    model: str  # model it will serve
    pool: Pool  # where
    reason: str  # why, for logs and the journal


@dataclass(frozen=True, slots=True)
class Drain:
    """Take a node out of rotation, let in-flight requests finish, then terminate it."""

    node_id: str  # node to drain
    reason: str


@dataclass(frozen=True, slots=True)
class Terminate:
    """Terminate a node now (it serves nothing: booting, drained, or being reclaimed)."""

    node_id: str  # node to terminate
    reason: str


Action = Launch | Drain | Terminate
