"""Snapshots of every TUI screen at 120x40, from a state database built here with fixed
timestamps (ages are relative to the database's latest event, so nothing depends on the
wall clock), plus unit tests of the pure view functions behind them."""

from __future__ import annotations

import math
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable

from scheduler.decide.guards import Held
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
    RequestSize,
    SizeBucket,
    Unmet,
    UnmetReason,
)
from scheduler.loop.store import DemandRecord, StateStore

T0 = 1_700_000_000.0  # fixed start of the fixture's history
SIZE = (120, 40)

POOLS = {
    "spot-e1": Pool(Cloud.AWS, "us-east-1", "", "g6.xlarge", Market.SPOT),
    "od-e1": Pool(Cloud.AWS, "us-east-1", "", "g6.xlarge", Market.ON_DEMAND),
    "gcp-a": Pool(Cloud.GCP, "us-central1", "us-central1-a", "g2-standard-4", Market.SPOT),
    "big": Pool(Cloud.AWS, "us-east-2", "", "p4d.24xlarge", Market.ON_DEMAND),
}


def build_state_db(path: Path) -> Path:
    """A small but complete history: launches, boots, a preemption, a drain, plans with
    every approval state, the latest one pending."""
    store = StateStore(path)
    path_of: dict[str, Pool] = {}

    def launch(node_id: str, model: str, pool: str, at: float) -> None:
        path_of[node_id] = POOLS[pool]
        node = Node(node_id, model, POOLS[pool], NodeState.REQUESTED, "", T0 + at, T0 + at)
        store.add_node(node, T0 + at, "plan: scale up")
        entry = store.journal_begin("launch", node_id, T0 + at, f"launch {POOLS[pool].key}")
        store.journal_end(entry, "done", T0 + at + 2, f"launched i-{node_id[-4:]}")
        store.transition(
            node_id,
            NodeState.BOOTING,
            T0 + at + 2,
            "launched",
            cloud_instance_id=f"i-{node_id[-4:]}",
        )

    def ready(node_id: str, at: float) -> None:
        store.transition(node_id, NodeState.READY, T0 + at, "serving")

    def plan(
        at: float,
        counts: dict[tuple[str, str], int],
        usd: float,
        approval: str,
        held: tuple[Held, ...] = (),
        unmet: float = 0.0,
    ) -> None:
        placements = tuple(Placement(m, POOLS[p], c) for (m, p), c in counts.items())
        p = Plan(
            status=PlanStatus.OPTIMAL,
            placements=placements,
            usd_per_hour=usd,
            objective=usd * 1.05,
            gap=0.0,
            solve_time_s=0.25,
            unmet=(Unmet("llama-3.1-70b", "us-east", unmet, 5, (UnmetReason.BUDGET,)),),
            notes=("kept the current fleet: no cheaper feasible plan found",)
            if approval == "auto"
            else (),
        )
        store.record_plan(p, T0 + at, "capsched", held, approval)

    plan(0, {("llama-3.1-8b", "spot-e1"): 3, ("llama-3.1-8b", "od-e1"): 1}, 3.4, "auto")
    for i in range(1, 4):
        launch(f"cs-0000000{i}", "llama-3.1-8b", "spot-e1", 1)
    launch("cs-00000004", "llama-3.1-8b", "od-e1", 1)
    for i in range(1, 5):
        ready(f"cs-0000000{i}", 120 + i)
    plan(
        900,
        {
            ("llama-3.1-8b", "spot-e1"): 3,
            ("llama-3.1-8b", "od-e1"): 1,
            ("llama-3.1-70b", "big"): 1,
            ("llama-3.1-8b", "gcp-a"): 2,
        },
        38.1,
        "approved",
    )
    launch("cs-00000005", "llama-3.1-70b", "big", 901)
    launch("cs-00000006", "llama-3.1-8b", "gcp-a", 901)
    launch("cs-00000007", "llama-3.1-8b", "gcp-a", 901)
    ready("cs-00000005", 1400)
    ready("cs-00000006", 1050)
    store.transition("cs-00000002", NodeState.INTERRUPTED, T0 + 2000, "spot interruption notice")
    store.transition("cs-00000002", NodeState.GONE, T0 + 2120, "reclaimed by the cloud")
    plan(
        2100,
        {
            ("llama-3.1-8b", "spot-e1"): 3,
            ("llama-3.1-8b", "od-e1"): 1,
            ("llama-3.1-70b", "big"): 1,
            ("llama-3.1-8b", "gcp-a"): 2,
        },
        38.1,
        "rejected",
    )
    entry = store.journal_begin("drain", "cs-00000003", T0 + 2400, "manual drain")
    store.transition("cs-00000003", NodeState.DRAINING, T0 + 2400, "manual drain")
    store.journal_end(entry, "done", T0 + 2401, "draining")
    plan(
        3000,
        {("llama-3.1-8b", "spot-e1"): 4, ("llama-3.1-70b", "big"): 1, ("llama-3.1-8b", "gcp-a"): 1},
        36.9,
        "pending",
        held=(Held(HoldKind.MIN_NODE_AGE, 1, "1 drains held: ready for less than 900 s"),),
        unmet=2.5,
    )
    # What the latest tick saw per series: the small model's requests with their sizes
    # and prompt-length mix, the large model's without (planned as the reference request).
    store.record_demand(
        T0 + 3000,
        [
            DemandRecord(
                "llama-3.1-8b",
                "us-east",
                42.0,
                48.0,
                50.0,
                {},
                size=RequestSize(1530.0, 180.0),
                planned_size=RequestSize(1612.0, 184.0),
                buckets=(
                    SizeBucket(0.0, 1024.0, 0.6, RequestSize(420.0, 180.0)),
                    SizeBucket(1024.0, 4096.0, 0.3, RequestSize(2100.0, 180.0)),
                    SizeBucket(4096.0, math.inf, 0.1, RequestSize(9000.0, 180.0)),
                ),
            ),
            DemandRecord("llama-3.1-70b", "us-east", 3.0, 3.5, 4.0, {}),
        ],
    )
    store.close()
    return path


