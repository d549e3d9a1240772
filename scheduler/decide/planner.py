"""The planner: turns config, catalog, profiles, demand and fleet into a solver
`Problem`, and the solver's `Solution` back into a `Plan` of pools.

Pure: no I/O, no clock. The cost terms it adds on top of list prices:

* boot hours of a pool: `planning.default_boot_time_s`, or with
  `planning.churn_from_node_boot` the longest `scheduler.fleet.boot.node_boot_s` of a configured
  model its instance type serves (the solver's churn terms are per pool, not per model);
* risk of a spot node = interruptions/hour x (price x boot hours + `interruption_cost_usd`):
  each reclaim wastes a replacement's boot time plus whatever the operator says a
  reclaim costs beyond that.
* launch cost = price x boot hours, amortised over `churn_amortization_h`: a new
  node is paid for while it boots and serves nothing.
* removal cost = the same amount, so that a plan only moves nodes when the saving
  pays for moving them back later (avoids churn for pennies).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from scheduler.config import CloudSection, Config
from scheduler.decide.size_classes import SizeClass, size_classes
from scheduler.domain import (
    MAX_NODES_PER_POOL,
    CapacityProfile,
    CommitmentUse,
    Demand,
    HoldKind,
    InstanceType,
    Market,
    Offering,
    Placement,
    Plan,
    PlanStatus,
    Pool,
    SavingsPlanUse,
    SizeRoute,
    Unmet,
    UnmetReason,
)
from scheduler.fleet.boot import node_boot_s
from scheduler.fleet.capacity import demand_size, node_rps
from scheduler.fleet.catalog import Catalog
from scheduler.fleet.commitments import (
    Commitment,
    CommitmentError,
    SpendCommitment,
    resolve_commitments,
    resolve_spend_commitments,
)
from scheduler.fleet.notice import loss_tolerated, pool_uncovered_s
from scheduler.fleet.quotas import covers
from scheduler.forecast.buckets import demand_buckets
from solver import (
    DemandSpec,
    PoolSpec,
    Problem,
    QuotaSpec,
    Relaxation,
    SizeClassSpec,
    Solution,
    SpendCap,
    Status,
    solve,
)

log = logging.getLogger(__name__)


class PlanningError(ValueError):
    """Inputs that name something the catalog or config does not know."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source  # which input is wrong: "demand", "fleet" or "config"
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Candidates:
    """Pools and offerings a problem was built from, in solver index order."""

    offerings: tuple[Offering, ...]  # one per solver pool, same order
    models: tuple[str, ...]  # model names in solver order
    locations: tuple[str, ...]  # "cloud:region" per location index
    commitments: tuple[Commitment, ...] = ()  # the config's, resolved
    # Per solver pool: the index of the commitment whose capacity it is, or None for a
    # pool at its own price. A committed pool is a copy of an on-demand pool (same
    # offering) at no marginal cost, holding at most the commitment's count.
    commitment_of: tuple[int | None, ...] = ()
    # The size classes of the models placed by size, in solver order (size_classes).
    size_classes: tuple[SizeClass, ...] = ()
    spend_commitments: tuple[SpendCommitment, ...] = ()  # the config's savings plans, resolved
    # Per solver pool: the index of the savings plan it draws from, or None. Such a pool
    # is a copy of an on-demand pool at no marginal cost; the nodes of a plan's copies
    # draw its rates from its amount (a solver `SpendCap`).
    spend_of: tuple[int | None, ...] = ()


def _cloud_section(config: Config, cloud: str) -> CloudSection:
    section: CloudSection = getattr(config.clouds, cloud)
    return section


def allowed(config: Config, offering: Offering, itype: InstanceType) -> bool:
    """Whether config lets capsched place nodes in this offering's pool."""
    return offering.available and config_allows(config, offering.pool, itype)


def config_allows(config: Config, pool: Pool, itype: InstanceType) -> bool:
    """Whether config lets capsched place nodes in `pool` when it is available."""
    section = _cloud_section(config, pool.cloud.value)
    return (
        section.enabled
        and (not section.regions or pool.region in section.regions)
        and pool.market in section.markets
        and (not section.gpu_kinds or itype.gpu_kind in section.gpu_kinds)
    )


def _max_nodes(is_allowed: bool, config_allowed: bool, held: int) -> int:
    """Nodes a pool may hold: none where the config forbids it (`config_allowed` false);
    where only availability is missing (a stock-out or a cooled-down pool), the `held`
    nodes it already runs, since a refused launch is no reason to move healthy nodes
    away. `is_allowed` is `allowed(config, offering, itype)`."""
    if is_allowed:
        return MAX_NODES_PER_POOL
    return held if config_allowed else 0


