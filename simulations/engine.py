"""The replay engine: virtual time, the simulated cloud, and the real reconciler.

`simulate(...)` steps virtual time one minute at a time. Each step it moves the
simulated cloud forward, calls the same `Reconciler.tick` the daemon calls (every
`scheduler.tick_interval_s`, and at once when the cloud sends an interruption
notice), and accounts the step:

* demand: the trace's requests/s for the minute;
* ready capacity: RUNNING instances that are not draining and whose model server
  serves (the scenario's `[faults]` make some never serve or turn sick), each at its profile's
  requests/s at the model's SLO (`scheduler.fleet.profiles.instance_rps`) for the minute's mean
  request size where the trace has sizes (`TraceInfo.size_at`, `size_factor`; the same
  rule for every policy and the oracle), in the state at
  the start of the step;
* served / unserved: demand routed to capacity within each source region's latency
  limit (a small max-flow per model), the rest unserved;
* latency: an M/M/c queue per model fed by the served rate, whose servers are the
  concurrent request slots (profile rps x profile latency, Little's law) of the nodes
  within reach of a region with load (a node no loaded region reaches shortens no wait)
  and whose service time is the profile latency; the share of requests answered within
  the SLO is P(wait <= SLO - service time) (Erlang C), under a per-token SLO P(wait <= the
  first-token budget less the time to first token) (`NodeService.wait_s`). At or above
  capacity the excess waits as a backlog carried into the next steps, each request within
  the SLO while its wait fits that slack (`simulations.latency.within_slo`);
* cost by market, billed per second by the simulated cloud.

Warm-up. A replay of a slice of a live service should begin as the running system
would: with a fleet that already serves the load at the start. So before the trace
starts, a warm-up (boot time plus one tick, by default) runs every policy through the
same reconciler on a steady load, and nothing is accounted during it:

* the load each series shows during the warm-up is its peak over the trace's first
  boot time + one tick (`warmup_load`). That window is the part of the trace no
  decision taken inside the replay can reach: the first tick that has seen a trace
  minute is one tick after the start, and what it launches is ready a boot time
  later. Whatever serves that window was decided on the warm-up's load, so the
  warm-up shows each policy what the window asks for and lets each size for it with
  its own rule (a series that is 0 in minute 1 and 9 rps in minute 2 is served from
  the start). It is the same load for every policy, read from the trace and not from
  any policy, and it is held flat so no policy's reaction depends on where in the
  window its ticks fall;
* spot pools hold the capacity their trace has at the start of the trace (a running
  system sees the market as it is at that moment, not the trace's earlier history).

Only wall time spent is read from a real clock, for `wall_s`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adapters.sim import SimCloud, SimFaults, SimHealthProbe, SimStorm, SpotTrace
from adapters.trace_metrics import TraceMetrics
from scheduler.config import Config
from scheduler.decide.guards import launch_limits
from scheduler.decide.planner import resolve_location
from scheduler.decide.policy import CapschedPolicy
from scheduler.domain import (
    LAUNCH_LIMITS,
    REFERENCE_SIZE,
    CapacityProfile,
    HoldKind,
    InstanceType,
    Market,
    Node,
    NodeState,
    Plan,
    Pool,
    RequestSize,
    TokenSlo,
)
from scheduler.fleet.boot import node_boot_s
from scheduler.fleet.catalog import Catalog
from scheduler.fleet.commitments import (
    Commitment,
    SpendCommitment,
    resolve_commitments,
    resolve_spend_commitments,
)
from scheduler.fleet.profiles import (
    best_profile,
    latency_limit_ms,
    load_models,
    model_latency_slo_ms,
    profile_latency_ms,
    size_factor,
    wait_budget_ms,
)
from scheduler.fleet.queueing import node_slots
from scheduler.loop.factory import build_scheduler
from scheduler.loop.fast_loop import FastLoop
from scheduler.loop.logs import set_virtual_clock
from scheduler.loop.reconciler import Reconciler
from scheduler.loop.store import StateStore
from scheduler.ports.metrics import MetricsSource
from simulations.by_size import BucketedMetrics, BucketLedger, BySize, serve_buckets
from simulations.commitment_bill import (
    COMMITMENT_MARKET,
    CommitmentUsage,
    bill_commitments,
)
from simulations.latency import within_slo
from simulations.ledger import Backlog, Ledger, ReadyCapacity
from simulations.policies import TraceInfo
from simulations.roster import make_policy
from simulations.token_cost import (
    CommitmentCharge,
    NodeGroup,
    TokenCost,
    TokenCosts,
    attribute_tokens,
    attribute_usd,
    summary_keys,
    token_costs,
)

log = logging.getLogger(__name__)

Progress = Callable[[int], None]  # called with the number of steps just completed


async def _no_sleep(_: float) -> None:
    """The actuator's retry back-off takes no virtual time in a replay."""


@dataclass(frozen=True, slots=True)
class NodeService:
    """How one instance serves one model, from the capacity profile it runs at."""

    rps: float  # sustainable requests/s at the SLO
    latency_s: float  # profile end-to-end latency per request (the service time)
    slots: int  # requests in service at once at that rate (rps x latency, Little's law)
    # How long a request may wait for a slot and still be within the SLO (under a per-token
    # SLO its first-token budget less its time to first token: `wait_budget_ms`).
    wait_s: float = math.inf


def node_service(
    profiles: Sequence[CapacityProfile],
    model: str,
    itype: InstanceType,
    latency_slo_ms: float,
    model_memory_gb: float | None,
    size: RequestSize | None = None,
    token_slo: TokenSlo | None = None,
    utilization: float | None = None,
) -> NodeService:
    """How a node of `model` on `itype` serves at its `best_profile` within the SLO, for
    requests of `size` (None: the reference request): the profile's rate times
    `size_factor`, at the profile's latency (under a per-token SLO the size's time to
    first token plus its output tokens' decode time, `profile_latency_ms`;
    docs/profiles.md "Request size", "Latency SLOs"). `utilization` is the planned one:
    under a per-token SLO the batch is the planner's, the one that leaves room for waits
    at it (`best_profile`)."""
    best = best_profile(
        profiles, model, itype, latency_slo_ms, model_memory_gb, size, token_slo, utilization
    )
    if best is None:
        return NodeService(0.0, 0.0, 0, 0.0)
    profile, replicas = best
    factor = size_factor(model, profile.gpu_kind, profile.gpu_count, size)
    rps = replicas * profile.rps * factor
    latency_s = profile_latency_ms(profile, size, token_slo) / 1000.0
    wait_s = wait_budget_ms(profile, size, latency_slo_ms, token_slo) / 1000.0
    return NodeService(rps, latency_s, node_slots(rps, latency_s), wait_s)