@pytest.fixture
def state_db(tmp_path: Path) -> Path:
    return build_state_db(tmp_path / "state.db")


# Prices fixed here, so a rebuilt catalog never changes a snapshot.
PRICES = {
    "aws/us-east-1/g6.xlarge/spot": 0.41,
    "aws/us-east-1/g6.xlarge/on-demand": 0.80,
    "gcp/us-central1-a/g2-standard-4/spot": 0.30,
    "aws/us-east-2/p4d.24xlarge/on-demand": 21.96,
}


def db_app(path: Path) -> Any:
    from tui.app import CapschedApp
    from tui.backend import DbBackend

    return CapschedApp(DbBackend(path), poll=False, prices=PRICES)


async def _settle(pilot: Any) -> None:
    # Fetch, then let the tables measure their columns (they do it when idle), then give
    # the compositor real time to paint the measured frame. On a loaded machine a fixed six
    # idle rounds let CI catch a table painted before it was measured (the help screen then
    # showed it behind; help is now opaque, tui/app.tcss). A table's rows can be laid out
    # before its column widths are (CI once caught the fleet table with every column at its
    # label's width), so the screen must also render the same twice in a row.
    last = None
    for _ in range(100):
        await pilot.app.workers.wait_for_complete()
        await pilot.wait_for_scheduled_animations()
        await pilot.pause()
        tables = pilot.app.screen.query(DataTable)
        if not all(t.virtual_size.height > t.row_count for t in tables):
            last = None
            continue
        shot = pilot.app.export_screenshot()
        if shot == last:
            break
        last = shot
        await pilot.pause(0.05)
    await pilot.pause(0.2)


def _keys(*keys: str) -> Any:
    async def run_before(pilot: Any) -> None:
        await _settle(pilot)
        for key in keys:
            await pilot.press(key)
            await _settle(pilot)

    return run_before