def servable_rps(
    config: Config, catalog: Catalog, profiles: Sequence[CapacityProfile]
) -> dict[str, float]:
    """Per model, the most requests/s any plan could serve: every pool the config allows
    holding `MAX_NODES_PER_POOL` nodes, each at the rate the planner counts on (profile
    rps x target utilisation). Budget, quotas and latency limits are left out on purpose:
    demand beyond them is a what-if whose answer is "unmet"; demand beyond this bound is
    a mistake in the input (a unit, a scale), and it would only cost memory and time."""
    out: dict[str, float] = {}
    for section in config.models:
        total = 0.0
        for o in catalog.offerings:
            itype = catalog.instance_type(o.pool)
            if allowed(config, o, itype):
                total += MAX_NODES_PER_POOL * node_rps(config, profiles, section.name, itype)
        out[section.name] = total
    return out


def check_servable(demand: Sequence[Demand], servable: Mapping[str, float]) -> None:
    """PlanningError naming the first (model, region) whose rate is above the model's
    `servable` bound (see `servable_rps`)."""
    for d in demand:
        bound = servable.get(d.model, 0.0)
        if not d.rps <= bound:
            raise PlanningError(
                "demand",
                f"{d.model} from {d.region}: {d.rps:.4g} rps is more than every pool the"
                f" config allows could serve ({bound:.4g} rps with {MAX_NODES_PER_POOL:,}"
                " nodes in each)",
            )


def resolve_location(catalog: Catalog, location: str) -> str:
    """A configured source-region location as a catalog "cloud:region" key."""
    if location in catalog.region_coords:
        return location
    matches = [k for k in catalog.region_coords if k.split(":", 1)[1] == location]
    if len(matches) != 1:
        raise PlanningError("config", f"location {location!r} is not a region in the catalog")
    return matches[0]


def check_demand(config: Config, demand: Sequence[Demand]) -> None:
    """PlanningError naming the first entry (`demand[i]`) whose model or region the
    config does not have, or whose rate is not a finite number >= 0."""
    models = {m.name for m in config.models}
    regions = {r.name for r in config.regions}
    for i, d in enumerate(demand):
        if d.model not in models:
            raise PlanningError("demand", f"demand[{i}]: unknown model {d.model!r}")
        if d.region not in regions:
            raise PlanningError("demand", f"demand[{i}]: unknown region {d.region!r}")
        if not np.isfinite(d.rps) or d.rps < 0:
            raise PlanningError(
                "demand", f"demand[{i}]: rps must be a finite number >= 0, got {d.rps}"
            )