class SimDrainer:
    """Takes nodes out of the simulated load balancer; in-flight requests finish within
    one service time of the node's profile."""

    def __init__(self, cloud: SimCloud, service_s: Callable[[Node], float]) -> None:
        self.cloud = cloud  # gives the virtual time a drain began
        self.service_s = service_s  # profile latency of a node
        self.began: dict[str, float] = {}  # node id -> virtual time the drain began

    async def begin(self, node: Node) -> None:
        """Stop routing to `node`."""
        self.began.setdefault(node.node_id, self.cloud.now_s)

    async def in_flight(self, node: Node, now_s: float) -> int | None:
        """0 once a service time has passed since the drain began; else 1 (still busy)."""
        began = self.began.get(node.node_id)
        if began is None:
            return 0
        return 0 if now_s - began >= self.service_s(node) else 1


def max_flow(demand: Sequence[float], capacity: Sequence[float], reach: np.ndarray) -> float:
    """Largest flow from sources (demand) to sinks (capacity) along `reach[s, k]` edges."""
    return float(source_flows(demand, capacity, reach).sum())


def source_flows(
    demand: Sequence[float], capacity: Sequence[float], reach: np.ndarray
) -> np.ndarray:
    """Per source, its part of a largest flow to sinks (capacity) along `reach[s, k]`.

    The total is unique; the split is not when sources share sinks: with every sink in
    reach of every source it is proportional to demand, otherwise the one Edmonds-Karp
    finds."""
    dem = np.asarray(demand, dtype=np.float64)
    total_d, total_c = float(dem.sum()), float(sum(capacity))
    if total_d <= 0 or total_c <= 0:
        return np.zeros(len(dem))
    if reach.all():
        return dem * min(1.0, total_c / total_d)
    n_s, n_k = reach.shape
    # Nodes: 0 source, 1..n_s demand, n_s+1..n_s+n_k capacity, last sink.
    n = n_s + n_k + 2
    sink = n - 1
    cap = np.zeros((n, n))
    for s in range(n_s):
        cap[0, 1 + s] = demand[s]
        for k in range(n_k):
            if reach[s, k]:
                cap[1 + s, 1 + n_s + k] = math.inf
    for k in range(n_k):
        cap[1 + n_s + k, sink] = capacity[k]
    while True:  # Edmonds-Karp on a graph of a handful of nodes
        parent = [-1] * n
        parent[0] = 0
        queue = [0]
        while queue and parent[sink] < 0:
            u = queue.pop(0)
            for v in np.nonzero(cap[u] > 1e-12)[0]:
                if parent[v] < 0:
                    parent[v] = u
                    queue.append(int(v))
        if parent[sink] < 0:
            # What is left of each source edge is the demand that found no capacity.
            return np.array([demand[s] - cap[0, 1 + s] for s in range(n_s)])
        push, v = math.inf, sink
        while v != 0:
            push = min(push, cap[parent[v], v])
            v = parent[v]
        v = sink
        while v != 0:
            cap[parent[v], v] -= push
            cap[v, parent[v]] += push
            v = parent[v]


