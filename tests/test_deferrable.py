"""Deferrable (batch) demand (issue 22): `[[models]] deferrable_deadline_s`, planned for
its mean rate on spot, queued by the replay and served before its deadline or counted
as a miss."""

from __future__ import annotations

import json
import sys
from collections import deque
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsched.cli import main
from scheduler.config import DEFAULT_CONFIG_PATH
from simulations.engine import run_policy
from simulations.ledger import serve_in_order
from simulations.world import WorldSpec, build_world

sys.path.insert(0, str(Path(__file__).parent))

BATCH_LINE = "min_on_demand_share = 0.2\n"  # the 8B's, in the embedded config


def _config(tmp_path: Path, deadline: str | None) -> Path:
    text = DEFAULT_CONFIG_PATH.read_text()
    if deadline is not None:
        assert text.count(BATCH_LINE) == 1
        text = text.replace(BATCH_LINE, BATCH_LINE + f"deferrable_deadline_s = {deadline}\n")
    path = tmp_path / f"c{deadline}.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "Input should be greater than 0"),
        ("-60", "Input should be greater than 0"),
        ("700000", "Input should be less than or equal to 604800"),
        ('"6h"', 'expected a number, got the string "6h"'),
    ],
)
def test_validate_config_checks_the_deadline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    path = _config(tmp_path, value)
    assert main(["validate-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: models[0].deferrable_deadline_s:" in err and message in err, err


def test_a_deferrable_model_is_planned_on_spot_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The 8B keeps a 20% on-demand share and spot-loss robustness when interactive; as
    # batch demand it waits out an interruption, so the plan puts it on spot only.
    for deadline, spot_only in ((None, False), ("21600", True)):
        assert main(["plan", "--config", str(_config(tmp_path, deadline)), "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        markets = {p["market"] for p in doc["nodes"] if p["model"] == "llama-3.1-8b"}
        assert (markets == {"spot"}) is spot_only, (deadline, markets)


@settings(max_examples=200, deadline=None)
@given(
    queued=st.lists(st.floats(0.1, 50.0), max_size=5),
    arrived=st.floats(0.0, 50.0),
    served=st.floats(0.0, 200.0),
)
def test_what_waited_longest_is_served_first(
    queued: list[float], arrived: float, served: float
) -> None:
    queue: deque[list[float]] = deque([float(i), q] for i, q in enumerate(queued))
    serve_in_order(queue, 10, arrived, served)
    waited = sum(queued)
    assert sum(q[1] for q in queue) == pytest.approx(max(0.0, waited + arrived - served))
    new = [q[1] for q in queue if q[0] == 10]
    if served < waited - 1e-6:
        # Nothing new is served while something older waits, and the oldest go first.
        assert new == ([pytest.approx(arrived)] if arrived > 1e-9 else [])
        assert [q[0] for q in queue if q[0] < 10] == [
            float(i) for i in range(len(queued) - sum(q[0] < 10 for q in queue), len(queued))
        ]
    else:
        assert all(q[0] == 10 for q in queue)


def test_a_replay_serves_batch_demand_before_its_deadline_for_less(tmp_path: Path) -> None:
    # The bundled hour with the 8B as batch demand (one hour's deadline): its peaks wait
    # and are served by capacity planned for its mean rate, on spot; nothing expires.
    costs = {}
    for deadline in (None, "3600"):
        world, _ = build_world(WorldSpec(_config(tmp_path, deadline), None))
        r = run_policy(world, "capsched", tmp_path / "s.db")
        per = r.per_model()["llama-3.1-8b"]
        costs[deadline] = r.cost_usd
        if deadline is not None:
            assert per["deadline_missed"] == 0.0
            assert per["served"] + per["waiting_at_end"] == pytest.approx(per["requests"], rel=1e-6)
    assert costs["3600"] < costs[None]
