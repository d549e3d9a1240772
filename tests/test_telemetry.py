"""The daemon's Prometheus metrics: what one tick records, bounded labels, preemptions
counted once, and the one-line hook against a real reconciler on the simulated cloud."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest
from fakes import no_sleep
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest

from adapters.sim import SimCloud
from scheduler.config import Config
from scheduler.decide.decision import ActionOutcome, ErrorKind, TickError
from scheduler.decide.guards import Held
from scheduler.domain import (
    Cloud,
    CommitmentUse,
    HoldKind,
    Market,
    Node,
    NodeState,
    Placement,
    Plan,
    PlanStatus,
    Pool,
    SavingsPlanUse,
    Unmet,
)
from scheduler.domain.actions import Drain, Launch, Terminate
from scheduler.fleet.catalog import load_catalog
from scheduler.loop.factory import build_scheduler
from scheduler.loop.reconciler import TickReport
from scheduler.loop.store import StateStore
from scheduler.ports.metrics import DemandSample
from scheduler.service.telemetry import Telemetry

MODEL, REGION = "llama-3.1-8b", "us-east"
SPOT = Pool(Cloud.AWS, "us-east-1", "", "g6.xlarge", Market.SPOT)
OD = Pool(Cloud.AWS, "us-east-1", "", "g6.xlarge", Market.ON_DEMAND)


def value(t: Telemetry, name: str, **labels: str) -> float | None:
    return t.registry.get_sample_value(name, labels)


def plan(status: PlanStatus = PlanStatus.OPTIMAL, unmet: float = 0.0) -> Plan:
    return Plan(
        status,
        (Placement(MODEL, SPOT, 2),),
        usd_per_hour=1.6,
        objective=1.7,
        gap=0.0,
        solve_time_s=0.3,
        unmet=(Unmet(MODEL, REGION, unmet),) if unmet else (),
    )


def report(**kw: object) -> TickReport:
    base: dict[str, object] = {
        "now_s": 1_700_000_000.0,
        "plan": plan(),
        "actions": (),
        "held_back": (),
        "errors": (),
        "demand_complete": True,
    }
    base.update(kw)
    if "outcomes" not in kw:  # every action succeeded unless the test says otherwise
        base["outcomes"] = tuple(ActionOutcome(a, ok=True) for a in base["actions"])  # type: ignore[attr-defined]
    return TickReport(**base)  # type: ignore[arg-type]


def nodes(*states: tuple[Pool, NodeState]) -> list[Node]:
    return [Node(f"cs-{i:08d}", MODEL, pool, state) for i, (pool, state) in enumerate(states)]


def record(t: Telemetry, r: TickReport, **kw: object) -> None:
    args: dict[str, object] = {
        "nodes": nodes((SPOT, NodeState.READY), (SPOT, NodeState.READY), (OD, NodeState.BOOTING)),
        "demand": DemandSample(r.now_s, {(MODEL, REGION): 30.0}),
        "planned": {(MODEL, REGION): 36.0},
        "capacity_rps_by_model": {MODEL: 40.0},
        "duration_s": 0.8,
        "usd_per_hour_by_pool": {SPOT: 0.4, OD: 0.8},
    }
    args.update(kw)
    t.record_tick(r, **args)  # type: ignore[arg-type]


def test_one_tick_sets_fleet_demand_plan_and_loop_metrics() -> None:
    t = Telemetry()
    record(t, report())
    spot = {"model": MODEL, "pool": SPOT.key, "market": "spot"}
    assert value(t, "capsched_nodes", **spot, state="ready") == 2
    assert (
        value(t, "capsched_nodes", model=MODEL, pool=OD.key, market="on-demand", state="booting")
        == 1
    )
    assert value(t, "capsched_fleet_cost_usd_per_hour") == pytest.approx(1.6)
    assert value(t, "capsched_demand_rps", model=MODEL, region=REGION) == 30.0
    assert value(t, "capsched_planned_demand_rps", model=MODEL, region=REGION) == 36.0
    assert value(t, "capsched_capacity_rps", model=MODEL) == 40.0
    assert value(t, "capsched_headroom_rps", model=MODEL) == 10.0
    assert value(t, "capsched_demand_complete") == 1
    assert value(t, "capsched_plan_cost_usd_per_hour") == 1.6
    assert value(t, "capsched_plan_status", status="optimal") == 1
    assert value(t, "capsched_plan_status", status="infeasible") == 0
    assert value(t, "capsched_solves_total", status="optimal") == 1
    assert value(t, "capsched_solver_duration_seconds_count") == 1
    assert value(t, "capsched_solver_duration_seconds_sum") == pytest.approx(0.3)
    assert value(t, "capsched_ticks_total", outcome="ok") == 1
    assert value(t, "capsched_tick_duration_seconds_sum") == pytest.approx(0.8)
    assert value(t, "capsched_last_successful_tick_timestamp_seconds") == 1_700_000_000.0
    assert value(t, "capsched_plan_unmet_rps", model=MODEL) == 0.0


def test_nodes_that_went_away_leave_the_gauge() -> None:
    t = Telemetry()
    record(t, report())
    record(t, report(), nodes=nodes((OD, NodeState.READY)))
    ready = {"model": MODEL, "pool": SPOT.key, "market": "spot", "state": "ready"}
    assert value(t, "capsched_nodes", **ready) is None
    assert (
        value(t, "capsched_nodes", model=MODEL, pool=OD.key, market="on-demand", state="ready") == 1
    )


def test_actions_by_kind_and_result() -> None:
    t = Telemetry()
    actions = (
        Launch("cs-1", MODEL, SPOT, "more"),
        Launch("cs-2", MODEL, SPOT, "more"),
        Drain("cs-3", "less"),
        Terminate("cs-4", "drained"),
    )
    failed = TickError(ErrorKind.ACTION, "Launch cs-2: InsufficientCapacity: none left", "cs-2")
    errors = (failed, TickError(ErrorKind.METRICS, "metrics: TimeoutError: slow"))
    outcomes = tuple(
        ActionOutcome(a, ok=False, error=failed) if a.node_id == "cs-2" else ActionOutcome(a, True)
        for a in actions
    )
    record(t, report(actions=actions, errors=errors, outcomes=outcomes))
    assert value(t, "capsched_actions_total", kind="launch", result="ok") == 1
    assert value(t, "capsched_actions_total", kind="launch", result="failed") == 1
    assert value(t, "capsched_actions_total", kind="drain", result="ok") == 1
    assert value(t, "capsched_actions_total", kind="terminate", result="ok") == 1
    assert value(t, "capsched_actions_total", kind="terminate", result="failed") == 0
    assert value(t, "capsched_tick_errors_total", source="action") == 1
    assert value(t, "capsched_tick_errors_total", source="metrics") == 1


@pytest.mark.parametrize("kind", list(HoldKind))
def test_held_items_count_under_their_kind_whatever_the_text_says(kind: HoldKind) -> None:
    # The label comes from the typed kind: a reworded (or misleading) text cannot move it.
    t = Telemetry()
    record(t, report(held_back=(Held(kind, 2, "paused: over the budget, load signal"),)))
    assert value(t, "capsched_guard_holds_total", guard=kind.value) == 1
    others = [k for k in HoldKind if k is not kind]
    assert all(value(t, "capsched_guard_holds_total", guard=k.value) == 0 for k in others)


def test_launches_held_gauge_follows_the_latest_tick() -> None:
    t = Telemetry()
    assert value(t, "capsched_launches_held", limit="budget") == 0
    assert value(t, "capsched_launches_held", limit="quota") == 0
    budget = Held(HoldKind.BUDGET, 3, "launches held: plan costs 500.00 USD/h over the budget")
    record(t, report(held_back=(budget, Held(HoldKind.MIN_NODE_AGE, 1, "1 drains held"))))
    assert value(t, "capsched_launches_held", limit="budget") == 1
    assert value(t, "capsched_launches_held", limit="quota") == 0
    record(t, report(plan=None, held_back=()))  # a skipped tick knows nothing new
    assert value(t, "capsched_launches_held", limit="budget") == 1
    record(t, report(held_back=(Held(HoldKind.QUOTA, 0, "plan cut short by a quota"),)))
    assert value(t, "capsched_launches_held", limit="budget") == 0
    assert value(t, "capsched_launches_held", limit="quota") == 1


@given(kind=st.sampled_from(list(ErrorKind)), text=st.text(max_size=60))
def test_error_source_label_is_the_typed_kind_whatever_the_text(kind: ErrorKind, text: str) -> None:
    # Rewording a message (or one that reads like another kind) never moves the label:
    # before, the label was parsed from the text's first word, and "weird" became "other".
    t = Telemetry()
    record(t, report(errors=(TickError(kind, text, "cs-00000001"),)))
    assert value(t, "capsched_tick_errors_total", source=kind.value) == 1
    others = [k for k in ErrorKind if k is not kind]
    assert all(value(t, "capsched_tick_errors_total", source=k.value) in (None, 0) for k in others)


@given(text=st.text(max_size=60))
def test_a_failed_action_counts_as_failed_whatever_its_message(text: str) -> None:
    # Before, a failed action was matched to its error by a "<Kind> <node_id>:" prefix of
    # the error line: any other wording counted the failure as a success.
    t = Telemetry()
    launch = Launch("cs-00000007", MODEL, SPOT, "more")
    error = TickError(ErrorKind.ACTION, text, launch.node_id, SPOT)
    outcome = ActionOutcome(launch, ok=False, error=error)
    record(t, report(actions=(launch,), errors=(error,), outcomes=(outcome,)))
    assert value(t, "capsched_actions_total", kind="launch", result="failed") == 1
    assert value(t, "capsched_actions_total", kind="launch", result="ok") == 0


def test_missing_demand_is_nan_never_zero() -> None:
    t = Telemetry()
    record(
        t,
        report(demand_complete=False),
        demand=DemandSample(0.0, {(MODEL, REGION): math.nan}),
    )
    got = value(t, "capsched_demand_rps", model=MODEL, region=REGION)
    assert got is not None and math.isnan(got)
    headroom = value(t, "capsched_headroom_rps", model=MODEL)
    assert headroom is not None and math.isnan(headroom)
    assert value(t, "capsched_demand_complete") == 0


def test_skipped_tick_keeps_the_last_success_time() -> None:
    t = Telemetry()
    record(t, report(now_s=100.0))
    record(
        t,
        report(
            now_s=400.0,
            plan=None,
            errors=(TickError(ErrorKind.PROVIDER, "provider: Transient: down"),),
        ),
    )
    assert value(t, "capsched_last_successful_tick_timestamp_seconds") == 100.0
    assert value(t, "capsched_ticks_total", outcome="skipped") == 1
    assert value(t, "capsched_tick_errors_total", source="provider") == 1


def test_commitments_paid_and_planned_use() -> None:
    t = Telemetry()
    use = CommitmentUse("ri", "reserved", (OD,), count=4, used=3, usd_per_hour=0.5,
                        on_demand_usd_per_hour=0.8)  # fmt: skip
    record(t, report(plan=dataclasses.replace(plan(), commitments=(use,))))
    assert value(t, "capsched_commitment_nodes", commitment="ri", use="paid") == 4
    assert value(t, "capsched_commitment_nodes", commitment="ri", use="planned") == 3
    record(t, report(plan=plan()))  # the commitment is gone after a reload
    assert value(t, "capsched_commitment_nodes", commitment="ri", use="paid") is None


def test_savings_plans_committed_and_planned_use() -> None:
    t = Telemetry()
    use = SavingsPlanUse("sp", (OD,), usd_per_hour_committed=2.5, usd_per_hour_used=2.34,
                         nodes=2, on_demand_usd_per_hour=3.72)  # fmt: skip
    record(t, report(plan=dataclasses.replace(plan(), savings_plans=(use,))))
    assert value(t, "capsched_savings_plan_usd_per_hour", commitment="sp", use="committed") == 2.5
    assert value(t, "capsched_savings_plan_usd_per_hour", commitment="sp", use="planned") == 2.34
    assert value(t, "capsched_commitment_nodes", commitment="sp", use="planned") == 2
    assert value(t, "capsched_commitment_nodes", commitment="sp", use="paid") is None
    text = generate_latest(t.registry).decode()
    assert 'capsched_savings_plan_usd_per_hour{commitment="sp",use="committed"} 2.5' in text
    record(t, report(plan=plan()))  # the savings plan is gone after a reload
    assert value(t, "capsched_savings_plan_usd_per_hour", commitment="sp", use="planned") is None
    assert value(t, "capsched_commitment_nodes", commitment="sp", use="planned") is None


def test_unmet_and_infeasible_plans() -> None:
    t = Telemetry()
    record(t, report(plan=plan(PlanStatus.INFEASIBLE, unmet=7.5)))
    assert value(t, "capsched_plan_unmet_rps", model=MODEL) == 7.5
    assert value(t, "capsched_plan_status", status="infeasible") == 1
    assert value(t, "capsched_plan_status", status="optimal") == 0
    assert value(t, "capsched_solves_total", status="infeasible") == 1


def test_failures_reloads_and_settings() -> None:
    t = Telemetry()
    t.record_tick_failure("failed", 1.0)
    t.record_tick_failure("timeout", 120.0)
    t.record_reload(ok=True)
    t.record_reload(ok=False)
    t.configure(tick_interval_s=300.0, budget_usd_per_hour=None)
    t.record_control(paused=True, pending_approval=False)
    assert value(t, "capsched_ticks_total", outcome="failed") == 1
    assert value(t, "capsched_ticks_total", outcome="timeout") == 1
    assert value(t, "capsched_tick_errors_total", source="exception") == 1
    assert value(t, "capsched_config_reloads_total") == 2
    assert value(t, "capsched_config_reload_failures_total") == 1
    assert value(t, "capsched_tick_interval_seconds") == 300.0
    budget = value(t, "capsched_budget_usd_per_hour")
    assert budget is not None and math.isnan(budget)
    assert value(t, "capsched_paused") == 1


def test_no_node_ids_in_labels() -> None:
    t = Telemetry()
    record(t, report(actions=(Launch("cs-00000042", MODEL, SPOT, "more"),)))
    text = generate_latest(t.registry).decode()
    assert "cs-0000" not in text


def test_two_telemetries_do_not_collide() -> None:
    # Each daemon (and each test) has its own registry: no duplicated-timeseries error.
    Telemetry()
    Telemetry()


def make_config() -> Config:
    return Config.model_validate(
        {
            "models": [{"name": MODEL, "min_replicas": 1}],
            "regions": [{"name": REGION, "location": "us-east-1", "max_latency_ms": 40}],
            "clouds": {
                "aws": {"regions": ["us-east-1"], "gpu_kinds": ["L4"]},
                "gcp": {"enabled": False},
            },
            "planning": {"robustness_fraction": 0.5, "budget_usd_per_hour": 50.0},
            "solver": {"time_limit_s": 2.0},
            "guards": {"min_node_age_s": 0},
        }
    )


class Load:
    async def demand(self, now_s: float) -> DemandSample:
        return DemandSample(now_s, {(MODEL, REGION): 20.0})


async def test_tick_hook_against_the_reconciler(tmp_path: Path) -> None:
    config = make_config()
    catalog = load_catalog()
    cloud = SimCloud(
        catalog.offerings, catalog.instance_types, boot_time_s=300, random_interruptions=False
    )
    store = StateStore(tmp_path / "state.db")
    t = Telemetry()
    rec = build_scheduler(
        config, provider=cloud, metrics=t.tap(Load()), store=store, sleep=no_sleep
    )
    hook = t.tick_hook(rec)
    now = 0.0
    for _ in range(3):  # launch, boot, ready
        now += 300.0
        cloud.advance_to(now)
        hook(await rec.tick(now), 0.5)
    assert value(t, "capsched_ticks_total", outcome="ok") == 3
    assert value(t, "capsched_budget_usd_per_hour") == 50.0
    assert value(t, "capsched_demand_rps", model=MODEL, region=REGION) == 20.0
    planned = value(t, "capsched_planned_demand_rps", model=MODEL, region=REGION)
    assert planned is not None and planned >= 20.0
    launched = value(t, "capsched_actions_total", kind="launch", result="ok")
    assert launched is not None and launched >= 1
    ready = sum(
        s.value
        for m in t.registry.collect()
        if m.name == "capsched_nodes"
        for s in m.samples
        if s.labels["state"] == "ready"
    )
    assert ready == len(store.live_nodes()) >= 1
    capacity = value(t, "capsched_capacity_rps", model=MODEL)
    assert capacity is not None and capacity > 0
    fleet_cost = value(t, "capsched_fleet_cost_usd_per_hour")
    assert fleet_cost is not None and fleet_cost > 0
    assert value(t, "capsched_last_successful_tick_timestamp_seconds") == now
    quantiles = [
        s for m in t.registry.collect() if m.name == "capsched_forecast_peak_rps" for s in m.samples
    ]
    assert quantiles and all(s.labels["model"] == MODEL for s in quantiles)
    # The factor on the forecast band the plan used (1 until plans have been judged).
    scale = value(t, "capsched_forecast_band_scale", model=MODEL)
    assert scale is not None and 0.5 <= scale <= 3.0

    # A reclaim is counted once, on the tick that saw it, and never again.
    victim = store.live_nodes()[0]
    store.transition(victim.node_id, NodeState.INTERRUPTED, now + 1, "reclaimed (test)")
    now += 300.0
    cloud.advance_to(now)
    hook(await rec.tick(now), 0.5)
    labels = {"model": MODEL, "pool": victim.pool.key, "market": victim.pool.market.value}
    assert value(t, "capsched_preemptions_total", **labels) == 1
    now += 300.0
    cloud.advance_to(now)
    hook(await rec.tick(now), 0.5)
    assert value(t, "capsched_preemptions_total", **labels) == 1
    store.close()


DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def exported_names() -> set[str]:
    names: set[str] = set()
    for family in Telemetry().registry.collect():
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
        }.get(family.type, ("",))
        names.update(family.name + s for s in suffixes)
    return names


@pytest.mark.parametrize(
    "path",
    ["prometheus/alerts.yml", "prometheus/alerts_test.yml", "grafana/capsched.json"],
)
def test_deploy_files_use_only_exported_metric_names(path: str) -> None:
    used = set(re.findall(r"\bcapsched_[a-z_]+", (DEPLOY / path).read_text()))
    # Alert names are CamelCase and the dashboard uid is bare "capsched"; all else is a metric.
    assert used, path
    assert used <= exported_names(), sorted(used - exported_names())
