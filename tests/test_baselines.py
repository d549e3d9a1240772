"""The baselines on small scripted sequences of hand-built observations.

One model "m" on one instance type (1 x L4), 2 rps per node at the SLO and a target
utilisation of 0.5, so one node carries 1 rps. Traffic comes from "us" (us-east-1,
80 ms limit): us-east-1, us-east-2 and us-west-2 are within reach, eu-west-1 is not.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.config import Config
from scheduler.decide.observation import Observation
from scheduler.domain import (
    CapacityProfile,
    Cloud,
    InstanceType,
    Market,
    Node,
    NodeState,
    Offering,
    Plan,
    Pool,
)
from scheduler.fleet.capacity import NodeCapacity
from scheduler.fleet.catalog import Catalog
from scheduler.ports.metrics import DemandSample
from scheduler.ports.provider import InterruptionNotice
from simulations.baselines import Foresight, Oracle, Reactive, SpotHedge, StaticPeak
from simulations.baselines.oracle_program import ProgramResult
from simulations.baselines.oracle_rounding import Rounding, _Block
from simulations.baselines.spothedge import LocationStatus

ITYPE = InstanceType(Cloud.AWS, "g.1", "L4", 1, 24.0, 4, 16.0)


def pool(region: str, market: Market) -> Pool:
    return Pool(Cloud.AWS, region, "", "g.1", market)


OD_E1 = pool("us-east-1", Market.ON_DEMAND)
OD_E2 = pool("us-east-2", Market.ON_DEMAND)
OD_EU = pool("eu-west-1", Market.ON_DEMAND)
SPOT_E1 = pool("us-east-1", Market.SPOT)
SPOT_E2 = pool("us-east-2", Market.SPOT)
SPOT_W2 = pool("us-west-2", Market.SPOT)

PRICES = {
    OD_E1: 1.0,
    OD_E2: 0.9,
    OD_EU: 0.5,  # cheapest of all, but beyond the latency limit
    SPOT_E1: 0.30,
    SPOT_E2: 0.35,
    SPOT_W2: 0.40,
}
OFFERINGS = tuple(Offering(p, price) for p, price in sorted(PRICES.items()))

CATALOG = Catalog(
    instance_types={(Cloud.AWS, "g.1"): ITYPE},
    offerings=OFFERINGS,
    region_coords={
        "aws:us-east-1": (38.9, -77.4),
        "aws:us-east-2": (40.0, -83.0),
        "aws:us-west-2": (45.6, -121.2),
        "aws:eu-west-1": (53.3, -6.3),
    },
)
PROFILES = (CapacityProfile("m", "L4", 1, 8, 2.0, 1000.0, "test"),)


def make_config(**planning: object) -> Config:
    return Config.model_validate(
        {
            "planning": {"target_utilization": 0.5, "default_boot_time_s": 600, **planning},
            "models": [{"name": "m", "latency_slo_ms": 5000, "min_replicas": 1}],
            "regions": [{"name": "us", "location": "us-east-1", "max_latency_ms": 80}],
            "clouds": {"gcp": {"enabled": False}},
        }
    )


CONFIG = make_config()
_ids = itertools.count()


def node(p: Pool, state: NodeState = NodeState.READY, launched_at_s: float = 0.0) -> Node:
    return Node(f"n{next(_ids)}", "m", p, state, launched_at_s=launched_at_s)


def obs(
    now_s: float,
    rps: float,
    nodes: Sequence[Node] = (),
    offerings: Iterable[Offering] = OFFERINGS,
    notices: Sequence[InterruptionNotice] = (),
) -> Observation:
    return Observation(
        now_s=now_s,
        demand=DemandSample(at_s=now_s, rps={("m", "us"): rps}),
        demand_complete=math.isfinite(rps),
        nodes=tuple(nodes),
        offerings=tuple(offerings),
        notices=tuple(notices),
    )


def counts(plan: Plan) -> Counter[Pool]:
    return Counter({pl.pool: pl.count for pl in plan.placements if pl.model == "m"})


def fleet(plan: Plan, now_s: float = 0.0) -> list[Node]:
    """Nodes standing for a plan, all ready (what the reconciler would converge to)."""
    return [
        node(pl.pool, NodeState.READY, now_s) for pl in plan.placements for _ in range(pl.count)
    ]


def foresight(
    demand: Sequence[float], spot: Mapping[str, Sequence[int]] | None = None, step_s: float = 600.0
) -> Foresight:
    pools = {"e1": SPOT_E1, "e2": SPOT_E2, "w2": SPOT_W2}
    return Foresight(
        start_s=0.0,
        step_s=step_s,
        demand_rps={("m", "us"): tuple(demand)},
        spot_capacity={pools[k]: tuple(v) for k, v in (spot or {}).items()},
    )


# -- static-peak --------------------------------------------------------------------------


def test_static_peak_sizes_for_the_peak_in_the_cheapest_reachable_region() -> None:
    policy = StaticPeak(CONFIG, CATALOG, PROFILES, foresight([1.0, 4.5, 2.0]))
    first = policy.decide(obs(0, 1.0))
    # 4.5 rps at 1 rps per node: 5 nodes in us-east-2 (0.9/h); eu-west-1 is cheaper but too far.
    assert counts(first) == Counter({OD_E2: 5})
    assert first.usd_per_hour == pytest.approx(4.5)
    # Fixed: the same fleet whatever the load, never spot.
    for t, rps in ((600, 0.0), (1200, 9.0)):
        plan = policy.decide(obs(t, rps, fleet(first)))
        assert counts(plan) == counts(first)
        assert all(pl.pool.market is Market.ON_DEMAND for pl in plan.placements)


def test_static_peak_skips_unavailable_pools_and_keeps_min_replicas() -> None:
    offerings = [Offering(o.pool, o.usd_per_hour, available=o.pool != OD_E2) for o in OFFERINGS]
    policy = StaticPeak(CONFIG, CATALOG, PROFILES, foresight([0.0, 0.0]))
    assert counts(policy.decide(obs(0, 0.0, offerings=offerings))) == Counter({OD_E1: 1})


def test_static_peak_is_sized_for_the_peak_of_the_sum_of_regions() -> None:
    config = Config.model_validate(
        {
            "planning": {"target_utilization": 0.5},
            "models": [{"name": "m", "latency_slo_ms": 5000, "min_replicas": 1}],
            "regions": [
                {"name": "us", "location": "us-east-1", "max_latency_ms": 80},
                {"name": "us2", "location": "us-east-1", "max_latency_ms": 80},
            ],
            "clouds": {"gcp": {"enabled": False}},
        }
    )
    fs = Foresight(0.0, 60.0, {("m", "us"): (3.0, 0.0), ("m", "us2"): (0.0, 3.0)})
    policy = StaticPeak(config, CATALOG, PROFILES, fs)
    # Both regions sit in us-east-1, so one service: the peak of the sum is 3, not 6.
    assert counts(policy.decide(obs(0, 0.0))) == Counter({OD_E2: 3})


# -- reactive -----------------------------------------------------------------------------


def test_reactive_waits_its_upscale_delay_before_adding() -> None:
    policy = Reactive(CONFIG, CATALOG, PROFILES)
    assert policy.upscale_delay_s == 30 and policy.downscale_delay_s == 600
    assert sum(counts(policy.decide(obs(0, 3.0))).values()) == 1  # min_replicas
    assert sum(counts(policy.decide(obs(20, 3.0))).values()) == 1
    plan = policy.decide(obs(30, 3.0))
    assert counts(plan) == Counter({OD_E2: 3})  # cheapest on-demand within reach


def test_reactive_waits_its_downscale_delay_before_removing() -> None:
    policy = Reactive(CONFIG, CATALOG, PROFILES)
    policy.decide(obs(0, 3.0))
    up = policy.decide(obs(30, 3.0))
    nodes = fleet(up)
    assert sum(counts(policy.decide(obs(100, 1.0, nodes))).values()) == 3
    assert sum(counts(policy.decide(obs(699, 1.0, nodes))).values()) == 3
    assert sum(counts(policy.decide(obs(700, 1.0, nodes))).values()) == 1


def test_reactive_ignores_a_spike_shorter_than_the_delay_and_missing_samples() -> None:
    policy = Reactive(CONFIG, CATALOG, PROFILES)
    policy.decide(obs(0, 5.0))
    policy.decide(obs(20, 1.0))  # back under the target: the upscale timer restarts
    assert sum(counts(policy.decide(obs(60, 1.0))).values()) == 1
    # A missing sample is not a zero: the target holds and nothing scales down.
    policy.decide(obs(100, 5.0))
    plan = policy.decide(obs(130, 5.0))
    assert sum(counts(plan).values()) == 5
    assert sum(counts(policy.decide(obs(2000, math.nan, fleet(plan)))).values()) == 5


def test_reactive_never_uses_spot_and_keeps_its_nodes_in_place() -> None:
    policy = Reactive(CONFIG, CATALOG, PROFILES)
    policy.decide(obs(0, 2.0))
    # One node already runs in us-east-1 (dearer); it stays, the new one goes to us-east-2.
    plan = policy.decide(obs(30, 2.0, [node(OD_E1), node(SPOT_E1)]))
    assert counts(plan) == Counter({OD_E1: 1, OD_E2: 1})


# -- spothedge ----------------------------------------------------------------------------


def test_spothedge_spreads_spot_over_active_zones_cheapest_first() -> None:
    policy = SpotHedge(CONFIG, CATALOG, PROFILES, base_ondemand_fallback_replicas=0)
    policy.decide(obs(0, 3.0))
    # Before the delay: target 1 (+1 overprovisioned) spot, spread over two zones.
    assert counts(policy.decide(obs(299, 3.0))) == Counter({SPOT_E1: 1, SPOT_E2: 1, OD_E2: 1})
    plan = policy.decide(obs(300, 3.0))  # SkyServe's 300 s upscale delay has passed
    # target 3 + 1 overprovisioned: one per zone, cheapest first, then the cheapest again;
    # none ready yet, so on-demand covers target 3 (capped at the target, not 4).
    assert counts(plan) == Counter({SPOT_E1: 2, SPOT_E2: 1, SPOT_W2: 1, OD_E2: 3})


def test_spothedge_preemption_marks_zone_and_falls_back_on_demand() -> None:
    policy = SpotHedge(CONFIG, CATALOG, PROFILES, base_ondemand_fallback_replicas=0)
    policy.decide(obs(0, 3.0))
    policy.decide(obs(300, 3.0))
    spot = [node(SPOT_E1), node(SPOT_E1), node(SPOT_E2), node(SPOT_W2)]
    # All four spot replicas ready: no on-demand fallback.
    assert counts(policy.decide(obs(400, 3.0, spot))) == Counter(
        {SPOT_E1: 2, SPOT_E2: 1, SPOT_W2: 1}
    )
    notice = InterruptionNotice(spot[0].node_id, "i-0", SPOT_E1, deadline_s=520)
    plan = policy.decide(obs(500, 3.0, spot, notices=[notice]))
    placer = policy.placer("m", "us")
    assert placer.status[SPOT_E1] is LocationStatus.PREEMPTED
    assert placer.active() == [SPOT_E2, SPOT_W2]
    # The reclaimed replica is replaced in the cheapest active zone (us-east-2), and one
    # on-demand replica covers the one missing ready spot replica (4 wanted, 3 ready).
    assert counts(plan) == Counter({SPOT_E1: 1, SPOT_E2: 2, SPOT_W2: 1, OD_E2: 1})


def test_spothedge_zones_come_back_as_skypilot_does() -> None:
    policy = SpotHedge(CONFIG, CATALOG, PROFILES)
    policy.decide(obs(0, 1.0))
    placer = policy.placer("m", "us")
    a, b = node(SPOT_E1), node(SPOT_E2)
    policy.decide(obs(10, 1.0, [a, b], notices=[InterruptionNotice(a.node_id, "i", SPOT_E1, 99)]))
    assert placer.preempted() == [SPOT_E1]
    # Seen once: the same notice again changes nothing.
    policy.decide(obs(20, 1.0, [a, b], notices=[InterruptionNotice(a.node_id, "i", SPOT_E1, 99)]))
    assert placer.preempted() == [SPOT_E1]
    # A second preemption would leave one active zone: every zone goes back to active.
    policy.decide(obs(30, 1.0, [b], notices=[InterruptionNotice(b.node_id, "i", SPOT_E2, 99)]))
    assert placer.preempted() == []
    # A failed launch (pool unavailable) marks it; a later successful launch clears it.
    gone = [Offering(o.pool, o.usd_per_hour, available=o.pool != SPOT_W2) for o in OFFERINGS]
    plan = policy.decide(obs(40, 1.0, offerings=gone))
    assert placer.preempted() == [SPOT_W2]
    assert SPOT_W2 not in counts(plan)
    policy.decide(obs(50, 1.0, [node(SPOT_W2, NodeState.BOOTING)]))
    assert placer.preempted() == []


def test_spothedge_base_on_demand_and_overprovision() -> None:
    policy = SpotHedge(CONFIG, CATALOG, PROFILES, base_ondemand_fallback_replicas=1)
    # min_replicas 1 + 1 overprovisioned = 2; one of them is the base on-demand replica,
    # and with no spot ready the fallback is capped at the target (1).
    assert counts(policy.decide(obs(0, 0.0))) == Counter({SPOT_E1: 1, OD_E2: 1})
    ready = [node(SPOT_E1), node(OD_E2)]
    assert counts(policy.decide(obs(60, 0.0, ready))) == Counter({SPOT_E1: 1, OD_E2: 1})


# -- oracle -------------------------------------------------------------------------------


def served_everywhere(oracle: Oracle, demand: Sequence[float]) -> bool:
    """Whether the replayed schedule's capacity within reach covers demand at each step."""
    for t, d in enumerate(demand):
        cap = sum(
            v[t] * 1.0  # 1 rps per node
            for (m, p), v in oracle.schedule.items()
            if m == "m" and p.region != "eu-west-1"
        )
        if cap < d - 1e-9:
            return False
    return True


