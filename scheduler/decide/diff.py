"""From a target fleet to the changes that reach it: which pools need nodes, which
nodes are surplus. Pure: the observation and the plan in, a proposal out.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from scheduler.decide.observation import Observation
from scheduler.domain import MAX_NODES_PER_POOL, Node, NodeState, Plan, Pool

# Surplus nodes are removed in this order: ready ones first (the guards decide whether one
# may go yet), nodes still booting last, the latest launch first. A booting node is kept
# until it is ready (its boot is paid for and its capacity is minutes away); capsched's
# plans keep every booting node, so only a plan that drops more nodes from a pool than
# are ready there (a baseline's) cancels one.
_REMOVAL_ORDER = {NodeState.READY: 0, NodeState.REQUESTED: 1, NodeState.BOOTING: 2}


def removal_order(nodes: Iterable[Node]) -> list[Node]:
    """Surplus nodes of one (model, pool) in the order a scale-down takes them: ready
    ones first, the oldest (which the age guard allows), then requested and booting
    ones, the latest launch first; ties by node id.

    The baselines that emulate SkyServe order nodes their own way on purpose
    (`simulations.baselines.common.skyserve_removal_order`): it picks which pools shrink;
    this picks the node within a pool, for every policy."""
    return sorted(
        nodes,
        key=lambda n: (
            _REMOVAL_ORDER.get(n.state, 3),
            -(n.state_since_s or 0.0) if n.state is not NodeState.READY else 0.0,
            n.state_since_s or 0.0,
            n.node_id,
        ),
    )


@dataclass(frozen=True, slots=True)
class Proposal:
    """What the plan asks for, before the guards."""

    launches: tuple[tuple[str, Pool], ...]  # (model, pool) per node to add
    removals: tuple[Node, ...]  # surplus nodes, least useful first
    # (model, pool, nodes) the plan wants beyond MAX_NODES_PER_POOL in a pool: not launched
    over_limit: tuple[tuple[str, Pool, int], ...] = ()


def propose(obs: Observation, plan: Plan) -> Proposal:
    """Launches for pools below target, removals for pools above it.

    Nodes under an interruption notice do not count: their replacements are
    launched at once (make before break) while they serve until reclaimed. A pool
    never gets more than `MAX_NODES_PER_POOL` nodes of a model, whatever the plan says
    (the planner never asks for more; a baseline fed absurd load might): the rest is in
    `over_limit`, so one launch per node stays a list of bounded length.
    """
    live: dict[tuple[str, Pool], list[Node]] = defaultdict(list)
    for node in obs.serving():
        live[node.model, node.pool].append(node)
    target = Counter({(pl.model, pl.pool): pl.count for pl in plan.placements})

    launches: list[tuple[str, Pool]] = []
    removals: list[Node] = []
    over_limit: list[tuple[str, Pool, int]] = []
    for key in sorted(set(target) | set(live), key=lambda k: (k[0], k[1])):
        have, want = live.get(key, []), target.get(key, 0)
        if want > len(have):
            room = max(0, MAX_NODES_PER_POOL - len(have))
            if want - len(have) > room:
                over_limit.append((key[0], key[1], want - len(have) - room))
            launches.extend([key] * min(want - len(have), room))
        elif len(have) > want:
            removals.extend(removal_order(have)[: len(have) - want])
    return Proposal(tuple(launches), tuple(removals), tuple(over_limit))
