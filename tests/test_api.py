"""The control API and its client, against a fake `Control` over a real state store,
served on 127.0.0.1 port 0 (and a Unix socket): reads open, actions behind the token,
JSON errors, /metrics, the token file's mode, loopback only, typed client errors."""

from __future__ import annotations

import logging
import os
import re
import socket
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from scheduler.domain import Cloud, Market, Node, NodeState, Placement, Plan, PlanStatus, Pool
from scheduler.loop.store import StateStore
from scheduler.service.api import (
    TokenFileError,
    load_or_create_token,
    make_app,
    read_token,
    serve,
)
from scheduler.service.api_client import ApiClient, ApiError, ApiUnavailable, Unauthorized
from scheduler.service.telemetry import Telemetry

TOKEN = "s3cret-test-token-Zq9"
POOL = Pool(Cloud.AWS, "us-east-1", "", "g6.xlarge", Market.SPOT)
MODEL = "llama-3.1-8b"


def logged_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every record of the test's setup and call, formatted as a handler would (with
    tracebacks), one string each."""
    formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
    records = caplog.get_records("setup") + caplog.get_records("call")
    return [formatter.format(r) for r in records]


@pytest.fixture(autouse=True)
def token_never_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every log line of every test here (and in test_api_*.py, which import this) is
    searched for the token and for tracebacks."""
    caplog.set_level(logging.DEBUG)
    yield
    lines = logged_lines(caplog)
    leaked = [line for line in lines if TOKEN in line]
    assert not leaked, leaked
    tracebacks = [line for line in lines if "Traceback" in line]
    assert not tracebacks, tracebacks


@dataclass
class FakeControl:
    """A `Control` that records what the API asked of it."""

    store: StateStore
    pending_plan_id: int | None = None  # the plan approve/reject accept
    reload_problems: list[str] = field(default_factory=list)  # what reload answers
    calls: list[tuple[str, object]] = field(default_factory=list)  # (method, argument)
    paused: bool = False

    def status(self) -> dict[str, Any]:
        return {"paused": self.paused, "pending_plan_id": self.pending_plan_id, "gap": float("nan")}

    def forecast(self) -> dict[str, Any]:
        return {"series": [{"model": MODEL, "region": "us-east", "planned_rps": 12.5}]}

    async def approve(self, plan_id: int) -> bool:
        self.calls.append(("approve", plan_id))
        if plan_id != self.pending_plan_id:
            return False
        self.store.set_plan_approval(plan_id, "approved")
        self.pending_plan_id = None
        return True

    async def reject(self, plan_id: int) -> bool:
        self.calls.append(("reject", plan_id))
        if plan_id != self.pending_plan_id:
            return False
        self.store.set_plan_approval(plan_id, "rejected")
        self.pending_plan_id = None
        return True

    async def drain(self, node_id: str) -> bool:
        self.calls.append(("drain", node_id))
        node = self.store.node(node_id)
        return node is not None and node.state is NodeState.READY

    async def pause(self) -> None:
        self.calls.append(("pause", None))
        self.paused = True

    async def resume(self) -> None:
        self.calls.append(("resume", None))
        self.paused = False

    async def reload(self) -> list[str]:
        self.calls.append(("reload", None))
        return list(self.reload_problems)


def plan(usd_per_hour: float = 3.0) -> Plan:
    return Plan(
        PlanStatus.OPTIMAL, (Placement(MODEL, POOL, 2),), usd_per_hour, usd_per_hour, 0.0, 0.1
    )


def add_node(store: StateStore, state: NodeState) -> str:
    node_id = store.next_node_id()
    store.add_node(Node(node_id, MODEL, POOL, NodeState.REQUESTED, launched_at_s=0.0), 0.0, "test")
    path = {
        NodeState.REQUESTED: [],
        NodeState.BOOTING: [NodeState.BOOTING],
        NodeState.READY: [NodeState.BOOTING, NodeState.READY],
    }[state]
    for i, s in enumerate(path, start=1):
        store.transition(node_id, s, float(i), f"to {s}")
    if state is NodeState.READY:
        store.set_address(node_id, "10.0.3.7")
    return node_id