@dataclass
class RunResult:
    """One policy's replay: per-step series and totals."""

    policy: str  # policy name
    times_s: np.ndarray  # start of every accounted step
    models: tuple[str, ...]  # row order of the per-model arrays
    demand_rps: np.ndarray  # (models, steps) requests/s asked for
    capacity_rps: np.ndarray  # (models, steps) ready capacity at the SLO
    served_rps: np.ndarray  # (models, steps) demand routed to capacity
    within_slo_rps: np.ndarray  # (models, steps) served within the latency SLO
    latency_s: np.ndarray  # (models, steps) mean latency estimate (NaN without capacity)
    capacity_by_market: dict[str, np.ndarray]  # market -> ready capacity rps, all models
    forecast_rps: np.ndarray  # (steps,) load the policy planned for (NaN if it does not say)
    cost_by_market: dict[str, np.ndarray]  # market -> cumulative USD at the end of each step
    gpu_hours: float  # accelerator-hours billed over the trace
    launches: int  # instances created (warm-up included)
    terminations: int  # instances terminated on our request
    preemptions: int  # instances reclaimed by the cloud
    failed_launches: int  # launches refused (capacity)
    solve_times_s: list[float]  # the policy's solve time per tick
    ticks: int  # reconciler ticks (periodic and notice-driven)
    tick_errors: int  # error lines reported by ticks
    wall_s: float  # wall time of the replay
    state_db: str  # the run's state database
    notes: list[str] = field(default_factory=list)  # what the run wants a reader to know
    fast_launches: int = 0  # nodes the fast loop launched between ticks (warm-up included)
    early_s: float = 0.0  # "early" window after the trace start: boot time + one tick
    bound_usd: tuple[float, str] | None = None  # (lower bound on cost, "ip"/"lp") if it has one
    # Times of the ticks (warm-up included) whose launches the budget or a quota held
    # back, or whose plan it cut short, per limit (scheduler.decide.guards.launch_limits).
    launch_holds_s: dict[HoldKind, list[float]] = field(default_factory=dict)
    # Per `[[commitments]]` entry: paid and used node-hours, fee and covered on-demand
    # price (simulations.commitment_bill); the fee is `cost_by_market["commitment"]`.
    commitments: tuple[CommitmentUsage, ...] = ()
    # Node-hours billed per on-demand pool over the trace (what a commitment there could
    # cover; `capsched simulate --commitment-sweep auto:...` picks the largest).
    on_demand_node_hours: dict[Pool, float] = field(default_factory=dict)

    def held_ticks(self, kind: HoldKind) -> int:
        """Ticks on which `kind` (budget or quota) held launches back."""
        return len(self.launch_holds_s.get(kind, ()))

    def launch_hold_notes(self) -> list[str]:
        """One line per limit that held launches back: on how many ticks, and when (in
        minutes of the trace; the warm-up before it is negative)."""
        t0 = float(self.times_s[0]) if len(self.times_s) else 0.0
        out: list[str] = []
        for kind in (HoldKind.BUDGET, HoldKind.QUOTA):
            times = self.launch_holds_s.get(kind)
            if not times:
                continue
            what = "the budget" if kind is HoldKind.BUDGET else "a quota"
            first, last = (min(times) - t0) / 60.0, (max(times) - t0) / 60.0
            out.append(
                f"{self.policy}: {what} held launches back on {len(times)} of {self.ticks}"
                f" ticks, minutes {first:.0f} to {last:.0f} of the trace"
                + (" (negative: the warm-up)" if first < 0 else "")
            )
        return out

    # The same per (model, source region) series, for the report's panels:
    series: tuple[tuple[str, str], ...] = ()  # (model, region) row order of the arrays below
    series_demand_rps: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # asked for
    # ready capacity of the model within the region's latency limit (shared between
    # regions whose limits reach the same serving region)
    series_capacity_rps: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    series_served_rps: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # routed
    # rate the policy planned for (NaN where it does not say)
    series_planned_rps: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    # (models, steps) mean prompt + output tokens per request of the step's demand (the
    # reference request's where the trace has no sizes); for the cost per million tokens.
    tokens_per_request: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    # The cost per million tokens per model and GPU kind (simulations.token_cost): USD
    # billed per (model, GPU kind) of the nodes over the trace, commitments included, and
    # per GPU kind the ready capacity per model and step (rps, (models, steps)).
    usd_by_group: dict[NodeGroup, float] = field(default_factory=dict)
    capacity_by_gpu_kind: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def step_s(self) -> float:
        """Length of one accounted step."""
        return float(self.times_s[1] - self.times_s[0]) if self.times_s.size > 1 else 60.0

    def _tokens_per_request(self) -> np.ndarray:
        """(models, steps) tokens per request (the reference request's where not recorded)."""
        if self.tokens_per_request.shape != self.served_rps.shape:
            return np.full(self.served_rps.shape, float(REFERENCE_SIZE.tokens))
        return self.tokens_per_request

    @property
    def served_tokens(self) -> float:
        """Prompt plus output tokens of the requests served over the trace."""
        return float((self.served_rps * self._tokens_per_request()).sum()) * self.step_s

    def token_costs(self) -> TokenCosts:
        """Cost per million tokens in total, per model and per GPU kind (the one
        attribution every report reads, `simulations.token_cost`)."""
        tokens = attribute_tokens(
            self.models,
            self.served_rps,
            self._tokens_per_request(),
            self.capacity_by_gpu_kind,
            self.step_s,
        )
        if not self.usd_by_group:  # a result made without the per-group bill: no groups
            tokens = {}
        return token_costs(TokenCost(self.cost_usd, self.served_tokens), self.usd_by_group, tokens)

    # Deferrable (batch) models: requests that waited past their deadline unserved, and
    # requests still waiting, within their deadline, when the trace ended.
    deadline_missed: dict[str, float] = field(default_factory=dict)
    waiting_at_end: dict[str, float] = field(default_factory=dict)

    def per_model(self) -> dict[str, dict[str, float]]:
        """Requests per model over the trace (rps x step length): asked for, served,
        unserved and served within the SLO, and the unserved and SLO-missed requests
        split between the first `early_s` after the trace start (before nodes launched
        at the start can be ready) and the rest. Fractions are of the model's demand."""
        n = self.demand_rps.shape[1] if self.demand_rps.ndim == 2 else 0
        step_s = float(self.times_s[1] - self.times_s[0]) if n > 1 else 60.0
        early = (self.times_s - self.times_s[0] < self.early_s - 1e-9) if n else np.zeros(0, bool)
        out: dict[str, dict[str, float]] = {}
        for m, name in enumerate(self.models):
            dem = self.demand_rps[m] * step_s
            srv = self.served_rps[m] * step_s
            ok = self.within_slo_rps[m] * step_s
            uns = dem - srv
            miss = dem - ok  # not served within the SLO (unserved or too slow)
            total = float(dem.sum())

            def frac(v: float, total: float = total) -> float:
                return round(v / total, 6) if total > 0 else 0.0

            out[name] = {
                "requests": round(total, 1),
                "served": round(float(srv.sum()), 1),
                "unserved": round(float(uns.sum()), 1),
                "within_slo": round(float(ok.sum()), 1),
                "slo_attainment": frac(float(ok.sum())) if total > 0 else 1.0,
                "unserved_early": round(float(uns[early].sum()), 1),
                "unserved_after": round(float(uns[~early].sum()), 1),
                "slo_missed_early": round(float(miss[early].sum()), 1),
                "slo_missed_after": round(float(miss[~early].sum()), 1),
                "unserved_early_fraction": frac(float(uns[early].sum())),
                "unserved_after_fraction": frac(float(uns[~early].sum())),
                "early_s": self.early_s,
            }
            if name in self.deadline_missed:
                out[name]["deadline_missed"] = round(self.deadline_missed[name], 1)
                out[name]["waiting_at_end"] = round(self.waiting_at_end.get(name, 0.0), 1)
        return out

    @property
    def cost_usd(self) -> float:
        """Total cost over the trace."""
        return float(sum(v[-1] for v in self.cost_by_market.values() if len(v)))

    def summary(self, static_peak_cost: float | None) -> dict[str, Any]:
        """The policy's entry of summary.json."""
        demand = float(self.demand_rps.sum())
        served = float(self.served_rps.sum())
        within = float(self.within_slo_rps.sum())
        covered = (self.demand_rps - self.served_rps <= 1e-9 * np.maximum(self.demand_rps, 1)).all(
            axis=0
        )
        cost = self.cost_usd
        return {
            "cost_usd": round(cost, 4),
            "cost_vs_static_peak": (
                round(cost / static_peak_cost, 4) if static_peak_cost else None
            ),
            "slo_attainment": round(within / demand, 6) if demand > 0 else 1.0,
            "unserved_fraction": round((demand - served) / demand, 6) if demand > 0 else 0.0,
            "availability": round(float(covered.mean()), 6) if covered.size else 1.0,
            "preemptions": self.preemptions,
            "launches": self.launches,
            "fast_launches": self.fast_launches,
            "terminations": self.terminations,
            "gpu_hours": round(self.gpu_hours, 3),
            # Cost per million prompt + output tokens served, in total, per model and per
            # GPU kind (simulations.token_cost.summary_keys).
            **summary_keys(self.token_costs()),
            "solve_time_p95_s": (
                round(float(np.percentile(self.solve_times_s, 95)), 4)
                if self.solve_times_s
                else 0.0
            ),
            "wall_s": round(self.wall_s, 3),
            # The oracle's lower bound on the cost of any policy serving all demand, and
            # whether it is the integer program's optimum ("ip") or its relaxation's ("lp").
            "lower_bound_usd": (
                round(self.bound_usd[0], 4)
                if self.bound_usd and math.isfinite(self.bound_usd[0])
                else None
            ),
            "bound_kind": self.bound_usd[1] if self.bound_usd else None,
            # Ticks on which the budget / a quota held launches back (never silent).
            "budget_held_ticks": self.held_ticks(HoldKind.BUDGET),
            "quota_held_ticks": self.held_ticks(HoldKind.QUOTA),
            **self._commitment_summary(),
        }

    def _commitment_summary(self) -> dict[str, Any]:
        """summary.json's commitment keys; none without commitments (docs/commitments.md)."""
        if not self.commitments:
            return {}
        # Share of the fees that covered usage (for one count commitment: of its paid
        # node-hours); a savings plan's is of its amount.
        fee = sum(c.fee_usd for c in self.commitments)
        used = sum(c.used_fee_usd for c in self.commitments)
        if all(c.usd_per_hour_committed == 0 for c in self.commitments):
            fee = sum(c.paid_node_hours for c in self.commitments)
            used = sum(c.used_node_hours for c in self.commitments)
        return {
            "commitment_usd": round(sum(c.fee_usd for c in self.commitments), 4),
            "commitment_utilisation": round(used / fee, 6) if fee > 0 else 1.0,
            "commitments": [
                {
                    "name": c.label,
                    "count": c.count,
                    **(
                        {"usd_per_hour_committed": c.usd_per_hour_committed}
                        if c.usd_per_hour_committed
                        else {}
                    ),
                    "utilisation": round(c.utilisation, 6),
                    "used_node_hours": round(c.used_node_hours, 4),
                    "paid_node_hours": round(c.paid_node_hours, 4),
                    "fee_usd": round(c.fee_usd, 4),
                    "covered_on_demand_usd": round(c.covered_usd, 4),
                }
                for c in self.commitments
            ],
        }


