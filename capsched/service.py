"""`capsched daemon`: builds the daemon's edges from the config and runs it.

This is the composition root: the one place that picks concrete providers, metrics
sources and the drainer. The embedded default (simulated cloud, bundled trace) imports
the trace loader from `simulations/` lazily, here and nowhere else in `scheduler/`.

Before the loop starts it guards the state database (docs/state.md): one daemon per
database (a lock beside it), no start on a damaged one, and no silent adoption of a fleet
a new database has never seen.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import re
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adapters.resource import AsyncResource
from scheduler.config import Config, DrainSection, HealthSection
from scheduler.decide.config_check import check_config
from scheduler.decide.health import HealthProbe
from scheduler.domain import CapacityProfile, Node
from scheduler.fleet.boot import node_boot_s
from scheduler.fleet.catalog import Catalog, load_catalog
from scheduler.fleet.profiles import load_profiles
from scheduler.loop.factory import build_scheduler
from scheduler.loop.logs import set_virtual_clock
from scheduler.loop.reconciler import Reconciler
from scheduler.loop.state_lock import StateLock, StateLockHeld
from scheduler.loop.store import StateDamaged, StateStore, check_integrity
from scheduler.ports.drain import Drainer, NoTrafficLayer
from scheduler.ports.metrics import MetricsSource
from scheduler.ports.provider import InstanceState, Provider, ProviderError
from scheduler.service.api import TokenFileError, load_or_create_token, make_app, serve
from scheduler.service.daemon import Clock, Daemon
from scheduler.service.telemetry import Telemetry

log = logging.getLogger(__name__)


@dataclass
class Edges:
    """The concrete outside world the daemon runs against."""

    provider: Provider  # the cloud
    metrics: MetricsSource  # the load signal
    clock: Clock  # daemon time
    advance: Callable[[float], Awaitable[None]] | None  # moves a simulated cloud in time
    pending_notices: Callable[[], int] | None  # cheap check for interruption notices
    # The simulated cloud answers health checks itself (its nodes serve nothing over
    # HTTP); None: real clouds, checked over HTTP by the `[health]` section.
    health_probe: HealthProbe | None = None


def virtual_clock(start_s: float, speedup: float, wall: Callable[[], float] = time.time) -> Clock:
    """A clock that starts at `start_s` now and runs `speedup` times faster than `wall`."""
    wall0 = wall()
    return lambda: start_s + (wall() - wall0) * speedup


def build_edges(config: Config, catalog: Catalog, profiles: tuple[CapacityProfile, ...]) -> Edges:
    """Provider, metrics source and clock for `config.sources`."""
    from adapters.aws import AwsProvider
    from adapters.gcp import GcpProvider
    from adapters.prometheus import PrometheusSource
    from adapters.sim import SimCloud, SimHealthProbe
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
    # `sim_boot_time_s` sets every node's boot; otherwise each boots for `node_boot_s`.
    boot_s = src.sim_boot_time_s
    # A partial, not a lambda: the simulated cloud is pickled into `sources.sim_state`.
    per_node = None if boot_s is not None else functools.partial(node_boot_s, config)

    def fresh() -> SimCloud:
        return SimCloud(
            catalog.offerings,
            catalog.instance_types,
            start_s=start_s,
            boot_time_s=boot_s if boot_s is not None else config.planning.default_boot_time_s,
            boot_time=per_node,
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

    sim = cloud.cloud if isinstance(cloud, PersistentSimCloud) else cloud
    return Edges(cloud, metrics, clock, advance, lambda: cloud.unread_notices, SimHealthProbe(sim))


def url_host(address: str) -> str:
    """`address` as the host part of a URL: an IPv6 literal goes in brackets."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # a name, an IPv4 host:port, or already bracketed
    return f"[{address}]" if ip.version == 6 else address


