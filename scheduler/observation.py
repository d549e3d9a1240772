"""What one tick knows about the world, and the policy interface that decides on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from adapters.metrics import DemandSample
from adapters.provider import InterruptionNotice
from scheduler.domain import Node, NodeState, Offering, Plan


@dataclass(frozen=True, slots=True)
class Observation:
    """Every outside fact a decision may use; decisions read nothing else."""

    now_s: float  # time of the tick (virtual in simulations)
    demand: DemandSample  # latest request rates per (model, region)
    demand_complete: bool  # every configured (model, region) series present and finite
    nodes: tuple[Node, ...]  # live nodes (not gone or failed) after merging the cloud listing
    offerings: tuple[Offering, ...]  # current prices and availability
    notices: tuple[InterruptionNotice, ...]  # interruption notices still pending

    def serving(self) -> tuple[Node, ...]:
        """Nodes that count as capacity now or soon: requested, booting or ready,
        and not under an interruption notice."""
        noticed = {n.node_id for n in self.notices}
        alive = {NodeState.REQUESTED, NodeState.BOOTING, NodeState.READY}
        return tuple(n for n in self.nodes if n.state in alive and n.node_id not in noticed)


class Policy(Protocol):
    """Turns an observation into a target fleet. capsched's own policy and every
    baseline implement this, so the simulator runs them through the same reconciler.
    A policy may keep state between ticks (forecaster, hysteresis windows); that
    state is explicit, driven by `obs.now_s`, never by the wall clock."""

    name: str  # short name used in reports ("capsched", "spothedge", ...)

    def decide(self, obs: Observation) -> Plan:
        """The target fleet for this tick."""
        ...
