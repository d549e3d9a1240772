"""`static-peak`: a fixed on-demand fleet sized for the trace's peak, in the cheapest region.

What operators do before they autoscale: buy enough on-demand capacity for the
busiest moment and never touch it.

How "cheapest region" is read: traffic is split into services (one per model and
source region, see `simulations.baselines.common`). For each service, over the
on-demand pools it may use (config's allowed clouds, regions, markets and GPU kinds;
within the source region's latency limit; `available` at the first tick; able to
serve the model at its SLO), the pool chosen is the one whose fleet for the peak
costs least per hour: `ceil(peak / per-node rps) x price`, ties to the lower price,
then the pool key (`common.fleet_for_load`, the rule `reactive` and `spothedge` use to
pick their replica shape). A pool is one instance type in one region, so this picks the
cheapest region and the instance type in it together. The peak is the maximum over
the trace of the service's summed demand (the peak of the sum, not the sum of the
peaks). The fleet holds at least the model's `min_replicas`, never uses spot, and is
fixed at the first tick; per-node rps is the profile's at the SLO times
`planning.target_utilization` (static sizing has no utilisation notion of its own).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from scheduler.config import Config
from scheduler.decide.observation import Observation, PolicyBase
from scheduler.domain import CapacityProfile, Market, Plan, Pool
from scheduler.fleet.capacity import NodeCapacity
from scheduler.fleet.catalog import Catalog
from simulations.baselines.common import (
    Foresight,
    OfferingIndex,
    Service,
    fleet_for_load,
    partition_services,
    peak_rps,
    to_plan,
)


class StaticPeak(PolicyBase):
    """On-demand only, sized once for the trace's peak (see the module docstring)."""

    name = "static-peak"

    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        profiles: Sequence[CapacityProfile],
        foresight: Foresight,
    ) -> None:
        self._config = config
        self._catalog = catalog
        self._capacity = NodeCapacity(config, catalog, profiles)
        self._foresight = foresight
        self.fleet: Counter[tuple[str, Pool]] | None = None  # fixed at the first tick
        self.notes: tuple[str, ...] = ()  # why the fleet looks the way it does
        self._index = OfferingIndex()  # the latest observation's prices by pool

    def peak_rps(self, service: Service) -> float:
        """Largest summed demand of the service's regions over the trace."""
        return peak_rps(self._foresight, service)

    def _size(self, obs: Observation) -> None:
        offers = {o.pool: o for o in obs.offerings if o.available}
        services = partition_services(self._config, self._catalog, self._capacity, obs.offerings)
        fleet: Counter[tuple[str, Pool]] = Counter()
        notes: list[str] = []
        for service in services:
            peak = self.peak_rps(service)
            floor = self._config.model(service.model).min_replicas
            best = fleet_for_load(
                service, offers, self._capacity, peak, Market.ON_DEMAND, floor=floor
            )
            if best is None:
                notes.append(f"{service.name}: no available on-demand pool; left unserved")
                continue
            fleet[service.model, best.pool] += best.replicas
            notes.append(
                f"{service.name}: {best.replicas} x {best.pool.key} for a peak of {peak:.2f} rps"
            )
        self.fleet, self.notes = fleet, tuple(notes)

    def decide(self, obs: Observation) -> Plan:
        """The same fleet every tick (sized at the first)."""
        if self.fleet is None:
            self._size(obs)
        assert self.fleet is not None
        return to_plan(self.fleet, self._index.update(obs.offerings).prices, self.notes)