@dataclass
class Api:
    """A served API, its fake control, and its address."""

    control: FakeControl
    address: str
    telemetry: Telemetry
    ready_node: str  # a READY node
    booting_node: str  # a BOOTING node (drain refused)
    pending_plan: int  # plan id waiting for approval
    old_plan: int  # plan id already decided

    def client(self, token: str | None = TOKEN) -> ApiClient:
        return ApiClient(self.address, token=token)

    def url(self, path: str) -> str:
        return self.address + path


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    store = StateStore(tmp_path / "state.db")
    ready = add_node(store, NodeState.READY)
    booting = add_node(store, NodeState.BOOTING)
    old = store.record_plan(plan(2.0), 10.0, "capsched", (), approval="auto")
    pending = store.record_plan(plan(9.0), 20.0, "capsched", (), approval="pending")
    control = FakeControl(store, pending_plan_id=pending)
    telemetry = Telemetry()
    app = make_app(control, TOKEN, metrics_registry=telemetry.registry)
    runner, address = await serve(app, host="127.0.0.1", port=0)
    try:
        yield Api(control, address, telemetry, ready, booting, pending, old)
    finally:
        await runner.cleanup()
        store.close()


async def raw(
    method: str, url: str, token: str | None = None, scheme: str = "Bearer"
) -> tuple[int, Any]:
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, headers=headers) as resp,
    ):
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body


# -- reads ------------------------------------------------------------------------------------


async def test_reads_need_no_token(api: Api) -> None:
    async with api.client(token=None) as c:
        assert await c.healthz()
        status = await c.status()
        assert status["pending_plan_id"] == api.pending_plan
        assert status["gap"] is None  # NaN never reaches the JSON
        nodes = await c.nodes()
        assert {n["node_id"] for n in nodes} == {api.ready_node, api.booting_node}
        ready = next(n for n in nodes if n["node_id"] == api.ready_node)
        assert ready["state"] == "ready" and ready["pool"] == POOL.key
        assert ready["market"] == "spot" and ready["instance_type"] == "g6.xlarge"
        assert ready["address"] == "10.0.3.7"  # where a drain reaches it
        events = await c.node_events(api.ready_node)
        assert [e["new"] for e in events] == ["requested", "booting", "ready"]
        plans = await c.plans()
        assert [p["id"] for p in plans] == [api.pending_plan, api.old_plan]  # newest first
        one = await c.plan(api.pending_plan)
        assert one["approval"] == "pending" and one["placements"][0]["count"] == 2
        assert (await c.forecast())["series"][0]["planned_rps"] == 12.5
        assert await c.journal() == []
    assert api.control.calls == []


async def test_events_page_by_id_and_limit(api: Api) -> None:
    async with api.client(token=None) as c:
        everything = await c.events()
        assert len(everything) == 5  # 3 for the ready node, 2 for the booting one
        ids = [e["id"] for e in everything]
        assert ids == sorted(ids)
        assert [e["id"] for e in await c.events(after=ids[2])] == ids[3:]
        assert [e["id"] for e in await c.events(limit=2)] == ids[-2:]  # the latest, in order
        with pytest.raises(ApiError) as bad:
            await c.events(limit=0)
        assert bad.value.status == 400


async def test_unknown_reads_are_json_404(api: Api) -> None:
    async with api.client(token=None) as c:
        with pytest.raises(ApiError) as e1:
            await c.plan(999)
        assert e1.value.status == 404 and "999" in e1.value.message
        with pytest.raises(ApiError) as e2:
            await c.node_events("cs-nope")
        assert e2.value.status == 404
    status, body = await raw("GET", api.url("/v1/nothing-here"))
    assert status == 404 and "error" in body


