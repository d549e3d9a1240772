"""capsched's configuration: a TOML file validated by pydantic.

Every key is documented in `config.example.toml`. `load_config` either returns a
complete, valid `Config` or raises `ConfigError` listing every problem with the
file, the key path and the reason; it never returns a half-valid config, so a
reload that fails keeps the old one.
"""

from __future__ import annotations

import enum
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from scheduler.domain import MAX_NODES_PER_POOL, Cloud, Market, TokenSlo
from scheduler.errors import problem_lines
from scheduler.forecast.config import ForecastConfig, ForecastSettings
from scheduler.names import Name
from scheduler.sections.aws import AwsConfig
from scheduler.sections.drain import HttpDrainConfig, check_placeholders
from scheduler.sections.gcp import GcpConfig
from scheduler.sections.health import HttpHealthConfig
from scheduler.sections.prometheus import PrometheusConfig

DEFAULT_CONFIG_PATH = Path(__file__).parent / "data" / "default_config.toml"
# The UTF-8 byte-order mark, as decoded: some editors start every file with it.
BOM = "\ufeff"


class _Section(BaseModel):
    # No key means "unlimited" by being infinite: NaN and inf fail the load, not a solve.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SchedulerSection(_Section):
    """The reconcile loop."""

    tick_interval_s: float = Field(default=300.0, gt=0)  # time between ticks
    # Between ticks, check load against capacity this often and launch at once when
    # short (scheduler.loop.fast_loop); 0 turns the fast loop off.
    fast_interval_s: float = Field(default=30.0, ge=0)
    # The fast loop acts on load that every check over this window saw (its lowest
    # reading): a spike shorter than this launches nothing.
    fast_sustain_s: float = Field(default=60.0, ge=0, le=3600)
    state_db: str = "capsched.db"  # SQLite state store path


class SolverSection(_Section):
    """Limits and weights of the placement solve."""

    time_limit_s: float = Field(default=2.0, gt=0, le=600)  # wall-clock budget per solve
    seed: int = Field(default=0, ge=0, le=2**31 - 1)  # random seed (the MIP solvers take int32)
    backend: Literal["scip"] = "scip"  # MIP solver behind OR-Tools
    workers: int = Field(default=2, ge=1, le=64)  # models solved in parallel (threads)
    gap_tolerance: float = Field(default=0.005, ge=0, le=0.5)  # stop once proven this close
    node_limit: int = Field(default=0, ge=0, le=10_000_000)  # > 0: work limit, repeatable plans
    unmet_penalty_usd_per_rps_hour: float = Field(default=500.0, gt=0)  # cost of dropping load
    churn_amortization_h: float = Field(default=6.0, gt=0)  # hours a launch's cost is spread over
    interruption_cost_usd: float = Field(default=0.0, ge=0)  # extra cost per spot reclaim