DEMAND = [1.5, 3.0, 0.5, 2.0, 2.0, 0.0]
SPOT = {"e1": [2, 0, 2, 2, 1, 1], "e2": [0, 0, 1, 1, 0, 0], "w2": [0] * 6}


def test_oracle_ip_on_a_tiny_horizon_serves_all_demand() -> None:
    oracle = Oracle(CONFIG, CATALOG, PROFILES, foresight(DEMAND, SPOT), config_bound=True)
    assert oracle.bound_kind == "ip" and oracle.config_bound_kind == "ip"
    assert oracle.unserved_rps_h == pytest.approx(0.0)
    # The bound for any policy <= the bound under the config's rules <= the schedule.
    assert oracle.lower_bound_cost_usd <= oracle.config_bound_cost_usd + 1e-9
    assert oracle.config_bound_cost_usd <= oracle.schedule_cost_usd + 1e-9
    assert served_everywhere(oracle, DEMAND)
    # Spot is used where the trace allows it, never beyond.
    for key, v in oracle.schedule.items():
        if key[1] == SPOT_E1:
            assert all(c <= cap for c, cap in zip(v, SPOT["e1"], strict=True))
    assert any(key[1].market is Market.SPOT and max(v) > 0 for key, v in oracle.schedule.items())
    # min_replicas holds even with no demand.
    assert sum(v[5] for v in oracle.schedule.values()) >= 1