def build_problem(
    config: Config,
    catalog: Catalog,
    profiles: Sequence[CapacityProfile],
    demand: Sequence[Demand],
    fleet: Sequence[Placement],
    committed: Sequence[Placement] = (),
    short: Collection[str] = (),
) -> tuple[Problem, Candidates]:
    """The placement problem for this demand and fleet under `config`.

    `committed` are nodes of the fleet the plan must keep (launched, still booting);
    counts beyond what `fleet` holds in a pool are ignored. `short` names the models
    whose ready nodes serve less than the demand seen now (`Problem.short`)."""
    models = tuple(m.name for m in config.models)
    model_index = {name: i for i, name in enumerate(models)}
    by_pool = {o.pool: o for o in catalog.offerings}
    fleet_pools = {pl.pool for pl in fleet}
    for i, pl in enumerate(fleet):
        if pl.model not in model_index:
            raise PlanningError("fleet", f"nodes[{i}]: unknown model {pl.model!r}")
        if pl.pool not in by_pool:
            raise PlanningError("fleet", f"nodes[{i}]: pool {pl.pool.key} is not in the catalog")

    offerings: list[Offering] = []
    permitted: list[bool] = []  # allowed(config, offering) per kept offering
    config_ok: list[bool] = []  # config_allows(config, pool) per kept offering
    for o in catalog.offerings:
        itype = catalog.instance_types[(o.pool.cloud, o.pool.instance_type)]
        permits = config_allows(config, o.pool, itype)
        ok = o.available and permits
        if ok or o.pool in fleet_pools:
            offerings.append(o)
            permitted.append(ok)
            config_ok.append(permits)
    held: Counter[Pool] = Counter()
    for pl in fleet:
        held[pl.pool] += pl.count
    locations = tuple(sorted({o.pool.location for o in offerings}))
    loc_index = {loc: i for i, loc in enumerate(locations)}
    domains = tuple(sorted({o.pool.failure_domain for o in offerings}))
    dom_index = {d: i for i, d in enumerate(domains)}

    column_cache: dict[tuple[str, int], list[float]] = {}
    # A node's capacity counts with the mean request size of its model's demand
    # (None: the reference request, today's rates).
    sizes = [demand_size(demand, section.name) for section in config.models]

    def rps_column(itype: InstanceType) -> list[float]:
        # Many pools share a GPU shape: compute each shape's rps for every model once.
        key = (itype.gpu_kind, itype.gpu_count)
        if key not in column_cache:
            column_cache[key] = [
                node_rps(config, profiles, section.name, itype, size=size)
                for section, size in zip(config.models, sizes, strict=True)
            ]
        return column_cache[key]

    boot_cache: dict[tuple[str, str], float] = {}

    def boot_h_of(itype: InstanceType) -> float:
        # The longest boot of a configured model the type serves (any model if none does);
        # the configured boot unless `churn_from_node_boot` (docs/solver.md "Boot time").
        if not config.planning.churn_from_node_boot:
            return config.planning.default_boot_time_s / 3600.0
        key = (str(itype.cloud), itype.name)
        if key not in boot_cache:
            rps = rps_column(itype)
            served = [m.name for m, r in zip(config.models, rps, strict=True) if r > 0]
            names = served or [m.name for m in config.models]
            boot_cache[key] = max(node_boot_s(config, n, itype) for n in names) / 3600.0
        return boot_cache[key]

    uncovered_cache: dict[tuple[str, str], float | None] = {}

    def uncovered_of(itype: InstanceType) -> float | None:
        # Serving seconds a loss of the type's spot nodes leaves uncovered, for the models
        # it serves (scheduler.fleet.notice).
        key = (str(itype.cloud), itype.name)
        if key not in uncovered_cache:
            rps = rps_column(itype)
            served = [m.name for m, r in zip(config.models, rps, strict=True) if r > 0]
            uncovered_cache[key] = pool_uncovered_s(config, served, itype)
        return uncovered_cache[key]

    amort_h = config.solver.churn_amortization_h
    pools: list[PoolSpec] = []
    capacity = np.zeros((len(models), len(offerings)), dtype=np.float64)
    for p, o in enumerate(offerings):
        itype = catalog.instance_types[(o.pool.cloud, o.pool.instance_type)]
        boot_h = boot_h_of(itype)
        churn = o.usd_per_hour * boot_h / amort_h
        risk = o.interruptions_per_hour * (
            o.usd_per_hour * boot_h + config.solver.interruption_cost_usd
        )
        pools.append(
            PoolSpec(
                key=o.pool.key,
                location=loc_index[o.pool.location],
                failure_domain=dom_index[o.pool.failure_domain],
                spot=o.pool.market is Market.SPOT,
                usd_per_hour=o.usd_per_hour,
                risk_usd_per_hour=risk,
                launch_usd_per_hour=churn,
                remove_usd_per_hour=churn,
                gpus=itype.gpu_count,
                max_nodes=_max_nodes(permitted[p], config_ok[p], held[o.pool]),
                loss_tolerated=o.pool.market is Market.SPOT
                and loss_tolerated(
                    uncovered_of(itype),
                    o.interruptions_per_hour,
                    config.planning.spot_loss_tolerance,
                ),
            )
        )
        capacity[:, p] = rps_column(itype)

    region_sections = {r.name: r for r in config.regions}
    check_demand(config, demand)
    by_size = size_classes(demand)
    classes = [c for name in models for c in by_size.get(name, ())]
    class_index = {(c.model, c.range): i for i, c in enumerate(classes)}
    demands: list[DemandSpec] = []
    for d in demand:
        source = region_sections[d.region]
        origin = resolve_location(catalog, source.location)
        near = tuple(
            loc_index[loc]
            for loc in locations
            if catalog.rtt_ms(origin, loc) <= source.max_latency_ms
        )
        m = model_index[d.model]
        if d.model not in by_size:
            demands.append(DemandSpec(m, d.region, d.rps, near))
            continue
        for b in demand_buckets(d):  # one demand per bucket, in its class
            c = class_index[d.model, (b.min_input_tokens, b.max_input_tokens)]
            demands.append(DemandSpec(m, d.region, d.rps * b.share, near, c))

    current = np.zeros_like(capacity, dtype=np.int64)
    pool_index = {o.pool: p for p, o in enumerate(offerings)}
    for pl in fleet:
        current[model_index[pl.model], pool_index[pl.pool]] += pl.count
    kept = np.zeros_like(current)
    for pl in committed:
        if pl.model in model_index and pl.pool in pool_index:
            kept[model_index[pl.model], pool_index[pl.pool]] += pl.count

    try:
        commitments = resolve_commitments(config, catalog)
    except CommitmentError as exc:
        raise PlanningError("config", str(exc)) from None
    commitment_of: list[int | None] = [None] * len(offerings)
    commitment_quotas: list[QuotaSpec] = []
    if commitments:
        offerings, pools, capacity, current, kept = _with_commitments(
            commitments, offerings, pools, capacity, current, kept, pool_index, commitment_of
        )
        for c, commitment in enumerate(commitments):
            members = tuple(p for p, of in enumerate(commitment_of) if of == c)
            commitment_quotas.append(
                QuotaSpec(f"commitments[{c}]", members, commitment.count * commitment.gpus)
            )

    try:
        spend = resolve_spend_commitments(config, catalog)
    except CommitmentError as exc:
        raise PlanningError("config", str(exc)) from None
    spend_of: list[int | None] = [None] * len(offerings)
    spend_caps: list[SpendCap] = []
    if spend:
        offerings, pools, capacity, current, kept = _with_savings_plans(
            spend, offerings, pools, capacity, current, kept, pool_index, spend_of
        )
        commitment_of.extend([None] * (len(offerings) - len(commitment_of)))
        for s, plan in enumerate(spend):
            spent_in = [p for p, of in enumerate(spend_of) if of == s]
            rate = dict(zip(plan.pools, plan.rate_usd_per_hour, strict=True))
            spend_caps.append(
                SpendCap(
                    f"commitments[{plan.index}]",
                    tuple(spent_in),
                    tuple(rate[offerings[p].pool] for p in spent_in),
                    plan.usd_per_hour_committed,
                )
            )

    quotas: list[QuotaSpec] = []
    for qi, q in enumerate(config.quotas):
        members = tuple(
            p for p, o in enumerate(offerings) if covers(q, o.pool, _gpu_kind(catalog, o.pool))
        )
        quotas.append(QuotaSpec(f"quotas[{qi}]", members, q.max_gpus))
    quotas.extend(commitment_quotas)

    class_specs = _class_specs(config, catalog, profiles, offerings, classes, model_index)
    problem = Problem(
        models=models,
        pools=tuple(pools),
        capacity_rps=capacity,
        demands=tuple(demands),
        current=current,
        min_replicas=tuple(m.min_replicas for m in config.models),
        # Batch demand waits out an interruption: no on-demand share, no robustness.
        min_on_demand_share=tuple(
            0.0 if m.deferrable_deadline_s is not None else m.min_on_demand_share
            for m in config.models
        ),
        priorities=tuple(m.priority for m in config.models),
        short=tuple(m.name in short for m in config.models),
        robust=tuple(m.deferrable_deadline_s is None for m in config.models),
        quotas=tuple(quotas),
        spend_caps=tuple(spend_caps),
        budget_usd_per_hour=config.planning.budget_usd_per_hour,
        robustness_fraction=config.planning.robustness_fraction,
        robustness_spare_nodes=config.planning.robustness_spare_nodes,
        priority_storm_share=config.planning.priority_storm_share,
        priority_storm_fraction=config.planning.priority_storm_fraction,
        unmet_penalty_usd_per_rps_hour=config.solver.unmet_penalty_usd_per_rps_hour,
        committed=np.minimum(kept, current) if committed else None,
        size_classes=class_specs,
    )
    cands = Candidates(
        tuple(offerings),
        models,
        locations,
        commitments,
        tuple(commitment_of),
        size_classes=tuple(classes),
        spend_commitments=spend,
        spend_of=tuple(spend_of),
    )
    return problem, cands


