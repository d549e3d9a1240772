"""`capsched daemon`: builds the daemon's edges from the config and runs it.

This is the composition root: the one place that picks concrete providers and
metrics sources. The embedded default (simulated cloud, bundled trace) imports
the trace loader from `simulations/` lazily, here and nowhere else in `scheduler/`.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adapters.metrics import MetricsSource
from adapters.provider import Provider
from scheduler.api import TokenFileError, load_or_create_token, make_app, serve
from scheduler.catalog import Catalog, load_catalog
from scheduler.config import Config
from scheduler.config_check import check_config
from scheduler.daemon import Clock, Daemon
from scheduler.domain import CapacityProfile
from scheduler.factory import build_scheduler
from scheduler.profiles import load_profiles
from scheduler.store import StateStore
from scheduler.telemetry import Telemetry

log = logging.getLogger(__name__)


@dataclass
class Edges:
    """The concrete outside world the daemon runs against."""

    provider: Provider  # the cloud
    metrics: MetricsSource  # the load signal
    clock: Clock  # daemon time
    advance: Callable[[float], Awaitable[None]] | None  # moves a simulated cloud in time
    pending_notices: Callable[[], int] | None  # cheap check for interruption notices


def virtual_clock(start_s: float, speedup: float, wall: Callable[[], float] = time.time) -> Clock:
    """A clock that starts at `start_s` now and runs `speedup` times faster than `wall`."""
    wall0 = wall()
    return lambda: start_s + (wall() - wall0) * speedup


def build_edges(config: Config, catalog: Catalog, profiles: tuple[CapacityProfile, ...]) -> Edges:
    """Provider, metrics source and clock for `config.sources`."""
    from adapters.aws import AwsProvider
    from adapters.gcp import GcpProvider
    from adapters.prometheus import PrometheusSource
    from adapters.sim import SimCloud
    from adapters.sim_persist import PersistentSimCloud
    from adapters.trace_metrics import TraceMetrics
    from simulations.demand import load_demand

    src = config.sources
    metrics: MetricsSource
    if src.demand == "prometheus":
        # Real load, real time: the simulated cloud (if any) follows the wall clock.
        metrics = PrometheusSource(config.prometheus)
        start_s, speed = time.time(), 1.0
    else:
        trace_path = Path(src.trace) if src.trace else _bundled_trace()
        demand = load_demand(trace_path, config, catalog, profiles, fmt=src.trace_format)
        start_s, speed = demand.start_s, src.speedup
        # Repeated for a week, so the embedded default runs as long as it is left running.
        week = max(1, round(7 * 86400 / (demand.step_s * demand.n_steps)))
        metrics = TraceMetrics(
            demand.keys,
            np.tile(demand.rps, (1, week)),
            start_s=demand.start_s,
            step_s=demand.step_s,
            peak_window_s=config.scheduler.tick_interval_s,
        )
    boot_s = (
        src.sim_boot_time_s
        if src.sim_boot_time_s is not None
        else config.planning.default_boot_time_s
    )

    def fresh() -> SimCloud:
        return SimCloud(
            catalog.offerings,
            catalog.instance_types,
            start_s=start_s,
            boot_time_s=boot_s,
            seed=config.solver.seed,
        )

    if src.cloud == "aws":
        # A real cloud runs on the wall clock; its notices arrive through SQS on each tick.
        assert config.aws is not None  # checked by the config's validator
        aws = AwsProvider(config.aws, catalog.offerings)
        return Edges(aws, metrics, time.time, None, None)
    if src.cloud == "gcp":
        assert config.gcp is not None  # checked by the config's validator
        gcp = GcpProvider(config.gcp, catalog.offerings)
        return Edges(gcp, metrics, time.time, None, None)
    cloud: SimCloud | PersistentSimCloud
    if src.sim_state:
        path = Path(src.sim_state)
        cloud = PersistentSimCloud(path) if path.exists() else PersistentSimCloud(path, fresh())
    else:
        cloud = fresh()
    # A persisted cloud carries its own virtual time: the clock continues from it.
    clock = virtual_clock(max(cloud.now_s, start_s), speed)

    async def advance(now_s: float) -> None:
        if now_s > cloud.now_s:
            cloud.advance_to(now_s)

    return Edges(cloud, metrics, clock, advance, lambda: cloud.unread_notices)


def _bundled_trace() -> Path:
    from simulations.demand import __file__ as demand_file

    return Path(demand_file).parent / "data" / "azure_llm_2023_per_minute.csv"


async def run_daemon(config: Config, config_path: Path | None) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code (2 when the sources cannot be used)."""
    catalog, profiles = load_catalog(), load_profiles()
    where = config_path or "default config"
    # What `capsched validate-config` refuses, the daemon refuses before it starts
    # (otherwise every tick would fail on the unknown name).
    problems = check_config(config, catalog, profiles)
    for line in problems:
        print(f"error: {where}: {line}", file=sys.stderr)
    if problems:
        return 2
    try:
        edges = build_edges(config, catalog, profiles)
    except (ValueError, OSError) as exc:  # TraceFormatError is a ValueError naming file and line
        print(f"error: {where}: sources: {exc}", file=sys.stderr)
        return 2
    try:
        token = load_or_create_token(config.daemon.token_file)
    except TokenFileError as exc:
        print(
            f"error: {config_path or 'default config'}: daemon.token_file: {exc}", file=sys.stderr
        )
        return 2
    try:
        store = StateStore(config.scheduler.state_db)
    except (sqlite3.Error, OSError) as exc:
        db = config.scheduler.state_db
        print(f"error: {where}: scheduler.state_db: cannot open {db!r}: {exc}", file=sys.stderr)
        return 2
    telemetry = Telemetry()
    telemetry.configure(
        tick_interval_s=config.scheduler.tick_interval_s,
        budget_usd_per_hour=config.planning.budget_usd_per_hour,
    )
    reconciler = build_scheduler(
        config,
        provider=edges.provider,
        metrics=telemetry.tap(edges.metrics),
        store=store,
        catalog=catalog,
        profiles=profiles,
    )
    daemon = Daemon(
        config=config,
        config_path=config_path,
        reconciler=reconciler,
        store=store,
        clock=edges.clock,
        advance=edges.advance,
        pending_notices=edges.pending_notices,
        telemetry=telemetry,
        notice_poll_s=1.0 if config.sources.cloud == "sim" else 5.0,
    )
    app = make_app(daemon, token, metrics_registry=telemetry.registry)
    d = config.daemon
    # The API listens before the first tick, so a plan waiting for approval can be seen.
    try:
        runner, _ = await serve(app, host=d.api_host, port=d.api_port, socket_path=d.api_socket)
    except OSError as exc:  # port taken, socket directory missing, ...
        key = "daemon.api_socket" if d.api_socket else "daemon.api_port"
        print(f"error: {where}: {key}: cannot listen: {exc}", file=sys.stderr)
        store.close()
        return 2
    try:
        async with daemon:
            await daemon.wait_stopped()
    finally:
        await runner.cleanup()
        for edge in (edges.provider, edges.metrics):
            close = getattr(edge, "close", None)  # HTTP sessions of real clouds and Prometheus
            if close is not None:
                await close()
    return 0


def main(config: Config, config_path: Path | None) -> int:
    """Entry point used by the CLI."""
    return asyncio.run(run_daemon(config, config_path))
