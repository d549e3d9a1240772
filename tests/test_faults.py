"""Faults: the cloud fails a share of calls (throttling, timeouts, lost replies, capacity
and quota errors) while the load swings; the fleet still converges to the plan and no
node is ever launched twice or leaked. The reconciler runs directly on a virtual clock."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from adapters.faults import Fault, FaultyProvider
from adapters.sim import SimCloud
from scheduler.config import Config
from scheduler.decide.decision import ErrorKind
from scheduler.decide.observation import Observation, Policy, PolicyBase
from scheduler.decide.policy import CapschedPolicy
from scheduler.domain import Node, NodeState, Plan
from scheduler.domain.actions import Drain, Launch, Terminate
from scheduler.fleet.catalog import load_catalog
from scheduler.fleet.profiles import load_profiles
from scheduler.loop.factory import build_scheduler
from scheduler.loop.reconciler import Reconciler, TickReport
from scheduler.loop.store import StateStore
from scheduler.ports.metrics import DemandSample
from scheduler.ports.provider import (
    InstanceState,
    InsufficientCapacity,
    LaunchRequest,
    QuotaExceeded,
    Transient,
)

SMALL, BIG, REGION = "llama-3.1-8b", "llama-3.1-70b", "us-east"
TICK_S = 300.0
# Load per tick (rps of the small model; the big one gets a tenth): up, down, up, steady.
SCRIPT = [20.0] * 6 + [60.0] * 8 + [8.0] * 14 + [40.0] * 8
STEADY_TICKS = 8  # then load holds still while the faults go on
HOLD_TICKS = 12  # then the plan holds still too: the fleet must reach it, faults or not

FAULTS = {
    "launch": Fault(
        0.3, (Transient, InsufficientCapacity, QuotaExceeded, Transient), lost_reply_share=0.3
    ),
    "terminate": Fault(0.3, (Transient,), lost_reply_share=0.5),
    "list_instances": Fault(0.1, (Transient,)),
    "offerings": Fault(0.1, (Transient,)),
    "interruption_notices": Fault(0.1, (Transient,)),
}


def make_config() -> Config:
    return Config.model_validate(
        {
            "models": [{"name": SMALL}, {"name": BIG}],
            "regions": [{"name": REGION, "location": "us-east-1", "max_latency_ms": 40}],
            "clouds": {
                "aws": {"regions": ["us-east-1", "us-east-2"]},
                "gcp": {"enabled": False},
            },
            "planning": {"robustness_fraction": 0.5, "budget_usd_per_hour": None},
            "solver": {"time_limit_s": 2.0},
            "guards": {"min_node_age_s": 0, "max_scale_down_fraction": 0.5},
        }
    )


class Metrics:
    """A load signal the test sets by hand."""

    def __init__(self) -> None:
        self.rps = 0.0

    async def demand(self, now_s: float) -> DemandSample:
        return DemandSample(now_s, {(SMALL, REGION): self.rps, (BIG, REGION): self.rps / 10})


class VirtualSleep:
    """The actuator's backoff sleep: adds up virtual seconds, never waits."""

    def __init__(self) -> None:
        self.slept_s = 0.0

    async def __call__(self, delay_s: float) -> None:
        self.slept_s += delay_s


class Hold(PolicyBase):
    """The real policy until `freeze`, then its last plan every tick: the forecaster can
    flip between two near-equal fleets while load is flat, and convergence needs one
    target to converge to. Capacity fallbacks still re-ask it (and get the same plan)."""

    name = "capsched"

    def __init__(self, policy: Policy) -> None:
        self.policy = policy  # the real policy
        self.frozen: Plan | None = None  # the plan returned once frozen

    def freeze(self, plan: Plan) -> None:
        self.frozen = plan

    def decide(self, obs: Observation) -> Plan:
        return self.frozen if self.frozen is not None else self.policy.decide(obs)

    def revise(self, obs: Observation) -> Plan:
        return self.frozen if self.frozen is not None else self.policy.revise(obs)