def _class_specs(
    config: Config,
    catalog: Catalog,
    profiles: Sequence[CapacityProfile],
    offerings: Sequence[Offering],
    classes: Sequence[SizeClass],
    model_index: Mapping[str, int],
) -> tuple[SizeClassSpec, ...]:
    """The solver's size classes: per class, a node's capacity in every pool for the
    class's mean size, from the one capacity function (`node_rps`)."""
    out: list[SizeClassSpec] = []
    for c in classes:
        by_shape: dict[tuple[str, int], float] = {}
        column = np.zeros(len(offerings), dtype=np.float64)
        for p, o in enumerate(offerings):
            itype = catalog.instance_types[(o.pool.cloud, o.pool.instance_type)]
            key = (itype.gpu_kind, itype.gpu_count)
            if key not in by_shape:
                by_shape[key] = node_rps(config, profiles, c.model, itype, size=c.size)
            column[p] = by_shape[key]
        out.append(SizeClassSpec(model_index[c.model], _class_key(c), column))
    return tuple(out)


def _class_key(c: SizeClass) -> str:
    hi = "inf" if c.max_input_tokens == float("inf") else f"{c.max_input_tokens:g}"
    return f"{c.model}[{c.min_input_tokens:g},{hi})"


@dataclass(frozen=True)
class _Prepaid:
    """Capacity paid for in advance, as `_with_prepaid` appends it: `room` units (nodes,
    or USD per hour), and per covered pool the units one node there draws from it."""

    label: str  # the commitment's label, appended to its copies' keys
    room: float  # what was paid for: a count of nodes, or USD per hour
    draws: tuple[tuple[Pool, float], ...]  # (covered pool, units per node; <= 0: free)