def stored_address(store: StateStore) -> Callable[[Node], str | None]:
    """The HTTP drainer's resolver: where the store last saw the node listed (the cloud's
    private IP), so it works after a restart too; None when no listing has reported one,
    and the drainer then reports the node's in-flight count as unknown."""

    def resolve(node: Node) -> str | None:
        stored = store.node(node.node_id)
        address = (stored.address if stored is not None else None) or node.address
        return url_host(address) if address else None

    return resolve


_USERINFO = re.compile(r"^(https?://)[^/]*@")  # up to the last "@" before the path


def _no_userinfo(template: str) -> str:
    # URL templates do not parse as URLs ("{host}"), so strip "user:password@" by hand.
    return _USERINFO.sub(r"\1", template)


class ConfiguredDrainer(AsyncResource):
    """The `scheduler.ports.drain.Drainer` the `[drain]` section asks for.

    It reads the section through `settings` on every call and rebuilds the concrete
    drainer when a reload changed it, so a SIGHUP takes effect from the next drain or
    in-flight check on: a node already draining keeps its deregistration (the hook is
    not called again) and is from then on counted with the new settings.
    """

    def __init__(
        self,
        settings: Callable[[], DrainSection],
        resolve: Callable[[Node], str | None],
    ) -> None:
        self._settings = settings  # the running config's [drain] (follows reloads)
        self._resolve = resolve  # node -> address, for the HTTP drainer's {host}
        self._built_for: DrainSection | None = None  # settings behind `_drainer`
        self._drainer: Drainer = NoTrafficLayer()

    async def current(self) -> Drainer:
        """The drainer for the running config's `[drain]`, rebuilt (and logged) on a change."""
        settings = self._settings()
        if settings == self._built_for:
            return self._drainer
        await self.close()
        if settings.kind == "http":
            from adapters.http_drain import HttpDrainer

            self._drainer = HttpDrainer(settings, self._resolve)
            log.info(
                "drain_configured kind=http hook=%s hook_url=%s metrics_url=%s metrics=%s",
                settings.hook_method if settings.hook_url else "none",
                _no_userinfo(settings.hook_url) or "-",
                _no_userinfo(settings.metrics_url),
                ",".join(settings.in_flight_metrics),
            )
        else:
            self._drainer = NoTrafficLayer()
            log.info("drain_configured kind=none")
        self._built_for = settings
        return self._drainer

    async def begin(self, node: Node) -> None:
        """Take `node` out of rotation with the current settings."""
        await (await self.current()).begin(node)

    async def in_flight(self, node: Node, now_s: float) -> int | None:
        """Requests still on `node`, read with the current settings; None when unknown."""
        return await (await self.current()).in_flight(node, now_s)

    async def close(self) -> None:
        """Close the HTTP drainer's session, if one was built."""
        if isinstance(self._drainer, AsyncResource):
            await self._drainer.close()
        self._drainer = NoTrafficLayer()
        self._built_for = None


class ConfiguredHealthProbe(AsyncResource):
    """The `scheduler.decide.health.HealthProbe` the `[health]` section asks for, rebuilt when a
    reload changed the section (the reconciler checks nothing while there is none)."""

    def __init__(
        self,
        settings: Callable[[], HealthSection | None],
        resolve: Callable[[Node], str | None],
    ) -> None:
        self._settings = settings  # the running config's [health] (follows reloads)
        self._resolve = resolve  # node -> address, for {host}
        self._built_for: HealthSection | None = None  # settings behind `_probe`
        self._probe: AsyncResource | None = None  # an HttpHealthProbe, once needed

    async def check(self, node: Node) -> bool | None:
        """Check `node` with the current settings; None without a `[health]` section."""
        from adapters.http_health import HttpHealthProbe

        settings = self._settings()
        if settings is None:
            return None
        if settings != self._built_for or not isinstance(self._probe, HttpHealthProbe):
            await self.close()
            self._probe = HttpHealthProbe(settings, self._resolve)
            self._built_for = settings
            log.info(
                "health_configured url=%s expected_status=%d interval_s=%g",
                _no_userinfo(settings.url),
                settings.expected_status,
                settings.interval_s,
            )
        return await self._probe.check(node)

    async def close(self) -> None:
        """Close the HTTP probe's session, if one was built."""
        if self._probe is not None:
            await self._probe.close()
        self._probe = None
        self._built_for = None


