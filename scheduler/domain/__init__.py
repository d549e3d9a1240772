"""The scheduling domain: what we serve, where it can run, and what it costs.

Plain frozen dataclasses with units in their names. Everything else in capsched
(catalog, planner, actuator, simulator) speaks in these types; the solver does
not see them (it has its own index-based `solver.Problem`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from solver.problem import Relaxation

# The most nodes of one model a plan places in one pool: the planner's limit, the
# largest count a fleet file may give a pool, and the most launches one tick proposes
# for a pool (a plan from elsewhere asking for more is cut to it, see `diff.propose`).
MAX_NODES_PER_POOL = 10_000


class Market(enum.StrEnum):
    """How an instance is bought."""

    SPOT = "spot"  # reclaimable at short notice, discounted
    ON_DEMAND = "on-demand"  # not reclaimed, list price


class Cloud(enum.StrEnum):
    """Clouds capsched can place nodes on."""

    AWS = "aws"
    GCP = "gcp"


@dataclass(frozen=True, slots=True)
class Model:
    """An LLM we serve."""

    name: str  # unique name used in config, demand and fleet files
    params_b: float  # parameter count in billions, decides GPU memory needs
    gpu_memory_gb: float  # total GPU memory one replica needs (weights + KV cache)
    latency_slo_ms: float  # per-request end-to-end latency target at the profile's token mix


@dataclass(frozen=True, slots=True)
class TokenSlo:
    """A latency target stated the way serving systems state it: time to first token and
    time per output token (docs/profiles.md "Latency SLOs"). A request of `o` output
    tokens may take `ttft_ms + tpot_ms x o` end to end."""

    ttft_ms: float  # time to first token
    tpot_ms: float  # time per output token after the first

    def e2e_ms(self, output_tokens: float) -> float:
        """End-to-end latency allowed to a request of `output_tokens`."""
        return self.ttft_ms + self.tpot_ms * output_tokens


@dataclass(frozen=True, slots=True)
class InstanceType:
    """A machine shape a cloud sells, with its accelerators."""

    cloud: Cloud  # which cloud sells it
    name: str  # cloud's own name, e.g. "g6.xlarge" or "g2-standard-8"
    gpu_kind: str  # normalised accelerator name, e.g. "L4", "A100-80GB", "H100"
    gpu_count: int  # accelerators per instance
    gpu_memory_gb: float  # memory per accelerator
    vcpus: int  # virtual CPUs (AWS quotas count these)
    memory_gb: float  # host memory

    @property
    def total_gpu_memory_gb(self) -> float:
        """Memory of all accelerators together."""
        return self.gpu_memory_gb * self.gpu_count


@dataclass(frozen=True, slots=True, order=True)
class Pool:
    """Where a node can come from. A zone (or, without one, the region) is a failure domain."""

    cloud: Cloud  # cloud of the pool
    region: str  # cloud region, e.g. "us-east-1", "us-central1"
    zone: str  # zone, e.g. "us-central1-a"; "" when the cloud picks the zone (AWS here)
    instance_type: str  # instance type name within the cloud
    market: Market  # spot or on-demand
    # Pools key most dicts of a tick (thousands of lookups); the hash of the fields, enums
    # included, is computed once rather than on every lookup.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fields = (self.cloud, self.region, self.zone, self.instance_type, self.market)
        object.__setattr__(self, "_hash", hash(fields))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[Pool], tuple[Cloud, str, str, str, Market]]:
        # Rebuilt, not restored: string hashes differ between processes (sweep workers,
        # Ray tasks), so a hash computed in one would not match equal pools in another.
        return (Pool, (self.cloud, self.region, self.zone, self.instance_type, self.market))

    @property
    def location(self) -> str:
        """The "cloud:region" key of the pool's region, as the catalog's coordinates and
        latency table name it (`Catalog.region_coords`)."""
        return f"{self.cloud}:{self.region}"

    @property
    def failure_domain(self) -> str:
        """The unit that loses spot capacity together: the zone, else the whole region."""
        return f"{self.cloud}:{self.zone or self.region}"

    @property
    def key(self) -> str:
        """Stable text key, used in logs, the state store and JSON output."""
        return f"{self.cloud}/{self.zone or self.region}/{self.instance_type}/{self.market}"


@dataclass(frozen=True, slots=True)
class Offering:
    """What a pool costs and how risky it is right now."""

    pool: Pool  # the pool offered
    usd_per_hour: float  # price of one instance for one hour
    available: bool = True  # False after a stock-out or when the cloud does not sell it
    interruptions_per_hour: float = 0.0  # expected reclaims per instance-hour (0 for on-demand)
    price_is_estimate: bool = False  # True when derived (AWS spot = on-demand x (1 - savings))


def prices_of(offerings: Iterable[Offering]) -> dict[Pool, float]:
    """USD per hour of one instance, by pool (a later offering of a pool wins)."""
    return {o.pool: o.usd_per_hour for o in offerings}


@dataclass(frozen=True, slots=True)
class CapacityProfile:
    """Sustainable load of one model replica on one instance type at the model's SLO."""

    model: str  # model name
    gpu_kind: str  # accelerator kind the measurement applies to
    gpu_count: int  # accelerators used by one replica (tensor parallel degree)
    batch_size: int  # serving batch size (or max concurrency) of the measurement
    rps: float  # sustainable requests per second at that batch size
    latency_ms: float  # end-to-end latency per request at that batch size
    source: str  # data set and derivation, for provenance
    # Time per output token (the decode step) at that batch size for the reference
    # request; NaN when unknown (then derived from `latency_ms`, scheduler.fleet.profiles).
    tpot_ms: float = math.nan


