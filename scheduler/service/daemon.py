"""The long-running service: ticks on an interval and at once on an interruption notice,
each under a timeout; reloads its config on SIGHUP; stops cleanly on SIGTERM.

`Daemon` is an `async with` object that owns the loop (aiojobs-style): the tick task,
the wake-ups and the systemd notifications. A failure inside a tick is logged,
counted and never kills the service. A SIGHUP also checks the state database
(`PRAGMA quick_check`); a damaged one pauses all actions (see `hangup`). Time comes
from an injected clock, so the same daemon drives a real cloud (wall clock) or the
simulated one (a virtual clock running faster than real time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler.config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config
from scheduler.decide.config_check import check_config
from scheduler.decide.decision import Approval, Decision
from scheduler.decide.guards import Held, LaunchLimitWatch
from scheduler.decide.health import HealthVerdict
from scheduler.domain import HoldKind, NodeState
from scheduler.domain.actions import Drain
from scheduler.loop.fast_loop import FastLoop, FastReport
from scheduler.loop.reconciler import Reconciler, TickReport
from scheduler.loop.store import StateDamaged, StateStore, check_integrity
from scheduler.service.telemetry import Telemetry

log = logging.getLogger(__name__)

Clock = Callable[[], float]
TickHook = Callable[[TickReport, float], None]  # (report, tick duration in wall seconds)


def sd_notify(message: str) -> bool:
    """Send `message` to systemd's notify socket (sd_notify(3)); False outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("sd_notify_failed error=%s", exc)
        return False
    return True


@dataclass
class DaemonStats:
    """Counters the status endpoint and metrics read."""

    ticks: int = 0  # ticks completed
    tick_errors: int = 0  # ticks that raised or timed out
    fast_errors: int = 0  # fast checks that raised or timed out
    reload_failures: int = 0  # SIGHUP/API reloads refused because the new config was bad
    config_generation: int = 1  # bumped on every successful reload
    last_tick_s: float | None = None  # time (daemon clock) of the last completed tick
    last_report: TickReport | None = None  # what the last tick did
    last_decision: Decision | None = None  # the last tick's decision (a skipped tick has none)
    last_error: str = ""  # the last tick failure, one line
    state_db_problem: str = ""  # what the last SIGHUP check found wrong with the state db
    started_wall_s: float = field(default_factory=time.time)  # for uptime