def build_drainer(config: Callable[[], Config], store: StateStore) -> ConfiguredDrainer:
    """The daemon's drainer: `[drain]` of the running config (`config()` follows reloads),
    nodes resolved to the address the store keeps for them."""
    return ConfiguredDrainer(lambda: config().drain, stored_address(store))


def _bundled_trace() -> Path:
    from simulations.demand import __file__ as demand_file

    return Path(demand_file).parent / "data" / "azure_llm_2023_per_minute.csv"


def restore_hint(state_db: str) -> str:
    """How to put the last good backup in place of `state_db` (docs/state.md), one line."""
    return (
        f"stop capsched, restore the last good backup (cp BACKUP {state_db}; rm -f"
        f" {state_db}-wal {state_db}-shm; see docs/state.md), then start it again"
    )


async def unseen_instances(provider: Provider, store: StateStore) -> list[str]:
    """Node ids of live instances tagged as ours that `store` has no record of."""
    live = (InstanceState.PENDING, InstanceState.RUNNING)
    return sorted(
        i.node_id
        for i in await provider.list_instances()
        if i.state in live and store.node(i.node_id) is None
    )


async def _close_edges(edges: Edges) -> None:
    for edge in (edges.provider, edges.metrics):
        close = getattr(edge, "close", None)  # HTTP sessions of real clouds and Prometheus
        if close is not None:
            await close()


def _sim_state_hint(config: Config) -> str:
    """For the simulated cloud: where its instances live, to start afresh by deleting it."""
    sim_state = config.sources.sim_state if config.sources.cloud == "sim" else ""
    if not sim_state:
        return ""
    return f" (the simulated cloud keeps them in {sim_state!r}: delete it too to start afresh)"