async def test_metrics_expose_the_daemon_metric_names(api: Api) -> None:
    async with api.client(token=None) as c:
        text = await c.metrics()
    for name in (
        "capsched_nodes",
        "capsched_ticks_total",
        "capsched_actions_total",
        "capsched_plan_status",
        "capsched_last_successful_tick_timestamp_seconds",
        "capsched_config_reload_failures_total",
        "capsched_tick_duration_seconds_bucket",
    ):
        assert f"# HELP {name.removesuffix('_bucket').removesuffix('_total')}" in text
        assert name in text
    # Only this daemon's registry: no process-global collectors leak in.
    assert "python_gc_objects_collected_total" not in text


# -- actions ----------------------------------------------------------------------------------

ACTIONS = [
    ("POST", "/v1/plans/{pending}/approve"),
    ("POST", "/v1/plans/{pending}/reject"),
    ("POST", "/v1/nodes/{ready}/drain"),
    ("POST", "/v1/pause"),
    ("POST", "/v1/resume"),
    ("POST", "/v1/reload"),
]


@pytest.mark.parametrize(("method", "path"), ACTIONS)
@pytest.mark.parametrize(
    ("token", "scheme"),
    [
        (None, "Bearer"),
        ("wrong", "Bearer"),
        ("", "Bearer"),
        (TOKEN, "Basic"),
        (TOKEN + "x", "Bearer"),
    ],
)
async def test_actions_refuse_a_missing_or_wrong_token(
    api: Api, method: str, path: str, token: str | None, scheme: str
) -> None:
    url = api.url(path.format(pending=api.pending_plan, ready=api.ready_node))
    status, body = await raw(method, url, token, scheme)
    assert status == 401
    assert body == {"error": "missing or wrong bearer token"}
    assert api.control.calls == []  # nothing reached the daemon


async def test_actions_reach_the_control(api: Api) -> None:
    async with api.client() as c:
        assert await c.pause() == {"paused": True}
        assert api.control.paused
        assert await c.resume() == {"paused": False}
        assert await c.drain(api.ready_node) == {"node_id": api.ready_node, "draining": True}
        assert await c.reload() == []
        assert await c.approve(api.pending_plan) == {
            "plan_id": api.pending_plan,
            "approval": "approved",
        }
    assert api.control.calls == [
        ("pause", None),
        ("resume", None),
        ("drain", api.ready_node),
        ("reload", None),
        ("approve", api.pending_plan),
    ]
    assert api.control.store.plans()[0]["approval"] == "approved"


async def test_reject_reaches_the_control(api: Api) -> None:
    async with api.client() as c:
        assert (await c.reject(api.pending_plan))["approval"] == "rejected"
    assert api.control.calls == [("reject", api.pending_plan)]


async def test_unknown_plan_is_404_and_decided_plan_is_409(api: Api) -> None:
    async with api.client() as c:
        with pytest.raises(ApiError) as unknown:
            await c.approve(4242)
        assert unknown.value.status == 404
        with pytest.raises(ApiError) as decided:
            await c.approve(api.old_plan)
        assert decided.value.status == 409
        assert decided.value.body["approval"] == "auto"
        assert not isinstance(decided.value, Unauthorized)
        with pytest.raises(ApiError) as twice:
            await c.reject(api.old_plan)
        assert twice.value.status == 409
    # A 404 never asks the daemon; a 409 is the daemon's own answer.
    assert api.control.calls == [("approve", api.old_plan), ("reject", api.old_plan)]


async def test_drain_unknown_is_404_not_ready_is_409(api: Api) -> None:
    async with api.client() as c:
        with pytest.raises(ApiError) as unknown:
            await c.drain("cs-99999999")
        assert unknown.value.status == 404
        with pytest.raises(ApiError) as booting:
            await c.drain(api.booting_node)
        assert booting.value.status == 409 and booting.value.body["state"] == "booting"


