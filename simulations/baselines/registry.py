"""The baselines' entries in the simulator's policy registry (`simulations.roster`).

Each factory has the registry's signature `(config, catalog, profiles, trace_info)`.
`static-peak` and `oracle` read ahead in the trace to decide; `reactive` and
`spothedge` read only its peak, once, to pick their replica shape as an operator
configuring Ray Serve or SkyServe for that service would (they scale on observations
only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from scheduler.config import Config
from scheduler.decide.observation import Policy
from scheduler.domain import CapacityProfile, Pool, RequestSize
from scheduler.fleet.catalog import Catalog
from scheduler.fleet.notice import NOTICE_S
from simulations.baselines.common import Foresight, SizeFactors, running_spot_peak
from simulations.baselines.oracle import Oracle
from simulations.baselines.reactive import Reactive
from simulations.baselines.spothedge import SpotHedge
from simulations.baselines.static_peak import StaticPeak
from simulations.policies import PolicyFactory, TraceInfo


def foresight_of(
    info: TraceInfo,
    config: Config,
    catalog: Catalog,
    profiles: Sequence[CapacityProfile],
) -> Foresight:
    """The trace as the baselines read it. A missing demand sample (NaN) counts as no
    load; spot capacity per step is the fewest instances the pool holds in that step.
    A sized trace's rates are counted in reference requests (`SizeFactors`): for the
    schedule at the least favourable shape, for the oracle's bound at the most; for a
    model with a per-token SLO the oracle reads the requests and each step's size instead
    (`Foresight.sizes`), and counts each pool's nodes at that size (`StepRates`)."""
    demand = {
        key: tuple(float(v) if math.isfinite(v) else 0.0 for v in series)
        for key, series in info.demand_series().items()
    }
    bound_demand = None
    sizes: dict[str, tuple[RequestSize | None, ...]] = {}
    requests: dict[tuple[str, str], tuple[float, ...]] = {}
    if info.tokens is not None:
        factors = SizeFactors(config, catalog, profiles, info.offerings)
        bound_demand = {}
        for section in config.models:
            if section.token_slo is not None:  # the oracle counts these at each step's size
                sizes[section.name] = tuple(
                    info.size_at(section.name, t) for t in range(info.n_steps)
                )
        for k, key in enumerate(info.keys):
            if key[0] in sizes:
                requests[key] = demand[key]
            low, high = factors.bounds(key[0], info.tokens[0, k], info.tokens[1, k])
            rates = np.asarray(demand[key])
            bound_demand[key] = tuple((rates / high).tolist())
            demand[key] = tuple((rates / low).tolist())
    as_tuple: dict[int, tuple[int, ...]] = {}  # pools driven by one trace share its series
    spot: dict[Pool, tuple[int, ...]] = {}
    for pool, series in info.spot_capacity_series().items():
        if id(series) not in as_tuple:
            as_tuple[id(series)] = tuple(series.tolist())
        spot[pool] = as_tuple[id(series)]
    # The most a pool can have running at a step's start (instances under notice included):
    # what the oracle's lower bound allows, so that it holds against any policy.
    notice_s = max(NOTICE_S.values())
    peaks: dict[int, tuple[int, ...]] = {}  # one trace often drives many pools
    for trace in info.spot_traces.values():
        if id(trace) not in peaks:
            peaks[id(trace)] = tuple(running_spot_peak(trace, info.n_steps, info.step_s, notice_s))
    peak = {pool: peaks[id(trace)] for pool, trace in info.spot_traces.items()}
    return Foresight(
        info.start_s, info.step_s, demand, spot, info.offerings, peak, bound_demand, sizes, requests
    )


def static_peak(
    config: Config, catalog: Catalog, profiles: Sequence[CapacityProfile], info: TraceInfo
) -> Policy:
    """`static-peak` sized on the run's trace."""
    return StaticPeak(config, catalog, profiles, foresight_of(info, config, catalog, profiles))


def reactive(
    config: Config, catalog: Catalog, profiles: Sequence[CapacityProfile], info: TraceInfo
) -> Policy:
    """`reactive` with Ray Serve's defaults, its replica shape sized on the trace's peak."""
    return Reactive(
        config, catalog, profiles, foresight=foresight_of(info, config, catalog, profiles)
    )


def spothedge(
    config: Config, catalog: Catalog, profiles: Sequence[CapacityProfile], info: TraceInfo
) -> Policy:
    """`spothedge` with the scenario's parameters (by default the SpotHedge paper's: see
    `simulations.scenario.SpotHedgeSection`), its replica type sized on the trace's peak."""
    settings = info.spothedge
    return SpotHedge(
        config,
        catalog,
        profiles,
        num_overprovision=settings.num_overprovision,
        base_ondemand_fallback_replicas=settings.base_ondemand_fallback_replicas,
        dynamic_ondemand_fallback=settings.dynamic_ondemand_fallback,
        foresight=foresight_of(info, config, catalog, profiles),
    )


def oracle(
    config: Config, catalog: Catalog, profiles: Sequence[CapacityProfile], info: TraceInfo
) -> Policy:
    """`oracle` over the run's whole trace, with the simulated cloud's boot time."""
    return Oracle(
        config,
        catalog,
        profiles,
        foresight_of(info, config, catalog, profiles),
        boot_time_s=info.boot_time_s,
        seed=info.seed,
    )


BASELINES: dict[str, PolicyFactory] = {
    "static-peak": static_peak,
    "reactive": reactive,
    "spothedge": spothedge,
    "oracle": oracle,
}
