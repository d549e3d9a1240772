"""The replay's latency score: a stationary queue below capacity, a backlog above it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulations.latency import within_slo, within_slo_share

STEP_S = 60.0


def _score(
    arrivals: list[float], capacity: list[float], slo_s: float = 25.0, service_s: float = 3.0
):
    """Score steps whose capacity routes min(arrivals, capacity); 40 slots per step."""
    lam = np.asarray(arrivals, dtype=np.float64)
    cap = np.asarray(capacity, dtype=np.float64)
    served = np.minimum(lam, cap)
    slots = np.full(lam.shape, 40)
    service = np.full(lam.shape, service_s)
    return within_slo(lam, served, cap, slots, service, slo_s, STEP_S)


def test_one_minute_just_over_capacity_is_served_within_a_wide_slo() -> None:
    # 45 rps against 40 for one minute: 300 requests wait, 7.5 s of work at the end of
    # the minute, inside a 22 s slack; the stationary queue called every one late.
    within, mean_s = _score([20.0, 45.0, 20.0], [40.0, 40.0, 40.0])
    assert within[1] == pytest.approx(45.0)
    assert mean_s[1] == pytest.approx(3.0 + 7.5 / 2)
    # The next minute drains the backlog (20 rps of headroom clear 300 in 15 s) and is
    # within the SLO.
    assert within[2] == pytest.approx(20.0, rel=1e-3)
    old, _ = within_slo_share(
        np.array([40.0]), np.array([40.0]), np.array([40]), np.array([3.0]), 25.0
    )
    assert old[0] == 0.0


def test_a_sustained_shortfall_turns_late_once_the_backlog_passes_the_slack() -> None:
    # 10% short for five minutes with 22 s of slack: the wait reaches 22 s after
    # 22 * 40 / 4 = 220 s; arrivals after that are late, and so is every arrival while
    # the queue stays full.
    within, _ = _score([44.0] * 5, [40.0] * 5)
    ok = within * STEP_S
    assert ok[:3].sum() == pytest.approx(44.0 * 180)
    assert ok[3] == pytest.approx(44.0 * 40)
    assert ok[4] == pytest.approx(0.0)
    # An outage answers nothing in time, and leaves no backlog behind it.
    within, _ = _score([10.0, 10.0, 10.0], [40.0, 0.0, 40.0])
    assert within[1] == 0.0
    assert within[2] == pytest.approx(within[0])


def test_a_drop_in_capacity_sheds_what_can_no_longer_meet_the_slo() -> None:
    # The backlog built at 40 rps of capacity (880 requests, 22 s of work) is more than
    # 10 rps clear in the slack: what remains waiting is at most slack x capacity.
    within, _ = _score([44.0] * 5 + [5.0, 5.0], [40.0] * 5 + [10.0, 10.0])
    assert within[5] == pytest.approx(5.0)  # its backlog is 220 requests, 22 s at 10 rps
    assert within[6] == pytest.approx(5.0, rel=1e-3)


@given(
    st.lists(
        st.tuples(st.floats(0.0, 200.0), st.floats(0.0, 200.0), st.floats(0.5, 30.0)),
        min_size=1,
        max_size=30,
    )
)
def test_never_more_in_time_than_arrived_and_the_same_below_capacity(
    steps: list[tuple[float, float, float]],
) -> None:
    lam = np.array([a for a, _, _ in steps])
    cap = np.array([c for _, c, _ in steps])
    slo = np.array([s for _, _, s in steps])
    served = np.minimum(lam, cap)
    slots = np.where(cap > 0, 8, 0)
    service = np.full(lam.shape, 1.0)
    within, _ = within_slo(lam, served, cap, slots, service, slo, STEP_S)
    assert np.all(within >= 0.0)
    assert np.all(within <= lam + 1e-9)
    assert np.all(within[cap <= 0] == 0.0)
    if not ((lam >= cap) & (lam > 0) & (cap > 0)).any():  # never at capacity: stationary
        share, _ = within_slo_share(served, cap, slots, service, slo)
        assert np.allclose(within, served * share)
