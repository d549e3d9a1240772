"""Quotas degrade like budgets (issue 22): a plan that would pass a `[[quotas]]` cap (a
baseline's, which knows no quota) launches what fits, never nothing and never past the
cap; the launches held are a typed QUOTA hold. Through the guards, through the daemon's
tick, and in a replay where every policy meets a quota."""

from __future__ import annotations

import itertools
import json
import logging
import sqlite3
from collections import Counter
from pathlib import Path

import builders
import pytest
from fakes import Clock, no_sleep
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.sim import SimCloud
from capsched.cli import main
from scheduler.config import DEFAULT_CONFIG_PATH, Config
from scheduler.decide.diff import propose
from scheduler.decide.guards import Held, apply_guards, within_limits
from scheduler.decide.observation import Observation, PolicyBase
from scheduler.domain import (
    Cloud,
    HoldKind,
    Market,
    Node,
    NodeState,
    Placement,
    Plan,
    PlanStatus,
    Pool,
)
from scheduler.domain.actions import Launch
from scheduler.fleet.catalog import load_catalog
from scheduler.loop.factory import build_scheduler
from scheduler.loop.store import StateStore
from scheduler.ports.metrics import DemandSample
from scheduler.service.daemon import Daemon
from scheduler.service.telemetry import Telemetry

SMALL, BIG = "llama-3.1-8b", "llama-3.1-70b"
REGION = "us-east"
P4 = Pool(Cloud.AWS, "us-east-1", "", "p4d.24xlarge", Market.ON_DEMAND)  # 8 A100
L40 = Pool(Cloud.AWS, "us-east-1", "", "g6e.xlarge", Market.ON_DEMAND)  # 1 L40S
L40_SPOT = Pool(Cloud.AWS, "us-east-1", "", "g6e.xlarge", Market.SPOT)  # 1 L40S
P4_EAST2 = Pool(Cloud.AWS, "us-east-2", "", "p4d.24xlarge", Market.ON_DEMAND)  # outside the cap
GPUS = {P4: 8, L40: 1, L40_SPOT: 1, P4_EAST2: 8}
PRICES = {P4: 21.96, L40: 1.86, L40_SPOT: 0.8, P4_EAST2: 21.96}
RPS = {P4: 4.0, L40: 1.0, L40_SPOT: 1.0, P4_EAST2: 4.0}
MODEL_OF = {P4: BIG, L40: SMALL, L40_SPOT: SMALL, P4_EAST2: BIG}
TYPES = load_catalog().instance_types
NOW = 10_000.0


def config(
    max_gpus: int | None = 10,
    *,
    budget: float | None = None,
    market: str | None = None,
    db: Path | None = None,
    small_priority: int = 0,
) -> Config:
    """Both models from us-east, AWS us-east-1 and us-east-2, a cap on us-east-1."""
    quota = {"cloud": "aws", "region": "us-east-1", "max_gpus": max_gpus}
    if market:
        quota["market"] = market
    return builders.config(
        scheduler={"tick_interval_s": 300, **({"state_db": str(db)} if db else {})},
        daemon={"api_port": 0},
        models=[
            {"name": SMALL, "min_on_demand_share": 0.0, "priority": small_priority},
            {"name": BIG, "min_on_demand_share": 0.0},
        ],
        regions=[{"name": REGION, "location": "us-east-1", "max_latency_ms": 40}],
        clouds={"aws": {"regions": ["us-east-1", "us-east-2"]}, "gcp": {"enabled": False}},
        planning={"robustness_fraction": 0.0, "budget_usd_per_hour": budget},
        guards={"min_node_age_s": 0, "max_scale_down_fraction": 1.0},
        quotas=[] if max_gpus is None else [quota],
    )


def node(i: int, pool: Pool, state: NodeState = NodeState.READY) -> Node:
    return Node(f"n{i}", MODEL_OF[pool], pool, state, f"i-{i}", 0.0, 0.0)


def observe(nodes: tuple[Node, ...] = ()) -> Observation:
    offers = tuple(builders.offering(p, usd) for p, usd in PRICES.items())
    rps = {(SMALL, REGION): 1.0, (BIG, REGION): 1.0}
    return Observation(NOW, DemandSample(NOW, rps), True, nodes, offers, ())


def plan_of(counts: dict[Pool, int]) -> Plan:
    pls = tuple(Placement(MODEL_OF[p], p, c) for p, c in counts.items() if c)
    usd = sum(PRICES[p] * c for p, c in counts.items())
    return Plan(PlanStatus.FEASIBLE, pls, usd, usd, 0.0, 0.0)


def guard(obs: Observation, plan: Plan, cfg: Config) -> tuple[Counter[Pool], tuple[Held, ...]]:
    ids = (f"new{i}" for i in itertools.count())
    g = apply_guards(
        obs,
        plan,
        propose(obs, plan),
        cfg,
        lambda m, p: RPS[p],
        lambda: next(ids),
        instance_types=TYPES,
    )
    return Counter(a.pool for a in g.actions if isinstance(a, Launch)), g.held_back