@dataclass(frozen=True)
class World:
    """Everything a replay needs besides the policy: config, data and the scenario's cloud."""

    config: Config  # config after the scenario's overrides
    catalog: Catalog  # catalog with the scenario's prices
    profiles: tuple[CapacityProfile, ...]  # capacity profiles
    info: TraceInfo  # demand and spot traces
    boot_time_by_type: dict[str, float] = field(default_factory=dict)  # per-type boot times
    # Boot each node for `scheduler.fleet.boot.node_boot_s` of its model and instance type (below
    # `boot_time_by_type`); False: every node takes `info.boot_time_s`.
    boot_per_node: bool = False
    reveal_stockouts: bool = False  # offerings show stocked-out spot pools
    random_interruptions: bool = True  # spot pools without a trace are interrupted at random
    warmup_s: float | None = None  # default: boot time + one tick
    faults: SimFaults | None = None  # model-server faults injected (the scenario's [faults])
    storm: SimStorm | None = None  # a preemption storm (the scenario's [storm])


class _Accounting:
    """Per-step bookkeeping of one replay."""

    def __init__(self, world: World, models: tuple[str, ...]) -> None:
        cfg, catalog = world.config, world.catalog
        self.models = models
        self.model_index = {m: i for i, m in enumerate(models)}
        known = {m.name: m for m in load_models()}
        self._services: dict[tuple[str, str, str, RequestSize | None], NodeService] = {}
        self._catalog = catalog
        self._profiles = world.profiles
        self._cfg = cfg
        self._known = known
        # Per model: its end-to-end SLO (ms) and per-token SLO; `limit_s` the limit at a size.
        self.slo: dict[str, tuple[float, TokenSlo | None]] = {}
        for section in cfg.models:
            name = section.profile or section.name
            info = known.get(name)
            try:
                e2e = model_latency_slo_ms(name, section.latency_slo_ms, section.token_slo, info)
            except KeyError:
                e2e = math.inf  # no SLO known for the model: every served request counts
            self.slo[section.name] = (e2e, section.token_slo)
        # Routing: which serving locations each source region may use.
        regions = [r.name for r in cfg.regions]
        self.regions = regions
        locs = sorted({o.pool.location for o in catalog.offerings})
        self.locations = locs
        self.loc_index = {loc: i for i, loc in enumerate(locs)}
        reach = np.zeros((len(regions), len(locs)), dtype=bool)
        for i, r in enumerate(cfg.regions):
            origin = resolve_location(catalog, r.location)
            for k, loc in enumerate(locs):
                reach[i, k] = catalog.rtt_ms(origin, loc) <= r.max_latency_ms
        self.reach = reach
        # Demand rows are every configured (model, region) pair (simulations.demand).
        self.key_rows = [(self.model_index[m], regions.index(r)) for m, r in world.info.keys]

    def service(self, model: str, pool: Pool, size: RequestSize | None = None) -> NodeService:
        """Capacity and service time of one node of `model` in `pool` for requests of
        `size` (None: the reference request; cached)."""
        key = (model, pool.cloud.value, pool.instance_type, size)
        svc = self._services.get(key)
        if svc is None:
            if len(self._services) > 100_000:  # per-minute sizes of a long replay
                self._services.clear()
            section = self._cfg.model(model)
            profile = section.profile or section.name
            info = self._known.get(profile)
            itype = self._catalog.instance_types[(pool.cloud, pool.instance_type)]
            e2e_ms, token_slo = self.slo[model]
            svc = node_service(
                self._profiles,
                profile,
                itype,
                e2e_ms,
                info.gpu_memory_gb if info else None,
                size,
                token_slo,
                self._cfg.planning.target_utilization,
            )
            self._services[key] = svc
        return svc

    def gpu_kind(self, pool: Pool) -> str:
        """The GPU kind of `pool`'s instance type."""
        return self._catalog.instance_types[(pool.cloud, pool.instance_type)].gpu_kind

    def limit_s(self, model: str, size: RequestSize | None) -> float:
        """Seconds a request of `model` of `size` may take end to end (`latency_limit_ms`)."""
        e2e_ms, token_slo = self.slo[model]
        return latency_limit_ms(e2e_ms, token_slo, size) / 1000.0


