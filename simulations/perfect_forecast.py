"""`capsched-perfect-forecast`: capsched with its forecaster replaced by the trace itself.

A diagnostic, not a policy anyone can run: each tick it plans for the true peak of the
demand over the forecast horizon (`forecast.horizon_min`) from the tick on, read ahead in
the replayed trace, where capsched plans for its forecast quantile. Everything after
the forecast is capsched's own: planner, re-plan hysteresis, spot-loss robustness,
`min_on_demand_share`, guards and make-before-break. Spot capacity is not foreseen.
Where the trace has request sizes, the peak is the step that needs the most capacity
(rate over the size's factor on the model's node shapes, `SizeFactors`), planned at
that step's size: a burst of long prompts is foreseen as well as one of many requests.

Replayed next to `capsched` and `oracle`, it splits capsched's gap to the oracle into
the part a better forecast could remove (capsched against this policy) and the part it
could not (this policy against the oracle): spot losses it does not foresee, the
config's rules, the re-plan tolerances and whole nodes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from scheduler.config import Config
from scheduler.decide.observation import Observation
from scheduler.decide.policy import CapschedPolicy
from scheduler.domain import CapacityProfile, Demand, RequestSize
from scheduler.fleet.catalog import Catalog
from simulations.baselines.common import SizeFactors
from simulations.policies import TraceInfo


class PerfectForecastPolicy(CapschedPolicy):
    """`CapschedPolicy` planning for the trace's true peak over the forecast horizon."""

    name = "capsched-perfect-forecast"

    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        profiles: Sequence[CapacityProfile],
        info: TraceInfo,
    ) -> None:
        super().__init__(config, catalog, profiles)
        self._info = info
        self._series = info.demand_series()
        self._horizon_s = config.forecast.horizon_min * 60.0
        # Per series, the rate in reference requests (rate / size factor) of every step.
        self._need: dict[tuple[str, str], np.ndarray] = {}
        if info.tokens is not None:
            factors = SizeFactors(config, catalog, profiles, info.offerings)
            for k, (m, r) in enumerate(info.keys):
                low, _ = factors.bounds(m, info.tokens[0, k], info.tokens[1, k])
                with np.errstate(divide="ignore", invalid="ignore"):
                    self._need[m, r] = info.demand_rps[k] / low

    def planned_demand(self, obs: Observation) -> list[Demand]:
        """Per series, the rate and size of the step, from the one holding `now` through
        `now` + the forecast horizon, that needs the most capacity (the highest rate
        without sizes; 0 past the trace's end; NaN steps skipped)."""
        info = self._info
        first = max(0, math.floor((obs.now_s - info.start_s) / info.step_s + 1e-9))
        end = max(
            math.ceil((obs.now_s + self._horizon_s - info.start_s) / info.step_s - 1e-9), first + 1
        )
        out: list[Demand] = []
        for m in self.config.models:
            for r in self.config.regions:
                key = (m.name, r.name)
                series = self._series.get(key, np.zeros(0))[first:end]
                rps, at = 0.0, first
                need = self._need.get(key)
                window = need[first:end] if need is not None else series
                if window.size and np.isfinite(window).any():
                    i = int(np.nanargmax(window))
                    rps, at = float(series[i]), first + i
                self.last_forecast[key] = rps
                out.append(Demand(m.name, r.name, rps, self._size(key, at)))
        return out

    def _size(self, key: tuple[str, str], step: int) -> RequestSize | None:
        # The true mean request size of the series at `step`.
        for d in self._info.demand_at(step):
            if (d.model, d.region) == key:
                return d.size
        return None


def perfect_forecast(
    config: Config, catalog: Catalog, profiles: Sequence[CapacityProfile], info: TraceInfo
) -> PerfectForecastPolicy:
    """The registry's factory for `capsched-perfect-forecast`."""
    return PerfectForecastPolicy(config, catalog, profiles, info)
