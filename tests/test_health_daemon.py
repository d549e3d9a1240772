"""Node health through a real `Daemon` wired as `run_daemon` wires it: the `[health]`
section builds the HTTP health probe in the composition root
(`capsched.service.ConfiguredHealthProbe`), every simulated node is listed at
127.0.0.1, where a local aiohttp server stands in for its model server, one behaviour
per node: healthy, slow to load, never healthy, turning unhealthy, flapping.

The daemon ticks and checks health on a clock the test moves; no test waits on the
wall clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from fakes import Clock, no_sleep

from adapters.sim import SimCloud
from capsched.service import ConfiguredHealthProbe, build_drainer, stored_address
from scheduler.config import Config, load_config
from scheduler.decide.observation import Observation, PolicyBase
from scheduler.domain import (
    Cloud,
    HoldKind,
    Market,
    NodeState,
    Placement,
    Plan,
    PlanStatus,
    Pool,
)
from scheduler.fleet.catalog import load_catalog
from scheduler.loop.factory import build_scheduler
from scheduler.loop.reconciler import Reconciler, TickReport
from scheduler.loop.store import StateStore
from scheduler.ports.metrics import DemandSample
from scheduler.service.daemon import Daemon
from scheduler.service.telemetry import Telemetry

MODEL, REGION = "llama-3.1-8b", "us-east"
POOL = Pool(Cloud.AWS, "us-east-1", "", "g6e.xlarge", Market.ON_DEMAND)
OTHER = Pool(Cloud.AWS, "us-east-1", "", "g6e.2xlarge", Market.ON_DEMAND)
TICK_S = 300.0
CHECK_S = 10.0  # [health].interval_s
BOOT_S = 120.0  # planning.default_boot_time_s
MARGIN_S = 60.0  # [health].boot_margin_s

CONFIG = """
[scheduler]
tick_interval_s = 300
state_db = "{db}"
[planning]
default_boot_time_s = 120
[daemon]
api_port = 0
[guards]
min_node_age_s = 0
pool_cooldown_s = 900
[health]
enabled = {enabled}
url = "http://{{host}}:{port}/nodes/{{node_id}}/health"
interval_s = 10
success_threshold = {success}
failure_threshold = 3
boot_margin_s = 60
max_replacements = {max_replacements}
max_unhealthy_fraction = {fraction}
quarantine_strikes = 2
[[models]]
name = "llama-3.1-8b"
min_replicas = 0
[[regions]]
name = "us-east"
location = "us-east-1"
[clouds.aws]
regions = ["us-east-1"]
[clouds.gcp]
enabled = false
"""


class Wants(PolicyBase):
    """A policy that wants `count` nodes in the first available pool of `pools`."""

    name = "wants"

    def __init__(self, count: int, pools: tuple[Pool, ...] = (POOL, OTHER)) -> None:
        self.count = count  # nodes wanted
        self.pools = pools  # preference order; a cooled pool is skipped

    def decide(self, obs: Observation) -> Plan:
        available = {o.pool for o in obs.offerings if o.available}
        pool = next((p for p in self.pools if p in available), None)
        placements = (Placement(MODEL, pool, self.count),) if self.count and pool else ()
        return Plan(PlanStatus.OPTIMAL, placements, 0.0, 0.0, 0.0, 0.0)


class Metrics:
    async def demand(self, now_s: float) -> DemandSample:
        return DemandSample(now_s, {(MODEL, REGION): 1.0})


@dataclass
class ModelServers:
    """Every node's /health, answered from a per-node script of statuses (the last one
    repeats); nodes without a script answer `default`."""

    default: list[int] = field(default_factory=lambda: [200])
    scripts: dict[str, list[int]] = field(default_factory=dict)  # node id -> statuses
    checks: list[str] = field(default_factory=list)  # node ids, one per check
    port: int = 0

    def script(self, node_id: str, *statuses: int) -> None:
        self.scripts[node_id] = list(statuses)

    async def health(self, request: web.Request) -> web.Response:
        node_id = request.match_info["node"]
        self.checks.append(node_id)
        script = self.scripts.setdefault(node_id, list(self.default))
        status = script.pop(0) if len(script) > 1 else script[0]
        return web.Response(status=status, text="ok" if status == 200 else "loading")


@pytest.fixture
async def servers() -> AsyncIterator[ModelServers]:
    fake = ModelServers()
    app = web.Application()
    app.router.add_get("/nodes/{node}/health", fake.health)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    fake.port = int(server.port or 0)
    try:
        yield fake
    finally:
        await server.close()


@dataclass
class Harness:
    daemon: Daemon
    cloud: SimCloud
    policy: Wants
    clock: Clock
    probe: ConfiguredHealthProbe
    telemetry: Telemetry

    @property
    def store(self) -> StateStore:
        return self.daemon.store

    @property
    def reconciler(self) -> Reconciler:
        return self.daemon.reconciler

    async def tick_at(self, now_s: float) -> TickReport:
        self.clock.now = now_s
        report = await self.daemon.tick_once()
        assert report is not None
        return report

    async def check_at(self, now_s: float) -> None:
        self.clock.now = now_s
        await self.daemon.health_once()

    def states(self) -> dict[str, NodeState]:
        return {n.node_id: n.state for n in self.store.live_nodes()}

    def state(self, node_id: str) -> NodeState:
        node = self.store.node(node_id)
        assert node is not None
        return node.state

    def terminated(self) -> list[str]:
        return [arg for method, arg in self.cloud.calls if method == "terminate"]

    def launched(self) -> list[str]:
        return [arg for method, arg in self.cloud.calls if method == "launch"]

    def metric(self, name: str, **labels: str) -> float:
        value = self.telemetry.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@pytest.fixture
async def harness(tmp_path: Path, servers: ModelServers) -> AsyncIterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(
        count: int = 2,
        *,
        enabled: bool = True,
        success: int = 1,
        max_replacements: int = 3,
        fraction: float = 1.0,
    ) -> Harness:
        path = tmp_path / "capsched.toml"
        path.write_text(
            CONFIG.format(
                db=tmp_path / f"state{len(made)}.db",
                enabled=str(enabled).lower(),
                port=servers.port,
                success=success,
                max_replacements=max_replacements,
                fraction=fraction,
            )
        )
        config: Config = load_config(path)
        catalog = load_catalog()
        # Running at once (no boot delay): only the health check makes a node ready.
        cloud = SimCloud(
            catalog.offerings, catalog.instance_types, boot_time_s=0, node_address="127.0.0.1"
        )
        store = StateStore(config.scheduler.state_db)
        policy = Wants(count)
        drainer = build_drainer(lambda: reconciler.config, store)
        probe = ConfiguredHealthProbe(
            lambda: reconciler.config.health_checks, stored_address(store)
        )
        reconciler: Reconciler = build_scheduler(
            config,
            provider=cloud,
            metrics=Metrics(),
            store=store,
            policy=policy,
            drainer=drainer,
            catalog=catalog,
            sleep=no_sleep,
            health_probe=probe,
        )
        clock = Clock()

        async def advance(now_s: float) -> None:
            cloud.advance_to(now_s)

        telemetry = Telemetry()
        daemon = Daemon(
            config=config,
            config_path=path,
            reconciler=reconciler,
            store=store,
            clock=clock,
            advance=advance,
            telemetry=telemetry,
        )
        h = Harness(daemon, cloud, policy, clock, probe, telemetry)
        made.append(h)
        return h

    yield make
    for h in made:
        await h.probe.close()
        h.store.close()


async def test_a_node_is_ready_only_once_its_model_server_answers(
    harness: Callable[..., Harness], servers: ModelServers
) -> None:
    h = harness(count=1, success=2)
    await h.tick_at(0.0)  # launched; the cloud says running at once
    [node_id] = h.states()
    servers.script(node_id, 503, 503, 200)  # slow to load: two checks loading, then up
    assert h.state(node_id) is NodeState.BOOTING
    await h.check_at(CHECK_S)  # 503
    await h.check_at(2 * CHECK_S)  # 503
    assert h.state(node_id) is NodeState.BOOTING
    await h.check_at(3 * CHECK_S)  # 200: one pass of the two needed
    assert h.state(node_id) is NodeState.BOOTING
    await h.check_at(4 * CHECK_S)  # 200 again: ready
    assert h.state(node_id) is NodeState.READY
    causes = [e["cause"] for e in h.store.events(node_id)]
    assert causes[-1] == "health check passed: serving"
    assert h.terminated() == []


async def test_without_health_a_running_node_is_ready_at_once(
    harness: Callable[..., Harness], servers: ModelServers
) -> None:
    h = harness(count=1, enabled=False)
    servers.default = [503]  # would never pass: nobody asks
    await h.tick_at(0.0)
    [node_id] = h.states()
    assert h.state(node_id) is NodeState.READY
    await h.check_at(CHECK_S)
    assert servers.checks == []


async def test_a_node_never_healthy_fails_at_its_deadline_is_replaced_and_strikes_its_pool(
    harness: Callable[..., Harness], servers: ModelServers
) -> None:
    h = harness(count=1)
    servers.default = [503]  # every node in the pool never loads
    await h.tick_at(0.0)
    [first] = h.states()
    t = 0.0
    while t < BOOT_S + MARGIN_S - CHECK_S:
        t += CHECK_S
        await h.check_at(t)
    assert h.state(first) is NodeState.BOOTING  # still within its deadline
    await h.check_at(BOOT_S + MARGIN_S)
    assert h.state(first) is NodeState.FAILED
    # The failure woke the loop: the tick terminates it and launches a replacement.
    report = await h.tick_at(BOOT_S + MARGIN_S)
    assert first in h.terminated()
    [second] = [n for n in h.states() if n != first]
    assert h.store.node(second).pool == POOL  # type: ignore[union-attr]
    assert h.metric("capsched_boot_failures_total", pool=POOL.key) == 1
    assert report.errors == ()
    # The second boot failure in the pool within the window quarantines it.
    t0 = BOOT_S + MARGIN_S
    await h.check_at(t0 + BOOT_S + MARGIN_S)
    assert h.state(second) is NodeState.FAILED
    report = await h.tick_at(t0 + BOOT_S + MARGIN_S)
    assert report.plan is not None
    assert any(f"quarantined {POOL.key}" in note for note in report.plan.notes)
    [third] = [n for n in h.states() if n not in (first, second)]
    assert h.store.node(third).pool == OTHER  # type: ignore[union-attr]
    assert h.metric("capsched_pool_quarantined", pool=POOL.key) == 1
    assert h.metric("capsched_boot_failures_total", pool=POOL.key) == 2


async def up(h: Harness, n: int) -> list[str]:
    """Launch `n` nodes and let their first check make them ready."""
    await h.tick_at(0.0)
    await h.check_at(CHECK_S)
    ids = sorted(h.states())
    assert len(ids) == n and all(s is NodeState.READY for s in h.states().values())
    return ids


async def test_a_sick_node_is_replaced_first_then_drained_and_terminated(
    harness: Callable[..., Harness], servers: ModelServers
) -> None:
    h = harness(count=2)
    sick, well = await up(h, 2)
    servers.script(sick, 500)  # turns unhealthy: its GPU died
    for k in (2, 3):
        await h.check_at(k * CHECK_S)
    assert h.state(sick) is NodeState.READY  # two fails: not yet
    await h.check_at(4 * CHECK_S)
    assert h.state(sick) is NodeState.UNHEALTHY
    assert h.metric("capsched_nodes", model=MODEL, pool=POOL.key, market="on-demand",
                    state="unhealthy") == 1  # fmt: skip
    # The wake-up tick launches the replacement and keeps the sick node (make before break).
    await h.tick_at(4 * CHECK_S)
    new = [n for n in h.states() if n not in (sick, well)]
    assert len(new) == 1
    assert h.state(new[0]) is NodeState.BOOTING
    assert h.state(sick) is NodeState.UNHEALTHY
    assert sick not in h.terminated()
    # The replacement passes its check; the next tick drains the sick node, the one
    # after terminates it.
    await h.check_at(5 * CHECK_S)
    assert h.state(new[0]) is NodeState.READY
    await h.tick_at(TICK_S)
    assert h.state(sick) is NodeState.DRAINING
    await h.tick_at(2 * TICK_S)
    assert sick in h.terminated()
    assert h.state(sick) in (NodeState.TERMINATING, NodeState.GONE)
    assert well not in h.terminated()
    assert h.metric("capsched_health_replacements_total", pool=POOL.key) == 1


async def test_a_flapping_node_is_not_replaced_and_a_recovered_one_returns(
    harness: Callable[..., Harness], servers: ModelServers
) -> None:
    h = harness(count=2)
    flappy, other = await up(h, 2)
    servers.script(flappy, 500, 500, 200, 500, 500, 200, 500, 500, 200)
    for k in range(2, 11):
        await h.check_at(k * CHECK_S)
        assert h.state(flappy) is NodeState.READY  # never three fails in a row
    # Sick, then well again before its replacement served: back in service.
    servers.script(other, 500, 500, 500, 200)
    for k in range(11, 14):
        await h.check_at(k * CHECK_S)
    assert h.state(other) is NodeState.UNHEALTHY
    await h.check_at(14 * CHECK_S)
    assert h.state(other) is NodeState.READY
    assert h.terminated() == []


async def test_the_replacement_limit_holds_when_every_check_fails_at_once(
    harness: Callable[..., Harness], servers: ModelServers
) -> None:
    h = harness(count=6, fraction=0.2)
    ids = await up(h, 6)
    servers.scripts.clear()
    servers.default = [500]  # the health endpoint broke everywhere
    for k in range(2, 8):
        await h.check_at(k * CHECK_S)
    report = await h.tick_at(TICK_S)
    assert all(h.state(n) is NodeState.READY for n in ids)  # kept as capacity
    assert h.terminated() == []
    assert len(h.launched()) == 6  # no replacement launched
    held = [x for x in report.held_back if x.kind is HoldKind.REPAIR_LIMIT]
    assert [x.nodes for x in held] == [6]
    assert h.metric("capsched_health_repairs_held") == 6
    assert h.metric("capsched_guard_holds_total", guard="repair_limit") >= 1


async def test_at_most_max_replacements_per_window(
    harness: Callable[..., Harness], servers: ModelServers
) -> None:
    h = harness(count=4, max_replacements=1)
    ids = await up(h, 4)
    for n in ids[:2]:
        servers.script(n, 500)
    for k in range(2, 5):
        await h.check_at(k * CHECK_S)
    states = [h.state(n) for n in ids]
    assert states.count(NodeState.UNHEALTHY) == 1
    report = await h.tick_at(4 * CHECK_S)
    held = [x for x in report.held_back if x.kind is HoldKind.REPAIR_LIMIT]
    assert [x.nodes for x in held] == [1]
