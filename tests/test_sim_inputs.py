"""Simulator inputs: the generic trace formats, demand mapping and scaling, scenarios."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from scheduler.config import load_config
from scheduler.domain import Market
from scheduler.fleet.catalog import load_catalog
from scheduler.fleet.profiles import load_profiles
from simulations.baselines import SpotHedge
from simulations.demand import assign_series, gpus_per_rps, load_demand
from simulations.roster import make_policy
from simulations.scenario import (
    ScenarioError,
    apply_config,
    load_spot_mapping,
    parse_scenario,
    scenario_catalog,
)
from simulations.traces import TraceFormatError, detect_format, read_minute_csv, read_requests
from simulations.world import WorldSpec, build_world


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


def test_scenario_market_sells_one_type_per_zone_at_a_share_of_on_demand(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    scenario = parse_scenario(
        '[market]\ninstance_types = ["g6e.xlarge"]\nspot_price_vs_on_demand = 0.25\n'
        'zones = { "aws/us-west-2" = ["us-west-2a", "us-west-2c"] }\n',
        path,
    )
    offerings = scenario_catalog(load_catalog(), scenario).offerings
    assert {o.pool.instance_type for o in offerings} == {"g6e.xlarge"}
    west = [o for o in offerings if o.pool.region == "us-west-2"]
    assert sorted({o.pool.failure_domain for o in west}) == ["aws:us-west-2a", "aws:us-west-2c"]
    price = {o.pool: o.usd_per_hour for o in offerings}
    for o in offerings:
        if o.pool.market is Market.SPOT:
            twin = replace(o.pool, market=Market.ON_DEMAND)
            assert o.usd_per_hour == pytest.approx(0.25 * price[twin])
    # The split zones take spot traces by their own keys.
    trace = tmp_path / "t.json"
    trace.write_text('{"metadata": {"gap_seconds": 60}, "data": [2, 0]}')
    traced = parse_scenario(
        '[market]\nzones = { "aws/us-west-2" = ["us-west-2a", "us-west-2c"] }\n'
        '[[spot_traces]]\nfile = "t.json"\npools = "aws/us-west-2a/g6e.xlarge/spot"\n',
        path,
    )
    spot, _ = load_spot_mapping(traced, path, scenario_catalog(load_catalog(), traced).offerings)
    assert [p.zone for p in spot] == ["us-west-2a"]


def test_scenario_market_zones_and_spothedge_keys_are_validated(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    with pytest.raises(ScenarioError) as info:
        parse_scenario(
            '[market]\nzones = { "us-west-2" = ["a"] }\n'
            "[spothedge]\nnum_overprovision = -1\nbase_on_demand = 1\n",
            path,
        )
    text = "\n".join(info.value.problems)
    assert f"{path}: market.zones:" in text and "cloud/region" in text
    assert f"{path}: spothedge.num_overprovision:" in text
    assert f"{path}: spothedge.base_on_demand:" in text


def test_spothedge_takes_its_parameters_from_the_scenario(tmp_path: Path) -> None:
    # The paper's configuration by default; a scenario's [spothedge] table changes it.
    for text, expected in (("", (1, 0, True)), ("[spothedge]\nnum_overprovision = 2\n"
                           "base_ondemand_fallback_replicas = 1\n"
                           "dynamic_ondemand_fallback = false\n", (2, 1, False))):  # fmt: skip
        scenario = parse_scenario(text, tmp_path / "s.toml")
        world, _ = build_world(WorldSpec(None, None, scenario=scenario))
        policy = make_policy("spothedge", world.config, world.catalog, world.profiles, world.info)
        assert isinstance(policy, SpotHedge)
        got = (
            policy.num_overprovision,
            policy.base_ondemand_fallback_replicas,
            policy.dynamic_ondemand_fallback,
        )
        assert got == expected
