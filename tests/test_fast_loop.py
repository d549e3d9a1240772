"""The fast loop (scheduler.loop.fast_loop): between plan ticks, load beyond ready + booting
capacity launches nodes at once into the plan's cheapest pools, within the budget and
quotas; under a budget a higher priority's held launch makes lower-priority nodes leave, and
every check terminates the nodes whose drain is over; the same code in the daemon and the
simulator."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from fakes import Clock, no_sleep
from hypothesis import given, settings
from hypothesis import strategies as st
from sim_helpers import MODEL, OD_POOL, SPOT_POOL, small_config, world

from adapters.sim import SimCloud
from scheduler.config import Config, load_config
from scheduler.decide.planner import allowed
from scheduler.domain import (
    HoldKind,
    Market,
    Node,
    NodeState,
    Offering,
    Placement,
    Plan,
    PlanStatus,
    Pool,
)
from scheduler.domain.actions import Drain, Launch, Terminate
from scheduler.fleet.catalog import load_catalog
from scheduler.loop.factory import build_scheduler
from scheduler.loop.fast_loop import (
    FastDecision,
    FastInputs,
    FastLoop,
    SustainedRates,
    decide_fast,
    observed_rates,
    region_reach,
    shortfalls,
)
from scheduler.loop.reconciler import Reconciler
from scheduler.loop.store import StateStore
from scheduler.ports.metrics import DemandSample, MetricsSource
from scheduler.ports.provider import Transient
from scheduler.service.daemon import Daemon
from scheduler.service.telemetry import Telemetry
from simulations.engine import max_flow, replay

CATALOG = load_catalog()
NODE_RPS = 5.0  # every node serves this much at the target utilisation, in the unit tests
REGION = "us-east"


def capacity(model: str, pool: Pool) -> float:
    return NODE_RPS


def ids() -> Callable[[], str]:
    n = iter(range(1, 10_000))
    return lambda: f"n-{next(n)}"


def price(pool: Pool) -> float:
    return next(o.usd_per_hour for o in CATALOG.offerings if o.pool == pool)


def inputs(
    rps: float,
    nodes: tuple[Node, ...],
    plan_pools: tuple[Pool, ...] = (OD_POOL, SPOT_POOL),
) -> FastInputs:
    plan = Plan(
        PlanStatus.OPTIMAL,
        tuple(Placement(MODEL, p, 1) for p in plan_pools),
        0.0,
        0.0,
        0.0,
        0.0,
    )
    return FastInputs(
        now_s=1000.0,
        rates={(MODEL, REGION): rps},
        nodes=nodes,
        billed=nodes,
        offerings=CATALOG.offerings,
        plan=plan,
    )


def ready(node_id: str, pool: Pool = OD_POOL) -> Node:
    return Node(node_id, MODEL, pool, NodeState.READY, "i-1", 0.0, 0.0)


def decide(config: Config, rps: float, nodes: tuple[Node, ...] = (ready("a"),)) -> FastDecision:
    return decide_fast(
        inputs(rps, nodes), config, CATALOG, capacity, region_reach(config, CATALOG), ids()
    )


def test_short_launches_into_the_cheapest_pool_in_reach() -> None:
    config = small_config()
    out = decide(config, rps=12.0)  # one node serves 5 anywhere here: two more for 12
    cheapest = min(
        (o for o in CATALOG.offerings if o.pool.region == OD_POOL.region and o.available),
        key=lambda o: (o.usd_per_hour, o.pool),
    )
    assert allowed(config, cheapest, CATALOG.instance_type(cheapest.pool))
    assert [type(a) for a in out.launches] == [Launch, Launch]  # never a drain
    assert {a.pool for a in out.launches} == {cheapest.pool}
    assert out.held == ()
    [sf] = out.shortfalls
    assert (sf.model, sf.regions, sf.demand_rps, sf.capacity_rps) == (MODEL, (REGION,), 12.0, 5.0)


def test_the_plans_pool_wins_a_tie() -> None:
    config = small_config()
    pools = [OD_POOL, *[p for p in _us_east_pools() if p != OD_POOL][:2]]
    offers = tuple(Offering(p, 2.0, True) for p in pools)  # same price, same rps
    for plan_pool in pools:
        plan = Plan(PlanStatus.OPTIMAL, (Placement(MODEL, plan_pool, 1),), 0.0, 0.0, 0.0, 0.0)
        out = decide_fast(
            FastInputs(1000.0, {KEY: 12.0}, (), (), offers, plan),
            config,
            CATALOG,
            capacity,
            region_reach(config, CATALOG),
            ids(),
        )
        assert {a.pool for a in out.launches} == {plan_pool}


def test_booting_nodes_count_as_capacity() -> None:
    booting = Node("b", MODEL, SPOT_POOL, NodeState.BOOTING, None, 990.0, 990.0)
    out = decide(small_config(), rps=9.0, nodes=(ready("a"), booting))
    assert out.shortfalls == () and out.launches == ()


def test_not_short_launches_nothing() -> None:
    out = decide(small_config(), rps=5.0)
    assert out.shortfalls == () and out.launches == () and out.held == ()


def test_budget_holds_the_launch_with_a_typed_record() -> None:
    config = small_config()
    budget = price(OD_POOL) + 0.01  # the running node, and not one more of any pool
    config = config.model_copy(
        update={"planning": config.planning.model_copy(update={"budget_usd_per_hour": budget})}
    )
    out = decide(config, rps=7.0)
    assert out.launches == ()
    assert [h.kind for h in out.held] == [HoldKind.BUDGET] and out.held[0].nodes == 1


def test_quota_holds_the_launch_with_a_typed_record() -> None:
    config = Config.model_validate(
        {**small_config().model_dump(), "quotas": [{"cloud": "aws", "max_gpus": 1}]}
    )
    out = decide(config, rps=7.0)  # the one node has the quota's one GPU
    assert out.launches == ()
    assert HoldKind.QUOTA in {h.kind for h in out.held}


def test_a_quota_on_the_cheapest_pool_moves_the_launch_to_the_next() -> None:
    cheapest, dearer = sorted((OD_POOL, SPOT_POOL), key=price)
    config = Config.model_validate(
        {
            **small_config().model_dump(),
            "quotas": [{"cloud": "aws", "market": cheapest.market.value, "max_gpus": 0}],
        }
    )
    two = tuple(o for o in CATALOG.offerings if o.pool in (OD_POOL, SPOT_POOL))
    only_plan_pools = replace(inputs(7.0, (ready("a"),)), offerings=two)
    out = decide_fast(
        only_plan_pools, config, CATALOG, capacity, region_reach(config, CATALOG), ids()
    )
    assert [a.pool for a in out.launches] == [dearer] and out.held == ()


def test_manual_approval_holds_fast_launches() -> None:
    config = small_config()
    config = config.model_copy(
        update={"daemon": config.daemon.model_copy(update={"approval_mode": "manual"})}
    )
    out = decide(config, rps=12.0)
    assert out.launches == () and [h.kind for h in out.held] == [HoldKind.APPROVAL]


def test_missing_or_garbage_readings_are_never_load() -> None:
    garbage = {
        (MODEL, "a"): math.nan,
        (MODEL, "b"): -3.0,
        (MODEL, "c"): math.inf,
        (MODEL, "d"): None,
    }
    sample = DemandSample(0.0, garbage, {(MODEL, "a"): math.nan})  # type: ignore[arg-type]
    assert observed_rates(sample, 30.0) == {}
    # The current rate, not the tick-window peak (which still holds an ended spike).
    both = DemandSample(0.0, {(MODEL, REGION): 2.0}, {(MODEL, REGION): 9.0})
    assert observed_rates(both, 30.0) == {(MODEL, REGION): 2.0}
    # A standing queue is load: 2 rps arriving and 300 waiting, cleared within 30 s.
    queued = DemandSample(0.0, {(MODEL, REGION): 2.0}, {}, {(MODEL, REGION): 300.0})
    assert observed_rates(queued, 30.0) == {(MODEL, REGION): 12.0}
    nan_rate = DemandSample(0.0, {(MODEL, REGION): math.nan}, {}, {(MODEL, REGION): 300.0})
    assert observed_rates(nan_rate, 30.0) == {}
    config = small_config()
    reach = region_reach(config, CATALOG)
    nothing = FastInputs(1000.0, observed_rates(sample, 30.0), (), (), CATALOG.offerings, None)
    out = decide_fast(nothing, config, CATALOG, capacity, reach, ids())
    assert out.shortfalls == () and out.launches == () and out.held == ()


async def test_a_nan_load_signal_launches_nothing(tmp_path: Path) -> None:
    config = small_config(state_db=str(tmp_path / "state.db"))
    cloud = SimCloud(CATALOG.offerings, CATALOG.instance_types, boot_time_s=600)
    store = StateStore(config.scheduler.state_db)
    load = Load(math.nan)
    rec = build_scheduler(config, provider=cloud, metrics=load, store=store, sleep=no_sleep)
    report = await FastLoop(rec).check(0.0)
    assert report.decision.launches == () and store.live_nodes() == []
    assert [c for c, _ in cloud.calls] == []  # nothing short: no cloud call
    store.close()


@settings(max_examples=200, deadline=None)
@given(
    demand=st.lists(st.floats(0, 20), min_size=3, max_size=3),
    cap=st.lists(st.floats(0, 20), min_size=3, max_size=3),
    reach=st.lists(st.booleans(), min_size=9, max_size=9),
)
def test_short_exactly_when_the_load_cannot_be_routed_within_reach(
    demand: list[float], cap: list[float], reach: list[bool]
) -> None:
    regions = ["r0", "r1", "r2"]
    locs = ["aws:l0", "aws:l1", "aws:l2"]
    matrix = np.array(reach, dtype=bool).reshape(3, 3)
    near = {r: frozenset(locs[k] for k in range(3) if matrix[i, k]) for i, r in enumerate(regions)}
    nodes = []
    caps: dict[Pool, float] = {}
    for k, c in enumerate(cap):
        pool = Pool(OD_POOL.cloud, f"l{k}", "", "x", OD_POOL.market)
        caps[pool] = c
        nodes.append(Node(f"n{k}", MODEL, pool, NodeState.READY))
    found = shortfalls(
        {(MODEL, r): d for r, d in zip(regions, demand, strict=True)},
        tuple(nodes),
        lambda m, p: caps[p],
        near,
    )
    routed = max_flow(demand, cap, matrix)
    if found:
        assert found[0].short_rps > 0
        assert routed < sum(demand) - found[0].short_rps + 1e-6
    else:
        assert routed >= sum(demand) - 1e-6


def test_capacity_in_reach_is_summed_exactly_whatever_the_set_order() -> None:
    # The nodes a set of regions reaches sit in a set, whose iteration order changes with
    # the process's string hashing; a plain sum in that order rounded differently from run
    # to run, equal shortfalls differed in the last bit and the same replay launched into
    # different pools. The sum is now exactly rounded, and a tie keeps the smaller set.
    values = [1e16, 1.0, 1.0, 1.0, -1e16, 1.0, 1.0, 1.0, 1.0, 1.0]
    nodes, caps = [], {}
    for k, c in enumerate(values):
        pool = Pool(OD_POOL.cloud, f"l{k}", "", "x", OD_POOL.market)
        caps[pool] = c
        nodes.append(Node(f"n{k}", MODEL, pool, NodeState.READY))
    near = frozenset(f"{OD_POOL.cloud}:l{k}" for k in range(len(values)))
    (found,) = shortfalls({(MODEL, "r0"): 20.0}, tuple(nodes), lambda m, p: caps[p], {"r0": near})
    assert found.capacity_rps == 8.0 and found.short_rps == 12.0
    # Two regions reaching the same nodes, the second without load: both sets are short
    # by the same amount, and the single region is the one reported.
    (tie,) = shortfalls(
        {(MODEL, "r0"): 20.0, (MODEL, "r1"): 0.0},
        tuple(nodes),
        lambda m, p: caps[p],
        {"r0": near, "r1": near},
    )
    assert tie.regions == ("r0",)


async def test_a_burst_shorter_than_a_tick_is_served_sooner_with_the_fast_loop(
    tmp_path: Path,
) -> None:
    # 2 rps, then 20 rps for minutes 6-9 (ticks at minutes 0, 5 and 10), then 2 again.
    demand = [2.0] * 6 + [20.0] * 4 + [2.0] * 10
    results = {}
    for fast_s in (30.0, 0.0):
        w = world(small_config(fast_interval_s=fast_s), demand, boot_time_s=60.0)
        results[fast_s] = await replay(w, "capsched", tmp_path / f"fast-{fast_s}.db")
    on, off = results[30.0], results[0.0]
    assert on.fast_launches > 0 and off.fast_launches == 0
    slo_on = on.summary(None)["slo_attainment"]
    slo_off = off.summary(None)["slo_attainment"]
    assert slo_on > slo_off + 0.05
    # Minute 6 is read at 7:00 and has lasted the 60 s sustain window at 8:00: the nodes
    # launched then are up (60 s boot) for minute 9; without the loop nothing comes
    # before the tick at 10:00.
    m = on.models.index(MODEL)
    assert on.served_rps[m, 9] > off.served_rps[m, 9]


class Load:
    def __init__(self, rps: float) -> None:
        self.rps = rps

    async def demand(self, now_s: float) -> DemandSample:
        return DemandSample(now_s, {(MODEL, REGION): self.rps})


def simulated_daemon(
    config: Config, load: MetricsSource, *, boot_time_s: float
) -> tuple[Daemon, StateStore, Clock, Telemetry]:
    """A daemon on a simulated cloud whose time follows the daemon's clock."""
    cloud = SimCloud(CATALOG.offerings, CATALOG.instance_types, boot_time_s=boot_time_s)
    store = StateStore(config.scheduler.state_db)
    telemetry = Telemetry()
    rec = build_scheduler(config, provider=cloud, metrics=load, store=store, sleep=no_sleep)
    clock = Clock()

    async def advance(now_s: float) -> None:
        cloud.advance_to(now_s)

    daemon = Daemon(
        config=config,
        config_path=None,
        reconciler=rec,
        store=store,
        clock=clock,
        advance=advance,
        telemetry=telemetry,
    )
    return daemon, store, clock, telemetry