def test_a_plan_over_a_quota_launches_what_fits_and_holds_only_the_rest() -> None:
    # 2 x 8 + 2 x 1 GPUs asked in us-east-1 under a cap of 10: one p4d and both g6e fit.
    # Before: nothing held them, the fleet went to 18 GPUs (the cloud refuses past its
    # quota, the simulated one did not).
    plan = plan_of({P4: 2, L40: 2, P4_EAST2: 1})
    launched, held = guard(observe(), plan, config(10))
    assert launched == {P4: 1, L40: 2, P4_EAST2: 1}  # the pool outside the cap is untouched
    assert [(h.kind, h.nodes) for h in held] == [(HoldKind.QUOTA, 1)]
    assert "1 of 5 launches held: they would pass quotas[0] (aws us-east-1, 10 GPUs)" in (
        held[0].text
    )
    assert "the 4 that fit go" in held[0].text


def test_without_a_quota_nothing_is_held() -> None:
    launched, held = guard(observe(), plan_of({P4: 2, L40: 2}), config(None))
    assert launched == {P4: 2, L40: 2} and held == ()


def test_a_cap_on_one_market_holds_only_that_market() -> None:
    plan = plan_of({L40_SPOT: 3, L40: 3})
    launched, held = guard(observe(), plan, config(1, market="spot"))
    assert launched == {L40_SPOT: 1, L40: 3}
    assert [(h.kind, h.nodes) for h in held] == [(HoldKind.QUOTA, 2)]


@pytest.mark.parametrize("state", [NodeState.DRAINING, NodeState.BOOTING, NodeState.REQUESTED])
def test_live_nodes_hold_their_gpus_until_they_are_gone(state: NodeState) -> None:
    # A draining p4d holds 8 GPUs until the cloud has it back, and so does one on its way
    # that the plan keeps: 16 of the 18 are taken, two g6e fit.
    nodes = (node(0, P4), node(1, P4, state))
    plan = plan_of({P4: 1 if state is NodeState.DRAINING else 2, L40: 4})
    launched, held = guard(observe(nodes), plan, config(18))
    assert launched == {L40: 2}
    assert [(h.kind, h.nodes) for h in held] == [(HoldKind.QUOTA, 2)]


def test_a_launch_over_both_limits_is_a_quota_hold_and_the_kinds_add_up() -> None:
    # Budget 30 USD/h: one p4d (21.96) and four g6e (1.86) fit it; the cap of 9 GPUs
    # holds the second p4d whatever the budget says. Each held launch counts once.
    plan = plan_of({P4: 2, L40: 6})
    launched, held = guard(observe(), plan, config(9, budget=30.0))
    assert launched == {P4: 1, L40: 1}
    kinds = {h.kind: h.nodes for h in held}
    assert kinds == {HoldKind.QUOTA: 6}  # the g6e past the 9th GPU break the cap first
    launched, held = guard(observe(), plan, config(40, budget=30.0))
    assert launched == {P4: 1, L40: 4}
    assert {h.kind: h.nodes for h in held} == {HoldKind.BUDGET: 3}


def test_a_higher_priority_gets_the_quota_first() -> None:
    plan = plan_of({P4: 1, L40: 4})
    launched, _ = guard(observe(), plan, config(8, small_priority=5))
    assert launched == {L40: 4}  # 4 GPUs used: the p4d's 8 no longer fit
    # Equal priorities: the model furthest from its plan goes first, on a tie by name
    # (llama-3.1-70b): its p4d takes the 8 GPUs and no g6e fits after it.
    launched, _ = guard(observe(), plan, config(8))
    assert launched == {P4: 1}


def test_the_guard_refuses_to_count_quotas_without_the_catalog() -> None:
    obs, plan = observe(), plan_of({P4: 1})
    with pytest.raises(ValueError, match="pass instance_types"):
        within_limits(obs, plan, propose(obs, plan), config(8), lambda m, p: RPS[p])


@settings(max_examples=150, deadline=None)
@given(
    cap=st.integers(0, 30),
    running=st.lists(st.sampled_from([P4, L40, L40_SPOT, P4_EAST2]), max_size=4),
    wanted=st.lists(st.sampled_from([P4, L40, L40_SPOT, P4_EAST2]), max_size=12),
)
def test_launches_fit_the_cap_and_none_that_fits_is_held(
    cap: int, running: list[Pool], wanted: list[Pool]
) -> None:
    nodes = tuple(node(i, p) for i, p in enumerate(running))
    plan = plan_of(Counter(running + wanted))
    obs = observe(nodes)
    prop = propose(obs, plan)
    admission = within_limits(
        obs, plan, prop, config(cap), lambda m, p: RPS[p], instance_types=TYPES
    )
    go = admission.admitted
    assert Counter(go) + Counter((h.model, h.pool) for h in admission.held) == Counter(
        prop.launches
    )
    assert all(h.limit is HoldKind.QUOTA and h.quotas == (0,) for h in admission.held)
    in_cap = sum(GPUS[p] for p in running if p is not P4_EAST2)
    used = in_cap + sum(GPUS[p] for _, p in go if p is not P4_EAST2)
    assert not any(p is not P4_EAST2 for _, p in go) or used <= cap  # never past the cap
    # Maximal: every launch held would pass the cap on top of what went.
    assert all(used + GPUS[h.pool] > cap for h in admission.held)
    assert not any(h.pool is P4_EAST2 for h in admission.held)