def _with_prepaid(
    prepaid: Sequence[_Prepaid],
    offerings: list[Offering],
    pools: list[PoolSpec],
    capacity: np.ndarray,
    current: np.ndarray,
    kept: np.ndarray,
    pool_index: Mapping[Pool, int],
    owner_of: list[int | None],
) -> tuple[list[Offering], list[PoolSpec], np.ndarray, np.ndarray, np.ndarray]:
    """The pools with one copy per (prepaid entry, covered pool the config allows),
    appended: the same offering, location and capacity at no marginal cost (risk 0:
    on-demand; the same churn terms, a boot is a boot), each holding at most the whole
    nodes its `room` pays for (a quota or spend cap over the copies holds it across
    models and pools). Current and booting nodes in a covered pool move to its copies
    first, in entry order, while the room left pays for whole nodes. `owner_of` is
    extended in place with the entry index of each copy."""
    offerings, pools = list(offerings), list(pools)
    columns: list[np.ndarray] = []
    cur_cols: list[np.ndarray] = []
    kept_cols: list[np.ndarray] = []
    for owner, entry in enumerate(prepaid):
        room = entry.room
        for pool, unit in entry.draws:
            p = pool_index.get(pool)
            if p is None:  # the config does not allow the pool: nothing to place there
                continue
            base = pools[p]
            most = base.max_nodes if unit <= 0 else int(entry.room / unit + 1e-9)
            if most <= 0:
                continue  # the room pays for no whole node of this type
            pools.append(
                dataclasses.replace(
                    base,
                    key=f"{base.key}#{entry.label}",
                    usd_per_hour=0.0,
                    risk_usd_per_hour=0.0,
                    max_nodes=min(most, base.max_nodes),
                    budget_usd_per_hour=base.listed_usd_per_hour,
                )
            )
            offerings.append(offerings[p])
            owner_of.append(owner)
            columns.append(capacity[:, p])
            moved = np.zeros(current.shape[0], dtype=np.int64)
            for m in range(current.shape[0]):
                take = int(current[m, p])
                if unit > 0:
                    take = min(take, int(room / unit + 1e-9))
                moved[m] = take
                room -= take * unit
            # Booting nodes of a model stay booting wherever its nodes are counted: the
            # copy keeps as many of them as it took nodes, the rest stay in the pool.
            kept_moved = np.minimum(kept[:, p], moved)
            current[:, p] -= moved
            kept[:, p] -= kept_moved
            cur_cols.append(moved)
            kept_cols.append(kept_moved)
    if not columns:
        return offerings, pools, capacity, current, kept
    return (
        offerings,
        pools,
        np.column_stack([capacity, *columns]),
        np.column_stack([current, *cur_cols]),
        np.column_stack([kept, *kept_cols]),
    )


def _with_savings_plans(
    plans: Sequence[SpendCommitment],
    offerings: list[Offering],
    pools: list[PoolSpec],
    capacity: np.ndarray,
    current: np.ndarray,
    kept: np.ndarray,
    pool_index: Mapping[Pool, int],
    spend_of: list[int | None],
) -> tuple[list[Offering], list[PoolSpec], np.ndarray, np.ndarray, np.ndarray]:
    """`_with_prepaid` for savings plans: room in USD per hour, a node drawing its rate.
    Current nodes left in a covered pool (after the count commitments took theirs) move
    to its copies, best discount first: the coverage rule of
    `scheduler.fleet.commitments.split_spend` without its share of one node at the end
    (a node the amount pays for only in part is planned at its on-demand price)."""
    prepaid = [
        _Prepaid(
            plan.label,
            plan.usd_per_hour_committed,
            tuple(zip(plan.pools, plan.rate_usd_per_hour, strict=True)),
        )
        for plan in plans
    ]
    return _with_prepaid(prepaid, offerings, pools, capacity, current, kept, pool_index, spend_of)


def _with_commitments(
    commitments: Sequence[Commitment],
    offerings: list[Offering],
    pools: list[PoolSpec],
    capacity: np.ndarray,
    current: np.ndarray,
    kept: np.ndarray,
    pool_index: Mapping[Pool, int],
    commitment_of: list[int | None],
) -> tuple[list[Offering], list[PoolSpec], np.ndarray, np.ndarray, np.ndarray]:
    """`_with_prepaid` for count commitments: room in nodes, a node drawing one; the
    coverage rule of `scheduler.fleet.commitments`."""
    prepaid = [
        _Prepaid(c.label, float(c.count), tuple((pool, 1.0) for pool in c.pools))
        for c in commitments
    ]
    return _with_prepaid(
        prepaid, offerings, pools, capacity, current, kept, pool_index, commitment_of
    )


