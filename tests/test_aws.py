"""The AWS provider over the wire against a moto server (see `test_aws_support`)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from test_aws_support import (
    ACCESS_KEY,
    SECRET_KEY,
    FaultProxy,
    MotoAccount,
    aws_env,
    blackhole,
    closed_port_url,
)

from adapters.aws import (
    REBALANCE,
    SPOT_WARNING,
    STATE_CHANGE,
    AwsProvider,
    _address,
    client_token,
    error_class,
    parse_event,
    zone_order,
)
from scheduler.domain import Cloud, Market, Offering, Pool
from scheduler.fleet.catalog import load_catalog
from scheduler.ports.provider import (
    InstanceState,
    InsufficientCapacity,
    LaunchRequest,
    NotFound,
    QuotaExceeded,
    Transient,
)
from scheduler.sections.aws import AwsConfig

__all__ = ["aws_env"]  # the session fixture, used by name

EAST, WEST = "us-east-1", "us-west-2"
OD = Pool(Cloud.AWS, EAST, "", "g5.xlarge", Market.ON_DEMAND)
SPOT = Pool(Cloud.AWS, EAST, "", "g5.xlarge", Market.SPOT)
WEST_SPOT = Pool(Cloud.AWS, WEST, "", "g5.xlarge", Market.SPOT)
OFFERINGS = load_catalog().offerings


@pytest.fixture
def account(aws_env: str) -> MotoAccount:
    return MotoAccount.create(aws_env)


@pytest.fixture
async def proxy(aws_env: str) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(aws_env).serve() as p:
        yield p


def provider(account: MotoAccount, **kw: Any) -> AwsProvider:
    clock = kw.pop("clock", time.time)
    return AwsProvider(account.config(**kw), OFFERINGS, clock=clock)


def tags(raw: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in raw.get("Tags", [])}


# ---------------------------------------------------------------------- launch


async def test_on_demand_launch_is_tagged_and_placed_as_configured(account: MotoAccount) -> None:
    async with provider(account) as p:
        inst = await p.launch(LaunchRequest("n-od", "llama-3-8b", OD))
    assert inst.node_id == "n-od" and inst.pool == OD and inst.model == "llama-3-8b"
    assert inst.state in (InstanceState.PENDING, InstanceState.RUNNING)
    [raw] = account.instances(EAST, "n-od")
    assert raw["InstanceId"] == inst.cloud_instance_id
    assert tags(raw) == {
        "capsched-owner": account.owner,
        "capsched-node": "n-od",
        "capsched-model": "llama-3-8b",
        "capsched-pool": OD.key,
    }
    assert raw["InstanceType"] == "g5.xlarge" and raw["ImageId"] == "ami-12c6146b"
    assert raw.get("InstanceLifecycle") != "spot"
    setup = account.regions[EAST]
    assert raw["SubnetId"] in setup.subnets.values()
    assert [g["GroupId"] for g in raw["SecurityGroups"]] == [setup.security_group]


async def test_spot_launch_asks_for_a_one_time_spot_instance(account: MotoAccount) -> None:
    async with provider(account) as p:
        inst = await p.launch(LaunchRequest("n-spot", "m", SPOT))
        listed = await p.list_instances()
    [raw] = account.instances(EAST, "n-spot")
    assert raw["InstanceLifecycle"] == "spot" and tags(raw)["capsched-pool"] == SPOT.key
    assert listed == [inst] or [(i.node_id, i.pool) for i in listed] == [("n-spot", SPOT)]


async def test_instances_carry_their_private_ip(account: MotoAccount) -> None:
    async with provider(account) as p:
        launched = await p.launch(LaunchRequest("n-ip", "m", OD))
        [listed] = await p.list_instances()
    [raw] = account.instances(EAST, "n-ip")
    assert raw["PrivateIpAddress"]  # moto assigns one from the subnet, as EC2 does
    assert launched.address == listed.address == raw["PrivateIpAddress"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"PrivateIpAddress": "10.0.1.5", "PublicIpAddress": "3.3.3.3"}, "10.0.1.5"),
        ({"NetworkInterfaces": [{"PrivateIpAddress": "10.0.2.6"}]}, "10.0.2.6"),
        ({"Ipv6Address": "2600:1f18::5"}, "2600:1f18::5"),  # an IPv6-only subnet
        ({"PrivateIpAddress": "", "NetworkInterfaces": []}, None),  # terminated: none left
        ({}, None),
    ],
)
def test_address_prefers_the_private_ip(raw: dict[str, Any], expected: str | None) -> None:
    assert _address(raw) == expected


async def test_zone_less_pools_spread_over_the_configured_zones(account: MotoAccount) -> None:
    async with provider(account) as p:
        for i in range(8):
            await p.launch(LaunchRequest(f"n-{i}", "m", OD))
    subnets = {raw["SubnetId"] for raw in account.instances(EAST)}
    assert subnets == set(account.regions[EAST].subnets.values())


async def test_retried_launch_returns_the_first_instance(account: MotoAccount) -> None:
    request = LaunchRequest("n-retry", "m", SPOT)
    async with provider(account) as p:
        first = await p.launch(request)
        again = await p.launch(request)
    async with provider(account) as restarted:  # no cache: only the tag lookup
        after_restart = await restarted.launch(request)
    assert first.cloud_instance_id == again.cloud_instance_id == after_restart.cloud_instance_id
    assert len(account.instances(EAST, "n-retry")) == 1  # moto's own listing


async def test_lost_response_then_retry_makes_one_instance(
    account: MotoAccount, proxy: FaultProxy
) -> None:
    # moto runs the launch, the client sees a 503: the launch is uncertain.
    proxy.inject("RunInstances", "ServiceUnavailable", 503, forward=True)
    request = LaunchRequest("n-lost", "m", OD)
    async with provider(account, endpoint_url=proxy.url) as p:
        with pytest.raises(Transient):
            await p.launch(request)
        assert len(account.instances(EAST, "n-lost")) == 1
        inst = await p.launch(request)
    [raw] = account.instances(EAST, "n-lost")
    assert raw["InstanceId"] == inst.cloud_instance_id
    assert proxy.calls["RunInstances"] == 1  # the retry found it by tag


# ---------------------------------------------------------------------- list


async def test_list_covers_every_region_and_only_our_instances(account: MotoAccount) -> None:
    other = MotoAccount(account.url, "someone-else", account.regions)
    async with provider(account) as p, provider(other) as q:
        await p.launch(LaunchRequest("east-1", "m", OD))
        await p.launch(LaunchRequest("west-1", "m", WEST_SPOT))
        await q.launch(LaunchRequest("foreign", "m", OD))
        setup = account.regions[EAST]
        account.ec2(EAST).run_instances(  # untagged, e.g. made by hand
            ImageId="ami-12c6146b", MinCount=1, MaxCount=1, SubnetId=setup.subnets["us-east-1a"]
        )
        listed = await p.list_instances()
    assert [(i.node_id, i.pool.region, i.pool.market) for i in listed] == [
        ("east-1", EAST, Market.ON_DEMAND),
        ("west-1", WEST, Market.SPOT),
    ]


async def test_a_failing_region_fails_the_listing_not_the_other_calls(
    account: MotoAccount,
) -> None:
    async with provider(account) as healthy:
        east = await healthy.launch(LaunchRequest("east-ok", "m", SPOT))
    account.send_event(EAST, SPOT_WARNING, east.cloud_instance_id, "2026-01-01T00:00:00Z")
    async with provider(account, endpoints={WEST: closed_port_url()}) as p:
        started = time.monotonic()
        with pytest.raises(Transient, match=WEST) as exc:
            await p.list_instances()
        assert EAST not in str(exc.value)
        # The other region still launches, reports notices, and prices come out for both.
        inst = await p.launch(LaunchRequest("east-2", "m", OD))
        notices = await p.interruption_notices()
        offerings = await p.offerings()
        with pytest.raises(Transient):
            await p.launch(LaunchRequest("west-2", "m", WEST_SPOT))
        assert time.monotonic() - started < 5.0
    assert inst.pool.region == EAST
    assert [n.node_id for n in notices] == ["east-ok"]
    assert {o.pool.region for o in offerings} == {EAST, WEST}


async def test_a_hanging_region_does_not_stall_the_other(account: MotoAccount) -> None:
    server, url = await blackhole()
    try:
        cfg: dict[str, Any] = {"read_timeout_s": 1.0, "connect_timeout_s": 1.0}
        async with provider(account, endpoints={WEST: url}, call_timeout_s=2.0, **cfg) as p:
            done: list[str] = []

            async def launch_east() -> None:
                await p.launch(LaunchRequest("east-fast", "m", OD))
                done.append("launch")

            async def list_all() -> None:
                with pytest.raises(Transient, match=WEST):
                    await p.list_instances()
                done.append("list")

            started = time.monotonic()
            await asyncio.gather(list_all(), launch_east())
            elapsed = time.monotonic() - started
    finally:
        server.close()
        await server.wait_closed()
    assert done == ["launch", "list"]  # the east launch did not wait for the west timeout
    assert elapsed < 5.0


# ---------------------------------------------------------------------- terminate


async def test_terminate_is_final_and_safe_to_repeat(account: MotoAccount) -> None:
    async with provider(account) as p:
        await p.launch(LaunchRequest("n-term", "m", OD))
        await p.terminate("n-term")
        await p.terminate("n-term")
        await p.terminate("never-launched")
        listed = await p.list_instances()
    async with provider(account) as restarted:
        await restarted.terminate("n-term")  # no cache: looked up in every region
    assert listed == []
    [raw] = account.instances(EAST, "n-term")
    assert raw["State"]["Name"] == "terminated"


async def test_terminate_finds_the_node_after_a_restart(account: MotoAccount) -> None:
    async with provider(account) as p:
        await p.launch(LaunchRequest("n-west", "m", WEST_SPOT))
    async with provider(account) as restarted:
        await restarted.terminate("n-west")
    [raw] = account.instances(WEST, "n-west")
    assert raw["State"]["Name"] in ("shutting-down", "terminated")


# ---------------------------------------------------------------------- errors


async def test_a_missing_subnet_is_not_found(account: MotoAccount) -> None:
    cfg = account.config()
    east = cfg.regions[0].model_copy(update={"subnets": {"us-east-1a": "subnet-0deadbeef"}})
    broken = cfg.model_copy(update={"regions": (east, cfg.regions[1])})
    async with AwsProvider(broken, OFFERINGS) as p:
        with pytest.raises(NotFound, match=r"InvalidSubnetID\.NotFound") as exc:
            await p.launch(LaunchRequest("n-bad", "m", OD))
    assert exc.value.pool == OD


async def test_a_missing_security_group_is_not_found(account: MotoAccount) -> None:
    cfg = account.config()
    east = cfg.regions[0].model_copy(update={"security_group_ids": ("sg-0deadbeef",)})
    broken = cfg.model_copy(update={"regions": (east, cfg.regions[1])})
    async with AwsProvider(broken, OFFERINGS) as p:
        with pytest.raises(NotFound):
            await p.launch(LaunchRequest("n-bad-sg", "m", OD))
    assert account.instances(EAST, "n-bad-sg") == []


async def test_an_unconfigured_region_is_not_found(account: MotoAccount) -> None:
    pool = Pool(Cloud.AWS, "eu-west-1", "", "g5.xlarge", Market.ON_DEMAND)
    async with provider(account) as p:
        with pytest.raises(NotFound, match="eu-west-1"):
            await p.launch(LaunchRequest("n-eu", "m", pool))


@pytest.mark.parametrize(
    ("code", "status", "typed"),
    [
        ("RequestLimitExceeded", 503, Transient),
        ("InternalError", 500, Transient),
        ("VcpuLimitExceeded", 400, QuotaExceeded),
        ("MaxSpotInstanceCountExceeded", 400, QuotaExceeded),
    ],
)
async def test_injected_launch_errors_come_out_typed(
    account: MotoAccount, proxy: FaultProxy, code: str, status: int, typed: type[Exception]
) -> None:
    proxy.inject("RunInstances", code, status)
    async with provider(account, endpoint_url=proxy.url) as p:
        with pytest.raises(typed, match=code) as exc:
            await p.launch(LaunchRequest("n-err", "m", SPOT))
    assert getattr(exc.value, "pool", None) == SPOT
    assert account.instances(EAST, "n-err") == []


async def test_throttled_listing_is_transient(account: MotoAccount, proxy: FaultProxy) -> None:
    proxy.inject("DescribeInstances", "RequestLimitExceeded", 503)
    async with provider(account, endpoint_url=proxy.url) as p:
        with pytest.raises(Transient, match="RequestLimitExceeded"):
            await p.list_instances()


async def test_capacity_error_falls_over_to_the_next_zone(
    account: MotoAccount, proxy: FaultProxy
) -> None:
    proxy.inject("RunInstances", "InsufficientInstanceCapacity", 500)
    async with provider(account, endpoint_url=proxy.url) as p:
        inst = await p.launch(LaunchRequest("n-fall", "m", SPOT))
    [raw] = account.instances(EAST, "n-fall")
    first, second = zone_order(account.regions[EAST].subnets, "n-fall")
    assert raw["SubnetId"] == account.regions[EAST].subnets[second]
    assert raw["InstanceId"] == inst.cloud_instance_id and first != second


async def test_every_zone_out_of_capacity_is_insufficient_capacity(
    account: MotoAccount, proxy: FaultProxy
) -> None:
    proxy.inject("RunInstances", "InsufficientInstanceCapacity", 500)
    proxy.inject("RunInstances", "SpotMaxPriceTooLow", 400)
    async with provider(account, endpoint_url=proxy.url) as p:
        with pytest.raises(InsufficientCapacity) as exc:
            await p.launch(LaunchRequest("n-none", "m", SPOT))
    assert exc.value.pool == SPOT and proxy.calls["RunInstances"] == 2


@pytest.mark.parametrize(
    ("code", "status", "typed"),
    [
        ("InsufficientInstanceCapacity", 500, InsufficientCapacity),
        ("InsufficientCapacity", 400, InsufficientCapacity),
        ("SpotMaxPriceTooLow", 400, InsufficientCapacity),
        ("VcpuLimitExceeded", 400, QuotaExceeded),
        ("MaxSpotInstanceCountExceeded", 400, QuotaExceeded),
        ("InstanceLimitExceeded", 400, QuotaExceeded),
        ("RequestLimitExceeded", 503, Transient),
        ("Throttling", 400, Transient),
        ("SomethingNew", 500, Transient),
        ("InvalidInstanceID.NotFound", 400, NotFound),
        ("InvalidAMIID.NotFound", 400, NotFound),
        ("InvalidLaunchTemplateName.NotFoundException", 400, NotFound),
    ],
)
def test_error_codes_map_to_typed_errors(code: str, status: int, typed: type) -> None:
    assert error_class(code, status) is typed


# ---------------------------------------------------------------------- notices


async def test_sqs_events_become_notices_and_are_deleted(account: MotoAccount) -> None:
    async with provider(account) as p:
        a = await p.launch(LaunchRequest("n-a", "m", SPOT))
        b = await p.launch(LaunchRequest("n-b", "m", SPOT))
        c = await p.launch(LaunchRequest("n-c", "m", OD))
    other = MotoAccount(account.url, "someone-else", account.regions)
    async with provider(other) as q:
        foreign = await q.launch(LaunchRequest("n-x", "m", SPOT))
    t = "2026-03-01T12:00:00Z"
    t_s = 1772366400.0
    warning = account.send_event(EAST, SPOT_WARNING, a.cloud_instance_id, t, **{
        "instance-action": "terminate"
    })  # fmt: skip
    account.send_event(EAST, REBALANCE, b.cloud_instance_id, t)
    account.send_event(EAST, STATE_CHANGE, c.cloud_instance_id, t, state="shutting-down")
    account.send_event(EAST, STATE_CHANGE, c.cloud_instance_id, t, state="running")
    account.send_event(EAST, SPOT_WARNING, foreign.cloud_instance_id, t)
    account.send_raw(EAST, "not json at all")
    account.send_raw(EAST, '{"detail-type": "Something Else", "detail": {}}')
    # A fresh provider knows none of the instance ids: it looks them up by id and owner tag.
    async with provider(account) as fresh:
        notices = await fresh.interruption_notices()
        assert account.queue_depth(EAST) == 0
        # SQS may deliver twice: the same event id is returned once.
        account.send_event(EAST, SPOT_WARNING, a.cloud_instance_id, t)
        detail = {"instance-id": a.cloud_instance_id}
        duplicate = {"id": warning, "detail-type": SPOT_WARNING, "time": t, "detail": detail}
        account.send_raw(EAST, json.dumps(duplicate))
        again = await fresh.interruption_notices()
        assert await fresh.interruption_notices() == []
    got = {(n.node_id, n.cloud_instance_id, n.pool, n.deadline_s) for n in notices}
    assert got == {
        ("n-a", a.cloud_instance_id, SPOT, t_s + 120.0),
        ("n-b", b.cloud_instance_id, SPOT, t_s + 120.0),
        ("n-c", c.cloud_instance_id, OD, t_s),
    }
    assert [n.node_id for n in again] == ["n-a"]  # the new event, not the duplicate


def test_parse_event_reads_eventbridge_shapes() -> None:
    body = (
        '{"id": "e1", "detail-type": "EC2 Instance State-change Notification",'
        ' "time": "2026-01-01T00:00:10Z", "detail": {"instance-id": "i-1", "state": "stopped"}}'
    )
    ev = parse_event(body)
    assert ev is not None and (ev.event_id, ev.instance_id, ev.state) == ("e1", "i-1", "stopped")
    assert ev.time_s == 1767225610.0
    assert parse_event("[]") is None
    assert parse_event('{"detail-type": "EC2 Spot Instance Interruption Warning"}') is None
    assert parse_event(body.replace("2026-01-01T00:00:10Z", "yesterday")) is None


# ---------------------------------------------------------------------- prices


async def test_spot_prices_refresh_from_the_price_history(
    account: MotoAccount, proxy: FaultProxy
) -> None:
    now = [1000.0]
    catalog = {o.pool: o for o in OFFERINGS}
    async with provider(
        account, endpoint_url=proxy.url, spot_price_ttl_s=300.0, clock=lambda: now[0]
    ) as p:
        first = {o.pool: o for o in await p.offerings()}
        assert proxy.calls["DescribeSpotPriceHistory"] == 2  # one per region
        now[0] += 299.0
        await p.offerings()
        assert proxy.calls["DescribeSpotPriceHistory"] == 2  # cached within the TTL
        now[0] += 1.0
        await p.offerings()
        assert proxy.calls["DescribeSpotPriceHistory"] == 4
    assert {pool.region for pool in first} == {EAST, WEST}
    assert all(pool.cloud is Cloud.AWS for pool in first)
    # moto answers 0.00001 USD/h for every spot price; on-demand stays at the catalog's.
    assert catalog[SPOT].price_is_estimate and catalog[SPOT].usd_per_hour > 0.01
    assert first[SPOT].usd_per_hour == pytest.approx(0.00001)
    assert not first[SPOT].price_is_estimate
    assert first[OD] == catalog[OD]


async def test_a_failed_price_refresh_keeps_the_catalog_prices(
    account: MotoAccount, proxy: FaultProxy
) -> None:
    proxy.inject("DescribeSpotPriceHistory", "RequestLimitExceeded", 503)
    proxy.inject("DescribeSpotPriceHistory", "RequestLimitExceeded", 503)
    now = [0.0]
    async with provider(account, endpoint_url=proxy.url, clock=lambda: now[0]) as p:
        stale = {o.pool: o for o in await p.offerings()}
        now[0] += 60.0  # a failed region is tried again after a minute, not a whole TTL
        fresh = {o.pool: o for o in await p.offerings()}
    catalog: dict[Pool, Offering] = {o.pool: o for o in OFFERINGS}
    assert stale[SPOT] == catalog[SPOT]
    assert fresh[SPOT].usd_per_hour == pytest.approx(0.00001)


# ---------------------------------------------------------------------- config and hygiene


def test_config_rejects_what_cannot_work() -> None:
    region = {"name": "us-east-1", "image_id": "ami-1", "subnets": {"us-east-1a": "subnet-1"}}
    AwsConfig.model_validate({"owner": "fleet-1", "regions": [region]})
    bad: list[dict[str, Any]] = [
        {"owner": "fleet-1", "regions": [region], "surprise": 1},
        {"owner": "", "regions": [region]},
        {"owner": "fleet 1", "regions": [region]},
        {"owner": "fleet-1", "regions": []},
        {"owner": "fleet-1", "regions": [region, region]},
        {"owner": "fleet-1", "regions": [{**region, "image_id": ""}]},
        {"owner": "fleet-1", "regions": [{**region, "subnets": {}}]},
        {"owner": "fleet-1", "regions": [{**region, "subnets": {"us-west-2a": "subnet-1"}}]},
        {"owner": "fleet-1", "regions": [{**region, "subnets": {"us-east-1a": "sg-1"}}]},
        {"owner": "fleet-1", "regions": [{**region, "name": "mars"}]},
        {"owner": "fleet-1", "regions": [region], "endpoint_url": "localhost:5000"},
    ]
    for doc in bad:
        with pytest.raises(ValidationError):
            AwsConfig.model_validate(doc)


def test_client_tokens_fit_ec2_limits() -> None:
    assert client_token("n-1") == "n-1"
    assert client_token("n-1", "us-east-1b") == "n-1@us-east-1b"
    long = client_token("x" * 100)
    assert len(long) == 64 and long.isascii() and long != client_token("x" * 101)


async def test_credentials_never_reach_the_logs(
    account: MotoAccount, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="adapters.aws")
    proxy.inject("RunInstances", "RequestLimitExceeded", 503)
    async with provider(account, endpoint_url=proxy.url) as p:
        with pytest.raises(Transient):
            await p.launch(LaunchRequest("n-log", "m", OD))
        await p.launch(LaunchRequest("n-log", "m", OD))
        await p.list_instances()
    assert "aws_launch node_id=n-log" in caplog.text
    assert SECRET_KEY not in caplog.text and ACCESS_KEY not in caplog.text


# ---------------------------------------------------------------------- IAM policy

POLICY = Path(__file__).resolve().parent.parent / "deploy" / "aws" / "iam-policy.json"
IAM_ACTION = {"DeleteMessageBatch": "DeleteMessage"}  # batch calls are authorised per message


async def test_iam_policy_allows_exactly_the_calls_made(
    account: MotoAccount, proxy: FaultProxy
) -> None:
    async with provider(account, endpoint_url=proxy.url) as p:
        spot = await p.launch(LaunchRequest("n-iam", "m", SPOT))
        await p.launch(LaunchRequest("n-iam-od", "m", OD))
        await p.list_instances()
        await p.offerings()
        account.send_event(EAST, SPOT_WARNING, spot.cloud_instance_id, "2026-01-01T00:00:00Z")
        assert await p.interruption_notices()
        await p.terminate("n-iam")
    sqs_actions = {"ReceiveMessage", "DeleteMessageBatch"}
    made = {f"{'sqs' if a in sqs_actions else 'ec2'}:{IAM_ACTION.get(a, a)}" for a in proxy.calls}
    doc = json.loads(POLICY.read_text(encoding="utf-8"))
    allowed: set[str] = set()
    for st in doc["Statement"]:
        assert st["Effect"] == "Allow" and "*" not in "".join(st["Action"])
        allowed.update([st["Action"]] if isinstance(st["Action"], str) else st["Action"])
    # CreateTags is authorised as part of RunInstances (TagSpecifications), not called.
    assert made == allowed - {"ec2:CreateTags"}
    [terminate] = [st for st in doc["Statement"] if st["Action"] == "ec2:TerminateInstances"]
    assert terminate["Condition"]["StringEquals"] == {"ec2:ResourceTag/capsched-owner": "OWNER_ID"}