async def test_the_daemon_launches_between_ticks_and_the_next_tick_keeps_the_nodes(
    tmp_path: Path,
) -> None:
    config = small_config(state_db=str(tmp_path / "state.db"))
    load = Load(2.0)
    daemon, store, clock, telemetry = simulated_daemon(config, load, boot_time_s=600)
    assert await daemon.tick_once() is not None
    before = {n.node_id for n in store.live_nodes()}
    clock.now = 30.0
    quiet = await daemon.fast_once()
    assert quiet is not None and quiet.launched == ()

    load.rps = 40.0
    for t in (60.0, 90.0):  # the rise has not lasted the 60 s sustain window yet
        clock.now = t
        early = await daemon.fast_once()
        assert early is not None and early.launched == ()
    clock.now = 120.0
    report = await daemon.fast_once()
    assert report is not None and report.launched
    fast_ids = {a.node_id for a in report.launched}
    live = {n.node_id: n for n in store.live_nodes()}
    assert fast_ids <= set(live) and before <= set(live)  # nothing removed
    assert all(live[i].state in (NodeState.REQUESTED, NodeState.BOOTING) for i in fast_ids)
    # Journaled like any launch: begun and closed.
    assert all(e.node_id not in fast_ids for e in store.journal("pending"))
    counted = telemetry.registry.get_sample_value("capsched_fast_launches_total", {"model": MODEL})
    assert counted == len(fast_ids)

    clock.now = 300.0
    tick = await daemon.tick_once()
    assert tick is not None and tick.plan is not None
    cancelled = {a.node_id for a in tick.actions if isinstance(a, Terminate)}
    assert not cancelled & fast_ids
    planned = {(p.model, p.pool): p.count for p in tick.plan.placements}
    for pool in {live[i].pool for i in fast_ids}:
        boot = [n for n in store.live_nodes() if n.pool == pool and n.state is not NodeState.READY]
        assert planned.get((MODEL, pool), 0) >= len(boot)
    store.close()


