"""Node health through a real `Daemon` wired as `run_daemon` wires it: the `[health]`
section builds the HTTP health probe in the composition root
(`capsched.service.ConfiguredHealthProbe`), every simulated node is listed at
127.0.0.1, where a local aiohttp server stands in for its model server, one behaviour
per node: healthy, slow to load, never healthy, turning unhealthy, flapping.

The daemon ticks and checks health on a clock the test moves; no test waits on the
wall clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import builders
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
    Node,
    NodeState,
    Placement,
    Plan,
    PlanStatus,
    Pool,
)
from scheduler.fleet.boot import node_boot_s
from scheduler.fleet.catalog import load_catalog
from scheduler.loop.factory import build_scheduler
from scheduler.loop.reconciler import Reconciler, TickReport
from scheduler.loop.store import StateStore
from scheduler.ports.metrics import DemandSample, NodeSignals, SignalQuery
from scheduler.service.daemon import Daemon
from scheduler.service.telemetry import Telemetry

MODEL, REGION = "llama-3.1-8b", "us-east"
BIG = "llama-3.1-70b"  # a slow-loading model (with `big=True`)
POOL = Pool(Cloud.AWS, "us-east-1", "", "g6e.xlarge", Market.ON_DEMAND)
OTHER = Pool(Cloud.AWS, "us-east-1", "", "g6e.2xlarge", Market.ON_DEMAND)
BIG_POOL = Pool(Cloud.AWS, "us-east-1", "", "g6e.12xlarge", Market.ON_DEMAND)  # 4 x L40S
TICK_S = 300.0
CHECK_S = 10.0  # [health].interval_s
DEFAULT_BOOT_S = 120.0  # planning.default_boot_time_s: only the fallback
# The boot estimate of an 8B node in POOL (and OTHER): its deadline is this + margin.
BOOT_S = node_boot_s(builders.config(), MODEL, load_catalog().instance_type(POOL))
MARGIN_S = 60.0  # [health].boot_margin_s

CONFIG = """
[scheduler]
tick_interval_s = 300
state_db = "{db}"
[planning]
default_boot_time_s = {default_boot_s}
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
{health_extra}
[[models]]
name = "llama-3.1-8b"
min_replicas = 0
{big_model}
[[regions]]
name = "us-east"
location = "us-east-1"
[clouds.aws]
regions = ["us-east-1"]
[clouds.gcp]
enabled = false
"""


class Wants(PolicyBase):
    """A policy that wants `count` nodes of `model` in the first available pool of `pools`."""

    name = "wants"

    def __init__(
        self, count: int, pools: tuple[Pool, ...] = (POOL, OTHER), model: str = MODEL
    ) -> None:
        self.count = count  # nodes wanted
        self.pools = pools  # preference order; a cooled pool is skipped
        self.model = model  # the model of every node

    def decide(self, obs: Observation) -> Plan:
        available = {o.pool for o in obs.offerings if o.available}
        pool = next((p for p in self.pools if p in available), None)
        placements = (Placement(self.model, pool, self.count),) if self.count and pool else ()
        return Plan(PlanStatus.OPTIMAL, placements, 0.0, 0.0, 0.0, 0.0)


class Metrics:
    def __init__(self, models: tuple[str, ...] = (MODEL,)) -> None:
        self.models = models  # every configured model reports load

    async def demand(self, now_s: float) -> DemandSample:
        return DemandSample(now_s, {(m, REGION): 1.0 for m in self.models})


@dataclass
class FakeSignals:
    """A metrics source's per-node signals, set by the test; the queries it was asked."""

    by_node: dict[str, NodeSignals] = field(default_factory=dict)  # node id -> readings
    queries: list[SignalQuery] = field(default_factory=list)

    async def node_signals(
        self, now_s: float, nodes: Sequence[Node], query: SignalQuery
    ) -> Mapping[str, NodeSignals]:
        self.queries.append(query)
        return {n.node_id: self.by_node[n.node_id] for n in nodes if n.node_id in self.by_node}


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
        default_boot_s: float = DEFAULT_BOOT_S,
        big: bool = False,
        restart_of: Harness | None = None,
        signals: FakeSignals | None = None,
        health_extra: str = "",
    ) -> Harness:
        """A daemon; `restart_of`: a new daemon on that one's state database and cloud,
        as after the process was killed (nothing is shut down cleanly: its store is only
        closed)."""
        if restart_of is not None:
            restart_of.store.close()
        path = tmp_path / "capsched.toml"
        path.write_text(
            CONFIG.format(
                db=restart_of.daemon.config.scheduler.state_db
                if restart_of is not None
                else tmp_path / f"state{len(made)}.db",
                enabled=str(enabled).lower(),
                port=servers.port,
                success=success,
                max_replacements=max_replacements,
                fraction=fraction,
                default_boot_s=default_boot_s,
                health_extra=health_extra,
                big_model=f'[[models]]\nname = "{BIG}"\nmin_replicas = 0' if big else "",
            )
        )
        config: Config = load_config(path)
        catalog = load_catalog()
        # Running at once (no boot delay): only the health check makes a node ready.
        cloud = (
            restart_of.cloud
            if restart_of is not None
            else SimCloud(
                catalog.offerings, catalog.instance_types, boot_time_s=0, node_address="127.0.0.1"
            )
        )
        store = StateStore(config.scheduler.state_db)
        policy = Wants(count, (BIG_POOL,), BIG) if big else Wants(count)
        drainer = build_drainer(lambda: reconciler.config, store)
        probe = ConfiguredHealthProbe(
            lambda: reconciler.config.health_checks, stored_address(store)
        )
        reconciler: Reconciler = build_scheduler(
            config,
            provider=cloud,
            metrics=Metrics((MODEL, BIG) if big else (MODEL,)),
            store=store,
            policy=policy,
            drainer=drainer,
            catalog=catalog,
            sleep=no_sleep,
            health_probe=probe,
            node_signals=signals,
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


async def checks_until(h: Harness, end_s: float, start_s: float = 0.0) -> None:
    """Health checks every CHECK_S after `start_s` up to and including `end_s`."""
    t = start_s
    while t + CHECK_S < end_s:
        t += CHECK_S
        await h.check_at(t)
    await h.check_at(end_s)


async def test_a_slow_loading_big_node_is_not_failed_at_the_default_boot_time(
    harness: Callable[..., Harness], servers: ModelServers
) -> None:
    # A 70B node on a 4-GPU type loads its weights for minutes: its own estimate is far
    # longer than the configured fallback, and the deadline follows the estimate.
    h = harness(count=1, default_boot_s=300.0, big=True)
    servers.default = [503]
    await h.tick_at(0.0)
    [node_id] = h.states()
    node = h.store.node(node_id)
    assert node is not None and node.model == BIG and node.pool == BIG_POOL
    boot_s = node_boot_s(h.reconciler.config, BIG, load_catalog().instance_type(BIG_POOL))
    assert boot_s > 300.0 + CHECK_S
    await checks_until(h, 300.0 + MARGIN_S + CHECK_S)  # past default + margin
    assert h.state(node_id) is NodeState.BOOTING
    await checks_until(h, boot_s + MARGIN_S - 1.0, 300.0 + MARGIN_S + CHECK_S)
    assert h.state(node_id) is NodeState.BOOTING
    await h.check_at(boot_s + MARGIN_S)
    assert h.state(node_id) is NodeState.FAILED
    causes = [e["cause"] for e in h.store.events(node_id)]
    assert causes[-1] == f"not healthy {boot_s + MARGIN_S:.0f} s after it started booting"


async def test_a_quick_booting_node_is_failed_before_the_default_boot_time(
    harness: Callable[..., Harness], servers: ModelServers
) -> None:
    # An 8B node boots in minutes: with a 900 s fallback configured, it is still failed
    # at its own estimate plus margin, not at 900 s + margin.
    h = harness(count=1, default_boot_s=900.0)
    servers.default = [503]
    await h.tick_at(0.0)
    [node_id] = h.states()
    assert BOOT_S + MARGIN_S < 900.0
    await checks_until(h, BOOT_S + MARGIN_S - 1.0)
    assert h.state(node_id) is NodeState.BOOTING
    await h.check_at(BOOT_S + MARGIN_S)
    assert h.state(node_id) is NodeState.FAILED


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


async def test_a_restarted_daemon_keeps_a_quarantined_pool_out(
    harness: Callable[..., Harness], servers: ModelServers
) -> None:
    h = harness(count=1)
    servers.default = [503]  # every node in the pool never loads
    await h.tick_at(0.0)
    [first] = h.states()
    await checks_until(h, BOOT_S + MARGIN_S)
    assert h.state(first) is NodeState.FAILED
    t0 = BOOT_S + MARGIN_S
    await h.tick_at(t0)  # its replacement, in the same pool
    [second] = [n for n in h.states() if n != first]
    await checks_until(h, 2 * t0, t0)
    assert h.state(second) is NodeState.FAILED  # the second strike: POOL quarantined
    # Killed before it acted on the quarantine; a new daemon on the same database.
    h2 = harness(count=1, restart_of=h)
    report = await h2.tick_at(2 * t0)
    assert report.plan is not None
    assert any(f"quarantined {POOL.key}" in note for note in report.plan.notes)
    [third] = [n for n in h2.states() if n not in (first, second)]
    assert h2.store.node(third).pool == OTHER  # type: ignore[union-attr]
    assert second in h2.terminated()  # the failed node is still terminated...
    assert report.errors == ()  # ...as an expected orphan, not an error
    # Still out a while later: the cooldown's end came from the store too.
    await h2.tick_at(2 * t0 + TICK_S)
    assert {h2.store.node(n).pool for n in h2.states()} == {OTHER}  # type: ignore[union-attr]


async def test_a_restarted_daemon_continues_streaks_and_boot_deadlines(
    harness: Callable[..., Harness], servers: ModelServers
) -> None:
    h = harness(count=2)
    sick, well = await up(h, 2)
    servers.script(sick, 500)
    for k in (2, 3):  # two fails of the three that make it unhealthy
        await h.check_at(k * CHECK_S)
    assert h.state(sick) is NodeState.READY
    h.policy.count = 3
    await h.tick_at(3 * CHECK_S)  # a third node starts booting; it never loads
    [slow] = [n for n in h.states() if n not in (sick, well)]
    servers.script(slow, 503)
    h2 = harness(count=3, restart_of=h)
    await h2.check_at(4 * CHECK_S)  # the third fail in a row, across the restart
    assert h2.state(sick) is NodeState.UNHEALTHY
    assert h2.state(well) is NodeState.READY
    # The booting node's deadline still counts from when it started booting.
    await checks_until(h2, 3 * CHECK_S + BOOT_S + MARGIN_S - 1.0, 4 * CHECK_S)
    assert h2.state(slow) is NodeState.BOOTING
    await h2.check_at(3 * CHECK_S + BOOT_S + MARGIN_S)
    assert h2.state(slow) is NodeState.FAILED


async def test_a_restarted_daemon_keeps_the_replacement_window(
    harness: Callable[..., Harness], servers: ModelServers
) -> None:
    h = harness(count=3, max_replacements=1)
    first, second, _ = await up(h, 3)
    servers.script(first, 500)
    for k in range(2, 5):
        await h.check_at(k * CHECK_S)
    assert h.state(first) is NodeState.UNHEALTHY  # the one replacement of the window
    h2 = harness(count=3, max_replacements=1, restart_of=h)
    servers.script(second, 500)
    for k in range(5, 8):
        await h2.check_at(k * CHECK_S)
    assert h2.state(second) is NodeState.READY  # held: the window is full
    assert h2.metric("capsched_health_repairs_held") == 1


GPU_SIGNALS = 'gpu_signals = true\nnode_label = "node"\nnode_label_value = "{node_id}"'


async def test_a_gpu_fault_replaces_a_node_whose_health_endpoint_still_answers(
    harness: Callable[..., Harness], servers: ModelServers
) -> None:
    signals = FakeSignals()
    h = harness(count=2, signals=signals, health_extra=GPU_SIGNALS)
    bad, well = await up(h, 2)
    signals.by_node[bad] = NodeSignals(xid=79, running_max=0, waiting=0)  # fell off the bus
    signals.by_node[well] = NodeSignals(xid=0, ecc_dbe_increase=0, running_max=4)
    await h.check_at(2 * CHECK_S)  # /health still 200: only the GPU signal says sick
    assert h.state(bad) is NodeState.UNHEALTHY
    assert h.state(well) is NodeState.READY
    assert h.store.events(bad)[-1]["cause"] == "GPU fault: Xid 79 reported: replacing it"
    assert signals.queries[-1] == SignalQuery("node", "{node_id}", 300.0, "")
    # Make before break, as for a failed check: replacement first, then the drain.
    await h.tick_at(2 * CHECK_S)
    [new] = [n for n in h.states() if n not in (bad, well)]
    await h.check_at(3 * CHECK_S)
    assert h.state(new) is NodeState.READY
    assert h.state(bad) is NodeState.UNHEALTHY  # its GPU still reports the Xid
    await h.tick_at(TICK_S)
    assert h.state(bad) is NodeState.DRAINING
    assert h.metric("capsched_health_replacements_total", pool=POOL.key) == 1


async def test_gpu_signals_are_not_read_unless_configured(
    harness: Callable[..., Harness], servers: ModelServers
) -> None:
    signals = FakeSignals()
    h = harness(count=1, signals=signals)
    [node_id] = await up(h, 1)
    signals.by_node[node_id] = NodeSignals(xid=79)
    await h.check_at(2 * CHECK_S)
    assert h.state(node_id) is NodeState.READY
    assert signals.queries == []
