"""What-if scenarios: a TOML file that changes the config and the simulated world.

A scenario overrides, on top of the config file:

* ``[config]``: any config key (deep-merged into the config, then validated as a
  whole), e.g. ``[config.clouds.aws] regions = ["us-east-1"]`` to allow fewer
  regions or ``[config.scheduler] tick_interval_s = 120``; ``[clouds]`` is a
  shorthand for ``[config.clouds]``;
* ``[demand]``: ``scale`` (multiplies the load), ``fleet_gpus`` (scale the trace so
  its peak needs about that many GPUs), and where unlabelled trace series go
  (``model``, ``region``, or ``[demand.series] name = "model/region"``);
* ``[market]``: ``spot_price_multiplier`` and ``interruption_multiplier`` on every
  spot offering of the catalog; ``spot_price_vs_on_demand`` (every spot price becomes
  that share of the on-demand price of the same pool), ``instance_types`` (the cloud
  sells only these) and ``zones`` (``"cloud/region" = [zones]``: that region's pools are
  sold per zone, each zone its own failure domain, e.g. for spot traces recorded per
  AWS zone);
* ``[spothedge]``: the `spothedge` baseline's parameters (``num_overprovision``,
  ``base_ondemand_fallback_replicas``, ``dynamic_ondemand_fallback``), by default the
  SpotHedge paper's configuration;
* ``[cloud]``: the simulated cloud: ``boot_time_s`` (default: the config's
  ``planning.default_boot_time_s``), ``boot_time_by_type`` per instance type,
  ``reveal_stockouts``, ``random_interruptions``, ``seed``;
* ``[faults]``: model-server faults the simulated cloud injects (`adapters.sim.SimFaults`,
  the same for every policy: each launch's fate is drawn from the seed and its launch
  number): ``never_healthy_share`` of launches never serve, serving nodes turn sick at
  ``sick_per_node_day``, and every boot in the pools matching ``bad_pools`` (a glob on
  pool keys) fails from ``bad_from_min`` to ``bad_until_min`` minutes of the trace. Turn
  on ``[config.health] enabled = true`` to let the reconciler see them;
* ``[[spot_traces]]``: ``file`` (SkyPilot spot-traces JSON; relative to the scenario
  file, or ``$SPOT/...`` under the SkyPilot traces folder), ``pools`` (glob on pool
  keys ``cloud/zone-or-region/instance_type/spot``), ``scale``, ``offset_s``, ``loop``
  (default true: a trace shorter than the replay starts over, and a note says so;
  false: the pools keep the trace's last value after its end);
* ``[[spot_prices]]``: spot prices that move (issue 18, item 3): ``file`` (a
  ``describe-spot-price-history`` TSV as archived by ericpauley/aws-spot-price-history;
  relative to the scenario file, or ``$PRICES/...`` under the shared price folder),
  ``zone_id`` (the AWS zone ID whose series drive the pools, e.g. ``use1-az1``; a glob
  such as ``use1-*`` prices each pool at the mean over the matching zones that have a
  series for it, as the AWS adapter prices a pool without a zone from live prices),
  ``pools`` (glob on spot pool keys; each matched pool follows the series of its own
  instance type, or of ``instance_type`` when given), ``product`` (default
  ``Linux/UNIX``), ``mode`` (``absolute``: the recorded USD/hour; ``relative``: the
  pool's catalog price times the series' price over its price at replay start) and
  ``offset_s`` (time into the file, from its earliest record, at replay start). Before
  a series' first record its first price holds, after its last record its last.

Problems raise `ScenarioError` with one line per problem naming the file and key,
as `scheduler.config` does.
"""

from __future__ import annotations

import fnmatch
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from adapters.sim import SimFaults, SpotTrace, SpotTraceError, load_spot_trace
from adapters.spot_prices import (
    PRODUCT_LINUX,
    PriceHistory,
    SpotPriceError,
    SpotPriceSeries,
    load_price_history,
    mean_series,
)
from scheduler.config import BOM, Config, ConfigError
from scheduler.domain import Cloud, Market, Offering, Pool
from scheduler.errors import problem_lines
from scheduler.fleet.catalog import Catalog