class Daemon:
    """capsched as a service; implements the `Control` protocol for the API."""

    def __init__(
        self,
        *,
        config: Config,
        config_path: Path | None,
        reconciler: Reconciler,
        store: StateStore,
        clock: Clock,
        advance: Callable[[float], Awaitable[None]] | None = None,
        pending_notices: Callable[[], int] | None = None,
        on_tick: TickHook | None = None,
        telemetry: Telemetry | None = None,
        notice_poll_s: float = 5.0,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.reconciler = reconciler
        self.store = store
        self.clock = clock  # daemon time (wall clock, or virtual for the simulated cloud)
        self.advance = advance  # moves a simulated cloud to the daemon's time before a tick
        self.pending_notices = pending_notices  # cheap check for unread interruption notices
        self.telemetry = telemetry  # Prometheus metrics, when exported
        self.on_tick = on_tick or (telemetry.tick_hook(reconciler) if telemetry else None)
        self.notice_poll_s = notice_poll_s  # wall seconds between notice checks
        self.stats = DaemonStats()
        self.paused = False
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._notices: asyncio.Task[None] | None = None
        self._tick_lock = asyncio.Lock()
        self._limits = LaunchLimitWatch()  # logs when the budget/a quota starts holding launches
        self.fast = FastLoop(reconciler)  # the check between ticks (scheduler.loop.fast_loop)

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Daemon:
        # Recovery first: if the state cannot be read it raises `StateDamaged` before any
        # handler or task exists that `__aexit__` would have to take down.
        await self.recover()
        if self.reconciler.warm_start() == 0:
            # No demand recorded (a first start, or a new state database): learn from the
            # metrics source's own history where it keeps one (Prometheus).
            await self.reconciler.backfill(self.clock())
        loop = asyncio.get_running_loop()
        for sig, handler in ((signal.SIGTERM, self.stop), (signal.SIGINT, self.stop)):
            loop.add_signal_handler(sig, handler)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.hangup()))
        self._record_config()
        self._task = asyncio.create_task(self._run(), name="capsched-loop")
        self._watchdog = asyncio.create_task(self._pet_watchdog(), name="capsched-watchdog")
        if self.pending_notices is None:  # a real cloud: notices come from its own queue
            self._notices = asyncio.create_task(self._poll_notices(), name="capsched-notices")
        sd_notify("READY=1\nSTATUS=reconciling")
        log.info(
            "daemon_started approval_mode=%s dry_run=%s",
            self.config.daemon.approval_mode,
            self.config.daemon.dry_run,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()
        if self._task is not None:
            await self._task  # finishes the in-flight tick, then returns
        for task in (self._watchdog, self._notices):
            if task is not None:
                task.cancel()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        self.store.close()
        sd_notify("STOPPING=1")
        log.info("daemon_stopped ticks=%d tick_errors=%d", self.stats.ticks, self.stats.tick_errors)

    def stop(self) -> None:
        """Ask the loop to finish its current tick and exit."""
        if not self._stopping.is_set():
            log.info("daemon_stopping")
            sd_notify("STOPPING=1")
        self._stopping.set()
        self._wake.set()

    async def wait_stopped(self) -> None:
        """Until `stop` is called (by a signal or the API)."""
        await self._stopping.wait()

    # -- the loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        interval_s = self.config.scheduler.tick_interval_s
        next_tick = next_fast = next_health = self.clock()
        while not self._stopping.is_set():
            now = self.clock()
            fast_s = self.config.scheduler.fast_interval_s
            health = self.config.health_checks
            health_s = health.interval_s if health is not None else 0.0
            if now >= next_tick or self._wake.is_set():
                self._wake.clear()
                await self.tick_once()
                next_tick = self.clock() + interval_s
                next_fast = self.clock() + fast_s
                next_health = self.clock() + health_s
            elif fast_s > 0 and now >= next_fast:
                await self.fast_once()
                next_fast = self.clock() + fast_s
            elif health_s > 0 and now >= next_health:
                await self.health_once()
                next_health = self.clock() + health_s
            wake_at = next_tick
            if fast_s > 0:
                wake_at = min(wake_at, next_fast)
            if health_s > 0:
                wake_at = min(wake_at, next_health)
            await self._sleep_until(wake_at)

    async def _poll_notices(self) -> None:
        """Between ticks, fetch interruption notices (AWS gives two minutes, GCP thirty
        seconds: a five-minute tick would miss them) and tick at once when one arrives."""
        while not self._stopping.is_set():
            await self.poll_notices_once()
            await asyncio.sleep(self.notice_poll_s)

    async def poll_notices_once(self) -> int:
        """One fetch; notices go to the reconciler (which will not see them again from the
        provider) and wake the loop. Returns how many arrived."""
        try:
            notices = await self.reconciler.provider.interruption_notices()
        except Exception as exc:  # the next poll or the tick's own fetch tries again
            log.warning("notice_poll_failed error=%s", exc)
            return 0
        for notice in notices:
            self.reconciler.notices[notice.node_id] = notice
        if notices:
            log.info("wake reason=interruption_notice count=%d", len(notices))
            self._wake.set()
        return len(notices)

    async def _pet_watchdog(self) -> None:
        """Tell systemd the event loop is alive, at half its watchdog interval. A tick that
        hangs is cut by the tick timeout; a loop that hangs stops petting and is restarted."""
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        if usec <= 0:
            return
        while not self._stopping.is_set():
            sd_notify("WATCHDOG=1")
            await asyncio.sleep(usec / 2_000_000)

    async def _sleep_until(self, next_tick: float) -> None:
        """Wait for the next tick time, a wake-up, or an interruption notice."""
        while not self._stopping.is_set() and not self._wake.is_set():
            if self.clock() >= next_tick:
                return
            if self.pending_notices is not None and self.pending_notices() > 0:
                log.info("wake reason=interruption_notice")
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.notice_poll_s)

    async def tick_once(self) -> TickReport | None:
        """One tick under the configured timeout; failures are logged and counted."""
        async with self._tick_lock:
            now = self.clock()
            started = time.perf_counter()
            try:
                if self.advance is not None:
                    await self.advance(now)
                if self.paused:
                    report = await asyncio.wait_for(
                        self._observe_only(now), self.config.daemon.tick_timeout_s
                    )
                else:
                    report = await asyncio.wait_for(
                        self.reconciler.tick(now), self.config.daemon.tick_timeout_s
                    )
            except TimeoutError:
                self._tick_failed(
                    f"tick timed out after {self.config.daemon.tick_timeout_s:.0f} s",
                    "timeout",
                    time.perf_counter() - started,
                )
                return None
            except Exception as exc:  # the tick boundary: log, count, keep running
                log.exception("tick_failed now_s=%.0f", now)
                self._tick_failed(
                    f"{type(exc).__name__}: {exc}", "failed", time.perf_counter() - started
                )
                return None
            duration = time.perf_counter() - started
            self.stats.ticks += 1
            self.stats.last_tick_s = now
            self.stats.last_report = report
            if report.decision is not None:
                self.stats.last_decision = report.decision
            self._limits.update(report.held_back, now)
            if self.on_tick is not None:
                self.on_tick(report, duration)
            self._record_control()
            return report

    async def fast_once(self) -> FastReport | None:
        """One fast check between ticks (scheduler.loop.fast_loop), under the tick lock and
        the tick timeout; none while paused. Failures are logged and counted like a
        tick's, and never stop the loop."""
        async with self._tick_lock:
            if self.paused:
                return None
            now = self.clock()
            try:
                if self.advance is not None:
                    await self.advance(now)
                report = await asyncio.wait_for(
                    self.fast.check(now), self.config.daemon.tick_timeout_s
                )
            except Exception as exc:  # the check's boundary: log, count, keep running
                log.warning("fast_check_failed now_s=%.0f error=%s", now, exc)
                self.stats.fast_errors += 1
                return None
            if self.telemetry is not None:
                self.telemetry.record_fast(report)
            return report

    async def health_once(self) -> HealthVerdict | None:
        """One health check between ticks (scheduler.decide.health), under the tick lock and the
        tick timeout; a node that failed to boot or turned sick wakes the loop, so its
        replacement is launched now rather than at the next tick."""
        async with self._tick_lock:
            now = self.clock()
            try:
                if self.advance is not None:
                    await self.advance(now)
                verdict = await asyncio.wait_for(
                    self.reconciler.check_health(now), self.config.daemon.tick_timeout_s
                )
            except Exception as exc:  # the check's boundary: log, keep running
                log.warning("health_check_failed now_s=%.0f error=%s", now, exc)
                return None
            if self.telemetry is not None:
                self.telemetry.record_health(self.reconciler, now)
            if verdict.wakes:
                log.info(
                    "wake reason=node_health boot_failed=%d unhealthy=%d",
                    len(verdict.boot_failed),
                    len(verdict.unhealthy),
                )
                self._wake.set()
            return verdict

    async def _observe_only(self, now: float) -> TickReport:
        obs, errors = await self.reconciler.observe(now)
        plan = self.reconciler.policy.decide(obs)
        held = (Held(HoldKind.PAUSED, 0, "paused: not acting"),)
        decision = self.reconciler.planned_only(plan, Approval.PAUSED, held)
        name = self.reconciler.policy.name
        self.store.record_plan(plan, now, name, held, approval=decision.approval)
        return TickReport(
            now, plan, (), held, tuple(errors), obs.demand_complete, decision=decision
        )

    def _record_config(self) -> None:
        """Keep the config text the daemon runs with, one generation per start or reload."""
        path = self.config_path or DEFAULT_CONFIG_PATH
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:  # the running config is valid; only its record is lost
            log.warning("config_not_recorded path=%s error=%s", path, exc)
            return
        try:
            self.store.record_config(self.clock(), str(path), text)
        except sqlite3.DatabaseError as exc:  # a damaged store (see `hangup`): same
            log.error("config_not_recorded path=%s error=%s", path, exc)

    def _record_control(self) -> None:
        if self.telemetry is not None:
            pending = self.reconciler.approval.pending is not None
            self.telemetry.record_control(paused=self.paused, pending_approval=pending)

    def _tick_failed(self, message: str, outcome: str, duration_s: float) -> None:
        if self.telemetry is not None:
            self.telemetry.record_tick_failure(outcome, duration_s)
        self.stats.tick_errors += 1
        self.stats.last_error = message
        log.error("tick_error error=%r", message)

    async def recover(self) -> None:
        """Finish or roll back actions a crash left half done (pending journal entries).

        Launches resolve themselves on the next observation (the node id tag tells
        whether the cloud has the instance; a launch never listed fails after a grace
        time and is terminated if it appears later). Terminations are re-issued, since
        terminating twice is safe. Drains continue from DRAINING.

        Raises `StateDamaged` (one line) when the store cannot be read or written.
        """
        try:
            await self._recover()
        except sqlite3.DatabaseError as exc:  # "database disk image is malformed" and kin
            raise StateDamaged(f"{self.store.path}: cannot recover: {exc}") from exc

    async def _recover(self) -> None:
        now = self.clock()
        if self.advance is not None:
            await self.advance(now)
        for entry in self.store.journal("pending"):
            node = self.store.node(entry.node_id)
            if (
                entry.kind == "terminate"
                and node is not None
                and node.state not in (NodeState.GONE, NodeState.FAILED)
            ):
                try:
                    await self.reconciler.provider.terminate(node.node_id)
                except Exception as exc:  # retried on the next tick via the drain path
                    log.warning("recover_terminate_failed node_id=%s error=%s", node.node_id, exc)
                    continue
                if node.state is not NodeState.TERMINATING:
                    self.store.transition(
                        node.node_id, NodeState.TERMINATING, now, "recovered after restart"
                    )
            detail = f"recovered after restart; node {node.state if node else 'unknown'}"
            self.store.journal_end(entry.id, "done", now, detail)
            log.info("recovered kind=%s node_id=%s", entry.kind, entry.node_id)

    # -- Control ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What the daemon is doing, for the API and the TUI."""
        report = self.stats.last_report
        pending = self.reconciler.approval.pending
        return {
            "approval_mode": self.config.daemon.approval_mode,
            "dry_run": self.config.daemon.dry_run,
            "paused": self.paused,
            "now_s": self.clock(),
            "last_tick_s": self.stats.last_tick_s,
            "ticks": self.stats.ticks,
            "tick_errors": self.stats.tick_errors,
            "last_error": self.stats.last_error,
            "state_db_problem": self.stats.state_db_problem,
            "config_generation": self.stats.config_generation,
            "reload_failures": self.stats.reload_failures,
            "pending_plan_id": pending[0] if pending else None,
            "last_plan_status": report.plan.status.value if report and report.plan else None,
            "last_plan_usd_per_hour": report.plan.usd_per_hour if report and report.plan else None,
            "held_back": [h.to_json() for h in report.held_back] if report else [],
            "errors": [e.to_json() for e in report.errors] if report else [],
            "uptime_s": time.time() - self.stats.started_wall_s,
        }

    def forecast(self) -> dict[str, Any]:
        """Planned demand per series from the capsched policy, when it is the policy."""
        decision = self.stats.last_decision
        planned = decision.planned_rps if decision is not None else {}
        return {
            "series": [
                {"model": m, "region": r, "planned_rps": v} for (m, r), v in sorted(planned.items())
            ]
        }

    async def approve(self, plan_id: int) -> bool:
        """Approve the pending plan and act on it at once."""
        ok = self.reconciler.approve(plan_id)
        if ok:
            self._wake.set()
        return ok

    async def reject(self, plan_id: int) -> bool:
        """Reject the pending plan."""
        return self.reconciler.reject(plan_id)

    async def drain(self, node_id: str) -> bool:
        """Drain one ready node now (the plan replaces it if it still wants the capacity).

        The state is checked under the tick lock: of several drains of one node waiting
        for a tick to end, only the first finds it ready; the others get False."""
        async with self._tick_lock:
            node = self.store.node(node_id)
            if node is None or node.state is not NodeState.READY:
                return False
            result = await self.reconciler.actuator.execute(
                [Drain(node_id, reason="manual drain")], self.clock()
            )
        self._wake.set()
        return not result.failed

    async def pause(self) -> None:
        """Observe and plan, but take no action."""
        self.paused = True
        self._record_control()
        log.info("daemon_paused")

    async def resume(self) -> None:
        """Act again, starting now."""
        self.paused = False
        self._record_control()
        self._wake.set()
        log.info("daemon_resumed")

    def _reload_refused(self, problems: list[str]) -> list[str]:
        """Count and log a refused reload; the running config stays."""
        self.stats.reload_failures += 1
        if self.telemetry is not None:
            self.telemetry.record_reload(ok=False)
        for line in problems:
            log.error("config_reload_refused problem=%r", line)
        sd_notify("READY=1\nSTATUS=config reload refused; running the previous config")
        return problems

    async def hangup(self) -> None:
        """SIGHUP: check the state database, then reload the config.

        A damaged database pauses the daemon (it observes and plans, takes no action) and
        logs an ERROR: acting on a journal that may have lost entries could launch twice
        or leak a node, while stopping would take the API and metrics with it and a
        restart would refuse the database anyway. The fleet stays as it is until someone
        restores a backup (docs/state.md) or resumes on purpose.
        """
        problems = await asyncio.to_thread(check_integrity, self.store.path)
        if problems:
            self.stats.state_db_problem = "; ".join(problems)
            if not self.paused:
                await self.pause()
            log.error(
                "state_db_damaged path=%s problem=%r action=paused restore=docs/state.md",
                self.store.path,
                self.stats.state_db_problem,
            )
            sd_notify("STATUS=state database damaged: paused; restore the last backup")
        else:
            self.stats.state_db_problem = ""
        await self.reload()

    async def reload(self) -> list[str]:
        """Re-read the config file; keep the running config when the new one is invalid."""
        if self.config_path is None:
            return ["running on the embedded default config; nothing to reload"]
        sd_notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            return self._reload_refused(exc.problems)
        # What start refuses, a reload refuses (names the catalog or profiles do not know).
        problems = check_config(new, self.reconciler.catalog, self.reconciler.profiles)
        if problems:
            return self._reload_refused([f"{self.config_path}: {p}" for p in problems])
        self.config = new
        self.reconciler.reconfigure(new)
        self._record_config()
        self.stats.config_generation += 1
        if self.telemetry is not None:
            self.telemetry.record_reload(ok=True)
            self.telemetry.configure(
                tick_interval_s=new.scheduler.tick_interval_s,
                budget_usd_per_hour=new.planning.budget_usd_per_hour,
            )
        sd_notify("READY=1\nSTATUS=config reloaded")
        log.info(
            "config_reloaded generation=%d path=%s", self.stats.config_generation, self.config_path
        )
        self._wake.set()
        return []