class _Ticks:
    """The reconciler driven at virtual times: plan ticks, health checks and fast checks
    between ticks, and what the replay reads of them (counts, holds, the plan, the nodes
    draining). Each runs in one store transaction: nothing else uses the database during
    a replay, and a tick that raised would end the replay anyway."""

    def __init__(
        self,
        reconciler: Reconciler,
        store: StateStore,
        drainer: SimDrainer,
        fast: FastLoop | None,
        keys: Sequence[tuple[str, str]],
        on_plan: Callable[[Plan], None] | None = None,
    ) -> None:
        self._reconciler, self._store, self._drainer, self.fast = reconciler, store, drainer, fast
        self._on_plan = on_plan  # told every plan a tick made (the routes of placement by size)
        self._keys = list(keys)
        self.ticks = 0
        self.errors = 0
        self.fast_launches = 0
        self.solve_times: list[float] = []
        self.launch_holds: dict[HoldKind, list[float]] = {k: [] for k in LAUNCH_LIMITS}
        self.draining: set[str] = set()  # node ids taken out of rotation
        self.planned_total = math.nan  # the latest plan's total planned rate
        self.planned = np.full(len(self._keys), np.nan)  # ... and per series

    async def tick(self, at: float) -> None:
        """One plan tick at `at`."""
        set_virtual_clock(lambda: at)  # log lines from here on carry the replay's time
        with self._store.transaction():
            report = await self._reconciler.tick(at)
        self.ticks += 1
        self.errors += len(report.errors)
        if report.plan is not None:
            self.solve_times.append(report.plan.solve_time_s)
            if self._on_plan is not None:
                self._on_plan(report.plan)
        for kind in launch_limits(report.held_back):
            self.launch_holds[kind].append(at)
        self._sync_draining()
        planned = report.decision.planned_rps if report.decision is not None else {}
        if planned:
            self.planned_total = float(sum(planned.values()))
            self.planned = np.array([planned.get(k, math.nan) for k in self._keys], dtype=float)

    async def health_check(self, at: float) -> None:
        """A health check at `at`; a node that failed to boot or turned sick wakes a tick
        at once, as in the daemon."""
        set_virtual_clock(lambda: at)
        with self._store.transaction():
            verdict = await self._reconciler.check_health(at)
        if verdict.wakes:
            await self.tick(at)

    async def fast_check(self, at: float) -> None:
        """A fast check at `at` (scheduler.loop.fast_loop)."""
        assert self.fast is not None
        idle = not self.draining and not self._reconciler.waiting_drains.node_ids
        if not self.fast.launches and idle:
            return  # nothing to launch, drain or finish draining: no store read
        set_virtual_clock(lambda: at)
        with self._store.transaction():
            report = await self.fast.check(at)
        self.fast_launches += len(report.launched)
        if report.yielded or report.drained or report.released:
            self._sync_draining()

    def _sync_draining(self) -> None:
        """The nodes out of rotation, after a tick or a fast check that drained or
        terminated some."""
        began = self._drainer.began
        if began:  # only a drain begun since can have made a node DRAINING
            self.draining = {
                x.node_id for x in self._store.live_nodes() if x.state is NodeState.DRAINING
            }
            self._drainer.began = {k: v for k, v in began.items() if k in self.draining}
        else:
            self.draining = set()


def _sim_cloud(world: World, start_s: float, warmup_s: float) -> SimCloud:
    """The simulated cloud of a replay that starts (warm-up included) at `start_s`."""
    cfg, info = world.config, world.info
    return SimCloud(
        world.catalog.offerings,
        world.catalog.instance_types,
        start_s=start_s,
        boot_time_s=info.boot_time_s,
        boot_time_by_type=world.boot_time_by_type,
        boot_time=(lambda m, it: node_boot_s(cfg, m, it)) if world.boot_per_node else None,
        spot_traces={
            # Spot traces are relative to the trace start; the warm-up runs before it.
            p: _held_before_start(t, warmup_s)
            for p, t in info.spot_traces.items()
        },
        seed=info.seed,
        random_interruptions=world.random_interruptions,
        reveal_stockouts=world.reveal_stockouts,
        # Prices too are relative to the trace start; the warm-up holds the first price.
        spot_prices={p: s.shifted(warmup_s) for p, s in info.spot_prices.items()},
        faults=world.faults,
        storm=world.storm,
    )


def _trace_metrics(
    info: TraceInfo,
    warmup_s: float,
    early_s: float,
    interval_s: float,
    waiting: Callable[[], Mapping[tuple[str, str], float]],
) -> TraceMetrics:
    """The load signal of a replay: the warm-up's steps first, each at the load (and the
    request sizes) of `warmup_load` (`warmup_sizes`), then the trace."""
    step_s = info.step_s
    n_warm = math.ceil(warmup_s / step_s - 1e-9) if warmup_s > 0 else 0
    early_steps = math.ceil(early_s / step_s - 1e-9)
    warm_col = warmup_load(info.demand_rps, early_steps)
    warm_tokens = None
    if info.tokens is not None:
        warm = warmup_sizes(info.tokens, early_steps)
        warm_tokens = np.concatenate(
            [np.repeat(warm[:, :, None], n_warm, axis=2), info.tokens], axis=2
        )
    return TraceMetrics(
        info.keys,
        np.concatenate([np.repeat(warm_col[:, None], n_warm, axis=1), info.demand_rps], axis=1),
        start_s=info.start_s - n_warm * step_s,
        step_s=step_s,
        peak_window_s=interval_s,
        tokens=warm_tokens,
        waiting=waiting,
    )


