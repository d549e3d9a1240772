"""Simulator inputs: the generic trace formats, demand mapping and scaling, scenarios."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scheduler.catalog import load_catalog
from scheduler.config import load_config
from scheduler.profiles import load_profiles
from simulations.demand import assign_series, gpus_per_rps, load_demand
from simulations.scenario import ScenarioError, apply_config, load_spot_mapping, parse_scenario
from simulations.traces import TraceFormatError, detect_format, read_minute_csv, read_requests


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_minute_counts_with_model_and_region(tmp_path: Path) -> None:
    p = write(tmp_path, "minute,requests,model,region\n0,60,a,us\n1,120,a,us\n0,6,b,eu\n")
    s = read_minute_csv(p)
    assert s.names == ("a/us", "b/eu")
    by = dict(zip(s.names, s.values, strict=True))
    np.testing.assert_array_equal(by["a/us"], [60, 120])
    assert by["b/eu"][0] == 6 and np.isnan(by["b/eu"][1])  # absent minute is missing
    assert detect_format(p) == "minute-csv"


def test_per_request_rows_with_tokens_model_and_iso(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "timestamp,input_tokens,output_tokens,model\n"
        "2024-01-01T00:00:10Z,100,10,a\n2024-01-01T00:00:50Z,300,30,a\n"
        "2024-01-01T00:01:05Z,200,20,b\n",
    )
    s = read_requests(p)
    assert s.names == ("a/", "b/")
    np.testing.assert_array_equal(s.values, [[2, 0], [0, 1]])
    assert s.mean_tokens == pytest.approx((200.0, 20.0))
    assert detect_format(p) == "requests"


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("timestamp,input_tokens,output_tokens\n1,5,5\n2,-1,5\n", 3, "negative"),
        ("timestamp,input_tokens,output_tokens\n1,5,5\n2,five,5\n", 3, "not a number"),
        ("timestamp,input_tokens,output_tokens\n1,5,5\n2,5\n", 3, "fields"),
        ("timestamp,input_tokens,output_tokens,model\n1,5,5,a\nsoon,5,5,a\n", 3, "time"),
    ],
)
def test_bad_request_rows_name_the_line(tmp_path: Path, text: str, line: int, what: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(TraceFormatError, match=what) as info:
        read_requests(p)
    assert str(info.value).startswith(f"{p}:{line}:")


def test_bad_minute_rows_name_the_line(tmp_path: Path) -> None:
    p = write(tmp_path, "minute,requests,model,region\n0,1,a,us\n0,2,a,us\n")
    with pytest.raises(TraceFormatError, match=r":3: minute listed twice"):
        read_minute_csv(p)
    p = write(tmp_path, "minute,requests,model,region\n0,1,,\n", "e.csv")
    with pytest.raises(TraceFormatError, match=r":2: empty model and region"):
        read_minute_csv(p)


def test_series_go_to_configured_pairs_and_unknown_ones_are_errors(tmp_path: Path) -> None:
    config = load_config()
    p = write(tmp_path, "minute,requests,model,region\n0,60,llama-3.1-8b,eu-west\n")
    keys, rps, _ = assign_series(read_minute_csv(p), config)
    assert len(keys) == len(config.models) * len(config.regions)
    assert rps[keys.index(("llama-3.1-8b", "eu-west"))][0] == pytest.approx(1.0)
    assert rps.sum() == pytest.approx(1.0)  # every other pair is explicitly zero
    bad = write(tmp_path, "minute,requests,model,region\n0,60,gpt-9,eu-west\n", "b.csv")
    with pytest.raises(ValueError, match="gpt-9/eu-west"):
        assign_series(read_minute_csv(bad), config)
    # An unlabelled trace goes to the first model and region.
    plain = write(tmp_path, "minute,requests\n0,120\n", "p.csv")
    keys, rps, _ = assign_series(read_minute_csv(plain), config)
    assert rps[0][0] == pytest.approx(2.0) and keys[0] == ("llama-3.1-8b", "us-east")


def test_fleet_scaling_hits_the_gpu_target(tmp_path: Path) -> None:
    config, catalog, profiles = load_config(), load_catalog(), load_profiles()
    p = write(tmp_path, "minute,requests\n0,60\n1,600\n2,300\n")
    d = load_demand(p, config, catalog, profiles, fleet_gpus=50)
    per = gpus_per_rps(config, catalog, profiles)
    need = sum(d.rps[i] * per[m] for i, (m, _) in enumerate(d.keys))
    assert float(need.max()) == pytest.approx(50.0)
    d2 = load_demand(p, config, catalog, profiles, fleet_gpus=50, scale=2.0)
    np.testing.assert_allclose(d2.rps, 2 * d.rps)


def test_scenario_errors_name_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    with pytest.raises(ScenarioError) as info:
        parse_scenario("[market]\ninterruption_multiplier = -2\n[cloud]\nboot = 3\n", path)
    text = "\n".join(info.value.problems)
    assert f"{path}: market.interruption_multiplier:" in text
    assert f"{path}: cloud.boot:" in text
    scenario = parse_scenario('[clouds.aws]\nregions = "us-east-1"\n', path)
    with pytest.raises(ScenarioError, match=r"config\.clouds\.aws\.regions"):
        apply_config(load_config(), scenario, path)


def test_scenario_overrides_regions_and_maps_spot_traces(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    trace = tmp_path / "t.json"
    trace.write_text('{"metadata": {"gap_seconds": 60}, "data": [2, 0]}')
    scenario = parse_scenario(
        '[clouds.aws]\nregions = ["us-east-1"]\n'
        '[[spot_traces]]\nfile = "t.json"\npools = "aws/us-east-1/g6e.*/spot"\nscale = 3\n',
        path,
    )
    config = apply_config(load_config(), scenario, path)
    assert config.clouds.aws.regions == ("us-east-1",)
    spot, notes = load_spot_mapping(scenario, path, load_catalog().offerings)
    assert spot and not notes
    assert all(p.instance_type.startswith("g6e.") and p.region == "us-east-1" for p in spot)
    assert next(iter(spot.values())).capacity_at(0.0) == 6
    nomatch = parse_scenario('[[spot_traces]]\nfile = "t.json"\npools = "aws/mars-1/*"\n', path)
    with pytest.raises(ScenarioError, match=r"spot_traces\[0\]\.pools: .* matches no spot pool"):
        load_spot_mapping(nomatch, path, load_catalog().offerings)