async def test_a_paused_daemon_makes_no_fast_launch(tmp_path: Path) -> None:
    config = small_config(state_db=str(tmp_path / "state.db"))
    cloud = SimCloud(CATALOG.offerings, CATALOG.instance_types, boot_time_s=600)
    store = StateStore(config.scheduler.state_db)
    load = Load(40.0)
    rec = build_scheduler(config, provider=cloud, metrics=load, store=store, sleep=no_sleep)
    daemon = Daemon(config=config, config_path=None, reconciler=rec, store=store, clock=Clock())
    await daemon.pause()
    assert await daemon.fast_once() is None
    assert store.live_nodes() == []
    store.close()
    await asyncio.sleep(0)


async def test_a_failed_cloud_listing_launches_nothing(tmp_path: Path) -> None:
    config = small_config(state_db=str(tmp_path / "state.db"))
    cloud = SimCloud(CATALOG.offerings, CATALOG.instance_types, boot_time_s=600)
    store = StateStore(config.scheduler.state_db)
    rec = build_scheduler(config, provider=cloud, metrics=Load(40.0), store=store, sleep=no_sleep)
    cloud.inject_error("list_instances", Transient("listing timed out"))
    report = await FastLoop(rec).check(0.0)  # short, but the cloud cannot be listed
    assert report.launched == () and store.live_nodes() == []
    assert [c for c, _ in cloud.calls if c == "launch"] == []
    store.close()