async def run_daemon(config: Config, config_path: Path | None, *, adopt: bool = False) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code (2 when the sources cannot be used,
    the state database is held by another daemon, damaged, or new next to a fleet it has
    never seen and `adopt` is not given)."""
    catalog, profiles = load_catalog(), load_profiles()
    where = config_path or "default config"
    # What `capsched validate-config` refuses, the daemon refuses before it starts
    # (otherwise every tick would fail on the unknown name).
    problems = check_config(config, catalog, profiles)
    for line in problems:
        print(f"error: {where}: {line}", file=sys.stderr)
    if problems:
        return 2
    db = config.scheduler.state_db
    lock: StateLock | None = None
    if db != ":memory:":
        # Before anything else touches the state (the store, a persisted simulated cloud):
        # a second daemon on one database would act beside the first (docs/state.md).
        try:
            lock = StateLock.acquire(db)
        except StateLockHeld as exc:
            print(f"error: {where}: scheduler.state_db: {db!r} is {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            msg = exc.strerror or exc
            print(f"error: {where}: scheduler.state_db: cannot lock {db!r}: {msg}", file=sys.stderr)
            return 2
    try:
        return await _run_locked(config, config_path, catalog, profiles, adopt=adopt)
    finally:
        set_virtual_clock(None)  # an embedding process's later log lines are not replayed
        if lock is not None:
            lock.release()


async def _run_locked(
    config: Config,
    config_path: Path | None,
    catalog: Catalog,
    profiles: tuple[CapacityProfile, ...],
    *,
    adopt: bool,
) -> int:
    where = config_path or "default config"
    db = config.scheduler.state_db
    # Checked before the store opens it: migrations must not write into a damaged file.
    damage = check_integrity(db)
    if damage:
        print(
            f"error: {where}: scheduler.state_db: {db!r} is damaged ({damage[0]});"
            f" {restore_hint(db)}",
            file=sys.stderr,
        )
        return 2
    try:
        edges = build_edges(config, catalog, profiles)
    except (ValueError, OSError) as exc:  # TraceFormatError is a ValueError naming file and line
        print(f"error: {where}: sources: {exc}", file=sys.stderr)
        return 2
    if config.sources.cloud == "sim" and config.sources.demand == "trace":
        set_virtual_clock(edges.clock)  # log lines say where in the replayed trace they are
    try:
        token = load_or_create_token(config.daemon.token_file)
    except TokenFileError as exc:
        print(
            f"error: {config_path or 'default config'}: daemon.token_file: {exc}", file=sys.stderr
        )
        await _close_edges(edges)
        return 2
    try:
        store = StateStore(db)
    except (sqlite3.Error, OSError) as exc:
        damaged = isinstance(exc, sqlite3.DatabaseError) and not isinstance(
            exc,
            sqlite3.OperationalError,  # locked, unreadable: not the file's content
        )
        hint = f"; {restore_hint(db)}" if damaged else ""
        print(
            f"error: {where}: scheduler.state_db: cannot open {db!r}: {exc}{hint}", file=sys.stderr
        )
        await _close_edges(edges)
        return 2
    if not store.has_nodes():
        # A new (or emptied) database next to a fleet it has never seen: a lost database,
        # or the wrong one. Adopting that fleet must be asked for (docs/state.md).
        try:
            unseen = await unseen_instances(edges.provider, store)
        except (ProviderError, OSError) as exc:  # the cloud cannot be asked: do not guess
            print(
                f"error: {where}: scheduler.state_db: {db!r} is new and the cloud cannot be"
                f" listed to check it: {type(exc).__name__}: {exc}",
                file=sys.stderr,
            )
            store.close()
            await _close_edges(edges)
            return 1
        if unseen and not adopt:
            shown = ", ".join(unseen[:3]) + (", ..." if len(unseen) > 3 else "")
            print(
                f"error: {where}: scheduler.state_db: {db!r} has no record of the"
                f" {len(unseen)} running instance(s) tagged as ours ({shown}); if the"
                f" database was lost, {restore_hint(db)}, or start with --adopt to take"
                " them over" + _sim_state_hint(config),
                file=sys.stderr,
            )
            store.close()
            await _close_edges(edges)
            return 2
        if unseen:
            log.warning("adopting_unseen_instances count=%d state_db=%s", len(unseen), db)
    telemetry = Telemetry()
    telemetry.configure(
        tick_interval_s=config.scheduler.tick_interval_s,
        budget_usd_per_hour=config.planning.budget_usd_per_hour,
    )
    # Follows the reconciler's config, which a SIGHUP reload replaces.
    drainer = build_drainer(lambda: reconciler.config, store)
    health = ConfiguredHealthProbe(lambda: reconciler.config.health_checks, stored_address(store))
    probe: HealthProbe = edges.health_probe or health
    reconciler: Reconciler = build_scheduler(
        config,
        provider=edges.provider,
        metrics=telemetry.tap(edges.metrics),
        store=store,
        drainer=drainer,
        catalog=catalog,
        profiles=profiles,
        health_probe=probe,
    )
    await drainer.current()  # says at start which drainer runs
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
        await drainer.close()
        await health.close()
        await _close_edges(edges)
        return 2
    code = 0
    try:
        async with daemon:
            await daemon.wait_stopped()
    except StateDamaged as exc:  # recovery could not read the state it needs
        print(f"error: {where}: scheduler.state_db: {exc}; {restore_hint(db)}", file=sys.stderr)
        store.close()
        code = 2
    finally:
        await runner.cleanup()
        await drainer.close()
        await health.close()
        await _close_edges(edges)
    return code


def main(config: Config, config_path: Path | None, *, adopt: bool = False) -> int:
    """Entry point used by the CLI."""
    return asyncio.run(run_daemon(config, config_path, adopt=adopt))
