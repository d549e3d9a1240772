"""What the baselines share: capacity per node, which pools serve which traffic, what
the trace tells a policy up front, observed rates, delays, and turning counts into a Plan.

Nothing here reads the clock; every time is an argument (virtual time in simulations).

Services. Ray Serve and SkyServe scale one deployment (service) of identical replicas
behind one load balancer; neither knows about per-region latency limits. capsched's
config has several source regions, each with a network latency limit. To keep the
baselines honest about latency without inventing a policy they do not have, each
(model, source region) is served by its own service, restricted to the pools within
that region's latency limit. A pool belongs to the nearest source region that may use
it (ties by name), so services never share a pool and each node has exactly one
owner. A source region that owns no usable pool (same location as another source, or
none within its limit) joins the service owning the cheapest pool it may use (or, if
it may use none, the service owning the cheapest pool overall; its traffic then
breaks its latency limit, which the engine's accounting will show).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from adapters.sim import SpotTrace
from scheduler.config import Config
from scheduler.decide.observation import Observation
from scheduler.decide.planner import config_allows, resolve_location
from scheduler.domain import (
    CapacityProfile,
    Market,
    Node,
    NodeState,
    Offering,
    Placement,
    Plan,
    PlanStatus,
    Pool,
    RequestSize,
    TokenCost,
    prices_of,
)
from scheduler.fleet.capacity import NodeCapacity
from scheduler.fleet.catalog import Catalog
from scheduler.fleet.profiles import (
    best_profile,
    load_models,
    load_token_costs,
    size_factors,
    token_cost,
)

# Removal order of surplus nodes, as SkyServe's `_select_nonterminal_replicas_to_scale_down`
# (sky/serve/autoscalers.py) orders replica statuses: the earliest stage goes first
# because a later stage is closer to serving.
_STAGE = {NodeState.REQUESTED: 0, NodeState.BOOTING: 1, NodeState.READY: 2}

# A pool count with no upper bound in the trace (on-demand, or spot pools without a trace).
UNLIMITED = 1 << 30


@dataclass(frozen=True, slots=True)
class Foresight:
    """What a replay knows before it starts: the whole demand and spot-capacity series.

    Only `static-peak` (its peak) and `oracle` (everything) read it; the online
    baselines see nothing but their observations.
    """

    start_s: float  # time of step 0 (same clock as Observation.now_s)
    step_s: float  # seconds between steps
    demand_rps: Mapping[tuple[str, str], Sequence[float]]  # (model, region) -> rps per step
    spot_capacity: Mapping[Pool, Sequence[int]] = field(
        default_factory=dict
    )  # spot pool -> instances it can hold per step; a pool absent here is unlimited
    offerings: tuple[Offering, ...] | None = None  # prices of the run; None = the catalog's
    spot_capacity_peak: Mapping[Pool, Sequence[int]] = field(
        default_factory=dict
    )  # spot pool -> most instances that can be running at the start of each step (an
    # instance under notice still runs); a pool absent here falls back to spot_capacity
    # Demand for a lower bound where it differs from `demand_rps` (sized traces: rps in
    # reference requests at the most favourable shape, `SizeFactors`); None: the same.
    demand_rps_bound: Mapping[tuple[str, str], Sequence[float]] | None = None
    # Models whose nodes the oracle counts at each step's own size (a per-token SLO: the
    # batch, and so the rate, depends on the size per shape, `StepRates`): per such model
    # its mean request size per step (None: the reference), and per (model, region) of
    # theirs the requests/s as the trace has them, which the oracle plans for instead of
    # the reference requests of `demand_rps`.
    sizes: Mapping[str, Sequence[RequestSize | None]] = field(default_factory=dict)
    demand_requests: Mapping[tuple[str, str], Sequence[float]] = field(default_factory=dict)

    def demand_for(self, *, bound: bool) -> Mapping[tuple[str, str], Sequence[float]]:
        """The demand series a schedule (`bound=False`) or a lower bound plans for (the
        oracle's): requests as the trace has them for the models in `sizes`, else reference
        requests (`SizeFactors`)."""
        base = self.demand_rps_bound if bound and self.demand_rps_bound is not None else None
        base = base if base is not None else self.demand_rps
        if not self.demand_requests:
            return base
        return {**base, **self.demand_requests}

    def __post_init__(self) -> None:
        if self.step_s <= 0:
            raise ValueError("step_s must be > 0")
        lengths = {len(v) for v in self.demand_rps.values()}
        lengths |= {len(v) for v in self.spot_capacity.values()}
        lengths |= {len(v) for v in self.spot_capacity_peak.values()}
        lengths |= {len(v) for v in self.sizes.values()}
        lengths |= {len(v) for v in self.demand_requests.values()}
        if len(lengths) > 1:
            raise ValueError(f"every series must have the same length, got {sorted(lengths)}")

    @property
    def steps(self) -> int:
        """Number of steps in the horizon."""
        for v in self.demand_rps.values():
            return len(v)
        for c in self.spot_capacity.values():
            return len(c)
        return 0

    def step_at(self, now_s: float) -> int:
        """Index of the step containing `now_s`, clamped to the horizon."""
        i = math.floor((now_s - self.start_s) / self.step_s + 1e-9)
        return min(max(i, 0), max(self.steps - 1, 0))


class SizeFactors:
    """Per model, the least and the most a request size can change one node's rate,
    over the node shapes that can serve it: the baselines' one rule for sized demand.

    The replay's nodes serve a minute of mean size s at profile rps x `size_factor`
    (simulations.engine). A baseline that sizes whole fleets from rates counts sized
    demand in reference requests: rps / f_low(s) for a schedule that must hold on
    every shape (f_low: the smallest factor of the best reference-size profiles of
    the shapes the config allows), rps / f_high(s) for a lower bound that must hold
    for any fleet (f_high: the largest factor of any of the model's token cost models,
    which bounds what a shape's best profile at size s can reach)."""

    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        profiles: Sequence[CapacityProfile],
        offerings: Iterable[Offering],
    ) -> None:
        known = {m.name: m for m in load_models()}
        self._low: dict[str, list[TokenCost]] = {}  # model -> token costs of its shapes' best
        self._high: dict[str, list[TokenCost]] = {}  # model -> every token cost of its profile
        for section in config.models:
            name = section.profile or section.name
            info = known.get(name)
            slo = section.latency_slo_ms or (info.latency_slo_ms if info else math.inf)
            shapes: set[tuple[str, int]] = set()
            for o in offerings:
                itype = catalog.instance_type(o.pool)
                best = best_profile(
                    profiles, name, itype, slo, info.gpu_memory_gb if info else None
                )
                if best is not None:
                    shapes.add((best[0].gpu_kind, best[0].gpu_count))
            low = [token_cost(name, k, n) for k, n in sorted(shapes)]
            self._low[section.name] = [c for c in low if c is not None]
            self._high[section.name] = [c for c in load_token_costs() if c.model == name]

    def bounds(
        self, model: str, input_tokens: np.ndarray, output_tokens: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(f_low, f_high) per size (NaN sizes: the reference request, factor 1); both 1
        where the model has no token cost model."""
        ones = np.ones(np.shape(input_tokens))
        low, high = self._low.get(model, []), self._high.get(model, [])
        f_low = [size_factors(c, input_tokens, output_tokens) for c in low]
        f_high = [size_factors(c, input_tokens, output_tokens) for c in high]
        return (
            np.minimum.reduce(f_low) if f_low else ones,
            np.maximum.reduce(f_high) if f_high else ones,
        )


class StepRates:
    """Per (model, pool), the rate one node carries at each step's request size, for the
    models of `Foresight.sizes` (`NodeCapacity.rps` at the size: the planner's rate, with
    its batch for the size; docs/profiles.md "Latency SLOs"), else at the reference size.
    Over a block of steps: the least (a schedule that must hold at every step) or the
    most (a lower bound: a block's mean load within its most a node carries is implied by
    every step's).

    A (model, pool)'s rates are asked for once per distinct size and kept: the oracle's
    pool pruning compares every pair of pools and its rounding reads every block, so
    asking `NodeCapacity` per step and per call made the x10 prompts' oracle take more
    than 10 minutes (docs/profiles.md "the oracle at each step's size")."""

    def __init__(self, capacity: NodeCapacity, sizes: Mapping[str, Sequence[RequestSize | None]]):
        self.capacity = capacity  # planned (or full) rps per node
        self._sizes = sizes  # model -> size per step
        # model -> its distinct sizes (sorted by size; None, the reference, first) and per
        # step the index of the step's size among them
        self._order: dict[str, tuple[tuple[RequestSize | None, ...], np.ndarray]] = {}
        # (model, pool) -> its rate at each distinct size, and at each step
        self._distinct: dict[tuple[str, Pool], tuple[float, ...]] = {}
        self._steps: dict[tuple[str, Pool], np.ndarray] = {}

    def sized(self, model: str) -> bool:
        """Whether `model`'s rates follow the steps' sizes."""
        return model in self._sizes

    def at(self, model: str, pool: Pool, step: int) -> float:
        """Requests/s of one node of `model` in `pool` at `step`'s size."""
        if model not in self._sizes:
            return self.capacity.rps(model, pool)
        return float(self._per_step(model, pool)[step])

    def over(self, model: str, pool: Pool, first: int, n: int, *, most: bool) -> float:
        """The least (or with `most` the largest) `at` over steps first .. first + n - 1."""
        if model not in self._sizes:
            return self.capacity.rps(model, pool)
        got = self._per_step(model, pool)[first : first + max(n, 0)]
        if got.size == 0:
            return 0.0
        return float(got.max() if most else got.min())

    def distinct(self, model: str, pool: Pool) -> tuple[float, ...]:
        """`model`'s rate in `pool` at each of its distinct sizes (sorted by size), or at
        the reference: what comparing two pools for every step needs."""
        if model not in self._sizes:
            return (self.capacity.rps(model, pool),)
        key = (model, pool)
        got = self._distinct.get(key)
        if got is None:
            sizes, _ = self._sizes_of(model)
            got = self._distinct[key] = tuple(self.capacity.rps(model, pool, s) for s in sizes)
        return got

    def _sizes_of(self, model: str) -> tuple[tuple[RequestSize | None, ...], np.ndarray]:
        if model not in self._order:
            steps = self._sizes[model]
            keys = tuple(
                sorted(
                    set(steps),
                    key=lambda s: (0.0, 0.0) if s is None else (s.input_tokens, s.output_tokens),
                )
            )
            at = {s: i for i, s in enumerate(keys)}
            self._order[model] = (keys, np.array([at[s] for s in steps], dtype=np.int64))
        return self._order[model]

    def _per_step(self, model: str, pool: Pool) -> np.ndarray:
        key = (model, pool)
        got = self._steps.get(key)
        if got is None:
            _, index = self._sizes_of(model)
            got = self._steps[key] = np.asarray(self.distinct(model, pool), dtype=np.float64)[index]
        return got


def running_spot_peak(trace: SpotTrace, n_steps: int, step_s: float, notice_s: float) -> list[int]:
    """Per step, the most instances of a traced spot pool that can be running at the
    step's start: the largest count in force over [start - notice_s, start], since an
    instance told to leave keeps running through its notice. Times before the trace's
    time 0 hold its count at 0, as the replay's warm-up does."""
    start = np.arange(n_steps, dtype=np.float64) * step_s
    first = np.floor((np.maximum(start - notice_s, 0.0) + trace.offset_s) / trace.gap_s)
    first = first.astype(np.int64)
    last = np.floor((start + trace.offset_s) / trace.gap_s).astype(np.int64)
    width = int((last - first).max(initial=0)) + 1
    # Every tick in force over the window (padded with its last one), as `index_at` maps them.
    idx = np.maximum(np.minimum(first[:, None] + np.arange(width)[None, :], last[:, None]), 0)
    n = len(trace.counts)
    idx = idx % n if trace.loop else np.minimum(idx, n - 1)
    return [int(v) for v in np.asarray(trace.counts)[idx].max(axis=1, initial=0)]


def ceil_div(rps: float, per_node_rps: float) -> int:
    """Nodes of `per_node_rps` needed for `rps` (float noise does not add a node)."""
    if rps <= 0:
        return 0
    return math.ceil(rps / per_node_rps - 1e-9)


def permitted(config: Config, catalog: Catalog, offering: Offering) -> bool:
    """Whether config lets this pool be used at all (clouds, regions, markets, GPU kinds),
    whatever its availability right now."""
    itype = catalog.instance_type(offering.pool)
    return config_allows(config, offering.pool, itype)


@dataclass(frozen=True, slots=True)
class Service:
    """One deployment a baseline scales: a model for some source regions, on its own pools."""

    model: str  # model served
    regions: tuple[str, ...]  # source regions whose traffic it serves (config names)
    pools: tuple[Pool, ...]  # pools it may place nodes in (both markets), sorted
    pool_set: frozenset[Pool] = field(init=False, compare=False, repr=False)  # the same, hashed

    def __post_init__(self) -> None:
        object.__setattr__(self, "pool_set", frozenset(self.pools))

    @property
    def name(self) -> str:
        """Readable label for notes."""
        return f"{self.model}@{'+'.join(self.regions)}"

    def demand(self, rates: Mapping[tuple[str, str], float]) -> float | None:
        """Total rps of its regions in `rates`; None when any of them is missing or bad."""
        total = 0.0
        for region in self.regions:
            v = rates.get((self.model, region), math.nan)
            if not (math.isfinite(v) and v >= 0):
                return None
            total += v
        return total

    def nodes(self, obs: Observation) -> list[Node]:
        """Its nodes that count as capacity now or soon (see Observation.serving)."""
        mine = self.pool_set
        return [n for n in obs.serving() if n.model == self.model and n.pool in mine]


def partition_services(
    config: Config,
    catalog: Catalog,
    capacity: NodeCapacity,
    offerings: Iterable[Offering],
) -> tuple[Service, ...]:
    """Split every model's traffic and pools into services (see the module docstring)."""
    usable = [o for o in offerings if permitted(config, catalog, o)]
    origins = {r.name: resolve_location(catalog, r.location) for r in config.regions}
    limits = {r.name: r.max_latency_ms for r in config.regions}
    names = sorted(origins)
    services: list[Service] = []
    for section in config.models:
        model = section.name
        offers = [o for o in usable if capacity.rps(model, o.pool) > 0]

        def near(region: str, pool: Pool) -> bool:
            return catalog.rtt_ms(origins[region], pool.location) <= limits[region]

        def unit_price(o: Offering, model: str = model) -> tuple[float, str]:
            return (o.usd_per_hour / capacity.rps(model, o.pool), o.pool.key)

        owner: dict[Pool, str] = {}
        for o in offers:
            loc = o.pool.location
            eligible = [(catalog.rtt_ms(origins[r], loc), r) for r in names if near(r, o.pool)]
            if eligible:
                owner[o.pool] = min(eligible)[1]
        owned: dict[str, list[Pool]] = {r: [] for r in names}
        for pool, r in owner.items():
            owned[r].append(pool)
        heads = [r for r in names if owned[r]]
        if not heads:
            # Nothing within any latency limit: one service for all traffic on every pool.
            if offers:
                services.append(Service(model, tuple(names), tuple(sorted(o.pool for o in offers))))
            continue
        members: dict[str, list[str]] = {r: [r] for r in heads}
        for r in names:
            if owned[r]:
                continue
            reachable = [o for o in offers if o.pool in owner and near(r, o.pool)]
            pick = min(reachable or [o for o in offers if o.pool in owner], key=unit_price)
            members[owner[pick.pool]].append(r)
        for r in heads:
            services.append(Service(model, tuple(sorted(members[r])), tuple(sorted(owned[r]))))
    return tuple(services)


def skyserve_removal_order(nodes: Iterable[Node]) -> list[Node]:
    """Nodes in the order a SkyServe-like scale-down takes them: earliest lifecycle stage
    first, then the most recently launched (SkyServe sorts by status, then replica id
    descending). This decides which pools a baseline shrinks; the node taken within a
    pool is `scheduler.decide.diff.removal_order`'s, as for every policy. The two differ on
    purpose (this one cancels booting nodes first, as SkyServe does; capsched keeps
    them), so the baselines stay faithful to the system they emulate."""
    return sorted(
        nodes,
        key=lambda n: (_STAGE.get(n.state, 3), -(n.launched_at_s or 0.0), n.node_id),
    )


def resize(
    nodes: Sequence[Node],
    target: int,
    choose: Callable[[list[Pool]], Pool | None],
) -> tuple[Counter[Pool], int]:
    """Per-pool counts that keep `target` of `nodes` (removing in `skyserve_removal_order`) or add
    nodes one at a time where `choose(current pools)` says. Returns the counts and how
    many nodes could not be placed (`choose` returned None)."""
    kept = list(nodes)
    if len(kept) > target:
        drop = {n.node_id for n in skyserve_removal_order(kept)[: len(kept) - target]}
        kept = [n for n in kept if n.node_id not in drop]
    pools = [n.pool for n in kept]
    missing = 0
    for _ in range(target - len(kept)):
        pool = choose(pools)
        if pool is None:
            missing += 1
            continue
        pools.append(pool)
    return Counter(pools), missing


def to_plan(
    counts: Mapping[tuple[str, Pool], int],
    prices: Mapping[Pool, float],
    notes: Sequence[str] = (),
    status: PlanStatus = PlanStatus.FEASIBLE,
) -> Plan:
    """A Plan from target counts per (model, pool); its price from `prices`."""
    placements = tuple(
        Placement(model, pool, int(count))
        for (model, pool), count in sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1]))
        if count > 0
    )
    usd = sum(prices.get(pl.pool, 0.0) * pl.count for pl in placements)
    return Plan(
        status=status,
        placements=placements,
        usd_per_hour=usd,
        objective=usd,
        gap=0.0,
        solve_time_s=0.0,
        notes=tuple(notes),
    )


