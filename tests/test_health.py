"""The pure parts of node health: `judge`, the unhealthy drains, pool quarantine, the
lifecycle edges and the `[health]` config section (the daemon's behaviour over real
HTTP is in test_health_daemon.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.config import ConfigError, HealthSection, load_config
from scheduler.decide.cooldown import PoolCooldown
from scheduler.decide.health import (
    FaultKind,
    Streak,
    boot_deadline_s,
    gpu_fault,
    judge,
    unhealthy_drains,
)
from scheduler.domain import Cloud, HoldKind, Market, Node, NodeState, Pool
from scheduler.domain.lifecycle import can_transition
from scheduler.ports.metrics import NodeSignals

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
        out = unhealthy_drains(nodes, serving, {"m": 20.0}, cap, now_s, lambda _n: 600.0)
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


def test_boot_failures_of_a_batch_whose_siblings_serve_do_not_quarantine_the_pool() -> None:
    kw = {"needed": 2, "window_s": 3600.0, "base_s": 900.0}
    cool = PoolCooldown()
    # Ten launched at 0: eight boot healthy at about 400 s, two miss their deadline at 700.
    cool.cleared(POOL, launched_at_s=0.0)
    assert cool.strike(POOL, 700.0, launched_at_s=0.0, **kw) is None
    assert cool.strike(POOL, 700.0, launched_at_s=0.0, **kw) is None
    assert cool.quarantined_pools(800.0) == []
    # Launched after the last healthy boot, and none of that batch serves: the pool broke.
    assert cool.strike(POOL, 1700.0, launched_at_s=1000.0, **kw) is None
    assert cool.strike(POOL, 1710.0, launched_at_s=1010.0, **kw) == 1710.0 + 900.0
    # Remembered across a restart, like the rest of the cooldown.
    again = PoolCooldown(cool.snapshot())
    assert again.strike(POOL, 1800.0, launched_at_s=0.0, **kw) is None
    assert again.snapshot() == cool.snapshot()


def test_a_batch_failing_at_one_deadline_is_one_quarantine_not_several() -> None:
    kw = {"needed": 2, "window_s": 3600.0, "base_s": 900.0}
    cool = PoolCooldown()
    ends = [cool.strike(POOL, 700.0, launched_at_s=0.0, **kw) for _ in range(10)]
    assert ends == [None, 1600.0] + [None] * 8  # one quarantine, the base length
    assert cool.quarantine_notes(800.0) == [
        f"quarantined {POOL.key} until 1600: 10 nodes failed to boot or turned unhealthy"
    ]
    # After it ends, the pool failing again is a repeat: twice as long.
    cool.strike(POOL, 2000.0, launched_at_s=1700.0, **kw)
    assert cool.strike(POOL, 2010.0, launched_at_s=1700.0, **kw) == 2010.0 + 1800.0


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
        ('node_label_value = "{hots}:9400"', "health.node_label_value"),
        ('node_label = "node-name"', "health.node_label"),
        ("signal_window_s = 0", "health.signal_window_s"),
        ("stall_queue_growth = -1", "health.stall_queue_growth"),
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


# -- GPU faults from the metrics source ([health] gpu_signals) ------------------------------

GPU = SETTINGS.model_copy(update={"gpu_signals": True, "stall_queue_growth": 5.0})
NAN = math.nan


@pytest.mark.parametrize(
    ("signals", "kind"),
    [
        (NodeSignals(xid=0, ecc_dbe_increase=0, running_max=3, waiting_growth=0, waiting=0), None),
        (NodeSignals(), None),  # nothing reported: neither sick nor well
        (NodeSignals(xid=79), FaultKind.XID),  # fell off the bus
        (NodeSignals(xid=0, ecc_dbe_increase=2), FaultKind.ECC_DBE),
        (NodeSignals(running_max=0, waiting_growth=12, waiting=12), FaultKind.STALLED),
        (NodeSignals(running_max=0, waiting_growth=4, waiting=12), None),  # below growth
        (NodeSignals(running_max=1, waiting_growth=50, waiting=50), None),  # busy, not stuck
        (NodeSignals(running_max=NAN, waiting_growth=50, waiting=50), None),  # unknown
        (NodeSignals(running_max=0, waiting_growth=9, waiting=0), None),  # queue drained
    ],
)
def test_gpu_fault_reads_xid_ecc_and_a_stalled_server(
    signals: NodeSignals, kind: FaultKind | None
) -> None:
    fault = gpu_fault(signals, stall_queue_growth=5.0)
    assert (fault.kind if fault else None) is kind


def test_a_faulty_ready_node_is_unhealthy_at_once_and_does_not_recover_while_faulty() -> None:
    nodes = [node(1, NodeState.READY), node(2, NodeState.READY), node(3, NodeState.UNHEALTHY)]
    nodes += [node(i, NodeState.READY) for i in range(4, 10)]
    streaks = {"n003": Streak(passes=5)}  # its HTTP check passes again
    sick = {"n001": NodeSignals(xid=48), "n003": NodeSignals(ecc_dbe_increase=1)}
    v = judge(nodes, streaks, GPU, 0.0, boot_s=lambda _: 0.0, recent_replacements=0,
              signals=sick)  # fmt: skip
    assert [n.node_id for n in v.unhealthy] == ["n001"]
    assert dict(v.faults)["n001"].kind is FaultKind.XID
    assert v.recovered == ()  # n003's GPU still reports errors
    # The same readings with gpu_signals off (the default) change nothing.
    off = judge(nodes, streaks, SETTINGS, 0.0, boot_s=lambda _: 0.0, recent_replacements=0,
                signals=sick)  # fmt: skip
    assert off.unhealthy == () and [n.node_id for n in off.recovered] == ["n003"]


def test_gpu_faults_obey_the_replacement_limit() -> None:
    nodes = [node(i, NodeState.READY) for i in range(8)]
    all_bad = {n.node_id: NodeSignals(xid=13) for n in nodes}
    v = judge(nodes, {}, GPU, 0.0, boot_s=lambda _: 0.0, recent_replacements=0,
              signals=all_bad)  # fmt: skip
    assert v.unhealthy == ()  # every GPU at once: the exporter, not the GPUs
    assert [h.nodes for h in v.held] == [8]
    two = {"n000": NodeSignals(xid=13), "n001": NodeSignals(xid=13)}
    v = judge(nodes, {}, GPU, 0.0, boot_s=lambda _: 0.0, recent_replacements=1,
              signals=two)  # fmt: skip
    assert len(v.unhealthy) == 1  # max_replacements = 2, one used in the window


def test_a_ready_metric_holds_a_booting_node_until_the_model_is_loaded() -> None:
    cfg = SETTINGS.model_copy(update={"ready_metric": "vllm:model_loaded"})
    booting = [node(1, NodeState.BOOTING)]
    passed = {"n001": Streak(passes=2)}

    def ready(signals: dict[str, NodeSignals]) -> list[str]:
        v = judge(booting, passed, cfg, 10.0, boot_s=lambda _: 100.0, recent_replacements=0,
                  signals=signals)  # fmt: skip
        return [n.node_id for n in v.ready]

    assert ready({}) == []  # not reported: not loaded
    assert ready({"n001": NodeSignals(loaded=0)}) == []
    assert ready({"n001": NodeSignals(loaded=1)}) == ["n001"]
