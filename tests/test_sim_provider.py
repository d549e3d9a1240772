"""The simulated cloud against the provider contract, and its billing, boot and spot models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from adapters.sim import SimCloud, SpotTrace, SpotTraceError, fake_address, load_spot_trace
from adapters.sim_persist import PersistentSimCloud
from scheduler.domain import Cloud, InstanceType, Market, Offering, Pool
from scheduler.ports.provider import (
    InstanceState,
    InsufficientCapacity,
    LaunchRequest,
    QuotaExceeded,
    Transient,
)
from simulations.engine import _held_before_start

ITYPE = InstanceType(Cloud.AWS, "g6.xlarge", "L4", 1, 24.0, 4, 16.0)
GTYPE = InstanceType(Cloud.GCP, "g2-standard-4", "L4", 1, 24.0, 4, 16.0)
OD = Pool(Cloud.AWS, "us-east-1", "", "g6.xlarge", Market.ON_DEMAND)
SPOT = Pool(Cloud.AWS, "us-east-1", "", "g6.xlarge", Market.SPOT)
GSPOT = Pool(Cloud.GCP, "us-central1", "us-central1-a", "g2-standard-4", Market.SPOT)
TYPES = {(Cloud.AWS, "g6.xlarge"): ITYPE, (Cloud.GCP, "g2-standard-4"): GTYPE}


def cloud(traces: dict[Pool, SpotTrace] | None = None, rate: float = 0.0, **kw: object) -> SimCloud:
    offerings = [
        Offering(OD, 1.0),
        Offering(SPOT, 0.4, interruptions_per_hour=rate),
        Offering(GSPOT, 0.3, interruptions_per_hour=rate),
    ]
    return SimCloud(offerings, TYPES, spot_traces=traces, boot_time_s=300.0, **kw)  # type: ignore[arg-type]


def trace(counts: list[int], gap_s: float = 60.0) -> SpotTrace:
    return SpotTrace("test", gap_s, np.asarray(counts, dtype=np.int64))


async def test_launch_boots_then_runs_and_is_idempotent() -> None:
    c = cloud()
    a = await c.launch(LaunchRequest("n1", "m", OD))
    b = await c.launch(LaunchRequest("n1", "m", OD))
    assert a == b and a.state is InstanceState.PENDING
    assert len(await c.list_instances()) == 1 and c.counters.launches == 1
    c.advance_to(299.0)
    assert (await c.list_instances())[0].state is InstanceState.PENDING
    c.advance_to(300.0)
    assert (await c.list_instances())[0].state is InstanceState.RUNNING
    assert [i.node_id for i in c.running()] == ["n1"]


async def test_one_node_for_one_hour_costs_its_price() -> None:
    c = cloud()
    await c.launch(LaunchRequest("n1", "m", OD))
    await c.launch(LaunchRequest("n2", "m", SPOT))
    c.advance_to(3600.0)
    usage = c.usage()
    assert usage.cost_by_market[Market.ON_DEMAND] == pytest.approx(1.0)
    assert usage.cost_by_market[Market.SPOT] == pytest.approx(0.4)
    assert usage.gpu_hours == pytest.approx(2.0)
    await c.terminate("n1")
    await c.terminate("n2")
    c.advance_to(7200.0)
    assert c.usage().cost_usd == pytest.approx(1.4)  # billing stopped at terminate


async def test_short_life_is_billed_a_minute() -> None:
    c = cloud()
    await c.launch(LaunchRequest("n1", "m", OD))
    c.advance_to(10.0)
    await c.terminate("n1")
    assert c.usage().cost_usd == pytest.approx(60 / 3600)


async def test_terminate_twice_or_unknown_is_fine() -> None:
    c = cloud()
    await c.launch(LaunchRequest("n1", "m", OD))
    await c.terminate("n1")
    await c.terminate("n1")
    await c.terminate("never-existed")
    assert await c.list_instances() == []
    assert c.counters.terminations == 1


async def test_injected_errors_are_typed_and_one_shot() -> None:
    c = cloud()
    c.inject_error("launch", QuotaExceeded("quota"))
    c.inject_error("list_instances", Transient("throttled"))
    with pytest.raises(QuotaExceeded):
        await c.launch(LaunchRequest("n1", "m", OD))
    with pytest.raises(Transient):
        await c.list_instances()
    await c.launch(LaunchRequest("n1", "m", OD))
    assert len(await c.list_instances()) == 1
    assert ("launch", "n1") in c.calls


async def test_unknown_or_unavailable_pool_is_insufficient_capacity() -> None:
    c = SimCloud([Offering(OD, 1.0, available=False)], TYPES)
    with pytest.raises(InsufficientCapacity) as info:
        await c.launch(LaunchRequest("n1", "m", OD))
    assert info.value.pool == OD
    with pytest.raises(InsufficientCapacity):
        await c.launch(LaunchRequest("n2", "m", SPOT))


async def test_stock_out_from_trace_refuses_launches() -> None:
    c = cloud({SPOT: trace([1, 0, 2])})
    await c.launch(LaunchRequest("a", "m", SPOT))
    with pytest.raises(InsufficientCapacity):  # the pool holds one
        await c.launch(LaunchRequest("b", "m", SPOT))
    assert c.counters.failed_launches == 1
    # A failed launch may be retried with the same id once there is room.
    c.advance_to(120.0)  # count 2 from here on (a, noticed at 60 s, no longer holds a slot)
    await c.launch(LaunchRequest("b", "m", SPOT))
    assert [i.node_id for i in await c.list_instances()] == ["a", "b"]


async def test_trace_drop_sends_notice_then_reclaims() -> None:
    c = cloud({SPOT: trace([1, 1, 0, 0, 0, 0, 1])})
    await c.launch(LaunchRequest("a", "m", SPOT))
    reached = c.advance_until_notice(600.0)
    assert reached == 120.0  # the tick at which the count fell to 0
    notices = await c.interruption_notices()
    assert [(n.node_id, n.deadline_s) for n in notices] == [("a", 240.0)]  # AWS: 120 s
    assert await c.interruption_notices() == []  # each notice once
    c.advance_to(239.0)
    assert (await c.list_instances())[0].state is InstanceState.PENDING  # still booting
    c.advance_to(240.0)
    assert (await c.list_instances())[0].state is InstanceState.PREEMPTED
    assert c.counters.preemptions == 1
    assert c.usage().cost_usd == pytest.approx(0.4 * 240 / 3600)
    c.advance_to(240.0 + 301.0)
    assert await c.list_instances() == []  # reclaimed instances drop off the listing


async def test_gcp_notice_is_30_s_and_only_the_excess_goes() -> None:
    c = cloud({GSPOT: trace([3, 1])})
    for n in ("a", "b", "c"):
        await c.launch(LaunchRequest(n, "m", GSPOT))
    c.advance_to(60.0)
    notices = await c.interruption_notices()
    assert len(notices) == 2 and all(n.deadline_s == 90.0 for n in notices)
    c.advance_to(90.0)
    states = sorted(i.state for i in await c.list_instances())
    assert states.count(InstanceState.PREEMPTED) == 2


async def test_random_interruptions_are_seeded() -> None:
    async def run(seed: int) -> list[tuple[str, float]]:
        c = cloud(rate=2.0, seed=seed)
        for i in range(20):
            await c.launch(LaunchRequest(f"n{i}", "m", SPOT))
        c.advance_to(3600.0)
        return [(n.node_id, n.deadline_s) for n in await c.interruption_notices()]

    first = await run(1)
    assert first == await run(1)
    assert first != await run(2)
    assert 10 <= len(first) <= 20  # rate 2/h: most of 20 instances get a notice in an hour


async def test_reveal_stockouts_marks_offering() -> None:
    c = cloud({SPOT: trace([0])}, reveal_stockouts=True)
    by_pool = {o.pool: o for o in await c.offerings()}
    assert not by_pool[SPOT].available and by_pool[OD].available
    hidden = cloud({SPOT: trace([0])})
    assert all(o.available for o in await hidden.offerings())


def test_spot_trace_file_errors(tmp_path: Path) -> None:
    good = tmp_path / "t.json"
    good.write_text(json.dumps({"metadata": {"gap_seconds": 30}, "data": [0, 1, 2]}))
    t = load_spot_trace(good, scale=2)
    assert list(t.counts) == [0, 2, 4] and t.capacity_at(95.0) == 0  # loops: tick 3 is tick 0
    for doc, what in (
        ({"metadata": {}, "data": [1]}, "gap_seconds"),
        ({"metadata": {"gap_seconds": 30}, "data": []}, "non-empty"),
        ({"metadata": {"gap_seconds": 30}, "data": [1, -1]}, r"data\[1\]"),
    ):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(doc))
        with pytest.raises(SpotTraceError, match=what):
            load_spot_trace(bad)


def test_cannot_go_back_in_time() -> None:
    c = cloud()
    c.advance_to(10.0)
    with pytest.raises(ValueError, match="back in time"):
        c.advance_to(5.0)


# ---------------------------------------------------------------------- addresses


async def test_instances_get_a_fake_private_address_by_instance_number() -> None:
    c = cloud()
    first = await c.launch(LaunchRequest("n1", "m", OD))
    second = await c.launch(LaunchRequest("n2", "m", OD))
    assert (first.address, second.address) == ("10.0.0.1", "10.0.0.2")
    assert {i.node_id: i.address for i in await c.list_instances()} == {
        "n1": "10.0.0.1",
        "n2": "10.0.0.2",
    }
    assert fake_address("sim-0000258") == "10.0.1.2"


async def test_node_address_points_every_instance_at_one_host() -> None:
    c = cloud(node_address="127.0.0.1")
    await c.launch(LaunchRequest("n1", "m", OD))
    await c.launch(LaunchRequest("n2", "m", OD))
    assert {i.address for i in await c.list_instances()} == {"127.0.0.1"}


async def test_a_state_saved_before_addresses_existed_still_loads(tmp_path: Path) -> None:
    old = cloud()
    await old.launch(LaunchRequest("n1", "m", OD))
    del old.__dict__["_node_address"]  # what a pickle written by the previous version holds
    saved = PersistentSimCloud(tmp_path / "sim.pickle", old)
    loaded = PersistentSimCloud(saved.path)
    [inst] = await loaded.list_instances()
    assert inst.address == "10.0.0.1"


@pytest.mark.timeout(60)
async def test_a_fractional_start_does_not_stall_at_a_trace_boundary() -> None:
    # A warm-up of boot time + tick with a fractional boot (540.6 s) started the replay at
    # a fractional virtual time; start + the next boundary then rounded back onto "now",
    # and advance_to looped at that instant for ever (every one-day replay hung).
    start = 1700157779.4
    held = SpotTrace("test", 300.0, np.full(100, 5, dtype=np.int64), offset_s=59.4)
    c = cloud({SPOT: held}, start_s=start)  # a boundary at start + 840.6
    await c.launch(LaunchRequest("n1", "m", SPOT))
    c.advance_to(1700158620.0)  # start + 840.6, computed as 840.5999999 relative
    c.advance_to(1700158620.0 + 600.0)
    assert [i.node_id for i in c.running()] == ["n1"]


@pytest.mark.timeout(60)
async def test_a_held_trace_boundary_just_after_now_does_not_stall() -> None:
    # The replay's held spot traces add the warm-up back onto a relative boundary; at a
    # large fractional start that sum could land on "now" however often it was stepped.
    start = 1700157779.4
    held = _held_before_start(SpotTrace("t", 300.0, np.full(100, 5, dtype=np.int64)), 840.6)
    c = cloud({SPOT: held}, start_s=start)
    await c.launch(LaunchRequest("n1", "m", SPOT))
    for k in range(1, 400):
        c.advance_to(start + k * 37.3)
    assert [i.node_id for i in c.running()] == ["n1"]