# The smallest prompt and output lengths of the measurements token costs are fitted to
# (TensorRT-LLM v0.14's grid starts at 128 / 128; scripts/build_token_profiles.py).
MIN_FITTED_TOKENS = 128.0


@dataclass(frozen=True, slots=True)
class TokenCost:
    """How the GPU time of one request grows with its size, for one model replica on
    `gpu_count` GPUs of one kind (docs/profiles.md "Request size"):
    t(i, o) = prefill x i + decode x o + context x i x o + growth x o^2, in units of
    the reference request's time (only ratios are used)."""

    model: str  # model name (as in the capacity profiles)
    gpu_kind: str  # accelerator kind
    gpu_count: int  # GPUs of one replica (tensor parallel degree)
    prefill: float  # per prompt token
    decode: float  # per output token (weight reads at a full batch)
    context: float  # per prompt token x output token (KV reads of the prompt)
    growth: float  # per output token squared (KV reads of the tokens decoded so far)
    source: str  # the measurement group it was fitted to

    def seconds(self, size: RequestSize) -> float:
        """Relative GPU time of one request of `size`."""
        return float(self.seconds_of(size.input_tokens, size.output_tokens))

    def seconds_of(self, input_tokens: Any, output_tokens: Any) -> Any:
        """Relative GPU time of requests of `input_tokens` and `output_tokens` (numbers,
        or numpy arrays of them). Sizes below the smallest the costs were fitted on count
        as that size (`MIN_FITTED_TOKENS`): per-request overheads the model leaves out
        dominate there, and a bogus reading of one token per request must not make one
        node look like enough for any load."""
        i = np.maximum(input_tokens, MIN_FITTED_TOKENS)
        o = np.maximum(output_tokens, MIN_FITTED_TOKENS)
        return self.prefill * i + self.decode * o + self.context * i * o + self.growth * o * o