def to_plan(problem: Problem, cands: Candidates, solution: Solution) -> Plan:
    """The solver's answer in domain terms."""
    # A committed pool is a copy of its on-demand pool: their nodes are one placement.
    counts: dict[tuple[str, Pool], int] = {}
    for m, p in zip(*np.nonzero(solution.nodes), strict=True):
        key = (cands.models[m], cands.offerings[p].pool)
        counts[key] = counts.get(key, 0) + int(solution.nodes[m, p])
    routes = _routes(cands, solution)
    placements = tuple(
        Placement(model, pool, n, routes.get((model, pool), ()))
        for (model, pool), n in counts.items()
    )
    uses = _commitment_uses(cands, solution)
    savings = _savings_plan_uses(cands, solution)
    usd_per_hour = solution.usd_per_hour
    per_pool = solution.nodes.sum(axis=0)
    if uses or savings:  # the fleet at list prices, committed nodes too (what the budget counts)
        usd_per_hour = float(
            sum(o.usd_per_hour * int(per_pool[p]) for p, o in enumerate(cands.offerings))
        )
    first_commitment = len(problem.quotas) - len(cands.commitments)  # appended last
    # What the plan keeps: without the on-demand shares it dropped (spot may serve them).
    kept_problem = problem.without_share(solution.share_relaxed)
    reasons = unmet_reasons(
        kept_problem, solution, commitment_quotas=range(first_commitment, len(problem.quotas))
    )
    unmet = _unmet(problem, cands, solution, reasons)
    notes: list[str] = []
    if solution.kept_current:
        notes.append("kept the current fleet: no cheaper feasible plan found")
    kept = tuple(cands.models[m] for m in solution.kept_models)
    if kept:
        notes.append(f"not searched, the last target still serves: {', '.join(kept)}")
    if solution.status is Status.INFEASIBLE:
        notes.append("hard constraints conflict (budget, quotas, minimum replicas)")
    notes.extend(_RELAXED_NOTES[r] for r in solution.relaxed if r in _RELAXED_NOTES)
    share_relaxed = tuple(cands.models[m] for m in solution.share_relaxed)
    for m in solution.share_relaxed:
        notes.append(
            f"the budget cannot pay for {cands.models[m]}'s demand (priority"
            f" {problem.priority(m)}), now or one node's growth ahead, with its"
            f" min_on_demand_share {problem.on_demand_share_min(m):g}: dropped for it,"
            " spot may serve it"
        )
    for short in solution.uncovered:  # docs/solver.md, "Cover under a binding budget"
        reach = ", ".join(cands.locations[loc] for loc in short.locations)
        notes.append(
            f"{short.load_rps:.2f} rps of {cands.models[short.model]} in reach {reach}"
            f" without {'storm' if short.storm else 'spot-loss'} cover: budget (served"
            " first, covered second)"
        )
    tolerated = sorted(
        cands.offerings[p].pool.key
        for p, spec in enumerate(problem.pools)
        if spec.loss_tolerated and per_pool[p] > 0
    )
    if tolerated:
        notes.append(
            f"no spot-loss cover for {len(tolerated)} pool(s), a loss there is replaced in"
            f" time (boot within the notice, or planning.spot_loss_tolerance): "
            + ", ".join(tolerated[:3])
            + (", ..." if len(tolerated) > 3 else "")
        )
    return Plan(
        status=PlanStatus(solution.status.value),
        placements=tuple(sorted(placements, key=lambda pl: (pl.model, pl.pool))),
        usd_per_hour=usd_per_hour,
        objective=solution.objective,
        gap=solution.gap,
        solve_time_s=solution.solve_time_s,
        unmet=unmet,
        notes=tuple(notes),
        kept_models=kept,
        limited_by=_limits_of(reasons.values()),
        relaxed=solution.relaxed,
        share_relaxed=share_relaxed,
        commitments=uses,
        savings_plans=savings,
    )


def _routes(cands: Candidates, solution: Solution) -> dict[tuple[str, Pool], tuple[SizeRoute, ...]]:
    """Per (model, pool) of the plan, the load of each size class its nodes serve (a
    committed pool's with its on-demand pool's), in increasing prompt range."""
    if solution.class_rps is None:
        return {}
    acc: dict[tuple[str, Pool], dict[tuple[float, float], float]] = {}
    for c, p in zip(*np.nonzero(solution.class_rps), strict=True):
        cls = cands.size_classes[c]
        per = acc.setdefault((cls.model, cands.offerings[p].pool), {})
        per[cls.range] = per.get(cls.range, 0.0) + float(solution.class_rps[c, p])
    return {
        key: tuple(SizeRoute(lo, hi, rps) for (lo, hi), rps in sorted(per.items()))
        for key, per in acc.items()
    }


