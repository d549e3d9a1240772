"""Node health on the real cloud adapters: AWS over the moto server and GCP through its
client against the local fake Compute endpoint, each with `[health]` on and a local
aiohttp server answering every node's health endpoint.

Both clouds report an instance running at once; the node stays booting until its
health check passes, and one whose check never passes is failed at its boot deadline
and terminated on the cloud.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from fakes import no_sleep
from test_aws_support import MotoAccount, aws_env  # noqa: F401 - the fixture
from test_gcp_support import FakeCompute, credentials

from adapters.aws import AwsProvider
from adapters.gcp import GcpProvider
from adapters.http_health import HttpHealthProbe
from scheduler.config import Config
from scheduler.decide.observation import Observation, PolicyBase
from scheduler.domain import Cloud, Market, NodeState, Placement, Plan, PlanStatus, Pool
from scheduler.fleet.catalog import load_catalog
from scheduler.loop.factory import build_scheduler
from scheduler.loop.reconciler import Reconciler
from scheduler.loop.store import StateStore
from scheduler.ports.metrics import DemandSample
from scheduler.ports.provider import Provider

MODEL = "llama-3.1-8b"
AWS_POOL = Pool(Cloud.AWS, "us-east-1", "", "g6.xlarge", Market.ON_DEMAND)
GCP_POOL = Pool(Cloud.GCP, "us-central1", "us-central1-a", "g2-standard-8", Market.ON_DEMAND)
OFFERINGS = load_catalog().offerings
BOOT_S, MARGIN_S = 120.0, 60.0


class Metrics:
    async def demand(self, now_s: float) -> DemandSample:
        return DemandSample(now_s, {(MODEL, "r"): 1.0})


class Health:
    """Every node's /health: its own status when set, else `default`."""

    def __init__(self) -> None:
        self.default = 503  # loading
        self.status: dict[str, int] = {}  # node id -> status
        self.checked: list[str] = []  # node ids, one per check
        self.port = 0

    async def health(self, request: web.Request) -> web.Response:
        node_id = request.match_info["node"]
        self.checked.append(node_id)
        return web.Response(status=self.status.get(node_id, self.default))


@pytest.fixture
async def health() -> AsyncIterator[Health]:
    h = Health()
    app = web.Application()
    app.router.add_get("/nodes/{node}/health", h.health)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    h.port = int(server.port or 0)
    try:
        yield h
    finally:
        await server.close()


@pytest.fixture
def fake_gcp() -> Iterator[FakeCompute]:
    with FakeCompute().serve() as f:
        yield f


def config(cloud: Cloud, region: str, port: int, db: str) -> Config:
    raw: dict[str, Any] = {
        "scheduler": {"state_db": db},
        "planning": {"default_boot_time_s": BOOT_S},
        "health": {
            "enabled": True,
            # The clouds' addresses are fake private IPs: the nodes' model servers are
            # this test's server, told apart by node id.
            "url": f"http://127.0.0.1:{port}/nodes/{{node_id}}/health",
            "boot_margin_s": MARGIN_S,
            "interval_s": 10,
        },
        "models": [{"name": MODEL, "min_replicas": 1}],
        "regions": [{"name": "r", "location": region}],
        "clouds": {
            "aws": {"enabled": cloud is Cloud.AWS},
            "gcp": {"enabled": cloud is Cloud.GCP},
        },
    }
    return Config.model_validate(raw)


class Wants(PolicyBase):
    name = "wants"

    def __init__(self, pool: Pool) -> None:
        self.pool = pool  # where the nodes go
        self.count = 1  # how many

    def decide(self, obs: Observation) -> Plan:
        placements = (Placement(MODEL, self.pool, self.count),)
        return Plan(PlanStatus.OPTIMAL, placements, 0.0, 0.0, 0.0, 0.0)


async def scenario(provider: Provider, pool: Pool, health: Health, db: str) -> tuple[str, str]:
    """A node that becomes healthy, then one that never does. Returns (the healthy node,
    the never-healthy one, which the reconciler has failed and asked the cloud to
    terminate)."""
    cfg = config(pool.cloud, pool.region, health.port, db)
    store = StateStore(db)
    probe = HttpHealthProbe(cfg.health, lambda _node: None)  # {host} is not used
    policy = Wants(pool)
    rec: Reconciler = build_scheduler(
        cfg,
        provider=provider,
        metrics=Metrics(),
        store=store,
        policy=policy,
        sleep=no_sleep,
        health_probe=probe,
    )

    def state(node_id: str) -> NodeState:
        node = store.node(node_id)
        assert node is not None
        return node.state

    try:
        t0 = time.time()
        await rec.tick(t0)
        [first] = [n.node_id for n in store.live_nodes()]
        assert state(first) is NodeState.BOOTING
        await rec.tick(t0 + 10)  # the cloud lists it running; its server is loading
        assert state(first) is NodeState.BOOTING
        health.status[first] = 200
        await rec.check_health(t0 + 20)
        assert state(first) is NodeState.READY
        policy.count = 2
        await rec.tick(t0 + 30)
        [second] = [n.node_id for n in store.live_nodes() if n.node_id != first]
        await rec.check_health(t0 + 30 + BOOT_S + MARGIN_S - 10)
        assert state(second) is NodeState.BOOTING
        await rec.check_health(t0 + 30 + BOOT_S + MARGIN_S)
        assert state(second) is NodeState.FAILED
        report = await rec.tick(t0 + 30 + BOOT_S + MARGIN_S)
        assert report.errors == ()
        terminated = [a.node_id for a in report.actions if type(a).__name__ == "Terminate"]
        assert terminated == [second]
        launched = [a for a in report.actions if type(a).__name__ == "Launch"]
        assert len(launched) == 1  # its replacement
        assert state(first) is NodeState.READY
        return first, second
    finally:
        await probe.close()
        store.close()


async def test_health_on_aws_over_moto(
    tmp_path: Any,
    aws_env: str,  # noqa: F811
    health: Health,
) -> None:
    account = MotoAccount.create(aws_env)
    async with AwsProvider(account.config(), OFFERINGS) as aws:
        first, second = await scenario(aws, AWS_POOL, health, str(tmp_path / "s.db"))
    [alive] = account.instances("us-east-1", first)
    [dead] = account.instances("us-east-1", second)
    assert alive["State"]["Name"] == "running"
    assert dead["State"]["Name"] in ("shutting-down", "terminated")


async def test_health_on_gcp_through_the_fake_endpoint(
    tmp_path: Any, fake_gcp: FakeCompute, health: Health
) -> None:
    gcp = GcpProvider(fake_gcp.config(), OFFERINGS, credentials=credentials())
    try:
        first, second = await scenario(gcp, GCP_POOL, health, str(tmp_path / "s.db"))
    finally:
        await gcp.close()
    names = [i["labels"]["capsched-node"] for i in fake_gcp.ours("test-owner")]
    assert first in names and second not in names
