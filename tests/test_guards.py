"""The reconciler's decision between plan and actions: diff plus guards, table style."""

from __future__ import annotations

import itertools

import pytest

from scheduler.config import Config, load_config
from scheduler.decide.diff import propose
from scheduler.decide.guards import Held, apply_guards
from scheduler.decide.observation import Observation
from scheduler.domain import (
    Cloud,
    HoldKind,
    Market,
    Node,
    NodeState,
    Placement,
    Plan,
    PlanStatus,
    Pool,
)
from scheduler.domain.actions import Drain, Launch, Terminate
from scheduler.fleet.catalog import load_catalog
from scheduler.ports.metrics import DemandSample
from scheduler.ports.provider import InterruptionNotice

A = Pool(Cloud.AWS, "us-east-1", "", "g6.xlarge", Market.SPOT)
B = Pool(Cloud.GCP, "us-east4", "us-east4-a", "g2-standard-4", Market.SPOT)
MODEL = "llama-3.1-8b"
NOW = 10_000.0


def config(**guards: float) -> Config:
    base = load_config()
    return base.model_copy(update={"guards": base.guards.model_copy(update=guards)})


def node(i: int, pool: Pool = A, state: NodeState = NodeState.READY, since: float = 0.0) -> Node:
    return Node(f"n{i}", MODEL, pool, state, f"i-{i}", launched_at_s=since, state_since_s=since)


def obs(
    nodes: list[Node], complete: bool = True, notices: tuple[InterruptionNotice, ...] = ()
) -> Observation:
    rps = {(MODEL, "us-east"): 5.0} if complete else {}
    return Observation(NOW, DemandSample(NOW, rps), complete, tuple(nodes), (), notices)


def plan(*counts: tuple[Pool, int], usd: float = 1.0) -> Plan:
    placements = tuple(Placement(MODEL, p, c) for p, c in counts if c)
    return Plan(PlanStatus.OPTIMAL, placements, usd, usd, 0.0, 0.0)


def decide(
    o: Observation, p: Plan, cfg: Config | None = None
) -> tuple[list[object], tuple[Held, ...]]:
    ids = (f"new{i}" for i in itertools.count())
    g = apply_guards(
        o,
        p,
        propose(o, p),
        cfg or config(),
        lambda m, pool: 1.0,
        lambda: next(ids),
        instance_types=load_catalog().instance_types,
    )
    return list(g.actions), g.held_back


def kinds(actions: list[object]) -> list[str]:
    return [type(a).__name__ for a in actions]


def test_launches_what_the_plan_adds() -> None:
    actions, held = decide(obs([node(1)]), plan((A, 3)))
    assert kinds(actions) == ["Launch", "Launch"]
    assert all(isinstance(a, Launch) and a.pool == A for a in actions)
    assert held == ()


def test_no_scale_down_when_the_load_signal_is_missing() -> None:
    nodes = [node(i) for i in range(4)]
    actions, held = decide(obs(nodes, complete=False), plan((A, 1)))
    assert actions == []
    assert held and held[0].kind is HoldKind.LOAD_SIGNAL and held[0].nodes == 3
    assert "load signal missing" in held[0].text


def test_scale_up_still_happens_when_the_load_signal_is_missing() -> None:
    actions, _ = decide(obs([node(1)], complete=False), plan((A, 2)))
    assert kinds(actions) == ["Launch"]


def test_young_nodes_are_not_drained() -> None:
    nodes = [node(1, since=NOW - 60), node(2, since=NOW - 60)]
    actions, held = decide(obs(nodes), plan((A, 1)))
    assert actions == []
    assert held[0].kind is HoldKind.MIN_NODE_AGE and "ready for less than 900 s" in held[0].text


def test_scale_down_is_limited_per_tick() -> None:
    nodes = [node(i) for i in range(8)]
    actions, held = decide(obs(nodes), plan((A, 1)), config(max_scale_down_fraction=0.25))
    assert kinds(actions) == ["Drain", "Drain"]  # 25 % of 8
    assert held[0].kind is HoldKind.SCALE_DOWN_LIMIT
    assert "scale-down limit per tick reached" in held[0].text


def test_make_before_break_waits_for_replacements() -> None:
    # The plan moves two nodes from A to B: launch in B now, drain A only once B serves.
    nodes = [node(1), node(2)]
    actions, held = decide(obs(nodes), plan((B, 2)))
    assert kinds(actions) == ["Launch", "Launch"]
    assert held[0].kind is HoldKind.MAKE_BEFORE_BREAK and "make before break" in held[0].text
    booted = [*nodes, node(3, pool=B, since=NOW - 1000), node(4, pool=B, since=NOW - 1000)]
    actions, held = decide(obs(booted), plan((B, 2)), config(max_scale_down_fraction=0.5))
    assert sorted(a.node_id for a in actions if isinstance(a, Drain)) == ["n1", "n2"]


def test_a_surplus_is_taken_from_ready_nodes_and_booting_ones_are_kept() -> None:
    # One node too many in A: the one still booting is kept until it serves, and the
    # surplus is then taken from the ready ones, oldest first, through the drain guards.
    nodes = [node(1), node(2, state=NodeState.BOOTING, since=NOW - 5)]
    actions, held = decide(obs(nodes), plan((A, 1)))
    assert actions == [] and held[0].kind is HoldKind.MAKE_BEFORE_BREAK
    booted = [node(1), node(2, since=NOW - 1000)]
    actions, _ = decide(obs(booted), plan((A, 1)))
    assert [(type(a).__name__, a.node_id) for a in actions] == [("Drain", "n1")]


def test_a_plan_without_the_pool_cancels_its_booting_node_at_once() -> None:
    # Only a plan that wants fewer nodes in a pool than are ready there (a baseline's;
    # capsched's plans keep every booting node) cancels one.
    nodes = [node(1, pool=B), node(2, state=NodeState.BOOTING, since=NOW - 5)]
    actions, held = decide(obs(nodes), plan((B, 1)))
    assert len(actions) == 1 and isinstance(actions[0], Terminate) and actions[0].node_id == "n2"
    assert held == ()


def test_interrupted_nodes_are_replaced_at_once() -> None:
    notice = InterruptionNotice("n1", "i-1", A, NOW + 120)
    actions, _ = decide(obs([node(1), node(2)], notices=(notice,)), plan((A, 2)))
    assert kinds(actions) == ["Launch"]


def test_launches_stop_when_the_plan_is_over_budget() -> None:
    actions, held = decide(obs([]), plan((A, 2), usd=1e6))
    assert actions == []
    assert held[0].kind is HoldKind.BUDGET and held[0].nodes == 2
    assert "over the budget" in held[0].text


@pytest.mark.parametrize("count", [0, 1, 5])
def test_plan_equal_to_fleet_does_nothing(count: int) -> None:
    actions, held = decide(obs([node(i) for i in range(count)]), plan((A, count)))
    assert actions == [] and held == ()