@dataclass
class RateWindow:
    """Mean observed rate over a trailing window, as Ray Serve's `look_back_period_s` and
    SkyServe's `AUTOSCALER_QPS_WINDOW_SIZE_SECONDS` average load. A sample that is
    missing is skipped, never read as zero."""

    window_s: float  # length of the trailing window
    samples: deque[tuple[float, float]] = field(default_factory=deque)  # (at_s, rps), in order

    def add(self, at_s: float, rps: float) -> None:
        """Record one observed rate (ignored when not finite or negative, or out of order)."""
        if not (math.isfinite(rps) and rps >= 0):
            return
        if self.samples and at_s <= self.samples[-1][0]:
            return
        self.samples.append((at_s, rps))

    def mean(self, now_s: float) -> float | None:
        """Mean of the samples in (now - window, now]; the latest sample when the window
        holds none (ticks longer than the window); None before any sample."""
        while len(self.samples) > 1 and self.samples[0][0] <= now_s - self.window_s:
            self.samples.popleft()
        if not self.samples:
            return None
        inside = [v for t, v in self.samples if t > now_s - self.window_s]
        if not inside:
            return self.samples[-1][1]
        return sum(inside) / len(inside)


@dataclass
class Hysteresis:
    """A replica target that follows a desired value only after it has wanted to move in
    the same direction for a whole delay, measured on the observation clock.

    Ray Serve (`BasicAutoscalingPolicy.get_decision_num_replicas`) and SkyServe
    (`_AutoscalerWithHysteresis._set_target_num_replicas_with_hysteresis`) count
    consecutive control-loop periods (delay / period); a period count depends on the
    tick length, so here the same rule is kept in seconds: the change is applied once
    `now - first time it was wanted >= delay`, and the timer restarts whenever the
    desired value stops being on that side of the target.
    """

    target: int  # current target number of replicas
    upscale_delay_s: float  # how long a larger desired value must persist
    downscale_delay_s: float  # how long a smaller desired value must persist
    up_since_s: float | None = None  # first time of the current run of "wants more"
    down_since_s: float | None = None  # first time of the current run of "wants fewer"
    zero_scales_at_once: bool = False  # SkyServe: "faster scale up when there is no replica"

    def step(self, now_s: float, desired: int) -> int:
        """Advance to `now_s` with this tick's desired value; returns the target."""
        if self.zero_scales_at_once and self.target == 0:
            self.target = desired
            self.up_since_s = self.down_since_s = None
        elif desired > self.target:
            self.down_since_s = None
            if self.up_since_s is None:
                self.up_since_s = now_s
            if now_s - self.up_since_s >= self.upscale_delay_s:
                self.target, self.up_since_s = desired, None
        elif desired < self.target:
            self.up_since_s = None
            if self.down_since_s is None:
                self.down_since_s = now_s
            if now_s - self.down_since_s >= self.downscale_delay_s:
                self.target, self.down_since_s = desired, None
        else:
            self.up_since_s = self.down_since_s = None
        return self.target


