"""A spot trace shorter than the replay (issue 16, defect 6): it loops only with a note
that names it, its length and the replay's, and `loop = false` holds its last value."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.sim import SpotTrace
from capsched.cli import main
from scheduler.fleet.catalog import load_catalog
from simulations.scenario import ScenarioError, load_spot_mapping, parse_scenario

POOLS = "aws/us-east-1/g6e.*/spot"


def _mapping(
    folder: Path, counts: list[int], gap_s: float, extra: str, replay_s: float
) -> tuple[SpotTrace, list[str]]:
    (folder / "t.json").write_text(json.dumps({"metadata": {"gap_seconds": gap_s}, "data": counts}))
    path = folder / "s.toml"
    scenario = parse_scenario(f'[[spot_traces]]\nfile = "t.json"\npools = "{POOLS}"\n{extra}', path)
    spot, notes = load_spot_mapping(scenario, path, load_catalog().offerings, replay_s)
    return next(iter(spot.values())), notes


def test_a_trace_the_replay_outlasts_says_that_it_loops(tmp_path: Path) -> None:
    # 32 hours of 5-minute ticks under a one-week replay: the case.
    counts = [4] * 200 + [0] * 184
    trace, notes = _mapping(tmp_path, counts, 300, "", 7 * 86400.0)
    assert notes == [
        "spot_traces[0] t.json loops: 32.0 h long, the replay is 7.0 days, so it plays 5.2"
        " times (loop = false holds its last value instead)"
    ]
    assert trace.capacity_at(32 * 3600.0) == 4  # starts over


def test_loop_false_holds_the_last_value_and_says_nothing(tmp_path: Path) -> None:
    trace, notes = _mapping(tmp_path, [4, 4, 1], 300, "loop = false\n", 7 * 86400.0)
    assert notes == []
    assert [trace.capacity_at(t) for t in (0.0, 700.0, 900.0, 86400.0)] == [4, 1, 1, 1]


def test_a_trace_as_long_as_the_replay_is_not_noted(tmp_path: Path) -> None:
    _, notes = _mapping(tmp_path, [3] * 12, 300, "", 3600.0)
    assert notes == []
    _, notes = _mapping(tmp_path, [3] * 12, 300, "offset_s = 300\n", 3600.0)
    assert len(notes) == 1 and "from offset 5 min" in notes[0]


def test_loop_must_be_a_boolean(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"spot_traces\[0\]\.loop"):
        _mapping(tmp_path, [1], 60, 'loop = "sometimes"\n', 60.0)


@settings(max_examples=150, deadline=None)
@given(
    counts=st.lists(st.integers(0, 16), min_size=1, max_size=40),
    gap_s=st.sampled_from([30.0, 60.0, 300.0]),
    offset_ticks=st.integers(0, 50),
    replay_ticks=st.integers(1, 200),
    loop=st.booleans(),
    probe=st.integers(0, 400),
)
def test_noted_exactly_when_it_loops_and_held_otherwise(
    counts: list[int],
    gap_s: float,
    offset_ticks: int,
    replay_ticks: int,
    loop: bool,
    probe: int,
) -> None:
    offset_s, replay_s = offset_ticks * gap_s, replay_ticks * gap_s
    extra = f"offset_s = {offset_s}\n" + ("" if loop else "loop = false\n")
    with tempfile.TemporaryDirectory() as folder:
        trace, notes = _mapping(Path(folder), counts, gap_s, extra, replay_s)
    outlasts = offset_ticks + replay_ticks > len(counts)
    assert bool(notes) == (loop and outlasts)
    t = probe * gap_s + gap_s / 2
    i = math.floor((t + offset_s) / gap_s)
    expected = counts[i % len(counts)] if loop else counts[min(i, len(counts) - 1)]
    assert trace.capacity_at(t) == expected


def test_simulate_prints_the_loop_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "t.json").write_text('{"metadata": {"gap_seconds": 60}, "data": [1, 1, 0]}')
    trace = tmp_path / "t.csv"
    trace.write_text(
        "minute,requests,model,region\n"
        + "".join(f"{m},300,llama-3.1-8b,us-east\n" for m in range(10))
    )
    for loop, noted in (("true", True), ("false", False)):
        scenario = tmp_path / f"s-{loop}.toml"
        scenario.write_text(f'[[spot_traces]]\nfile = "t.json"\npools = "{POOLS}"\nloop = {loop}\n')
        args = ["simulate", "--trace", str(trace), "--scenario", str(scenario)]
        out = tmp_path / f"out-{loop}"
        assert main([*args, "--policy", "static-peak", "--out", str(out), "--no-progress"]) == 0
        err = capsys.readouterr().err
        note = "note: spot_traces[0] t.json loops: 3 min long, the replay is 10 min"
        assert (note in err) is noted


def test_next_tick_after_moves_on_where_rounding_landed_on_the_input() -> None:
    # Before: (t + offset) / gap rounded just below a whole number, and the boundary
    # "after" t was t itself; a replay stepping from boundary to boundary hung.
    trace = SpotTrace("t", 0.3, np.array([1, 2]), offset_s=8783.34037897173)
    t = 552860.4596210282
    assert trace.next_tick_after(t) > t


@settings(max_examples=300, deadline=None)
@given(
    gap=st.floats(0.01, 7200.0),
    offset=st.floats(-1e5, 1e5),
    start=st.floats(0.0, 1e7),
)
def test_stepping_from_boundary_to_boundary_always_moves_forward(
    gap: float, offset: float, start: float
) -> None:
    trace = SpotTrace("t", gap, np.array([1]), offset_s=offset)
    t = start
    for _ in range(20):
        nxt = trace.next_tick_after(t)
        assert t < nxt <= t + gap * (1 + 1e-9) + 1e-6
        t = nxt
