"""The reconcile loop against the simulated cloud: scale-up, readiness, replacement on a
notice, no scale-down on missing data, fallback on capacity errors, restart safety."""

from __future__ import annotations

import math
from pathlib import Path

import builders
import numpy as np
import pytest
from fakes import no_sleep

from adapters.sim import SimCloud, SpotTrace
from scheduler.config import Config
from scheduler.decide.decision import Approval, ErrorKind
from scheduler.decide.policy import CapschedPolicy
from scheduler.domain import HoldKind, Market, NodeState
from scheduler.domain.actions import Drain, Launch, Terminate
from scheduler.fleet.catalog import load_catalog
from scheduler.loop.factory import build_scheduler
from scheduler.loop.reconciler import Reconciler, TickReport
from scheduler.loop.store import StateStore
from scheduler.ports.metrics import DemandSample
from scheduler.ports.provider import InsufficientCapacity

MODEL, REGION = builders.MODEL, builders.REGION


def make_config(**planning: object) -> Config:
    return builders.fleet_config(planning=planning)


class Metrics:
    """A load signal the test sets by hand."""

    def __init__(self, rps: float) -> None:
        self.rps = rps

    async def demand(self, now_s: float) -> DemandSample:
        return DemandSample(now_s, {(MODEL, REGION): self.rps})


class World:
    """A reconciler, its simulated cloud and store, and a clock the test moves."""

    def __init__(self, tmp_path: Path, rps: float = 20.0, **cloud: object) -> None:
        self.config = make_config()
        catalog = load_catalog()
        self.cloud = SimCloud(catalog.offerings, catalog.instance_types, boot_time_s=300, **cloud)  # type: ignore[arg-type]
        self.metrics = Metrics(rps)
        self.db = tmp_path / "state.db"
        self.store = StateStore(self.db)
        self.rec = self.build()
        self.now = 0.0

    def build(self) -> Reconciler:
        return build_scheduler(
            self.config, provider=self.cloud, metrics=self.metrics, store=self.store, sleep=no_sleep
        )

    async def tick(self, advance_s: float = 300.0) -> TickReport:
        self.now += advance_s
        self.cloud.advance_to(self.now)
        return await self.rec.tick(self.now)

    def states(self) -> list[NodeState]:
        return sorted(n.state for n in self.store.live_nodes())


async def test_scales_up_then_nodes_become_ready(tmp_path: Path) -> None:
    w = World(tmp_path)
    report = await w.tick(0)
    launches = [a for a in report.actions if isinstance(a, Launch)]
    assert launches and report.errors == ()
    assert set(w.states()) == {NodeState.BOOTING}
    await w.tick(300)  # boot time passed
    assert set(w.states()) == {NodeState.READY}
    assert len(list(w.cloud.running())) == len(launches)
    # Every transition is in the history with its cause.
    causes = {e["cause"] for e in w.store.events()}
    assert "launch accepted" in causes and "serving" in causes


async def test_plan_is_stable_when_nothing_changes(tmp_path: Path) -> None:
    w = World(tmp_path)
    await w.tick(0)
    await w.tick(300)
    report = await w.tick(300)
    assert report.actions == ()


async def test_missing_or_nan_load_never_scales_down(tmp_path: Path) -> None:
    w = World(tmp_path, rps=40.0)
    await w.tick(0)
    await w.tick(300)
    before = len(w.store.live_nodes())
    for bad in (math.nan, -1.0):
        w.metrics.rps = bad
        report = await w.tick(300)
        assert not report.demand_complete
        assert not any(isinstance(a, Drain) for a in report.actions)
    assert len(w.store.live_nodes()) == before


async def test_lower_load_scales_down_through_drain(tmp_path: Path) -> None:
    w = World(tmp_path, rps=60.0)
    await w.tick(0)
    await w.tick(300)
    big = len(w.store.live_nodes())
    w.metrics.rps = 1.0
    for _ in range(12):  # the forecaster needs a few ticks to believe the drop
        await w.tick(300)
    assert len(w.store.live_nodes()) < big
    gone = [e for e in w.store.events() if e["new"] == "gone"]
    assert gone and all(
        any(e2["node_id"] == e["node_id"] and e2["new"] == "draining" for e2 in w.store.events())
        for e in gone
    )