def share_config(share: float) -> Config:
    return Config.model_validate(
        {
            "planning": {"target_utilization": 0.5, "default_boot_time_s": 600},
            "models": [
                {
                    "name": "m",
                    "latency_slo_ms": 5000,
                    "min_replicas": 1,
                    "min_on_demand_share": share,
                }
            ],
            "regions": [{"name": "us", "location": "us-east-1", "max_latency_ms": 80}],
            "clouds": {"gcp": {"enabled": False}},
        }
    )


@settings(max_examples=25, deadline=None)
@given(
    demand=st.lists(st.sampled_from([0.0, 0.5, 1.5, 3.0, 6.0, 9.5]), min_size=3, max_size=8),
    share=st.sampled_from([0.2, 0.3, 0.5]),
    spot_room=st.integers(0, 12),
)
def test_oracle_rounded_schedule_keeps_the_on_demand_share(
    demand: list[float], share: float, spot_room: int
) -> None:
    # The rounded relaxation (the path of every long replay) covers fractions with
    # whole spot nodes; it must still keep min_on_demand_share as capsched does, or a
    # comparison against it measures the config, not the policy (issue 19).
    spot = {"e1": [spot_room] * len(demand), "e2": [spot_room] * len(demand)}
    oracle = Oracle(
        share_config(share), CATALOG, PROFILES, foresight(demand, spot), ip_max_int_vars=0
    )
    assert served_everywhere(oracle, demand)
    for t in range(len(demand)):
        od = sum(v[t] for (_, p), v in oracle.schedule.items() if p.market is Market.ON_DEMAND)
        total = sum(v[t] for v in oracle.schedule.values())
        assert od >= share * total - 1e-9, (t, oracle.schedule)
    assert oracle.schedule_cost_usd >= oracle.lower_bound_cost_usd - 1e-6


