"""Under a binding budget, priority comes before a model's own on-demand floor (issue 22):
the solve drops a model's min_on_demand_share when the budget cannot pay for its demand
with it, highest priority first, and says so (Solution.share_relaxed, the plan's
`relaxed` and `on_demand_share_relaxed`, a note)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from capsched.cli import main
from scheduler.config import DEFAULT_CONFIG_PATH
from solver import DemandSpec, PoolSpec, Problem, Relaxation, solve

# One on-demand pool at 2 USD/h and one spot pool at 1 USD/h, 1 rps per node each.
ON_DEMAND = PoolSpec("od", 0, 0, False, 2.0)
SPOT = PoolSpec("spot", 0, 0, True, 1.0)


def problem(
    rps: list[float],
    budget: float | None,
    priorities: tuple[int, ...] = (),
    share: float = 0.5,
) -> Problem:
    """One demand of `rps[m]` per model m, every model with `share` on-demand."""
    n = len(rps)
    return Problem(
        models=tuple(f"m{m}" for m in range(n)),
        pools=(ON_DEMAND, SPOT),
        capacity_rps=np.ones((n, 2), dtype=np.float64),
        demands=tuple(DemandSpec(m, "r", r, (0,)) for m, r in enumerate(rps)),
        current=np.zeros((n, 2), dtype=np.int64),
        min_on_demand_share=(share,) * n,
        budget_usd_per_hour=budget,
        priorities=priorities,
    )


def test_a_budget_that_pays_for_the_floor_keeps_it() -> None:
    # 4 rps at share 0.5: 2 on-demand + 2 spot = 6 USD/h, within 6.
    s = solve(problem([4.0], budget=6.0), time_limit_s=2)
    assert s.nodes.tolist() == [[2, 2]] and s.unmet_rps == (0.0,)
    assert s.relaxed == () and s.share_relaxed == ()


def test_without_a_budget_the_floor_is_kept() -> None:
    s = solve(problem([4.0], budget=None), time_limit_s=2)
    assert s.nodes.tolist() == [[2, 2]] and s.relaxed == () and s.share_relaxed == ()


def test_a_budget_that_cannot_pay_for_the_floor_serves_the_demand_on_spot() -> None:
    # With the share, 4 USD/h serves 2 rps of 4 (1 on-demand + 1 spot, or 2 on-demand);
    # without it, 4 spot nodes serve all 4.
    s = solve(problem([4.0], budget=4.0), time_limit_s=2)
    assert s.nodes.tolist() == [[0, 4]] and s.unmet_rps == (0.0,)
    assert s.relaxed == (Relaxation.ON_DEMAND_SHARE,) and s.share_relaxed == (0,)


def test_the_higher_priority_is_relaxed_and_served_before_the_lower() -> None:
    # m1 (priority 10) asks 4 rps, m0 (priority 0) 4 rps; 4 USD/h pays for 4 spot nodes:
    # all of them go to m1, on spot; m0 gets nothing and no relaxation (nothing left).
    s = solve(problem([4.0, 4.0], budget=4.0, priorities=(0, 10)), time_limit_s=2)
    assert s.nodes[1].tolist() == [0, 4] and s.unmet_rps[1] == 0.0
    assert s.unmet_rps[0] == pytest.approx(4.0)
    assert s.share_relaxed == (1,) and s.relaxed == (Relaxation.ON_DEMAND_SHARE,)


def test_a_lower_priority_is_relaxed_only_after_a_higher_one() -> None:
    # 5 USD/h: m1 (priority 10) gets 3 rps with its share (2 on-demand + 1 spot), all 4
    # on 4 spot nodes without; the 1 USD/h left serves m0 (priority 0) nothing with its
    # share (an on-demand node costs 2) and 1 rps on a spot node without.
    s = solve(problem([4.0, 4.0], budget=5.0, priorities=(0, 10)), time_limit_s=2)
    assert s.nodes.tolist() == [[0, 1], [0, 4]]
    assert s.share_relaxed == (1, 0)


def test_a_higher_priority_whose_floor_is_paid_for_keeps_it() -> None:
    # 6 USD/h pays m0's 2 rps with its share (1 + 1 = 3 USD/h); the 3 left serve m1
    # (priority 0) 2 rps with its share, 3 rps on spot: only the lower one is relaxed.
    s = solve(problem([2.0, 4.0], budget=6.0, priorities=(10, 0)), time_limit_s=2)
    assert s.unmet_rps[0] == 0.0 and s.nodes[0].tolist() == [1, 1]
    assert s.share_relaxed == (1,)
    assert s.nodes[1].tolist() == [0, 3] and s.unmet_rps[1] == pytest.approx(1.0)


def test_plan_json_names_the_relaxed_model_and_notes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The embedded default's 70B (min_on_demand_share 0.3) at priority 10 under a budget
    # too small for its demand with on-demand nodes (one on-demand 70B node costs more).
    text = DEFAULT_CONFIG_PATH.read_text().replace(
        "budget_usd_per_hour = 400.0", "budget_usd_per_hour = 12.0"
    )
    i = text.index('name = "llama-3.1-70b"')
    text = text[:i] + "priority = 10\n" + text[i:]
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    assert main(["plan", "--config", str(cfg), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["usd_per_hour"] <= 12.0
    assert "on_demand_share" in doc["relaxed"]
    assert doc["on_demand_share_relaxed"][0] == "llama-3.1-70b"
    assert any("llama-3.1-70b's demand (priority 10)" in n for n in doc["notes"])


def test_a_lower_prioritys_relaxation_keeps_the_higher_ones_on_demand_cover() -> None:
    # m0 (priority 10, no share) runs on-demand: 1 USD/h a node against spot's 0.5 plus
    # 0.6 of expected interruption cost. m1 (priority 0, on-demand only: share 1) asks
    # 4 rps; 3.5 USD/h leaves it 1.5. Dropping m1's share serves 3 rps on spot; moving m0
    # to spot too would serve all 4, but the budget a dropped share frees must not come
    # out of the higher priority's on-demand cover (a storm takes spot all at once).
    spot = PoolSpec("spot", 0, 0, True, 0.5, risk_usd_per_hour=0.6)
    p = Problem(
        models=("m0", "m1"),
        pools=(PoolSpec("od", 0, 0, False, 1.0), spot),
        capacity_rps=np.ones((2, 2), dtype=np.float64),
        demands=(DemandSpec(0, "r", 2.0, (0,)), DemandSpec(1, "r", 4.0, (0,))),
        current=np.zeros((2, 2), dtype=np.int64),
        min_on_demand_share=(0.0, 1.0),
        budget_usd_per_hour=3.5,
        priorities=(10, 0),
    )
    s = solve(p, time_limit_s=2)
    assert s.share_relaxed == (1,)
    assert s.nodes.tolist() == [[2, 0], [0, 3]]
    assert s.unmet_rps == (0.0, pytest.approx(1.0))


def growing(
    top_rps: float, budget: float | None, current: list[list[int]] | None = None
) -> Problem:
    """A top priority (m0, priority 10, min_on_demand_share 0.5) that grows, and a lower
    one (m1, priority 0, no share) that asks more than any budget here pays for. m0 runs
    on an on-demand node (3 USD/h, 2 rps) or spot (1 USD/h, 1 rps); m1 only on small spot
    nodes (0.25 USD/h, 1 rps), so what m1 holds never pays for one of m0's nodes."""
    return Problem(
        models=("m0", "m1"),
        pools=(
            PoolSpec("od", 0, 0, False, 3.0),
            PoolSpec("spot", 0, 0, True, 1.0),
            PoolSpec("small", 0, 0, True, 0.25),
        ),
        capacity_rps=np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
        demands=(DemandSpec(0, "r", top_rps, (0,)), DemandSpec(1, "r", 20.0, (0,))),
        current=np.zeros((2, 3), dtype=np.int64) if current is None else np.array(current),
        min_on_demand_share=(0.5, 0.0),
        budget_usd_per_hour=budget,
        priorities=(10, 0),
    )