KEY = (MODEL, REGION)


def test_one_reading_alone_never_counts_and_a_run_counts_at_its_lowest() -> None:
    sustained = SustainedRates(60.0)
    assert sustained.update(0.0, {KEY: 9.0}) == {}  # the window is not covered yet
    assert sustained.update(30.0, {KEY: 7.0}) == {}
    assert sustained.update(60.0, {KEY: 8.0}) == {KEY: 7.0}
    assert sustained.update(90.0, {KEY: 8.0}) == {KEY: 7.0}  # 7 was read at 30: in force at 30
    assert sustained.update(120.0, {KEY: 8.0}) == {KEY: 8.0}


def test_a_gap_or_time_running_backwards_starts_the_run_over() -> None:
    sustained = SustainedRates(60.0)
    for t in (0.0, 30.0, 60.0):
        sustained.update(t, {KEY: 5.0})
    assert sustained.update(90.0, {}) == {}  # a check without this series
    assert sustained.update(120.0, {KEY: 5.0}) == {}
    assert sustained.update(180.0, {KEY: 5.0}) == {KEY: 5.0}
    assert sustained.update(10.0, {KEY: 5.0}) == {}  # a clock that went back


def test_with_no_window_a_reading_counts_at_once() -> None:
    assert SustainedRates(0.0).update(5.0, {KEY: 3.0}) == {KEY: 3.0}


