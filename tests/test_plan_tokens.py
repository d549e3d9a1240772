"""`capsched plan` with request sizes: demand entries with `input_tokens` and
`output_tokens` change the capacity planned, and the JSON gives each placement's cost
per million tokens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsched.cli import main
from capsched.inputs import merge_demand
from scheduler.domain import REFERENCE_SIZE, Cloud, Demand, RequestSize
from scheduler.fleet.capacity import demand_size
from scheduler.fleet.catalog import load_catalog

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config.example.toml"


def plan(capsys: pytest.CaptureFixture[str], tmp_path: Path, *entries: dict[str, Any]) -> Any:
    path = tmp_path / "demand.json"
    path.write_text(json.dumps({"demand": list(entries)}))
    code = main(["plan", "--json", "--config", str(CONFIG), "--demand", str(path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def gpus(doc: Any, model: str) -> int:
    types = load_catalog().instance_types
    return sum(
        n["count"] * types[(Cloud(n["cloud"]), n["instance_type"])].gpu_count
        for n in doc["nodes"]
        if n["model"] == model
    )


def entry(rps: float, region: str = "us-east", **tokens: float) -> dict[str, Any]:
    return {"model": "llama-3.1-8b", "region": region, "rps": rps, **tokens}


def test_long_prompts_plan_more_gpus_than_short_ones_at_the_same_rate(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    short = plan(capsys, tmp_path, entry(20, input_tokens=500, output_tokens=232))
    long = plan(capsys, tmp_path, entry(20, input_tokens=10_000, output_tokens=232))
    assert not short["unmet"] and not long["unmet"]
    assert gpus(long, "llama-3.1-8b") > 3 * gpus(short, "llama-3.1-8b")
    assert long["usd_per_hour"] > 2 * short["usd_per_hour"]
    assert long["demand"] == [entry(20.0, input_tokens=10_000.0, output_tokens=232.0)]


def test_the_reference_size_plans_as_no_size(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    plain = plan(capsys, tmp_path, entry(20))
    sized = plan(capsys, tmp_path, entry(20, input_tokens=763, output_tokens=232))
    assert sized["nodes"] == plain["nodes"]
    assert sized["usd_per_hour"] == plain["usd_per_hour"]


def test_each_placement_has_its_cost_per_million_tokens(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    doc = plan(capsys, tmp_path, entry(20, input_tokens=2_000, output_tokens=100))
    assert len(doc["token_costs"]) == len(doc["nodes"])
    for cost, node in zip(doc["token_costs"], doc["nodes"], strict=True):
        assert cost["model"] == node["model"] and cost["count"] == node["count"]
        tokens = 2_100 if node["model"] == "llama-3.1-8b" else 763 + 232
        per_h = cost["rps_each"] * 3600 * tokens / 1e6
        # The JSON rounds to 4 decimals.
        assert cost["usd_per_million_tokens"] == pytest.approx(
            cost["usd_per_hour_each"] / per_h, rel=1e-3, abs=5e-5
        )


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ({"input_tokens": 0}, "demand[0].input_tokens"),
        ({"output_tokens": -5}, "demand[0].output_tokens"),
        ({"input_tokens": "many"}, "demand[0].input_tokens"),
    ],
)
def test_a_bad_token_count_names_the_entry(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tokens: dict[str, Any], message: str
) -> None:
    path = tmp_path / "demand.json"
    path.write_text(json.dumps({"demand": [entry(1, **tokens)]}))
    code = main(["plan", "--json", "--config", str(CONFIG), "--demand", str(path)])
    assert code == 2
    assert message in capsys.readouterr().err


def test_merged_entries_carry_the_rate_weighted_mean_size() -> None:
    merged = merge_demand(
        [
            Demand("m", "r", 3.0, RequestSize(1_000, 100)),
            Demand("m", "r", 1.0, None),  # the reference request, 763 / 232
        ]
    ).demand
    assert len(merged) == 1 and merged[0].rps == 4.0
    assert merged[0].size == RequestSize((3_000 + 763) / 4, (300 + 232) / 4)
    assert demand_size([Demand("m", "r", 2.0)], "m") is None


def test_the_table_shows_the_sizes_planned_for(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "demand.json"
    doc = {"demand": [entry(20, input_tokens=10_000), entry(5, region="eu-west")]}
    path.write_text(json.dumps(doc))
    assert main(["plan", "--config", str(CONFIG), "--demand", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["model", "region", "rps", "unmet", "rps", "in", "tok", "out", "tok"]
    assert lines[3].split()[-2:] == ["10000", "232"]  # absent output: the reference's
    assert lines[4].split()[-2:] == ["763", "232"]  # no size: the reference request


sizes = st.one_of(
    st.none(),
    st.builds(
        RequestSize,
        st.floats(1.0, 1e6, allow_nan=False),
        st.floats(1.0, 1e5, allow_nan=False),
    ),
)


@given(st.lists(st.tuples(st.floats(0.0, 1e6, allow_nan=False), sizes), min_size=1, max_size=8))
def test_the_mean_size_lies_within_the_entries_sizes(
    entries: list[tuple[float, RequestSize | None]],
) -> None:
    demand = [Demand("m", "r", rps, size) for rps, size in entries]
    got = demand_size(demand, "m")
    loaded = [(s or REFERENCE_SIZE) for rps, s in entries if rps > 0]
    if got is None:
        assert not loaded or all(s is None for rps, s in entries if rps > 0)
        return
    for field in ("input_tokens", "output_tokens"):
        values = [getattr(s, field) for s in loaded]
        assert min(values) * (1 - 1e-9) <= getattr(got, field) <= max(values) * (1 + 1e-9)
