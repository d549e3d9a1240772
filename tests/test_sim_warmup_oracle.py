"""The replay's warm-up and the oracle's two promises on small scripted worlds: its bound
is below what any policy serving everything pays, and its replay serves everything."""

from __future__ import annotations

import asyncio
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.sim import SpotTrace
from scheduler.decide.observation import Observation, PolicyBase
from scheduler.domain import Market, Placement, Plan, PlanStatus
from scheduler.fleet.catalog import load_catalog
from simulations.baselines.common import running_spot_peak
from simulations.baselines.oracle import Oracle
from simulations.baselines.registry import foresight_of
from simulations.engine import RunResult, World, replay, warmup_load
from simulations.roster import make_policy

sys.path.insert(0, str(Path(__file__).parent))
from sim_helpers import MODEL, OD_POOL, registered, small_config, world

BASELINES = ("static-peak", "reactive", "spothedge", "oracle")


class Observing(PolicyBase):
    """Holds enough on-demand nodes for the load it observes now, nothing more."""

    name = "observing"

    def __init__(self, per_node_rps: float) -> None:
        self.per_node_rps = per_node_rps  # planned rps of one node

    def decide(self, obs: Observation) -> Plan:
        load = sum(v for v in obs.demand.rps.values() if math.isfinite(v))
        n = max(1, math.ceil(load / self.per_node_rps - 1e-9))
        return Plan(PlanStatus.OPTIMAL, (Placement(MODEL, OD_POOL, n),), 0.0, 0.0, 0.0, 0.0)


def default_warmup(w: World) -> World:
    """The engine's own warm-up (boot time + one tick) instead of the helpers' none."""
    return replace(w, warmup_s=None)


def run(w: World, policy: str, db: Path) -> RunResult:
    return asyncio.run(replay(w, policy, db))


def test_warmup_load_is_each_series_peak_of_the_first_boot_plus_tick() -> None:
    rps = np.array([[0.0, 9.0, 1.0, 50.0], [np.nan, np.nan, np.nan, 3.0], [2.0, np.nan, 1.0, 0.0]])
    got = warmup_load(rps, 3)
    assert got[0] == 9.0 and math.isnan(got[1]) and got[2] == 2.0


def test_a_series_that_starts_at_zero_and_jumps_is_served_from_the_start(tmp_path: Path) -> None:
    # Minute 1 has no load, minute 2 has 6 rps: faster than the 5-minute boot. The
    # warm-up shows every policy the first boot + tick's peak, so a policy that only
    # sizes on what it observes starts the trace with enough nodes.
    demand = [0.0] + [6.0] * 14
    w = default_warmup(world(small_config(), demand, boot_time_s=300.0))
    with registered("observing", Observing(1.0)):
        r = run(w, "observing", tmp_path / "o.db")
    assert (r.served_rps[0] >= r.demand_rps[0] - 1e-9).all()
    for name in ("reactive", "static-peak", "spothedge"):
        s = run(w, name, tmp_path / f"{name}.db").summary(None)
        assert s["unserved_fraction"] == 0.0, name


def test_without_a_warmup_the_jump_is_missed(tmp_path: Path) -> None:
    # The same policy with no warm-up at all: the nodes for minute 2 boot for 5 minutes.
    demand = [0.0] + [6.0] * 14
    with registered("observing", Observing(1.0)):
        r = run(world(small_config(), demand, boot_time_s=300.0), "observing", tmp_path / "o.db")
    assert r.summary(None)["unserved_fraction"] > 0.2


def spot_world(demand: list[float], counts: list[int], gap_s: float = 60.0) -> World:
    """One model in us-east-1; every AWS us-east-1 spot pool follows `counts` (per
    `gap_s`), no random interruptions, boot 300 s, the engine's warm-up."""
    cat = load_catalog()
    trace = SpotTrace("scripted", gap_s, np.array(counts, dtype=np.int64), loop=False)
    spot = {
        o.pool: trace
        for o in cat.offerings
        if o.pool.market is Market.SPOT and o.pool.cloud.value == "aws"
        and o.pool.region == "us-east-1"
    }  # fmt: skip
    w = world(small_config(), demand, spot=spot, boot_time_s=300.0, catalog=cat)
    return replace(default_warmup(w), random_interruptions=False)