@pytest.mark.parametrize(
    "keys",
    [
        pytest.param((), id="fleet"),
        pytest.param(("2",), id="demand"),
        pytest.param(("3",), id="plan"),
        pytest.param(("4",), id="events"),
        pytest.param(("question_mark",), id="help"),
        pytest.param(("s", "s", "s", "s"), id="fleet-by-cost"),
        pytest.param(("slash", *"spot", "enter"), id="fleet-filtered"),
    ],
)
def test_screen_snapshot(snap_compare: Any, state_db: Path, keys: tuple[str, ...]) -> None:
    assert snap_compare(db_app(state_db), terminal_size=SIZE, run_before=_keys(*keys))


def test_node_screen_snapshot(snap_compare: Any, state_db: Path) -> None:
    async def open_node(pilot: Any) -> None:
        await _settle(pilot)
        pilot.app.open_node("cs-00000003")
        await _settle(pilot)

    assert snap_compare(db_app(state_db), terminal_size=SIZE, run_before=open_node)


def test_drain_dialog_snapshot(snap_compare: Any, state_db: Path) -> None:
    """The drain confirmation shows its whole text at the snapshot size (it was cut off
    after "...on-demand, ready. It")."""

    async def ask_to_drain(pilot: Any) -> None:
        await _settle(pilot)
        pilot.app.open_node("cs-00000004")  # ready, on-demand: the longest pool name
        await _settle(pilot)
        # A database is read-only, so the `d` binding is off here; the dialog is the same.
        pilot.app.screen.action_drain()
        await _settle(pilot)

    assert snap_compare(db_app(state_db), terminal_size=SIZE, run_before=ask_to_drain)


# -- the pure views and the read-only backend -------------------------------------------------


def _node(node_id: str, state: str, pool: str = "spot-e1", model: str = "llama-3.1-8b") -> Any:
    p = POOLS[pool]
    return {
        "node_id": node_id,
        "model": model,
        "cloud": p.cloud.value,
        "region": p.region,
        "zone": p.zone,
        "instance_type": p.instance_type,
        "market": p.market.value,
        "pool": p.key,
        "state": state,
        "launched_at_s": T0,
        "state_since_s": T0,
    }


def _placement(pool: str, count: int, model: str = "llama-3.1-8b") -> dict[str, Any]:
    p = POOLS[pool]
    return {
        "model": model,
        "cloud": p.cloud.value,
        "region": p.region,
        "zone": p.zone,
        "instance_type": p.instance_type,
        "market": p.market.value,
        "count": count,
    }


@pytest.mark.parametrize(
    ("states", "target", "expected"),
    [
        # (launches, drains, terminations): not-yet-serving nodes go first, as in diff.propose
        (["ready", "ready"], 3, (1, 0, 0)),
        (["ready", "booting", "requested"], 1, (0, 0, 2)),
        (["ready", "ready", "booting"], 1, (0, 1, 1)),
        (["ready", "draining"], 1, (0, 0, 0)),  # a draining node is no longer counted
        (["ready"], 0, (0, 1, 0)),
    ],
)
def test_plan_diff_against_the_serving_fleet(
    states: list[str], target: int, expected: tuple[int, int, int]
) -> None:
    from tui.views import plan_diff

    nodes = [_node(f"cs-{i}", s) for i, s in enumerate(states)]
    plan = {"placements": [_placement("spot-e1", target)] if target else []}
    (row,) = plan_diff(plan, nodes, PRICES)
    assert (row.launches, row.drains, row.terminations) == expected
    assert row.usd_per_hour_change == pytest.approx(row.change * 0.41)


def test_fleet_groups_count_states_cost_and_age() -> None:
    from tui.views import group_fleet, matches, sort_groups

    nodes = [
        _node("a", "ready"),
        _node("b", "booting"),
        _node("c", "ready", pool="big", model="llama-3.1-70b"),
    ]
    groups = group_fleet(nodes, PRICES, now_s=T0 + 3600)
    assert [g.total for g in groups] == [1, 2]
    big, spot = groups
    assert spot.counts["ready"] == 1 and spot.counts["booting"] == 1
    assert spot.usd_per_hour == pytest.approx(0.82) and spot.oldest_s == 3600
    assert sort_groups(groups, "cost")[0] is big
    assert [g for g in groups if matches(g.text(), "SPOT us-east-1")] == [spot]