async def test_invalid_reload_returns_the_problems(api: Api) -> None:
    api.control.reload_problems = ["solver.time_limit_s: must be > 0"]
    async with api.client() as c:
        assert await c.reload() == ["solver.time_limit_s: must be > 0"]
    status, body = await raw("POST", api.url("/v1/reload"), TOKEN)
    assert status == 422 and body["problems"] == ["solver.time_limit_s: must be > 0"]


async def test_the_token_never_reaches_the_logs(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with api.client() as c:
        await c.pause()
        await c.approve(api.pending_plan)
        with pytest.raises(ApiError):
            await c.approve(api.old_plan)
    await raw("POST", api.url("/v1/resume"), TOKEN + "-wrong")
    await raw("POST", api.url("/v1/resume"), TOKEN, scheme="Basic")
    assert caplog.records  # the access log and the API's own lines were captured
    assert any("api_unauthorized" in r.getMessage() for r in caplog.records)
    text = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    assert TOKEN not in text
    assert "Authorization" not in text


# -- client errors ----------------------------------------------------------------------------


async def test_client_reports_an_unreachable_daemon() -> None:
    # A port that was free a moment ago: nothing listens there.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with ApiClient(f"http://127.0.0.1:{port}", token=TOKEN) as c:
        with pytest.raises(ApiUnavailable):
            await c.status()
        with pytest.raises(ApiUnavailable):
            await c.pause()


async def test_client_wrong_token_is_unauthorized(api: Api) -> None:
    async with api.client(token="nope") as c:
        with pytest.raises(Unauthorized) as exc:
            await c.pause()
        assert exc.value.status == 401
        assert "nope" not in repr(c) and "nope" not in str(exc.value)
    async with api.client(token=None) as c:
        with pytest.raises(Unauthorized):
            await c.resume()
    assert api.control.calls == []


async def test_unix_socket(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    control = FakeControl(store)
    app = make_app(control, TOKEN, metrics_registry=Telemetry().registry)
    path = str(tmp_path / "api.sock")
    runner, address = await serve(app, socket_path=path)
    try:
        assert address == f"unix:{path}"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        async with ApiClient(socket_path=path, token=TOKEN) as c:
            assert await c.healthz()
            assert await c.pause() == {"paused": True}
        assert control.calls == [("pause", None)]
    finally:
        await runner.cleanup()
        store.close()


# -- serving and the token file ---------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.com", ""])
async def test_server_refuses_a_non_loopback_host(tmp_path: Path, host: str) -> None:
    store = StateStore(tmp_path / "state.db")
    app = make_app(FakeControl(store), TOKEN, metrics_registry=Telemetry().registry)
    with pytest.raises(ValueError, match="refusing to serve"):
        await serve(app, host=host, port=0)
    store.close()


async def test_server_accepts_ipv6_loopback(tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    store = StateStore(tmp_path / "state.db")
    app = make_app(FakeControl(store), TOKEN, metrics_registry=Telemetry().registry)
    try:
        runner, address = await serve(app, host="::1", port=0)
    except OSError:
        store.close()
        pytest.skip("::1 not configured")
    try:
        assert address.startswith("http://[::1]:")
        async with ApiClient(address) as c:
            assert await c.healthz()
    finally:
        await runner.cleanup()
        store.close()


def test_empty_token_is_refused(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    with pytest.raises(ValueError):
        make_app(FakeControl(store), "", metrics_registry=Telemetry().registry)
    store.close()


def test_token_file_is_created_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "capsched.token"
    token = load_or_create_token(path)
    assert len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_token(path) == token
    assert read_token(path) == token


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_token_file_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "capsched.token"
    path.write_text("abc\n")
    path.chmod(mode)
    with pytest.raises(TokenFileError, match=re.escape(str(path))) as exc:
        load_or_create_token(path)
    assert "chmod 600" in str(exc.value)
    assert "abc" not in str(exc.value)


def test_empty_token_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "capsched.token"
    path.write_text("\n")
    path.chmod(0o600)
    with pytest.raises(TokenFileError, match="empty"):
        read_token(path)
