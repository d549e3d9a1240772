"""The pure parts of node health: `judge`, the unhealthy drains, pool quarantine, the
lifecycle edges and the `[health]` config section (the daemon's behaviour over real
HTTP is in test_health_daemon.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.config import ConfigError, HealthSection, load_config
from scheduler.decide.cooldown import PoolCooldown
from scheduler.decide.health import Streak, boot_deadline_s, judge, unhealthy_drains
from scheduler.domain import Cloud, HoldKind, Market, Node, NodeState, Pool
from scheduler.domain.lifecycle import can_transition

POOL = Pool(Cloud.AWS, "us-east-1", "", "g6e.xlarge", Market.ON_DEMAND)
SETTINGS = HealthSection(
    enabled=True,
    failure_threshold=3,
    success_threshold=2,
    boot_margin_s=60.0,
    max_replacements=2,
    max_unhealthy_fraction=0.25,
)


def node(i: int, state: NodeState, since_s: float = 0.0, model: str = "m") -> Node:
    return Node(f"n{i:03d}", model, POOL, state, launched_at_s=since_s, state_since_s=since_s)


def test_booting_node_is_ready_after_enough_passes_and_failed_after_its_deadline() -> None:
    nodes = [node(1, NodeState.BOOTING), node(2, NodeState.BOOTING), node(3, NodeState.BOOTING)]
    streaks = {"n001": Streak(passes=2), "n002": Streak(passes=1), "n003": Streak(fails=9)}
    early = judge(nodes, streaks, SETTINGS, 159.0, boot_s=lambda _: 100.0, recent_replacements=0)
    assert [n.node_id for n in early.ready] == ["n001"]
    assert early.boot_failed == ()
    late = judge(nodes, streaks, SETTINGS, 160.0, boot_s=lambda _: 100.0, recent_replacements=0)
    assert [n.node_id for n in late.boot_failed] == ["n002", "n003"]
    assert late.wakes


def test_adopted_node_deadline_counts_from_when_it_started_booting() -> None:
    adopted = Node("n1", "m", POOL, NodeState.BOOTING, launched_at_s=0.0, state_since_s=5000.0)
    assert boot_deadline_s(adopted, 600.0, 60.0) == 5660.0


@settings(max_examples=300, deadline=None)
@given(
    fails=st.lists(st.integers(0, 6), min_size=1, max_size=40),
    recent=st.integers(0, 4),
    fraction=st.floats(0.05, 1.0),
    max_replacements=st.integers(0, 5),
)
def test_judge_never_replaces_more_than_the_limits_allow(
    fails: list[int], recent: int, fraction: float, max_replacements: int
) -> None:
    cfg = SETTINGS.model_copy(
        update={"max_unhealthy_fraction": fraction, "max_replacements": max_replacements}
    )
    nodes = [node(i, NodeState.READY) for i in range(len(fails))]
    streaks = {n.node_id: Streak(fails=f) for n, f in zip(nodes, fails, strict=True)}
    verdict = judge(nodes, streaks, cfg, 0.0, boot_s=lambda _: 0.0, recent_replacements=recent)
    failing = [n for n in nodes if streaks[n.node_id].fails >= cfg.failure_threshold]
    tolerated = max(1, int(fraction * len(nodes)))
    assert len(verdict.unhealthy) <= max(0, max_replacements - recent)
    assert all(streaks[n.node_id].fails >= cfg.failure_threshold for n in verdict.unhealthy)
    if len(failing) > tolerated:
        assert verdict.unhealthy == ()
    held = sum(h.nodes for h in verdict.held if h.kind is HoldKind.REPAIR_LIMIT)
    assert len(verdict.unhealthy) + held == len(failing)


def test_every_check_failing_at_once_replaces_nobody() -> None:
    nodes = [node(i, NodeState.READY) for i in range(10)]
    streaks = {n.node_id: Streak(fails=5) for n in nodes}
    verdict = judge(nodes, streaks, SETTINGS, 0.0, boot_s=lambda _: 0.0, recent_replacements=0)
    assert verdict.unhealthy == ()
    assert [(h.kind, h.nodes) for h in verdict.held] == [(HoldKind.REPAIR_LIMIT, 10)]


def test_unhealthy_node_recovers_after_enough_passes() -> None:
    sick = node(1, NodeState.UNHEALTHY)
    one = judge([sick], {"n001": Streak(passes=1)}, SETTINGS, 0.0, boot_s=lambda _: 0.0,
                recent_replacements=0)  # fmt: skip
    two = judge([sick], {"n001": Streak(passes=2)}, SETTINGS, 0.0, boot_s=lambda _: 0.0,
                recent_replacements=0)  # fmt: skip
    assert one.recovered == () and [n.node_id for n in two.recovered] == ["n001"]


def test_unhealthy_node_drains_once_ready_capacity_covers_the_plan_or_it_waited_too_long() -> None:
    sick = node(1, NodeState.UNHEALTHY, since_s=100.0)
    ready = node(2, NodeState.READY)
    booting = node(3, NodeState.BOOTING)
    nodes = [sick, ready, booting]

    def cap(_m: str, _p: Pool) -> float:
        return 10.0

    def drains(serving: list[Node], now_s: float) -> list[str]:
        out = unhealthy_drains(nodes, serving, {"m": 20.0}, cap, now_s, give_up_s=600.0)
        return [n.node_id for n in out]

    assert drains([ready, booting], 200.0) == []  # replacement still booting
    assert drains([ready, node(3, NodeState.READY)], 200.0) == ["n001"]  # it serves
    assert drains([ready, booting], 700.0) == ["n001"]  # waited a whole deadline


def test_quarantine_needs_the_strikes_within_the_window_and_backs_off() -> None:
    cool = PoolCooldown()
    assert cool.strike(POOL, 0.0, needed=2, window_s=100.0, base_s=900.0) is None
    # The first strike has left the window: this one alone is not enough.
    assert cool.strike(POOL, 200.0, needed=2, window_s=100.0, base_s=900.0) is None
    assert cool.strike(POOL, 250.0, needed=2, window_s=100.0, base_s=900.0) == 1150.0
    assert cool.quarantined_pools(1000.0) == [POOL]
    assert cool.quarantine_notes(1000.0) == [
        f"quarantined {POOL.key} until 1150: 2 nodes failed to boot or turned unhealthy"
    ]
    assert cool.quarantined_pools(1200.0) == []
    cool.strike(POOL, 1300.0, needed=2, window_s=100.0, base_s=900.0)
    # The second quarantine within a day lasts twice as long.
    assert cool.strike(POOL, 1310.0, needed=2, window_s=100.0, base_s=900.0) == 1310.0 + 1800.0


def test_lifecycle_edges_of_an_unhealthy_node() -> None:
    assert can_transition(NodeState.READY, NodeState.UNHEALTHY)
    for new in (NodeState.READY, NodeState.DRAINING, NodeState.GONE, NodeState.INTERRUPTED):
        assert can_transition(NodeState.UNHEALTHY, new)
    assert not can_transition(NodeState.BOOTING, NodeState.UNHEALTHY)
    assert not can_transition(NodeState.UNHEALTHY, NodeState.BOOTING)


def test_health_is_off_without_the_section(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[models]]\nname = "llama-3.1-8b"\n[[regions]]\nname = "x"\nlocation = "y"\n')
    assert load_config(path).health_checks is None
    path.write_text(path.read_text() + "[health]\nenabled = true\n")
    assert load_config(path).health_checks == HealthSection(enabled=True)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('url = "http://{hots}:8000/health"', "health.url"),
        ("failure_threshold = 0", "health.failure_threshold"),
        ("expected_status = 42", "health.expected_status"),
        ("boot_margin_s = nan", "health.boot_margin_s"),
    ],
)
def test_bad_health_keys_are_named(tmp_path: Path, line: str, expected: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[[models]]\nname = "llama-3.1-8b"\n[[regions]]\nname = "x"\nlocation = "y"\n'
        f"[health]\nenabled = true\n{line}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert len(err.value.problems) == 1
    assert expected in err.value.problems[0]


def test_the_tui_fleet_shows_every_live_state_unhealthy_included() -> None:
    from scheduler.domain.lifecycle import LIVE
    from tui.screens import SHORT
    from tui.views import STATES, group_fleet

    assert {s.value for s in LIVE} == set(STATES) == set(SHORT)
    nodes = [
        {"node_id": "a", "model": "m", "cloud": "aws", "region": "us-east-1", "zone": "",
         "instance_type": "g6e.xlarge", "market": "on-demand", "state": state,
         "launched_at_s": 0.0, "pool": POOL.key}
        for state in ("ready", "unhealthy", "booting")
    ]  # fmt: skip
    [group] = group_fleet(nodes, {POOL.key: 1.0}, now_s=60.0)
    assert (group.counts["ready"], group.counts["unhealthy"], group.total) == (1, 1, 3)
    assert SHORT["unhealthy"] == "sick"