class OfferingIndex:
    """An observation's offerings by pool, their prices and the unavailable pools,
    rebuilt only when the observation holds other offering objects than the last one.

    Offerings are frozen, and the reconciler passes the cloud's own objects on unless it
    marks one unavailable (a new object), so the same objects mean the same values.
    Hashing some 700 pools twice a tick was a third of a baseline's decision on a
    7-day replay. The mappings are shared between ticks: read them, never change them.
    """

    def __init__(self) -> None:
        self._ids: tuple[int, ...] | None = None  # identities of the indexed offerings
        self._held: tuple[Offering, ...] = ()  # keeps them alive, so no id is reused
        self.offers: dict[Pool, Offering] = {}  # pool -> offering
        self.prices: dict[Pool, float] = {}  # pool -> USD per hour
        self.unavailable: tuple[Pool, ...] = ()  # pools offered as unavailable, in order
        self._unique = False  # every pool offered once (entries can be patched in place)

    def update(self, offerings: Sequence[Offering]) -> OfferingIndex:
        """Index `offerings`: a no-op when they are the same objects as last time; only
        the changed entries when the same pool objects come in the same order (a pool
        cooled down by the reconciler is a new offering of the same pool)."""
        ids = tuple(map(id, offerings))
        if ids == self._ids:
            return self
        old = self._held
        if (
            self._unique
            and len(old) == len(offerings)
            and all(a.pool is b.pool for a, b in zip(old, offerings, strict=True))
        ):
            for a, b in zip(old, offerings, strict=True):
                if a is not b:
                    self.offers[b.pool] = b
                    self.prices[b.pool] = b.usd_per_hour
        else:
            self.offers = {o.pool: o for o in offerings}
            self.prices = prices_of(offerings)
            self._unique = len(self.offers) == len(offerings)  # else always rebuilt
        self._ids, self._held = ids, tuple(offerings)
        self.unavailable = tuple(o.pool for o in offerings if not o.available)
        return self


