"""Assemble a replay's `World` from a config, a trace and a scenario."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

from scheduler.config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config
from scheduler.decide.planner import allowed
from scheduler.domain import CapacityProfile
from scheduler.fleet.boot import node_boot_s
from scheduler.fleet.capacity import node_rps
from scheduler.fleet.catalog import Catalog, load_catalog
from scheduler.fleet.commitments import commitment_problems
from scheduler.fleet.profiles import load_profiles
from simulations.demand import load_demand
from simulations.engine import World
from simulations.policies import TraceInfo
from simulations.scenario import (
    Scenario,
    apply_config,
    load_price_mapping,
    load_scenario,
    load_spot_mapping,
    scenario_catalog,
    sim_faults,
    sim_storm,
)

log = logging.getLogger(__name__)

WEEK_S = 7 * 86400.0
DEFAULT_TRACE_PATH = Path(__file__).parent / "data" / "azure_llm_2023_per_minute.csv"


@dataclass(frozen=True)
class WorldSpec:
    """The inputs of one replay, as paths and numbers (cheap to send to a worker process)."""

    config_path: Path | None  # config TOML; None: the embedded default
    trace_path: Path | None  # request trace; None: the bundled slice
    trace_format: str = "auto"  # one of simulations.traces.FORMATS, or "auto"
    scenario_path: Path | None = None  # scenario TOML; None: the embedded default
    scenario: Scenario | None = None  # an inline scenario (sweeps); wins over scenario_path
    fleet_gpus: float | None = None  # scale the trace so its peak needs about this many GPUs
    seed: int | None = None  # overrides the scenario's and config's seed


def longest_boot_s(
    config: Config,
    catalog: Catalog,
    profiles: tuple[CapacityProfile, ...],
    step_s: float,
) -> float:
    """The longest `node_boot_s` of a configured model on an instance type the catalog
    offers that serves it, rounded up to whole trace steps of `step_s`: the one boot time
    of the warm-up and of the oracle's schedule when nodes boot per model and type (the
    configured fallback when nothing serves). Whole steps keep the ticks on the trace's
    step grid: a warm-up of 541 + 300 s put every tick 59 s after a step ended, a minute
    late on every reading, and the embedded default's SLO attainment fell from 0.998 to
    0.931."""
    boots = {
        node_boot_s(config, m.name, itype)
        for itype in {catalog.instance_type(o.pool) for o in catalog.offerings}
        for m in config.models
        if node_rps(config, profiles, m.name, itype) > 0
    }
    longest = max(boots, default=config.planning.default_boot_time_s)
    return math.ceil(longest / step_s - 1e-9) * step_s


@dataclass(frozen=True)
class SweepTask:
    """One replay of a sweep, as sent to an executor."""

    scenario: str  # sweep scenario name
    policy: str  # policy name
    state_db: Path  # where the run's state database ends up, on this machine


def build_world(spec: WorldSpec, catalog: Catalog | None = None) -> tuple[World, list[str]]:
    """The world of `spec`, and notes on what was assumed (missing spot traces, scaling).

    Raises ConfigError/ScenarioError (bad config or scenario), TraceFormatError (bad
    trace) or ValueError (a trace that does not fit the config).
    """
    config: Config = load_config(spec.config_path)
    if spec.scenario is not None:
        scenario = spec.scenario
        scenario_path = spec.scenario_path or Path("<sweep>")
    else:
        scenario, scenario_path = load_scenario(spec.scenario_path)
    config = apply_config(config, scenario, scenario_path)
    base_catalog = catalog or load_catalog()
    cat = scenario_catalog(base_catalog, scenario)
    profiles = load_profiles()
    d = scenario.demand
    fleet = spec.fleet_gpus if spec.fleet_gpus is not None else d.fleet_gpus
    trace_path = spec.trace_path or DEFAULT_TRACE_PATH
    demand = load_demand(
        trace_path,
        config,
        cat,
        profiles,
        fmt=spec.trace_format,
        fleet_gpus=fleet,
        scale=d.scale,
        model=d.model,
        region=d.region,
        mapping=d.series,
    )
    replay_s = demand.n_steps * demand.step_s
    spot, notes = load_spot_mapping(scenario, scenario_path, cat.offerings, replay_s)
    prices, price_notes = load_price_mapping(scenario, scenario_path, cat.offerings)
    notes.extend(price_notes)
    # The simulated cloud sells only what the config may use: every policy is bound by
    # the same config, and 2,500 offerings per tick cost the replay more than the solve.
    sold = tuple(o for o in cat.offerings if allowed(config, o, cat.instance_type(o.pool)))
    cat = replace(cat, offerings=sold)
    # A commitment the simulated cloud does not sell would fail only when it is billed.
    unplaced = commitment_problems(config, cat)
    if unplaced:
        path = spec.config_path or DEFAULT_CONFIG_PATH
        raise ConfigError(
            path,
            [f"{path}: {p} (among the pools the config's [clouds] allow)" for p in unplaced],
        )
    spot = {p: t for p, t in spot.items() if p in {o.pool for o in sold}}
    prices = {p: s for p, s in prices.items() if p in {o.pool for o in sold}}
    if scenario.spot_traces and not spot:
        notes.append(
            "no spot trace found: spot pools are interrupted at random at the catalog's rates"
        )
    notes.extend(demand.notes)
    seed = spec.seed
    if seed is None:
        seed = scenario.cloud.seed if scenario.cloud.seed is not None else config.solver.seed
    boot = scenario.cloud.boot_time_s
    start_s = demand.start_s
    if start_s < WEEK_S:
        # Trace-relative times (minute 0 = 0 s): start the replay a week into the virtual
        # clock, so the warm-up before it never runs at negative times; a whole week keeps
        # the daily and weekly phase the forecaster learns.
        start_s += WEEK_S
    info = TraceInfo(
        start_s=start_s,
        step_s=demand.step_s,
        keys=demand.keys,
        demand_rps=demand.rps,
        offerings=cat.offerings,
        spot_traces=spot,
        spot_prices=prices,
        boot_time_s=boot
        if boot is not None
        else longest_boot_s(config, cat, profiles, demand.step_s),
        seed=seed,
        spothedge=scenario.spothedge,
        tokens=demand.tokens,
        buckets=demand.buckets,
    )
    world = World(
        config=config,
        catalog=cat,
        profiles=profiles,
        info=info,
        boot_time_by_type=dict(scenario.cloud.boot_time_by_type),
        boot_per_node=boot is None,
        reveal_stockouts=scenario.cloud.reveal_stockouts,
        random_interruptions=scenario.cloud.random_interruptions,
        faults=sim_faults(scenario, scenario_path, cat.offerings, start_s),
        storm=sim_storm(scenario, scenario_path, cat.offerings, start_s),
    )
    for note in notes:
        log.info("world_note scenario=%s note=%r", scenario.name, note)
    return world, notes
