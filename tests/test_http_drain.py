"""HttpDrainer against a fake router and a fake vLLM metrics endpoint."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import ValidationError

from adapters.http_drain import DrainHookError, HttpDrainConfig, HttpDrainer, count_in_flight
from scheduler.domain import Cloud, Market, Node, NodeState, Pool

VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="llama-3-8b"} 3.0
vllm:num_requests_running{engine="1",model_name="llama-3-8b"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="llama-3-8b"} 1.0
vllm:num_requests_waiting{engine="1",model_name="llama-3-8b"} 0.0
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{engine="0",model_name="llama-3-8b"} 0.42
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{finished_reason="stop",model_name="llama-3-8b"} 1234.0
"""

POOL = Pool(Cloud.AWS, "us-east-1", "", "g6.xlarge", Market.SPOT)


def node(node_id: str = "n-1", model: str = "llama-3-8b") -> Node:
    return Node(node_id, model, POOL, NodeState.DRAINING, cloud_instance_id="i-0abc")


@dataclass
class FakeFleet:
    """A router admin endpoint and per-node metrics pages on one server."""

    metrics: dict[str, tuple[int, str]] = field(default_factory=dict)  # node -> (status, body)
    hook_calls: list[tuple[str, str]] = field(default_factory=list)  # (method, node param)
    hook_statuses: list[int] = field(default_factory=list)  # popped per call; then 200

    async def hook(self, request: web.Request) -> web.Response:
        self.hook_calls.append((request.method, request.query.get("node", "")))
        status = self.hook_statuses.pop(0) if self.hook_statuses else 200
        return web.Response(status=status, text="ok")

    async def page(self, request: web.Request) -> web.Response:
        status, body = self.metrics.get(request.match_info["node"], (404, "no such node"))
        return web.Response(status=status, text=body, content_type="text/plain")


@pytest.fixture
async def fleet() -> AsyncIterator[tuple[FakeFleet, str]]:
    fake = FakeFleet()
    app = web.Application()
    app.router.add_route("*", "/admin/deregister", fake.hook)
    app.router.add_get("/nodes/{node}/metrics", fake.page)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield fake, f"127.0.0.1:{server.port}"
    finally:
        await server.close()


@dataclass
class Sleeps:
    delays: list[float] = field(default_factory=list)

    async def __call__(self, delay_s: float) -> None:
        self.delays.append(delay_s)


def drain_config(addr: str, **over: Any) -> HttpDrainConfig:
    base: dict[str, Any] = {
        "hook_url": f"http://{addr}/admin/deregister?node={{node_id}}",
        "metrics_url": "http://{host}/nodes/{node_id}/metrics",
        "backoff_s": 0.1,
    }
    return HttpDrainConfig(**(base | over))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_in_flight_sums_running_and_waiting(fleet: tuple[FakeFleet, str]) -> None:
    fake, addr = fleet
    fake.metrics["n-1"] = (200, VLLM_METRICS)
    async with HttpDrainer(drain_config(addr), lambda _n: addr) as drainer:
        assert await drainer.in_flight(node(), 0.0) == 6
    running_only = drain_config(addr, in_flight_metrics=("vllm:num_requests_running",))
    async with HttpDrainer(running_only, lambda _n: addr) as drainer:
        assert await drainer.in_flight(node(), 0.0) == 5


async def test_async_resolver_and_idle_node(fleet: tuple[FakeFleet, str]) -> None:
    fake, addr = fleet
    fake.metrics["n-1"] = (
        200,
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{model_name="llama-3-8b"} 0.0\n'
        "# TYPE vllm:num_requests_waiting gauge\n"
        'vllm:num_requests_waiting{model_name="llama-3-8b"} 0.0\n',
    )

    async def resolve(_n: Node) -> str:
        return addr

    async with HttpDrainer(drain_config(addr), resolve) as drainer:
        assert await drainer.in_flight(node(), 0.0) == 0


