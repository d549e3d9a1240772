"""The daemon's Prometheus metrics, on a registry of its own.

The daemon calls one method after each tick, `Telemetry.record_reconciler_tick(reconciler,
report, duration_s=...)` (or passes `telemetry.tick_hook(reconciler)` as its `on_tick`),
which gathers what it needs from the reconciler and its store; the lower-level
`record_tick(report, nodes=..., ...)` takes every input as an argument (tests, simulator).
Exposed by the control API at `/metrics` (scheduler.service.api); alert rules and the Grafana
dashboard in deploy/ use exactly these names. Label sets are listed in docs/api.md.

Cardinality: labels are models, regions, pools (bounded by the catalog), node states,
action kinds and fixed result/guard/source vocabularies. Node ids, plan ids and free
text never become labels; a new label value per node would grow without bound over
months of churn.

Nothing here reads the wall clock: the last-tick timestamp is the tick's own `now_s`.
"""

from __future__ import annotations

import math
from collections import Counter as TallyCounter
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from scheduler.decide.guards import launch_limits
from scheduler.decide.obtainability import Obtainability
from scheduler.domain import (
    LAUNCH_LIMITS,
    HoldKind,
    Node,
    NodeState,
    PlanStatus,
    Pool,
    prices_of,
)
from scheduler.domain.actions import Drain, Launch, Terminate
from scheduler.ports.metrics import DemandSample, MetricsSource

if TYPE_CHECKING:
    from scheduler.decide.decision import Decision
    from scheduler.loop.fast_loop import FastReport
    from scheduler.loop.reconciler import Reconciler, TickReport

# Solver and tick durations: the solver's budget is seconds, a tick's up to the timeout.
SOLVER_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
TICK_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

_KIND = {Launch: "launch", Drain: "drain", Terminate: "terminate"}

# States whose nodes cost money (everything live; a terminating node still bills).
_BILLED = frozenset(
    {
        NodeState.REQUESTED,
        NodeState.BOOTING,
        NodeState.READY,
        NodeState.DRAINING,
        NodeState.TERMINATING,
        NodeState.INTERRUPTED,
        NodeState.UNHEALTHY,
    }
)


class _DemandTap:
    """A metrics source that remembers its last sample for the telemetry (the reconciler
    does not keep its observation after a tick, and asking the source twice is I/O)."""

    def __init__(self, source: MetricsSource, telemetry: Telemetry) -> None:
        self.source = source  # the real load signal
        self.telemetry = telemetry  # where the last sample is kept

    async def demand(self, now_s: float) -> DemandSample:
        """The wrapped source's sample, remembered."""
        sample = await self.source.demand(now_s)
        self.telemetry.last_demand = sample
        return sample