def test_oracle_share_is_kept_by_replacing_spot_not_by_adding_to_it() -> None:
    # 6 rps at 1 rps per planned node, spot room everywhere: the relaxation keeps 30 % on
    # demand as fractions over two locations. Rounded, the schedule keeps the share by
    # replacing spot nodes: at most one node beyond the load (whole nodes in two
    # locations), where topping the share up on a spot fleet would hold 8.
    spot = {"e1": [10] * 4, "e2": [10] * 4}
    oracle = Oracle(
        share_config(0.3), CATALOG, PROFILES, foresight([6.0] * 4, spot), ip_max_int_vars=0
    )
    for t in range(4):
        total = sum(v[t] for v in oracle.schedule.values())
        od = sum(v[t] for (_, p), v in oracle.schedule.items() if p.market is Market.ON_DEMAND)
        assert 6 <= total <= 7
        assert od >= 0.3 * total
    # Nothing goes to a pool beyond the region's latency limit, not even for the share.
    assert all(p.region != "eu-west-1" or max(v) == 0 for (_, p), v in oracle.schedule.items())


def round_relaxation(
    config: Config,
    x: Mapping[Pool, Sequence[float]],
    served: Mapping[str, Sequence[float]],
    spot_room: Mapping[Pool, Sequence[float]],
) -> dict[Pool, list[int]]:
    """The oracle's rounding of a hand-written relaxation of model "m" (blocks of one
    10-minute step, boot time one step), per pool."""
    steps = len(next(iter(x.values())))
    locations = {p.location for p in PRICES}
    reach = {
        r.name: frozenset(
            loc for loc in locations if CATALOG.rtt_ms(f"aws:{r.location}", loc) <= r.max_latency_ms
        )
        for r in config.regions
    }
    rounding = Rounding(
        config,
        NodeCapacity(config, CATALOG, PROFILES),
        PRICES,
        lambda p: spot_room.get(p, [0.0] * steps),
        tuple(p for p in PRICES if p.market is Market.SPOT),
        steps,
        1 / 6,
        1 / 6,
        reach,
    )
    # As the oracle's programs do, the relaxation has a value for every pool in reach.
    pools = [p for p in PRICES if any(p.location in r for r in reach.values())]
    relaxed = ProgramResult(
        True,
        0.0,
        0.0,
        0.0,
        {("m", p): list(x.get(p, [0.0] * steps)) for p in pools},
        {("m", r): list(v) for r, v in served.items()},
    )
    return {p: v for (_, p), v in rounding.round(relaxed, 1).items()}