@settings(max_examples=200, deadline=None)
@given(
    readings=st.lists(st.floats(0, 100), min_size=1, max_size=30),
    window=st.sampled_from([0.0, 30.0, 60.0, 120.0]),
)
def test_the_sustained_rate_is_never_above_any_reading_of_its_window(
    readings: list[float], window: float
) -> None:
    sustained = SustainedRates(window)
    for i, v in enumerate(readings):
        out = sustained.update(30.0 * i, {KEY: v})
        covered = [r for j, r in enumerate(readings[: i + 1]) if 30.0 * j >= 30.0 * i - window - 30]
        if KEY in out:
            assert 30.0 * i >= window  # never before the checks span the window
            assert out[KEY] <= v and out[KEY] in covered
        else:
            assert 30.0 * i < window


def _us_east_pools() -> list[Pool]:
    config = small_config()
    return sorted(
        o.pool
        for o in CATALOG.offerings
        if o.pool.region == OD_POOL.region
        and o.pool.market is Market.ON_DEMAND
        and allowed(config, o, CATALOG.instance_type(o.pool))
    )[:5]


@settings(max_examples=200, deadline=None)
@given(
    types=st.lists(st.tuples(st.floats(0.5, 100), st.floats(0.5, 30)), min_size=1, max_size=5),
    plan_index=st.integers(0, 4),
    demand=st.floats(0.5, 50),
)
def test_fast_launches_close_the_shortfall_for_at_most_the_cheapest_single_pool_price(
    types: list[tuple[float, float]], plan_index: int, demand: float
) -> None:
    pools = _us_east_pools()[: len(types)]
    offers = tuple(Offering(p, usd, True) for p, (usd, _) in zip(pools, types, strict=False))
    rps = {p: cap for p, (_, cap) in zip(pools, types, strict=False)}
    plan_pool = pools[plan_index % len(pools)]
    plan = Plan(PlanStatus.OPTIMAL, (Placement(MODEL, plan_pool, 1),), 0.0, 0.0, 0.0, 0.0)
    config = small_config()
    out = decide_fast(
        FastInputs(1000.0, {KEY: demand}, (), (), offers, plan),
        config,
        CATALOG,
        lambda m, p: rps[p],
        region_reach(config, CATALOG),
        ids(),
    )
    price_of = {o.pool: o.usd_per_hour for o in offers}
    launched = sum(price_of[a.pool] for a in out.launches)
    cheapest = min(math.ceil(demand / rps[p] - 1e-9) * price_of[p] for p in rps)
    assert launched <= cheapest + 1e-6  # never dearer than the best single pool
    assert sum(rps[a.pool] for a in out.launches) >= demand - 1e-6  # and the load fits


class Loads:
    def __init__(self, rps: dict[tuple[str, str], float]) -> None:
        self.rps = rps

    async def demand(self, now_s: float) -> DemandSample:
        return DemandSample(now_s, dict(self.rps))


async def test_a_burst_on_a_model_at_its_minimum_replica_launches_a_type_that_serves_it(
    tmp_path: Path,
) -> None:
    # The embedded default: the 70B model idle at the first tick, so the plan keeps its
    # minimum replica on the cheapest node (an 8xL4 serving 0.22 rps), then 8.85 rps.
    # The defect: the fast loop filled that pool, 40 nodes and 337 USD/h, where one or
    # two nodes of a type built for the load serve it.
    default = load_config(None)
    config = default.model_copy(
        update={
            "scheduler": default.scheduler.model_copy(
                update={"fast_interval_s": 30.0, "state_db": str(tmp_path / "state.db")}
            )
        }
    )
    cloud = SimCloud(CATALOG.offerings, CATALOG.instance_types, boot_time_s=600)
    store = StateStore(config.scheduler.state_db)
    big, small = "llama-3.1-70b", "llama-3.1-8b"
    load = Loads(
        {
            (small, "us-east"): 5.78,
            (big, "us-east"): 0.0,
            (small, "eu-west"): 0.0,
            (big, "eu-west"): 0.0,
        }
    )
    rec = build_scheduler(config, provider=cloud, metrics=load, store=store, sleep=no_sleep)
    clock = Clock()

    async def advance(now_s: float) -> None:
        cloud.advance_to(now_s)

    daemon = Daemon(
        config=config, config_path=None, reconciler=rec, store=store, clock=clock, advance=advance
    )
    tick = await daemon.tick_once()
    assert tick is not None and tick.plan is not None
    kept = [p for p in tick.plan.placements if p.model == big]
    assert kept and rec.capacity_of(big, kept[0].pool) < 1.0  # the minimum replica

    load.rps[(big, "us-east")] = 8.85
    launched: list[Launch] = []
    for t in (30.0, 60.0, 90.0, 120.0):
        clock.now = t
        report = await daemon.fast_once()
        assert report is not None
        launched += report.launched
    assert launched, "a sustained burst the fleet cannot serve launches"
    prices = {o.pool: o.usd_per_hour for o in CATALOG.offerings}
    usd = sum(prices[a.pool] for a in launched)
    reach = FastLoop(rec).reach()["us-east"]
    single = min(
        math.ceil((8.85 - rec.capacity_of(big, kept[0].pool)) / rec.capacity_of(big, o.pool))
        * o.usd_per_hour
        for o in CATALOG.offerings
        if o.available
        and f"{o.pool.cloud.value}:{o.pool.region}" in reach
        and (o.pool.cloud, o.pool.instance_type) in CATALOG.instance_types
        and allowed(config, o, CATALOG.instance_type(o.pool))
        and _serves(rec, big, o.pool)
    )
    assert len(launched) <= 3 and usd <= single + 1e-6
    store.close()


