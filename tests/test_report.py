"""report.png: a panel per (policy, model, region), one y scale per column, SLO misses
marked on the time axis, planned/served shown; and the per-series figures the replay
engine records for it. Asserted on the matplotlib Figure, never on pixels."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sim_helpers import OD_POOL, Fixed, registered, small_config, world

from scheduler.config import Config
from scheduler.domain import Cloud, Market, Placement, Pool
from simulations.engine import RunResult, replay, source_flows
from simulations.report import (
    MISS_SHARE,
    figure,
    panel_label,
    panels,
    plot,
    token_bars_label,
)

STEP_S = 60.0
N = 10
SERIES = (("a", "r1"), ("a", "r2"), ("b", "r1"))  # model a in two regions, b in one


def result(
    policy: str,
    demand: list[list[float]],
    capacity: list[list[float]],
    *,
    served: list[list[float]] | None = None,
    planned: list[list[float]] | None = None,
    slo_share: dict[str, list[float]] | None = None,
) -> RunResult:
    """A hand-made replay of SERIES: per-series rows, per-model totals derived from them."""
    dem = np.array(demand, dtype=float)
    cap = np.array(capacity, dtype=float)
    srv = np.array(served, dtype=float) if served is not None else np.minimum(dem, cap)
    plan = np.array(planned, dtype=float) if planned is not None else np.full_like(dem, np.nan)
    models = ("a", "b")
    rows = {m: [i for i, (mm, _) in enumerate(SERIES) if mm == m] for m in models}
    served_m = np.array([srv[rows[m]].sum(axis=0) for m in models])
    share = np.array([(slo_share or {}).get(m, [1.0] * N) for m in models])
    return RunResult(
        policy=policy,
        times_s=1000.0 + STEP_S * np.arange(N),
        models=models,
        demand_rps=np.array([dem[rows[m]].sum(axis=0) for m in models]),
        capacity_rps=np.array([cap[rows[m]].sum(axis=0) for m in models]),
        served_rps=served_m,
        within_slo_rps=served_m * share,
        latency_s=np.zeros((2, N)),
        capacity_by_market={"spot": np.zeros(N), "on-demand": cap.sum(axis=0)},
        forecast_rps=np.full(N, np.nan),
        cost_by_market={"spot": np.zeros(N), "on-demand": np.linspace(0.1, 1.0, N)},
        gpu_hours=1.0,
        launches=1,
        terminations=0,
        preemptions=0,
        failed_launches=0,
        solve_times_s=[],
        ticks=N,
        tick_errors=0,
        wall_s=0.0,
        state_db="",
        series=SERIES,
        series_demand_rps=dem,
        series_capacity_rps=cap,
        series_served_rps=srv,
        series_planned_rps=plan,
    )


def flat(*values: float) -> list[list[float]]:
    return [[v] * N for v in values]


def axes_by_label(fig: Any) -> dict[str, Any]:
    return {ax.get_label(): ax for ax in fig.axes}


def test_one_panel_per_policy_model_and_region_plus_the_cost() -> None:
    results = [
        result("capsched", flat(10, 2, 50), flat(12, 3, 60)),
        result("static-peak", flat(10, 2, 50), flat(20, 4, 55)),
    ]
    fig = figure(results)
    # b has one region: its panel is the model's; a has two: a panel per region.
    expected = {panel_label(p, m, r) for p in ("capsched", "static-peak") for m, r in SERIES}
    expected = {e.removesuffix(" r1") if " b " in e else e for e in expected} | {"cost"}
    assert set(axes_by_label(fig)) == expected
    assert len(fig.axes) == 2 * 3 + 1


def test_a_column_has_one_y_scale_for_every_policy_and_models_are_not_summed() -> None:
    results = [
        result("capsched", flat(10, 2, 50), flat(12, 3, 60), planned=flat(11, 2.5, 70)),
        result("static-peak", flat(10, 2, 50), flat(20, 4, 55)),
    ]
    axes = axes_by_label(figure(results))
    for (model, region), top in (
        (("a", "r1"), 1.1 * 20),  # static-peak's capacity is the column's highest value
        (("a", "r2"), 1.1 * 4),
        (("b", ""), 1.1 * 70),  # capsched planned for more than either capacity
    ):
        for policy in ("capsched", "static-peak"):
            bottom, y_top = axes[panel_label(policy, model, region)].get_ylim()
            assert (bottom, y_top) == (0.0, pytest.approx(top)), (policy, model, region)
    # a's panels never carry b's load (50 rps): the scale is a's own.
    assert axes[panel_label("capsched", "a", "r1")].get_ylim()[1] < 50


def red_spans(ax: Any) -> list[tuple[float, float]]:
    """x extent of the full-height red spans (the SLO-miss marks)."""
    out = []
    for patch in ax.patches:
        r, g, _, _ = patch.get_facecolor()
        if r > 0.8 and g < 0.3 and patch.get_height() == 1.0:  # axes-fraction height
            out.append((patch.get_x(), patch.get_x() + patch.get_width()))
    return sorted(out)


def test_slo_misses_are_marked_on_the_time_axis_of_their_series_only() -> None:
    demand = flat(10, 2, 50)
    served = flat(10, 2, 50)
    served[0][3] = served[0][4] = 8.0  # a@r1 unserved in minutes 3 and 4
    share_b = [1.0] * N
    share_b[7] = 0.9  # b served in full but 10% too slowly in minute 7
    fig = figure(
        [result("capsched", demand, flat(12, 3, 60), served=served, slo_share={"b": share_b})]
    )
    axes = axes_by_label(fig)
    assert red_spans(axes[panel_label("capsched", "a", "r1")]) == [(3.0, 5.0)]
    assert red_spans(axes[panel_label("capsched", "a", "r2")]) == []
    assert red_spans(axes[panel_label("capsched", "b", "")]) == [(7.0, 8.0)]
    assert "SLO missed 2 min" in axes[panel_label("capsched", "a", "r1")].get_title(loc="left")


def test_a_miss_below_the_threshold_is_not_marked() -> None:
    share = [1.0] * N
    share[2] = 1.0 - MISS_SHARE / 2
    (_, _, b) = panels(result("p", flat(10, 2, 50), flat(12, 3, 60), slo_share={"b": share}))
    assert not b.missed.any()


def test_planned_vs_served_and_capacity_vs_demand_are_in_each_panel_title() -> None:
    planned = flat(15, 2, 50)
    planned[0][:5] = [np.nan] * 5  # the policy said nothing in the first five minutes
    fig = figure([result("capsched", flat(10, 0, 50), flat(20, 3, 50), planned=planned)])
    axes = axes_by_label(fig)
    a_r1 = axes[panel_label("capsched", "a", "r1")].get_title(loc="left")
    assert "planned/served 1.50x" in a_r1 and "capacity/demand 2.00x" in a_r1
    assert (
        axes[panel_label("capsched", "a", "r2")]
        .get_title(loc="left")
        .startswith("no demand · capacity 3.0 rps on average")
    )
    b = axes[panel_label("capsched", "b", "")].get_title(loc="left")
    assert "planned/served 1.00x" in b and "capacity/demand 1.00x" in b


def test_without_a_plan_the_ratio_says_so() -> None:
    (a_r1, _, _) = panels(result("static-peak", flat(10, 2, 50), flat(20, 3, 60)))
    assert a_r1.planned_vs_served is None
    assert a_r1.capacity_vs_demand == pytest.approx(2.0)


def test_plot_writes_a_png(tmp_path: Path) -> None:
    out = plot(tmp_path / "report.png", [result("capsched", flat(1, 2, 3), flat(2, 3, 4))], "t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the engine's per-series figures ---------------------------------------------------------


def test_source_flows_split_a_max_flow_by_source() -> None:
    reach = np.array([[True, False], [True, True]])
    flows = source_flows([5.0, 4.0], [3.0, 5.0], reach)
    assert flows.tolist() == pytest.approx([3.0, 4.0])
    everywhere = source_flows([6.0, 2.0], [2.0, 2.0], np.ones((2, 2), dtype=bool))
    assert everywhere.tolist() == pytest.approx([3.0, 1.0])  # proportional to demand


def two_region_config() -> Config:
    base = small_config()
    regions = (
        base.regions[0],
        base.regions[0].model_copy(update={"name": "far", "location": "eu-west-1"}),
    )
    return base.model_copy(update={"regions": regions})


def test_replay_records_each_series_with_capacity_only_within_its_reach(tmp_path: Path) -> None:
    cfg = two_region_config()
    w = world(cfg, [3.0] * 6)
    rps = w.info.demand_rps.copy()
    rps[1] = 2.0  # "far" (eu-west-1) asks too, but nothing in its reach serves it
    w = replace(w, info=replace(w.info, demand_rps=rps))
    with registered("one-node", Fixed((Placement(cfg.models[0].name, OD_POOL, 1),))):
        r = asyncio.run(replay(w, "one-node", tmp_path / "s.db"))
    model = cfg.models[0].name
    assert r.series == ((model, "us-east"), (model, "far"))
    assert r.series_demand_rps.tolist() == [[3.0] * 6, [2.0] * 6]
    near_capacity = r.capacity_rps[0]
    assert (near_capacity > 3.0).all()
    assert r.series_capacity_rps[0].tolist() == near_capacity.tolist()
    assert r.series_capacity_rps[1].tolist() == [0.0] * 6
    assert r.series_served_rps.tolist() == [[3.0] * 6, [0.0] * 6]
    assert r.series_served_rps.sum(axis=0).tolist() == r.served_rps[0].tolist()
    far = panels(r)[1]
    assert far.missed.all()  # unserved demand is an SLO miss of its own series
    assert not panels(r)[0].missed.any()


def test_report_shows_the_cost_per_million_tokens_by_gpu_kind_of_each_policy(
    tmp_path: Path,
) -> None:
    model = small_config().models[0].name
    l4 = Pool(Cloud.AWS, "us-east-1", "", "g6.xlarge", Market.ON_DEMAND)
    w = world(small_config(), [0.5] * 10)
    runs = {
        "mixed": (Placement(model, OD_POOL, 1), Placement(model, l4, 1)),
        "l40s-only": (Placement(model, OD_POOL, 2),),
    }
    results = []
    for name, placements in runs.items():
        with registered(name, Fixed(placements)):
            results.append(asyncio.run(replay(w, name, tmp_path / f"{name}.db")))
    axes = axes_by_label(figure(results))
    bars = axes[token_bars_label("GPU kind")]
    assert [t.get_text() for t in bars.get_xticklabels()] == ["L4", "L40S"]
    for container, result in zip(bars.containers, results, strict=True):
        want = result.summary(None)["usd_per_million_tokens_by_gpu_kind"]
        heights = [p.get_height() for p in container.patches]
        expected = [want[k]["usd_per_million_tokens"] for k in sorted(want)]
        assert heights == pytest.approx(expected, abs=1e-4)  # summary.json is rounded
        assert container.get_label() == result.policy
    # l40s-only ran no L4 node: no bar of its at L4.
    assert len(bars.containers[1].patches) == 1
    assert token_bars_label("model") in axes
