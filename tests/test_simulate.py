"""The replay engine and `capsched simulate`: hand-computable accounting, determinism,
the latency model, and the CLI's outputs."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adapters.sim import SpotTrace
from capsched.cli import main
from scheduler.domain import Placement
from scheduler.fleet.boot import node_boot_s
from scheduler.fleet.capacity import node_rps
from scheduler.fleet.catalog import load_catalog
from simulations.engine import max_flow, replay
from simulations.latency import within_slo_share
from simulations.report import SUMMARY_KEYS
from simulations.world import WorldSpec, build_world

sys.path.insert(0, str(Path(__file__).parent))
from sim_helpers import (
    MODEL,
    OD_POOL,
    SPOT_POOL,
    Fixed,
    registered,
    small_config,
    world,
)

PRICES = {o.pool: o.usd_per_hour for o in load_catalog().offerings}


async def test_one_on_demand_node_for_one_hour_costs_its_hourly_price(tmp_path: Path) -> None:
    with registered("fixed", Fixed((Placement(MODEL, OD_POOL, 1),))):
        r = await replay(world(small_config(), [1.0] * 60), "fixed", tmp_path / "s.db")
    s = r.summary(None)
    assert r.cost_usd == pytest.approx(PRICES[OD_POOL])
    assert r.cost_by_market["on-demand"][-1] == pytest.approx(PRICES[OD_POOL])
    assert r.cost_by_market["spot"][-1] == 0.0
    assert s["gpu_hours"] == pytest.approx(1.0)
    assert s["launches"] == 1 and s["preemptions"] == 0
    assert s["unserved_fraction"] == 0.0 and s["availability"] == 1.0
    assert (r.capacity_rps[0] > 1.0).all()


async def test_boot_delay_leaves_demand_unserved_until_ready(tmp_path: Path) -> None:
    w = world(small_config(), [1.0] * 20, boot_time_s=300.0)
    with registered("fixed", Fixed((Placement(MODEL, OD_POOL, 1),))):
        r = await replay(w, "fixed", tmp_path / "s.db")
    assert (r.capacity_rps[0][:5] == 0).all() and (r.capacity_rps[0][5:] > 0).all()
    s = r.summary(None)
    assert s["unserved_fraction"] == pytest.approx(5 / 20)
    assert s["availability"] == pytest.approx(15 / 20)


async def test_nodes_boot_for_their_model_and_instance_type(tmp_path: Path) -> None:
    # The simulated cloud boots each node for `node_boot_s` (8B on g6e.xlarge: about 6.5
    # minutes), not the flat scenario boot time it was given.
    config = small_config()
    catalog = load_catalog()
    boot_s = node_boot_s(config, MODEL, catalog.instance_type(OD_POOL))
    assert 300.0 < boot_s < 600.0
    w = dataclasses.replace(world(config, [1.0] * 20, boot_time_s=600.0), boot_per_node=True)
    with registered("fixed", Fixed((Placement(MODEL, OD_POOL, 1),))):
        r = await replay(w, "fixed", tmp_path / "s.db")
    ready = math.ceil(boot_s / 60.0)  # the first whole minute the node serves
    assert (r.capacity_rps[0][:ready] == 0).all() and (r.capacity_rps[0][ready:] > 0).all()


async def test_per_model_splits_unserved_before_and_after_boot_plus_tick(tmp_path: Path) -> None:
    # Boot 300 s + tick 300 s: the first 10 minutes are "early"; the node is ready at 5.
    w = world(small_config(), [1.0] * 20, boot_time_s=300.0)
    with registered("fixed", Fixed((Placement(MODEL, OD_POOL, 1),))):
        r = await replay(w, "fixed", tmp_path / "s.db")
    figures = r.per_model()[MODEL]
    assert r.early_s == 600.0
    assert figures["requests"] == pytest.approx(20 * 60)
    assert figures["served"] == pytest.approx(15 * 60)
    assert figures["unserved"] == pytest.approx(5 * 60)
    assert figures["unserved_early"] == pytest.approx(5 * 60)
    assert figures["unserved_after"] == 0.0
    assert figures["unserved_early_fraction"] == pytest.approx(0.25)
    assert figures["slo_missed_early"] >= figures["unserved_early"]


async def test_preemption_drops_capacity_when_the_notice_ends(tmp_path: Path) -> None:
    # The pool holds one node for 630 s, then none: notice at 630 s, reclaim at 750 s.
    trace = SpotTrace("test", 630.0, np.array([1, 0, 0, 0]), loop=False)
    w = world(small_config(), [1.0] * 20, spot={SPOT_POOL: trace})
    with registered("fixed", Fixed((Placement(MODEL, SPOT_POOL, 1),))):
        r = await replay(w, "fixed", tmp_path / "s.db")
    cap = r.capacity_rps[0]
    # Capacity is the state at the start of each minute: still serving at 720 s (inside the
    # two-minute notice), gone at 780 s; the replacement cannot launch in the empty pool.
    assert (cap[:13] > 0).all()
    assert (cap[13:] == 0).all()
    s = r.summary(None)
    assert s["preemptions"] == 1
    assert r.cost_usd == pytest.approx(PRICES[SPOT_POOL] * 750 / 3600)  # billed to the reclaim
    assert s["unserved_fraction"] == pytest.approx(7 / 20)
    assert r.ticks == 5  # every 300 s from 0 to 900, and one at the notice (630 s)


async def test_perfect_forecast_has_capacity_ready_when_a_step_arrives(tmp_path: Path) -> None:
    # 1 rps for an hour, then 30 rps: capsched's forecast cannot see the step coming, the
    # perfect-forecast diagnostic reads it a horizon (30 min) ahead and launches in time.
    # The fast loop is off: it reacts to the step a tick sooner, which is not the forecast.
    demand = [1.0] * 60 + [30.0] * 30
    config = small_config(fast_interval_s=0)
    runs = {
        policy: await replay(
            world(config, demand, boot_time_s=300.0), policy, tmp_path / f"{policy}.db"
        )
        for policy in ("capsched", "capsched-perfect-forecast")
    }
    ahead = runs["capsched-perfect-forecast"]
    assert (ahead.capacity_rps[0][:30] < 30).all()  # nothing before the step is in sight
    assert (ahead.capacity_rps[0][45:] >= 30).all()  # ready before minute 60
    assert ahead.summary(None)["unserved_fraction"] < 0.01
    assert runs["capsched"].summary(None)["unserved_fraction"] > 0.2
    assert ahead.forecast_rps[35] == pytest.approx(30.0)  # planned: the true peak ahead


async def test_perfect_forecast_foresees_a_burst_of_long_prompts(tmp_path: Path) -> None:
    # The rate stays at 1 rps, but from minute 60 every prompt is 8,000 tokens: the
    # diagnostic plans the step that needs the most capacity, at that step's size, and
    # has it ready when the long prompts come.
    config = small_config(fast_interval_s=0)
    w = world(config, [1.0] * 90, boot_time_s=300.0)
    tokens = np.full((2, len(w.info.keys), 90), np.nan)
    tokens[0, 0], tokens[1, 0] = 763.0, 232.0
    tokens[0, 0, 60:] = 8000.0
    w = dataclasses.replace(w, info=dataclasses.replace(w.info, tokens=tokens))
    runs = {
        policy: await replay(w, policy, tmp_path / f"{policy}.db")
        for policy in ("capsched", "capsched-perfect-forecast")
    }
    ahead = runs["capsched-perfect-forecast"]
    assert (ahead.capacity_rps[0][60:] >= 1.0).all()  # ready for the long prompts
    assert (ahead.served_rps[0][60:] >= 1.0 - 1e-9).all()
    # capsched sees the size only when it arrives, and waits a boot for the capacity.
    assert runs["capsched"].capacity_rps[0][60] < 1.0


async def test_same_seed_same_summary(tmp_path: Path) -> None:
    # Random interruptions (no trace) at a high rate, so the seed matters.
    cat = load_catalog()
    from dataclasses import replace

    offerings = tuple(
        replace(o, interruptions_per_hour=3.0) if o.pool == SPOT_POOL else o for o in cat.offerings
    )
    cat = replace(cat, offerings=offerings)
    fleet = (Placement(MODEL, SPOT_POOL, 3), Placement(MODEL, OD_POOL, 1))

    async def run(seed: int, name: str) -> dict[str, Any]:
        w = world(small_config(), [8.0] * 90, seed=seed, catalog=cat)
        with registered("fixed", Fixed(fleet)):
            r = await replay(w, "fixed", tmp_path / f"{name}.db")
        s = r.summary(None)
        s.pop("wall_s")
        return s

    first = await run(7, "a")
    assert first == await run(7, "b")
    assert first["preemptions"] > 0
    assert first != await run(8, "c")


def test_latency_model_hand_cases() -> None:
    # One server (c=1), service 1 s, capacity 1 rps: M/M/1 with rho = 0.5.
    share, mean = within_slo_share(
        np.array([0.5]), np.array([1.0]), np.array([1]), np.array([1.0]), 3.0
    )
    # P(wait > t) = rho * exp(-(mu - lambda) t) with t = SLO - service = 2 s.
    assert share[0] == pytest.approx(1 - 0.5 * math.exp(-0.5 * 2))
    assert mean[0] == pytest.approx(1.0 + 0.5 / 0.5)  # service + Erlang C / (c mu - lambda)
    # Saturated: nothing is answered in time; no load: everything is.
    share, _ = within_slo_share(
        np.array([2.0, 0.0]), np.array([2.0, 1.0]), np.array([4, 4]), np.array([1.0, 1.0]), 3.0
    )
    assert share[0] == pytest.approx(0.0) and share[1] == 1.0
    # Many servers at moderate load: almost nobody waits.
    share, _ = within_slo_share(
        np.array([50.0]), np.array([100.0]), np.array([200]), np.array([2.0]), 10.0
    )
    assert share[0] > 0.9999


def test_routing_respects_latency_limits() -> None:
    reach = np.array([[True, False], [False, True]])
    assert max_flow([5.0, 1.0], [2.0, 10.0], reach) == pytest.approx(3.0)
    assert max_flow([5.0, 1.0], [2.0, 10.0], np.ones((2, 2), dtype=bool)) == pytest.approx(6.0)
    reach = np.array([[True, True], [False, True]])
    assert max_flow([5.0, 4.0], [3.0, 5.0], reach) == pytest.approx(8.0)


def test_simulate_cli_writes_summary_png_and_state(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(
        "minute,requests,model,region\n"
        + "".join(f"{m},{300 + 20 * m},llama-3.1-8b,us-east\n" for m in range(15))
    )
    scenario = tmp_path / "s.toml"
    scenario.write_text('name = "test"\n[cloud]\nboot_time_s = 120\n')
    out = tmp_path / "out"
    code = main(
        ["simulate", "--trace", str(trace), "--scenario", str(scenario), "--policy",
         "capsched", "--out", str(out), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    doc = json.loads((out / "summary.json").read_text())
    assert list(doc) == ["policies"]
    assert "capsched" in doc["policies"]
    for entry in doc["policies"].values():
        assert tuple(entry) == SUMMARY_KEYS
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "state-capsched.db").exists()
    per_model = json.loads((out / "run.json").read_text())["per_model"]
    figures = per_model["capsched"]["llama-3.1-8b"]
    assert figures["requests"] == pytest.approx(sum(300 + 20 * m for m in range(15)))
    assert figures["served"] + figures["unserved"] == pytest.approx(figures["requests"], abs=0.2)
    assert figures["unserved"] == pytest.approx(
        figures["unserved_early"] + figures["unserved_after"], abs=0.2
    )


def test_simulate_cli_bad_inputs_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("minute,requests\n0,5\n1,x\n")
    assert main(["simulate", "--trace", str(trace), "--out", str(tmp_path / "o")]) == 2
    assert f"{trace}:3:" in capsys.readouterr().err
    scenario = tmp_path / "s.toml"
    scenario.write_text("[market]\nspot_price_multiplier = -1\n")
    good = tmp_path / "g.csv"
    good.write_text("minute,requests\n0,5\n")
    args = ["simulate", "--trace", str(good), "--scenario", str(scenario), "--out", str(tmp_path)]
    assert main(args) == 2
    assert f"{scenario}: market.spot_price_multiplier:" in capsys.readouterr().err
    assert main(["simulate", "--policy", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown nope" in capsys.readouterr().err


def test_sweep_runs_scenarios_in_a_process_pool(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("minute,requests\n" + "".join(f"{m},{120 + 10 * m}\n" for m in range(10)))
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        'policies = ["capsched"]\n'
        '[[scenarios]]\nname = "base"\ncloud = { boot_time_s = 60 }\n'
        '[[scenarios]]\nname = "pricey-spot"\ncloud = { boot_time_s = 60 }\n'
        "market = { spot_price_multiplier = 3.0 }\n"
    )
    out = tmp_path / "out"
    args = ["simulate", "--sweep", str(sweep), "--trace", str(trace), "--out", str(out)]
    assert main([*args, "--workers", "2", "--no-progress"]) == 0
    doc = json.loads((out / "sweep.json").read_text())
    assert set(doc["scenarios"]) == {"base", "pricey-spot"}
    for name in ("base", "pricey-spot"):
        assert "capsched" in doc["scenarios"][name]["policies"]
        assert (out / name / "summary.json").exists() and (out / name / "report.png").exists()


def test_sweep_errors_name_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('[[scenarios]]\nname = "a"\nmarket = { spot_price_multiplier = 0 }\n')
    assert main(["simulate", "--sweep", str(sweep), "--out", str(tmp_path)]) == 2
    assert f"{sweep}: scenarios[0].market.spot_price_multiplier:" in capsys.readouterr().err


def test_the_warm_up_keeps_ticks_on_the_trace_steps() -> None:
    # Nodes boot per model and type (8B: 388-478 s); the replay's one boot time (warm-up,
    # oracle) is the longest of them rounded up to whole steps. Unrounded (541 s), every
    # tick fell 59 s after a step ended and the embedded default's SLO fell to 0.931.
    w, _ = build_world(WorldSpec(None, None))
    info = w.info
    assert w.boot_per_node
    assert info.boot_time_s % info.step_s == 0
    itypes = {w.catalog.instance_type(o.pool) for o in w.catalog.offerings}
    boots = [
        node_boot_s(w.config, m.name, it)
        for it in itypes
        for m in w.config.models
        if node_rps(w.config, w.profiles, m.name, it) > 0
    ]
    assert max(boots) <= info.boot_time_s < max(boots) + info.step_s


def test_capacity_no_loaded_region_reaches_does_not_shorten_the_queue() -> None:
    # All load comes from region 0, which reaches location 0 only; location 1 holds idle
    # nodes. A step whose load fills location 0 is saturated: nothing is answered in
    # time (counted over both locations, the queue looked half busy and all in time).
    from types import SimpleNamespace

    from simulations.engine import _account_demand
    from simulations.ledger import Backlog, Ledger, ReadyCapacity

    pools = [o.pool for o in load_catalog().offerings]
    near = pools[0]
    far = next(p for p in pools if p.location != near.location)
    locs = {near.location: 0, far.location: 1}
    ready = ReadyCapacity(
        1,
        2,
        lambda model, pool, size: SimpleNamespace(rps=10.0, slots=10, latency_s=1.0, wait_s=0.0),
        {"m": 0},
        locs,
    )
    nodes = [SimpleNamespace(node_id=f"n{i}", model="m", pool=p) for i, p in enumerate([near, far])]
    ready.update(1, lambda: nodes, frozenset(), (None,))
    acc = SimpleNamespace(
        key_rows=[(0, 0), (0, 1)],
        regions=["a", "b"],
        reach=np.array([[True, False], [False, True]]),
    )
    info = SimpleNamespace(demand_rps=np.array([[10.0], [0.0]]))
    ledger = Ledger(1, 2, 1)
    backlog = Backlog([None], acc.key_rows, [("m", "a"), ("m", "b")], 60.0)
    _account_demand(0, info, acc, ready, backlog, ledger, 1)  # type: ignore[arg-type]
    assert ledger.capacity[0, 0] == pytest.approx(20.0)  # the fleet's capacity, for reports
    assert ledger.served[0, 0] == pytest.approx(10.0)
    share, _ = within_slo_share(
        ledger.served[0], ledger.queue_capacity[0], ledger.slots[0], ledger.service_s[0], 30.0
    )
    assert share[0] == pytest.approx(0.0)
