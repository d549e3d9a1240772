"""Draining over HTTP through the daemon's own wiring: `[drain] kind = "http"` builds the
HTTP drainer in the composition root (`capsched.service.build_drainer`), nodes resolve
to the address the simulated cloud lists (a local server here), and the daemon ticks on
a clock the test moves.

A fake router receives the deregistration hook; a fake vLLM `/metrics` page reports the
drained node's running requests going 3 -> 1 -> 0. No test waits on the wall clock.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from fakes import Clock, no_sleep

from adapters.sim import SimCloud
from capsched.service import (
    ConfiguredDrainer,
    _no_userinfo,
    build_drainer,
    stored_address,
    url_host,
)
from scheduler.config import Config, load_config
from scheduler.decide.decision import ErrorKind
from scheduler.decide.observation import Observation, PolicyBase
from scheduler.domain import Cloud, Market, Node, NodeState, Placement, Plan, PlanStatus, Pool
from scheduler.fleet.catalog import load_catalog
from scheduler.loop.factory import build_scheduler
from scheduler.loop.reconciler import Reconciler
from scheduler.loop.store import StateStore
from scheduler.ports.metrics import DemandSample
from scheduler.service.daemon import Daemon

MODEL, REGION = "llama-3.1-8b", "us-east"
POOL = Pool(Cloud.AWS, "us-east-1", "", "g6e.xlarge", Market.ON_DEMAND)
SECRET = "s3cret-hook-password"
TICK_S = 60.0
DRAIN_TIMEOUT_S = 300.0

CONFIG = """
[scheduler]
tick_interval_s = 60
state_db = "{db}"
[daemon]
api_port = 0
[guards]
min_node_age_s = 0
drain_timeout_s = 300
[drain]
kind = "{kind}"
hook_url = "http://router:{secret}@127.0.0.1:{router}/admin/deregister?node={{node_id}}"
metrics_url = "http://{{host}}:{node_port}/nodes/{{node_id}}/metrics"
in_flight_metrics = ["vllm:num_requests_running"]
hook_retries = 0
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
    """A policy that wants `count` nodes in one pool; the test changes `count`."""

    name = "wants"

    def __init__(self, count: int) -> None:
        self.count = count  # nodes wanted in POOL

    def decide(self, obs: Observation) -> Plan:
        placements = (Placement(MODEL, POOL, self.count),) if self.count else ()
        return Plan(PlanStatus.OPTIMAL, placements, 0.0, 0.0, 0.0, 0.0)


class Metrics:
    async def demand(self, now_s: float) -> DemandSample:
        return DemandSample(now_s, {(MODEL, REGION): 1.0})  # complete: scale-down allowed