class PlanningSection(_Section):
    """Fleet-wide policy the solver must respect."""

    robustness_fraction: float = Field(
        default=0.8, ge=0, le=1
    )  # demand covered after a domain loss
    # Small fleets: a domain's loss may cost this many nodes (when that is more than
    # 1 - robustness_fraction of the load); spot still spreads over >= 2 domains. 0 = off.
    robustness_spare_nodes: int = Field(default=0, ge=0, le=1000)
    # Where models have different priorities, those above the lowest keep robustness_fraction
    # of their served load after a preemption storm takes this share of every spot pool's
    # nodes at once (rounded up per pool), as well as after a domain's loss. 0 = off.
    priority_storm_share: float = Field(default=0.5, ge=0, le=1)
    # The share of their served load those models keep after such a storm (1: all of it;
    # robustness_fraction's 0.8 left the top priority short while replacements booted).
    priority_storm_fraction: float = Field(default=1.0, gt=0, le=1)
    # Share of time a spot pool's loss may leave load uncovered without robustness covering
    # it: a pool whose interruptions per hour (the catalog's, plus what launches and notices
    # taught) x (boot - notice) hours is below this needs no cover. 0: only pools whose
    # notice outlasts the boot (docs/solver.md, "Spot losses that need no cover").
    spot_loss_tolerance: float = Field(default=0.0, ge=0, le=0.1)
    target_utilization: float = Field(default=0.85, gt=0, le=1)  # share of profile capacity used
    budget_usd_per_hour: float | None = Field(default=None, gt=0)  # hard cap on fleet price
    default_boot_time_s: float = Field(default=600.0, ge=0)  # launch to ready, where unknown
    # Size the solver's churn and spot-risk terms with each pool's `node_boot_s` (True) or
    # with `default_boot_time_s` (False: measured better, docs/solver.md "Boot time").
    churn_from_node_boot: bool = False
    replan_tolerance: float = Field(default=0.05, ge=0, le=1)  # rise that re-checks the target
    replan_fall_tolerance: float = Field(default=0.1, ge=0, le=1)  # fall that re-solves
    # A rise the last target no longer serves adds nodes to it instead of a search free
    # to move them (fewer moves under a wall-clock limit; docs/solver.md, "A rise that
    # only adds nodes"). A fall, a pool change and the periodic full search stay free.
    rise_adds_only: bool = False
    scale_down_delay_s: float = Field(default=0.0, ge=0)  # plan for the peak of this window
    # A pool that came back (or got cheaper) re-searches its models once it has stayed
    # available this long, if the saving pays for the move within `return_payback_h`; a
    # new spot price counts for planning once it has held this long (a blip moves nothing).
    return_stabilization_s: float = Field(default=900.0, ge=0)
    return_payback_h: float = Field(default=6.0, gt=0, le=168)  # hours a move must pay back in
    full_replan_interval_s: float = Field(default=14400.0, ge=0)  # search all models; 0 = never
    # Plan each series split by prompt length where the load signal reports the split
    # (DemandSample.buckets), so the solver may serve each range on its own GPU kind
    # (docs/profiles.md "Placement by size"). Off: one mix at the mean size.
    place_by_size: bool = False


class GuardsSection(_Section):
    """Limits between a plan and the actions taken on it."""

    max_scale_down_fraction: float = Field(default=0.25, gt=0, le=1)  # of a model's nodes per tick
    min_node_age_s: float = Field(default=900.0, ge=0)  # ready this long before a plan may move it
    drain_timeout_s: float = Field(default=300.0, ge=0)  # longest wait for in-flight requests
    pool_cooldown_s: float = Field(default=900.0, ge=0)  # pool unused after capacity/quota errors
    # Spot pools of one cloud refusing launches in one tick that mark a spot storm: every
    # spot pool of that cloud then cools for pool_cooldown_s (0 = off).
    spot_storm_pools: int = Field(default=3, ge=0, le=1000)


