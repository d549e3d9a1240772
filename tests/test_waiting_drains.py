"""Make before break between ticks: a node a plan gives up is drained at the first fast
check after its replacements serve, not at the next plan tick (`WaitingDrains`,
`Reconciler.release_waiting`, `FastLoop`)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from sim_helpers import MODEL, OD_POOL, SPOT_POOL, registered, small_config, world

from scheduler.decide.guards import WaitingDrains
from scheduler.decide.observation import Observation, PolicyBase
from scheduler.domain import Node, NodeState, Placement, Plan, PlanStatus, Pool
from scheduler.loop.store import StateStore
from simulations.engine import replay

OTHER = "llama-3.1-70b"


def _node(i: int, state: NodeState = NodeState.READY, model: str = MODEL) -> Node:
    return Node(f"n{i}", model, OD_POOL, state)


def _rate(model: str, pool: Pool) -> float:
    return 10.0


def test_a_waiting_node_is_drained_once_the_others_cover_what_the_plan_wants() -> None:
    waiting = WaitingDrains(("n0",), {MODEL: 20.0}, {MODEL: 1})
    booting = [_node(0), _node(1), _node(2, NodeState.BOOTING)]
    drains, still = waiting.release(booting, _rate)
    assert drains == () and still.node_ids == ("n0",)  # 10 rps ready without it: short
    ready = [_node(0), _node(1), _node(2)]
    drains, still = waiting.release(ready, _rate)
    assert [d.node_id for d in drains] == ["n0"] and still.node_ids == ()
    # A model short at this check keeps its node until the next tick.
    drains, still = waiting.release(ready, _rate, exclude={MODEL})
    assert drains == () and still.node_ids == ("n0",)


def test_a_waiting_node_no_longer_ready_stops_waiting() -> None:
    waiting = WaitingDrains(("n0", "n9"), {MODEL: 0.0}, {MODEL: 5})
    drains, still = waiting.release([_node(0, NodeState.BOOTING), _node(1)], _rate)
    assert drains == () and still.node_ids == ()


@given(
    st.integers(0, 6),  # nodes waiting
    st.integers(0, 6),  # other ready nodes
    st.integers(0, 6),  # the tick's scale-down limit left
    st.floats(0.0, 120.0),  # ready rps the plan wants
)
def test_releases_never_break_the_plans_ready_floor_nor_the_ticks_limit(
    waiting: int, others: int, left: int, wanted: float
) -> None:
    ids = tuple(f"n{i}" for i in range(waiting))
    nodes = [_node(i) for i in range(waiting + others)]
    drains, still = WaitingDrains(ids, {MODEL: wanted}, {MODEL: left}).release(nodes, _rate)
    assert len(drains) <= left
    gone = {d.node_id for d in drains}
    assert gone <= set(ids) and gone.isdisjoint(still.node_ids)
    assert set(ids) == gone | set(still.node_ids)
    ready_after = 10.0 * (len(nodes) - len(gone))
    assert not gone or ready_after >= wanted - 1e-9
    # As many go as the floor and the limit allow: one more would break one of them.
    if still.node_ids:
        assert len(gone) == left or ready_after - 10.0 < wanted - 1e-9


class Moving(PolicyBase):
    """Wants one on-demand node, then (from `move_s`) one spot node instead."""

    name = "moving"

    def __init__(self, move_s: float) -> None:
        self.move_s = move_s

    def decide(self, obs: Observation) -> Plan:
        pool = SPOT_POOL if obs.now_s >= self.move_s else OD_POOL
        return Plan(PlanStatus.OPTIMAL, (Placement(MODEL, pool, 1),), 0.0, 0.0, 0.0, 0.0)


def _drain_start(db: Path, pool: Pool) -> float:
    """When the node of `pool` began draining."""
    store = StateStore(db)
    nodes = {row["node_id"]: row for row in store.db.table("nodes").rows}
    starts = [
        e["at_s"]
        for e in store.events()
        if e["new"] == NodeState.DRAINING.value
        and nodes[e["node_id"]]["market"] == pool.market.value
    ]
    store.close()
    assert len(starts) == 1
    return float(starts[0])


async def test_a_moved_node_drains_at_the_fast_check_after_its_replacement_serves(
    tmp_path: Path,
) -> None:
    # The move is decided at the tick of 600 s; the spot replacement boots 390 s, so it
    # serves from 990 s, between the ticks of 900 s and 1200 s. With the fast loop the
    # on-demand node starts draining within a fast interval of that (and bills ~3.5
    # minutes less); without it, at the tick of 1200 s.
    demand = [1.0] * 30
    starts = {}
    for fast_s in (30.0, 0.0):
        policy = Moving(move_s=600.0)
        with registered(policy.name, policy):
            w = world(small_config(fast_interval_s=fast_s), demand, boot_time_s=390.0)
            db = tmp_path / f"moving-{fast_s}.db"
            await replay(w, policy.name, db)
        starts[fast_s] = _drain_start(db, OD_POOL)
    serves = 600.0 + 390.0
    assert serves <= starts[30.0] <= serves + 30.0
    assert starts[0.0] == 1200.0
