"""One tick of the control loop: observe, decide, act.

`Reconciler.tick(now_s)` is the whole loop body, shared by the daemon (wall-clock
`now_s`, every `tick_interval_s` and at once on an interruption notice) and the
simulator (virtual `now_s`). Every outside fact enters through `observe`; `decide`
returns a typed `Decision` (scheduler.decide.decision) and changes no state but the
policy's own, once per tick; `act` goes through the journaled actuator and returns
one `ActionOutcome` per action. Approval and pool cooldown are explicit state
objects (scheduler.decide.approval, scheduler.decide.cooldown) that only `tick` updates; node health
(scheduler.decide.health) is checked in `observe` and, between ticks, by `check_health`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from scheduler.config import Config
from scheduler.decide.approval import ApprovalState, Verdict, needs_approval
from scheduler.decide.cooldown import PoolCooldown
from scheduler.decide.decision import ActionOutcome, Approval, Decision, ErrorKind, TickError
from scheduler.decide.diff import propose
from scheduler.decide.guards import Held, WaitingDrains, apply_guards
from scheduler.decide.health import (
    CHECKED,
    HealthMonitor,
    HealthProbe,
    HealthVerdict,
    judge,
    unhealthy_drains,
)
from scheduler.decide.observation import Observation, Policy
from scheduler.decide.obtainability import Obtainability, PoolEvent
from scheduler.domain import (
    CapacityProfile,
    Demand,
    HoldKind,
    Market,
    Node,
    NodeState,
    Plan,
    Pool,
    RequestSize,
    prices_of,
)
from scheduler.domain.actions import Action, Drain, Grounds, Launch, Terminate
from scheduler.domain.lifecycle import IllegalTransition
from scheduler.fleet.boot import node_boot_s
from scheduler.fleet.capacity import node_rps
from scheduler.fleet.catalog import Catalog
from scheduler.loop.actuator import Actuator
from scheduler.loop.logs import event, held_events
from scheduler.loop.store import DemandRecord, StateStore
from scheduler.ports.drain import Drainer
from scheduler.ports.metrics import (
    DemandHistorySource,
    DemandSample,
    MetricsSource,
    NodeSignals,
    NodeSignalSource,
    SignalQuery,
)
from scheduler.ports.provider import (
    Instance,
    InstanceState,
    InterruptionNotice,
    Provider,
    ProviderError,
)

log = logging.getLogger(__name__)

# A launch the cloud has not listed after this long never happened (eventual consistency
# covers seconds to a couple of minutes on the clouds we drive).
LAUNCH_GRACE_S = 600.0

_FROM_CLOUD = {
    InstanceState.PENDING: NodeState.BOOTING,
    InstanceState.RUNNING: NodeState.READY,
}


@dataclass(frozen=True, slots=True)
class FleetSummary:
    """The fleet and the load a tick saw, against its plan: the numbers of its log line."""

    nodes: int  # live nodes observed (requested to terminating: all billed)
    usd_per_hour: float  # their price now
    planned_nodes: int  # nodes the plan wants
    planned_usd_per_hour: float  # the plan's price
    demand_rps: float  # load observed now, summed over the series that reported
    planned_rps: float  # load the plan provisions for (NaN when the policy does not say)


@dataclass(frozen=True, slots=True)
class TickReport:
    """What one tick saw, decided and did."""

    now_s: float  # time of the tick
    plan: Plan | None  # the policy's target fleet; None when observing failed
    actions: tuple[Action, ...]  # actions attempted
    held_back: tuple[Held, ...]  # what the guards and limits held back, and why
    errors: tuple[TickError, ...]  # failures (the tick still completed, or was skipped)
    demand_complete: bool  # whether the load signal was whole
    fleet: FleetSummary | None = None  # fleet and load against the plan; None without a plan
    outcomes: tuple[ActionOutcome, ...] = ()  # what became of each of `actions`, in order
    decision: Decision | None = None  # the tick's (last) decision; None when observing failed


WARM_START_S = 8 * 86400.0  # demand history a restarted policy learns from, at most
# A first start's wait for the metrics source's history (`backfill`), before systemd's start
# timeout (90 s) and its watchdog (60 s) run out; past it the daemon starts cold.
BACKFILL_TIMEOUT_S = 30.0
WARM_START_SERIES_TICKS = 1_000_000  # and at most this many series x ticks (~30 s at 1,000 series)


class Reconciler:
    """Drives the fleet toward the policy's plan, one guarded step per tick."""

    def __init__(
        self,
        *,
        config: Config,
        catalog: Catalog,
        profiles: tuple[CapacityProfile, ...],
        provider: Provider,
        metrics: MetricsSource,
        policy: Policy,
        store: StateStore,
        drainer: Drainer,
        actuator: Actuator,
        health_probe: HealthProbe | None = None,
        node_signals: NodeSignalSource | None = None,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.profiles = profiles
        self.provider = provider
        self.metrics = metrics
        self.policy = policy
        self.store = store
        self.drainer = drainer
        self.actuator = actuator
        self.notices: dict[str, InterruptionNotice] = {}  # pending reclaim notices by node id
        # Drains the last tick's make before break held, for the fast check to release.
        self._waiting = WaitingDrains()
        # Pools refused recently or quarantined stay out of plans; kept in the store.
        self.cooldown = PoolCooldown(store.pool_cooldown())
        self._cooling = self.cooldown.snapshot()  # the cooldown as last saved
        self.approval = ApprovalState()  # the plan the fleet follows, and one waiting
        # Where capacity is: refusals and interruptions per pool, decayed; kept in the store.
        self.obtainability = Obtainability(store.obtainability())
        self._rps: dict[tuple[str, Pool, RequestSize | None], float] = {}  # capacity cache
        self._boot: dict[tuple[str, Pool], float] = {}  # boot-time cache (boot_s)
        # Listed nodes we had given up on (or failed for never becoming healthy), to
        # terminate this tick, with why.
        self._orphans: dict[str, str] = {}
        self.health_probe = health_probe  # asks nodes whether they serve ([health])
        # Per-node GPU and server signals ([health] gpu_signals / ready_metric).
        self.node_signals = node_signals
        self._signals: dict[str, NodeSignals] = {}  # the last reading, by node id
        # Streaks and the replacement window, kept in the store; counts per pool since start.
        self.health = HealthMonitor(store.health_streaks(), store.health_replacements())
        self._verdict = HealthVerdict()  # the last health pass's verdict
        # Nodes failed for never becoming healthy, until the cloud no longer lists them:
        # terminated as orphans, which is expected and not a tick error. From the store
        # (booting -> failed is only ever a missed boot deadline), so a restart between
        # the failure and the cloud's last listing of the node is no error either;
        # `_merge` keeps only the ones still listed.
        self._boot_failed: dict[str, str] = dict.fromkeys(
            store.node_ids_moved(NodeState.BOOTING, NodeState.FAILED),
            "never became healthy (before a restart)",
        )
        self.actuator.ready_when_running = config.health_checks is None
        self._prices: dict[Pool, float] = {}  # list prices, for the approval threshold

    def reconfigure(self, config: Config) -> None:
        """Switch to a new config (already checked, see `check_config`) from the next tick
        on, for the policy too."""
        self.config = config
        self._rps.clear()
        self._boot.clear()
        self.policy.reconfigure(config)
        self.actuator.ready_when_running = config.health_checks is None

    # -- observe ----------------------------------------------------------------------------

    async def observe(self, now_s: float) -> tuple[Observation, list[TickError]]:
        """Read the cloud and the load, and bring the store's nodes in line with the cloud."""
        errors: list[TickError] = []
        instances = await self.provider.list_instances()
        for notice in await self.provider.interruption_notices():
            self.notices[notice.node_id] = notice
        offerings = await self.provider.offerings()
        demand: DemandSample
        try:
            sample: object = await self.metrics.demand(now_s)
            if not isinstance(sample, DemandSample):
                raise TypeError(f"returned {type(sample).__name__}, not a DemandSample")
            demand = sample.cleaned()  # garbage readings become missing, never zero
        except Exception as exc:  # a broken load signal must not stop reconciliation
            errors.append(TickError(ErrorKind.METRICS, f"metrics: {type(exc).__name__}: {exc}"))
            demand = DemandSample(now_s)
        errors.extend(self._merge(instances, now_s))
        errors.extend(await self._check_health(now_s))
        expected = {(m.name, r.name) for m in self.config.models for r in self.config.regions}
        live = {n.node_id for n in self.store.live_nodes()}
        self.notices = {k: v for k, v in self.notices.items() if k in live}
        obs = Observation(
            now_s=now_s,
            demand=demand,
            demand_complete=demand.complete(expected),
            nodes=tuple(self.store.live_nodes()),
            offerings=tuple(self.obtainability.apply(self.cooldown.apply(offerings, now_s), now_s)),
            notices=tuple(self.notices.values()),
        )
        return obs, errors

    async def refresh_nodes(self, now_s: float) -> list[TickError]:
        """Bring the store's nodes in line with the cloud's listing, and nothing else (no
        notices, prices, load or health probes: `observe` reads those). What a check
        between ticks needs to learn which booting nodes serve now."""
        return self._merge(await self.provider.list_instances(), now_s)

    def _learn(self, pool: Pool, event: PoolEvent, now_s: float) -> None:
        """Count `event` in the pool's obtainability estimate and persist the estimate."""
        self.obtainability.record(pool, event, now_s)
        self.store.save_obtainability(self.obtainability.current(now_s))

    def _save_cooldown(self) -> None:
        """Persist the pool cooldown if it changed since it was last saved (a restarted
        daemon keeps a quarantined or refusing pool out, and its strikes)."""
        now = self.cooldown.snapshot()
        if now != self._cooling:
            self.store.save_pool_cooldown(now)
            self._cooling = now

    def cool(self, pool: Pool, now_s: float) -> None:
        """Keep `pool` out of plans after it refused a launch made outside a tick (the
        fast loop, scheduler.loop.fast_loop): the same cooldown a tick's refusal gets."""
        self.cooldown.refused(pool, now_s, self.config.guards.pool_cooldown_s)
        self._save_cooldown()
        self._learn(pool, PoolEvent.REFUSED, now_s)

    async def check_health(self, now_s: float) -> HealthVerdict:
        """Between ticks (the daemon and the replay engine, every `[health].interval_s`):
        check the nodes that are due and apply the verdict. Returns it (its `wakes` says
        a tick should replace lost capacity now); an empty verdict without `[health]`."""
        await self._check_health(now_s)
        return self._verdict

    async def _check_health(self, now_s: float) -> list[TickError]:
        """Probe the checked nodes that are due, then apply `health.judge`'s verdict to
        each node alone (a bad node never blocks the rest)."""
        self._verdict = HealthVerdict()
        settings = self.config.health_checks
        if settings is None or self.health_probe is None:
            self.health.held_now = ()
            return []
        errors: list[TickError] = []
        nodes = [n for n in self.store.live_nodes() if n.state in CHECKED]
        self.health.forget_except(n.node_id for n in nodes)
        due = [n for n in nodes if self.health.due(n.node_id, now_s, settings.interval_s)]
        probe = self.health_probe
        answers = await asyncio.gather(*(probe.check(n) for n in due), return_exceptions=True)
        for node, answer in zip(due, answers, strict=True):
            if isinstance(answer, BaseException):
                # A probe that raised (not a failed check: that is False) says nothing.
                log.warning("health_check_error node_id=%s error=%r", node.node_id, answer)
                continue
            if answer is not None:
                self.health.record(node.node_id, answer, now_s)
        if due:
            self._signals = await self._read_signals(nodes, now_s)
        verdict = judge(
            nodes,
            self.health.streaks,
            settings,
            now_s,
            boot_s=self.boot_s,
            recent_replacements=self.health.recent_replacements(
                now_s, settings.replacement_window_s
            ),
            signals=self._signals,
        )
        self._verdict = verdict
        if verdict.held != self.health.held_now:  # said once per change, not every check
            for held in verdict.held:
                event(log, logging.WARNING, "health_repairs_held", nodes=held.nodes,
                      reason=held.text)  # fmt: skip
        self.health.held_now = verdict.held
        t = self.store.transition
        faults = dict(verdict.faults)
        sick = f"failed {settings.failure_threshold} health checks in a row: replacing it"
        moves: list[tuple[Node, NodeState, str]] = [
            *((n, NodeState.READY, "health check passed: serving") for n in verdict.ready),
            *(
                (n, NodeState.FAILED, f"not healthy {self.boot_s(n) + settings.boot_margin_s:.0f}"
                 " s after it started booting")
                for n in verdict.boot_failed
            ),
            *(
                (n, NodeState.UNHEALTHY, faults[n.node_id].text(settings.signal_window_s)
                 if n.node_id in faults else sick)
                for n in verdict.unhealthy
            ),
            *((n, NodeState.READY, "health checks pass again") for n in verdict.recovered),
        ]  # fmt: skip
        for node, new, cause in moves:
            try:
                t(node.node_id, new, now_s, cause)
            except (IllegalTransition, KeyError) as exc:
                errors.append(
                    TickError(
                        ErrorKind.NODE, f"node {node.node_id}: {exc}", node.node_id, node.pool
                    )
                )
                continue
            if new is NodeState.READY and node.state is NodeState.BOOTING:
                self.cooldown.cleared(node.pool, node.launched_at_s)
            elif new is NodeState.FAILED:
                self.health.boot_failures[node.pool] += 1
                self._boot_failed[node.node_id] = cause
                self._orphans.setdefault(node.node_id, cause)
                self._strike(node.pool, now_s, launched_at_s=node.launched_at_s)
            elif new is NodeState.UNHEALTHY:
                self.health.replacements[node.pool] += 1
                self.health.replaced_at_s.append(now_s)
                ready_for_s = now_s - (node.state_since_s or now_s)
                if ready_for_s < settings.quarantine_window_s:
                    # Sick soon after it came up: the pool (its image, its hosts) is
                    # suspect. A node that served for long and then fell ill is bad luck.
                    self._strike(node.pool, now_s)
            event(
                log,
                logging.WARNING if new in (NodeState.FAILED, NodeState.UNHEALTHY) else logging.INFO,
                "node_health",
                node_id=node.node_id,
                model=node.model,
                pool=node.pool.key,
                state=new.value,
                reason=cause,
            )
        # Kept in the store: a restarted daemon continues each node's streak, the
        # replacement window and the pools' strikes and quarantines.
        self.store.save_health(self.health.streaks, self.health.replaced_at_s)
        self._save_cooldown()
        return errors

    async def _read_signals(self, nodes: Sequence[Node], now_s: float) -> dict[str, NodeSignals]:
        """The metrics source's per-node signals, when `[health]` reads them (gpu_signals
        or a ready_metric); empty otherwise, or when the read failed (logged: a broken
        signal replaces nobody, and the health checks go on)."""
        settings = self.config.health_checks
        source = self.node_signals
        if settings is None or source is None:
            return {}
        if not (settings.gpu_signals or settings.ready_metric):
            return {}
        query = SignalQuery(
            settings.node_label,
            settings.node_label_value,
            settings.signal_window_s,
            settings.ready_metric,
        )
        try:
            return dict(await source.node_signals(now_s, nodes, query))
        except Exception as exc:  # a broken signal must not stop the health checks
            log.warning("node_signals_failed now_s=%.0f error=%r", now_s, exc)
            return {}

    def _strike(self, pool: Pool, now_s: float, *, launched_at_s: float | None = None) -> None:
        """A node of `pool` failed to boot (launched at `launched_at_s`) or turned sick:
        count it toward a quarantine."""
        settings = self.config.health_checks
        assert settings is not None
        self.cooldown.strike(
            pool,
            now_s,
            needed=settings.quarantine_strikes,
            window_s=settings.quarantine_window_s,
            base_s=self.config.guards.pool_cooldown_s,
            launched_at_s=launched_at_s,
        )

    def _merge(self, instances: list[Instance], now_s: float) -> list[TickError]:
        """Apply what the cloud says to each node alone; a bad node never blocks the rest."""
        errors: list[TickError] = []
        listed = {i.node_id: i for i in instances}
        for node in self.store.live_nodes():
            try:
                self._merge_node(node, listed.get(node.node_id), now_s)
            except (IllegalTransition, KeyError) as exc:
                errors.append(
                    TickError(
                        ErrorKind.NODE, f"node {node.node_id}: {exc}", node.node_id, node.pool
                    )
                )
                log.warning("node_merge_failed node_id=%s error=%s", node.node_id, exc)
        known = {n.node_id for n in self.store.live_nodes()}
        self._boot_failed = {
            k: v
            for k, v in self._boot_failed.items()
            if k in listed and listed[k].state not in (InstanceState.TERMINATED,
                                                       InstanceState.PREEMPTED)
        }  # fmt: skip
        ended = [
            node_id
            for node_id, inst in listed.items()
            if node_id not in known
            and inst.state in (InstanceState.TERMINATED, InstanceState.PREEMPTED)
        ]
        if ended:
            # Ids the cloud has used are never handed out again, even ones this database
            # never recorded (it was restored from a backup): see StateStore.next_node_id.
            self.store.note_node_ids(ended)
        for node_id, inst in listed.items():
            if node_id in known or inst.state in (
                InstanceState.TERMINATED,
                InstanceState.PREEMPTED,
            ):
                continue
            existing = self.store.node(node_id)
            if node_id in self._boot_failed:
                self._orphans.setdefault(node_id, self._boot_failed[node_id])
            elif existing is None:
                # Tagged as ours but unknown (e.g. launched before a crash wiped nothing but
                # the journal's end): adopt it, the plan decides whether it stays.
                state = _FROM_CLOUD.get(inst.state, NodeState.BOOTING)
                if self.config.health_checks is not None:
                    state = NodeState.BOOTING  # ready once its health check passes
                adopted = Node(
                    node_id,
                    inst.model,
                    inst.pool,
                    state,
                    inst.cloud_instance_id,
                    inst.launched_at_s,
                    address=inst.address,
                )
                self.store.add_node(
                    adopted, now_s, cause="adopted: tagged as ours, not in the store"
                )
            else:
                # We gave up on it (failed/gone) but it exists: terminate, never leak.
                errors.append(
                    TickError(
                        ErrorKind.NODE,
                        f"node {node_id}: listed but {existing.state}; terminating",
                        node_id,
                        existing.pool,
                    )
                )
                self._orphans.setdefault(node_id, "listed after we gave up on it")
        return errors

    def _merge_node(self, node: Node, inst: Instance | None, now_s: float) -> None:
        t = self.store.transition
        if inst is None or inst.state is InstanceState.TERMINATED:
            if (
                node.state is NodeState.REQUESTED
                and now_s - (node.launched_at_s or now_s) < LAUNCH_GRACE_S
            ):
                return  # not listed yet: eventual consistency
            if node.state is NodeState.REQUESTED:
                t(node.node_id, NodeState.FAILED, now_s, "launch never appeared")
            else:
                t(node.node_id, NodeState.GONE, now_s, "observed gone")
            return
        if inst.address and inst.address != node.address:
            # Kept while the node lives (a listing without one never erases it): the
            # HTTP drainer reaches the node there, also after a restart.
            self.store.set_address(node.node_id, inst.address)
        if inst.state is InstanceState.PREEMPTED:
            if node.state is not NodeState.INTERRUPTED and node.state is not NodeState.TERMINATING:
                t(node.node_id, NodeState.INTERRUPTED, now_s, "reclaimed by the cloud")
                self._learn(node.pool, PoolEvent.PREEMPTED, now_s)
            t(node.node_id, NodeState.GONE, now_s, "reclaimed by the cloud")
            return
        if node.node_id in self.notices and node.state in (
            NodeState.BOOTING,
            NodeState.READY,
            NodeState.UNHEALTHY,
            NodeState.DRAINING,
        ):
            deadline = self.notices[node.node_id].deadline_s
            t(
                node.node_id,
                NodeState.INTERRUPTED,
                now_s,
                f"interruption notice, reclaimed at {deadline:.0f}",
            )
            self._learn(node.pool, PoolEvent.PREEMPTED, now_s)
            return
        wanted = _FROM_CLOUD.get(inst.state)
        if wanted is NodeState.READY and self.config.health_checks is not None:
            wanted = NodeState.BOOTING  # running is not serving: the health check decides
        if wanted is NodeState.BOOTING and node.state is NodeState.REQUESTED:
            t(
                node.node_id,
                NodeState.BOOTING,
                now_s,
                "cloud lists it pending",
                cloud_instance_id=inst.cloud_instance_id,
            )
        elif wanted is NodeState.READY and node.state in (NodeState.REQUESTED, NodeState.BOOTING):
            t(
                node.node_id,
                NodeState.READY,
                now_s,
                "serving",
                cloud_instance_id=inst.cloud_instance_id,
            )

    # -- decide -----------------------------------------------------------------------------

    def capacity_of(self, model: str, pool: Pool, size: RequestSize | None = None) -> float:
        """Sustainable rps of one node of `model` in `pool` at the model's SLO, for
        requests of `size` (None: the reference request)."""
        key = (model, pool, size)
        if key not in self._rps:
            if len(self._rps) > 100_000:  # sizes change every reading: keep it bounded
                self._rps.clear()
            itype = self.catalog.instance_type(pool)
            self._rps[key] = node_rps(self.config, self.profiles, model, itype, size=size)
        return self._rps[key]

    def boot_s(self, node: Node) -> float:
        """Launch-to-serving estimate of `node` (scheduler.fleet.boot.node_boot_s of its model
        and instance type; `planning.default_boot_time_s` for a model the config no longer
        has or a pool the catalog does not know): its boot deadline is this plus
        `[health].boot_margin_s`."""
        key = (node.model, node.pool)
        if key not in self._boot:
            try:
                itype = self.catalog.instance_type(node.pool)
                self._boot[key] = node_boot_s(self.config, node.model, itype)
            except KeyError:
                self._boot[key] = self.config.planning.default_boot_time_s
        return self._boot[key]

    def warm_start(self) -> int:
        """Let the policy learn from the demand the store recorded before this process
        started (`Policy.warm_start`), so a restart does not forecast from a cold start,
        and take up the forecast band it had learnt (`Policy.restore_band`). Returns the
        ticks learnt from."""
        history = self.store.demand_samples(span_s=WARM_START_S, max_ticks=self._warm_ticks())
        fed = self.policy.warm_start(history)
        if history:
            log.info(
                "warm_start ticks=%d recorded=%d since_s=%.0f", fed, len(history), history[0].at_s
            )
        band = self.store.band_memory(self.policy.name)
        if band is not None:
            self.policy.restore_band(band)
            learnt = " ".join(f"{m}={v:.3f}" for m, v in sorted(self.policy.band_scales().items()))
            log.info("band_restored policy=%s %s", self.policy.name, learnt)
        return fed

    def _warm_ticks(self) -> int:
        """Ticks of history a start learns from at most (`warm_start`, `backfill`): as
        many series-ticks as a start-up can replay within systemd's start timeout; the
        span is a week and a day (the weekly season once), `WARM_START_S`."""
        n_series = max(1, len(self.config.models) * len(self.config.regions))
        return max(1, WARM_START_SERIES_TICKS // n_series)

    async def backfill(self, now_s: float) -> int:
        """Let the policy learn from the metrics source's own history (`DemandHistorySource`,
        Prometheus' `history_s`, at the tick interval, at most what `warm_start` would read
        from the store), for a daemon whose store holds no demand yet (a first start): its
        forecast then starts from the load the servers already saw, not cold. Samples at or
        after `now_s` are left to the ticks. Waits at most `BACKFILL_TIMEOUT_S`. Logged as
        `backfill`; returns the ticks learnt from (0: a source without history, a failure,
        a timeout, or none kept)."""
        if not isinstance(self.metrics, DemandHistorySource):
            return 0
        tick_s = self.config.scheduler.tick_interval_s
        # As much as a restart reads from the store (`warm_start`), at most.
        span_s = min(WARM_START_S, self._warm_ticks() * tick_s)
        try:
            samples = await asyncio.wait_for(
                self.metrics.history(now_s - tick_s, tick_s, span_s), BACKFILL_TIMEOUT_S
            )
        except TimeoutError:
            log.warning("backfill_timed_out timeout_s=%g (starting cold)", BACKFILL_TIMEOUT_S)
            return 0
        history = [s for s in samples if s.at_s < now_s]
        fed = self.policy.warm_start(history)
        log.info(
            "backfill ticks=%d samples=%d since_s=%.0f",
            fed,
            len(history),
            history[0].at_s if history else now_s,
        )
        return fed

    def decide(self, obs: Observation, *, revise: bool = False) -> Decision:
        """The one decision step: the policy's plan, approval's verdict on it and the
        guarded actions toward the plan the fleet follows. Changes no reconciler state
        (`tick` applies the verdict; the one write is the store's node-id sequence, which
        gives each launch its id); the policy's state changes once per tick, as
        `revise` (a newer observation of the same tick, after a pool refused a launch)
        replaces the tick's first decision. A revised plan acts at once: it replaces a
        plan that needed no approval."""
        plan = self.policy.revise(obs) if revise else self.policy.decide(obs)
        quarantined = self.cooldown.quarantine_notes(obs.now_s)
        if quarantined:
            plan = dataclasses.replace(plan, notes=(*plan.notes, *quarantined))
        if self.config.daemon.dry_run and not revise:
            return self.planned_only(plan, Approval.DRY_RUN, ())
        if revise:
            verdict = Verdict(Approval.AUTO, plan, ask=False)
        else:
            needed = needs_approval(obs, plan, self.config.daemon, self._price)
            verdict = self.approval.verdict(plan, needed)
        waiting = WaitingDrains()
        if verdict.target is None:
            actions: tuple[Action, ...] = ()
            held: tuple[Held, ...] = (
                Held(HoldKind.APPROVAL, 0, "waiting for a plan to be approved"),
            )
        else:
            actions, held, waiting = self.toward(obs, verdict.target)
        return Decision(
            plan=plan,
            planned_rps=dict(self.policy.planned_rps()),
            quantiles={k: dict(v) for k, v in self.policy.forecast_quantiles().items()},
            band_scales=dict(self.policy.band_scales()),
            actions=actions,
            held_back=held,
            approval=verdict.approval,
            target=verdict.target,
            ask_approval=verdict.ask,
            waiting=waiting,
        )

    def planned_only(self, plan: Plan, approval: Approval, held: tuple[Held, ...]) -> Decision:
        """A decision that plans and does not act (dry run, paused daemon)."""
        return Decision(
            plan=plan,
            planned_rps=dict(self.policy.planned_rps()),
            quantiles={k: dict(v) for k, v in self.policy.forecast_quantiles().items()},
            band_scales=dict(self.policy.band_scales()),
            actions=(),
            held_back=held,
            approval=approval,
            target=None,
        )

    def toward(
        self, obs: Observation, target: Plan
    ) -> tuple[tuple[Action, ...], tuple[Held, ...], WaitingDrains]:
        """Guarded actions that move the observed fleet toward `target`, what was held
        back, and the drains make before break held (`WaitingDrains`)."""
        guarded = apply_guards(
            obs,
            target,
            propose(obs, target),
            self.config,
            self.capacity_of,
            self.store.next_node_id,
            self._price,
            self.catalog.instance_types,
        )
        actions = (*guarded.actions, *self._unhealthy_drains(obs, target))
        return self._grounded(obs, target, actions), guarded.held_back, guarded.waiting

    def _unhealthy_drains(self, obs: Observation, target: Plan) -> tuple[Action, ...]:
        """Drains of the unhealthy nodes whose replacements serve (make before break), or
        that waited a whole boot deadline for them."""
        settings = self.config.health_checks
        if settings is None:
            return ()
        wanted: dict[str, float] = {}
        for pl in target.placements:
            wanted[pl.model] = wanted.get(pl.model, 0.0) + pl.count * self.capacity_of(
                pl.model, pl.pool
            )

        def give_up_s(node: Node) -> float:
            return self.boot_s(node) + settings.boot_margin_s

        out: list[Action] = []
        for node in unhealthy_drains(
            obs.nodes, obs.serving(), wanted, self.capacity_of, obs.now_s, give_up_s
        ):
            waited = obs.now_s - (node.state_since_s or obs.now_s)
            why = (
                f"unhealthy for {waited:.0f} s, no replacement serving"
                if waited >= give_up_s(node)
                else "unhealthy, and its replacement serves"
            )
            out.append(Drain(node.node_id, reason=why))
        return tuple(out)

    def _grounded(
        self, obs: Observation, target: Plan, actions: tuple[Action, ...]
    ) -> tuple[Action, ...]:
        """`actions` carrying the plan's numbers behind each (for their log lines)."""
        if not actions:
            return actions
        planned: dict[str, float] = {}
        for d in target.demand:
            planned[d.model] = planned.get(d.model, 0.0) + d.rps
        planned_capacity: dict[str, float] = {}
        pool_planned: dict[tuple[str, Pool], int] = {}
        for pl in target.placements:
            rps = pl.count * self.capacity_of(pl.model, pl.pool)
            planned_capacity[pl.model] = planned_capacity.get(pl.model, 0.0) + rps
            pool_planned[pl.model, pl.pool] = pl.count
        capacity: dict[str, float] = {}
        pool_nodes: dict[tuple[str, Pool], int] = {}
        for n in obs.serving():
            capacity[n.model] = capacity.get(n.model, 0.0) + self.capacity_of(n.model, n.pool)
            pool_nodes[n.model, n.pool] = pool_nodes.get((n.model, n.pool), 0) + 1
        nodes = {n.node_id: n for n in obs.nodes}
        out: list[Action] = []
        for action in actions:
            if isinstance(action, Launch):
                where: tuple[str, Pool] | None = (action.model, action.pool)
            else:
                node = nodes.get(action.node_id)
                where = (node.model, node.pool) if node is not None else None
            if where is None:
                out.append(action)
                continue
            model = where[0]
            grounds = Grounds(
                model=model,
                planned_rps=planned.get(model, math.nan) if target.demand else math.nan,
                capacity_rps=capacity.get(model, 0.0),
                planned_capacity_rps=planned_capacity.get(model, 0.0),
                pool_nodes=pool_nodes.get(where, 0),
                pool_planned=pool_planned.get(where, 0),
            )
            out.append(dataclasses.replace(action, grounds=grounds))
        return tuple(out)

    def _summary(self, obs: Observation, plan: Plan) -> FleetSummary:
        """The tick line's numbers: the observed fleet and load against `plan`."""
        prices = prices_of(obs.offerings)
        return FleetSummary(
            nodes=len(obs.nodes),
            usd_per_hour=sum(prices.get(n.pool, self._price(n.pool)) for n in obs.nodes),
            planned_nodes=sum(pl.count for pl in plan.placements),
            planned_usd_per_hour=plan.usd_per_hour,
            demand_rps=sum(v for v in obs.demand.rps.values() if math.isfinite(v)),
            planned_rps=sum(d.rps for d in plan.demand) if plan.demand else math.nan,
        )

    def _price(self, pool: Pool) -> float:
        if not self._prices:
            self._prices = prices_of(self.catalog.offerings)
        return self._prices.get(pool, 0.0)

    def approve(self, plan_id: int) -> bool:
        """Let the pending plan `plan_id` act (from the next tick on)."""
        if not self.approval.approve(plan_id):
            return False
        self.store.set_plan_approval(plan_id, Approval.APPROVED)
        return True

    def reject(self, plan_id: int) -> bool:
        """Drop the pending plan `plan_id`; the fleet keeps following the approved one."""
        if not self.approval.reject(plan_id):
            return False
        self.store.set_plan_approval(plan_id, "rejected")
        return True

    def _record_demand(self, obs: Observation, decision: Decision) -> None:
        """Keep what the tick saw and planned per series (the TUI and reports read it)."""
        planned, quantiles = decision.planned_rps, decision.quantiles
        planned_sizes = _planned_sizes(decision.plan.demand)
        nan = float("nan")
        rows = [
            DemandRecord(
                m.name,
                r.name,
                obs.demand.rps.get((m.name, r.name), nan),
                obs.demand.peak_rps.get((m.name, r.name), nan),
                planned.get((m.name, r.name), nan),
                dict(quantiles.get((m.name, r.name), {})),
                size=_observed_size(obs.demand, (m.name, r.name)),
                planned_size=planned_sizes.get((m.name, r.name)),
                buckets=tuple(obs.demand.buckets.get((m.name, r.name), ())),
            )
            for m in self.config.models
            for r in self.config.regions
        ]
        self.store.record_demand(obs.now_s, rows)
        self._record_band(obs.now_s)

    def _record_band(self, now_s: float) -> None:
        """Keep what the policy's forecast band has learnt, for a restart (`warm_start`)."""
        band = self.policy.band_memory()
        if band is not None:
            self.store.record_band_memory(self.policy.name, now_s, band)

    # -- act --------------------------------------------------------------------------------

    @property
    def waiting_drains(self) -> WaitingDrains:
        """The drains the last tick's make before break held and that still wait."""
        return self._waiting

    def waiting_due(self, now_s: float) -> bool:
        """Whether a drain waits on replacements the store still holds as requested or
        booting past their boot estimate (`boot_s`): the cloud may have them serving,
        which the store learns from the cloud's listing (`refresh_nodes`)."""
        if not self._waiting.node_ids:
            return False
        live = self.store.live_nodes()
        waiting = set(self._waiting.node_ids)
        models = {n.model for n in live if n.node_id in waiting}
        return any(
            n.model in models
            and n.state in (NodeState.REQUESTED, NodeState.BOOTING)
            and n.launched_at_s is not None
            and n.launched_at_s + self.boot_s(n) <= now_s
            for n in live
        )

    def release_waiting(self, exclude: Collection[str] = ()) -> tuple[Drain, ...]:
        """Drains of the nodes the last tick's make before break held whose model's other
        ready nodes now cover what the plan wants ready (`WaitingDrains.release`), within
        the tick's scale-down limit; the models in `exclude` keep theirs for now. Reads
        the store only (no cloud call); the caller carries the drains out."""
        if not self._waiting.node_ids:
            return ()
        noticed = set(self.notices)
        ready = [
            n
            for n in self.store.live_nodes()
            if n.state is NodeState.READY and n.node_id not in noticed
        ]
        drains, self._waiting = self._waiting.release(ready, self.capacity_of, exclude)
        return drains

    async def finish_drains(self, now_s: float) -> list[Terminate]:
        """Terminations of the draining nodes whose in-flight requests are done or whose
        `guards.drain_timeout_s` has passed (the plan tick's and the fast loop's)."""
        actions: list[Terminate] = []
        deadline_s = self.config.guards.drain_timeout_s
        for node in self.store.live_nodes():
            if node.state is NodeState.DRAINING:
                in_flight = await self.drainer.in_flight(node, now_s)
                waited = now_s - (node.state_since_s or now_s)
                if in_flight == 0 or waited >= deadline_s:
                    why = (
                        "drained" if in_flight == 0 else f"drain deadline {deadline_s:.0f} s passed"
                    )
                    actions.append(Terminate(node.node_id, reason=why))
        return actions

    def _spot_storm(self, obs: Observation, now_s: float) -> bool:
        """`guards.spot_storm_pools` or more spot pools of one cloud refused launches this
        tick: cool every spot pool of that cloud for `guards.pool_cooldown_s`, so the
        tick's fallback (and the next ticks' plans) go to on-demand instead of trying the
        next spot pools one tick at a time. In a preemption storm capsched otherwise tried
        some fifty spot pools over five ticks while the top-priority model was short
        (docs/solver.md, "Preemption storms"). True when a cloud was newly cooled."""
        needed = self.config.guards.spot_storm_pools
        if needed <= 0:
            return False
        refused = self.cooldown.refused_at(now_s)
        per_cloud = Counter(p.cloud for p in refused if p.market is Market.SPOT)
        until = now_s + self.config.guards.pool_cooldown_s
        spot = [o.pool for o in obs.offerings if o.pool.market is Market.SPOT]
        clouds = {
            cloud
            for cloud, n in per_cloud.items()
            if n >= needed
            and any(p.cloud is cloud and self.cooldown.until.get(p, -1.0) < until for p in spot)
        }
        if not clouds:
            return False
        for pool in spot:
            if pool.cloud in clouds:
                self.cooldown.hold(pool, until)
        log.warning(
            "spot_storm clouds=%s refused_pools=%d until_s=%.0f",
            ",".join(sorted(c.value for c in clouds)),
            sum(per_cloud[c] for c in clouds),
            until,
        )
        return True

    async def _act(
        self, actions: Sequence[Action], now_s: float, obs: Observation
    ) -> tuple[list[ActionOutcome], list[Pool]]:
        """Carry out `actions`; cool the pools that refused. Returns one outcome per
        action, in order, and the pools that refused."""
        result = await self.actuator.execute(actions, now_s)
        for refused in result.exhausted_pools:
            self.cooldown.refused(refused, now_s, self.config.guards.pool_cooldown_s)
            self._learn(refused, PoolEvent.REFUSED, now_s)
        self._save_cooldown()
        pools = {n.node_id: n.pool for n in obs.nodes}
        failed = {id(a): msg for a, msg in result.failed}
        outcomes: list[ActionOutcome] = []
        for a in actions:
            msg = failed.get(id(a))
            if msg is None:
                outcomes.append(ActionOutcome(a, ok=True))
                continue
            pool = a.pool if isinstance(a, Launch) else pools.get(a.node_id)
            text = f"{type(a).__name__} {a.node_id}: {msg}"
            error = TickError(ErrorKind.ACTION, text, a.node_id, pool)
            outcomes.append(ActionOutcome(a, ok=False, error=error))
        return outcomes, result.exhausted_pools

    async def tick(self, now_s: float) -> TickReport:
        """Observe, decide, act once. Never raises for one node's or one action's failure."""
        self._orphans = {}
        self._waiting = WaitingDrains()  # this tick decides again what waits
        try:
            obs, errors = await self.observe(now_s)
        except ProviderError as exc:
            # Without the cloud's listing, acting could double-launch or misread the fleet.
            log.warning("tick_skipped now_s=%.0f reason=listing_failed error=%s", now_s, exc)
            skipped = TickError(ErrorKind.PROVIDER, f"provider: {type(exc).__name__}: {exc}")
            return TickReport(now_s, None, (), (), (skipped,), False)

        decision = self.decide(obs)
        plan = decision.plan
        self._record_demand(obs, decision)
        if decision.approval is Approval.DRY_RUN:
            self.store.record_plan(plan, now_s, self.policy.name, (), approval=decision.approval)
            log.info("tick now_s=%.0f dry_run=true usd_per_hour=%.2f", now_s, plan.usd_per_hour)
            return TickReport(
                now_s, plan, (), (), tuple(errors), obs.demand_complete, decision=decision
            )
        if decision.approval is Approval.AUTO:
            self.approval.follow(plan)
        elif decision.ask_approval:
            plan_id = self.store.record_plan(
                plan, now_s, self.policy.name, (), approval=Approval.PENDING
            )
            self.approval.ask(plan_id, plan)
        orphans = tuple(Terminate(n, reason=why) for n, why in self._orphans.items())
        todo = (*orphans, *decision.actions, *(await self.finish_drains(now_s)))
        outcomes, exhausted = await self._act(todo, now_s, obs)
        held = (*self.health.held_now, *decision.held_back)
        final = decision
        # Fall back to another pool now rather than a whole tick later; once more when a
        # spot storm was declared on the way (the fallback then goes to on-demand).
        fallbacks = 1
        while exhausted and decision.approval is Approval.AUTO:
            if self._spot_storm(obs, now_s):
                fallbacks += 1
            if fallbacks <= 0:
                break
            fallbacks -= 1
            try:
                obs2, _ = await self.observe(now_s)
            except ProviderError as exc:
                # The pools are cooled down already: the next tick falls back instead.
                text = f"provider: {type(exc).__name__}: {exc} (fallback deferred)"
                errors.append(TickError(ErrorKind.PROVIDER, text))
                break
            else:
                final = self.decide(obs2, revise=True)
                self.approval.follow(final.plan)
                more, exhausted = await self._act(final.actions, now_s, obs2)
                outcomes.extend(more)
                todo, held = (*todo, *final.actions), (*held, *final.held_back)
        errors.extend(o.error for o in outcomes if o.error is not None)
        if final is not decision:
            self._record_band(now_s)  # the revised plan is the one the band judges
        self._waiting = final.waiting
        plan = final.plan
        if decision.approval is not Approval.PENDING:
            self.store.record_plan(plan, now_s, self.policy.name, held, approval=decision.approval)
        fleet = self._summary(obs, plan)
        event(
            log,
            logging.INFO,
            "tick",
            now_s=round(now_s),
            policy=self.policy.name,
            plan_status=plan.status.value,
            usd_per_hour=plan.usd_per_hour,
            actions=len(todo),
            held=len(held),
            errors=len(errors),
            demand_complete=obs.demand_complete,
            nodes=fleet.nodes,
            planned_nodes=fleet.planned_nodes,
            fleet_usd_per_hour=fleet.usd_per_hour,
            demand_rps=fleet.demand_rps,
            planned_rps=fleet.planned_rps,
        )
        held_events(log, "guard_held", now_s, held)
        return TickReport(
            now_s,
            plan,
            tuple(todo),
            tuple(held),
            tuple(errors),
            obs.demand_complete,
            fleet,
            outcomes=tuple(outcomes),
            decision=final,
        )


def _observed_size(sample: DemandSample, key: tuple[str, str]) -> RequestSize | None:
    """The mean size the load signal reported for `key`; None unless both are finite."""
    inp, out = sample.input_tokens.get(key, math.nan), sample.output_tokens.get(key, math.nan)
    if math.isfinite(inp) and math.isfinite(out) and inp > 0 and out > 0:
        return RequestSize(inp, out)
    return None


def _planned_sizes(demand: Sequence[Demand]) -> dict[tuple[str, str], RequestSize]:
    """The size a plan counted each series' requests as: its demand entry's size (with
    several entries, their sizes' mean weighted by rate, or plain when no entry has a
    rate); series planned as the reference request are absent."""
    sized: dict[tuple[str, str], list[tuple[float, RequestSize]]] = {}
    for d in demand:
        if d.size is not None:
            w = d.rps if math.isfinite(d.rps) and d.rps > 0 else 0.0
            sized.setdefault((d.model, d.region), []).append((w, d.size))
    out: dict[tuple[str, str], RequestSize] = {}
    for key, entries in sized.items():
        if sum(w for w, _ in entries) <= 0:
            entries = [(1.0, size) for _, size in entries]
        total = sum(w for w, _ in entries)
        out[key] = RequestSize(
            sum(w * size.input_tokens for w, size in entries) / total,
            sum(w * size.output_tokens for w, size in entries) / total,
        )
    return out
