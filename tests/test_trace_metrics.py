"""The trace-replay load signal: the last complete minute, and the peak over a tick."""

from __future__ import annotations

import math

import numpy as np

from adapters.trace_metrics import TraceMetrics

KEYS = (("m", "r"), ("m", "s"))


async def test_reports_the_peak_minute_of_the_window_and_the_last_minute() -> None:
    rates = np.array([[1.0, 9.0, 2.0, 3.0, 4.0, 5.0], [math.nan] * 6])
    src = TraceMetrics(KEYS, rates, start_s=0.0, step_s=60.0, peak_window_s=300.0)
    sample = await src.demand(360.0)  # minutes 0..5 complete: the window is minutes 1..5
    assert sample.rps[("m", "r")] == 5.0
    assert sample.peak_rps[("m", "r")] == 9.0
    assert math.isnan(sample.peak_rps[("m", "s")])  # missing stays missing, never 0


async def test_no_window_means_no_peaks() -> None:
    src = TraceMetrics(KEYS, np.ones((2, 3)), start_s=0.0, step_s=60.0)
    assert (await src.demand(120.0)).peak_rps == {}
