"""Problems in the files a user writes read as one line in the file's own words: config
TOML, demand and fleet JSON, scenario and sweep TOML all go through
`scheduler.errors.problem_lines`, and a typo'd key names the key that was meant."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from capsched.cli import main
from capsched.inputs import InputError, read_demand, read_fleet
from scheduler.config import Config, ConfigError, parse_config
from scheduler.errors import did_you_mean
from simulations.scenario import ScenarioError, apply_config, parse_scenario

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config.example.toml"
MINIMAL = """
[[models]]
name = "llama-3.1-8b"
[[regions]]
name = "us"
location = "us-east-1"
"""
NODE = {
    "model": "llama-3.1-8b",
    "cloud": "aws",
    "region": "us-east-1",
    "zone": "",
    "instance_type": "g6.xlarge",
    "market": "spot",
    "count": 1,
}


def write(tmp_path: Path, name: str, doc: object) -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def demand_problems(path: Path) -> list[str]:
    with pytest.raises(InputError) as err:
        read_demand(path)
    return err.value.problems


# -- demand and fleet files ------------------------------------------------------------------


def test_a_list_instead_of_a_demand_object_says_what_is_expected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "list.json", [{"model": "llama-3.1-8b", "region": "us-east"}])
    assert main(["plan", "--demand", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f'error: {path}: expected an object {{"demand": [...]}}, got a list\n'


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"nodes": "all of them"}, 'nodes: expected a list, got the string "all of them"'),
        (
            {"nodes": [["aws", "g6.xlarge"]]},
            'nodes[0]: expected an object {"model": "...", "cloud": ..., "region": "...", '
            '"instance_type": "...", "market": ..., "count": ...}, got a list',
        ),
        ([NODE], 'expected an object {"nodes": [...]}, got a list'),
        ({"nodes": [{**NODE, "count": "two"}]}, "nodes[0].count: expected a whole number, got"),
    ],
)
def test_fleet_of_the_wrong_shape_says_what_is_expected(
    tmp_path: Path, doc: object, expected: str
) -> None:
    path = write(tmp_path, "fleet.json", doc)
    with pytest.raises(InputError) as err:
        read_fleet(path)
    (line,) = err.value.problems
    assert line.startswith(f"{path}: {expected}"), line


def test_a_typo_in_a_demand_entry_names_the_key_meant(tmp_path: Path) -> None:
    path = write(
        tmp_path, "d.json", {"demand": [{"model": "llama-3.1-8b", "regoin": "us-east", "rps": 1}]}
    )
    assert demand_problems(path) == [
        f"{path}: demand[0].region: required key is missing",
        f"{path}: demand[0].regoin: unknown key; did you mean 'region'?",
    ]


def test_an_unknown_key_with_nothing_close_lists_the_known_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "d.json", {"demand": [], "comment": "peak hour"})
    assert demand_problems(path) == [f"{path}: comment: unknown key (known: demand)"]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_one_letter_typo_of_a_fleet_key_is_recognised(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    key = data.draw(st.sampled_from(sorted(NODE)))
    typo = data.draw(one_letter_typos(key, set(NODE)))
    entry = {typo if k == key else k: v for k, v in NODE.items()}
    path = write(tmp_path_factory.mktemp("fleet"), "fleet.json", {"nodes": [entry]})
    with pytest.raises(InputError) as err:
        read_fleet(path)
    assert f"{path}: nodes[0].{typo}: unknown key; did you mean {key!r}?" in err.value.problems


# -- config files ----------------------------------------------------------------------------


def config_problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(text, Path("c.toml"))
    return err.value.problems


REGION_ONLY = "[[regions]]\nname = 'us'\nlocation = 'us-east-1'\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL + "[schedular]\ntick_interval_s = 60\n", "schedular: unknown key; did you mean"),
        (
            MINIMAL + "[[models]]\nname = 'llama-3.1-70b'\nlatency_slo = 1000\n",
            "models[1].latency_slo: unknown key; did you mean 'latency_slo_ms'?",
        ),
        (MINIMAL + "[sources]\nspeed_up = 2\n", "sources.speed_up: unknown key; did you mean"),
        ("models = 'llama'\n" + REGION_ONLY, 'models: expected a list, got the string "llama"'),
        (MINIMAL + "[aws]\nowner = 7\n", "aws.owner: expected a string, got the number 7"),
        (MINIMAL + "[forecast]\nhorizon_min = 'soon'\n", "forecast.horizon_min: expected a"),
        ("models = []\n" + REGION_ONLY, "models: needs at least 1 item, got 0"),
    ],
)
def test_config_problems_read_as_the_file_is_written(text: str, expected: str) -> None:
    problems = config_problems(text)
    assert any(p.startswith(f"c.toml: {expected}") for p in problems), problems


def test_a_config_rule_across_tables_is_one_plain_line() -> None:
    text = MINIMAL + "[sources]\ncloud = 'aws'\ndemand = 'prometheus'\n"
    assert config_problems(text) == ['c.toml: sources.cloud is "aws" but there is no [aws] table']


def sections(model: type[BaseModel], prefix: str = "") -> list[tuple[str, type[BaseModel]]]:
    """Every table of the config that is not a list of tables, by its TOML name."""
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.append((prefix + name, ann))
            out += sections(ann, f"{prefix}{name}.")
    return out


SECTIONS = sections(Config)


def every_table(model: type[BaseModel]) -> list[type[BaseModel]]:
    """`model` and every model its fields hold, at any depth (lists, optional tables)."""
    out, todo = [], [model]
    while todo:
        m = todo.pop()
        if m in out:
            continue
        out.append(m)
        for field in m.model_fields.values():
            for t in (field.annotation, *get_args(field.annotation)):
                if isinstance(t, type) and issubclass(t, BaseModel):
                    todo.append(t)
    return out


@st.composite
def one_letter_typos(draw: st.DrawFn, key: str, known: set[str]) -> str:
    """`key` with one letter dropped, doubled or swapped with the next, if it is no key."""
    i = draw(st.integers(0, len(key) - 2))
    how = draw(st.sampled_from(["drop", "double", "swap"]))
    typo = {
        "drop": key[:i] + key[i + 1 :],
        "double": key[:i] + key[i] + key[i:],
        "swap": key[:i] + key[i + 1] + key[i] + key[i + 2 :],
    }[how]
    if typo in known or typo == key:
        typo = key + "x"
    return typo


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_any_one_letter_typo_of_a_config_key_is_recognised(data: st.DataObject) -> None:
    section, model = data.draw(st.sampled_from(SECTIONS))
    key = data.draw(st.sampled_from(list(model.model_fields)))
    typo = data.draw(one_letter_typos(key, set(model.model_fields)))
    problems = config_problems(f"{MINIMAL}[{section}]\n{typo} = 1\n")
    assert f"c.toml: {section}.{typo}: unknown key; did you mean {key!r}?" in problems


def test_every_one_letter_typo_of_every_config_key_finds_that_key() -> None:
    assert len(every_table(Config)) >= 20  # aws, gcp, models, regions, quotas included
    # Exhaustive over the schema (about 2,700 typos): no two keys of one table are so alike
    # that a dropped or swapped letter points at the wrong one.
    for model in every_table(Config):
        keys = list(model.model_fields)
        for key in keys:
            drops = {key[:i] + key[i + 1 :] for i in range(len(key))}
            swaps = {key[:i] + key[i + 1] + key[i] + key[i + 2 :] for i in range(len(key) - 1)}
            for typo in (drops | swaps) - set(keys) - {""}:
                assert did_you_mean(typo, keys) == key, (model.__name__, typo)


# -- scenario and sweep files ----------------------------------------------------------------


def scenario_problems(text: str) -> list[str]:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(text, Path("s.toml"))
    return err.value.problems


def test_a_typo_in_a_scenario_names_the_key_meant() -> None:
    assert scenario_problems('nam = "x"\n[demand]\nscael = 2\n') == [
        "s.toml: demand.scael: unknown key; did you mean 'scale'?",
        "s.toml: nam: unknown key; did you mean 'name'?",
    ]


def test_a_spot_trace_given_as_a_string_says_a_table_was_expected() -> None:
    assert scenario_problems('spot_traces = ["us-east-1.json"]\n') == [
        's.toml: spot_traces[0]: expected a table, got the string "us-east-1.json"'
    ]


def test_a_typo_in_a_scenarios_config_override_names_the_config_key() -> None:
    scenario = parse_scenario("[config.solver]\nseeed = 3\n", Path("s.toml"))
    base = parse_config(MINIMAL, Path("c.toml"))
    with pytest.raises(ScenarioError) as err:
        apply_config(base, scenario, Path("s.toml"))
    assert err.value.problems == ["s.toml: config.solver.seeed: unknown key; did you mean 'seed'?"]


def test_a_typo_in_a_sweeps_inline_scenario_names_the_key_meant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('[[scenarios]]\nname = "a"\n[scenarios.market]\nspot_price_multipler = 2\n')
    code = main(["simulate", "--sweep", str(sweep), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    expected = "scenarios[0].market.spot_price_multipler: unknown key; did you mean"
    assert f"{sweep}: {expected} 'spot_price_multiplier'?" in err, err