def test_oracle_rounding_keeps_one_on_demand_pool_when_the_relaxation_shifts_fractions() -> None:
    # The relaxation keeps 30 % of 2.5 rps on demand but shifts it between us-east-1 and
    # us-east-2 from step to step, and its spot from us-east-1 (whose room closes at step
    # 3) to us-east-2. Rounded per location, every location would get a whole on-demand
    # node in turn, each move a launch and a boot (docs/baselines.md, the SkyPilot-traces
    # diagnosis). The rounded schedule keeps its on-demand nodes in one pool throughout.
    od_e1 = [0.45, 0.15, 0.6, 0.0, 0.3, 0.1]
    od_e2 = [0.3 - v + 0.45 for v in od_e1]
    spot_e1 = [1.0, 1.2, 0.9, 0.0, 0.0, 0.0]
    spot_e2 = [0.75, 0.6, 0.75, 1.75, 1.45, 1.65]
    load = [2.5] * 6
    x = {OD_E1: od_e1, OD_E2: od_e2, SPOT_E1: spot_e1, SPOT_E2: spot_e2}
    room = {SPOT_E1: [2, 2, 2, 0, 0, 0], SPOT_E2: [4] * 6}
    out = round_relaxation(share_config(0.3), x, {"us": load}, room)
    on_demand = [p for p, v in out.items() if p.market is Market.ON_DEMAND and max(v) > 0]
    assert len(on_demand) == 1
    # Held at every step, never stopped and started again.
    assert min(out[on_demand[0]]) >= 1
    for t, d in enumerate(load):
        total = sum(v[t] for v in out.values())  # 1 rps per node
        od = sum(v[t] for p, v in out.items() if p.market is Market.ON_DEMAND)
        assert total >= d and od >= 0.3 * total
        assert out[SPOT_E1][t] <= room[SPOT_E1][t] and out[SPOT_E2][t] <= room[SPOT_E2][t]


def test_oracle_rounding_keeps_a_node_where_it_ran_rather_than_boot_a_cheaper_one() -> None:
    # us-east-1's spot room opens at step 2 and the relaxation moves its half spot node
    # there from us-east-2 (0.35/h against 0.30/h). A new node there pays a boot (one
    # step) to save 0.05/h: the node that ran in us-east-2 stays.
    x = {OD_E2: [1.0] * 4, SPOT_E2: [0.5, 0.5, 0.0, 0.0], SPOT_E1: [0.0, 0.0, 0.5, 0.5]}
    room = {SPOT_E1: [0, 0, 4, 4], SPOT_E2: [4] * 4}
    out = round_relaxation(share_config(0.3), x, {"us": [1.5] * 4}, room)
    assert out[SPOT_E2] == [1, 1, 1, 1]
    assert max(out[SPOT_E1]) == 0
    assert out[OD_E2] == [1, 1, 1, 1]


def test_oracle_rounding_serves_each_region_within_its_reach() -> None:
    # Two source regions: "eu" may only use eu-west-1, "us" the US locations. Whatever
    # pool the on-demand nodes go to, each region's load is covered where it may be
    # served, and on-demand nodes sit in one pool per reach group.
    config = Config.model_validate(
        {
            "planning": {"target_utilization": 0.5, "default_boot_time_s": 600},
            "models": [{"name": "m", "latency_slo_ms": 5000, "min_on_demand_share": 0.5}],
            "regions": [
                {"name": "us", "location": "us-east-1", "max_latency_ms": 80},
                {"name": "eu", "location": "eu-west-1", "max_latency_ms": 20},
            ],
            "clouds": {"gcp": {"enabled": False}},
        }
    )
    x = {
        OD_E1: [0.5, 0.2, 0.5],
        OD_E2: [0.5, 0.8, 0.7],
        OD_EU: [1.5, 1.5, 1.2],
        SPOT_E1: [1.0, 1.0, 0.8],
    }
    served = {"us": [2.0, 2.0, 2.0], "eu": [1.5, 1.5, 1.2]}
    out = round_relaxation(config, x, served, {SPOT_E1: [4] * 3})
    us = {p for p in out if p.region != "eu-west-1"}
    for t in range(3):
        assert out[OD_EU][t] >= math.ceil(served["eu"][t])
        assert sum(out[p][t] for p in us) >= served["us"][t]
        total = sum(v[t] for v in out.values())
        od = sum(v[t] for p, v in out.items() if p.market is Market.ON_DEMAND)
        assert od >= 0.5 * total
    assert len([p for p in us if p.market is Market.ON_DEMAND and max(out[p]) > 0]) == 1