class DrainSection(HttpDrainConfig):
    """How a node leaves rotation before it is terminated. The longest wait for its
    in-flight requests is `guards.drain_timeout_s`."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: Literal["none", "http"] = "none"  # "none": terminate at once; "http": hook + metrics


class HealthSection(HttpHealthConfig):
    """Node health (docs/health.md): a node is ready when its health endpoint answers,
    fails when it has not by its boot deadline, and is replaced when a ready node fails
    its checks `failure_threshold` times in a row. Off (no section, or `enabled = false`):
    a node is ready as soon as its cloud reports it running, and never replaced for
    being sick."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    enabled: bool = False  # check node health at all

    interval_s: float = Field(default=15.0, gt=0, le=3600)  # time between checks of a node
    success_threshold: int = Field(default=1, ge=1, le=100)  # passes in a row to be ready
    failure_threshold: int = Field(default=3, ge=1, le=100)  # fails in a row to be unhealthy
    # A node not ready by its boot estimate (scheduler.fleet.boot.node_boot_s of its model and
    # instance type) plus this margin, counted from when it started booting, is failed,
    # terminated and replaced.
    boot_margin_s: float = Field(default=600.0, ge=0)
    # At most this many ready nodes are declared unhealthy (and replaced) per window;
    # beyond it they stay in service and the daemon alerts (hold `repair_limit`).
    max_replacements: int = Field(default=3, ge=0, le=10_000)
    replacement_window_s: float = Field(default=3600.0, gt=0)
    # When more than this share of the ready nodes fail their checks at once, none is
    # replaced (a broken endpoint or network, not sick nodes: Karpenter's node repair
    # toleration); they stay in service and the daemon alerts.
    max_unhealthy_fraction: float = Field(default=0.2, gt=0, le=1)
    # A pool with this many strikes within the window (a node that never became healthy,
    # or turned sick within the window of becoming ready), and no boot there passing its
    # check in between, is quarantined: no new nodes there for guards.pool_cooldown_s,
    # doubled per repeat (scheduler.decide.cooldown).
    quarantine_strikes: int = Field(default=2, ge=1, le=100)
    quarantine_window_s: float = Field(default=3600.0, gt=0)
    # GPU faults from the metrics source ([prometheus]): a ready node whose GPUs report an
    # Xid error or a rise in double-bit ECC errors, or whose server runs nothing while its
    # queue grows, is unhealthy at once (the same limits and quarantine apply).
    gpu_signals: bool = False
    node_label: str = Field(default="instance", pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")
    # The label's value for a node (placeholders as in `url`); a ":port" suffix is ignored.
    node_label_value: str = "{host}"
    signal_window_s: float = Field(default=300.0, ge=1, le=86400)  # window of the readings
    # Queue growth over the window that, with nothing running all along, is a stall.
    stall_queue_growth: float = Field(default=1.0, gt=0)
    # A metric (PromQL selector) above 0 once the model is loaded: when set, a booting node
    # is ready only when it says so as well as passing its check ("" = not read).
    ready_metric: str = ""

    @field_validator("node_label_value")
    @classmethod
    def _label_template(cls, v: str) -> str:
        if not v:
            raise ValueError("must not be empty")
        return check_placeholders(v)


class DaemonSection(_Section):
    """The long-running service: approval, dry run, tick timeout, control API."""

    approval_mode: Literal["auto", "manual", "threshold"] = "auto"  # who lets a plan act
    approval_cost_delta_usd_per_hour: float = Field(default=50.0, ge=0)  # threshold mode
    approval_max_drains: int = Field(default=4, ge=0)  # threshold mode
    dry_run: bool = False  # plan and record, never act
    tick_timeout_s: float = Field(default=120.0, gt=0)  # a tick taking longer is abandoned
    api_host: Literal["127.0.0.1", "::1", "localhost"] = "127.0.0.1"  # loopback only
    api_port: int = Field(default=9464, ge=0, le=65535)  # control API and /metrics
    api_socket: str = ""  # Unix socket path; when set, used instead of TCP
    token_file: str = "capsched.token"  # bearer token for actions, mode 0600


class SourcesSection(_Section):
    """Which edges the daemon talks to."""

    cloud: Literal["sim", "aws", "gcp"] = "sim"  # simulated, AWS ([aws]) or GCP ([gcp])
    demand: Literal["trace", "prometheus"] = "trace"  # where the load signal comes from
    trace: str = ""  # trace file replayed by the "trace" source; "" = the bundled slice
    trace_format: str = "auto"  # its format (see `capsched simulate --help`)
    speedup: float = Field(default=60.0, gt=0, le=100_000)  # virtual s per wall s (sim, trace)
    sim_boot_time_s: float | None = Field(default=None, ge=0)  # "sim": boot delay override
    sim_state: str = ""  # "sim": file keeping the simulated cloud across restarts ("" = memory)


class ModelSection(_Section):
    """One served model."""

    name: Name = Field(min_length=1)  # name used in demand and fleet files
    profile: Name | None = None  # capacity profile key; defaults to `name`
    latency_slo_ms: float | None = Field(default=None, gt=0)  # override the profile's SLO
    # Time to first token and per output token, ms (both or neither): the SLO serving
    # systems state; a request of o output tokens may take ttft + tpot x o end to end,
    # checked at each demand's request size (docs/profiles.md "Latency SLOs").
    ttft_slo_ms: float | None = Field(default=None, gt=0)
    tpot_slo_ms: float | None = Field(default=None, gt=0)
    min_replicas: int = Field(default=1, ge=0)  # never fewer nodes than this
    min_on_demand_share: float = Field(default=0.0, ge=0, le=1)  # of capacity, on-demand
    # Higher is served first when the budget or a quota leaves capacity short
    # (docs/solver.md, "Budgets and priorities").
    priority: StrictInt = Field(default=0, ge=-1000, le=1000)  # true or "3" is a mistake
    # Batch demand: each request may wait this long before it is served, so capacity is
    # planned for the mean rate and what waits, on spot, without an on-demand share or
    # spot-loss robustness (docs/solver.md, "Deferrable demand"). None: interactive.
    deferrable_deadline_s: float | None = Field(default=None, gt=0, le=7 * 86400)
    # Launch-to-serving seconds of this model's nodes as measured on your fleet (a warm
    # image, weights on local disk); None: estimated per instance type from the model's
    # size (scheduler.fleet.boot.node_boot_s, docs/profiles.md "Boot time").
    boot_time_s: float | None = Field(default=None, gt=0, le=86400)

    @model_validator(mode="after")
    def _ttft_with_tpot(self) -> ModelSection:
        if (self.ttft_slo_ms is None) != (self.tpot_slo_ms is None):
            given, missing = (
                ("ttft_slo_ms", "tpot_slo_ms")
                if self.tpot_slo_ms is None
                else ("tpot_slo_ms", "ttft_slo_ms")
            )
            raise ValueError(f"{given} needs {missing} too (a per-token SLO states both)")
        return self

    @property
    def token_slo(self) -> TokenSlo | None:
        """The per-token SLO, when the section states one."""
        if self.ttft_slo_ms is None or self.tpot_slo_ms is None:
            return None
        return TokenSlo(self.ttft_slo_ms, self.tpot_slo_ms)


class RegionSection(_Section):
    """A source region of traffic."""

    name: Name = Field(min_length=1)  # name used in demand files
    location: Name = Field(min_length=1)  # cloud region nearest to where the traffic enters
    max_latency_ms: float = Field(default=60.0, gt=0)  # network RTT allowed to a serving region


class CloudSection(_Section):
    """Where a cloud may be used."""

    enabled: bool = True  # use this cloud at all
    regions: tuple[Name, ...] = ()  # allowed regions; empty means every catalog region
    markets: tuple[Market, ...] = (Market.SPOT, Market.ON_DEMAND)  # allowed markets
    gpu_kinds: tuple[Name, ...] = ()  # allowed accelerators; empty means all


class QuotaSection(_Section):
    """A limit on accelerators in the pools it matches (unset fields match everything)."""

    cloud: Cloud  # cloud the quota belongs to
    region: Name | None = None  # region, or every region
    gpu_kind: Name | None = None  # accelerator kind, or every kind
    market: Market | None = None  # market, or both
    max_gpus: int = Field(ge=0)  # accelerators allowed at once


class CommitmentKind(enum.StrEnum):
    """What was bought (docs/commitments.md). Every kind is on-demand capacity that is
    already paid for: the count kinds are nodes of one type, a savings plan an amount of
    USD per hour."""

    RESERVED = "reserved"  # AWS reserved instances (or a savings plan pinned to a type)
    CUD = "cud"  # GCP committed-use discount
    CAPACITY_RESERVATION = "capacity_reservation"  # a capacity reservation or block
    # A spend commitment: `usd_per_hour_committed` of on-demand usage in a region (and
    # instance family), at the savings plan's rates (AWS Savings Plans).
    SAVINGS_PLAN = "savings_plan"


class CommitmentSection(_Section):
    """Capacity already paid for, billed every hour whether used or not, so the planner
    uses it first at no marginal cost (docs/commitments.md). Either `count` nodes of
    `instance_type` on-demand in one region (or zone), or (`kind = "savings_plan"`)
    `usd_per_hour_committed` of on-demand usage in one region, of one `instance_family`
    or of every family."""

    name: Name | None = None  # label in plans and reports; default cloud/region-or-zone/type
    # What was bought; default "reserved", or "savings_plan" with usd_per_hour_committed.
    kind: CommitmentKind = CommitmentKind.RESERVED
    cloud: Cloud  # cloud it was bought on
    region: Name = Field(min_length=1)  # region of the committed pool(s)
    # Zone, for clouds whose pools are zonal (GCP); unset: every zone of the region.
    zone: Name | None = None
    instance_type: Name | None = None  # the committed instance type (count form)
    count: StrictInt | None = Field(default=None, ge=1, le=MAX_NODES_PER_POOL)  # nodes paid for
    # USD per committed node-hour; unset: the catalog's reserved price of the type in the
    # region where it has one, else the pool's on-demand price (no discount: a reservation).
    usd_per_hour: float | None = Field(default=None, ge=0)
    # Savings plan: USD per hour committed, billed used or not; it pays for matching
    # on-demand usage at the plan's rates (the catalog's reserved price of each type in the
    # region, else its on-demand price) up to this amount; usage beyond it pays on-demand.
    usd_per_hour_committed: float | None = Field(default=None, gt=0, le=1_000_000, strict=True)
    # Savings plan: the instance family it covers ("g6e": g6e.xlarge, g6e.12xlarge...);
    # unset: every instance type in the region.
    instance_family: Name | None = None

    @property
    def label(self) -> str:
        """The name shown in plans and reports."""
        where = self.zone or self.region
        what = self.instance_type or self.instance_family or "any"
        if self.kind is CommitmentKind.SAVINGS_PLAN:
            what = f"{self.instance_family or 'any'}-savings-plan"
        return self.name or f"{self.cloud}/{where}/{what}"

    @property
    def is_spend(self) -> bool:
        """A savings plan (an amount per hour), not a count of nodes."""
        return self.kind is CommitmentKind.SAVINGS_PLAN

    @model_validator(mode="before")
    @classmethod
    def _spend_kind(cls, data: object) -> object:
        # usd_per_hour_committed alone says what was bought: a savings plan.
        if isinstance(data, dict) and "usd_per_hour_committed" in data and "kind" not in data:
            return {**data, "kind": CommitmentKind.SAVINGS_PLAN.value}
        return data

    @model_validator(mode="after")
    def _one_form(self) -> CommitmentSection:
        if self.zone is not None and not self.zone.startswith(self.region):
            raise ValueError(f"zone {self.zone!r} is not in region {self.region!r}")
        if self.is_spend:
            if self.usd_per_hour_committed is None:
                raise ValueError(
                    'kind "savings_plan" needs usd_per_hour_committed (USD per hour committed)'
                )
            for key in ("count", "instance_type", "usd_per_hour", "zone"):
                if getattr(self, key) is not None:
                    raise ValueError(
                        f"{key} is not a key of a savings plan (usd_per_hour_committed):"
                        " it covers a region, and instance_family narrows it"
                    )
            return self
        if self.usd_per_hour_committed is not None:
            raise ValueError(
                f'usd_per_hour_committed needs kind = "savings_plan" (kind is'
                f" {self.kind.value!r}: a count of nodes)"
            )
        if self.instance_family is not None:
            raise ValueError(
                f"instance_family is a key of a savings plan; a {self.kind.value} commitment"
                " names its instance_type"
            )
        if self.count is None or self.instance_type is None:
            missing = " and ".join(
                k for k in ("instance_type", "count") if getattr(self, k) is None
            )
            raise ValueError(
                f"{missing} missing: a {self.kind.value} commitment is `count` nodes of one"
                " `instance_type` (or give usd_per_hour_committed for a savings plan)"
            )
        return self


class CloudsSection(_Section):
    aws: CloudSection = CloudSection()
    gcp: CloudSection = CloudSection()


class Config(_Section):
    """The whole file."""

    scheduler: SchedulerSection = SchedulerSection()
    solver: SolverSection = SolverSection()
    planning: PlanningSection = PlanningSection()
    guards: GuardsSection = GuardsSection()
    daemon: DaemonSection = DaemonSection()
    sources: SourcesSection = SourcesSection()
    drain: DrainSection = DrainSection()
    health: HealthSection = HealthSection()  # node health checks (off by default)
    prometheus: PrometheusConfig = PrometheusConfig()
    aws: AwsConfig | None = None
    gcp: GcpConfig | None = None
    forecast: ForecastConfig = ForecastConfig()
    clouds: CloudsSection = CloudsSection()
    models: tuple[ModelSection, ...] = Field(min_length=1)
    regions: tuple[RegionSection, ...] = Field(min_length=1)
    quotas: tuple[QuotaSection, ...] = ()
    commitments: tuple[CommitmentSection, ...] = ()  # capacity already paid for

    @model_validator(mode="after")
    def _cloud_configured(self) -> Config:
        if self.sources.cloud == "aws" and self.aws is None:
            raise ValueError('sources.cloud is "aws" but there is no [aws] table')
        if self.sources.cloud == "aws" and self.sources.demand != "prometheus":
            raise ValueError('sources.cloud "aws" needs sources.demand = "prometheus"')
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        for what, names in (
            ("models", [m.name for m in self.models]),
            ("regions", [r.name for r in self.regions]),
            ("commitments", [c.label for c in self.commitments]),
        ):
            seen: set[str] = set()
            for name in names:
                if name in seen:
                    raise ValueError(f"{what}: duplicate name {name!r}")
                seen.add(name)
        return self

    @property
    def health_checks(self) -> HealthSection | None:
        """The `[health]` settings when health checks are on, else None."""
        return self.health if self.health.enabled else None

    def model(self, name: str) -> ModelSection:
        """The model section called `name` (KeyError if none)."""
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)


