"""Preemption storms (issue 22): a scenario key that reclaims a share of every spot pool's
nodes at once, the same rule for every policy; and the highest priority served through it."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from adapters.sim import SimCloud, SimStorm
from scheduler.config import DEFAULT_CONFIG_PATH
from scheduler.domain import Cloud, InstanceType, Market, Offering, Pool
from scheduler.ports.provider import InstanceState, InsufficientCapacity, LaunchRequest
from simulations.engine import run_policy
from simulations.scenario import ScenarioError, load_scenario, parse_scenario
from simulations.world import WorldSpec, build_world

sys.path.insert(0, str(Path(__file__).parent))

ITYPE = InstanceType(Cloud.AWS, "g6.xlarge", "L4", 1, 24.0, 4, 16.0)
OD = Pool(Cloud.AWS, "us-east-1", "", "g6.xlarge", Market.ON_DEMAND)
SPOT = Pool(Cloud.AWS, "us-east-1", "", "g6.xlarge", Market.SPOT)
SPOT2 = Pool(Cloud.AWS, "us-east-2", "", "g6.xlarge", Market.SPOT)
EMPTY = Pool(Cloud.AWS, "us-west-2", "", "g6.xlarge", Market.SPOT)
STORM_SCENARIO = (
    Path(__file__).resolve().parents[1] / "simulations/data/scenarios/preemption-storm.toml"
)


def cloud(storm: SimStorm | None) -> SimCloud:
    offerings = [Offering(OD, 1.0), *(Offering(p, 0.4) for p in (SPOT, SPOT2, EMPTY))]
    types = {(Cloud.AWS, "g6.xlarge"): ITYPE}
    return SimCloud(offerings, types, boot_time_s=60.0, random_interruptions=False, storm=storm)


async def running(c: SimCloud, pool: Pool) -> int:
    return sum(
        1 for i in await c.list_instances() if i.pool == pool and i.state is InstanceState.RUNNING
    )


async def test_a_storm_reclaims_its_share_of_each_pool_and_keeps_it_until_it_ends() -> None:
    storm = SimStorm(1000.0, 0.5, 3000.0, frozenset({SPOT, SPOT2, EMPTY}))
    c = cloud(storm)
    for i, pool in enumerate([SPOT] * 4 + [SPOT2] * 3 + [OD] * 2):
        await c.launch(LaunchRequest(f"n{i}", "m", pool))
    c.advance_to(999.0)
    assert c.counters.preemptions == 0
    reached = c.advance_until_notice(1500.0)
    assert reached == 1000.0  # the engine ticks at the storm's notices
    notices = await c.interruption_notices()
    assert sorted(n.pool.region for n in notices) == ["us-east-1"] * 2 + ["us-east-2"] * 2
    c.advance_to(1500.0)  # past the notices' deadlines
    assert c.counters.preemptions == 4
    assert [await running(c, p) for p in (SPOT, SPOT2, OD)] == [2, 1, 2]
    # The capacity the storm took does not come back before it ends; an empty pool
    # takes nothing; on-demand is untouched.
    for pool in (SPOT, SPOT2, EMPTY):
        with pytest.raises(InsufficientCapacity):
            await c.launch(LaunchRequest(f"x-{pool.region}", "m", pool))
    await c.launch(LaunchRequest("od", "m", OD))
    c.advance_to(3000.0)
    await c.launch(LaunchRequest("after", "m", SPOT))  # the storm is over


async def test_a_share_of_one_reclaims_every_spot_node() -> None:
    c = cloud(SimStorm(100.0, 1.0, math.inf, frozenset({SPOT})))
    await c.launch(LaunchRequest("a", "m", SPOT))
    await c.launch(LaunchRequest("b", "m", SPOT2))
    c.advance_to(500.0)
    assert [await running(c, p) for p in (SPOT, SPOT2)] == [0, 1]  # only the pools struck


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("[storm]\nat_min = 5\nshare = 0", "storm.share: Input should be greater than 0"),
        ("[storm]\nat_min = -1", "storm.at_min: Input should be greater than or equal to 0"),
        ("[storm]\nat_min = 5\nsize = 2", "storm.size: unknown key (known: at_min, share,"),
    ],
)
def test_a_bad_storm_names_the_key(table: str, message: str) -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(table, Path("s.toml"))
    assert any(message in line for line in err.value.problems), err.value.problems


def test_a_storm_on_no_spot_pool_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[storm]\nat_min = 5\npools = "aws/*/on-demand"\n')
    with pytest.raises(ScenarioError, match=r"storm.pools: 'aws/\*/on-demand' matches no spot"):
        build_world(WorldSpec(None, None, scenario_path=path))


def _storm_world(tmp_path: Path) -> tuple[object, float]:
    text = DEFAULT_CONFIG_PATH.read_text().replace("priority = 0", "priority = 10", 1)
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)  # llama-3.1-8b first
    scenario, _ = load_scenario(STORM_SCENARIO)
    world, _ = build_world(WorldSpec(cfg, None, scenario_path=STORM_SCENARIO))
    assert scenario.storm.at_min is not None
    return world, scenario.storm.at_min


def test_the_highest_priority_is_served_through_a_storm(tmp_path: Path) -> None:
    # The bundled hour: half of every spot pool's nodes go at minute 20, and the spot
    # capacity does not come back. The embedded budget (400 USD/h) pays for the top
    # priority's storm cover, so its plan keeps what a storm leaves above its load:
    # measured 1.000 served from the storm on (0.956 when any budget turned the cover
    # off; docs/solver.md, "Storm cover for the top priorities").
    world, at_min = _storm_world(tmp_path)
    r = run_policy(world, "capsched", tmp_path / "s.db")  # type: ignore[arg-type]
    assert r.preemptions > 0  # the storm struck capsched's spot nodes
    top = r.models.index("llama-3.1-8b")
    since = (r.times_s - r.times_s[0]) / 60.0 >= at_min
    served = r.served_rps[top, since].sum() / r.demand_rps[top, since].sum()
    assert served >= 0.99
    assert np.isfinite(r.cost_usd)


# -- capsched's reaction: a spot storm cools the cloud's spot pools ------------------------------


async def _storm_tick(tmp_path: Path, storm_pools: int) -> tuple[list[Market], int]:
    """A one-model fleet on the simulated cloud, hit by a storm that takes every spot
    node; the markets of the nodes launched on the storm's tick, and the launches that
    spot pools refused on it."""
    from builders import MODEL, REGION, config
    from fakes import no_sleep

    from scheduler.fleet.catalog import load_catalog
    from scheduler.loop.factory import build_scheduler
    from scheduler.loop.store import StateStore
    from scheduler.ports.metrics import DemandSample

    class Metrics:
        async def demand(self, now_s: float) -> DemandSample:
            return DemandSample(now_s, {(MODEL, REGION): 20.0})

    cfg = config(
        models=[{"name": MODEL, "min_replicas": 1, "min_on_demand_share": 0.0}],
        clouds={
            "aws": {"regions": ["us-east-1", "us-east-2"], "gpu_kinds": ["L4", "L40S"]},
            "gcp": {"enabled": False},
        },
        planning={"robustness_fraction": 0.0, "budget_usd_per_hour": None},
        solver={"time_limit_s": 2.0},
        guards={"min_node_age_s": 0, "spot_storm_pools": storm_pools},
    )
    catalog = load_catalog()
    spot = frozenset(o.pool for o in catalog.offerings if o.pool.market is Market.SPOT)
    sim = SimCloud(
        catalog.offerings,
        catalog.instance_types,
        boot_time_s=300,
        random_interruptions=False,
        storm=SimStorm(1000.0, 1.0, math.inf, spot),
    )
    store = StateStore(tmp_path / f"s{storm_pools}.db")
    rec = build_scheduler(cfg, provider=sim, metrics=Metrics(), store=store, sleep=no_sleep)
    await rec.tick(0.0)
    sim.advance_to(900.0)
    await rec.tick(900.0)
    before = {n.node_id for n in store.live_nodes()}
    assert any(n.pool.market is Market.SPOT for n in store.live_nodes())
    failed_before = sim.counters.failed_launches
    assert sim.advance_until_notice(1200.0) == 1000.0
    await rec.tick(1000.0)
    new = [n.pool.market for n in store.live_nodes() if n.node_id not in before]
    return new, sim.counters.failed_launches - failed_before


async def test_a_spot_storm_sends_the_fallback_to_on_demand_at_once(tmp_path: Path) -> None:
    # Without the storm rule the tick's one fallback tries the next spot pools, which the
    # storm refuses too; with it, after two spot refusals in one cloud the fallback
    # launches on-demand on the same tick.
    new, refused = await _storm_tick(tmp_path, storm_pools=2)
    assert new and all(m is Market.ON_DEMAND for m in new)
    off_new, off_refused = await _storm_tick(tmp_path, storm_pools=0)
    assert off_new == [] and off_refused == refused  # the launches wait for the next tick