async def test_capacity_error_falls_back_to_another_pool_in_the_same_tick(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.cloud.inject_error("launch", InsufficientCapacity("stock-out"))
    report = await w.tick(0)
    failed = [n for n in w.store.db.table("nodes").rows if n["state"] == "failed"]
    assert len(failed) == 1
    assert any("InsufficientCapacity" in e.text for e in report.errors)
    # the failed pool is cooled down and the fleet still got its capacity this tick
    assert w.rec.cooldown.until
    assert len(w.store.live_nodes()) >= 1
    # A pool that keeps running out is kept out longer each time (within a day).
    [pool] = w.rec.cooldown.until
    base = w.config.guards.pool_cooldown_s
    assert w.rec.cooldown.until[pool] == w.now + base
    w.rec.cooldown.refused(pool, base_s=base, now_s=w.now + base)
    assert w.rec.cooldown.until[pool] == w.now + base + 2 * base
    w.rec.cooldown.refused(pool, base_s=base, now_s=w.now + 3 * base)
    assert w.rec.cooldown.until[pool] == w.now + 3 * base + 4 * base
    # A day later the count starts over.
    w.rec.cooldown.refused(
        pool, base_s=base, now_s=w.now + 2 * 86400.0
    )  # a day later the count starts over
    assert w.rec.cooldown.until[pool] == w.now + 2 * 86400.0 + base


async def test_interruption_notice_launches_a_replacement_at_once(tmp_path: Path) -> None:
    catalog = load_catalog()
    config = make_config()
    # Every spot pool holds 10 nodes for an hour, then none: the cloud reclaims them.
    traces = {
        o.pool: SpotTrace("test", 3600.0, np.array([10, 0, 0, 0]), loop=False)
        for o in catalog.offerings
        if o.pool.market is Market.SPOT and o.pool.cloud.value == "aws"
    }
    w = World(tmp_path, spot_traces=traces)
    w.config = config
    await w.tick(0)
    await w.tick(300)
    spot = [n for n in w.store.live_nodes() if n.pool.market is Market.SPOT]
    if not spot:
        pytest.skip("plan used no spot nodes")
    # Step just past the hour: notices arrive, and the same tick launches replacements.
    w.now = 3600.0
    w.cloud.advance_to(3601.0)
    report = await w.rec.tick(3601.0)
    assert any(isinstance(a, Launch) for a in report.actions)
    assert {n.state for n in w.store.live_nodes() if n.node_id in {s.node_id for s in spot}} <= {
        NodeState.INTERRUPTED
    }


async def test_restart_neither_duplicates_nor_leaks(tmp_path: Path) -> None:
    w = World(tmp_path)
    await w.tick(0)
    launched = w.cloud.counters.launches
    # The process dies; a new one opens the same store and talks to the same cloud.
    w.store.close()
    w.store = StateStore(w.db)
    w.rec = w.build()
    report = await w.tick(300)
    assert not any(isinstance(a, Launch) for a in report.actions)
    assert w.cloud.counters.launches == launched
    listed = {i.node_id for i in await w.cloud.list_instances()}
    assert listed == {n.node_id for n in w.store.live_nodes()}


async def test_unknown_instance_tagged_as_ours_is_adopted(tmp_path: Path) -> None:
    from scheduler.ports.provider import LaunchRequest

    w = World(tmp_path)
    await w.tick(0)
    pool = w.store.live_nodes()[0].pool
    await w.cloud.launch(LaunchRequest("cs-stray", MODEL, pool))  # e.g. launched before a crash
    await w.tick(300)
    stray = w.store.node("cs-stray")
    assert stray is not None
    assert any(e["cause"].startswith("adopted") for e in w.store.events("cs-stray"))


async def test_listed_addresses_are_stored_and_kept_across_restarts(tmp_path: Path) -> None:
    import dataclasses

    from scheduler.ports.provider import Instance, LaunchRequest

    w = World(tmp_path)
    await w.tick(0)
    await w.tick(300)  # launched last tick: this tick's listing reports the addresses

    async def listed() -> dict[str, str | None]:
        return {i.node_id: i.address for i in await w.cloud.list_instances()}

    def stored() -> dict[str, str | None]:
        return {n.node_id: n.address for n in w.store.live_nodes()}

    assert all((await listed()).values()) and stored() == await listed()
    await w.cloud.launch(LaunchRequest("cs-stray", MODEL, w.store.live_nodes()[0].pool))
    await w.tick(300)
    assert stored()["cs-stray"] == (await listed())["cs-stray"] is not None  # adopted with it
    # A listing without addresses (a cloud still assigning one) erases none.
    before = stored()
    real = w.cloud.list_instances

    async def without_addresses() -> list[Instance]:
        return [dataclasses.replace(i, address=None) for i in await real()]

    w.cloud.list_instances = without_addresses  # type: ignore[method-assign]
    await w.tick(300)
    assert stored() == before
    w.cloud.list_instances = real  # type: ignore[method-assign]
    w.store.close()
    w.store = StateStore(w.db)  # a restart reads them back
    now_listed = await listed()
    assert now_listed and {k: stored()[k] for k in now_listed} == now_listed


def with_daemon(w: World, **daemon: object) -> None:
    w.config = w.config.model_copy(update={"daemon": w.config.daemon.model_copy(update=daemon)})
    w.rec = w.build()


async def test_manual_mode_waits_for_approval(tmp_path: Path) -> None:
    w = World(tmp_path)
    with_daemon(w, approval_mode="manual")
    report = await w.tick(0)
    assert report.actions == () and report.held_back[0].kind is HoldKind.APPROVAL
    assert "approved" in report.held_back[0].text
    assert w.rec.approval.pending is not None
    pending_id = w.rec.approval.pending[0]
    assert w.store.plans(1)[0]["approval"] == "pending"
    report = await w.tick(300)  # still waiting: same plan, not stored twice
    assert report.actions == ()
    assert [p["approval"] for p in w.store.plans()].count("pending") == 1
    assert w.rec.approve(pending_id)
    report = await w.tick(0)
    assert any(isinstance(a, Launch) for a in report.actions)
    assert w.store.plans(5)[-1]["approval"] == "approved"


async def test_rejected_plan_never_acts(tmp_path: Path) -> None:
    w = World(tmp_path)
    with_daemon(w, approval_mode="manual")
    await w.tick(0)
    assert w.rec.approval.pending is not None
    assert w.rec.reject(w.rec.approval.pending[0])
    assert not w.rec.approve(12345)
    w.metrics.rps = 20.0
    report = await w.tick(300)
    assert not any(isinstance(a, Launch) for a in report.actions)


async def test_threshold_mode_lets_small_changes_through(tmp_path: Path) -> None:
    w = World(tmp_path, rps=5.0)
    with_daemon(w, approval_mode="threshold", approval_cost_delta_usd_per_hour=1000.0)
    report = await w.tick(0)
    assert any(isinstance(a, Launch) for a in report.actions)
    with_daemon(w, approval_mode="threshold", approval_cost_delta_usd_per_hour=0.01)
    w.metrics.rps = 80.0
    report = await w.tick(300)
    assert not any(isinstance(a, Launch) for a in report.actions)
    assert w.rec.approval.pending is not None


async def test_dry_run_plans_but_never_acts(tmp_path: Path) -> None:
    w = World(tmp_path)
    with_daemon(w, dry_run=True)
    report = await w.tick(0)
    assert report.plan is not None and report.plan.placements
    assert report.actions == ()
    assert w.cloud.counters.launches == 0
    assert w.store.plans(1)[0]["approval"] == "dry-run"


async def test_only_models_whose_demand_moved_are_re_solved(tmp_path: Path) -> None:
    other = "llama-3.2-3b"
    w = World(tmp_path)
    w.config = Config.model_validate(
        {
            **w.config.model_dump(),
            "models": [{"name": MODEL, "min_replicas": 1}, {"name": other, "min_replicas": 1}],
        }
    )
    rates = {MODEL: 20.0, other: 20.0}

    class TwoSeries:
        async def demand(self, now_s: float) -> DemandSample:
            return DemandSample(now_s, {(m, REGION): r for m, r in rates.items()})

    w.metrics = TwoSeries()  # type: ignore[assignment]
    w.rec = w.build()
    await w.tick(0)
    await w.tick(300)  # booted; the fleet is the plan
    first = await w.tick(300)
    assert first.plan is not None and first.actions == ()
    rates[MODEL] = 60.0  # one model triples
    report = await w.tick(300)
    assert report.plan is not None
    assert report.plan.kept_models == (other,)
    assert any(a.model == MODEL for a in report.actions if isinstance(a, Launch))
    assert all(a.model != other for a in report.actions)
    # A slow decline adds up against the rate of the last search, not of the last tick.
    report = await w.tick(300)
    assert report.plan is not None and MODEL not in report.plan.kept_models
    seen = []
    for _ in range(8):
        rates[other] *= 0.97
        report = await w.tick(300)
        assert report.plan is not None
        seen.append(other in report.plan.kept_models)
    assert seen[0] and not all(seen)


async def test_a_rise_the_target_still_serves_keeps_it_without_a_search(tmp_path: Path) -> None:
    w = World(tmp_path, rps=20.0)
    for advance in (0.0, 300.0, 300.0):
        steady = await w.tick(advance)
    assert steady.plan is not None
    w.metrics.rps = 21.5
    report = await w.tick(300)
    assert w.rec.policy.last_forecast[MODEL, REGION] > 1.05 * 20.0  # beyond replan_tolerance
    assert report.plan is not None and report.plan.kept_models == (MODEL,)
    assert report.plan.placements == steady.plan.placements
    assert report.actions == ()
    w.metrics.rps = 30.0  # more than the target serves: searched, and it grows
    report = await w.tick(300)
    assert report.plan is not None and MODEL not in report.plan.kept_models
    assert any(isinstance(a, Launch) for a in report.actions)


async def test_a_fall_re_solves_only_beyond_the_fall_tolerance(tmp_path: Path) -> None:
    w = World(tmp_path, rps=30.0)
    for advance in (0.0, 300.0, 300.0):
        steady = await w.tick(advance)
    solved_for = w.rec.policy.last_forecast[MODEL, REGION]
    ratios = []
    for rps in [27.6] * 5 + [20.0] * 4:
        w.metrics.rps = rps
        report = await w.tick(300)
        ratio = w.rec.policy.last_forecast[MODEL, REGION] / solved_for
        searched = report.plan is not steady.plan
        assert searched == (ratio < 1 - w.config.planning.replan_fall_tolerance)
        if searched:
            break
        assert report.actions == ()
        ratios.append(ratio)
    assert searched
    assert min(ratios) < 1 - w.config.planning.replan_tolerance  # a 5-10% dip moved nothing


async def test_a_re_plan_never_cancels_nodes_still_booting(tmp_path: Path) -> None:
    w = World(tmp_path, rps=40.0)
    launched: set[str] = set()
    # The load rises, then falls back before the nodes launched for the rise are ready.
    for rps in (40.0, 60.0, 30.0):
        w.metrics.rps = rps
        report = await w.tick(60)
        cancelled = {a.node_id for a in report.actions if isinstance(a, Terminate)}
        assert not cancelled & launched  # a booting node is kept, drained later if unneeded
        launched |= {a.node_id for a in report.actions if isinstance(a, Launch)}
    assert set(w.states()) == {NodeState.BOOTING} and len(w.states()) == len(launched)


async def test_a_fall_in_load_scales_down_only_once_it_has_lasted_the_delay(
    tmp_path: Path,
) -> None:
    w = World(tmp_path, rps=40.0)
    w.config = Config.model_validate(
        {
            **w.config.model_dump(),
            "planning": {**w.config.planning.model_dump(), "scale_down_delay_s": 900},
        }
    )
    w.rec = w.build()
    for _ in range(3):
        report = await w.tick(300)
    assert report.plan is not None
    before = sum(pl.count for pl in report.plan.placements)
    w.metrics.rps = 10.0  # a quarter of the load
    sizes = []
    for _ in range(5):
        report = await w.tick(300)
        assert report.plan is not None
        sizes.append(sum(pl.count for pl in report.plan.placements))
    assert sizes[:3] == [before] * 3  # 900 s of the old peak still in the window
    assert sizes[-1] < before


async def test_a_stock_out_fallback_changes_the_policy_state_once(tmp_path: Path) -> None:
    w = World(tmp_path)
    policy = w.rec.policy
    assert isinstance(policy, CapschedPolicy)
    w.cloud.inject_error("launch", InsufficientCapacity("stock-out"))
    report = await w.tick(0)
    [failed] = [o for o in report.outcomes if not o.ok]
    assert isinstance(failed.action, Launch) and failed.error is not None
    assert failed.error.kind is ErrorKind.ACTION and failed.error.pool == failed.action.pool
    # The fallback launched elsewhere in the same tick, and the report's decision is it.
    assert any(o.ok and isinstance(o.action, Launch) for o in report.outcomes)
    assert report.decision is not None and report.plan is report.decision.plan
    # One tick, one entry in the policy's scale-down window: the fallback decided a second
    # time on top of the first and added another.
    assert [t for t, _ in policy._recent] == [w.now]


async def test_decide_changes_no_reconciler_state(tmp_path: Path) -> None:
    w = World(tmp_path)
    with_daemon(w, approval_mode="manual")
    obs, _ = await w.rec.observe(300.0)
    decision = w.rec.decide(obs)
    assert decision.approval is Approval.PENDING and decision.ask_approval
    assert decision.held_back[0].kind is HoldKind.APPROVAL and decision.actions == ()
    assert w.rec.approval.pending is None and w.store.plans() == []  # tick applies it


async def test_a_plan_waiting_for_approval_is_not_stored_as_auto(tmp_path: Path) -> None:
    # While a plan waits, each tick stored the same targets again marked "auto": the
    # API and the TUI showed a plan that was not acting as the one in force.
    w = World(tmp_path)
    with_daemon(w, approval_mode="manual")
    first = await w.tick(0)
    w.metrics.rps *= 1.1  # checked again: the same targets still serve it
    again = await w.tick(300)
    assert again.plan is not first.plan and again.plan is not None and first.plan is not None
    assert {p.pool: p.count for p in again.plan.placements} == {
        p.pool: p.count for p in first.plan.placements
    }
    assert [p["approval"] for p in w.store.plans()] == ["pending"]
