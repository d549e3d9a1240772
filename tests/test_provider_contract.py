"""Every provider against the one contract (`provider_contract`).

The simulated cloud, AWS on a moto server and GCP on the fake Compute API
(`test_gcp_support.FakeCompute`, reached through google-cloud-compute's REST transport).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from provider_contract import CHECKS, Subject
from test_aws_support import REGIONS, FaultProxy, MotoAccount, aws_env
from test_gcp_support import FakeCompute, credentials

from adapters.aws import AwsProvider
from adapters.gcp import GcpProvider
from adapters.sim import SimCloud
from scheduler.domain import Cloud, InstanceType, Market, Offering, Pool
from scheduler.fleet.catalog import load_catalog
from scheduler.ports.provider import LaunchRequest, Transient

__all__ = ["aws_env"]  # the session fixture, used by name

SIM_OD = Pool(Cloud.AWS, "us-east-1", "", "g6.xlarge", Market.ON_DEMAND)
SIM_SPOT = Pool(Cloud.AWS, "us-east-1", "", "g6.xlarge", Market.SPOT)
SIM_TYPES = {(Cloud.AWS, "g6.xlarge"): InstanceType(Cloud.AWS, "g6.xlarge", "L4", 1, 24, 4, 16)}
AWS_OD = Pool(Cloud.AWS, "us-east-1", "", "g5.xlarge", Market.ON_DEMAND)
AWS_SPOT = Pool(Cloud.AWS, "us-west-2", "", "g5.xlarge", Market.SPOT)
GCP_OD = Pool(Cloud.GCP, "us-central1", "us-central1-a", "g2-standard-8", Market.ON_DEMAND)
GCP_SPOT = Pool(Cloud.GCP, "us-east4", "us-east4-a", "a3-highgpu-1g", Market.SPOT)


async def sim_subject() -> AsyncIterator[Subject]:
    """The simulated cloud; the spot pool is offered as unavailable, so launches there fail."""
    sim = SimCloud(
        [Offering(SIM_OD, 1.0), Offering(SIM_SPOT, 0.4, available=False)],
        SIM_TYPES,
        boot_time_s=120.0,
    )

    async def created() -> int:
        return sim.counters.launches

    async def settle() -> None:
        sim.advance_to(sim.now_s + 60.0)

    yield Subject(
        name="sim",
        provider=sim,
        request=lambda node_id: LaunchRequest(node_id, "m", SIM_OD),
        refused=lambda node_id: LaunchRequest(node_id, "m", SIM_SPOT),
        created=created,
        fail_next_launch=lambda: sim.inject_error("launch", Transient("injected")),
        settle=settle,
    )


async def aws_subject(url: str) -> AsyncIterator[Subject]:
    """AWS on moto through a fault-injecting proxy.

    Refusals are capacity errors in every zone; the transient failure is a lost
    response (moto launched, the client saw a 503), the hardest case for idempotency.
    """
    account = MotoAccount.create(url)
    async with FaultProxy(url).serve() as proxy:
        provider = AwsProvider(account.config(endpoint_url=proxy.url), load_catalog().offerings)

        async def created() -> int:
            return sum(len(account.instances(region)) for region in REGIONS)

        def refused(node_id: str) -> LaunchRequest:
            for _zone in account.regions[AWS_SPOT.region].subnets:
                proxy.inject("RunInstances", "InsufficientInstanceCapacity", 500)
            return LaunchRequest(node_id, "m", AWS_SPOT)

        def fail_next_launch() -> None:
            proxy.inject("RunInstances", "ServiceUnavailable", 503, forward=True)

        async with provider:
            yield Subject(
                name="aws-moto",
                provider=provider,
                request=lambda node_id: LaunchRequest(node_id, "m", AWS_OD),
                refused=refused,
                created=created,
                fail_next_launch=fail_next_launch,
            )


async def gcp_subject() -> AsyncIterator[Subject]:
    """GCP on the fake Compute API.

    Refusals are ZONE_RESOURCE_POOL_EXHAUSTED in the insert operation; the transient
    failure is a lost answer (the instance was created, the client saw a 503).
    """
    with FakeCompute().serve() as fake:
        provider = GcpProvider(fake.config(), load_catalog().offerings, credentials=credentials())

        async def created() -> int:
            return fake.created

        def refused(node_id: str) -> LaunchRequest:
            fake.inject("insert", "ZONE_RESOURCE_POOL_EXHAUSTED", zone=GCP_SPOT.zone)
            return LaunchRequest(node_id, "m", GCP_SPOT)

        def fail_next_launch() -> None:
            fake.inject("insert", "backendError", 503, forward=True)

        async with provider:
            yield Subject(
                name="gcp-fake",
                provider=provider,
                request=lambda node_id: LaunchRequest(node_id, "m", GCP_OD),
                refused=refused,
                created=created,
                fail_next_launch=fail_next_launch,
            )


@pytest.fixture(params=["sim", "aws-moto", "gcp-fake"])
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    if request.param == "sim":
        gen = sim_subject()
    elif request.param == "gcp-fake":
        gen = gcp_subject()
    else:
        gen = aws_subject(request.getfixturevalue("aws_env"))
    async for s in gen:
        yield s


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
async def test_provider_contract(
    subject: Subject, check: Callable[[Subject], Awaitable[None]]
) -> None:
    await check(subject)