SPOT_TRACES_ENV = "CAPSCHED_SPOT_TRACES"
SPOT_PRICES_ENV = "CAPSCHED_SPOT_PRICES"
# The shared data folder sits next to the repository in our checkouts.
_SHARED_SPOT = Path(__file__).resolve().parents[2] / "shared/data/spot/skypilot_spot_traces"
_SHARED_PRICES = Path(__file__).resolve().parents[2] / "shared/data/prices"
DEFAULT_SCENARIO_PATH = Path(__file__).parent / "data" / "default_scenario.toml"
# The embedded default's world with the real SkyPilot spot traces (opt-in: not bundled).
SKYPILOT_SCENARIO_PATH = Path(__file__).parent / "data" / "scenarios" / "skypilot-spot-traces.toml"


def spot_traces_dir() -> Path | None:
    """Folder of the SkyPilot spot traces, when this machine has them."""
    env = os.environ.get(SPOT_TRACES_ENV)
    if env:
        return Path(env)
    return _SHARED_SPOT if _SHARED_SPOT.is_dir() else None


def spot_prices_dir() -> Path | None:
    """Folder of the shared spot price histories, when this machine has it."""
    env = os.environ.get(SPOT_PRICES_ENV)
    if env:
        return Path(env)
    return _SHARED_PRICES if _SHARED_PRICES.is_dir() else None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DemandSection(_Section):
    """How the trace becomes load."""

    scale: float = Field(default=1.0, gt=0)  # multiplies every rate (after fleet_gpus)
    fleet_gpus: float | None = Field(default=None, gt=0)  # peak needs about this many GPUs
    model: str | None = None  # model of unlabelled series (default: the config's first)
    region: str | None = None  # region of unlabelled series (default: the config's first)
    series: dict[str, str] = {}  # trace series name -> "model/region"


