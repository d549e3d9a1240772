"""`capsched plan`: the embedded default, JSON output, and errors that name the entry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from capsched.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config.example.toml"


def run_plan(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["plan", *args])
    out, err = capsys.readouterr()
    return code, out, err


def write_json(tmp_path: Path, name: str, doc: object) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def plan_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code, out, err = run_plan(capsys, "--json", *args)
    assert code == 0, err
    doc: dict[str, Any] = json.loads(out)
    return doc


DEFAULT_DEMAND = REPO / "scheduler" / "data" / "default_demand.json"


def test_embedded_default_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_plan(capsys)
    assert code == 0
    assert "instance type" in out and "USD/h" in out
    assert "status optimal" in out or "status feasible" in out
    # It says what it planned for: the default demand, where it comes from, row by row.
    lines = out.splitlines()
    assert lines[0] == f"planned for this demand (default: {DEFAULT_DEMAND}):"
    assert lines[1].split() == ["model", "region", "rps", "unmet", "rps"]
    rows = [ln.split() for ln in lines[3:7]]
    assert rows == [
        [e["model"], e["region"], f"{e['rps']:.2f}", "-"]
        for e in json.loads(DEFAULT_DEMAND.read_text())["demand"]
    ]


def test_json_plan_carries_the_demand_it_planned_for(capsys: pytest.CaptureFixture[str]) -> None:
    doc = plan_json(capsys)
    assert doc["demand"] == json.loads(DEFAULT_DEMAND.read_text())["demand"]


def test_plan_help_says_where_the_default_demand_comes_from(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as done:
        main(["plan", "--help"])
    assert done.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    expected = (
        "(default: the example demand shipped with capsched for the embedded config's"
        f" models and regions, {DEFAULT_DEMAND}; it is not read from a running daemon)"
    )
    assert expected in out


def test_demand_table_names_the_file_sums_repeats_and_shows_unmet(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    entries = [
        {"model": "llama-3.1-70b", "region": "us-east", "rps": 3000},
        {"model": "llama-3.1-8b", "region": "eu-west", "rps": 2.25},
        {"model": "llama-3.1-70b", "region": "us-east", "rps": 2000},
    ]
    demand = write_json(tmp_path, "d.json", {"demand": entries})
    code, out, err = run_plan(capsys, "--config", str(CONFIG), "--demand", str(demand))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"planned for this demand ({demand}):"
    (big,) = [ln.split() for ln in lines[3:5] if ln.startswith("llama-3.1-70b")]
    assert big[:3] == ["llama-3.1-70b", "us-east", "5000.00"]
    assert 0 < float(big[3]) <= 5000  # the budget leaves some of it unserved
    assert lines[3:5][1].split() == ["llama-3.1-8b", "eu-west", "2.25", "-"]
    doc = plan_json(capsys, "--config", str(CONFIG), "--demand", str(demand))
    assert doc["demand"] == [
        {"model": "llama-3.1-70b", "region": "us-east", "rps": 5000.0},
        {"model": "llama-3.1-8b", "region": "eu-west", "rps": 2.25},
    ]
    # The solver reports unmet demand per entry given; the table sums them per series.
    assert {(u["model"], u["region"]) for u in doc["unmet"]} == {("llama-3.1-70b", "us-east")}
    assert f"{sum(u['rps'] for u in doc['unmet']):.2f}" == big[3]


def test_json_plan_serves_the_demand_within_budget(capsys: pytest.CaptureFixture[str]) -> None:
    doc = plan_json(capsys, "--config", str(CONFIG))
    assert set(doc) >= {"status", "usd_per_hour", "gap", "solve_time_s", "nodes", "unmet"}
    assert doc["status"] in ("optimal", "feasible")
    assert doc["unmet"] == []
    assert 0 < doc["usd_per_hour"] <= 400.0  # the example's budget
    models = {n["model"] for n in doc["nodes"]}
    assert models == {"llama-3.1-8b", "llama-3.1-70b"}
    for node in doc["nodes"]:
        assert set(node) == {"model", "cloud", "region", "zone", "instance_type", "market", "count"}
        assert node["count"] > 0
    # spot capacity is never all in one failure domain with robustness 0.8
    markets = {n["market"] for n in doc["nodes"]}
    assert "on-demand" in markets  # min_on_demand_share > 0 in the example


def test_json_demand_fed_back_gives_the_same_plan(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    first = plan_json(capsys, "--config", str(CONFIG))
    demand = write_json(tmp_path, "demand.json", {"demand": first["demand"]})
    second = plan_json(capsys, "--config", str(CONFIG), "--demand", str(demand))
    assert second["demand"] == first["demand"]
    assert second["nodes"] == first["nodes"]


def test_plan_fed_back_as_fleet_is_kept(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    first = plan_json(capsys, "--config", str(CONFIG))
    fleet = write_json(tmp_path, "fleet.json", {"nodes": first["nodes"]})
    second = plan_json(capsys, "--config", str(CONFIG), "--fleet", str(fleet))

    def key(n: dict[str, Any]) -> tuple[str, ...]:
        return (n["model"], n["cloud"], n["zone"] or n["region"], n["instance_type"], n["market"])

    assert {key(n): n["count"] for n in second["nodes"]} == {
        key(n): n["count"] for n in first["nodes"]
    }


def test_demand_beyond_capacity_is_reported_unmet(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    demand = write_json(
        tmp_path,
        "d.json",
        {"demand": [{"model": "llama-3.1-70b", "region": "us-east", "rps": 5000}]},
    )
    doc = plan_json(capsys, "--config", str(CONFIG), "--demand", str(demand))
    assert doc["usd_per_hour"] <= 400.0
    (unmet,) = doc["unmet"]
    assert unmet["model"] == "llama-3.1-70b" and unmet["region"] == "us-east"
    assert 0 < unmet["rps"] <= 5000


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            {"demand": [{"model": "gpt-17", "region": "us-east", "rps": 1}]},
            "demand[0]: unknown model 'gpt-17'",
        ),
        (
            {
                "demand": [
                    {"model": "llama-3.1-8b", "region": "us-east", "rps": 1},
                    {"model": "llama-3.1-8b", "region": "moon", "rps": 1},
                ]
            },
            "demand[1]: unknown region 'moon'",
        ),
        (
            {"demand": [{"model": "llama-3.1-8b", "region": "us-east", "rps": -3}]},
            "demand[0].rps: Input should be greater than or equal to 0",
        ),
        (
            '{"demand": [{"model": "llama-3.1-8b", "region": "us-east", "rps": NaN}]}',
            "demand[0].rps",
        ),
        ('{"demand": [\n  {"model": "x",\n}', "line 3"),
        (
            {"demand": [{"model": "llama-3.1-8b", "rps": 1}]},
            "demand[0].region: required key is missing",
        ),
    ],
)
def test_bad_demand_names_the_entry(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, doc: object, expected: str
) -> None:
    path = write_json(tmp_path, "demand.json", doc)
    code, _, err = run_plan(capsys, "--config", str(CONFIG), "--demand", str(path))
    assert code == 2
    assert str(path) in err and expected in err, err
    assert "Traceback" not in err


def test_fleet_in_an_unknown_pool_is_an_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    node = {
        "model": "llama-3.1-8b",
        "cloud": "aws",
        "region": "us-east-1",
        "zone": "",
        "instance_type": "g99.huge",
        "market": "spot",
        "count": 2,
    }
    path = write_json(tmp_path, "fleet.json", {"nodes": [node]})
    code, _, err = run_plan(capsys, "--config", str(CONFIG), "--fleet", str(path))
    assert code == 2
    assert "g99.huge" in err and str(path) in err