@pytest.mark.parametrize(
    ("page", "reason"),
    [
        ((200, "<html>not metrics</html>"), "unparsable exposition"),
        ((200, "# TYPE other gauge\nother 1\n"), "none of"),
        ((200, "vllm:num_requests_running NaN\n"), "in-flight sum is nan"),
        ((200, "vllm:num_requests_running -1\n"), "in-flight sum is -1"),
        ((500, "boom"), "HTTP 500"),
        (None, "HTTP 404"),
    ],
)
async def test_unreadable_metrics_are_unknown(
    fleet: tuple[FakeFleet, str],
    caplog: pytest.LogCaptureFixture,
    page: tuple[int, str] | None,
    reason: str,
) -> None:
    fake, addr = fleet
    if page is not None:
        fake.metrics["n-1"] = page
    with caplog.at_level(logging.WARNING):
        async with HttpDrainer(drain_config(addr), lambda _n: addr) as drainer:
            assert await drainer.in_flight(node(), 0.0) is None
    assert "drain_in_flight_unknown node_id=n-1" in caplog.text
    assert reason in caplog.text


async def test_unreachable_node_is_unknown(caplog: pytest.LogCaptureFixture) -> None:
    addr = f"127.0.0.1:{closed_port()}"
    with caplog.at_level(logging.WARNING):
        async with HttpDrainer(drain_config(addr), lambda _n: addr) as drainer:
            assert await drainer.in_flight(node(), 0.0) is None
    assert "ClientConnectorError" in caplog.text


async def test_no_address_or_broken_resolver_is_unknown(fleet: tuple[FakeFleet, str]) -> None:
    _, addr = fleet

    def broken(_n: Node) -> str:
        raise RuntimeError("inventory down")

    async with HttpDrainer(drain_config(addr), lambda _n: None) as drainer:
        assert await drainer.in_flight(node(), 0.0) is None
    async with HttpDrainer(drain_config(addr), broken) as drainer:
        assert await drainer.in_flight(node(), 0.0) is None


async def test_hook_called_once_per_drain(fleet: tuple[FakeFleet, str]) -> None:
    fake, addr = fleet
    fake.metrics["n/1"] = (200, VLLM_METRICS)
    async with HttpDrainer(drain_config(addr), lambda _n: addr) as drainer:
        await drainer.begin(node("n/1"))
        for t in range(3):
            assert await drainer.in_flight(node("n/1"), float(t)) == 6
    # node ids are percent-encoded into the template and decoded by the server
    assert fake.hook_calls == [("POST", "n/1")]


async def test_hook_retries_5xx_then_succeeds(fleet: tuple[FakeFleet, str]) -> None:
    fake, addr = fleet
    fake.hook_statuses = [503, 502]
    sleeps = Sleeps()
    async with HttpDrainer(drain_config(addr), lambda _n: addr, sleep=sleeps) as drainer:
        await drainer.begin(node())
    assert len(fake.hook_calls) == 3
    assert sleeps.delays == [0.1, 0.2]


async def test_hook_failure_raises(fleet: tuple[FakeFleet, str]) -> None:
    fake, addr = fleet
    fake.hook_statuses = [404]
    async with HttpDrainer(drain_config(addr, hook_method="DELETE"), lambda _n: addr) as drainer:
        with pytest.raises(DrainHookError, match="answered HTTP 404"):
            await drainer.begin(node())
    assert fake.hook_calls == [("DELETE", "n-1")]  # 4xx is not retried


async def test_hook_unreachable_raises_without_credentials() -> None:
    cfg = drain_config(
        "x", hook_url=f"http://admin:hunter2@127.0.0.1:{closed_port()}/deregister?n={{node_id}}"
    )
    async with HttpDrainer(cfg, lambda _n: None, sleep=Sleeps()) as drainer:
        with pytest.raises(DrainHookError) as info:
            await drainer.begin(node())
    assert "hunter2" not in str(info.value) and "admin" not in str(info.value)


async def test_no_hook_is_a_no_op(fleet: tuple[FakeFleet, str]) -> None:
    fake, addr = fleet
    async with HttpDrainer(drain_config(addr, hook_url=""), lambda _n: addr) as drainer:
        await drainer.begin(node())
    assert fake.hook_calls == []


def test_config_rejects_unknown_placeholders() -> None:
    with pytest.raises(ValidationError, match="unknown placeholder"):
        HttpDrainConfig(metrics_url="http://{hostname}:8000/metrics")
    with pytest.raises(ValidationError, match="http:// or https://"):
        HttpDrainConfig(hook_url="router:8000/deregister")


def test_count_in_flight_parses_exposition() -> None:
    assert count_in_flight(VLLM_METRICS.encode(), ("vllm:num_requests_running",)) == (5, "")
    count, reason = count_in_flight(b"\xff\xfe", ("vllm:num_requests_running",))
    assert count is None and "unparsable" in reason