class ConfigError(Exception):
    """A config file that cannot be used; `problems` holds one line per problem."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(problems))


def _cross_checks(config: Config, path: Path) -> list[str]:
    """Rules across tables, which the daemon would otherwise hit only when it starts."""
    tick_s = config.scheduler.tick_interval_s
    try:
        # The forecaster steps once per tick: its periods and horizon must be whole ticks.
        ForecastSettings.of(config.forecast, step_s=tick_s)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "step_s"
            key = "scheduler.tick_interval_s" if field == "step_s" else f"forecast.{field}"
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{path}: {key}: {msg} (the forecaster steps every {tick_s:g} s)")
        return problems
    return []


def parse_config(text: str, path: Path) -> Config:
    """Parse and validate TOML text; `path` is only used in messages.

    A byte-order mark before the first key (editors on Windows write one) is skipped."""
    try:
        raw = tomllib.loads(text.removeprefix(BOM))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [f"{path}: not valid TOML: {exc}"]) from None
    except RecursionError:
        raise ConfigError(path, [f"{path}: not valid TOML: nested too deeply"]) from None
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(path, problem_lines(exc, path, Config, syntax="toml")) from None
    problems = _cross_checks(config, path)
    if problems:
        raise ConfigError(path, problems)
    return config


def load_config(path: Path | str | None = None) -> Config:
    """Load a config file, or the embedded default when `path` is None."""
    p = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(p, [f"{p}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(p, [f"{p}: not UTF-8 text: byte {exc.start}: {exc.reason}"]) from None
    return parse_config(text, p)