@dataclass
class Fleet:
    """The router's admin endpoint and the nodes' vLLM metrics, on two local servers."""

    running: list[int] = field(default_factory=lambda: [3, 1, 0])  # per scrape; then the last
    hook_status: int = 200  # what the router answers
    hooks: list[tuple[str, str, str]] = field(default_factory=list)  # (method, node, auth)
    scrapes: list[str] = field(default_factory=list)  # node ids, one per metrics read
    router_port: int = 0
    node_port: int = 0

    async def deregister(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        self.hooks.append((request.method, request.query.get("node", ""), auth))
        return web.Response(status=self.hook_status, text="deregistered")

    async def metrics(self, request: web.Request) -> web.Response:
        self.scrapes.append(request.match_info["node"])
        n = self.running.pop(0) if len(self.running) > 1 else self.running[0]
        body = (
            "# HELP vllm:num_requests_running Number of requests currently running on GPU.\n"
            "# TYPE vllm:num_requests_running gauge\n"
            f'vllm:num_requests_running{{model_name="{MODEL}"}} {n}.0\n'
        )
        return web.Response(text=body, content_type="text/plain")


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    fake = Fleet()
    router_app, node_app = web.Application(), web.Application()
    router_app.router.add_route("*", "/admin/deregister", fake.deregister)
    node_app.router.add_get("/nodes/{node}/metrics", fake.metrics)
    router, node = TestServer(router_app, host="127.0.0.1"), TestServer(node_app, host="127.0.0.1")
    await router.start_server()
    await node.start_server()
    fake.router_port, fake.node_port = int(router.port or 0), int(node.port or 0)
    try:
        yield fake
    finally:
        await router.close()
        await node.close()


def closed_port() -> int:
    """A port nothing listens on (reads fail at once with 'connection refused')."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Harness:
    """A daemon wired as `run_daemon` wires it, on the simulated cloud and a test clock."""

    daemon: Daemon  # the service under test (ticked by hand)
    cloud: SimCloud  # every node listed at 127.0.0.1
    policy: Wants  # the fleet size the test asks for
    clock: Clock  # daemon time, moved by `tick_at`
    drainer: ConfiguredDrainer  # from `build_drainer`, closed by the fixture
    path: Path  # the config file (reloads rewrite it)
    expect_errors: bool = False  # tick_at lets tick errors through

    @property
    def store(self) -> StateStore:
        return self.daemon.store

    async def tick_at(self, now_s: float) -> tuple[str, ...]:
        """Tick at `now_s`; returns the tick's errors (none unless `expect_errors`)."""
        self.clock.now = now_s
        report = await self.daemon.tick_once()
        assert report is not None
        if not self.expect_errors:
            assert report.errors == (), report
        return report.errors

    def terminated(self) -> list[str]:
        return [arg for method, arg in self.cloud.calls if method == "terminate"]

    def state(self, node_id: str) -> NodeState:
        node = self.store.node(node_id)
        assert node is not None
        return node.state


@pytest.fixture
async def harness(tmp_path: Path, fleet: Fleet) -> AsyncIterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(kind: str = "http", node_port: int | None = None) -> Harness:
        path = tmp_path / "capsched.toml"
        path.write_text(
            CONFIG.format(
                db=tmp_path / "state.db",
                kind=kind,
                secret=SECRET,
                router=fleet.router_port,
                node_port=fleet.node_port if node_port is None else node_port,
            )
        )
        config: Config = load_config(path)
        catalog = load_catalog()
        # Every simulated node is reachable at 127.0.0.1, where the fake metrics page is.
        cloud = SimCloud(
            catalog.offerings, catalog.instance_types, boot_time_s=0, node_address="127.0.0.1"
        )
        store = StateStore(config.scheduler.state_db)
        policy = Wants(2)
        # Wired as `run_daemon` wires it: the drainer follows the reconciler's config.
        drainer = build_drainer(lambda: reconciler.config, store)
        reconciler: Reconciler = build_scheduler(
            config,
            provider=cloud,
            metrics=Metrics(),
            store=store,
            policy=policy,
            drainer=drainer,
            catalog=catalog,
            sleep=no_sleep,
        )
        clock = Clock()

        async def advance(now_s: float) -> None:
            cloud.advance_to(now_s)

        daemon = Daemon(
            config=config,
            config_path=path,
            reconciler=reconciler,
            store=store,
            clock=clock,
            advance=advance,
        )
        h = Harness(daemon, cloud, policy, clock, drainer, path)
        made.append(h)
        return h

    yield make
    for h in made:
        await h.drainer.close()
        h.store.close()


async def start_draining_one(h: Harness) -> str:
    """Two nodes up and listed with their address, then the plan wants one: returns the
    node the daemon drains (at t = 2 ticks)."""
    await h.tick_at(0.0)  # launches two nodes (no boot delay: ready at once)
    await h.tick_at(TICK_S)  # the listing brings their addresses into the store
    assert [n.address for n in h.store.live_nodes()] == ["127.0.0.1", "127.0.0.1"]
    h.policy.count = 1
    await h.tick_at(2 * TICK_S)
    [draining] = [n for n in h.store.live_nodes() if n.state is NodeState.DRAINING]
    return draining.node_id


async def test_node_is_deregistered_once_and_terminated_when_requests_reach_zero(
    harness: Callable[..., Harness], fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    h = harness()
    node_id = await start_draining_one(h)
    auth = "Basic " + base64.b64encode(f"router:{SECRET}".encode()).decode()
    assert fleet.hooks == [("POST", node_id, auth)]

    await h.tick_at(3 * TICK_S)  # 3 requests running
    assert h.state(node_id) is NodeState.DRAINING and node_id not in h.terminated()
    await h.tick_at(4 * TICK_S)  # 1 request running
    assert h.state(node_id) is NodeState.DRAINING and node_id not in h.terminated()
    await h.tick_at(5 * TICK_S)  # 0: done, long before the deadline
    assert h.terminated() == [node_id]
    assert h.state(node_id) in (NodeState.TERMINATING, NodeState.GONE)
    assert fleet.scrapes == [node_id] * 3

    await h.tick_at(6 * TICK_S)
    await h.tick_at(7 * TICK_S)
    assert len(fleet.hooks) == 1  # deregistered exactly once
    assert h.terminated() == [node_id]
    assert [n.state for n in h.store.live_nodes()] == [NodeState.READY]  # the one kept
    assert SECRET not in caplog.text


async def test_unreachable_metrics_terminate_at_the_drain_deadline_not_before(
    harness: Callable[..., Harness], fleet: Fleet
) -> None:
    h = harness(node_port=closed_port())
    node_id = await start_draining_one(h)
    drained_at = 2 * TICK_S
    assert len(fleet.hooks) == 1
    now = drained_at
    while now + TICK_S < drained_at + DRAIN_TIMEOUT_S:
        now += TICK_S
        await h.tick_at(now)  # in flight unknown: keep waiting
        assert h.state(node_id) is NodeState.DRAINING and h.terminated() == []
    await h.tick_at(drained_at + DRAIN_TIMEOUT_S)
    assert h.terminated() == [node_id]
    causes = [e["cause"] for e in h.store.events(node_id)]
    assert causes[-1] == "drain deadline 300 s passed"
    assert len(fleet.hooks) == 1


async def test_a_router_that_refuses_the_hook_still_lets_the_node_drain(
    harness: Callable[..., Harness], fleet: Fleet
) -> None:
    fleet.hook_status = 503
    fleet.running = [0]
    h = harness()
    h.expect_errors = True
    await h.tick_at(0.0)
    await h.tick_at(TICK_S)
    h.policy.count = 1
    errors = await h.tick_at(2 * TICK_S)
    [node_id] = [n.node_id for n in h.store.live_nodes() if n.state is NodeState.DRAINING]
    assert len(fleet.hooks) == 1  # hook_retries = 0
    [error] = errors
    assert error.kind is ErrorKind.ACTION and error.node_id == node_id
    assert error.text.startswith(f"Drain {node_id}: DrainHookError") and "HTTP 503" in error.text
    assert SECRET not in error.text
    # The drain's journal entry is closed as failed, not left pending until a restart.
    assert h.store.journal("pending") == []
    [failed] = [e for e in h.store.journal("failed") if e.kind == "drain"]
    assert failed.node_id == node_id and "HTTP 503" in failed.detail
    assert SECRET not in failed.detail
    assert await h.tick_at(3 * TICK_S) == ()
    assert h.terminated() == [node_id]  # nothing in flight: the failed hook does not hold it


async def test_a_reload_switches_draining_on(harness: Callable[..., Harness], fleet: Fleet) -> None:
    h = harness(kind="none")
    first = await start_draining_one(h)
    await h.tick_at(3 * TICK_S)  # nothing to wait for: terminated at once
    assert h.terminated() == [first] and fleet.hooks == [] and fleet.scrapes == []

    h.path.write_text(h.path.read_text().replace('kind = "none"', 'kind = "http"'))
    assert await h.daemon.reload() == []
    h.policy.count = 0
    await h.tick_at(4 * TICK_S)
    [second] = [n.node_id for n in h.store.live_nodes() if n.state is NodeState.DRAINING]
    assert [node for _, node, _ in fleet.hooks] == [second]
    for t in (5, 6, 7):
        await h.tick_at(t * TICK_S)
    assert h.terminated() == [first, second]  # after 3 -> 1 -> 0
    assert fleet.scrapes == [second] * 3


async def test_a_reload_with_a_bad_template_is_refused_naming_the_key(
    harness: Callable[..., Harness],
) -> None:
    h = harness()
    before = h.daemon.config
    h.path.write_text(h.path.read_text().replace("{node_id}/metrics", "{node}/metrics"))
    problems = await h.daemon.reload()
    assert len(problems) == 1 and "drain.metrics_url" in problems[0]
    assert "unknown placeholder" in problems[0]
    assert h.daemon.config is before


def node(address: str | None = None) -> Node:
    return Node("cs-1", MODEL, POOL, NodeState.DRAINING, "i-1", address=address)


def test_resolver_reads_the_stored_address(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.db")
    try:
        resolve = stored_address(store)
        assert resolve(node()) is None  # unknown: the drainer reports "unknown"
        assert resolve(node("10.0.0.9")) == "10.0.0.9"  # not stored yet: the node's own
        store.add_node(node(), 0.0, "test")
        store.set_address("cs-1", "fd00::7")
        assert resolve(node()) == "[fd00::7]"  # what the last listing said, URL-ready
    finally:
        store.close()


@pytest.mark.parametrize(
    ("address", "host"),
    [
        ("10.0.0.1", "10.0.0.1"),
        ("2600:1f18::5", "[2600:1f18::5]"),
        ("[::1]", "[::1]"),
        ("node-7.internal", "node-7.internal"),
        ("10.0.0.1:8001", "10.0.0.1:8001"),
    ],
)
def test_url_host_brackets_ipv6_only(address: str, host: str) -> None:
    assert url_host(address) == host


@pytest.mark.parametrize(
    ("template", "logged"),
    [
        ("http://u:pw@router:8000/drain?n={node_id}", "http://router:8000/drain?n={node_id}"),
        ("https://u:p@ss@router/x@y", "https://router/x@y"),  # an unencoded "@" in it
        ("http://{host}:8000/metrics", "http://{host}:8000/metrics"),
        ("", ""),
    ],
)
def test_logged_templates_carry_no_credentials(template: str, logged: str) -> None:
    assert _no_userinfo(template) == logged
