"""A fault-injecting layer in front of each real cloud adapter (AWS over moto's wire
protocol, GCP through its REST transport to the local fake): a share of calls fail
(throttling, lost replies, capacity and quota errors) and the reconciler still
converges to its plan without ever launching a node twice or leaking one."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fakes import no_sleep
from test_aws_support import MotoAccount, aws_env  # noqa: F401 - the fixture
from test_gcp_support import FakeCompute, credentials

from adapters.aws import AwsProvider
from adapters.faults import Fault, FaultyProvider
from adapters.gcp import GcpProvider
from scheduler.config import Config
from scheduler.decide.observation import Observation, PolicyBase
from scheduler.decide.policy import CapschedPolicy
from scheduler.domain import NodeState, Plan
from scheduler.fleet.catalog import load_catalog
from scheduler.fleet.profiles import load_profiles
from scheduler.loop.factory import build_scheduler
from scheduler.loop.store import StateStore
from scheduler.ports.metrics import DemandSample
from scheduler.ports.provider import InsufficientCapacity, Provider, QuotaExceeded, Transient

MODEL, REGION = "llama-3.1-8b", "src"
FAULTS = {
    "launch": Fault(0.3, (Transient, InsufficientCapacity, QuotaExceeded), lost_reply_share=0.3),
    "terminate": Fault(0.3, (Transient,), lost_reply_share=0.5),
    "list_instances": Fault(0.1, (Transient,)),
    "offerings": Fault(0.1, (Transient,)),
}


@dataclass
class Cloud:
    """One cloud under test: its provider, the config that keeps plans on it, and its
    own view of our instances (node id tags/labels, live ones only)."""

    provider: Provider
    config: Config
    live_node_ids: Callable[[], set[str]]


def config_for(cloud: str, regions: list[str], location: str, markets: list[str]) -> Config:
    other = "gcp" if cloud == "aws" else "aws"
    return Config.model_validate(
        {
            "models": [{"name": MODEL, "min_replicas": 1}],
            "regions": [{"name": REGION, "location": location, "max_latency_ms": 100}],
            "clouds": {
                cloud: {"regions": regions, "gpu_kinds": ["L4", "L40S"], "markets": markets},
                other: {"enabled": False},
            },
            "planning": {"robustness_fraction": 0.5, "budget_usd_per_hour": None},
            "solver": {"time_limit_s": 2.0},
            "guards": {"min_node_age_s": 0, "max_scale_down_fraction": 1.0},
            "quotas": [],
        }
    )


@asynccontextmanager
async def aws_cloud(url: str) -> AsyncIterator[Cloud]:
    account = MotoAccount.create(url)
    provider = AwsProvider(account.config(), load_catalog().offerings)

    def live() -> set[str]:
        out = set()
        for region in account.regions:
            for inst in account.instances(region):
                if inst["State"]["Name"] in ("pending", "running"):
                    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
                    out.add(tags["capsched-node"])
        return out

    async with provider:
        # moto prices every spot offering at 0.00001 USD/h, which makes any spot plan free:
        # on-demand only, so the plan follows the load here.
        config = config_for("aws", list(account.regions), "us-east-1", ["on-demand"])
        yield Cloud(provider, config, live)


@asynccontextmanager
async def gcp_cloud() -> AsyncIterator[Cloud]:
    with FakeCompute().serve() as fake:
        config = fake.config(owner="faults")
        provider = GcpProvider(config, load_catalog().offerings, credentials=credentials())
        regions = sorted({z.name.rsplit("-", 1)[0] for z in config.zones})

        def live() -> set[str]:
            out = set()
            for inst in fake.ours("faults"):
                if inst.get("status") not in ("STOPPING", "TERMINATED"):
                    items = {i["key"]: i["value"] for i in inst["metadata"]["items"]}
                    out.add(items["capsched-node"])
            return out

        async with provider:
            config = config_for("gcp", regions, "us-central1", ["spot", "on-demand"])
            yield Cloud(provider, config, live)


class Metrics:
    def __init__(self) -> None:
        self.rps = 40.0

    async def demand(self, now_s: float) -> DemandSample:
        return DemandSample(now_s, {(MODEL, REGION): self.rps})


class Hold(PolicyBase):
    """The real policy, then (frozen) its last plan: convergence needs one target."""

    name = "capsched"

    def __init__(self, policy: CapschedPolicy) -> None:
        self.policy = policy
        self.frozen: Plan | None = None

    def decide(self, obs: Observation) -> Plan:
        return self.frozen if self.frozen is not None else self.policy.decide(obs)

    def revise(self, obs: Observation) -> Plan:
        return self.frozen if self.frozen is not None else self.policy.revise(obs)


@pytest.mark.parametrize("which", ["aws-moto", "gcp-fake"])
async def test_converges_under_faults_without_duplicates_or_leaks(
    tmp_path: Path, which: str, request: pytest.FixtureRequest
) -> None:
    ctx = aws_cloud(request.getfixturevalue("aws_env")) if which == "aws-moto" else gcp_cloud()
    async with ctx as cloud:
        faulty = FaultyProvider(cloud.provider, FAULTS, seed=7)
        metrics = Metrics()
        store = StateStore(tmp_path / "state.db")
        catalog, profiles = load_catalog(), load_profiles()
        policy = Hold(CapschedPolicy(cloud.config, catalog, profiles))
        rec = build_scheduler(
            cloud.config, provider=faulty, metrics=metrics, store=store, policy=policy,
            catalog=catalog, profiles=profiles, sleep=no_sleep,
        )  # fmt: skip
        now = 1_000_000.0
        plan: Plan | None = None
        for tick in range(30):
            if tick == 6:
                metrics.rps = 6.0  # scale down under faults too
            if tick == 22:
                policy.frozen = plan  # hold one target; faults go on
            report = await rec.tick(now)
            plan = report.plan or plan
            now += 300.0
        assert plan is not None
        # Faults stop: a few clean ticks must reach the target exactly.
        faulty.faults.clear()
        for _ in range(4):
            await rec.tick(now)
            now += 300.0

        target: Counter[Any] = Counter({(p.model, p.pool): p.count for p in plan.placements})
        serving: Counter[Any] = Counter(
            (n.model, n.pool) for n in store.live_nodes() if n.state is NodeState.READY
        )
        assert serving == target
        launches = Counter(e.node_id for e in store.journal() if e.kind == "launch")
        assert all(n == 1 for n in launches.values())  # no node id launched twice
        in_cloud = cloud.live_node_ids()
        in_store = {n.node_id for n in store.live_nodes()}
        assert in_cloud == in_store  # nothing leaked, nothing lost
        assert in_cloud <= set(launches)  # every instance came from one journaled launch
        assert any(e.kind == "terminate" for e in store.journal())  # it scaled down too
        struck = {method for method, _ in faulty.injected}
        assert {"launch", "list_instances"} <= struck  # the faults did strike
        store.close()