async def replay(
    world: World,
    policy_name: str,
    state_db: Path | str,
    *,
    progress: Progress | None = None,
) -> RunResult:
    """Replay the world's trace through `policy_name` and account every step.

    A loop over the steps of a virtual clock, with named parts: the simulated cloud
    (`_sim_cloud`), the load signal (`_trace_metrics`), the reconciler driven at virtual
    times (`_Ticks`), and the accounting (`simulations.ledger`: ready capacity, the
    deferrable backlog, the per-step ledger), turned into a `RunResult` at the end."""
    cfg, info = world.config, world.info
    started = time.perf_counter()
    models = tuple(m.name for m in cfg.models)
    acc = _Accounting(world, models)
    # Before the replay, not after it: a commitment the catalog cannot place is bad input.
    commitments = resolve_commitments(cfg, world.catalog)
    savings_plans = resolve_spend_commitments(cfg, world.catalog)
    step_s = info.step_s
    interval = cfg.scheduler.tick_interval_s
    early_s = info.boot_time_s + interval
    warmup = world.warmup_s if world.warmup_s is not None else early_s
    t0 = info.start_s - warmup
    cloud = _sim_cloud(world, t0, warmup)
    n, n_m = info.n_steps, len(models)
    backlog = Backlog(
        [cfg.model(name).deferrable_deadline_s for name in models],
        acc.key_rows,
        info.keys,
        step_s,
    )
    metrics = _trace_metrics(info, warmup, early_s, interval, lambda: backlog.waiting)
    policy = make_policy(policy_name, cfg, world.catalog, world.profiles, info)
    # Placement by size: the load signal carries each minute's bucket mix, and every
    # policy's nodes serve the buckets its plans route to them (a plan without routes: any
    # bucket), each at its size (simulations.by_size); off, the replay is as before.
    by_size: BySize | None = None
    source: MetricsSource = metrics
    if cfg.planning.place_by_size and info.buckets is not None:
        by_size = BySize(info.buckets, acc.key_rows, n_m, n)
        n_warm = metrics.rps.shape[1] - n
        columns = warmup_columns(info.tokens, math.ceil(early_s / step_s - 1e-9), len(info.keys))
        source = BucketedMetrics(metrics, info.buckets.prepended(columns, n_warm))
    Path(state_db).unlink(missing_ok=True)
    # Node ids from the seed, not at random: a replay's database repeats exactly.
    store = StateStore(state_db, id_prefix=f"cs-{info.seed % 0x1000000:06x}")

    def node_latency(node: Node) -> float:
        return acc.service(node.model, node.pool).latency_s

    drainer = SimDrainer(cloud, node_latency)
    reconciler = build_scheduler(
        cfg,
        provider=cloud,
        metrics=source,
        store=store,
        policy=policy,
        drainer=drainer,
        catalog=world.catalog,
        profiles=world.profiles,
        sleep=_no_sleep,
        health_probe=SimHealthProbe(cloud),
    )
    # The fast loop between ticks (scheduler.loop.fast_loop). Its launches are capsched's own
    # policies' (a baseline's plan would cancel them as nodes it does not want); its drain
    # finishing is the reconciler's, the same for every policy: a baseline's drained nodes
    # stop billing as soon as capsched's do.
    fast_s = cfg.scheduler.fast_interval_s
    fast = FastLoop(reconciler, launches=isinstance(policy, CapschedPolicy)) if fast_s > 0 else None
    run = _Ticks(
        reconciler, store, drainer, fast, info.keys, by_size.routes.update if by_size else None
    )
    # Health checks between ticks ([health], scheduler.decide.health).
    health = cfg.health_checks
    health_s = health.interval_s if health is not None else 0.0
    ledger = Ledger(n_m, len(info.keys), n)
    limits_s = np.zeros((n_m, n))  # per model and step, the latency a request may take
    ready = ReadyCapacity(
        n_m, len(acc.locations), acc.service, acc.model_index, acc.loc_index, acc.gpu_kind
    )
    cost_base: dict[Market, float] | None = None
    billed_base: dict[tuple[str, Pool], float] = {}  # per (model, pool) at the trace start
    gpu_base = 0.0

    t = t0
    next_tick = t0
    next_fast = math.inf
    next_health = t0 + health_s if health_s > 0 else math.inf
    step = -1  # accounted step index; negative during warm-up
    end = info.end_s
    while t < end - 1e-9:
        # A step whose awaits all complete at once never hands the event loop control, and
        # Ctrl-C (asyncio.run cancels the replay's task on SIGINT) then waited for the
        # whole replay to end: one yield per step lets it through.
        await asyncio.sleep(0)
        if t >= next_tick - 1e-9 or cloud.unread_notices:
            while next_tick <= t + 1e-9:
                next_tick += interval
            await run.tick(t)
            next_fast = t + fast_s if fast is not None else math.inf
        elif t >= next_fast - 1e-9:
            await run.fast_check(t)
            next_fast = t + fast_s
        step = math.floor((t - info.start_s) / step_s + 1e-9)
        if step >= 0:
            if cost_base is None:
                usage = cloud.usage()
                cost_base, gpu_base = dict(usage.cost_by_market), usage.gpu_hours
                billed_base = cloud.cost_by_model_pool()
            # Ready capacity at the start of the step, per model and serving location, for
            # the step's request sizes (all None without sizes: the reference request).
            sizes = tuple(info.size_at(name, step) for name in models)
            limits_s[:, step] = [
                acc.limit_s(name, s) for name, s in zip(models, sizes, strict=True)
            ]
            ready.update(cloud.version, cloud.serving, frozenset(run.draining), sizes)
            ledger.record_fleet(step, ready, sizes)
            route = None
            if by_size is not None:
                counts = by_size.count_nodes(cloud.version, cloud.serving, frozenset(run.draining))
                route = _bucket_router(by_size, acc, counts, step, info)
            _account_demand(step, info, acc, ready, backlog, ledger, n_m, route)
            ledger.series_planned[:, step] = run.planned
            ledger.forecast[step] = run.planned_total
        # Move the cloud through the step; a notice triggers a tick at its own moment.
        step_end = min(t + step_s, end) if step >= 0 else min(t + step_s, info.start_s)
        while True:
            stop = min(step_end, next_fast, next_health)
            reached = cloud.advance_until_notice(stop)
            if reached < stop - 1e-9:
                await run.tick(reached)
                next_fast = reached + fast_s if fast is not None else math.inf
            elif reached >= step_end - 1e-9 and next_health > reached + 1e-9:
                break
            elif next_health <= reached + 1e-9:  # a health check inside the step
                await run.health_check(reached)
                next_health = reached + health_s
                if reached >= step_end - 1e-9:
                    break
            else:  # a fast check inside the step
                await run.fast_check(reached)
                next_fast = reached + fast_s
        t = step_end
        if step >= 0:
            spent = cloud.usage().cost_by_market
            base = cost_base or {}
            ledger.record_cost(step, {mk: spent[mk] - base.get(mk, 0.0) for mk in Market})
        if progress is not None and step >= 0:
            progress(1)
    set_virtual_clock(None)  # the caller's log lines after the replay are not replayed
    usage = cloud.usage()
    commitment_use = _bill_commitments(world, commitments, savings_plans, cloud, ledger.cost, n)
    covers: list[tuple[Pool, ...]] = [c.pools for c in commitments]
    covers += [sp.pools for sp in savings_plans]  # commitment_use's order
    charges = [
        CommitmentCharge(frozenset(pools), u.fee_usd - u.covered_usd)
        for pools, u in zip(covers, commitment_use, strict=True)
    ]
    usd_by_group = attribute_usd(cloud.cost_by_model_pool(), billed_base, acc.gpu_kind, charges)
    od_hours: dict[Pool, float] = {}
    for pool, a, b in cloud.billed_intervals():
        if pool.market is Market.ON_DEMAND and b > info.start_s:
            od_hours[pool] = (
                od_hours.get(pool, 0.0) + (min(b, info.end_s) - max(a, info.start_s)) / 3600
            )
    within = np.zeros_like(ledger.served)
    latency = np.full_like(ledger.served, np.nan)
    for m, name in enumerate(models):
        # Per token, a request is within the SLO if its wait fits its nodes' wait budget
        # (the first-token budget less the time to first token); end to end, if its
        # response fits the limit at the step's size.
        limit_m = ledger.service_s[m] + ledger.wait_s[m] if acc.slo[name][1] else limits_s[m]
        ok_rps, mean_s = within_slo(
            ledger.arrivals[m],
            ledger.served[m],
            ledger.queue_capacity[m],
            ledger.slots[m],
            ledger.service_s[m],
            limit_m,
            step_s,
        )
        if by_size is not None and m in by_size.ledger.models:
            ok_rps, mean_s = _bucket_within(by_size.ledger, m, ledger.served[m], step_s)
        # A deferrable request served at all was served before its deadline.
        within[m] = ok_rps if backlog.deadlines_s[m] is None else ledger.served[m]
        latency[m] = mean_s
    at_end = backlog.at_end(models)
    store.close()
    result = RunResult(
        policy=policy_name,
        times_s=info.start_s + step_s * np.arange(n),
        models=models,
        demand_rps=ledger.demand,
        capacity_rps=ledger.capacity,
        served_rps=ledger.served,
        within_slo_rps=within,
        latency_s=latency,
        capacity_by_market=ledger.by_market,
        forecast_rps=ledger.forecast,
        cost_by_market=ledger.cost,
        gpu_hours=usage.gpu_hours - gpu_base,
        launches=cloud.counters.launches,
        terminations=cloud.counters.terminations,
        preemptions=cloud.counters.preemptions,
        failed_launches=cloud.counters.failed_launches,
        solve_times_s=run.solve_times,
        ticks=run.ticks,
        fast_launches=run.fast_launches,
        tick_errors=run.errors,
        wall_s=time.perf_counter() - started,
        state_db=str(state_db),
        early_s=early_s,
        bound_usd=policy.lower_bound(),
        launch_holds_s={k: v for k, v in run.launch_holds.items() if v},
        commitments=commitment_use,
        on_demand_node_hours=od_hours,
        series=tuple(info.keys),
        series_demand_rps=ledger.series_demand,
        series_capacity_rps=ledger.series_capacity,
        series_served_rps=ledger.series_served,
        series_planned_rps=ledger.series_planned,
        tokens_per_request=ledger.tokens,
        usd_by_group=usd_by_group,
        capacity_by_gpu_kind=ledger.by_kind,
        deadline_missed={name: float(backlog.missed[models.index(name)]) for name in at_end},
        waiting_at_end=at_end,
    )
    log.info(
        "replay_done policy=%s steps=%d ticks=%d cost_usd=%.2f wall_s=%.2f",
        policy_name, n, run.ticks, result.cost_usd, result.wall_s,
    )  # fmt: skip
    return result