def peak_rps(foresight: Foresight, service: Service) -> float:
    """Largest summed demand of the service's regions over the foresight (the peak of
    the sum, not the sum of the peaks); 0 when the trace has none of them."""
    series = [foresight.demand_rps.get((service.model, region), ()) for region in service.regions]
    steps = max((len(s) for s in series), default=0)
    return max(
        (sum(s[t] for s in series if t < len(s)) for t in range(steps)),
        default=0.0,
    )


def reference_rates(
    obs: Observation, capacity: NodeCapacity, service: Service, instance_type: str | None
) -> Mapping[tuple[str, str], float]:
    """The service's observed rates in reference requests for its replica shape: each
    region's rate x (a replica's rate for the reference request / its rate at the
    region's observed mean size). The observed rates as they are where the sample has
    no sizes or the service no shape: a baseline's replica count then follows the load
    the replay's nodes really carry (simulations.engine), as capsched's plans do."""
    sample = obs.demand
    if not sample.input_tokens or instance_type is None:
        return sample.rps
    pool = next((p for p in service.pools if p.instance_type == instance_type), None)
    if pool is None:
        return sample.rps
    base = capacity.rps(service.model, pool)
    out = dict(sample.rps)
    for region in service.regions:
        key = (service.model, region)
        inp, outp = sample.input_tokens.get(key), sample.output_tokens.get(key)
        if key not in out or inp is None or outp is None or base <= 0:
            continue
        if not (math.isfinite(inp) and math.isfinite(outp) and inp > 0 and outp > 0):
            continue
        sized = capacity.rps(service.model, pool, RequestSize(inp, outp))
        if sized > 0:
            out[key] = out[key] * base / sized
    return out


