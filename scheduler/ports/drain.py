"""Draining: take a node out of rotation, then wait for its in-flight requests.

A `Drainer` knows how traffic reaches nodes. The reconciler calls `begin` once when
it decides to drain a node, then `in_flight` on every tick until it returns 0 or the
drain deadline passes, and only then terminates the node.
"""

from __future__ import annotations

from typing import Protocol

from scheduler.domain import Node


class Drainer(Protocol):
    """Takes nodes out of rotation and reports what they still serve."""

    async def begin(self, node: Node) -> None:
        """Stop sending new requests to `node` (deregister from the router or balancer)."""
        ...

    async def in_flight(self, node: Node, now_s: float) -> int | None:
        """Requests still running on `node`; None when unknown (the deadline decides)."""
        ...


class NoTrafficLayer:
    """For fleets with no router to tell: a node has nothing in flight once drained."""

    async def begin(self, node: Node) -> None:
        """Nothing to deregister from."""

    async def in_flight(self, node: Node, now_s: float) -> int | None:
        """Always 0: the node may be terminated at once."""
        return 0
