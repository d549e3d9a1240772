"""Where capacity is (issue 18, item 2): the per-pool obtainability estimate learns from
refused launches and interruptions, decays, survives a restart, and steers plans away from
pools that just stocked out toward pools that keep their nodes. Also the small-fleet
robustness rule (item 4)."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.sim import SpotTrace
from capsched.cli import main
from scheduler.config import DEFAULT_CONFIG_PATH
from scheduler.decide.obtainability import RECOVERY_S, Obtainability, PoolEvent, PoolEvidence
from scheduler.decide.planner import make_plan
from scheduler.domain import Cloud, Demand, Market, NodeState, Pool
from scheduler.fleet.boot import node_boot_s
from scheduler.fleet.capacity import node_rps
from scheduler.fleet.catalog import load_catalog
from scheduler.fleet.notice import loss_tolerated, uncovered_s
from scheduler.fleet.profiles import load_profiles
from scheduler.loop.store import StateStore, read_obtainability
from scheduler.ports.provider import InsufficientCapacity
from scheduler.service.telemetry import Telemetry
from solver import Status, solve

sys.path.insert(0, str(Path(__file__).parent))
from test_reconciler import MODEL, REGION, World, make_config
from test_solver import pool, problem
from test_telemetry import value

A = Pool(Cloud.AWS, "us-east-1", "", "g6e.xlarge", Market.SPOT)
B = Pool(Cloud.AWS, "us-east-2", "", "g6e.xlarge", Market.SPOT)


def test_events_lower_the_estimate_and_it_recovers_over_the_hour() -> None:
    est = Obtainability()
    assert est.estimate(A, 0.0) == 1.0
    est.record(A, PoolEvent.REFUSED, 0.0)
    assert est.estimate(A, 0.0) == math.exp(-1.0)
    est.record(A, PoolEvent.PREEMPTED, 0.0)
    assert est.estimate(A, 0.0) == math.exp(-2.0)
    assert est.estimate(B, 0.0) == 1.0  # other pools untouched
    # An hour later the two events weigh e^-1 each; a quiet day forgets them.
    assert math.isclose(est.estimate(A, RECOVERY_S), math.exp(-2.0 * math.exp(-1.0)))
    assert est.extra_interruptions_per_hour(A, 0.0) == 2.0 * 3600.0 / RECOVERY_S
    assert est.current(86400.0) == {}
    assert est.estimate(A, 86400.0) == 1.0


@settings(max_examples=60, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.sampled_from(list(PoolEvent)), st.floats(0, 1e5, allow_nan=False)),
        max_size=20,
    ),
    later_s=st.floats(0, 1e5, allow_nan=False),
)
def test_estimate_is_a_probability_falling_with_events_rising_with_time(
    events: list[tuple[PoolEvent, float]], later_s: float
) -> None:
    est = Obtainability()
    t = 0.0
    for kind, dt in events:
        t += dt
        before = est.estimate(A, t)
        est.record(A, kind, t)
        after = est.estimate(A, t)
        assert 0.0 < after < before <= 1.0
    now = est.estimate(A, t)
    assert now <= est.estimate(A, t + later_s) <= 1.0


def test_a_pool_that_lost_nodes_is_priced_as_riskier_and_the_plan_prefers_the_other() -> None:
    """Two spot pools at the same price: the plan picks the one with no recent events."""
    config = make_config(robustness_fraction=0.0)
    catalog = load_catalog()
    same = {A, B}
    offerings = tuple(
        dataclasses.replace(o, usd_per_hour=1.0) if o.pool in same else o
        for o in catalog.offerings
        if o.pool in same or o.pool.market is Market.ON_DEMAND
    )
    catalog = dataclasses.replace(catalog, offerings=offerings)
    profiles = load_profiles()
    demand = [Demand(MODEL, REGION, 2.0)]

    def spot_pools(est: Obtainability) -> set[Pool]:
        cat = dataclasses.replace(catalog, offerings=tuple(est.apply(catalog.offerings, 0.0)))
        plan = make_plan(config, cat, profiles, demand)
        return {pl.pool for pl in plan.placements if pl.pool.market is Market.SPOT}

    for lost in (A, B):
        est = Obtainability()
        est.record(lost, PoolEvent.PREEMPTED, 0.0)
        assert spot_pools(est) == same - {lost}


async def test_refusals_and_interruptions_reach_the_estimate_and_survive_a_restart(
    tmp_path: Path,
) -> None:
    w = World(tmp_path)
    w.cloud.inject_error("launch", InsufficientCapacity("stock-out"))
    await w.tick(0)
    [refused] = [n for n in w.store.db.table("nodes").rows if n["state"] == "failed"]
    learned = w.rec.obtainability.current(w.now)
    assert [ev.refusals for ev in learned.values()] == [1.0]
    [pool_key] = [p.key for p in learned]
    assert pool_key.startswith(f"aws/{refused['region']}/{refused['instance_type']}")
    # An interruption notice on a spot node counts as a preemption in its pool.
    node = next(n for n in w.store.live_nodes() if n.pool.market is Market.SPOT)
    w.cloud._notify(w.cloud._instances[node.node_id], w.now)
    await w.tick(60)
    assert w.rec.obtainability.current(w.now)[node.pool].preemptions == 1.0
    # A new store and reconciler on the same database (a restart) know the same.
    w.store.close()
    w.store = StateStore(w.db)
    rec = w.build()
    assert rec.obtainability.current(w.now) == w.rec.obtainability.current(w.now)
    assert read_obtainability(w.db) == w.store.obtainability()
    offered = {o.pool: o for o in rec.obtainability.apply(load_catalog().offerings, w.now)}
    assert offered[node.pool].interruptions_per_hour > next(
        o.interruptions_per_hour for o in load_catalog().offerings if o.pool == node.pool
    )


async def test_a_stocked_out_pool_is_not_retried_every_tick_after_its_node_is_reclaimed(
    tmp_path: Path,
) -> None:
    """The plan wants 3 nodes in A, which holds 1 for an hour and none after. Once A's node
    is reclaimed its replacement goes elsewhere: the target that still counted a node in A
    (A was already cooling down when it was searched) used to stand, and every tick
    relaunched into A, refused, with the node missing."""
    trace = SpotTrace("one-then-none", 3600.0, np.array([1, 0, 0, 0, 0]), loop=False)
    w = World(tmp_path, spot_traces={A: trace}, random_interruptions=False)
    first = await w.tick(0)
    assert first.plan is not None and any(pl.pool == A for pl in first.plan.placements)
    for _ in range(24):  # two hours of 5-minute ticks
        await w.tick(300)
    rows = list(w.store.db.table("nodes").rows)
    refused_later = [
        r
        for r in rows
        if r["state"] == NodeState.FAILED.value
        and r["region"] == A.region
        and r["instance_type"] == A.instance_type
        and r["market"] == "spot"
        and r["launched_at_s"] > 3600.0
    ]
    # The cooldown lets one retry through per cooldown (900 s, then 1800 s, ...), not 12.
    assert len(refused_later) <= 3
    ready = [n for n in w.store.live_nodes() if n.state is NodeState.READY]
    assert ready and all(n.pool != A for n in ready)


def small_fleet(spare: int, spot_usd: float) -> tuple[int, int, int]:
    """3 replicas' load (2.9 nodes), two spot domains with room, on-demand at 1 USD/h:
    (spot nodes in domain 0, in domain 1, on-demand nodes) of the optimal plan."""
    pools = [
        pool("spot-a", dom=0, spot=True, usd=spot_usd),
        pool("spot-b", dom=1, spot=True, usd=spot_usd),
        pool("od", dom=2, spot=False, usd=1.0),
    ]
    p = problem(
        pools,
        [[1.0, 1.0, 1.0]],
        [(0, 2.9, (0,))],
        robustness_fraction=0.8,
        robustness_spare_nodes=spare,
    )
    sol = solve(p, time_limit_s=10.0, seed=0)
    assert sol.status is Status.OPTIMAL
    n = sol.nodes[0]
    return int(n[0]), int(n[1]), int(n[2])


def test_small_fleet_rule_does_not_force_on_demand_with_two_spot_domains() -> None:
    # Spot at 0.6 x on-demand: 0.8 of the load after losing a domain needs 3 surviving
    # nodes, and 3 on-demand nodes are the cheapest way to that.
    assert small_fleet(spare=0, spot_usd=0.6) == (0, 0, 3)
    # One spare node: losing a domain may leave 2 of 3 replicas: a spot node in each
    # domain plus one on-demand (2.2 USD/h; 2 + 2 spot would be 2.4).
    assert small_fleet(spare=1, spot_usd=0.6) == (1, 1, 1)
    # Spot under half the on-demand price: 2 + 2 spot, no on-demand, instead of 3 + 3.
    assert small_fleet(spare=0, spot_usd=0.45) == (3, 3, 0)
    assert small_fleet(spare=1, spot_usd=0.45) == (2, 2, 0)


def test_spot_replaced_within_its_notice_needs_no_on_demand_cover() -> None:
    # One spot zone with room, 3 replicas' load, spot at a third of on-demand.
    def plan(replaced: bool) -> tuple[int, int]:
        pools = [
            pool("spot-a", dom=0, spot=True, usd=1 / 3, loss_tolerated=replaced),
            pool("od", dom=1, spot=False, usd=1.0),
        ]
        p = problem(pools, [[1.0, 1.0]], [(0, 2.9, (0,))], robustness_fraction=0.8)
        sol = solve(p, time_limit_s=10.0, seed=0)
        assert sol.status is Status.OPTIMAL
        return int(sol.nodes[0][0]), int(sol.nodes[0][1])

    # Nodes that boot for longer than the notice: losing the zone must leave 0.8 of the
    # load served, so 3 on-demand nodes (the spot node alone would add nothing).
    assert plan(replaced=False) == (0, 3)
    # A replacement serves before the noticed node goes: all spot, in the one zone.
    assert plan(replaced=True) == (3, 0)


def test_a_model_that_boots_within_the_notice_plans_spot_in_one_zone() -> None:
    # The planner reads the boot time against the cloud's notice (AWS: 120 s): the same
    # demand on one zone's spot keeps on-demand cover with a 600 s boot and none with 90 s.
    catalog = load_catalog()
    itype = catalog.instance_type(A)
    for boot_s, cover in ((600.0, True), (90.0, False)):
        cfg = make_config()
        section = cfg.model(MODEL).model_copy(update={"boot_time_s": boot_s})
        cfg = cfg.model_copy(update={"models": (section,)})
        assert (uncovered_s(cfg, MODEL, itype) == 0) is not cover
        assert loss_tolerated(uncovered_s(cfg, MODEL, itype), 1.0, 0.0) is not cover
        assert node_boot_s(cfg, MODEL, itype) == boot_s
        spot_only = [
            o for o in catalog.offerings if o.pool.market is Market.ON_DEMAND or o.pool == A
        ]
        plan = make_plan(
            cfg,
            dataclasses.replace(catalog, offerings=tuple(spot_only)),
            load_profiles(),
            [Demand(MODEL, REGION, 2.5 * node_rps(cfg, load_profiles(), MODEL, itype))],
        )
        markets = {p.pool.market for p in plan.placements if p.count}
        assert (Market.ON_DEMAND in markets) is cover, plan.placements
        # The plan says why it runs spot without cover.
        assert any(n.startswith("no spot-loss cover") for n in plan.notes) is not cover


def test_a_tolerance_drops_cover_for_a_quiet_pool_and_keeps_it_for_a_stormy_one() -> None:
    # 600 s boot against AWS's 120 s notice: a loss leaves 480 s uncovered. With
    # spot_loss_tolerance = 0.001, a pool interrupted once a day (0.04/h x 0.133 h =
    # 0.0053 of the time) keeps its on-demand cover; one interrupted once a month does not.
    assert not loss_tolerated(480.0, 1 / 24, 0.001)
    assert loss_tolerated(480.0, 1 / 720, 0.001)
    assert not loss_tolerated(480.0, 1 / 720, 0.0)  # the default covers every such loss
    assert not loss_tolerated(None, 0.0, 0.001)  # a pool serving no model
    catalog = load_catalog()
    itype = catalog.instance_type(A)
    base = make_config()
    cfg = base.model_copy(
        update={
            "planning": base.planning.model_copy(update={"spot_loss_tolerance": 0.001}),
            "models": (base.model(MODEL).model_copy(update={"boot_time_s": 600.0}),),
        }
    )
    for per_hour, cover in ((1 / 24, True), (1 / 720, False)):
        offerings = tuple(
            dataclasses.replace(o, interruptions_per_hour=per_hour) if o.pool == A else o
            for o in catalog.offerings
            if o.pool.market is Market.ON_DEMAND or o.pool == A
        )
        plan = make_plan(
            cfg,
            dataclasses.replace(catalog, offerings=offerings),
            load_profiles(),
            [Demand(MODEL, REGION, 2.5 * node_rps(cfg, load_profiles(), MODEL, itype))],
        )
        markets = {p.pool.market for p in plan.placements if p.count}
        assert (Market.ON_DEMAND in markets) is cover, plan.placements


def test_small_fleet_rule_changes_nothing_for_large_fleets() -> None:
    p = problem([pool("s", spot=True)], [[1.0]], [(0, 50.0, (0,))], robustness_fraction=0.8)
    for spare in (0, 1, 2):
        q = dataclasses.replace(p, robustness_spare_nodes=spare)
        assert q.robustness_share(0, 50.0) == 0.8
    # A single replica's load still needs a second domain (one node survives).
    q = dataclasses.replace(p, robustness_spare_nodes=1)
    assert q.robustness_share(0, 0.5) == 0.8
    assert q.robustness_share(0, 2.5) == 1.0 - 1.0 / 2.5


def test_the_estimate_is_a_metric_and_a_plan_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    est = Obtainability()
    est.record(A, PoolEvent.REFUSED, 0.0)
    t = Telemetry()
    t.record_obtainability(est, 0.0)
    assert value(t, "capsched_pool_obtainability", pool=A.key) == math.exp(-1.0)
    assert value(t, "capsched_pool_obtainability", pool=B.key) is None
    t.record_obtainability(est, 86400.0)  # forgotten: the series goes away
    assert value(t, "capsched_pool_obtainability", pool=A.key) is None

    # `capsched plan` reads the daemon's state database named in the config.
    db = tmp_path / "state.db"
    store = StateStore(db)
    now = time.time()
    store.save_obtainability({A: PoolEvidence(2.0, 1.0, now)})
    store.close()
    text = DEFAULT_CONFIG_PATH.read_text(encoding="utf-8")
    cfg = tmp_path / "config.toml"
    cfg.write_text(text.replace('state_db = "capsched.db"', f'state_db = "{db}"'))
    assert main(["plan", "--config", str(cfg), "--json"]) == 0
    notes = json.loads(capsys.readouterr().out)["notes"]
    [note] = [n for n in notes if n.startswith("obtainability")]
    assert note.startswith(f"obtainability {A.key}: 0.05 (2.00 refusals, 1.00 interruptions")