def _unmet(
    problem: Problem,
    cands: Candidates,
    solution: Solution,
    reasons: Mapping[int, tuple[UnmetReason, ...]],
) -> tuple[Unmet, ...]:
    """The unmet demand per (model, region), in demand order: a model placed by size has
    one solver demand per size bucket, summed here (reasons: any bucket's)."""
    found: dict[tuple[int, str], tuple[float, set[UnmetReason]]] = {}
    for k, (d, rps) in enumerate(zip(problem.demands, solution.unmet_rps, strict=True)):
        if k not in reasons:
            continue
        total, why = found.get((d.model, d.region), (0.0, set()))
        found[d.model, d.region] = (total + rps, why | set(reasons[k]))
    return tuple(
        Unmet(
            cands.models[m],
            region,
            rps,
            priority=problem.priority(m),
            reasons=tuple(r for r in UnmetReason if r in why),
        )
        for (m, region), (rps, why) in found.items()
    )


def _commitment_uses(cands: Candidates, solution: Solution) -> tuple[CommitmentUse, ...]:
    """Per commitment, the nodes the solution places in its committed pools."""
    used = [0] * len(cands.commitments)
    for p, c in enumerate(cands.commitment_of):
        if c is not None:
            used[c] += int(solution.nodes[:, p].sum())
    return tuple(
        CommitmentUse(
            label=c.label,
            kind=c.kind.value,
            pools=c.pools,
            count=c.count,
            used=n,
            usd_per_hour=c.usd_per_hour,
            on_demand_usd_per_hour=c.on_demand_usd_per_hour,
        )
        for c, n in zip(cands.commitments, used, strict=True)
    )


def _savings_plan_uses(cands: Candidates, solution: Solution) -> tuple[SavingsPlanUse, ...]:
    """Per savings plan, the nodes the solution places on it and what they draw."""
    out = []
    for s, plan in enumerate(cands.spend_commitments):
        rate = dict(zip(plan.pools, plan.rate_usd_per_hour, strict=True))
        nodes = drawn = listed = 0.0
        for p, of in enumerate(cands.spend_of):
            if of == s:
                n = int(solution.nodes[:, p].sum())
                pool = cands.offerings[p].pool
                nodes += n
                drawn += n * rate[pool]
                listed += n * cands.offerings[p].usd_per_hour
        out.append(
            SavingsPlanUse(
                label=plan.label,
                pools=plan.pools,
                usd_per_hour_committed=plan.usd_per_hour_committed,
                usd_per_hour_used=drawn,
                nodes=int(nodes),
                on_demand_usd_per_hour=listed,
            )
        )
    return tuple(out)


_RELAXED_NOTES = {
    Relaxation.MIN_REPLICAS: (
        "the budget or quotas cannot pay for every model's min_replicas: dropped, the plan"
        " serves what it can within them"
    ),
    Relaxation.COMMITTED: (
        "the budget or quotas cannot pay for the nodes still booting: the plan may cancel some"
    ),
}


def _gpu_kind(catalog: Catalog, pool: Pool) -> str | None:
    """The accelerator of `pool`'s instance type (None: a type the catalog lacks)."""
    itype = catalog.instance_types.get((pool.cloud, pool.instance_type))
    return itype.gpu_kind if itype is not None else None


_LIMIT_OF = {UnmetReason.BUDGET: HoldKind.BUDGET, UnmetReason.QUOTA: HoldKind.QUOTA}


def _limits_of(reasons: Iterable[tuple[UnmetReason, ...]]) -> tuple[HoldKind, ...]:
    found = {_LIMIT_OF[r] for rs in reasons for r in rs if r in _LIMIT_OF}
    return tuple(k for k in HoldKind if k in found)


def binding_limits(problem: Problem, solution: Solution) -> tuple[HoldKind, ...]:
    """The hard limits that left demand unmet: for some unmet demand, every pool that
    could serve it (capacity, in reach, room left) would break the budget or a quota
    with one more node. Unmet demand that no pool could serve at all (nothing in reach,
    every pool stocked out) is no limit's doing and reports none."""
    return _limits_of(unmet_reasons(problem, solution).values())


