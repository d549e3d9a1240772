"""`capsched-perfect-forecast`: capsched with its forecaster replaced by the trace itself.

A diagnostic, not a policy anyone can run: each tick it plans for the true peak of the
demand over the forecast horizon (`forecast.horizon_min`) from the tick on, read ahead in
the replayed trace, where capsched plans for its forecast quantile. Everything after
the forecast is capsched's own: planner, re-plan hysteresis, spot-loss robustness,
`min_on_demand_share`, guards and make-before-break. Spot capacity is not foreseen.

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
from scheduler.domain import CapacityProfile, Demand
from scheduler.fleet.catalog import Catalog
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

    def planned_demand(self, obs: Observation) -> list[Demand]:
        """Per series, the highest rate of the trace's steps from the one holding `now`
        through `now` + the forecast horizon (0 past the trace's end; NaN steps skipped)."""
        info = self._info
        first = max(0, math.floor((obs.now_s - info.start_s) / info.step_s + 1e-9))
        end = math.ceil((obs.now_s + self._horizon_s - info.start_s) / info.step_s - 1e-9)
        out: list[Demand] = []
        for m in self.config.models:
            for r in self.config.regions:
                series = self._series.get((m.name, r.name), np.zeros(0))
                rps = float(np.nanmax(series[first : max(end, first + 1)], initial=0.0))
                self.last_forecast[m.name, r.name] = rps
                out.append(Demand(m.name, r.name, rps))
        return out


def perfect_forecast(
    config: Config, catalog: Catalog, profiles: Sequence[CapacityProfile], info: TraceInfo
) -> PerfectForecastPolicy:
    """The registry's factory for `capsched-perfect-forecast`."""
    return PerfectForecastPolicy(config, catalog, profiles, info)