class Telemetry:
    """Every metric the daemon exports, on its own `CollectorRegistry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # A registry per daemon (not the process-global one), so tests and the simulator
        # can build several without "Duplicated timeseries" errors.
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.last_demand: DemandSample | None = None  # filled by `tap` when used
        self.last_decision: Decision | None = None  # the last tick's that decided
        self._preemption_cursor: int | None = None  # last node_events id counted
        # Health counts per pool already exported (the reconciler's are since its start).
        self._health_seen: dict[tuple[str, Pool], int] = {}
        r = self.registry

        # -- fleet --------------------------------------------------------------------------
        self.nodes = Gauge(
            "capsched_nodes",
            "Live nodes by model, pool, market and lifecycle state.",
            ["model", "pool", "market", "state"],
            registry=r,
        )
        self.fleet_cost = Gauge(
            "capsched_fleet_cost_usd_per_hour",
            "List price of the live (billed) fleet, USD per hour.",
            registry=r,
        )
        self.capacity = Gauge(
            "capsched_capacity_rps",
            "Sustainable request rate of the ready nodes of a model, at its SLO.",
            ["model"],
            registry=r,
        )
        self.headroom = Gauge(
            "capsched_headroom_rps",
            "Ready capacity minus observed demand of a model (NaN while demand is missing).",
            ["model"],
            registry=r,
        )
        self.preemptions = Counter(
            "capsched_preemptions",
            "Nodes reclaimed by their cloud (notice or reclaim observed).",
            ["model", "pool", "market"],
            registry=r,
        )

        # -- demand and forecast ------------------------------------------------------------
        self.demand = Gauge(
            "capsched_demand_rps",
            "Observed request rate per model and source region (NaN when missing).",
            ["model", "region"],
            registry=r,
        )
        self.demand_complete = Gauge(
            "capsched_demand_complete",
            "1 when every configured (model, region) rate was present and finite.",
            registry=r,
        )
        self.planned_demand = Gauge(
            "capsched_planned_demand_rps",
            "Rate the plan provisions for: max(forecast peak, observed).",
            ["model", "region"],
            registry=r,
        )
        self.forecast_peak = Gauge(
            "capsched_forecast_peak_rps",
            "Forecast peak over the horizon at each quantile level.",
            ["model", "region", "quantile"],
            registry=r,
        )

        self.band_scale = Gauge(
            "capsched_forecast_band_scale",
            "Factor on the forecast band above the median the plan used (1: the plain"
            " plan_quantile; [forecast] band_feedback).",
            ["model"],
            registry=r,
        )

        # -- plan and solver ----------------------------------------------------------------
        self.plan_cost = Gauge(
            "capsched_plan_cost_usd_per_hour",
            "Price of the latest plan's target fleet, USD per hour.",
            registry=r,
        )
        self.budget = Gauge(
            "capsched_budget_usd_per_hour",
            "Configured fleet budget, USD per hour (NaN when none).",
            registry=r,
        )
        self.plan_unmet = Gauge(
            "capsched_plan_unmet_rps",
            "Demand the latest plan leaves unserved, per model.",
            ["model"],
            registry=r,
        )
        self.commitment_nodes = Gauge(
            "capsched_commitment_nodes",
            "Nodes of each [[commitments]] entry: paid for (count; count commitments only)"
            " and used by the latest plan (savings plans too).",
            ["commitment", "use"],
            registry=r,
        )
        self.savings_plan_usd = Gauge(
            "capsched_savings_plan_usd_per_hour",
            "USD per hour of each savings plan: committed (billed used or not) and drawn by"
            " the latest plan's nodes at the plan's rates.",
            ["commitment", "use"],
            registry=r,
        )
        self.plan_status = Gauge(
            "capsched_plan_status",
            "1 for the latest plan's solver status, 0 for the others.",
            ["status"],
            registry=r,
        )
        self.solves = Counter(
            "capsched_solves",
            "Plans made, by solver status.",
            ["status"],
            registry=r,
        )
        self.solver_duration = Histogram(
            "capsched_solver_duration_seconds",
            "Wall time of each solve.",
            buckets=SOLVER_BUCKETS_S,
            registry=r,
        )

        # -- actions and guards -------------------------------------------------------------
        self.actions = Counter(
            "capsched_actions",
            "Actions executed, by kind (launch, drain, terminate) and result (ok, failed).",
            ["kind", "result"],
            registry=r,
        )
        self.guard_holds = Counter(
            "capsched_guard_holds",
            "Held-back items from the guards, the limits and the approval gate, by guard.",
            ["guard"],
            registry=r,
        )
        self.fast_launches = Counter(
            "capsched_fast_launches",
            "Nodes launched by the fast loop between ticks (scheduler.loop.fast_loop), by model.",
            ["model"],
            registry=r,
        )
        self.fast_yields = Counter(
            "capsched_fast_yields",
            "Nodes of a lower priority the fast loop gave up so that a higher priority's"
            " launch fits the budget, by the node's model and the model it made room for.",
            ["model", "to_model"],
            registry=r,
        )
        self.launches_held = Gauge(
            "capsched_launches_held",
            "1 while the latest tick's launches were held back (or its plan cut short) by"
            " the limit: budget or quota.",
            ["limit"],
            registry=r,
        )

        # -- the loop -----------------------------------------------------------------------
        self.ticks = Counter(
            "capsched_ticks",
            "Ticks by outcome: ok, skipped (cloud listing failed), dry_run, failed, timeout.",
            ["outcome"],
            registry=r,
        )
        self.tick_errors = Counter(
            "capsched_tick_errors",
            "Error lines inside completed ticks (and tick exceptions), by source.",
            ["source"],
            registry=r,
        )
        self.tick_duration = Histogram(
            "capsched_tick_duration_seconds",
            "Wall time of each tick, cloud calls included.",
            buckets=TICK_BUCKETS_S,
            registry=r,
        )
        self.last_success = Gauge(
            "capsched_last_successful_tick_timestamp_seconds",
            "Unix time of the last tick that produced a plan.",
            registry=r,
        )
        self.tick_interval = Gauge(
            "capsched_tick_interval_seconds",
            "Configured time between ticks (the staleness alert scales with it).",
            registry=r,
        )
        self.paused = Gauge("capsched_paused", "1 while acting is paused.", registry=r)
        self.pending_approval = Gauge(
            "capsched_pending_approval",
            "1 while a plan waits for approval.",
            registry=r,
        )
        self.reloads = Counter(
            "capsched_config_reloads",
            "Config reloads attempted.",
            registry=r,
        )
        self.reload_failures = Counter(
            "capsched_config_reload_failures",
            "Config reloads refused (invalid new config; the old one keeps running).",
            registry=r,
        )
        self.obtainability = Gauge(
            "capsched_pool_obtainability",
            "Learned obtainability of a pool in (0, 1]: exp(-refused launches and interruptions"
            " there, decayed over an hour); pools with no recent event are not listed (1).",
            ["pool"],
            registry=r,
        )
        self.boot_failures = Counter(
            "capsched_boot_failures",
            "Nodes failed for not becoming healthy by their boot deadline ([health]).",
            ["pool"],
            registry=r,
        )
        self.health_replacements = Counter(
            "capsched_health_replacements",
            "Ready nodes declared unhealthy and replaced ([health]).",
            ["pool"],
            registry=r,
        )
        self.repairs_held = Gauge(
            "capsched_health_repairs_held",
            "Sick nodes kept in service by the replacement limit at the last health check.",
            registry=r,
        )
        self.quarantined = Gauge(
            "capsched_pool_quarantined",
            "1 while a pool is kept out of plans for repeated boot failures or sick nodes.",
            ["pool"],
            registry=r,
        )
        # Pre-create the fixed label values so rate() and alerts see zeros, not absence.
        for status in PlanStatus:
            self.plan_status.labels(status.value).set(0)
            self.solves.labels(status.value)
        for kind in _KIND.values():
            for result in ("ok", "failed"):
                self.actions.labels(kind, result)
        for outcome in ("ok", "skipped", "dry_run", "failed", "timeout"):
            self.ticks.labels(outcome)
        for kind in HoldKind:
            self.guard_holds.labels(kind.value)
        for kind in LAUNCH_LIMITS:
            self.launches_held.labels(kind.value).set(0)
        self.budget.set(math.nan)
        self.demand_complete.set(0)

    # -- inputs from the daemon -------------------------------------------------------------

    def tap(self, source: MetricsSource) -> MetricsSource:
        """Wrap the load signal so each tick's demand sample is remembered for `record_*`.
        Pass the result to `build_scheduler(metrics=...)`."""
        return _DemandTap(source, self)

    def configure(self, *, tick_interval_s: float, budget_usd_per_hour: float | None) -> None:
        """Settings the alerts compare against (called at start and after a reload)."""
        self.tick_interval.set(tick_interval_s)
        self.budget.set(math.nan if budget_usd_per_hour is None else budget_usd_per_hour)

    def record_tick_failure(self, outcome: str, duration_s: float) -> None:
        """A tick that raised (`outcome="failed"`) or ran past its timeout (`"timeout"`)."""
        self.ticks.labels("timeout" if outcome == "timeout" else "failed").inc()
        self.tick_errors.labels("exception" if outcome != "timeout" else "timeout").inc()
        self.tick_duration.observe(duration_s)

    def record_fast(self, report: FastReport) -> None:
        """One fast check: its accepted launches by model, its actions by kind and result
        (finished drains, drains released once replacements serve), the lower-priority
        nodes it gave up, and what the limits held back."""
        for launch in report.launched:
            self.fast_launches.labels(launch.model).inc()
            self.actions.labels("launch", "ok").inc()
        done = {a.node_id for a in report.yielded}
        for y in report.decision.yields:
            if y.action.node_id in done:
                self.fast_yields.labels(y.model, y.to_model).inc()
        for action in (*report.yielded, *report.drained, *report.released):
            self.actions.labels(type(action).__name__.lower(), "ok").inc()
        for _ in report.failed:
            self.actions.labels("launch", "failed").inc()
        for held in report.decision.held:
            self.guard_holds.labels(held.kind.value).inc()

    def record_reload(self, ok: bool) -> None:
        """One config reload attempt and whether the new config was taken."""
        self.reloads.inc()
        if not ok:
            self.reload_failures.inc()

    def record_control(self, *, paused: bool, pending_approval: bool) -> None:
        """Operator-visible state: paused, and whether a plan waits for approval."""
        self.paused.set(1 if paused else 0)
        self.pending_approval.set(1 if pending_approval else 0)

    def tick_hook(self, reconciler: Reconciler) -> Callable[[TickReport, float], None]:
        """A `(report, duration_s)` callback for the daemon's `on_tick`."""

        def hook(report: TickReport, duration_s: float) -> None:
            self.record_reconciler_tick(reconciler, report, duration_s=duration_s)

        return hook

    def record_reconciler_tick(
        self, reconciler: Reconciler, report: TickReport, *, duration_s: float
    ) -> None:
        """Everything about one completed tick, gathered from the reconciler and its store.
        The daemon's one line after `await reconciler.tick(now_s)`."""
        nodes = reconciler.store.live_nodes()
        capacity: defaultdict[str, float] = defaultdict(float)
        for m in reconciler.config.models:
            capacity[m.name] = 0.0
        for node in nodes:
            if node.state is NodeState.READY:
                capacity[node.model] += reconciler.capacity_of(node.model, node.pool)
        if report.decision is not None:  # a skipped tick keeps the last decision's numbers
            self.last_decision = report.decision
        decision = self.last_decision
        planned = decision.planned_rps if decision is not None else {}
        self.configure(
            tick_interval_s=reconciler.config.scheduler.tick_interval_s,
            budget_usd_per_hour=reconciler.config.planning.budget_usd_per_hour,
        )
        self.record_tick(
            report,
            nodes=nodes,
            demand=self.last_demand,
            planned=planned,
            capacity_rps_by_model=capacity,
            duration_s=duration_s,
            forecast=decision.quantiles if decision is not None else None,
            band_scales=decision.band_scales if decision is not None else None,
            usd_per_hour_by_pool=prices_of(reconciler.catalog.offerings),
            preempted=self._new_preemptions(reconciler, report.now_s),
            dry_run=reconciler.config.daemon.dry_run,
        )
        self.pending_approval.set(1 if reconciler.approval.pending is not None else 0)
        self.record_obtainability(reconciler.obtainability, report.now_s)
        self.record_health(reconciler, report.now_s)

    def record_health(self, reconciler: Reconciler, now_s: float) -> None:
        """Health counts per pool, sick nodes held by the replacement limit, quarantined
        pools and the nodes per state (after a tick or a health check between ticks)."""
        health = reconciler.health
        for kind, counts, metric in (
            ("boot", health.boot_failures, self.boot_failures),
            ("sick", health.replacements, self.health_replacements),
        ):
            for pool, n in counts.items():
                seen = self._health_seen.get((kind, pool), 0)
                if n > seen:
                    metric.labels(pool.key).inc(n - seen)
                self._health_seen[kind, pool] = n
        self.repairs_held.set(sum(h.nodes for h in health.held_now))
        self.quarantined.clear()
        for pool in reconciler.cooldown.quarantined_pools(now_s):
            self.quarantined.labels(pool.key).set(1)
        self._record_nodes(reconciler.store.live_nodes(), None)

    def record_obtainability(self, estimate: Obtainability, now_s: float) -> None:
        """One `capsched_pool_obtainability` series per pool with recent events."""
        self.obtainability.clear()
        for pool in estimate.current(now_s):
            self.obtainability.labels(pool.key).set(estimate.estimate(pool, now_s))

    def record_tick(
        self,
        report: TickReport,
        *,
        nodes: Sequence[Node],
        demand: DemandSample | None,
        planned: Mapping[tuple[str, str], float],
        capacity_rps_by_model: Mapping[str, float],
        duration_s: float,
        forecast: Mapping[tuple[str, str], Mapping[float, float]] | None = None,
        usd_per_hour_by_pool: Mapping[Pool, float] | None = None,
        preempted: Iterable[Node] = (),
        dry_run: bool = False,
        band_scales: Mapping[str, float] | None = None,
    ) -> None:
        """Everything about one completed tick, every input given. `nodes` are the live
        nodes after the tick; `preempted` the nodes reclaimed since the last call;
        `planned` and `forecast` (peak rps per quantile) are keyed by (model, region),
        `band_scales` (the factor on each model's forecast band) by model."""
        self.tick_duration.observe(duration_s)
        plan = report.plan
        outcome = "skipped" if plan is None else "dry_run" if dry_run else "ok"
        self.ticks.labels(outcome).inc()
        for error in report.errors:
            self.tick_errors.labels(error.kind.value).inc()
        for held in report.held_back:
            self.guard_holds.labels(held.kind.value).inc()
        if report.plan is not None:  # a skipped tick says nothing about the limits
            limits = launch_limits(report.held_back)
            for kind in LAUNCH_LIMITS:
                self.launches_held.labels(kind.value).set(1 if kind in limits else 0)
        for done in report.outcomes:
            result = "ok" if done.ok else "failed"
            self.actions.labels(_KIND[type(done.action)], result).inc()
        self._record_nodes(nodes, usd_per_hour_by_pool)
        for node in preempted:
            self.preemptions.labels(node.model, node.pool.key, node.pool.market.value).inc()
        self._record_demand(demand, planned, forecast, capacity_rps_by_model)
        for model, scale in (band_scales or {}).items():
            self.band_scale.labels(model).set(scale)
        if plan is not None:
            # Only a tick that produced a plan counts as alive for the staleness alert.
            self.last_success.set(report.now_s)
            self.plan_cost.set(plan.usd_per_hour)
            for status in PlanStatus:
                self.plan_status.labels(status.value).set(1 if plan.status is status else 0)
            self.solves.labels(plan.status.value).inc()
            self.solver_duration.observe(plan.solve_time_s)
            unmet: defaultdict[str, float] = defaultdict(float)
            for model in capacity_rps_by_model:
                unmet[model] = 0.0
            for u in plan.unmet:
                unmet[u.model] += u.rps
            self.plan_unmet.clear()
            for model, rps in unmet.items():
                self.plan_unmet.labels(model).set(rps)
            self.commitment_nodes.clear()  # a reload may drop a commitment
            self.savings_plan_usd.clear()
            for c in plan.commitments:
                self.commitment_nodes.labels(c.label, "paid").set(c.count)
                self.commitment_nodes.labels(c.label, "planned").set(c.used)
            for sp in plan.savings_plans:  # an amount, not a count: nothing "paid" in nodes
                self.commitment_nodes.labels(sp.label, "planned").set(sp.nodes)
                self.savings_plan_usd.labels(sp.label, "committed").set(sp.usd_per_hour_committed)
                self.savings_plan_usd.labels(sp.label, "planned").set(sp.usd_per_hour_used)

    # -- parts ------------------------------------------------------------------------------

    def _new_preemptions(self, reconciler: Reconciler, now_s: float) -> list[Node]:
        """Nodes that entered INTERRUPTED since the last call, read from the transition
        history by id so each reclaim counts once. The first call after a start counts
        only this tick's events (stamped `now_s`), never the whole history again."""
        store = reconciler.store
        if self._preemption_cursor is None:
            ids = store.node_ids_entering(NodeState.INTERRUPTED, since_s=now_s)
        else:
            ids = store.node_ids_entering(NodeState.INTERRUPTED, after_id=self._preemption_cursor)
        out: list[Node] = []
        for node_id in ids:
            node = store.node(node_id)
            if node is not None:
                out.append(node)
        self._preemption_cursor = store.last_event_id()
        return out

    def _record_nodes(
        self, nodes: Sequence[Node], usd_per_hour_by_pool: Mapping[Pool, float] | None
    ) -> None:
        counts = TallyCounter(
            (n.model, n.pool.key, n.pool.market.value, n.state.value) for n in nodes
        )
        # Cleared and refilled in one go: scrapes run on the same event loop, so none
        # sees the empty gauge, and combinations that emptied out disappear.
        self.nodes.clear()
        for labels, count in counts.items():
            self.nodes.labels(*labels).set(count)
        if usd_per_hour_by_pool is not None:
            self.fleet_cost.set(
                sum(usd_per_hour_by_pool.get(n.pool, 0.0) for n in nodes if n.state in _BILLED)
            )

    def _record_demand(
        self,
        demand: DemandSample | None,
        planned: Mapping[tuple[str, str], float],
        forecast: Mapping[tuple[str, str], Mapping[float, float]] | None,
        capacity_rps_by_model: Mapping[str, float],
    ) -> None:
        for (model, region), rps in planned.items():
            self.planned_demand.labels(model, region).set(rps)
        if forecast:
            for (model, region), peaks in forecast.items():
                for q, rps in peaks.items():
                    self.forecast_peak.labels(model, region, f"{q:g}").set(rps)
        for model, rps in capacity_rps_by_model.items():
            self.capacity.labels(model).set(rps)
        if demand is None:
            return
        regions = {r for (_, r) in planned} | {r for (_, r) in demand.rps}
        models = set(capacity_rps_by_model) | {m for (m, _) in planned}
        expected = {(m, r) for m in models for r in regions}
        self.demand_complete.set(1 if demand.complete(set(planned) or expected) else 0)
        by_model: defaultdict[str, float] = defaultdict(float)
        for model, region in sorted(set(planned) | set(demand.rps)):
            rps = demand.rps.get((model, region), math.nan)
            good = math.isfinite(rps) and rps >= 0
            self.demand.labels(model, region).set(rps if good else math.nan)
            # NaN poisons the sum, so a model with a missing region shows no headroom
            # rather than a made-up one.
            by_model[model] += rps if good else math.nan
        for model, capacity in capacity_rps_by_model.items():
            self.headroom.labels(model).set(capacity - by_model.get(model, 0.0))
