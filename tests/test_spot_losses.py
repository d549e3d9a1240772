"""Spot-loss measurements: loss ticks, correlated loss between traces, late minutes after a
notice (simulations/spot_losses.py; docs/solver.md "Spot-loss cover when a loss and a
demand rise coincide")."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulations.spot_losses import coincidence, late_steps, loss_ticks


def test_loss_ticks_are_drops_after_the_start() -> None:
    # Leading zeros are the experiment starting; a rise is not a loss; each drop counts.
    assert loss_ticks([0, 0, 2, 2, 1, 1, 2, 0, 0, 3]) == {4, 7}
    assert loss_ticks([0, 0, 0]) == frozenset()


def test_losses_in_the_same_tick_count_together_and_others_do_not() -> None:
    traces = {
        "us-east-1a_v100": [4, 3, 3, 2, 2, 2, 2, 2],  # losses at 1 and 3
        "us-east-1b_v100": [4, 3, 3, 3, 3, 2, 2, 2],  # losses at 1 and 5
        "us-west-2a_v100": [4, 3, 3, 2, 2, 2, 2, 2],  # same ticks as 1a, another region
    }

    def same_region(a: str, b: str) -> bool:
        return a[:8] == b[:8]

    c = coincidence(traces, same_region)
    # 1a and 1b are related both ways: 4 losses, tick 1 together for each of them.
    assert (c.losses, c.together) == (4, 2)
    assert c.share == pytest.approx(0.5)
    # Independent: each related trace loses 2 ticks of 8.
    assert c.independent == pytest.approx(4 * 2 / 8)
    assert c.independent_share == pytest.approx(0.25)


def test_no_related_trace_no_losses_counted() -> None:
    c = coincidence({"a": [1, 0, 1, 0], "b": [1, 0, 1, 0]}, lambda a, b: False)
    assert (c.losses, c.together, c.share) == (0, 0, 0.0)


def test_ticks_past_the_shorter_trace_are_not_compared() -> None:
    c = coincidence({"a": [2, 2, 2, 1], "b": [2, 2]}, lambda a, b: True)
    assert (c.losses, c.together, c.independent) == (1, 0, 0.0)


def test_late_minutes_name_the_notices_before_them() -> None:
    times = np.array([0.0, 60.0, 120.0, 180.0])
    demand = np.array([[10.0, 10.0, 10.0, 10.0]])
    within = np.array([[10.0, 0.0, 10.0, 4.0]])
    capacity = np.array([[12.0, 8.0, 12.0, 9.0]])
    planned = np.array([9.0, 9.0, 9.0, math.nan])
    late = late_steps(
        ("m",), times, demand, within, capacity, planned, {"m": [30.0, 150.0]}, window_s=60.0
    )
    assert [(s.at_s, s.late_rps, s.since_notice_s) for s in late] == [
        (60.0, 10.0, (30.0,)),  # the notice at 30 s, 30 s before
        (180.0, 6.0, (30.0,)),  # the notice at 150 s; the one at 30 s is out of the window
    ]
    assert late[0].capacity_rps == 8.0 and late[0].planned_rps == 9.0
    assert math.isnan(late[1].planned_rps)


def test_a_model_without_notices_has_late_minutes_with_none() -> None:
    late = late_steps(
        ("m", "n"),
        np.array([0.0]),
        np.array([[5.0], [5.0]]),
        np.array([[5.0], [2.0]]),
        np.array([[6.0], [3.0]]),
        np.array([5.0]),
        {"m": [0.0]},
        window_s=600.0,
    )
    assert [(s.model, s.since_notice_s) for s in late] == [("n", ())]