def _serves(rec: Reconciler, model: str, pool: Pool) -> bool:
    try:
        return rec.capacity_of(model, pool) > 0
    except KeyError:
        return False


class SizedLoad:
    """A load signal with request sizes (mean tokens per request)."""

    def __init__(self, rps: float, input_tokens: float | None = None) -> None:
        self.rps = rps
        self.input_tokens = input_tokens

    async def demand(self, now_s: float) -> DemandSample:
        if self.input_tokens is None:
            return DemandSample(now_s, {KEY: self.rps})
        return DemandSample(
            now_s,
            {KEY: self.rps},
            input_tokens={KEY: self.input_tokens},
            output_tokens={KEY: 232.0},
        )


async def test_long_prompts_at_the_same_rate_launch_between_ticks(tmp_path: Path) -> None:
    config = small_config(state_db=str(tmp_path / "state.db"))
    cloud = SimCloud(CATALOG.offerings, CATALOG.instance_types, boot_time_s=600)
    store = StateStore(config.scheduler.state_db)
    load = SizedLoad(2.0)
    rec = build_scheduler(config, provider=cloud, metrics=load, store=store, sleep=no_sleep)
    clock = Clock()

    async def advance(now_s: float) -> None:
        cloud.advance_to(now_s)

    daemon = Daemon(
        config=config, config_path=None, reconciler=rec, store=store, clock=clock, advance=advance
    )
    assert await daemon.tick_once() is not None
    for t in (30.0, 60.0, 90.0):  # the same rate of reference requests: nothing short
        clock.now = t
        quiet = await daemon.fast_once()
        assert quiet is not None and quiet.launched == ()
    load.input_tokens = 10_000.0  # the same rate of 10,000-token prompts
    for t in (120.0, 150.0):
        clock.now = t
        early = await daemon.fast_once()
        assert early is not None and early.launched == ()  # one reading alone never counts
    clock.now = 180.0
    report = await daemon.fast_once()
    assert report is not None and report.launched
    store.close()


# -- strict priority under the budget: lower priorities make room ---------------------------

LOW = "llama-3.1-70b"


def two_priorities(budget_nodes: float) -> Config:
    """MODEL at priority 10 and LOW at 0, a budget of `budget_nodes` on-demand nodes."""
    data = small_config().model_dump()
    data["models"] = [
        {"name": MODEL, "min_replicas": 1, "priority": 10},
        {"name": LOW, "min_replicas": 1, "priority": 0},
    ]
    data["planning"]["budget_usd_per_hour"] = budget_nodes * price(OD_POOL)
    return Config.model_validate(data)


def node(node_id: str, model: str, state: NodeState = NodeState.READY) -> Node:
    return Node(node_id, model, OD_POOL, state, "i-1", 0.0, 0.0)


def decide_two(config: Config, rates: dict[str, float], nodes: tuple[Node, ...]) -> FastDecision:
    base = inputs(0.0, nodes)
    rated = replace(base, rates={(m, REGION): r for m, r in rates.items()})
    return decide_fast(rated, config, CATALOG, capacity, region_reach(config, CATALOG), ids())