class World:
    def __init__(self, tmp_path: Path, seed: int) -> None:
        catalog = load_catalog()
        self.cloud = SimCloud(catalog.offerings, catalog.instance_types, boot_time_s=300)
        self.faulty = FaultyProvider(self.cloud, FAULTS, seed=seed)
        self.metrics = Metrics()
        self.store = StateStore(tmp_path / "state.db")
        self.sleep = VirtualSleep()
        config = make_config()
        self.policy = Hold(CapschedPolicy(config, catalog, load_profiles()))
        self.rec: Reconciler = build_scheduler(
            config,
            provider=self.faulty,
            metrics=self.metrics,
            store=self.store,
            policy=self.policy,
            catalog=catalog,
            sleep=self.sleep,
        )
        self.now = 0.0

    async def tick(self, rps: float) -> TickReport:
        self.metrics.rps = rps
        self.now += TICK_S
        self.cloud.advance_to(self.now)
        return await self.rec.tick(self.now)


def serving_by_placement(store: StateStore) -> Counter[tuple[str, str]]:
    return Counter(
        (n.model, n.pool.key)
        for n in store.live_nodes()
        if n.state in (NodeState.REQUESTED, NodeState.BOOTING, NodeState.READY)
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_fleet_converges_and_never_duplicates_under_faults(tmp_path: Path, seed: int) -> None:
    w = World(tmp_path, seed)
    reports = [await w.tick(rps) for rps in SCRIPT]
    reports += [await w.tick(SCRIPT[-1]) for _ in range(STEADY_TICKS)]
    last = next(r.plan for r in reversed(reports) if r.plan is not None)
    assert last is not None
    w.policy.freeze(last)
    reports += [await w.tick(SCRIPT[-1]) for _ in range(HOLD_TICKS)]

    # The faults did strike, every kind of them.
    injected = {kind for (_, kind) in w.faulty.injected}
    assert {"Transient", "InsufficientCapacity", "QuotaExceeded", "lost reply"} <= injected
    assert sum(1 for r in reports if r.plan is None) > 0  # some ticks lost their listing
    assert w.cloud.counters.launches > 10 and w.cloud.counters.terminations > 0  # it scaled

    # Converged: every node the plan wants is serving, and nothing else is.
    assert last.unmet == ()
    want = Counter({(p.model, p.pool.key): p.count for p in last.placements})
    assert serving_by_placement(w.store) == want
    assert {n.state for n in w.store.live_nodes()} == {NodeState.READY}

    # No duplicate: one instance per node id, one node id per instance, launches counted
    # by the cloud equal the distinct node ids it created an instance for.
    listed = await w.cloud.list_instances()
    live_cloud = [i for i in listed if i.state in (InstanceState.PENDING, InstanceState.RUNNING)]
    assert len({i.node_id for i in listed}) == len(listed)
    assert len({i.cloud_instance_id for i in listed}) == len(listed)
    assert all(len(ids) == 1 for ids in w.faulty.launched.values())
    assert w.cloud.counters.launches == len(w.faulty.launched)
    # No leak: every live cloud instance is a live node of ours, and the other way round.
    live_store = {n.node_id for n in w.store.live_nodes()}
    assert {i.node_id for i in live_cloud} == live_store
    print(
        f"\nfaults seed={seed}: launches={w.cloud.counters.launches}"
        f" terminations={w.cloud.counters.terminations} injected={sum(w.faulty.injected.values())}"
        f" skipped_ticks={sum(1 for r in reports if r.plan is None)}"
        f" backoff_s={w.sleep.slept_s:.0f} serving={sum(want.values())}"
    )


async def test_lost_launch_reply_is_adopted_not_relaunched(tmp_path: Path) -> None:
    w = World(tmp_path, seed=0)
    # Every launch reaches the cloud, every reply is lost (retries included).
    w.faulty.faults = {"launch": Fault(1.0, (Transient,), lost_reply_share=1.0)}
    report = await w.tick(20.0)
    assert any("Transient" in e.text for e in report.errors)
    requested = {n.node_id for n in w.store.live_nodes()}
    assert requested and all(n.state is NodeState.REQUESTED for n in w.store.live_nodes())
    launches = w.cloud.counters.launches
    w.faulty.faults = {}
    await w.tick(20.0)
    await w.tick(20.0)
    # The next observations found the instances by node id: no second launch for them.
    assert {n.node_id for n in w.store.live_nodes()} == requested
    assert w.cloud.counters.launches == launches == len(requested)
    assert {n.state for n in w.store.live_nodes()} == {NodeState.READY}


async def test_fault_draws_repeat_per_seed_and_method() -> None:
    catalog = load_catalog()
    pool = catalog.offerings[0].pool

    async def run(seed: int, list_calls: int) -> list[bool]:
        cloud = SimCloud(catalog.offerings, catalog.instance_types)
        p = FaultyProvider(cloud, {"launch": Fault(0.5)}, seed=seed)
        for _ in range(list_calls):
            await p.list_instances()
        out = []
        for i in range(40):
            try:
                await p.launch(LaunchRequest(f"n{i}", SMALL, pool))
                out.append(True)
            except Transient:
                out.append(False)
        return out

    a = await run(7, 0)
    assert a == await run(7, 5)  # other methods' calls do not shift the launch stream
    assert a != await run(8, 0)
    assert 5 < a.count(False) < 35
    with pytest.raises(ValueError, match="lunch"):
        FaultyProvider(SimCloud(catalog.offerings, catalog.instance_types), {"lunch": Fault(0.1)})


async def test_instance_listed_after_its_launch_failed_is_terminated(tmp_path: Path) -> None:
    # A launch whose first reply was lost and whose retry was refused: the node is
    # FAILED in the store, but the cloud created the instance.
    w = World(tmp_path, seed=0)
    w.faulty.faults = {}
    await w.tick(20.0)
    pool = w.store.live_nodes()[0].pool
    node = Node("cs-orphan", SMALL, pool, NodeState.REQUESTED, launched_at_s=w.now)
    w.store.add_node(node, w.now, cause="test")
    w.store.transition("cs-orphan", NodeState.FAILED, w.now, "launch refused: test")
    await w.cloud.launch(LaunchRequest("cs-orphan", SMALL, pool))
    report = await w.tick(20.0)
    assert any(isinstance(a, Terminate) and a.node_id == "cs-orphan" for a in report.actions)
    assert not any(e.node_id == "cs-orphan" and e.kind is ErrorKind.ACTION for e in report.errors)
    assert "cs-orphan" not in {i.node_id for i in await w.cloud.list_instances()}
    assert w.store.journal("pending") == []
    assert w.store.node("cs-orphan").state is NodeState.FAILED  # type: ignore[union-attr]


async def test_a_refused_launch_keeps_the_nodes_its_pool_already_runs(tmp_path: Path) -> None:
    # A capacity or quota error cools the pool down: no new launches there, but the
    # healthy nodes it runs are no reason to move (make-before-break churn for nothing).
    w = World(tmp_path, seed=0)
    w.faulty.faults = {}
    await w.tick(20.0)
    await w.tick(20.0)
    before = serving_by_placement(w.store)
    pool = max(w.store.live_nodes(), key=lambda n: before[n.model, n.pool.key]).pool
    w.rec.cooldown.until[pool] = w.now + 3600.0
    report = await w.tick(40.0)  # more load: the plan grows, elsewhere
    assert report.plan is not None
    kept = {(p.model, p.pool.key): p.count for p in report.plan.placements if p.pool == pool}
    assert kept == {k: n for k, n in before.items() if k[1] == pool.key}
    assert not any(
        isinstance(a, Launch) and a.pool == pool for a in report.actions
    )  # and nothing new there
    assert not any(isinstance(a, Drain) for a in report.actions)