def sizing_load(service: Service, obs: Observation, foresight: Foresight | None) -> float:
    """The load a service's replica shape is sized for: the trace's peak with foresight,
    else the rate observed now (0 when missing)."""
    if foresight is not None:
        return peak_rps(foresight, service)
    return service.demand(obs.demand.rps) or 0.0


@dataclass(frozen=True, slots=True)
class Fleet:
    """Whole replicas of one pool sized for a load."""

    pool: Pool  # where the replicas run (one instance type in one region, one market)
    replicas: int  # max(ceil(load / per-node rps), floor)
    price: float  # USD per hour of one replica

    @property
    def usd_per_hour(self) -> float:
        """Price of the whole fleet."""
        return self.replicas * self.price


def fleet_for_load(
    service: Service,
    offers: Mapping[Pool, Offering],
    capacity: NodeCapacity,
    load_rps: float,
    market: Market,
    *,
    floor: int = 0,
    instance_type: str | None = None,
) -> Fleet | None:
    """The cheapest fleet of whole replicas of one pool serving `load_rps` for the service.

    This is how an operator picks a deployment's replica shape for a known load (and
    how `static-peak` sizes for its peak): over the service's `market` pools present in
    `offers` (the caller decides whether unavailable ones count) that can serve the
    model (optionally only those of `instance_type`), replicas = max(ceil(load /
    per-node rps), floor) and the pool whose fleet costs least per hour wins; ties go to
    the lower price per replica, then the pool key (so a load of 0 picks the cheapest
    replica). The rounding to whole replicas is what keeps a small load off a large
    machine: one 8-GPU node for 10 rps costs more than the three 1-GPU nodes that carry
    it, even when the 8-GPU node is cheaper per rps at full use. The service's pools
    already respect the config's clouds, regions, markets, GPU kinds and each source
    region's latency limit (`partition_services`). None when no pool qualifies.
    """
    best: tuple[float, float, str, Fleet] | None = None
    for pool in service.pools:
        o = offers.get(pool)
        if o is None or pool.market is not market:
            continue
        if instance_type is not None and pool.instance_type != instance_type:
            continue
        per = capacity.rps(service.model, pool)
        if per <= 0:
            continue
        fleet = Fleet(pool, max(ceil_div(load_rps, per), floor), o.usd_per_hour)
        cand = (fleet.usd_per_hour, fleet.price, pool.key, fleet)
        if best is None or cand[:3] < best[:3]:
            best = cand
    return None if best is None else best[3]