def test_a_budget_held_launch_of_a_higher_priority_makes_a_spare_lower_node_leave() -> None:
    config = two_priorities(3.0)  # three on-demand nodes and not one more of any pool
    fleet = (
        node("hi", MODEL),
        node("lo-ready", LOW),
        node("lo-boot", LOW, NodeState.BOOTING),
    )
    # MODEL is short by 2 rps; LOW's 4 rps need one of its two nodes.
    out = decide_two(config, {MODEL: 7.0, LOW: 4.0}, fleet)
    assert out.launches == ()  # it bills until gone: the launch waits
    assert [h.kind for h in out.held] == [HoldKind.BUDGET]
    # One node frees a spot or on-demand node's price: the one not serving yet goes, at once.
    assert [(type(y.action), y.action.node_id, y.model, y.to_model) for y in out.yields] == [
        (Terminate, "lo-boot", LOW, MODEL)
    ]
    assert out.yields[0].needed is False

    # The next check, the node still on its way out: nothing more is given up.
    leaving = (fleet[0], fleet[1], replace(fleet[2], state=NodeState.TERMINATING))
    again = decide_two(config, {MODEL: 7.0, LOW: 4.0}, leaving)
    assert again.yields == () and again.launches == ()
    assert [h.kind for h in again.held] == [HoldKind.BUDGET]

    # Once it is gone the launch fits the budget.
    after = decide_two(config, {MODEL: 7.0, LOW: 4.0}, fleet[:2])
    assert [a.model for a in after.launches] == [MODEL] and after.yields == ()


def test_strict_priority_drains_a_needed_lower_node_when_no_spare_one_is_left() -> None:
    config = two_priorities(2.0)
    fleet = (node("hi", MODEL), node("lo", LOW))
    out = decide_two(config, {MODEL: 7.0, LOW: 4.0}, fleet)
    assert [(type(y.action), y.action.node_id, y.needed) for y in out.yields] == [
        (Drain, "lo", True)
    ]


def test_into_its_headroom_only_a_higher_priority_takes_spare_lower_nodes_alone() -> None:
    # 5.5 rps passes the node's 5 rps at the planning utilisation (0.85) but not its whole
    # rate (5.88 rps): LOW's needed node stays, its spare one may go.
    config = two_priorities(2.0)
    fleet = (node("hi", MODEL), node("lo", LOW))
    out = decide_two(config, {MODEL: 5.5, LOW: 4.0}, fleet)
    assert out.yields == () and [h.kind for h in out.held] == [HoldKind.BUDGET]
    two = (*fleet, node("lo-2", LOW))
    spare = decide_two(two_priorities(3.0), {MODEL: 5.5, LOW: 4.0}, two)
    assert [y.needed for y in spare.yields] == [False]
    # Its last node is LOW's min_replicas: needed, idle or not.
    idle = decide_two(config, {MODEL: 5.5, LOW: 0.0}, fleet)
    assert idle.yields == ()


def test_a_lower_model_without_a_reading_is_not_counted_spare() -> None:
    config = two_priorities(3.0)
    fleet = (node("hi", MODEL), node("lo-1", LOW), node("lo-2", LOW))
    out = decide_two(config, {MODEL: 7.0}, fleet)  # no reading of LOW
    assert len(out.yields) == 1 and out.yields[0].needed is True


def test_equal_or_higher_priorities_never_yield() -> None:
    config = two_priorities(2.0)
    data = config.model_dump()
    data["models"][1]["priority"] = 10  # LOW now shares MODEL's priority
    same = Config.model_validate(data)
    fleet = (node("hi", MODEL), node("lo", LOW))
    out = decide_two(same, {MODEL: 7.0, LOW: 0.0}, fleet)
    assert out.yields == () and out.launches == ()
    assert [h.kind for h in out.held] == [HoldKind.BUDGET]


def test_nothing_yields_when_all_lower_nodes_together_would_not_free_enough() -> None:
    # The lower model's one spot node frees less than the launch needs (an on-demand node,
    # the only pool offered, over a budget just short of two of them).
    config = two_priorities(1.9)
    od_only = tuple(o for o in CATALOG.offerings if o.pool == OD_POOL)
    fleet = (node("hi", MODEL), replace(node("lo", LOW), pool=SPOT_POOL))
    base = replace(inputs(0.0, fleet), offerings=od_only)
    rated = replace(base, rates={(MODEL, REGION): 7.0, (LOW, REGION): 0.0})
    out = decide_fast(rated, config, CATALOG, capacity, region_reach(config, CATALOG), ids())
    assert out.yields == () and out.launches == ()
    assert [h.kind for h in out.held] == [HoldKind.BUDGET]


