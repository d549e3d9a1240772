"""The recent request-size mix per series: what the planner counts a forecast rate's
requests as.

The forecaster forecasts request rates; sizes are not forecast but carried: per (model,
region) an exponentially weighted mean of the mean prompt and output tokens per request
the load signal reports (`DemandSample.input_tokens` / `output_tokens`), with a
half-life in time (not ticks). The size planned for is the heavier (more tokens per
request) of that mean and the latest reading, as the planned rate is the larger of the
forecast and the rate now: a shift to longer requests counts at once, a shift back
only as the mean follows it. A series the source gives no size for has none, which
planning takes as the reference request (docs/forecasting.md "Request sizes").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from scheduler.domain import RequestSize
from scheduler.ports.metrics import DemandSample

# Half-life of the size mean. Ten minutes: about one boot time, the lead a plan has on
# the load it must serve; shorter follows every minute's noise into a replan.
SIZE_HALF_LIFE_S = 600.0


@dataclass
class SizeMix:
    """Exponentially weighted mean request size per (model, region)."""

    half_life_s: float = SIZE_HALF_LIFE_S  # time for an old reading's weight to halve
    # (model, region) -> (time of the last reading, mean input tokens, mean output tokens)
    means: dict[tuple[str, str], tuple[float, float, float]] = field(default_factory=dict)
    latest: dict[tuple[str, str], RequestSize] = field(default_factory=dict)  # last reading

    def update(self, sample: DemandSample) -> None:
        """Take the sizes of `sample` (at `sample.at_s`); series without both a finite
        positive input and output size keep their mean."""
        for key, inp in sample.input_tokens.items():
            out = sample.output_tokens.get(key, math.nan)
            if not (math.isfinite(inp) and math.isfinite(out) and inp > 0 and out > 0):
                continue
            self.latest[key] = RequestSize(inp, out)
            last = self.means.get(key)
            if last is None:
                self.means[key] = (sample.at_s, inp, out)
                continue
            at, m_in, m_out = last
            dt = max(0.0, sample.at_s - at)
            w = 1.0 - 0.5 ** (dt / self.half_life_s) if self.half_life_s > 0 else 1.0
            self.means[key] = (
                max(at, sample.at_s),
                m_in + w * (inp - m_in),
                m_out + w * (out - m_out),
            )

    def size(self, key: tuple[str, str]) -> RequestSize | None:
        """The size to plan a series for: the heavier of its mean and its latest reading;
        None before any reading (the reference request)."""
        got = self.means.get(key)
        if got is None:
            return None
        mean, latest = RequestSize(got[1], got[2]), self.latest[key]
        return latest if latest.tokens > mean.tokens else mean
