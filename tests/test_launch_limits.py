"""A budget or quota that holds launches back is never silent (issue 16, defect 5): the
planner says which limit cut a plan short, the guards turn that and an over-budget plan
into typed holds, and the daemon (one WARNING per change, a metric, its status),
`capsched simulate` (a printed line per policy, summary.json) and the TUI header show it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import builders
import numpy as np
import pytest
from fakes import Clock, no_sleep
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.sim import SimCloud
from capsched.cli import main
from scheduler.config import Config
from scheduler.decide.diff import propose
from scheduler.decide.guards import Held, LaunchLimitWatch, apply_guards
from scheduler.decide.observation import Observation
from scheduler.decide.planner import binding_limits, make_plan
from scheduler.domain import Demand, HoldKind, Plan, PlanStatus, Unmet
from scheduler.fleet.catalog import load_catalog
from scheduler.fleet.profiles import load_profiles
from scheduler.loop.factory import build_scheduler
from scheduler.loop.store import StateStore
from scheduler.ports.metrics import DemandSample
from scheduler.service.daemon import Daemon
from scheduler.service.telemetry import Telemetry
from solver import DemandSpec, PoolSpec, Problem, QuotaSpec, Solution, Status
from tui.app import CapschedApp
from tui.backend import DbBackend
from tui.screens import StatusBar

MODEL, REGION = "llama-3.1-8b", "us-east"


def config(
    *,
    budget: float | None = None,
    quota_gpus: int | None = None,
    location: str = "us-east-1",
    db: Path | None = None,
) -> Config:
    """One model from one region, AWS us-east-1 only, no on-demand share or robustness."""
    return builders.config(
        scheduler={"tick_interval_s": 300, **({"state_db": str(db)} if db else {})},
        daemon={"api_port": 0},
        models=[{"name": MODEL, "min_on_demand_share": 0.0}],
        regions=[{"name": REGION, "location": location, "max_latency_ms": 10}],
        clouds={"aws": {"regions": ["us-east-1"]}, "gcp": {"enabled": False}},
        planning={"robustness_fraction": 0.0, "budget_usd_per_hour": budget},
        guards={"min_node_age_s": 0},
        quotas=[] if quota_gpus is None else [{"cloud": "aws", "max_gpus": quota_gpus}],
    )


def plan_for(cfg: Config, rps: float) -> Plan:
    return make_plan(cfg, load_catalog(), load_profiles(), [Demand(MODEL, REGION, rps)])


# -- the planner says which limit cut the plan -------------------------------------------------


def test_a_budget_that_binds_is_named_on_the_plan() -> None:
    plan = plan_for(config(budget=5.0), 200.0)
    assert plan.unmet and plan.usd_per_hour <= 5.0 + 1e-6
    assert plan.limited_by == (HoldKind.BUDGET,)


def test_a_quota_that_binds_is_named_on_the_plan() -> None:
    plan = plan_for(config(quota_gpus=2), 200.0)
    assert plan.unmet
    assert plan.limited_by == (HoldKind.QUOTA,)


def test_no_limit_is_named_when_the_plan_serves_everything() -> None:
    plan = plan_for(config(budget=1e6, quota_gpus=10_000), 20.0)
    assert not plan.unmet and plan.limited_by == ()


def test_demand_no_pool_can_reach_is_not_blamed_on_the_budget() -> None:
    # Traffic entering in Europe with a 10 ms limit: no us-east-1 pool is in reach, so the
    # plan leaves it unmet whatever the budget says.
    plan = plan_for(config(budget=5.0, location="europe-west4"), 20.0)
    assert plan.unmet and plan.limited_by == ()


def _problem(
    prices: list[float], gpus: list[int], budget: float | None, quota: int | None
) -> Problem:
    pools = tuple(
        PoolSpec(f"p{i}", 0, i, False, price, gpus=g)
        for i, (price, g) in enumerate(zip(prices, gpus, strict=True))
    )
    n = len(pools)
    return Problem(
        models=("m",),
        pools=pools,
        capacity_rps=np.ones((1, n)),
        demands=(DemandSpec(0, "r", 10.0, (0,)),),
        current=np.zeros((1, n), dtype=np.int64),
        quotas=() if quota is None else (QuotaSpec("q", tuple(range(n)), quota),),
        budget_usd_per_hour=budget,
    )


@settings(max_examples=200, deadline=None)
@given(
    prices=st.lists(st.floats(0.1, 50.0), min_size=1, max_size=5),
    counts=st.lists(st.integers(0, 4), min_size=5, max_size=5),
    budget=st.one_of(st.none(), st.floats(0.0, 200.0)),
    quota=st.one_of(st.none(), st.integers(0, 30)),
    unmet=st.floats(0.0, 10.0),
)
def test_a_limit_is_named_only_when_one_more_node_anywhere_would_break_it(
    prices: list[float],
    counts: list[int],
    budget: float | None,
    quota: int | None,
    unmet: float,
) -> None:
    gpus = [1 + i % 3 for i in range(len(prices))]
    problem = _problem(prices, gpus, budget, quota)
    nodes = np.array([counts[: len(prices)]], dtype=np.int64)
    price = float((nodes[0] * np.array(prices)).sum())
    used = int((nodes[0] * np.array(gpus)).sum())
    solution = Solution(Status.FEASIBLE, nodes, 0.0, 0.0, 0.0, 0.0, (unmet,), price, False)
    named = binding_limits(problem, solution)
    over_budget = [budget is not None and price + p > budget + 1e-6 for p in prices]
    over_quota = [quota is not None and used + g > quota for g in gpus]
    if unmet <= 1e-6 or not all(b or q for b, q in zip(over_budget, over_quota, strict=True)):
        assert named == ()  # everything served, or some pool still had room under every limit
    else:
        assert (HoldKind.BUDGET in named) == any(over_budget)
        assert (HoldKind.QUOTA in named) == any(over_quota)


# -- the guards hold, typed ----------------------------------------------------------------------


def test_a_plan_the_budget_cut_short_is_a_budget_hold_and_its_launches_still_go() -> None:
    cfg = config(budget=5.0)
    plan = plan_for(cfg, 200.0)
    obs = Observation(0.0, DemandSample(0.0, {(MODEL, REGION): 200.0}), True, (), (), ())
    ids = iter(range(1000))
    g = apply_guards(obs, plan, propose(obs, plan), cfg, lambda m, p: 1.0, lambda: f"n{next(ids)}")
    assert [h.kind for h in g.held_back] == [HoldKind.BUDGET]
    assert g.held_back[0].nodes == 0 and "unmet" in g.held_back[0].text
    assert len(g.actions) == sum(p.count for p in plan.placements) > 0


def test_the_watch_warns_once_per_change_not_every_tick(caplog: pytest.LogCaptureFixture) -> None:
    watch = LaunchLimitWatch()
    budget = Held(HoldKind.BUDGET, 2, "launches held: plan costs 500.00 USD/h over the budget")
    quota = Held(HoldKind.QUOTA, 0, "launches held: plan leaves 3.00 rps unmet")
    age = Held(HoldKind.MIN_NODE_AGE, 1, "1 drains held: ready for less than 900 s")
    with caplog.at_level(logging.INFO, logger="scheduler.decide.guards"):
        changes = [
            watch.update((age,), 0.0),
            watch.update((budget,), 300.0),
            watch.update((budget, age), 600.0),
            watch.update((budget,), 900.0),
            watch.update((budget, quota), 1200.0),
            watch.update((), 1500.0),
            watch.update((age,), 1800.0),
        ]
    assert changes == [False, True, False, False, True, True, False]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "limits=budget now_s=300" in warnings[0] and "over the budget" in warnings[0]
    assert "limits=budget,quota now_s=1200" in warnings[1]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == ["launches_no_longer_held was=budget,quota now_s=1500"]


# -- the daemon: one WARNING, a metric, its status ---------------------------------------------


class _Load:
    async def demand(self, now_s: float) -> DemandSample:
        return DemandSample(now_s, {(MODEL, REGION): 200.0})


async def test_the_daemon_warns_once_exports_and_reports_a_binding_budget(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config(budget=5.0, db=tmp_path / "state.db")
    catalog = load_catalog()
    cloud = SimCloud(catalog.offerings, catalog.instance_types, boot_time_s=60)
    store = StateStore(cfg.scheduler.state_db)
    telemetry = Telemetry()
    rec = build_scheduler(cfg, provider=cloud, metrics=_Load(), store=store, sleep=no_sleep)
    clock = Clock()

    async def advance(now_s: float) -> None:
        cloud.advance_to(now_s)

    daemon = Daemon(
        config=cfg,
        config_path=None,
        reconciler=rec,
        store=store,
        clock=clock,
        advance=advance,
        telemetry=telemetry,
    )
    with caplog.at_level(logging.INFO):
        for _ in range(4):
            assert await daemon.tick_once() is not None
            clock.now += 300.0
    held = [r for r in caplog.records if r.getMessage().startswith("launches_held ")]
    assert len(held) == 1 and held[0].levelno == logging.WARNING  # 4 ticks, one change
    assert "limits=budget" in held[0].getMessage()
    status = daemon.status()
    assert any(h["kind"] == "budget" for h in status["held_back"])
    sample = telemetry.registry.get_sample_value("capsched_launches_held", {"limit": "budget"})
    assert sample == 1
    stored = json.loads(store.plans(1)[0]["held_back"])
    assert any(h["kind"] == "budget" for h in stored)
    store.close()


# -- capsched simulate: printed per policy, in summary.json ------------------------------------


def test_simulate_prints_and_records_a_binding_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The case: the default config's 400 USD/h budget under a 200-GPU load.
    # static-peak's plan is priced above it: the launches that fit go (issue 22; they were
    # all held, and static-peak served nothing), the rest are held on every tick.
    out = tmp_path / "out"
    args = ["simulate", "--policy", "static-peak", "--fleet-gpus", "200", "--out", str(out)]
    assert main([*args, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())["policies"]["static-peak"]
    ticks = json.loads((out / "run.json").read_text())["ticks"]["static-peak"]
    assert summary["launches"] > 0 and summary["slo_attainment"] > 0.5
    # 15 minutes of warm-up and the hour of the trace, never above 400 USD/h.
    assert summary["cost_usd"] <= 400.0 * 1.25
    assert summary["budget_held_ticks"] == ticks > 0 and summary["quota_held_ticks"] == 0
    assert f"held: static-peak: the budget held launches back on {ticks} of {ticks} ticks" in (
        printed
    )


def test_simulate_says_nothing_of_limits_that_never_held(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["simulate", "--policy", "static-peak", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())["policies"]["static-peak"]
    assert summary["budget_held_ticks"] == 0 and summary["quota_held_ticks"] == 0
    assert summary["launches"] > 0
    assert "held:" not in capsys.readouterr().out


# -- the TUI header --------------------------------------------------------------------------------


def _db_with_plan(path: Path, held: tuple[Held, ...]) -> Path:
    store = StateStore(path)
    plan = Plan(PlanStatus.OPTIMAL, (), 0.0, 0.0, 0.0, 0.1, unmet=(Unmet(MODEL, REGION, 3.0),))
    store.record_plan(plan, 1000.0, "capsched", held)
    store.close()
    return path


@pytest.mark.parametrize(
    ("held", "shown"),
    [
        ((Held(HoldKind.BUDGET, 0, "launches held: plan leaves 3.00 rps unmet"),), "budget"),
        (
            (
                Held(HoldKind.QUOTA, 0, "q"),
                Held(HoldKind.BUDGET, 4, "b"),
                Held(HoldKind.MIN_NODE_AGE, 1, "1 drains held"),
            ),
            "budget + quota",
        ),
        ((Held(HoldKind.MIN_NODE_AGE, 1, "over the budget, says the text"),), None),
    ],
)
async def test_the_tui_header_shows_launches_held_by_a_limit(
    tmp_path: Path, held: tuple[Held, ...], shown: str | None
) -> None:
    db = _db_with_plan(tmp_path / "state.db", held)
    app = CapschedApp(DbBackend(db), poll=False, prices={})
    async with app.run_test(size=(140, 30)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        header = app.screen.query_one(StatusBar).plain
    if shown is None:
        assert "LAUNCHES HELD" not in header
    else:
        assert f"LAUNCHES HELD: {shown}" in header