def _account_demand(
    step: int,
    info: TraceInfo,
    acc: _Accounting,
    ready: ReadyCapacity,
    backlog: Backlog,
    ledger: Ledger,
    n_models: int,
    route: Callable[[int, np.ndarray], np.ndarray] | None = None,
) -> None:
    """Route step `step`'s demand (arrivals and what waits) to the ready capacity within
    reach, serve the deferrable backlog, and write the step into `ledger`. `route` (model
    index, its demand per region -> its served rps per region) routes by size instead
    (`_bucket_router`)."""
    col = np.nan_to_num(info.demand_rps[:, step], nan=0.0)
    asked = np.zeros((n_models, len(acc.regions)))  # arrivals of the step
    dem_reg = np.zeros((n_models, len(acc.regions)))  # arrivals and what waits
    for s, ((m, r), v) in enumerate(zip(acc.key_rows, col, strict=True)):
        asked[m, r] += v
        dem_reg[m, r] += v + backlog.waiting_rps(s)
    cap_loc = ready.by_location
    in_reach = cap_loc @ acc.reach.T  # (models, regions): capacity within reach
    flows = np.zeros_like(dem_reg)  # (models, regions): demand routed to capacity
    for m in range(n_models):
        ledger.demand[m, step] = asked[m].sum()
        # The queue the step's load waits in is the nodes it can reach: a node out of
        # every loaded region's reach serves nobody and shortens no wait (counting it
        # made an overloaded minute look served within the SLO, docs/solver.md
        # "Spot-loss robustness by reach").
        used = acc.reach[dem_reg[m] > 0].any(axis=0)
        ledger.capacity[m, step] = cap_loc[m].sum()
        ledger.queue_capacity[m, step] = cap = float(cap_loc[m][used].sum())
        ledger.slots[m, step] = int(ready.slots[m][used].sum())
        if route is not None:
            flows[m] = route(m, dem_reg[m])
        else:
            flows[m] = source_flows(dem_reg[m], cap_loc[m], acc.reach)
        ledger.served[m, step] = flows[m].sum()
        # What reaches the queue: the served load and the excess of the regions with
        # capacity in reach, which waits (`simulations.latency.within_slo`).
        waits = (dem_reg[m] - flows[m])[in_reach[m] > 0]
        ledger.arrivals[m, step] = ledger.served[m, step] + float(np.maximum(waits, 0.0).sum())
        ledger.service_s[m, step] = ready.latency_weight[m][used].sum() / cap if cap > 0 else 0
        ledger.wait_s[m, step] = ready.wait_weight[m][used].sum() / cap if cap > 0 else 0
    backlog.serve(step, col, flows)
    for s, (m, r) in enumerate(acc.key_rows):
        ledger.series_demand[s, step] = asked[m, r]
        ledger.series_capacity[s, step] = in_reach[m, r]
        ledger.series_served[s, step] = flows[m, r]