def unmet_reasons(
    problem: Problem, solution: Solution, commitment_quotas: Collection[int] = ()
) -> dict[int, tuple[UnmetReason, ...]]:
    """Why each demand the solution leaves unmet is unmet, by demand index (only those
    with unmet load). One more node in any pool that could serve it (capacity > 0, in
    reach, room left; on-demand only for a model with a minimum on-demand share, and no
    spot pool that can vanish under spot-loss robustness, where such a spot node alone
    serves nothing more): when each such
    pool would break the budget or a quota, those limits (BUDGET, QUOTA); when there is
    no such pool, CAPACITY; when one would break nothing, COST (not worth a node at the
    unmet penalty, or the search stopped).

    `commitment_quotas` are the quotas that hold commitments' counts (`build_problem`): a
    committed pool whose commitment is used up has no room, and is no limit's doing (its
    on-demand pool next to it has the same capacity at the list price); so is a savings
    plan's copy whose amount cannot pay for one more node (`Problem.spend_caps`)."""
    tol = 1e-6
    unmet = [
        (k, d)
        for k, (d, rps) in enumerate(zip(problem.demands, solution.unmet_rps, strict=True))
        if rps > tol
    ]
    if not unmet:
        return {}
    budget = problem.budget_usd_per_hour
    nodes = solution.nodes
    per_pool = nodes.sum(axis=0)
    gpus_used = [
        sum(int(per_pool[i]) * problem.pools[i].gpus for i in q.pools) for q in problem.quotas
    ]
    members = [frozenset(q.pools) for q in problem.quotas]
    used_up = {
        i
        for qi in commitment_quotas
        if gpus_used[qi] >= problem.quotas[qi].max_gpus
        for i in problem.quotas[qi].pools
    }
    # A savings plan's copy has no room once its amount cannot pay for one more node.
    used_up |= {
        i
        for cap in problem.spend_caps
        for i, w in zip(cap.pools, cap.usd_per_hour, strict=True)
        if cap.drawn(per_pool) + w > cap.max_usd_per_hour + tol
    }
    price = sum(pool.listed_usd_per_hour * int(per_pool[i]) for i, pool in enumerate(problem.pools))
    out: dict[int, tuple[UnmetReason, ...]] = {}
    total: dict[int, float] = {}
    for d in problem.demands:
        total[d.model] = total.get(d.model, 0.0) + d.rps
    for k, d in unmet:
        blocked: set[UnmetReason] = set()
        room = False
        share_bound = problem.on_demand_share_min(d.model) > 0
        robust = problem.robustness_share(d.model, total[d.model]) > 0
        for i, pool in enumerate(problem.pools):
            if (
                (pool.spot and share_bound)
                or (pool.vanishes and robust)
                or i in used_up
                or problem.capacity_rps[d.model, i] <= 0
                or pool.location not in d.locations
                or nodes[d.model, i] >= pool.max_nodes
            ):
                continue
            room = True
            why: set[UnmetReason] = set()
            if budget is not None and price + pool.listed_usd_per_hour > budget + tol:
                why.add(UnmetReason.BUDGET)
            for q, inside, used in zip(problem.quotas, members, gpus_used, strict=True):
                if i in inside and used + pool.gpus > q.max_gpus:
                    why.add(UnmetReason.QUOTA)
            if not why:
                blocked = {UnmetReason.COST}  # one more node here breaks no limit
                break
            blocked |= why
        out[k] = tuple(r for r in UnmetReason if r in blocked) if room else (UnmetReason.CAPACITY,)
    return out


def make_plan(
    config: Config,
    catalog: Catalog,
    profiles: Sequence[CapacityProfile],
    demand: Sequence[Demand],
    fleet: Sequence[Placement] = (),
    keep_models: Collection[str] = (),
    committed: Sequence[Placement] = (),
    short: Collection[str] = (),
) -> Plan:
    """Build the problem, solve it under the config's limits, and return the plan.

    Models named in `keep_models` keep their nodes in `fleet` without a search when
    those serve the model's demand on their own (see `solver.solve`); the plan keeps
    at least the `committed` nodes (see `build_problem`).
    """
    problem, cands = build_problem(config, catalog, profiles, demand, fleet, committed, short)
    keep = [i for i, name in enumerate(cands.models) if name in set(keep_models)]
    log.debug("solve_started models=%d pools=%d", len(cands.models), len(problem.pools))
    solution = solve(
        problem,
        time_limit_s=config.solver.time_limit_s,
        seed=config.solver.seed,
        workers=config.solver.workers,
        backend=config.solver.backend,
        gap_tolerance=config.solver.gap_tolerance,
        node_limit=config.solver.node_limit,
        keep_models=keep,
        grow_kept=config.planning.rise_adds_only,
    )
    plan = to_plan(problem, cands, solution)
    log.info(
        "plan status=%s usd_per_hour=%.2f gap=%.4f solve_time_s=%.3f pools=%d unmet_rps=%.2f"
        " models_kept=%d",
        plan.status,
        plan.usd_per_hour,
        plan.gap,
        plan.solve_time_s,
        len(problem.pools),
        sum(u.rps for u in plan.unmet),
        len(solution.kept_models),
    )
    if plan.share_relaxed:
        log.info(
            "plan_relaxed relaxation=%s models=%s",
            Relaxation.ON_DEMAND_SHARE.value,
            ",".join(plan.share_relaxed),
        )
    return plan