class MarketSection(_Section):
    """Changes to what the simulated cloud sells."""

    spot_price_multiplier: float = Field(default=1.0, gt=0)  # on every spot price
    interruption_multiplier: float = Field(default=1.0, ge=0)  # on every spot interruption rate
    # Every spot price becomes this share of the same pool's on-demand price (before the
    # multiplier); spot pools without an on-demand twin keep their price. None: unchanged.
    spot_price_vs_on_demand: float | None = Field(default=None, gt=0, le=1)
    instance_types: tuple[str, ...] = ()  # the cloud sells only these types; () = every type
    # "cloud/region" -> zones: the region's pools (zone "") are sold once per zone.
    zones: dict[str, tuple[str, ...]] = {}

    @field_validator("zones")
    @classmethod
    def _zone_keys(cls, zones: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for key, names in zones.items():
            cloud, _, region = key.partition("/")
            if cloud not in {c.value for c in Cloud} or not region or "/" in region:
                raise ValueError(f'{key!r}: expected "cloud/region", e.g. "aws/us-west-2"')
            if not names or any(not z for z in names) or len(set(names)) != len(names):
                raise ValueError(f"{key!r}: expected a list of distinct zone names")
        return zones


class SpotHedgeSection(_Section):
    """The `spothedge` baseline's parameters. The defaults are the SpotHedge paper's
    configuration (EuroSys '25 microbenchmarks, the artifact's `eval/eval.py`): one
    over-provisioned spot replica, no base on-demand replica, dynamic on-demand fallback."""

    num_overprovision: int = Field(default=1, ge=0)  # spot replicas beyond the target
    base_ondemand_fallback_replicas: int = Field(default=0, ge=0)  # always-on on-demand
    dynamic_ondemand_fallback: bool = True  # on-demand stands in for spot not yet ready


class CloudSimSection(_Section):
    """The simulated cloud."""

    boot_time_s: float | None = Field(default=None, ge=0)  # launch to ready, every type
    boot_time_by_type: dict[str, float] = {}  # launch to ready per instance type name
    reveal_stockouts: bool = False  # offerings show stocked-out spot pools as unavailable
    random_interruptions: bool = True  # interrupt spot pools without a trace at catalog rates
    seed: int | None = Field(default=None, ge=0)  # default: the config's solver seed


class FaultsSection(_Section):
    """Model-server faults injected by the simulated cloud (docs/health.md)."""

    never_healthy_share: float = Field(default=0.0, ge=0, le=1)  # of launches, never serve
    sick_per_node_day: float = Field(default=0.0, ge=0, le=1000)  # serving nodes turning sick
    bad_pools: str = ""  # glob on pool keys whose every boot fails in the window; "" = none
    bad_from_min: float = Field(default=0.0)  # window start, minutes from the trace start
    bad_until_min: float = Field(default=math.inf)  # window end, minutes from the trace start


class SpotTraceSection(_Section):
    """One spot trace and the pools it drives."""

    file: str = Field(min_length=1)  # SkyPilot JSON; relative to the scenario, or "$SPOT/..."
    pools: str = Field(min_length=1)  # glob on pool keys, e.g. "aws/us-east-1/*/spot"
    scale: float = Field(default=1.0, gt=0)  # multiplies the counts
    offset_s: float = Field(default=0.0, ge=0)  # trace time at replay start
    loop: bool = True  # start over after the end; false: hold the last value


class SpotPriceSection(_Section):
    """One price history file and the spot pools whose prices it drives."""

    file: str = Field(min_length=1)  # TSV; relative to the scenario, or "$PRICES/..."
    zone_id: str = Field(min_length=1)  # AWS zone ID of the series ("use1-az1"), or a glob
    pools: str = Field(min_length=1)  # glob on spot pool keys, e.g. "aws/us-east-1/*/spot"
    instance_type: str | None = None  # series of this type for every pool; None: the pool's
    product: str = PRODUCT_LINUX  # product description of the series
    mode: Literal["absolute", "relative"] = "absolute"  # recorded USD/h, or ratio x catalog
    offset_s: float = Field(default=0.0, ge=0)  # file time (from its first record) at start


class Scenario(_Section):
    """The whole scenario file."""

    name: str = "baseline"  # label in reports and sweeps
    config: dict[str, Any] = {}  # deep-merged into the config
    clouds: dict[str, Any] = {}  # shorthand for config.clouds
    demand: DemandSection = DemandSection()
    market: MarketSection = MarketSection()
    cloud: CloudSimSection = CloudSimSection()
    spot_traces: tuple[SpotTraceSection, ...] = ()
    spot_prices: tuple[SpotPriceSection, ...] = ()
    spothedge: SpotHedgeSection = SpotHedgeSection()
    faults: FaultsSection = FaultsSection()


class ScenarioError(ConfigError):
    """A scenario that cannot be used; `problems` holds one line per problem."""


def parse_scenario(text: str, path: Path) -> Scenario:
    """Parse and validate scenario TOML; `path` is used in messages."""
    try:
        raw = tomllib.loads(text.removeprefix(BOM))
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(path, [f"{path}: not valid TOML: {exc}"]) from None
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(path, problem_lines(exc, path, Scenario, syntax="toml")) from None


def load_scenario(path: Path | str | None) -> tuple[Scenario, Path]:
    """A scenario file (or the embedded default when `path` is None) and its path."""
    p = Path(path) if path is not None else DEFAULT_SCENARIO_PATH
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(p, [f"{p}: cannot read: {exc.strerror or exc}"]) from None
    return parse_scenario(text, p), p


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def apply_config(config: Config, scenario: Scenario, path: Path) -> Config:
    """The config with the scenario's overrides; errors name the scenario's keys."""
    over = _merge(dict(scenario.config), {"clouds": scenario.clouds} if scenario.clouds else {})
    if not over:
        return config
    merged = _merge(config.model_dump(mode="json", exclude_none=True), over)
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        problems = problem_lines(exc, path, Config, syntax="toml", prefix=("config",))
        raise ScenarioError(path, problems) from None


def _split_zones(
    offerings: tuple[Offering, ...], zones: Mapping[str, tuple[str, ...]]
) -> tuple[Offering, ...]:
    """Regional pools named in `zones` sold once per zone (same price and rate)."""
    out: list[Offering] = []
    for o in offerings:
        names = zones.get(f"{o.pool.cloud}/{o.pool.region}") if not o.pool.zone else None
        if names is None:
            out.append(o)
            continue
        out.extend(replace(o, pool=replace(o.pool, zone=z)) for z in names)
    return tuple(out)


def apply_market(offerings: tuple[Offering, ...], market: MarketSection) -> tuple[Offering, ...]:
    """Offerings as the scenario's market sells them: only its instance types, regions
    split into zones, spot prices tied to on-demand, then the multipliers."""
    if market.instance_types:
        offerings = tuple(o for o in offerings if o.pool.instance_type in market.instance_types)
    if market.zones:
        offerings = _split_zones(offerings, market.zones)
    if market.spot_price_vs_on_demand is not None:
        share = market.spot_price_vs_on_demand
        on_demand = {
            replace(o.pool, market=Market.SPOT): o.usd_per_hour
            for o in offerings
            if o.pool.market is Market.ON_DEMAND
        }
        offerings = tuple(
            replace(o, usd_per_hour=on_demand[o.pool] * share, price_is_estimate=False)
            if o.pool in on_demand
            else o
            for o in offerings
        )
    if market.spot_price_multiplier == 1.0 and market.interruption_multiplier == 1.0:
        return offerings
    return tuple(
        replace(
            o,
            usd_per_hour=o.usd_per_hour * market.spot_price_multiplier,
            interruptions_per_hour=o.interruptions_per_hour * market.interruption_multiplier,
        )
        if o.pool.market is Market.SPOT
        else o
        for o in offerings
    )


def scenario_catalog(catalog: Catalog, scenario: Scenario) -> Catalog:
    """The catalog as the scenario's cloud sells it."""
    return replace(catalog, offerings=apply_market(catalog.offerings, scenario.market))


def resolve_trace_path(entry: str, scenario_path: Path) -> Path:
    """Where a `spot_traces.file` or `spot_prices.file` points."""
    if entry.startswith("$PRICES/"):
        prices = spot_prices_dir()
        if prices is None:
            raise FileNotFoundError(
                f"{entry}: spot price histories not found; set {SPOT_PRICES_ENV}"
            )
        return prices / entry.removeprefix("$PRICES/")
    if entry.startswith("$SPOT/"):
        root = spot_traces_dir()
        if root is None:
            raise FileNotFoundError(
                f"{entry}: SkyPilot spot traces not found; set {SPOT_TRACES_ENV}"
            )
        return root / entry.removeprefix("$SPOT/")
    p = Path(entry)
    return p if p.is_absolute() else scenario_path.parent / p


def _span(seconds: float) -> str:
    """A duration for people: minutes, hours or days."""
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def loop_note(index: int, entry: SpotTraceSection, trace: SpotTrace, replay_s: float) -> str | None:
    """The note on a looping trace that the replay outlasts, or None when it does not."""
    length_s = len(trace.counts) * trace.gap_s
    if not entry.loop or entry.offset_s + replay_s <= length_s + 1e-9:
        return None
    return (
        f"spot_traces[{index}] {entry.file} loops: {_span(length_s)} long"
        + (f" from offset {_span(entry.offset_s)}" if entry.offset_s else "")
        + f", the replay is {_span(replay_s)}, so it plays"
        f" {(entry.offset_s + replay_s) / length_s:.1f} times"
        " (loop = false holds its last value instead)"
    )


def load_spot_mapping(
    scenario: Scenario,
    path: Path,
    offerings: tuple[Offering, ...],
    replay_s: float = 0.0,
) -> tuple[dict[Pool, SpotTrace], list[str]]:
    """Spot trace per pool, and notes on traces that could not be found (and were
    skipped) and on traces shorter than a replay of `replay_s` that loop."""
    out: dict[Pool, SpotTrace] = {}
    notes: list[str] = []
    problems: list[str] = []
    spot_pools = [o.pool for o in offerings if o.pool.market is Market.SPOT]
    for i, entry in enumerate(scenario.spot_traces):
        where = f"{path}: spot_traces[{i}]"
        try:
            file = resolve_trace_path(entry.file, path)
        except FileNotFoundError as exc:
            notes.append(f"spot_traces[{i}] skipped: {exc}")
            continue
        try:
            trace = load_spot_trace(
                file, scale=entry.scale, offset_s=entry.offset_s, loop=entry.loop
            )
        except SpotTraceError as exc:
            problems.append(f"{where}.file: {exc}")
            continue
        note = loop_note(i, entry, trace, replay_s)
        if note is not None:
            notes.append(note)
        matched = [p for p in spot_pools if fnmatch.fnmatchcase(p.key, entry.pools)]
        if not matched:
            problems.append(f"{where}.pools: {entry.pools!r} matches no spot pool of the catalog")
        for pool in matched:
            if pool in out:
                problems.append(f"{where}.pools: pool {pool.key} already has a trace")
                break
            out[pool] = trace
    if problems:
        raise ScenarioError(path, problems)
    return out, notes


def load_price_mapping(
    scenario: Scenario, path: Path, offerings: tuple[Offering, ...]
) -> tuple[dict[Pool, SpotPriceSeries], list[str]]:
    """Spot price series per pool, and notes on files that could not be found (skipped:
    their pools keep the catalog's price) and on pools without a series in their file."""
    out: dict[Pool, SpotPriceSeries] = {}
    notes: list[str] = []
    problems: list[str] = []
    price_of = {o.pool: o.usd_per_hour for o in offerings if o.pool.market is Market.SPOT}
    files: dict[Path, PriceHistory] = {}  # one file often serves several entries
    for i, entry in enumerate(scenario.spot_prices):
        where = f"{path}: spot_prices[{i}]"
        try:
            file = resolve_trace_path(entry.file, path)
        except FileNotFoundError as exc:
            notes.append(f"spot_prices[{i}] skipped: {exc}")
            continue
        if file not in files:
            try:
                files[file] = load_price_history(file)
            except SpotPriceError as exc:
                problems.append(f"{where}.file: {exc}")
                continue
        history = files[file]
        matched = [p for p in price_of if fnmatch.fnmatchcase(p.key, entry.pools)]
        if not matched:
            problems.append(f"{where}.pools: {entry.pools!r} matches no spot pool of the catalog")
        missing: list[str] = []
        zones = history.zone_ids(entry.zone_id)
        for pool in matched:
            itype = entry.instance_type or pool.instance_type
            parts = [
                s
                for z in zones
                if (s := history.series_for(z, itype, entry.product, entry.offset_s)) is not None
            ]
            if not parts:
                missing.append(itype)
                continue
            series = mean_series(parts, f"{file} {entry.zone_id}/{itype}/{entry.product}")
            if pool in out:
                problems.append(f"{where}.pools: pool {pool.key} already has a price series")
                break
            if entry.mode == "relative":
                series = series.scaled(price_of[pool] / series.price_at(0.0))
            out[pool] = series
        if matched and len(missing) == len(matched):
            problems.append(
                f"{where}: {file} has no {entry.product!r} series in zone {entry.zone_id!r}"
                f" for {', '.join(sorted(set(missing)))}"
            )
        elif missing:
            notes.append(
                f"spot_prices[{i}]: no series in zone {entry.zone_id} for"
                f" {', '.join(sorted(set(missing)))}: those pools keep the catalog's price"
            )
    if problems:
        raise ScenarioError(path, problems)
    return out, notes


def sim_faults(
    scenario: Scenario, path: Path, offerings: tuple[Offering, ...], start_s: float
) -> SimFaults | None:
    """The scenario's `[faults]` for a replay whose trace starts at `start_s`; None when
    it injects none. A `bad_pools` glob matching no pool is an error naming the key."""
    f = scenario.faults
    bad: frozenset[Pool] = frozenset()
    if f.bad_pools:
        bad = frozenset(o.pool for o in offerings if fnmatch.fnmatchcase(o.pool.key, f.bad_pools))
        if not bad:
            raise ScenarioError(
                path, [f"{path}: faults.bad_pools: {f.bad_pools!r} matches no pool sold"]
            )
    faults = SimFaults(
        never_healthy_share=f.never_healthy_share,
        sick_per_node_day=f.sick_per_node_day,
        bad_pools=bad,
        bad_from_s=start_s + f.bad_from_min * 60.0,
        bad_until_s=start_s + f.bad_until_min * 60.0,
    )
    return faults if faults.any else None