def test_oracle_replay_foresees_a_spot_capacity_drop(tmp_path: Path) -> None:
    # Spot holds 4 instances for 20 minutes, then none: the oracle uses spot while it
    # lasts and has on-demand nodes ready when it goes.
    demand = [3.0 + 2.0 * math.sin(i / 5.0) for i in range(40)]
    w = spot_world(demand, [4] * 20 + [0] * 30)
    r = run(w, "oracle", tmp_path / "oracle.db")
    s = r.summary(None)
    assert s["unserved_fraction"] == 0.0
    assert s["slo_attainment"] >= 0.995
    assert r.cost_by_market["spot"][-1] > 0  # it did use the spot pool
    assert r.capacity_by_market["spot"][25:].max() == 0.0
    assert s["bound_kind"] in ("ip", "lp")
    assert s["lower_bound_usd"] <= r.cost_usd + 1e-9


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    demand=st.lists(st.floats(0.0, 12.0), min_size=6, max_size=16),
    counts=st.lists(st.integers(0, 4), min_size=2, max_size=6),
)
def test_oracle_bound_is_below_every_policy_at_full_service(
    tmp_path: Path, demand: list[float], counts: list[int]
) -> None:
    w = spot_world(demand, counts, gap_s=180.0)
    oracle = make_policy("oracle", w.config, w.catalog, w.profiles, w.info)
    bound = oracle.lower_bound_cost_usd  # type: ignore[attr-defined]
    assert oracle.bound_kind in ("ip", "lp")  # type: ignore[attr-defined]
    full = 0
    for name in BASELINES:
        r = run(w, name, tmp_path / f"{name}.db")
        if r.summary(None)["unserved_fraction"] == 0.0:
            full += 1
            assert bound <= r.cost_usd + 1e-6, (name, bound, r.cost_usd)
    assert full >= 1
    # The bound relaxes the config's rules and utilisation, never the other way round.
    ruled = Oracle(
        w.config, w.catalog, w.profiles, foresight_of(w.info),
        boot_time_s=w.info.boot_time_s, seed=w.info.seed, config_bound=True,
    )  # fmt: skip
    assert ruled.lower_bound_cost_usd == bound
    assert bound <= ruled.config_bound_cost_usd + 1e-6


def test_bound_holds_against_capsched_too(tmp_path: Path) -> None:
    demand = [0.0, 4.0, 8.0, 8.0, 2.0, 0.0, 5.0, 9.0, 9.0, 3.0]
    w = spot_world(demand, [2, 0, 3, 1])
    w = replace(w, config=w.config.model_copy(update={"solver": w.config.solver.model_copy(
        update={"node_limit": 500})}))  # fmt: skip
    r = run(w, "capsched", tmp_path / "c.db")
    oracle = make_policy("oracle", w.config, w.catalog, w.profiles, w.info)
    if r.summary(None)["unserved_fraction"] == 0.0:
        assert oracle.lower_bound_cost_usd <= r.cost_usd + 1e-6  # type: ignore[attr-defined]
    assert oracle.lower_bound_cost_usd == pytest.approx(  # type: ignore[attr-defined]
        run(w, "oracle", tmp_path / "o.db").summary(None)["lower_bound_usd"], abs=1e-3
    )


@settings(max_examples=200, deadline=None)
@given(
    counts=st.lists(st.integers(0, 9), min_size=1, max_size=40),
    gap_s=st.sampled_from([7.0, 30.0, 45.5, 60.0, 300.0, 600.0]),
    offset_s=st.sampled_from([0.0, 13.0, 600.0, 1e5]),
    loop=st.booleans(),
    n_steps=st.integers(0, 120),
    step_s=st.sampled_from([17.0, 60.0, 300.0]),
    notice_s=st.sampled_from([0.0, 30.0, 120.0]),
)
def test_the_bound_s_spot_limit_is_the_most_in_force_over_each_notice_window(
    counts: list[int],
    gap_s: float,
    offset_s: float,
    loop: bool,
    n_steps: int,
    step_s: float,
    notice_s: float,
) -> None:
    """Per step, the largest count of any trace tick in force during [start - notice, start]
    (the window starts no earlier than 0): instances told to leave run through the notice."""
    trace = SpotTrace("t", gap_s, np.array(counts, dtype=np.int64), offset_s=offset_s, loop=loop)
    want = []
    for i in range(n_steps):
        start = i * step_s
        t = max(start - notice_s, 0.0)
        seen = [trace.capacity_at(t)]
        while (t := trace.next_tick_after(t)) <= start:
            seen.append(trace.capacity_at(t))
        want.append(max(seen))
    assert running_spot_peak(trace, n_steps, step_s, notice_s) == want
