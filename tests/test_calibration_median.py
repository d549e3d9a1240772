"""The median's offset is a bias correction, trusted as errors accrue.

A user sees this as a point forecast that does not wander with the noise of its
first errors (the plan's median does not jump by a random fraction of the error
scale every tick of a new series) but still learns a bias the model keeps making.
"""

from __future__ import annotations

import numpy as np

from scheduler.forecast.calibration import ConformalCalibrator


def _median_offset(bias: float, errors: int, seed: int) -> float:
    """Median offset at horizon 1 after `errors` Laplace(bias, 1) errors of a flat point."""
    cal = ConformalCalibrator([0.5, 0.95], horizon_steps=1, memory=100, capacity=1)
    rng = np.random.default_rng(seed)
    for t in range(errors):
        cal.record(t, np.array([[10.0]]), 1)
        cal.observe(t + 1, np.array([10.0 + bias + rng.laplace(0.0, 1.0)]), 1)
    return float(cal.offsets(np.array([1]), np.array([0]), 1)[0, 0, 0])


def test_a_few_unbiased_errors_leave_the_point_forecast_near_the_model() -> None:
    # Mean |error| is 1. Trusted at once, the tracker moved the median by 0.33 on
    # average after 12 errors (up to 0.74): pure noise added to the forecast.
    offsets = [abs(_median_offset(0.0, 12, seed)) for seed in range(20)]
    assert float(np.mean(offsets)) <= 0.15
    assert max(offsets) <= 0.3


def test_a_persistent_bias_is_still_corrected() -> None:
    # The model under-forecasts by 3 (three mean errors): after 300 errors the
    # median offset carries at least three quarters of it, never more than it.
    for seed in range(5):
        off = _median_offset(3.0, 300, seed)
        assert 0.75 * 3.0 <= off <= 3.0 + 0.5