@dataclass(frozen=True, slots=True)
class LatencyCost:
    """Time to first token and time per output token of one request, for one model
    replica on `gpu_count` GPUs of one kind (docs/profiles.md "Latency SLOs"; fitted by
    scripts/build_latency_profiles.py):

        prefill(i) = overhead_ms + ms_per_token x i + ms_per_token_sq x i^2
        TTFT(i, b) = prefill(i) x b^batch_interference
        TPOT(b, c) = decode step at batch b x (1 + kv x b x c) / (1 + kv x b x c_ref)

    (i prompt tokens, b the batch, c = i + o / 2 the mean context while decoding)."""

    model: str  # model name (as in the capacity profiles)
    gpu_kind: str  # accelerator kind
    gpu_count: int  # GPUs of one replica (tensor parallel degree)
    overhead_ms: float  # prefill time of an empty prompt
    ms_per_token: float  # prefill time per prompt token (compute)
    ms_per_token_sq: float  # per prompt token squared (attention over the prompt)
    batch_interference: float  # exponent of the batch in the first-token time
    kv_per_weight: float  # KV-cache bytes per context token over weight bytes
    source: str  # the measurements and ratios it comes from

    def prefill_ms(self, input_tokens: float) -> float:
        """Prefill time of one prompt of `input_tokens` alone."""
        i = max(input_tokens, 1.0)
        return self.overhead_ms + self.ms_per_token * i + self.ms_per_token_sq * i * i

    def ttft_ms(self, input_tokens: float, batch: int) -> float:
        """Queueing-free time to first token of a prompt in a batch of `batch` prompts of
        the same length (the batch's prefills share the GPU)."""
        return float(self.prefill_ms(input_tokens) * float(batch) ** self.batch_interference)

    def tpot_ms(self, step_ms: float, batch: int, size: RequestSize) -> float:
        """Time per output token at `batch` of a request of `size`, from the decode step
        `step_ms` measured at that batch for the reference request (its context grows the
        KV-cache reads of each step)."""
        ref = REFERENCE_CONTEXT_TOKENS
        ctx = size.input_tokens + size.output_tokens / 2.0
        kv = self.kv_per_weight * batch
        return step_ms * (1.0 + kv * ctx) / (1.0 + kv * ref)


class NodeState(enum.StrEnum):
    """Lifecycle of a node (transitions live in scheduler.domain.lifecycle)."""

    REQUESTED = "requested"
    BOOTING = "booting"
    READY = "ready"
    DRAINING = "draining"
    TERMINATING = "terminating"
    GONE = "gone"
    INTERRUPTED = "interrupted"
    FAILED = "failed"
    UNHEALTHY = "unhealthy"  # ready, then failed its health checks: replaced, then drained


@dataclass(frozen=True, slots=True)
class Node:
    """One instance serving one model."""

    node_id: str  # our id, also the idempotency token and the capsched-node tag
    model: str  # model served
    pool: Pool  # pool it came from
    state: NodeState  # current lifecycle state
    cloud_instance_id: str | None = None  # the cloud's id, once known
    launched_at_s: float | None = None  # time the launch was requested (epoch seconds)
    state_since_s: float | None = None  # time the node entered its current state
    address: str | None = None  # host or IP the cloud reports it reachable at (drain), once known


@dataclass(frozen=True, slots=True)
class RequestSize:
    """Mean tokens per request of some traffic (docs/profiles.md "Request size")."""

    input_tokens: float  # mean prompt tokens per request (> 0)
    output_tokens: float  # mean generated tokens per request (> 0)

    @property
    def tokens(self) -> float:
        """Prompt plus output tokens per request."""
        return self.input_tokens + self.output_tokens


# The request every capacity profile is measured for (scheduler/data/profiles.json
# `reference_mix`): ShuntServe's fixed lengths. Demand without a size is this size.
REFERENCE_SIZE = RequestSize(763.0, 232.0)
# Mean context of the reference request while it decodes (its prompt and half its output):
# the context the profiles' decode step (`CapacityProfile.tpot_ms`) was measured at.
REFERENCE_CONTEXT_TOKENS = REFERENCE_SIZE.input_tokens + REFERENCE_SIZE.output_tokens / 2.0


