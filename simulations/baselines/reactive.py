"""`reactive`: Ray Serve's target-utilisation autoscaler on on-demand nodes.

Followed: ray-project/ray `python/ray/serve/_private/autoscaling_policy.py`,
`calculate_desired_num_replicas` and `BasicAutoscalingPolicy.get_decision_num_replicas`,
with the defaults of Ray Serve's `AutoscalingConfig` (`upscale_delay_s = 30`,
`downscale_delay_s = 600`, `look_back_period_s = 30`, `smoothing_factor = 1`).

* Desired replicas: Ray computes `error_ratio = mean ongoing requests per replica /
  target_ongoing_requests` and `desired = ceil(current replicas x error_ratio)`. By
  Little's law the ongoing requests of a replica are its request rate times the
  request latency, so at a given latency the ratio of ongoing requests equals the
  ratio of request rates: `error_ratio = (rps / replicas) / target_rps_per_replica`,
  and `desired = ceil(observed rps / target_rps_per_replica)`. The target rate per
  replica is the profile's sustainable rps at the model's SLO (where a replica holds
  `batch_size` requests in flight) times `planning.target_utilization`, i.e.
  `target_ongoing_requests` is read as `target_utilization x batch_size`. Ray's own
  default (2 ongoing requests of `max_ongoing_requests = 5`) is a web-service number
  and says nothing about an LLM replica's capacity, so the config's utilisation is
  used instead. The result is clipped to `[min_replicas, max_replicas]`.
* The observed rate is the mean of the samples in the last `look_back_period_s`; no
  forecast. A missing sample leaves the target as it is (and the delay timers running).
* Delays: the target follows `desired` only once it has stayed above (below) the
  current target for `upscale_delay_s` (`downscale_delay_s`) of observation time
  (Ray counts control-loop periods, `decision_counter > delay / CONTROL_LOOP_PERIOD_S`;
  see `common.Hysteresis`). The initial target is `min_replicas`, as Ray starts a
  deployment at `initial_replicas` which defaults to `min_replicas`.
* Replica shape: Ray Serve leaves it to the operator (`ray_actor_options` and the
  cluster's node types), who sizes it for the load the service is known to carry. All
  replicas of a service share one instance type, fixed at the first tick: the type of
  the on-demand pool whose fleet of whole replicas for the service's peak load costs
  least per hour (`common.fleet_for_load`, the same rule `static-peak` sizes with),
  over the pools available then and allowed by the config (clouds, regions, GPU
  kinds, the source region's latency limit). The peak is read from the trace when the
  policy is given a `Foresight` (as the simulator's registry does: an operator knows
  the peak its service sees); without one, the rate observed at the first tick is
  used. This is not "cheapest per rps at full utilisation": for a 10 rps service that
  rule picks an 8-GPU node carrying 100+ rps, a granularity no operator configures;
  sized on the load, a 1-GPU type wins whenever a few of them carry it for less.
  The shape decides only where replicas go and how much one carries; the autoscaler
  itself still sees nothing but observed rates.
* Placement: new replicas go to the cheapest available on-demand pool of that type.
  Existing replicas stay where they are; surplus ones are removed booting-first, then
  newest-first.

Services (one per model and source region) are described in `simulations.baselines.common`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from scheduler.config import Config
from scheduler.decide.observation import Observation, PolicyBase
from scheduler.domain import CapacityProfile, Market, Plan, Pool
from scheduler.fleet.capacity import NodeCapacity
from scheduler.fleet.catalog import Catalog
from simulations.baselines.common import (
    Foresight,
    Hysteresis,
    OfferingIndex,
    RateWindow,
    Service,
    ceil_div,
    fleet_for_load,
    partition_services,
    resize,
    sizing_load,
    to_plan,
)

# Ray Serve AutoscalingConfig defaults.
RAY_UPSCALE_DELAY_S = 30.0
RAY_DOWNSCALE_DELAY_S = 600.0
RAY_LOOK_BACK_PERIOD_S = 30.0
# Ray needs a max_replicas; an unbounded fleet is what a cost comparison wants.
DEFAULT_MAX_REPLICAS = 10_000


@dataclass
class _ServiceState:
    """What the autoscaler remembers about one service between ticks."""

    service: Service  # the deployment
    instance_type: str | None  # replica shape, fixed at the first tick (None: no pool)
    per_replica_rps: float  # target rps per replica of that shape
    rates: RateWindow  # observed rates over the look-back period
    hysteresis: Hysteresis  # the target with its up/down delays


class Reactive(PolicyBase):
    """Ray Serve's autoscaling policy on observed load, on-demand only."""

    name = "reactive"

    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        profiles: Sequence[CapacityProfile],
        *,
        upscale_delay_s: float = RAY_UPSCALE_DELAY_S,
        downscale_delay_s: float = RAY_DOWNSCALE_DELAY_S,
        look_back_period_s: float = RAY_LOOK_BACK_PERIOD_S,
        max_replicas: int = DEFAULT_MAX_REPLICAS,
        foresight: Foresight | None = None,
    ) -> None:
        self._config = config
        self._catalog = catalog
        self._capacity = NodeCapacity(config, catalog, profiles)
        self.upscale_delay_s = upscale_delay_s
        self.downscale_delay_s = downscale_delay_s
        self.look_back_period_s = look_back_period_s
        self.max_replicas = max_replicas
        self._foresight = foresight  # read only to size the replica shape
        self.services: list[_ServiceState] | None = None  # built at the first tick
        self._index = OfferingIndex()  # the latest observation's offerings by pool

    def _setup(self, obs: Observation) -> list[_ServiceState]:
        offers = {o.pool: o for o in obs.offerings if o.available}
        states: list[_ServiceState] = []
        for service in partition_services(
            self._config, self._catalog, self._capacity, obs.offerings
        ):
            floor = self._config.model(service.model).min_replicas
            load = sizing_load(service, obs, self._foresight)
            shape = fleet_for_load(
                service, offers, self._capacity, load, Market.ON_DEMAND, floor=floor
            )
            itype = None if shape is None else shape.pool.instance_type
            per_replica = 0.0 if shape is None else self._capacity.rps(service.model, shape.pool)
            states.append(
                _ServiceState(
                    service,
                    itype,
                    per_replica,
                    RateWindow(self.look_back_period_s),
                    Hysteresis(floor, self.upscale_delay_s, self.downscale_delay_s),
                )
            )
        return states

    def decide(self, obs: Observation) -> Plan:
        """Target replicas per service from the observed rate, after the delays."""
        if self.services is None:
            self.services = self._setup(obs)
        index = self._index.update(obs.offerings)
        offers = index.offers
        counts: Counter[tuple[str, Pool]] = Counter()
        notes: list[str] = []
        for st in self.services:
            service = st.service
            rps = service.demand(obs.demand.rps)
            if rps is not None:
                st.rates.add(obs.demand.at_s, rps)
            observed = st.rates.mean(obs.now_s)
            floor = self._config.model(service.model).min_replicas
            if observed is not None and st.per_replica_rps > 0:
                desired = ceil_div(observed, st.per_replica_rps)
                st.hysteresis.step(obs.now_s, min(self.max_replicas, max(floor, desired)))
            target = st.hysteresis.target
            pools = sorted(
                (
                    p
                    for p in service.pools
                    if p.market is Market.ON_DEMAND
                    and p.instance_type == st.instance_type
                    and p in offers
                ),
                key=lambda p: (offers[p].usd_per_hour, p.key),
            )

            def cheapest(_current: list[Pool], pools: list[Pool] = pools) -> Pool | None:
                return next((p for p in pools if offers[p].available), None)

            nodes = [n for n in service.nodes(obs) if n.pool.market is Market.ON_DEMAND]
            placed, missing = resize(nodes, target, cheapest)
            for pool, n in placed.items():
                counts[service.model, pool] += n
            notes.append(f"{service.name}: target {target} (observed {observed} rps)")
            if missing:
                notes.append(f"{service.name}: no available on-demand pool for {missing} replicas")
        return to_plan(counts, index.prices, notes)