def test_age_and_money_formats() -> None:
    from tui.views import fmt_age, fmt_usd

    assert [fmt_age(s) for s in (None, 5, 125, 3 * 3600 + 300, 2 * 86400 + 4 * 3600)] == [
        "-",
        "5s",
        "2m",
        "3h05m",
        "2d04h",
    ]
    assert fmt_usd(1234.5) == "$1,234.50" and fmt_usd(float("nan")) == "-"


def test_metrics_parsing_sums_regions_and_headroom() -> None:
    from tui.backend import headroom_of, parse_metrics

    text = "\n".join(
        [
            "# TYPE capsched_fleet_cost_usd_per_hour gauge",
            "capsched_fleet_cost_usd_per_hour 12.5",
            "# TYPE capsched_demand_rps gauge",
            'capsched_demand_rps{model="m",region="a"} 3.0',
            'capsched_demand_rps{model="m",region="b"} 1.0',
            'capsched_demand_rps{model="n",region="a"} NaN',
            "# TYPE capsched_capacity_rps gauge",
            'capsched_capacity_rps{model="m"} 6.0',
            'capsched_capacity_rps{model="n"} 2.0',
            "# TYPE capsched_forecast_peak_rps gauge",
            'capsched_forecast_peak_rps{model="m",region="a",quantile="0.9"} 5.0',
        ]
    )
    reading = parse_metrics(text + "\n")
    assert reading.usd_per_hour == 12.5
    assert reading.demand == {"m": 4.0, "n": None}  # a missing region: unknown, not smaller
    assert reading.forecast_peak == {"m": {"0.9": 5.0}}
    assert headroom_of(reading.demand, reading.capacity) is None
    assert headroom_of({"m": 4.0}, {"m": 6.0}) == pytest.approx(1.5)


async def test_database_backend_reads_and_never_writes(state_db: Path) -> None:
    from tui.backend import DbBackend, ReadOnly

    before = state_db.read_bytes()
    backend = DbBackend(state_db)
    status = await backend.status()
    assert status["now_s"] == T0 + 3000 and status["pending_plan_id"] == 4
    assert [n["node_id"] for n in await backend.nodes()] == [
        "cs-00000001",
        "cs-00000003",
        "cs-00000004",
        "cs-00000005",
        "cs-00000006",
        "cs-00000007",
    ]
    newest = await backend.events(after=None, limit=2)
    assert [e["new"] for e in newest] == ["gone", "draining"]
    assert await backend.events(after=newest[-1]["id"], limit=10) == []
    view = await backend.demand()
    last = view.series["llama-3.1-8b"][-1]
    assert view.unit == "nodes" and (last.planned, last.capacity) == (5.0, 3.0)
    for action in (backend.approve(4), backend.reject(4), backend.drain("cs-00000001")):
        with pytest.raises(ReadOnly):
            await action
    await backend.close()
    assert state_db.read_bytes() == before


# -- no terminal -------------------------------------------------------------------------------


def _tui_without(state_db: Path, stdin: Any) -> subprocess.CompletedProcess[str]:
    # The timeout only bounds a regression (the app used to spin until killed).
    return subprocess.run(
        [sys.executable, "-m", "capsched.cli", "tui", "--db", str(state_db)],
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_tui_without_a_terminal_exits_2_with_a_message(state_db: Path) -> None:
    done = _tui_without(state_db, subprocess.DEVNULL)
    assert done.returncode == 2
    assert "capsched tui needs a terminal (stdin and stdout not a tty)" in done.stderr
    assert "Traceback" not in done.stderr
    assert "\x1b[" not in done.stdout  # nothing was drawn


def test_tui_with_a_terminal_only_on_stdin_exits_2(state_db: Path) -> None:
    leader, follower = pty.openpty()
    try:
        done = _tui_without(state_db, follower)
    finally:
        os.close(leader)
        os.close(follower)
    assert done.returncode == 2
    assert "(stdout not a tty)" in done.stderr