def test_oracle_rounding_keeps_quotas() -> None:
    # A quota allows one GPU on demand in us-east-2 (the cheaper on-demand pool). The
    # relaxation's on-demand capacity, 1.5 nodes there, still goes to whole nodes: one in
    # us-east-2 at most, the rest where the quota allows, with the load and share kept.
    config = share_config(0.5).model_copy(
        update={
            "quotas": Config.model_validate(
                {
                    **CONFIG.model_dump(mode="json", include={"models", "regions", "clouds"}),
                    "quotas": [
                        {
                            "cloud": "aws",
                            "region": "us-east-2",
                            "market": "on-demand",
                            "max_gpus": 1,
                        }
                    ],
                }
            ).quotas
        }
    )
    x = {OD_E2: [1.5] * 3, SPOT_E1: [1.5] * 3}
    out = round_relaxation(config, x, {"us": [3.0] * 3}, {SPOT_E1: [4] * 3})
    for t in range(3):
        assert out[OD_E2][t] <= 1
        total = sum(v[t] for v in out.values())
        od = sum(v[t] for p, v in out.items() if p.market is Market.ON_DEMAND)
        assert total >= 3 and od >= 0.5 * total


def keep_rules_one_at_a_time(block: _Block, chosen: Sequence[int]) -> None:
    """The share and min_replicas rule as it was: one on-demand node of the first of
    `chosen` that quotas allow, then a prune, until the rules hold."""
    while not block.rules_ok():
        if not any(block.add(i, 1) for i in chosen):
            return
        block.prune()


@pytest.mark.parametrize("quota_gpus", [None, 7])
def test_oracle_rounding_adds_the_share_in_few_prunes(
    monkeypatch: pytest.MonkeyPatch, quota_gpus: int | None
) -> None:
    # The relaxation holds 20-60 rps all on spot (1 rps per node, room for all), the
    # config half on demand. The rule adds on-demand nodes and prunes the spot they make
    # surplus until the share holds: half of each block's load, no more (before a prune
    # could remove spot while the share was short, it bought 19-59 on-demand nodes a
    # block where 10-30 keep the share). Added one at a time, each cost a prune (issue
    # #20: hundreds a block on long prompts); now a doubling and a bisection over the
    # count, with the same nodes. With a quota on us-east-2 (the cheaper on-demand pool)
    # the rest goes to us-east-1.
    load = [20.0, 40.0, 60.0, 35.0]
    config = share_config(0.5)
    if quota_gpus is not None:
        quota = {"cloud": "aws", "region": "us-east-2", "market": "on-demand"}
        config = config.model_copy(
            update={
                "quotas": Config.model_validate(
                    {
                        **config.model_dump(mode="json", include={"models", "regions", "clouds"}),
                        "quotas": [{**quota, "max_gpus": quota_gpus}],
                    }
                ).quotas
            }
        )
    x = {SPOT_E1: [v * 0.6 for v in load], SPOT_E2: [v * 0.4 for v in load]}
    room = {SPOT_E1: [60] * 4, SPOT_E2: [60] * 4}
    prunes = 0
    prune = _Block.prune

    def counted(block: _Block) -> None:
        nonlocal prunes
        prunes += 1
        prune(block)

    monkeypatch.setattr(_Block, "prune", counted)
    out = round_relaxation(config, x, {"us": load}, room)
    fast = prunes
    monkeypatch.setattr(_Block, "keep_rules", keep_rules_one_at_a_time)
    prunes = 0
    assert out == round_relaxation(config, x, {"us": load}, room)
    for t, d in enumerate(load):
        total = sum(v[t] for v in out.values())
        od = sum(v[t] for p, v in out.items() if p.market is Market.ON_DEMAND)
        assert total >= d and od >= 0.5 * total
        assert od <= math.ceil(0.5 * d) and total <= d + 1  # the fewest that keep the share
        if quota_gpus is not None:
            assert out[OD_E2][t] <= quota_gpus
    # Two trials (one per on-demand pool) of four blocks. A block needing k < 64 nodes:
    # at most one prune per doubling that fails (ceil(log2 k)) and one for the one that
    # holds, one per bisection step (ceil(log2 k)), one for the count found and the
    # trial's own; one at a time, one per node.
    trials = 2 * len(load)
    assert fast <= trials * (2 * math.ceil(math.log2(max(load))) + 3)
    assert prunes >= 2 * sum(math.ceil(0.5 * d) for d in load)  # one per node, per trial
    assert fast < prunes


