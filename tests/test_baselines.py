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

import pytest

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
from scheduler.fleet.catalog import Catalog
from scheduler.ports.metrics import DemandSample
from scheduler.ports.provider import InterruptionNotice
from simulations.baselines import Foresight, Oracle, Reactive, SpotHedge, StaticPeak
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
    import numpy as np

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