def test_the_top_prioritys_share_is_dropped_before_its_fleet_settles() -> None:
    # At 4 rps the budget (5.6 USD/h) pays for m0 with its share (1 on-demand + 2 spot =
    # 5 USD/h), but not for its next node: 6 rps with the share needs a second on-demand
    # node. Kept, the share would leave m0 on that on-demand node, and when m0 grows to
    # 5 rps moving off it bills both ends (a higher priority's move), which what m1
    # holds cannot pay for: m0 short by 1 rps. Dropped now, m0 grows on spot.
    first = solve(growing(4.0, 5.6), time_limit_s=2)
    assert first.unmet_rps[0] == 0.0 and first.nodes[0].tolist() == [0, 4, 0]
    assert first.share_relaxed == (0,) and first.relaxed == (Relaxation.ON_DEMAND_SHARE,)
    assert first.usd_per_hour <= 5.6 + 1e-9
    grown = solve(growing(5.0, 5.6, first.nodes.tolist()), time_limit_s=2)
    assert grown.unmet_rps[0] == 0.0 and grown.usd_per_hour <= 5.6 + 1e-9
    # Had the share been kept on the first plan, growth leaves m0 short.
    kept = [[1, 2, 0], first.nodes[1].tolist()]
    stuck = solve(growing(5.0, 5.6, kept), time_limit_s=2)
    assert stuck.unmet_rps[0] == pytest.approx(1.0)


def test_a_budget_that_pays_for_the_top_prioritys_next_node_keeps_its_share() -> None:
    # 8.5 USD/h pays for m0 at 6 rps with its share (2 on-demand + 2 spot = 8 USD/h).
    s = solve(growing(4.0, 8.5), time_limit_s=2)
    assert s.nodes[0].tolist() == [1, 2, 0] and s.unmet_rps[0] == 0.0
    assert s.share_relaxed == () and s.relaxed == ()


def test_without_a_binding_budget_the_plan_is_the_same_as_without_a_budget() -> None:
    free = solve(growing(4.0, None), time_limit_s=2)
    loose = solve(growing(4.0, 1000.0), time_limit_s=2)
    assert free.nodes.tolist() == loose.nodes.tolist()
    assert free.nodes[0].tolist() == [1, 2, 0] and free.unmet_rps == (0.0, 0.0)
    assert free.share_relaxed == loose.share_relaxed == ()