@dataclass(frozen=True, slots=True)
class SizeBucket:
    """The requests of a demand whose prompts fall in one range of lengths: the unit the
    planner may place on its own GPU kind (docs/profiles.md "Placement by size")."""

    min_input_tokens: float  # prompt tokens, inclusive lower end of the range (>= 0)
    max_input_tokens: float  # prompt tokens, exclusive upper end (math.inf: no end)
    share: float  # fraction of the demand's rate (a demand's buckets sum to 1)
    size: RequestSize  # mean size of the bucket's requests

    @property
    def label(self) -> str:
        """The range as plans show it: "0-1024", "1024-4096", "4096+" prompt tokens."""
        return token_range_label(self.min_input_tokens, self.max_input_tokens)

    def to_json(self) -> dict[str, Any]:
        """As the store, the control API (`GET /v1/demand`, a plan's `demand`) and the
        TUI show it: the prompt range, the share of the rate, the mean sizes (the keys
        of a demand file's bucket: `input_tokens` / `output_tokens` are means)."""
        top = None if self.max_input_tokens == float("inf") else self.max_input_tokens
        return {
            "range": self.label,
            "min_input_tokens": self.min_input_tokens,
            "max_input_tokens": top,
            "share": round(self.share, 6),
            "input_tokens": round(self.size.input_tokens, 2),
            "output_tokens": round(self.size.output_tokens, 2),
        }


def token_range_label(min_input_tokens: float, max_input_tokens: float) -> str:
    """A prompt-length range as plans name it: "lo-hi", or "lo+" without an upper end."""
    lo = f"{min_input_tokens:.0f}"
    return f"{lo}+" if max_input_tokens == float("inf") else f"{lo}-{max_input_tokens:.0f}"


