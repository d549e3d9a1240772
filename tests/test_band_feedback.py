"""The band fitted to the SLO: each model's forecast band widens after plans that left
load above capacity and narrows after plans that did not (`[forecast] band_feedback`)."""

from __future__ import annotations

import math

import builders
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.decide.policy import CapschedPolicy
from scheduler.fleet.catalog import load_catalog
from scheduler.fleet.profiles import load_profiles
from scheduler.forecast.band_feedback import (
    SCALE_MAX,
    SCALE_MIN,
    BandScale,
    overload_share,
    scaled_peak,
)

KEY = (builders.MODEL, builders.REGION)


def test_the_scaled_peak_is_the_plain_quantile_at_one_and_never_below_the_median() -> None:
    median = np.array([10.0, 12.0, 11.0])
    upper = np.array([14.0, 15.0, 19.0])
    assert scaled_peak(median, upper, 1.0) == 19.0
    assert scaled_peak(median, upper, 0.5) == pytest.approx(15.0)  # 11 + 0.5 * 8
    assert scaled_peak(median, upper, 2.0) == pytest.approx(27.0)
    assert scaled_peak(median, np.array([9.0, 9.0, 9.0]), 0.5) == 12.0  # a band below: median


def test_overload_share_is_the_load_above_capacity_and_nothing_without_load() -> None:
    assert overload_share(100.0, 80.0) == pytest.approx(0.2)
    assert overload_share(50.0, 80.0) == 0.0
    assert overload_share(0.0, 80.0) is None
    assert overload_share(math.nan, 80.0) is None
    assert overload_share(10.0, math.inf) is None


def test_plans_that_always_cover_narrow_the_band_to_its_floor() -> None:
    band = BandScale(target=0.01)
    for step in range(2000):
        band.planned("m", step, 100.0)
        band.observe("m", step, 3, 60.0)
    assert band.scale("m") == SCALE_MIN


def test_plans_that_leave_load_above_capacity_widen_the_band_to_its_ceiling() -> None:
    band = BandScale(target=0.01)
    for step in range(200):
        band.planned("m", step, 50.0)
        band.observe("m", step, 3, 100.0)
    assert band.scale("m") == SCALE_MAX


def test_missing_readings_and_missing_plans_teach_nothing() -> None:
    band = BandScale(target=0.01)
    band.planned("m", 0, 100.0)
    assert band.observe("m", 3, 3, math.nan) is None  # no reading: never narrows
    assert band.observe("m", 4, 3, 10.0) is None  # no plan made at step 1
    assert band.observe("other", 3, 3, 10.0) is None
    assert band.scale("m") == 1.0
    assert band.observe("m", 3, 3, 10.0) == 0.0
    assert band.scale("m") < 1.0


def test_in_closed_loop_the_mean_overload_share_settles_at_the_target() -> None:
    # Capacity follows the band (a plan of median + m x band), load is noisy: whatever the
    # noise's shape, the long-run mean overload share is the target (online quantile
    # tracking). Two shapes: light-tailed and bursty.
    for name, draw in (
        ("normal", lambda rng, n: rng.normal(100.0, 10.0, n).clip(1.0)),
        ("bursty", lambda rng, n: 80.0 + 20.0 * rng.pareto(2.5, n)),
    ):
        rng = np.random.default_rng(7)
        load = draw(rng, 20000)
        band = BandScale(target=0.02)
        shares = []
        for step, y in enumerate(load):
            band.planned("m", step, 80.0 + 15.0 * band.scale("m"))
            share = band.observe("m", step, 0, float(y))
            assert share is not None
            shares.append(share)
        settled = float(np.mean(shares[5000:]))
        assert settled == pytest.approx(0.02, abs=0.004), name


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.floats(-1e9, 1e12), st.just(math.nan), st.just(math.inf)),
            st.one_of(st.floats(-1e9, 1e12), st.just(math.nan), st.just(math.inf)),
        ),
        max_size=60,
    )
)
def test_the_factor_stays_within_its_bounds_for_any_readings(
    readings: list[tuple[float, float]],
) -> None:
    band = BandScale(target=0.005)
    for step, (capacity, peak) in enumerate(readings):
        band.planned("m", step, capacity)
        band.observe("m", step, 1, peak)
        assert SCALE_MIN <= band.scale("m") <= SCALE_MAX


# ---- wired into the policy


def _plans(
    rates: list[float], feedback: bool, robustness: float = 0.0
) -> tuple[list[float], CapschedPolicy]:
    cfg = builders.config(
        forecast={"band_feedback": feedback, "band_feedback_target": 0.01},
        planning={"robustness_fraction": robustness, "budget_usd_per_hour": None},
        solver={"time_limit_s": 2.0},
    )
    policy = CapschedPolicy(cfg, load_catalog(), load_profiles())
    tick = cfg.scheduler.tick_interval_s
    planned = []
    for t, v in enumerate(rates):
        policy.decide(builders.observation(t * tick, rps={KEY: v}))
        planned.append(policy.planned_rps()[KEY])
    return planned, policy


