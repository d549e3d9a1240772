"""A restart does not forecast from a cold start: the policy learns from the demand the
store recorded before the process started (`Reconciler.warm_start`)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import builders
import numpy as np
import pytest
from fakes import no_sleep
from hypothesis import given
from hypothesis import strategies as st

from adapters.sim import SimCloud
from scheduler.config import Config
from scheduler.decide.policy import CapschedPolicy
from scheduler.fleet.catalog import load_catalog
from scheduler.fleet.profiles import load_profiles
from scheduler.forecast.band_feedback import (
    HISTORY,
    SCALE_MAX,
    SCALE_MIN,
    BandMemory,
    BandScale,
)
from scheduler.loop.factory import build_scheduler
from scheduler.loop.reconciler import Reconciler
from scheduler.loop.store import DemandRecord, StateStore
from scheduler.ports.metrics import DemandSample

KEY = (builders.MODEL, builders.REGION)


def _record(at_s: float, rps: float, peak: float) -> DemandRecord:
    return DemandRecord(builders.MODEL, builders.REGION, rps, peak, math.nan, {})


def test_the_store_gives_back_each_tick_as_it_was_seen(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.record_demand(300.0, [_record(300.0, 4.0, 6.0)])
    store.record_demand(600.0, [_record(600.0, math.nan, math.nan)])  # a missing reading
    store.record_demand(900.0, [_record(900.0, 5.0, math.nan)])  # no peak known
    samples = store.demand_samples()
    assert [s.at_s for s in samples] == [300.0, 600.0, 900.0]
    assert samples[0].rps == {KEY: 4.0} and samples[0].peak_rps == {KEY: 6.0}
    assert samples[1].rps == {} and samples[1].peak_rps == {}  # missing stays missing
    assert samples[2].rps == {KEY: 5.0} and samples[2].peak_rps == {}
    assert [s.at_s for s in store.demand_samples(since_s=600.0)] == [900.0]
    # Only the latest ticks are read: within a span before the latest, at most N of them.
    assert [s.at_s for s in store.demand_samples(span_s=400.0)] == [600.0, 900.0]
    assert [s.at_s for s in store.demand_samples(max_ticks=1)] == [900.0]
    store.close()
    assert StateStore(tmp_path / "empty.db").demand_samples(span_s=60.0, max_ticks=5) == []


def _daily(ticks: int, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    t = np.arange(ticks)
    return list(20.0 + 10.0 * np.sin(2 * np.pi * t / 288) + rng.normal(0.0, 1.0, ticks))


def test_a_warm_started_policy_plans_as_the_one_that_never_stopped() -> None:
    cfg = builders.config(forecast={"band_feedback": False})
    tick = cfg.scheduler.tick_interval_s
    rates = _daily(600)
    running = CapschedPolicy(cfg, load_catalog(), load_profiles())
    samples = []
    for i, v in enumerate(rates[:-1]):
        obs = builders.observation(i * tick, rps={KEY: v})
        running.planned_demand(obs)
        samples.append(DemandSample(i * tick, {KEY: v}))
    restarted = CapschedPolicy(cfg, load_catalog(), load_profiles())
    assert restarted.warm_start(samples) == len(samples)
    cold = CapschedPolicy(cfg, load_catalog(), load_profiles())
    now = builders.observation((len(rates) - 1) * tick, rps={KEY: rates[-1]})
    expected = running.planned_demand(now)[0].rps
    assert restarted.planned_demand(now)[0].rps == expected
    # A cold policy plans something else: two days of the daily swing are unknown to it.
    assert cold.planned_demand(now)[0].rps != expected
    # Ticks the policy has seen already are not fed twice.
    assert restarted.warm_start(samples) == 0


class _Trace:
    """A load source replaying `rates`, one per tick, at the tick `i`."""

    def __init__(self, rates: list[float]) -> None:
        self.rates = rates
        self.i = 0

    async def demand(self, now_s: float) -> DemandSample:
        return DemandSample(now_s, {KEY: self.rates[self.i]})


def _capsched(rec: Reconciler) -> CapschedPolicy:
    assert isinstance(rec.policy, CapschedPolicy)
    return rec.policy


async def _ran(
    cfg: Config, store: StateStore, rates: list[float]
) -> tuple[Reconciler, SimCloud, _Trace]:
    """A reconciler on `store` that has ticked through all of `rates` but the last."""
    catalog = load_catalog()
    cloud = SimCloud(catalog.offerings, catalog.instance_types, random_interruptions=False)
    trace = _Trace(rates)
    rec = build_scheduler(cfg, provider=cloud, metrics=trace, store=store, sleep=no_sleep)
    assert rec.warm_start() == 0  # nothing recorded yet
    tick = cfg.scheduler.tick_interval_s
    for i in range(len(rates) - 1):
        trace.i = i
        cloud.advance_to(i * tick)
        await rec.tick(i * tick)
    return rec, cloud, trace


async def test_a_restarted_reconciler_learns_from_the_recorded_demand(tmp_path: Path) -> None:
    cfg = builders.fleet_config(forecast={"band_feedback": False})
    store = StateStore(tmp_path / "state.db")
    rates = _daily(40, seed=3)
    first, cloud, trace = await _ran(cfg, store, rates)
    tick = cfg.scheduler.tick_interval_s
    # The process restarts on the same database: the new policy learns the 39 ticks.
    second = build_scheduler(cfg, provider=cloud, metrics=trace, store=store, sleep=no_sleep)
    assert second.warm_start() == len(rates) - 1
    trace.i = len(rates) - 1
    now = (len(rates) - 1) * tick
    obs = builders.observation(now, rps={KEY: rates[-1]})
    assert _capsched(second).planned_demand(obs) == _capsched(first).planned_demand(obs)
    store.close()


async def test_a_restarted_reconciler_plans_the_band_it_had_learnt(tmp_path: Path) -> None:
    # Steady load narrows the band (`[forecast] band_feedback`); a restart on the same
    # database takes the narrowed band up instead of planning the plain quantile again.
    cfg = builders.fleet_config()
    store = StateStore(tmp_path / "state.db")
    rates = _daily(40, seed=5)
    first, cloud, trace = await _ran(cfg, store, rates)
    tick = cfg.scheduler.tick_interval_s
    learnt = first.policy.band_scales()[builders.MODEL]
    assert learnt < 0.9  # the band narrowed
    second = build_scheduler(cfg, provider=cloud, metrics=trace, store=store, sleep=no_sleep)
    cold = build_scheduler(
        cfg, provider=cloud, metrics=trace, store=StateStore(tmp_path / "cold.db"), sleep=no_sleep
    )
    second.warm_start()
    cold.warm_start()
    assert second.policy.band_scales()[builders.MODEL] == learnt
    obs = builders.observation((len(rates) - 1) * tick, rps={KEY: rates[-1]})
    expected = _capsched(first).planned_demand(obs)
    assert _capsched(second).planned_demand(obs) == expected
    # Without the stored band the restart plans wider, as if it had never learnt.
    cold.policy.warm_start(store.demand_samples())
    assert _capsched(cold).planned_demand(obs)[0].rps > expected[0].rps
    store.close()


def test_an_unreadable_band_record_is_logged_and_the_band_learns_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = StateStore(tmp_path / "state.db")
    memory = BandMemory(scales={"m": 0.7}, planned={"m": {12: 80.0, 13: None}})
    store.record_band_memory("capsched", 3600.0, memory)
    assert store.band_memory("capsched") == memory
    assert store.band_memory("reactive") is None
    with store.transaction():
        store.db.execute('update band_memory set memory = \'{"scales": {"m": "wide"}}\'')
    with caplog.at_level(logging.WARNING):
        assert store.band_memory("capsched") is None
    assert "band_memory_unreadable policy=capsched" in caplog.text
    store.close()


@given(
    st.dictionaries(st.text(min_size=1, max_size=8), st.floats(-1e6, 1e6), max_size=4),
    st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.dictionaries(st.integers(-(10**9), 10**9), st.none() | st.floats(0, 1e9), max_size=12),
        max_size=4,
    ),
)
def test_a_restored_band_is_what_was_learnt_within_its_limits(
    scales: dict[str, float], planned: dict[str, dict[int, float | None]]
) -> None:
    memory = BandMemory(scales=scales, planned=planned)
    assert BandMemory.model_validate_json(memory.model_dump_json()) == memory
    band = BandScale(target=0.015)
    band.restore(memory)
    for model, value in scales.items():
        assert band.scale(model) == min(max(value, SCALE_MIN), SCALE_MAX)
    kept = band.memory().planned
    for model, plans in planned.items():
        # The most recent plans are kept, as many as the band remembers.
        assert kept.get(model, {}) == {s: plans[s] for s in sorted(plans)[-HISTORY:]}