@dataclass(frozen=True, slots=True)
class Demand:
    """Request rate of a model from one source region."""

    model: str  # model requested
    region: str  # source region of the traffic (a configured name)
    rps: float  # requests per second
    size: RequestSize | None = None  # mean request size; None: the reference request
    # The rate split by prompt length (scheduler.forecast.sizes.split_by_prompt); empty:
    # one bucket of every request at `size`. With buckets, `size` is their mean.
    buckets: tuple[SizeBucket, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """As a stored plan's `demand` lists it (the control API's `GET /v1/plans`): the
        rate, the mean size (null: the reference request) and the buckets ([]: one mix)."""
        return {
            "model": self.model,
            "region": self.region,
            "rps": self.rps,
            "input_tokens": None if self.size is None else round(self.size.input_tokens, 2),
            "output_tokens": None if self.size is None else round(self.size.output_tokens, 2),
            "buckets": [b.to_json() for b in self.buckets],
        }


@dataclass(frozen=True, slots=True)
class SizeRoute:
    """The part of one size bucket a placement's nodes serve (plan output)."""

    min_input_tokens: float  # the bucket's prompt range, inclusive lower end
    max_input_tokens: float  # exclusive upper end (math.inf: no end)
    rps: float  # requests/s of the bucket routed to the placement's nodes

    @property
    def label(self) -> str:
        """The bucket's range as plans show it ("1024-4096")."""
        return token_range_label(self.min_input_tokens, self.max_input_tokens)

    def to_json(self) -> dict[str, Any]:
        """As `capsched plan --json` lists it under a placement's `buckets`."""
        top = None if self.max_input_tokens == float("inf") else self.max_input_tokens
        return {
            "input_tokens": self.label,
            "min_input_tokens": self.min_input_tokens,
            "max_input_tokens": top,
            "rps": round(self.rps, 4),
        }


@dataclass(frozen=True, slots=True)
class Placement:
    """A number of nodes of one model in one pool."""

    model: str  # model served
    pool: Pool  # where the nodes run
    count: int  # how many nodes
    # Which size buckets of the model's demand the nodes serve, and how much of each;
    # empty when the model's demand is one bucket (every node serves the mix).
    routes: tuple[SizeRoute, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The placement as `capsched plan --json` and the stored plans write it (with
        `buckets` only when the plan placed the model's demand by size)."""
        out: dict[str, Any] = {
            "model": self.model,
            "cloud": self.pool.cloud.value,
            "region": self.pool.region,
            "zone": self.pool.zone,
            "instance_type": self.pool.instance_type,
            "market": self.pool.market.value,
            "count": self.count,
        }
        if self.routes:
            out["buckets"] = [r.to_json() for r in self.routes]
        return out


class UnmetReason(enum.StrEnum):
    """Why a plan leaves demand unmet (planner.unmet_reasons): what one more node in any
    pool that could serve it would run into. The values are the `reasons` of
    `capsched plan --json`, so they never change once published."""

    BUDGET = "budget"  # it would break planning.budget_usd_per_hour
    QUOTA = "quota"  # it would break a [[quotas]] cap
    # No pool may take it: none allowed within the latency limit, stocked out or full.
    CAPACITY = "capacity"
    # A pool could take one more node within every limit, and the plan does not: the node
    # costs more than the penalty of the load it would serve (solver.unmet_penalty_usd_per
    # _rps_hour, e.g. a whole node for a sliver of load), or the search was cut short.
    COST = "cost"


@dataclass(frozen=True, slots=True)
class Unmet:
    """Demand the plan cannot serve."""

    model: str  # model asked for
    region: str  # source region of the load
    rps: float  # load left unserved
    priority: int = 0  # the model's [[models]] priority
    reasons: tuple[UnmetReason, ...] = ()  # why (empty: not analysed, e.g. a baseline's plan)

    def to_json(self) -> dict[str, Any]:
        """The one JSON form of unmet demand: the stored plans, the control API and
        `capsched plan --json` all carry it (docs/api.md, "Unmet")."""
        return {
            "model": self.model,
            "region": self.region,
            "rps": self.rps,
            "priority": self.priority,
            "reasons": [r.value for r in self.reasons],
        }

    @classmethod
    def from_json(cls, item: Any) -> Unmet:
        """The record back from `to_json`'s form; ValueError naming what is wrong when
        `item` is not one (a missing key, a number that is not one, an unknown reason)."""
        if not isinstance(item, dict):
            raise ValueError(f"unmet entry {item!r}: not an object")
        try:
            model, region = item["model"], item["region"]
            rps, priority, reasons = item["rps"], item.get("priority", 0), item.get("reasons", [])
        except KeyError as exc:
            raise ValueError(f"unmet entry {item!r}: no {exc.args[0]!r}") from None
        if not isinstance(model, str) or not isinstance(region, str):
            raise ValueError(f"unmet entry {item!r}: model and region must be strings")
        if isinstance(rps, bool) or not isinstance(rps, int | float):
            raise ValueError(f"unmet entry {item!r}: rps must be a number")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ValueError(f"unmet entry {item!r}: priority must be an integer")
        if not isinstance(reasons, list):
            raise ValueError(f"unmet entry {item!r}: reasons must be a list")
        known = {r.value: r for r in UnmetReason}
        unknown = [r for r in reasons if not isinstance(r, str) or r not in known]
        if unknown:
            raise ValueError(f"unmet entry {item!r}: unknown reasons {unknown}")
        return cls(model, region, float(rps), priority, tuple(known[r] for r in reasons))


class HoldKind(enum.StrEnum):
    """Why a tick held something back: the guard or limit that did (scheduler.decide.guards).

    The values are the `guard` label of `capsched_guard_holds_total` and the `kind` of a
    held-back item in the API, so they never change once published.
    """

    BUDGET = "budget"  # launches held, or the plan cut short, by planning.budget_usd_per_hour
    QUOTA = "quota"  # the plan cut short by a [[quotas]] cap
    POOL_LIMIT = "pool_limit"  # launches past MAX_NODES_PER_POOL nodes in one pool
    LOAD_SIGNAL = "load_signal"  # scale-down held: the load signal is missing or not finite
    MIN_NODE_AGE = "min_node_age"  # drain held: ready for less than guards.min_node_age_s
    SCALE_DOWN_LIMIT = "scale_down_limit"  # drain held: guards.max_scale_down_fraction reached
    MAKE_BEFORE_BREAK = "make_before_break"  # drain held: replacements not ready yet
    APPROVAL = "approval"  # nothing acts until a person approves a plan
    PAUSED = "paused"  # the daemon is paused: it plans but does not act
    # Sick nodes kept in service: more failed their health checks than `[health]` lets
    # be replaced per window (a broken health endpoint must not replace the fleet)
    REPAIR_LIMIT = "repair_limit"


# Holds that keep capacity the demand asks for from being launched (the ones a user must
# hear about: a binding budget or quota leaves demand unserved on purpose).
LAUNCH_LIMITS: frozenset[HoldKind] = frozenset({HoldKind.BUDGET, HoldKind.QUOTA})


class PlanStatus(enum.StrEnum):
    """Outcome of a solve, as users see it."""

    OPTIMAL = "optimal"  # proven optimal (within the solver's tolerance)
    FEASIBLE = "feasible"  # a valid plan, optimality not proven within the time limit
    INFEASIBLE = "infeasible"  # hard constraints cannot all hold; the current fleet is kept


@dataclass(frozen=True, slots=True)
class CommitmentUse:
    """How a plan uses one commitment (`[[commitments]]`, docs/commitments.md)."""

    label: str  # the commitment's name
    kind: str  # reserved, cud or capacity_reservation
    pools: tuple[Pool, ...]  # on-demand pools it covers
    count: int  # nodes paid for
    used: int  # of those, nodes the plan places in its pools
    usd_per_hour: float  # price of one committed node-hour (billed used or not)
    on_demand_usd_per_hour: float  # list price of one node-hour in its pools

    @property
    def fee_usd_per_hour(self) -> float:
        """What the commitment bills every hour."""
        return self.count * self.usd_per_hour


@dataclass(frozen=True, slots=True)
class SavingsPlanUse:
    """How a plan uses one savings plan (a `[[commitments]]` amount of USD per hour,
    docs/commitments.md)."""

    label: str  # the savings plan's name
    pools: tuple[Pool, ...]  # on-demand pools it covers
    usd_per_hour_committed: float  # the amount, billed every hour used or not
    usd_per_hour_used: float  # what the plan's nodes on it draw from the amount (its rates)
    nodes: int  # nodes the plan places on it
    on_demand_usd_per_hour: float  # list price of those nodes: what they cost without it


@dataclass(frozen=True, slots=True)
class Plan:
    """Target fleet for every (model, pool), with its cost and the solver's verdict."""

    status: PlanStatus  # solver outcome
    placements: tuple[Placement, ...]  # target node counts (count > 0 only)
    usd_per_hour: float  # price of the target fleet
    objective: float  # solver objective (cost + risk + churn + penalties), USD/hour
    gap: float  # relative optimality gap, 0 when proven optimal
    solve_time_s: float  # wall time spent in the solver
    # The demand the plan provisions for (the policy's planned rates); empty when the
    # policy does not say (a baseline).
    demand: tuple[Demand, ...] = ()
    unmet: tuple[Unmet, ...] = ()  # demand left unserved
    notes: tuple[str, ...] = field(default=())  # why the plan looks the way it does
    kept_models: tuple[str, ...] = ()  # models kept as they ran, without a search
    # Hard limits (budget, quota) that kept the plan from serving all its planned demand:
    # every pool that could serve the unmet part would break one of them (planner).
    limited_by: tuple[HoldKind, ...] = ()
    # Hard constraints the solve dropped because the budget or quotas could not pay for
    # them, in the order dropped (empty: every one holds).
    relaxed: tuple[Relaxation, ...] = ()
    # With Relaxation.ON_DEMAND_SHARE in `relaxed`: the models whose min_on_demand_share
    # the plan does not keep because the budget cannot pay for their demand with it (now
    # or one node's growth ahead), highest priority first (docs/solver.md, "On-demand
    # share under a budget").
    share_relaxed: tuple[str, ...] = ()
    # Commitments and how many of their nodes the plan uses; their nodes are priced in
    # `usd_per_hour` at the on-demand list price (what the budget guard counts).
    commitments: tuple[CommitmentUse, ...] = ()
    # Savings plans and what the plan draws from them; their nodes too are priced in
    # `usd_per_hour` at the on-demand list price.
    savings_plans: tuple[SavingsPlanUse, ...] = ()
