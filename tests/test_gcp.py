"""The GCP provider over the wire: google-cloud-compute's REST transport against a fake.

The fake Compute API (`test_gcp_support.FakeCompute`) runs on 127.0.0.1; the provider
talks to it with its real client (``url_scheme="http"``, anonymous credentials).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from google.cloud import compute_v1
from pydantic import ValidationError
from test_gcp_support import FakeCompute, credentials

from adapters.gcp import (
    GcpProvider,
    _address,
    error_class,
    instance_name,
    label_value,
    normalise_code,
    request_id,
    zone_order,
)
from scheduler.domain import Cloud, Market, Pool
from scheduler.fleet.catalog import load_catalog
from scheduler.ports.provider import (
    InstanceState,
    InsufficientCapacity,
    LaunchRequest,
    NotFound,
    ProviderError,
    QuotaExceeded,
    Transient,
)
from scheduler.sections.gcp import GcpConfig

A, B, EAST = "us-central1-a", "us-central1-b", "us-east4-a"
OD = Pool(Cloud.GCP, "us-central1", A, "g2-standard-8", Market.ON_DEMAND)
SPOT = Pool(Cloud.GCP, "us-central1", A, "a2-highgpu-1g", Market.SPOT)
SPOT_B = Pool(Cloud.GCP, "us-central1", B, "g2-standard-8", Market.SPOT)
EAST_OD = Pool(Cloud.GCP, "us-east4", EAST, "g2-standard-8", Market.ON_DEMAND)
OFFERINGS = load_catalog().offerings
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_RE = re.compile(r"^[a-z0-9_-]{0,63}$")


@pytest.fixture
def fake() -> Iterator[FakeCompute]:
    with FakeCompute().serve() as f:
        yield f


def provider(fake: FakeCompute, **kw: Any) -> GcpProvider:
    clock = kw.pop("clock", None)
    extra: dict[str, Any] = {"clock": clock} if clock else {}
    return GcpProvider(fake.config(**kw), OFFERINGS, credentials=credentials(), **extra)


def inserts(fake: FakeCompute) -> list[dict[str, Any]]:
    return [
        r.body
        for r in fake.received
        if r.method == "POST" and r.path.endswith("/instances") and r.body is not None
    ]


# ---------------------------------------------------------------------- pure helpers


def test_names_and_labels_follow_gce_rules() -> None:
    for node_id in ("n-1", "Node_1.LONG/" * 12, "9-starts-with-digit", "---", "é"):
        name = instance_name("owner", node_id)
        assert NAME_RE.match(name), name
        assert LABEL_RE.match(label_value(node_id)), label_value(node_id)
    assert instance_name("a", "n-1") != instance_name("b", "n-1")  # distinct per owner
    assert label_value("n-1") == "n-1"  # already valid: unchanged
    assert label_value("Node.1") != label_value("node-1")  # sanitised alike, kept apart
    assert request_id("o", "n-1") == request_id("o", "n-1") != request_id("o", "n-1", zone=A)
    assert zone_order([B, A], "n-1") in ([A, B], [B, A])


@pytest.mark.parametrize(
    ("codes", "status", "typed"),
    [
        (["ZONE_RESOURCE_POOL_EXHAUSTED"], 0, InsufficientCapacity),
        (["ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"], 503, InsufficientCapacity),
        (["RESOURCE_EXHAUSTED"], 0, InsufficientCapacity),
        (["RESOURCE_EXHAUSTED"], 429, Transient),
        (["QUOTA_EXCEEDED"], 0, QuotaExceeded),
        (["quotaExceeded"], 403, QuotaExceeded),
        (["forbidden"], 403, QuotaExceeded),
        (["rateLimitExceeded"], 403, Transient),
        (["notFound"], 404, NotFound),
        ([], 404, NotFound),
        ([], 429, Transient),
        (["backendError"], 500, Transient),
        ([], 503, Transient),
        (["SOMETHING_NEW"], 400, Transient),
    ],
)
def test_error_mapping(codes: list[str], status: int, typed: type[Exception]) -> None:
    assert error_class(codes, status) is typed
    assert normalise_code("userRateLimitExceeded") == "USER_RATE_LIMIT_EXCEEDED"


def test_config_rejects_what_gcp_would() -> None:
    base: dict[str, Any] = {
        "project": "capsched-test",
        "owner": "fleet-1",
        "image": "projects/debian-cloud/global/images/family/debian-12",
        "zones": [{"name": A, "subnetwork": "regions/us-central1/subnetworks/s"}],
    }
    GcpConfig.model_validate(base)
    for bad in (
        {"owner": "Fleet.1"},  # not a label value
        {"owner": "x" * 64},
        {"project": "Bad_Project"},
        {"zones": [{"name": "us-central1", "subnetwork": "s"}]},  # a region, not a zone
        {"zones": [{"name": A, "subnetwork": "regions/us-east4/subnetworks/s"}]},
        {"zones": [{"name": A, "subnetwork": "s"}, {"name": A, "subnetwork": "s"}]},
        {"image": ""},
        {"endpoint": "127.0.0.1:8080"},
        {"network_tags": ["Not A Tag"]},
    ):
        with pytest.raises(ValidationError):
            GcpConfig.model_validate(base | bad)


# ---------------------------------------------------------------------- launch


async def test_on_demand_launch_is_labelled_and_placed_as_configured(fake: FakeCompute) -> None:
    async with provider(fake) as p:
        inst = await p.launch(LaunchRequest("n-od", "llama-3-8b", OD))
    assert inst.node_id == "n-od" and inst.pool == OD and inst.model == "llama-3-8b"
    assert inst.state is InstanceState.RUNNING
    [body] = inserts(fake)
    assert body["labels"] == {
        "capsched-owner": "test-owner",
        "capsched-node": "n-od",
        "capsched-model": "llama-3-8b",
    }
    assert body["machineType"] == f"zones/{A}/machineTypes/g2-standard-8"
    assert body["name"] == instance_name("test-owner", "n-od")
    assert body["scheduling"] == {"onHostMaintenance": "TERMINATE", "automaticRestart": True}
    subnet = "regions/us-central1/subnetworks/inference"
    assert body["networkInterfaces"] == [{"subnetwork": subnet}]
    assert body["tags"] == {"items": ["capsched"]}
    assert body["disks"][0]["boot"] and body["disks"][0]["autoDelete"]
    assert body["disks"][0]["initializeParams"]["sourceImage"].endswith("family/debian-12")
    assert "guestAccelerators" not in body  # g2 bundles its L4
    meta = {i["key"]: i["value"] for i in body["metadata"]["items"]}
    assert meta == {
        "capsched-node": "n-od",
        "capsched-model": "llama-3-8b",
        "capsched-pool": OD.key,
    }
    [post] = [r for r in fake.received if r.method == "POST" and r.path.endswith("/instances")]
    assert post.query["requestId"] == request_id("test-owner", "n-od")
    assert [i["name"] for i in fake.ours("test-owner")] == [body["name"]]


async def test_spot_launch_asks_for_spot_deleted_on_preemption(fake: FakeCompute) -> None:
    async with provider(fake) as p:
        inst = await p.launch(LaunchRequest("n-spot", "m", SPOT))
        listed = await p.list_instances()
    [body] = inserts(fake)
    assert body["scheduling"] == {
        "provisioningModel": "SPOT",
        "instanceTerminationAction": "DELETE",
        "onHostMaintenance": "TERMINATE",
        "automaticRestart": False,
    }
    assert listed == [inst] and inst.pool == SPOT


async def test_instances_carry_their_internal_ip(fake: FakeCompute) -> None:
    async with provider(fake) as p:
        launched = await p.launch(LaunchRequest("n-ip", "m", OD))
        [listed] = await p.list_instances()
    [raw] = fake.ours("test-owner")
    ip = raw["networkInterfaces"][0]["networkIP"]
    assert ip and launched.address == listed.address == ip


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            {"networkInterfaces": [{"networkIP": "10.128.0.7"}, {"networkIP": "10.9.0.1"}]},
            "10.128.0.7",
        ),
        ({"networkInterfaces": [{"ipv6Address": "2600:1900::7"}]}, "2600:1900::7"),
        ({"networkInterfaces": [{"subnetwork": "regions/r/subnetworks/s"}]}, None),
        ({}, None),
    ],
)
def test_address_is_the_first_interface_internal_ip(
    doc: dict[str, Any], expected: str | None
) -> None:
    assert _address(compute_v1.Instance.from_json(json.dumps(doc))) == expected


async def test_accelerators_are_attached_only_where_configured(fake: FakeCompute) -> None:
    n1 = Pool(Cloud.GCP, "us-central1", A, "n1-standard-8", Market.ON_DEMAND)
    accel = {"n1-standard-8": {"type": "nvidia-tesla-t4", "count": 1}}
    async with provider(fake, accelerators=accel) as p:
        await p.launch(LaunchRequest("n-t4", "m", n1))
    [body] = inserts(fake)
    assert body["guestAccelerators"] == [
        {"acceleratorType": f"zones/{A}/acceleratorTypes/nvidia-tesla-t4", "acceleratorCount": 1}
    ]


async def test_odd_node_ids_are_sanitised_and_read_back_exactly(fake: FakeCompute) -> None:
    node_id = "Fleet.Node/42_" + "x" * 70
    async with provider(fake) as p:
        inst = await p.launch(LaunchRequest(node_id, "Llama-3.1-8B", OD))
        [listed] = await p.list_instances()
        again = await p.launch(LaunchRequest(node_id, "Llama-3.1-8B", OD))
    [raw] = fake.ours("test-owner")
    assert NAME_RE.match(raw["name"])
    assert all(LABEL_RE.match(v) for v in raw["labels"].values())
    assert inst.node_id == listed.node_id == node_id and listed.model == "Llama-3.1-8B"
    assert again.cloud_instance_id == inst.cloud_instance_id


async def test_retried_launch_returns_the_first_instance(fake: FakeCompute) -> None:
    request = LaunchRequest("n-retry", "m", SPOT)
    async with provider(fake) as p:
        first = await p.launch(request)
        again = await p.launch(request)
    async with provider(fake) as restarted:  # no cache: only the label lookup
        after_restart = await restarted.launch(request)
    assert first.cloud_instance_id == again.cloud_instance_id == after_restart.cloud_instance_id
    assert len(fake.ours("test-owner")) == 1 and fake.calls["insert"] == 1


async def test_lost_answer_then_retry_makes_one_instance(fake: FakeCompute) -> None:
    fake.inject("insert", "backendError", 503, forward=True)  # done, but the client sees 503
    request = LaunchRequest("n-lost", "m", OD)
    async with provider(fake) as p:
        with pytest.raises(Transient):
            await p.launch(request)
        assert len(fake.ours("test-owner")) == 1
        inst = await p.launch(request)
    [raw] = fake.ours("test-owner")
    assert raw["id"] == inst.cloud_instance_id
    assert fake.calls["insert"] == 1  # the retry found it by label


async def test_same_request_id_returns_the_same_operation(fake: FakeCompute) -> None:
    request = LaunchRequest("n-rid", "m", OD)
    async with provider(fake) as p:
        first = await p.launch(request)
        fake.list_lag = True  # the label lookup misses: the insert goes out again...
        again = await p.launch(request)
    # ...with the same requestId, and GCE answers with the first operation.
    rids = [r.query["requestId"] for r in fake.received if r.query.get("requestId")]
    assert rids == [request_id("test-owner", "n-rid")] * 2
    assert again.cloud_instance_id == first.cloud_instance_id and fake.created == 1


async def test_insert_of_an_existing_name_returns_that_instance(fake: FakeCompute) -> None:
    request = LaunchRequest("n-409", "m", OD)
    async with provider(fake) as p:
        first = await p.launch(request)
    fake.request_ids.clear()  # GCE's requestId window has passed
    fake.list_lag = True  # and the label lookup misses
    async with provider(fake) as p:
        again = await p.launch(request)  # the insert gets 409 "already exists"
    assert again.cloud_instance_id == first.cloud_instance_id
    assert fake.calls["insert"] == 2 and fake.created == 1


async def test_zone_operation_is_waited_on(fake: FakeCompute) -> None:
    fake.op_polls = 3
    async with provider(fake) as p:
        inst = await p.launch(LaunchRequest("n-wait", "m", OD))
    assert inst.state is InstanceState.RUNNING
    assert fake.calls["wait"] == 3


async def test_operation_that_never_finishes_is_transient(fake: FakeCompute) -> None:
    fake.op_polls = 10**6
    async with provider(fake, operation_timeout_s=0.05) as p:
        with pytest.raises(Transient, match="not done within"):
            await p.launch(LaunchRequest("n-slow", "m", OD))
        fake.op_polls = 0
        [op] = [op for op in fake.operations.values() if op["operationType"] == "insert"]
        fake._complete(A, op)
        inst = await p.launch(LaunchRequest("n-slow", "m", OD))  # the retry finds it
    assert inst.state is InstanceState.RUNNING and fake.calls["insert"] == 1


async def test_zone_less_pool_falls_back_to_another_zone_on_capacity(fake: FakeCompute) -> None:
    pool = Pool(Cloud.GCP, "us-central1", "", "g2-standard-8", Market.SPOT)
    fake.inject("insert", "ZONE_RESOURCE_POOL_EXHAUSTED")  # whichever zone is tried first
    async with provider(fake) as p:
        inst = await p.launch(LaunchRequest("n-any", "m", pool))
    zones = [r.path.split("/")[6] for r in fake.received if r.path.endswith("/instances")]
    posted = [
        r.path.split("/")[6]
        for r in fake.received
        if r.method == "POST" and r.path.endswith("/instances")
    ]
    assert len(posted) == 2 and posted[0] != posted[1] and set(posted) == {A, B}
    assert inst.pool == pool and set(zones) <= {A, B}
    [raw] = fake.ours("test-owner")
    assert raw["zone"].endswith(posted[1])


# ---------------------------------------------------------------------- typed errors


async def test_capacity_error_in_the_operation_is_insufficient_capacity(fake: FakeCompute) -> None:
    fake.inject("insert", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", zone=A)
    async with provider(fake) as p:
        with pytest.raises(InsufficientCapacity) as exc:
            await p.launch(LaunchRequest("n-cap", "m", SPOT))
        assert await p.list_instances() == []
    assert exc.value.pool == SPOT
    assert fake.created == 0


@pytest.mark.parametrize(
    ("reason", "status", "typed"),
    [
        ("quotaExceeded", 403, QuotaExceeded),
        ("QUOTA_EXCEEDED", 0, QuotaExceeded),  # as an operation error
        ("rateLimitExceeded", 429, Transient),
        ("backendError", 500, Transient),
        ("backendError", 503, Transient),
    ],
)
async def test_launch_errors_come_out_typed(
    fake: FakeCompute, reason: str, status: int, typed: type[ProviderError]
) -> None:
    fake.inject("insert", reason, status)
    async with provider(fake) as p:
        with pytest.raises(typed) as exc:
            await p.launch(LaunchRequest("n-err", "m", OD))
    assert exc.value.pool == OD
    assert fake.created == 0


async def test_unconfigured_zone_is_not_found(fake: FakeCompute) -> None:
    elsewhere = Pool(Cloud.GCP, "europe-west4", "europe-west4-a", "g2-standard-8", Market.SPOT)
    aws = Pool(Cloud.AWS, "us-east-1", "", "g5.xlarge", Market.SPOT)
    async with provider(fake) as p:
        for pool in (elsewhere, aws):
            with pytest.raises(NotFound):
                await p.launch(LaunchRequest("n-nowhere", "m", pool))
    assert fake.calls["insert"] == 0


async def test_unreachable_endpoint_is_transient() -> None:
    with FakeCompute().serve() as gone:
        cfg = gone.config(call_timeout_s=2.0)
    p = GcpProvider(cfg, OFFERINGS, credentials=credentials())
    async with p:
        with pytest.raises(Transient):
            await p.list_instances()
        with pytest.raises(Transient):
            await p.launch(LaunchRequest("n-x", "m", OD))


# ---------------------------------------------------------------------- list / delete


async def test_list_covers_every_zone_and_only_our_instances(fake: FakeCompute) -> None:
    async with provider(fake) as p, provider(fake, owner="someone-else") as q:
        await p.launch(LaunchRequest("a-1", "m", OD))
        await p.launch(LaunchRequest("b-1", "m", SPOT_B))
        await p.launch(LaunchRequest("east-1", "m", EAST_OD))
        await q.launch(LaunchRequest("foreign", "m", OD))
        listed = await p.list_instances()
    assert [(i.node_id, i.pool.zone, i.pool.market) for i in listed] == [
        ("a-1", A, Market.ON_DEMAND),
        ("b-1", B, Market.SPOT),
        ("east-1", EAST, Market.ON_DEMAND),
    ]
    [agg] = [r for r in fake.received if r.path.endswith("/aggregated/instances")]
    assert agg.query["filter"] == '(labels.capsched-owner = "test-owner")'


async def test_an_unreachable_zone_fails_the_listing_not_the_other_calls(
    fake: FakeCompute,
) -> None:
    async with provider(fake) as p:
        await p.launch(LaunchRequest("a-1", "m", OD))
        fake.unreachable.add(B)
        with pytest.raises(Transient, match=B) as exc:
            await p.list_instances()
        assert A not in str(exc.value)
        inst = await p.launch(LaunchRequest("a-2", "m", OD))  # zone A still launches
        await p.terminate("a-1")
        fake.unreachable.clear()
        listed = await p.list_instances()
    assert inst.pool.zone == A
    assert [i.node_id for i in listed] == ["a-2"]


async def test_one_held_zone_does_not_stall_the_others(fake: FakeCompute) -> None:
    release = fake.hold(B)
    async with provider(fake) as p:
        slow = asyncio.create_task(p.launch(LaunchRequest("b-slow", "m", SPOT_B)))
        fast = [await p.launch(LaunchRequest(f"a-{i}", "m", OD)) for i in range(3)]
        assert not slow.done()  # zone B is still held while zone A launched three
        release.set()
        b = await slow
    assert [i.pool.zone for i in fast] == [A, A, A] and b.pool.zone == B


async def test_terminate_twice_and_of_unknown_nodes_is_fine(fake: FakeCompute) -> None:
    async with provider(fake) as p:
        inst = await p.launch(LaunchRequest("n-del", "m", OD))
        await p.terminate("n-del")
        await p.terminate("n-del")
        await p.terminate("never-launched")
        assert await p.list_instances() == []
    async with provider(fake) as restarted:  # no cache: deletes by name in every zone
        await restarted.terminate("n-del")
    assert fake.ours("test-owner") == [] and inst.node_id == "n-del"
    deletes = [r.path for r in fake.received if r.method == "DELETE"]
    assert deletes[0].endswith(f"/zones/{A}/instances/{instance_name('test-owner', 'n-del')}")


async def test_terminate_while_a_zone_fails_is_transient(fake: FakeCompute) -> None:
    fake.inject("delete", "backendError", 500, zone=B)
    async with provider(fake) as p:
        with pytest.raises(Transient, match=B):
            await p.terminate("n-unknown")  # zone B cannot say it is not there
        await p.terminate("n-unknown")  # the retry goes through


async def test_a_deleting_instance_is_listed_as_terminating(fake: FakeCompute) -> None:
    fake.op_polls = 5  # the delete operation stays RUNNING, the instance STOPPING
    async with provider(fake) as p:
        fake.op_polls = 0
        await p.launch(LaunchRequest("n-stop", "m", SPOT))
        fake.op_polls = 5
        await p.terminate("n-stop")
        [inst] = await p.list_instances()
    assert inst.state is InstanceState.TERMINATING  # not PREEMPTED: we asked for it


# ---------------------------------------------------------------------- preemption


async def test_preemption_is_listed_and_noticed_once(fake: FakeCompute) -> None:
    now = 1_900_000_000.0
    async with provider(fake, clock=lambda: now) as p:
        inst = await p.launch(LaunchRequest("n-pre", "m", SPOT))
        await p.launch(LaunchRequest("n-od", "m", OD))
        assert await p.interruption_notices() == []
        fake.preempt(A, instance_name("test-owner", "n-pre"))
        listed = {i.node_id: i.state for i in await p.list_instances()}
        notices = await p.interruption_notices()
        again = await p.interruption_notices()
    assert listed == {"n-pre": InstanceState.PREEMPTED, "n-od": InstanceState.RUNNING}
    [notice] = notices
    assert (notice.node_id, notice.cloud_instance_id, notice.pool) == (
        "n-pre",
        inst.cloud_instance_id,
        SPOT,
    )
    assert notice.deadline_s == now
    assert again == []
    ops = [r for r in fake.received if r.path.endswith("/operations")]
    assert ops and all(
        r.query["filter"] == 'operationType = "compute.instances.preempted"' for r in ops
    )


async def test_notices_skip_a_failing_zone(fake: FakeCompute) -> None:
    async with provider(fake) as p:
        await p.launch(LaunchRequest("n-pre", "m", SPOT))
        fake.preempt(A, instance_name("test-owner", "n-pre"))
        fake.inject("operations", "backendError", 500, zone=B)
        notices = await p.interruption_notices()
    assert [n.node_id for n in notices] == ["n-pre"]


async def test_offerings_are_the_catalogs_for_configured_zones(fake: FakeCompute) -> None:
    async with provider(fake) as p:
        offers = await p.offerings()
    assert offers and {o.pool.zone for o in offers} <= {A, B, EAST}
    assert all(o.pool.cloud is Cloud.GCP for o in offers)


async def test_credentials_and_bodies_are_never_logged(
    fake: FakeCompute, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.inject("insert", "quotaExceeded", 403)
    async with provider(fake) as p:
        with pytest.raises(QuotaExceeded):
            await p.launch(LaunchRequest("n-log", "m", OD))
        await p.launch(LaunchRequest("n-log2", "m", OD))
    text = caplog.text
    assert "debian-12" not in text and "serviceAccounts" not in text
    assert "authorization" not in text.lower()
    assert "gcp_error" in text and "quotaExceeded" in text