def test_on_steady_noisy_load_the_policy_plans_less_than_the_plain_quantile() -> None:
    # Load a node's capacity always covered: the band narrows, so the planned rates fall
    # below the plain 0.95 quantile's, and never below the rate now.
    rng = np.random.default_rng(3)
    rates = list(40.0 + rng.normal(0.0, 4.0, 160).clip(-12.0, 12.0))
    plain, _ = _plans(rates, feedback=False)
    fitted, policy = _plans(rates, feedback=True)
    assert policy.band.scale(builders.MODEL) < 0.8
    assert sum(fitted[-40:]) < 0.97 * sum(plain[-40:])
    assert all(f >= r - 1e-9 for f, r in zip(fitted, rates, strict=True))


def test_bursts_above_what_plans_placed_widen_the_policy_band() -> None:
    # Two ticks at four times the load every 25 ticks: too rare for the 0.95 quantile, so
    # the plans made a lead time before each burst placed too little. The band widens and
    # the plans rise above the plain quantile's (by 33% over the last 50 ticks).
    rates = [120.0 if t % 25 in (0, 1) else 30.0 for t in range(150)]
    plain, _ = _plans(rates, feedback=False)
    fitted, policy = _plans(rates, feedback=True)
    assert policy.band.scale(builders.MODEL) > 1.4
    assert sum(fitted[-50:]) > 1.2 * sum(plain[-50:])


def test_the_plain_quantile_is_planned_without_feedback() -> None:
    rng = np.random.default_rng(4)
    cfg = builders.config()
    policy = CapschedPolicy(cfg, load_catalog(), load_profiles())
    for t in range(30):
        rate = float(rng.exponential(10.0))
        obs = builders.observation(t * cfg.scheduler.tick_interval_s, rps={KEY: rate})
        assert policy.planned_demand(obs)[0].rps == max(
            rate, policy.forecast_quantiles()[KEY][0.95]
        )
    assert policy.band.scales() == {}


def test_a_plan_not_the_bands_to_answer_for_teaches_nothing() -> None:
    # A plan that left the model's own demand unmet (budget, quota, no capacity) is
    # recorded as None: the overload that follows is the limit's, not the forecast's.
    band = BandScale(target=0.01)
    band.planned("m", 0, None)
    assert band.observe("m", 2, 2, 100.0) is None
    assert band.scale("m") == 1.0


def test_under_a_budget_a_higher_priority_keeps_at_least_the_plain_band() -> None:
    # Steady load narrows both models' learnt factors; under a budget the top priority
    # plans with the plain band all the same (its margin is not traded for the lower
    # priority's service), while the lowest priority plans with its narrowed band.
    low = "llama-3.1-70b"
    cfg = builders.config(
        models=[{"name": builders.MODEL, "priority": 10}, {"name": low}],
        forecast={"band_feedback": True},
        planning={"budget_usd_per_hour": 500.0},
    )
    policy = CapschedPolicy(cfg, load_catalog(), load_profiles())
    for step in range(60):
        for model in (builders.MODEL, low):
            policy.band.planned(model, step, 100.0)
            policy.band.observe(model, step, 0, 50.0)
    assert policy.band.scale(builders.MODEL) < 1.0
    scales = policy.band_scales()
    assert scales[builders.MODEL] == 1.0
    assert scales[low] == policy.band.scale(low) < 1.0
    unbudgeted = CapschedPolicy(
        builders.config(
            models=[{"name": builders.MODEL, "priority": 10}, {"name": low}],
            planning={"budget_usd_per_hour": None},
        ),
        load_catalog(),
        load_profiles(),
    )
    unbudgeted.band = policy.band
    assert unbudgeted.band_scales()[builders.MODEL] < 1.0


def test_a_deferrable_model_learns_no_band() -> None:
    # Batch demand is planned for its mean and its peaks wait in the queue by design: the
    # overload its plans leave is not a forecast's miss, and it plans no band to widen.
    cfg = builders.config(
        models=[{"name": builders.MODEL, "deferrable_deadline_s": 3600.0}],
        forecast={"band_feedback": True},
        planning={"robustness_fraction": 0.0, "budget_usd_per_hour": None},
    )
    policy = CapschedPolicy(cfg, load_catalog(), load_profiles())
    tick = cfg.scheduler.tick_interval_s
    for t in range(30):
        policy.decide(builders.observation(t * tick, rps={KEY: 200.0 if t % 3 == 0 else 5.0}))
    assert policy.band.scales() == {}