def _bucket_router(
    by_size: BySize,
    acc: _Accounting,
    counts: Mapping[tuple[str, Pool], int],
    step: int,
    info: TraceInfo,
) -> Callable[[int, np.ndarray], np.ndarray]:
    """The step's routing by size: per model, its demand per region split into the step's
    buckets and served on the nodes routed to each (`serve_buckets`), recorded in
    `by_size.ledger`; returns the served rps per region."""
    col = info.demand_rps[:, step]

    def route(m: int, demand_reg: np.ndarray) -> np.ndarray:
        model = acc.models[m]
        split, sizes = by_size.step_mix(m, step, demand_reg, col, len(acc.regions))
        groups = by_size.groups(model, counts, sizes, acc.service, acc.loc_index)
        got = serve_buckets(split, groups, acc.reach)
        limits: Sequence[float] = [math.inf if s is None else acc.limit_s(model, s) for s in sizes]
        if acc.slo[model][1] is not None:  # per token: the wait budget (as `within` above)
            limits = list(got.service_s + got.wait_s)
        by_size.ledger.record(m, step, got, limits, split.sum(axis=1))
        return np.asarray(got.flows.sum(axis=0), dtype=np.float64)

    return route


def _bucket_within(
    book: BucketLedger, m: int, served: np.ndarray, step_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Model `m`'s requests/s answered within the SLO per step, and their mean latency,
    from its buckets (each its own queue at its own limit, `within_slo`)."""
    within = np.zeros_like(served)
    weighted = np.zeros_like(served)
    for b in range(book.served.shape[1]):
        ok_rps, mean_s = within_slo(
            book.arrivals[m, b], book.served[m, b], book.capacity[m, b], book.slots[m, b],
            book.service_s[m, b], book.limit_s[m, b], step_s,
        )  # fmt: skip
        within += ok_rps
        weighted += np.where(np.isfinite(mean_s), book.served[m, b] * mean_s, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(served > 0, weighted / served, np.nan)
    return within, mean


def warmup_columns(tokens: np.ndarray | None, window_steps: int, n_series: int) -> list[int]:
    """Per series, the step whose mix the warm-up replays: the one `warmup_sizes` takes
    (most tokens per request over the first `window_steps`), the first without sizes."""
    if tokens is None:
        return [0] * n_series
    window = np.asarray(tokens, dtype=np.float64)[:, :, : max(1, window_steps)].sum(axis=0)
    return [
        int(np.argmax(np.where(np.isfinite(row), row, -np.inf))) if np.isfinite(row).any() else 0
        for row in window
    ]


def warmup_sizes(tokens: np.ndarray, window_steps: int) -> np.ndarray:
    """Per series, the request size the warm-up replays (shape (2, series)): the size of
    the step with the most tokens per request over the first `window_steps` steps (as
    `warmup_load` takes the highest rate: the warm-up must not understate the load);
    NaN for a series without a size there."""
    window = np.asarray(tokens, dtype=np.float64)[:, :, : max(1, window_steps)]
    total = window.sum(axis=0)
    out = np.full(window.shape[:2], np.nan)
    for k in range(window.shape[1]):
        finite = np.isfinite(total[k])
        if finite.any():
            out[:, k] = window[:, k, int(np.argmax(np.where(finite, total[k], -np.inf)))]
    return out


def _bill_commitments(
    world: World,
    commitments: Sequence[Commitment],
    savings_plans: Sequence[SpendCommitment],
    cloud: SimCloud,
    cost: dict[str, np.ndarray],
    n_steps: int,
) -> tuple[CommitmentUsage, ...]:
    """Add `commitments` and `savings_plans` to `cost` (cumulative per step, in place):
    their fee as the `commitment` market, the on-demand price of the node-time they
    covered taken off `on-demand`. The same rule for every policy
    (simulations.commitment_bill)."""
    if not commitments and not savings_plans:
        return ()
    info = world.info
    pools = {p for c in commitments for p in c.pools} | {
        p for sp in savings_plans for p in sp.pools
    }
    prices = {o.pool: o.usd_per_hour for o in world.catalog.offerings if o.pool in pools}
    ends = np.minimum(info.start_s + info.step_s * np.arange(1, n_steps + 1), info.end_s)
    bill = bill_commitments(
        commitments,
        cloud.billed_intervals(pools),
        prices,
        info.start_s,
        ends,
        savings_plans,
    )
    cost[Market.ON_DEMAND.value] = cost[Market.ON_DEMAND.value] - bill.covered_usd
    cost[COMMITMENT_MARKET] = bill.fee_usd
    return bill.usage


def warmup_load(demand_rps: np.ndarray, window_steps: int) -> np.ndarray:
    """Per series (row), the load the warm-up replays: the highest rate over the first
    `window_steps` steps (at least one); NaN for a series with no value there."""
    window = np.asarray(demand_rps, dtype=np.float64)[:, : max(1, window_steps)]
    if window.shape[1] == 0:
        return np.zeros(window.shape[0])
    with np.errstate(all="ignore"):
        top = np.nanmax(np.where(np.isnan(window), -np.inf, window), axis=1)
    return np.where(np.isneginf(top), np.nan, top)


@dataclass(frozen=True, eq=False)
class _HeldSpotTrace(SpotTrace):
    """A spot trace that starts `hold_s` late and holds its count at its own time 0
    before that: the warm-up sees the pool as it is when the trace starts."""

    hold_s: float = 0.0  # length of the warm-up before the trace's time 0

    def index_at(self, t_s: float) -> int:
        """Tick index of the underlying trace at replay-relative `t_s`."""
        return super().index_at(max(t_s - self.hold_s, 0.0))

    def capacity_at(self, t_s: float) -> int:
        """Capacity at replay-relative `t_s` (the trace's start count during the hold)."""
        return int(self.counts[self.index_at(t_s)])

    def next_tick_after(self, t_s: float) -> float:
        """First tick boundary strictly after `t_s`; the end of the hold is one."""
        if t_s < self.hold_s:
            return self.hold_s
        return super().next_tick_after(t_s - self.hold_s) + self.hold_s


def _held_before_start(trace: SpotTrace, hold_s: float) -> SpotTrace:
    """`trace` with the warm-up of `hold_s` before its time 0 (see `_HeldSpotTrace`)."""
    if hold_s <= 0:
        return trace
    return _HeldSpotTrace(
        trace.source, trace.gap_s, trace.counts, trace.offset_s, trace.loop, hold_s=hold_s
    )


def run_policy(
    world: World, policy_name: str, state_db: Path | str, progress: Progress | None = None
) -> RunResult:
    """`replay` on a fresh event loop (for process pools and scripts)."""
    return asyncio.run(replay(world, policy_name, state_db, progress=progress))
