"""Model-server faults in the simulated cloud and in replays (issue 21): seeded so every
policy meets the same ones, visible to the reconciler through the health probe, and
survived by capsched with `[health]` on."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import pytest

from adapters.sim import SimCloud, SimFaults, SimHealthProbe
from scheduler.config import Config
from scheduler.domain import Cloud, Market, Node, NodeState, Pool
from scheduler.fleet.catalog import load_catalog
from scheduler.loop.store import StateStore
from scheduler.ports.provider import LaunchRequest
from simulations.engine import replay
from simulations.scenario import ScenarioError, parse_scenario, sim_faults

sys.path.insert(0, str(Path(__file__).parent))
from sim_helpers import OD_POOL, small_config, world

OTHER = Pool(Cloud.AWS, "us-east-1", "", "g6e.2xlarge", Market.ON_DEMAND)


def cloud(faults: SimFaults, seed: int = 7) -> SimCloud:
    cat = load_catalog()
    return SimCloud(cat.offerings, cat.instance_types, boot_time_s=60.0, seed=seed, faults=faults)


async def launch(c: SimCloud, n: int, pools: list[Pool]) -> list[str]:
    ids = [f"n{i:03d}" for i in range(n)]
    for i, node_id in enumerate(ids):
        await c.launch(LaunchRequest(node_id, "llama-3.1-8b", pools[i % len(pools)]))
    return ids


async def test_the_kth_launch_meets_the_same_fault_whatever_the_pool() -> None:
    faults = SimFaults(never_healthy_share=0.3, sick_per_node_day=24.0)

    async def fates(seed: int, pools: list[Pool]) -> list[list[bool]]:
        c = cloud(faults, seed)
        ids = await launch(c, 40, pools)
        out = []
        for t in (120.0, 3600.0, 4 * 3600.0):
            c.advance_to(t)
            out.append([c.serves(i) for i in ids])
        return out

    a = await fates(7, [OD_POOL])
    assert a == await fates(7, [OTHER, OD_POOL])  # another policy, other pools: same faults
    assert 0 < a[0].count(False) < 40  # some of 40 launches at 30 % never serve, not all
    assert a[2].count(True) < a[0].count(True)  # and serving ones turn sick over time
    assert a != await fates(8, [OD_POOL])  # another seed draws other faults


async def test_sick_nodes_stop_serving_and_running_still_lists_them() -> None:
    c = cloud(SimFaults(sick_per_node_day=48.0))  # about one sick node per half hour each
    ids = await launch(c, 10, [OD_POOL])
    c.advance_to(120.0)
    assert len(list(c.serving())) == 10
    c.advance_to(6 * 3600.0)
    serving = {i.node_id for i in c.serving()}
    running = {i.node_id for i in c.running()}
    assert running == set(ids)  # the cloud still runs them: only health checks tell
    assert len(serving) < 10
    probe = SimHealthProbe(c)
    sick = sorted(running - serving)
    node = Node(sick[0], "llama-3.1-8b", OD_POOL, NodeState.READY)
    assert await probe.check(node) is False


async def test_a_bad_pool_fails_every_boot_inside_its_window_only() -> None:
    faults = SimFaults(bad_pools=frozenset({OD_POOL}), bad_from_s=1000.0, bad_until_s=2000.0)
    c = cloud(faults)
    await c.launch(LaunchRequest("before", "m", OD_POOL))
    c.advance_to(1000.0)
    await c.launch(LaunchRequest("during", "m", OD_POOL))
    await c.launch(LaunchRequest("elsewhere", "m", OTHER))
    c.advance_to(2000.0)
    await c.launch(LaunchRequest("after", "m", OD_POOL))
    c.advance_to(3000.0)
    assert {i: c.serves(i) for i in ("before", "during", "elsewhere", "after")} == {
        "before": True,
        "during": False,
        "elsewhere": True,
        "after": True,
    }


def test_scenario_faults_resolve_pools_and_name_bad_keys(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    s = parse_scenario(
        '[faults]\nbad_pools = "aws/us-east-1/g6e.xlarge/*"\nbad_from_min = 10\n', path
    )
    f = sim_faults(s, path, load_catalog().offerings, start_s=1000.0)
    assert f is not None
    assert OD_POOL in f.bad_pools and OTHER not in f.bad_pools
    assert (f.bad_from_s, f.bad_until_s) == (1600.0, math.inf)
    assert sim_faults(parse_scenario("", path), path, (), 0.0) is None
    bad = parse_scenario('[faults]\nbad_pools = "nowhere/*"\n', path)
    with pytest.raises(ScenarioError, match=r"faults\.bad_pools: 'nowhere/\*' matches no pool"):
        sim_faults(bad, path, load_catalog().offerings, 0.0)
    with pytest.raises(ScenarioError, match=r"faults\.never_healthy_share"):
        parse_scenario("[faults]\nnever_healthy_share = 2\n", path)


def health_config(enabled: bool) -> Config:
    base = small_config().model_dump(mode="json", exclude_none=True)
    base["health"] = {
        "enabled": enabled,
        "interval_s": 60,
        "failure_threshold": 2,
        "boot_margin_s": 300,
    }
    base["planning"] = {"default_boot_time_s": 300}
    base["solver"] = {"node_limit": 2000}
    return Config.model_validate(base)


async def test_capsched_with_health_keeps_slo_through_a_day_of_faults(tmp_path: Path) -> None:
    # Harsher than the 2 % of nodes per day: one launch in ten never serves and
    # each serving node turns sick at 50 % per day, so a one-day replay of a small fleet
    # meets several.
    # Its favourite pool fails every boot until the trace starts, too: the fleet the
    # warm-up launches there never serves.
    faults = SimFaults(
        never_healthy_share=0.1,
        sick_per_node_day=0.5,
        bad_pools=frozenset({OD_POOL}),
        bad_until_s=0.0,
    )
    demand = [40.0] * 1440

    async def run(enabled: bool, name: str) -> tuple[dict[str, float], Path]:
        w = world(health_config(enabled), demand, boot_time_s=300.0, warmup_s=600.0)
        db = tmp_path / f"{name}.db"
        r = await replay(dataclasses.replace(w, faults=faults), "capsched", db)
        return r.summary(None), db

    on, db = await run(True, "on")
    off, _ = await run(False, "off")
    assert on["slo_attainment"] >= 0.995, on
    assert off["slo_attainment"] < 0.9  # blind to the faults, it kept dead nodes as capacity
    store = StateStore(db)
    try:
        entered = [e["new"] for e in store.events()]
    finally:
        store.close()
    assert entered.count("unhealthy") >= 1 and entered.count("failed") >= 1