def test_the_room_a_higher_priority_waits_for_is_not_taken_by_a_lower_one() -> None:
    # MODEL cannot serve on spot here, so its launch is on demand; LOW's is spot. The
    # budget has room for LOW's spot node and not for MODEL's on-demand one until the
    # leaving node is gone: MODEL's launch waits, and LOW must not take its room.
    def capacity_of(model: str, pool: Pool) -> float:
        return 0.0 if model == MODEL and pool.market is Market.SPOT else NODE_RPS

    budget = 3 * price(OD_POOL) + price(SPOT_POOL) + 0.01
    data = two_priorities(3.0).model_dump()
    data["planning"]["budget_usd_per_hour"] = budget
    config = Config.model_validate(data)
    fleet = (
        node("hi", MODEL),
        node("lo-leaving", LOW, NodeState.TERMINATING),
        node("lo", LOW),
    )
    two = tuple(o for o in CATALOG.offerings if o.pool in (OD_POOL, SPOT_POOL))
    base = replace(inputs(0.0, fleet), offerings=two, nodes=(fleet[0], fleet[2]))
    rated = replace(base, rates={(MODEL, REGION): 5.5, (LOW, REGION): 7.0})
    out = decide_fast(rated, config, CATALOG, capacity_of, region_reach(config, CATALOG), ids())
    assert out.launches == () and out.yields == ()
    assert [h.kind for h in out.held] == [HoldKind.BUDGET, HoldKind.BUDGET]
    # Without MODEL's wait LOW's spot node fits the budget.
    alone = replace(rated, rates={(LOW, REGION): 7.0})
    out = decide_fast(alone, config, CATALOG, capacity_of, region_reach(config, CATALOG), ids())
    assert [(a.model, a.pool) for a in out.launches] == [(LOW, SPOT_POOL)]


class TwoLoads:
    def __init__(self, rates: dict[str, float]) -> None:
        self.rates = rates

    async def demand(self, now_s: float) -> DemandSample:
        return DemandSample(now_s, {(m, REGION): r for m, r in self.rates.items()})


async def test_between_ticks_a_lower_priority_drains_and_the_higher_one_launches(
    tmp_path: Path,
) -> None:
    """The daemon, end to end: the higher priority's rise is served by a launch within a
    minute or two of lasting the sustain window, paid for by a lower-priority node that
    drains, stops billing and is gone, all before the next plan tick."""
    config = two_priorities(10.0)  # the first plan (16.02 USD/h) leaves 2.59 USD/h spare
    config = config.model_copy(
        update={
            "scheduler": config.scheduler.model_copy(
                update={"state_db": str(tmp_path / "state.db")}
            )
        }
    )
    load = TwoLoads({MODEL: 1.0, LOW: 1.0})
    daemon, store, clock, telemetry = simulated_daemon(config, load, boot_time_s=0)
    assert await daemon.tick_once() is not None
    low_before = {n.node_id for n in store.live_nodes() if n.model == LOW}
    assert low_before
    load.rates = {MODEL: 400.0, LOW: 0.0}  # far above what the budget pays for as it stands
    yielded: set[str] = set()
    launched: set[str] = set()
    for t in range(30, 300, 30):
        clock.now = float(t)
        report = await daemon.fast_once()
        assert report is not None
        yielded |= {a.node_id for a in report.yielded}
        launched |= {a.node_id for a in report.launched}
    assert yielded and yielded <= low_before
    assert launched
    live = {n.node_id: n for n in store.live_nodes()}
    assert not yielded & set(live)  # the yielded nodes are gone, not left draining
    assert all(live[i].model == MODEL for i in launched)
    spend = sum(price(n.pool) for n in live.values())
    assert spend <= config.planning.budget_usd_per_hour + 1e-9
    counted = telemetry.registry.get_sample_value(
        "capsched_fast_yields_total", {"model": LOW, "to_model": MODEL}
    )
    assert counted == len(yielded)
    store.close()


def _drain_waits(db: Path) -> list[float]:
    """Per drained node, the seconds from the start of its drain to its termination."""
    store = StateStore(db)
    began: dict[str, float] = {}
    waits = []
    for e in store.events():
        if e["new"] == NodeState.DRAINING.value:
            began[e["node_id"]] = e["at_s"]
        elif e["new"] == NodeState.TERMINATING.value and e["node_id"] in began:
            waits.append(e["at_s"] - began.pop(e["node_id"]))
    store.close()
    return waits


async def test_every_policys_drained_nodes_stop_billing_at_the_next_fast_check(
    tmp_path: Path,
) -> None:
    """Drain finishing is the reconciler's, the same for capsched and a baseline: with the
    fast loop on, a drained node is terminated within a fast interval or two of its drain,
    not at the next plan tick (300 s)."""
    demand = [40.0] * 10 + [1.0] * 40
    for policy in ("capsched", "reactive"):
        waits = {}
        for fast_s in (30.0, 0.0):
            w = world(small_config(fast_interval_s=fast_s), demand)
            db = tmp_path / f"{policy}-{fast_s}.db"
            await replay(w, policy, db)
            waits[fast_s] = _drain_waits(db)
        assert waits[30.0] and waits[0.0], policy  # the load drop drains nodes either way
        assert max(waits[30.0]) <= 60.0, policy
        assert min(waits[0.0]) >= 300.0 - 1e-6, policy