# -- the daemon's tick ---------------------------------------------------------------------------


class _Fixed(PolicyBase):
    """A plan that knows no quota (as the baselines' do)."""

    name = "fixed"

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def decide(self, obs: Observation) -> Plan:
        return self.plan

    def revise(self, obs: Observation) -> Plan:
        return self.plan


class _Load:
    async def demand(self, now_s: float) -> DemandSample:
        return DemandSample(now_s, {(SMALL, REGION): 2.0, (BIG, REGION): 8.0})


async def test_the_daemon_launches_what_fits_a_quota_and_reports_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config(10, db=tmp_path / "state.db")
    catalog = load_catalog()
    cloud = SimCloud(catalog.offerings, catalog.instance_types, boot_time_s=60)
    store = StateStore(cfg.scheduler.state_db)
    telemetry = Telemetry()
    policy = _Fixed(plan_of({P4: 2, L40: 2, P4_EAST2: 1}))
    rec = build_scheduler(
        cfg, provider=cloud, metrics=_Load(), store=store, policy=policy, sleep=no_sleep
    )
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
        for _ in range(3):
            assert await daemon.tick_once() is not None
            clock.now += 300.0
    live = Counter(n.pool for n in store.live_nodes())
    assert live == {P4: 1, L40: 2, P4_EAST2: 1}  # 10 GPUs in us-east-1, never more
    warned = [r for r in caplog.records if r.getMessage().startswith("launches_held ")]
    assert len(warned) == 1 and "limits=quota" in warned[0].getMessage()
    held = daemon.status()["held_back"]
    assert [(h["kind"], h["nodes"]) for h in held] == [("quota", 1)]
    stored = json.loads(store.plans(1)[0]["held_back"])
    assert [(h["kind"], h["nodes"]) for h in stored] == [("quota", 1)]
    assert telemetry.registry.get_sample_value("capsched_launches_held", {"limit": "quota"}) == 1
    store.close()


# -- a replay: every policy meets a quota -------------------------------------------------------


def _peak_gpus(db: Path, region: str) -> int:
    """Most accelerators live at once in AWS `region`, from the nodes' transitions (a node
    is live from its request until it is gone or failed)."""
    conn = sqlite3.connect(db)
    nodes = {
        node_id: itype
        for node_id, itype in conn.execute(
            "select node_id, instance_type from nodes where cloud = 'aws' and region = ?",
            (region,),
        )
    }
    changes: list[tuple[float, int]] = []
    for node_id, at_s, old, new in conn.execute(
        "select node_id, at_s, old, new from node_events order by at_s, id"
    ):
        if node_id not in nodes:
            continue
        gpus = TYPES[(Cloud.AWS, nodes[node_id])].gpu_count
        if not old:
            changes.append((at_s, gpus))
        elif new in ("gone", "failed"):
            changes.append((at_s, -gpus))
    conn.close()
    peak = live = 0
    for _, delta in sorted(changes, key=lambda c: (c[0], c[1])):  # releases first
        live += delta
        peak = max(peak, live)
    return peak


def test_every_policy_stays_within_a_quota_and_launches_what_fits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The bundled hour with no budget: static-peak asks for 2 p4d.24xlarge (16 A100) and 2
    # g6e.xlarge in us-east-1. A cap of 10 GPUs there: before, the guards knew no quota and
    # the most GPUs live at once there were 18 (static-peak, reactive), 35 (spothedge), 16
    # (oracle: a move's old nodes drain while the new ones boot) and 11 (capsched).
    text = DEFAULT_CONFIG_PATH.read_text().replace("budget_usd_per_hour = 400.0", "")
    start = text.index("[[quotas]]")
    end = text.index("max_gpus = 32") + len("max_gpus = 32")
    text = (
        text[:start]
        + '[[quotas]]\ncloud = "aws"\nregion = "us-east-1"\nmax_gpus = 10'
        + (text[end:])
    )
    cfg = tmp_path / "quota.toml"
    cfg.write_text(text)
    out = tmp_path / "out"
    assert main(["simulate", "--no-progress", "--config", str(cfg), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())["policies"]
    assert set(summary) >= {"capsched", "reactive", "spothedge", "static-peak", "oracle"}
    for policy, s in summary.items():
        assert s["launches"] > 0, policy
        # Measured 0.91 (static-peak and reactive: the quota leaves us-east short in some
        # minutes, and a minute whose load fills all the capacity it can reach is late; the
        # idle nodes out of its reach counted in the queue until docs/solver.md "Spot-loss
        # robustness by reach", 0.98) to 1.0.
        assert s["slo_attainment"] > 0.9, policy
        assert _peak_gpus(out / f"state-{policy}.db", "us-east-1") <= 10, policy
    assert summary["static-peak"]["quota_held_ticks"]  # the cap bound, and it was said
    assert "held: static-peak: a quota held launches back" in printed
