"""Cost at equal SLO read off a policy's sweep (simulations/frontier.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulations.frontier import SweepPoint, cost_at_slo, efficient


def test_cost_is_interpolated_between_the_points_around_the_target() -> None:
    points = [SweepPoint("a", 30.0, 0.99), SweepPoint("b", 40.0, 1.0)]
    assert cost_at_slo(points, 0.995) == pytest.approx(35.0)


def test_a_dearer_point_with_a_worse_slo_is_ignored() -> None:
    # "c" costs more than "b" and reaches less: a knob setting nobody would pick.
    points = [SweepPoint("a", 30.0, 0.99), SweepPoint("c", 50.0, 0.994), SweepPoint("b", 40.0, 1.0)]
    assert [p.knob for p in efficient(points)] == ["a", "b"]
    assert cost_at_slo(points, 0.995) == pytest.approx(35.0)


def test_a_policy_that_never_reaches_the_target_has_no_cost_there() -> None:
    points = [SweepPoint("a", 30.0, 0.98), SweepPoint("b", 60.0, 0.99)]
    assert cost_at_slo(points, 0.995) is None


def test_when_every_point_reaches_the_target_the_cheapest_counts() -> None:
    points = [SweepPoint("a", 30.0, 0.999), SweepPoint("b", 25.0, 0.996)]
    assert cost_at_slo(points, 0.995) == 25.0


def test_nan_runs_are_left_out() -> None:
    points = [SweepPoint("a", float("nan"), 1.0), SweepPoint("b", 25.0, 0.996)]
    assert cost_at_slo(points, 0.995) == 25.0


points_strategy = st.lists(
    st.builds(
        SweepPoint,
        st.just("k"),
        st.floats(0.0, 1e6, allow_nan=False),
        st.floats(0.0, 1.0, allow_nan=False),
    ),
    min_size=1,
    max_size=12,
)


@given(points_strategy, st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_a_stricter_target_never_costs_less(points: list[SweepPoint], a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    c_lo, c_hi = cost_at_slo(points, lo), cost_at_slo(points, hi)
    if c_hi is not None:
        assert c_lo is not None and c_lo <= c_hi + 1e-6 * max(1.0, c_hi)


@given(points_strategy, st.floats(0.0, 1.0))
def test_the_cost_lies_within_what_the_runs_cost(points: list[SweepPoint], target: float) -> None:
    cost = cost_at_slo(points, target)
    reached = [p for p in points if p.slo >= target]
    assert (cost is None) == (not reached)
    if cost is not None:
        # Never dearer than the cheapest run that reached it, never cheaper than any run.
        assert min(p.cost_usd for p in points) - 1e-9 <= cost
        assert cost <= min(p.cost_usd for p in reached) + 1e-6 * max(1.0, cost)