def prune_one_at_a_time(block: _Block) -> None:
    """The prune as it was: each key's nodes one at a time, until the first whose removal
    leaves load short or the share unkept (that node put back as it was; `add` would not
    where the relaxation's whole spot nodes overdraw the room)."""
    m = block.m
    cur, prev = block.cur[m.dear_idx], block.prev[m.dear_idx]
    started = m.dear_idx[cur > prev]
    held = m.dear_idx[(cur > 0) & (cur <= prev)]
    for i in (int(i) for i in np.concatenate([started, held])):
        while block.cur[i] > 0 and int(block.cur.sum()) > m.section.min_replicas:
            block.remove(i)
            if block.short() > 1e-9 or not (block.share_ok() or not m.od[i]):
                block.remove(i, -1)
                break


@settings(max_examples=30, deadline=None)
@given(
    load=st.lists(st.sampled_from([0.0, 2.0, 7.5, 16.0, 33.0]), min_size=2, max_size=5),
    share=st.sampled_from([0.0, 0.2, 0.5, 0.9]),
    spot_room=st.integers(0, 40),
    od_part=st.sampled_from([0.0, 0.3]),
)
def test_oracle_rounding_is_the_same_with_nodes_added_and_removed_one_at_a_time(
    load: list[float], share: float, spot_room: int, od_part: float
) -> None:
    # keep_rules' doubling and bisection over the on-demand count, and prune's galloping
    # over each key's surplus, give the nodes that adding and removing one node at a time
    # gave (issue #20).
    x = {
        OD_E2: [v * od_part for v in load],
        SPOT_E1: [v * (1 - od_part) * 0.7 for v in load],
        SPOT_E2: [v * (1 - od_part) * 0.3 for v in load],
    }
    room = {SPOT_E1: [spot_room] * len(load), SPOT_E2: [spot_room // 2] * len(load)}
    args = (share_config(share), x, {"us": load}, room)
    fast = round_relaxation(*args)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_Block, "keep_rules", keep_rules_one_at_a_time)
        patch.setattr(_Block, "prune", prune_one_at_a_time)
        assert fast == round_relaxation(*args)


def test_oracle_config_bound_is_off_unless_asked() -> None:
    oracle = Oracle(CONFIG, CATALOG, PROFILES, foresight(DEMAND, SPOT))
    assert oracle.config_bound_kind == "off" and math.isnan(oracle.config_bound_cost_usd)
    asked = Oracle(CONFIG, CATALOG, PROFILES, foresight(DEMAND, SPOT), config_bound=True)
    # The bound and the schedule do not depend on it.
    assert asked.lower_bound_cost_usd == oracle.lower_bound_cost_usd
    assert asked.schedule == oracle.schedule


def test_oracle_lp_bound_is_below_the_ip_cost() -> None:
    ip = Oracle(CONFIG, CATALOG, PROFILES, foresight(DEMAND, SPOT))
    lp = Oracle(CONFIG, CATALOG, PROFILES, foresight(DEMAND, SPOT), ip_max_int_vars=0)
    blocks = Oracle(
        CONFIG, CATALOG, PROFILES, foresight(DEMAND, SPOT), ip_max_int_vars=0, max_lp_steps=2
    )
    assert lp.bound_kind == "lp" and blocks.bound_kind == "lp"
    assert lp.lower_bound_cost_usd <= ip.lower_bound_cost_usd + 1e-6
    assert blocks.lower_bound_cost_usd <= lp.lower_bound_cost_usd + 1e-6
    # The rounded relaxation still serves everything, and costs at least the bound.
    for o in (lp, blocks):
        assert served_everywhere(o, DEMAND)
        assert o.schedule_cost_usd >= o.lower_bound_cost_usd - 1e-6


def test_oracle_launches_a_boot_time_ahead() -> None:
    demand = [0.0, 0.0, 3.0, 3.0]
    no_spot = {k: [0] * 4 for k in ("e1", "e2", "w2")}
    oracle = Oracle(CONFIG, CATALOG, PROFILES, foresight(demand, no_spot))
    # Boot time 600 s = one step: at step 1 the nodes for step 2 are already wanted. Step
    # 0's fleet comes from the unaccounted warm-up, so min_replicas sits in us-east-2 from
    # the start (0.9 x 2 steps) rather than in eu-west-1 (0.5 x 2 steps, then one more
    # us-east-2 boot of 0.9 x 1 step).
    assert counts(oracle.decide(obs(0, 0.0))) == Counter({OD_E2: 1})
    assert counts(oracle.decide(obs(600, 0.0))) == Counter({OD_E2: 3})
    assert counts(oracle.decide(obs(1200, 3.0))) == Counter({OD_E2: 3})
    # As accounted: 1 + 1 + 3 + 3 node-steps in us-east-2 (1/6 h each), and the boot
    # (1/6 h) of the 2 nodes started after step 0.
    serving = 0.9 * 8 / 6
    boots = 0.9 * 2 / 6
    assert oracle.schedule_cost_usd == pytest.approx(serving + boots)
    # The bound for any policy: 3 rps on 2 rps nodes at full use (no utilisation target,
    # no min_replicas) is 2 us-east-2 nodes for 2 steps; a node may leave just after its
    # last count, so each run pays one step less than it is counted, and its boot.
    assert oracle.bound_kind == "ip"
    assert oracle.lower_bound_cost_usd == pytest.approx(0.9 * 2 * 2 / 6)


# -- replica shape sized to the load ---------------------------------------------------

BIG = InstanceType(Cloud.AWS, "g.8", "L4", 8, 24.0, 32, 128.0)


def big_pool(region: str, market: Market) -> Pool:
    return Pool(Cloud.AWS, region, "", "g.8", market)


# g.8 carries 8 rps per node and is cheaper per rps (0.875 vs 1.0 on demand, 0.125 vs
# 0.30 on spot), but a small load needs one whole g.8 where three g.1 nodes do.
SHAPE_PRICES = {
    OD_E1: 1.0,
    SPOT_E1: 0.30,
    big_pool("us-east-1", Market.ON_DEMAND): 7.0,
    big_pool("us-east-1", Market.SPOT): 1.0,
}
SHAPE_OFFERINGS = tuple(Offering(p, price) for p, price in sorted(SHAPE_PRICES.items()))
SHAPE_CATALOG = Catalog(
    instance_types={(Cloud.AWS, "g.1"): ITYPE, (Cloud.AWS, "g.8"): BIG},
    offerings=SHAPE_OFFERINGS,
    region_coords={"aws:us-east-1": (38.9, -77.4)},
)


def shape_of(policy: Reactive | SpotHedge | StaticPeak, peak: float) -> set[str]:
    """Instance types the policy runs (or would run) right after its first tick."""
    plan = policy.decide(obs(0, peak, offerings=SHAPE_OFFERINGS))
    services = getattr(policy, "services", None)
    if services is not None:
        return {st.instance_type for st in services}
    return {pl.pool.instance_type for pl in plan.placements}


@pytest.mark.parametrize(("peak", "expected"), [(2.5, "g.1"), (0.0, "g.1"), (40.0, "g.8")])
def test_replica_shape_is_sized_to_the_load_not_to_price_per_rps(
    peak: float, expected: str
) -> None:
    # Per rps at full use g.8 wins; for 2.5 rps, 3 x g.1 (3.0/h) beats 1 x g.8 (7.0/h)
    # and SpotHedge's 3 spot + 1 base on-demand g.1 (1.9/h) beats 1 + 1 g.8 (8.0/h); for
    # 40 rps, 5 x g.8 (35/h) beats 40 x g.1 (40/h), and 5 + 1 g.8 (12/h) 40 + 1 g.1 (13/h).
    fs = Foresight(0.0, 600.0, {("m", "us"): (0.0, peak, 0.0)})
    for policy in (
        Reactive(CONFIG, SHAPE_CATALOG, PROFILES, foresight=fs),
        SpotHedge(CONFIG, SHAPE_CATALOG, PROFILES, foresight=fs),
        StaticPeak(CONFIG, SHAPE_CATALOG, PROFILES, fs),
    ):
        assert shape_of(policy, 0.0) == {expected}, policy.name
    # Without foresight the online baselines size on what they observe at the first tick.
    assert shape_of(Reactive(CONFIG, SHAPE_CATALOG, PROFILES), peak) == {expected}
    assert shape_of(SpotHedge(CONFIG, SHAPE_CATALOG, PROFILES), peak) == {expected}


def test_spothedge_only_places_spot_in_pools_of_its_replica_type() -> None:
    fs = Foresight(0.0, 600.0, {("m", "us"): (2.5,)})
    policy = SpotHedge(CONFIG, SHAPE_CATALOG, PROFILES, foresight=fs)
    plan = policy.decide(obs(0, 2.5, offerings=SHAPE_OFFERINGS))
    assert {pl.pool.instance_type for pl in plan.placements} == {"g.1"}
    assert set(policy.placer("m", "us").status) == {SPOT_E1}


# -- registry -----------------------------------------------------------------------------


def test_baselines_are_in_the_simulator_registry() -> None:

    from simulations.policies import TraceInfo
    from simulations.roster import make_policy, policy_names

    assert {"static-peak", "reactive", "spothedge", "oracle"} <= set(policy_names())
    info = TraceInfo(
        start_s=0.0,
        step_s=600.0,
        keys=(("m", "us"),),
        demand_rps=np.array([[1.0, 2.5, math.nan]]),
        offerings=OFFERINGS,
        boot_time_s=600.0,
    )
    for name in ("static-peak", "reactive", "spothedge", "oracle"):
        policy = make_policy(name, CONFIG, CATALOG, PROFILES, info)
        assert policy.name == name
        plan = policy.decide(obs(0, 1.0))
        assert sum(pl.count for pl in plan.placements) >= 1
    peak = make_policy("static-peak", CONFIG, CATALOG, PROFILES, info)
    assert counts(peak.decide(obs(0, 1.0))) == Counter({OD_E2: 3})
