"""Boot time of a node per instance type and model: the parts, the fallback, and the
planner's churn cost that uses it."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import builders
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.decide.planner import build_problem
from scheduler.domain import Cloud, Demand, InstanceType, Model
from scheduler.fleet.boot import DEFAULT_BOOT_PATH, BootDataError, load_boot, node_boot_s
from scheduler.fleet.catalog import load_catalog
from scheduler.fleet.profiles import load_models, load_profiles

CATALOG = load_catalog()


def itype(cloud: str, name: str) -> InstanceType:
    return CATALOG.instance_types[(Cloud(cloud), name)]


def test_boot_is_start_plus_pull_plus_weights_over_load_rate_plus_engine() -> None:
    cfg = builders.config(models=[{"name": "llama-3.1-70b"}])
    fig = load_boot()
    p4d = itype("aws", "p4d.24xlarge")
    params_b = {m.name: m.params_b for m in load_models()}["llama-3.1-70b"]
    rate = min(400 / 8 * fig.load_share_of_network, fig.load_cap_gb_per_s)
    expected = (
        fig.instance_start_s["aws"]["p4d."]
        + fig.image_pull_s
        + params_b * fig.bytes_per_param / rate
        + fig.engine_start_s
    )
    assert node_boot_s(cfg, "llama-3.1-70b", p4d) == pytest.approx(expected, abs=0.5)


def test_a_bigger_model_and_a_slower_network_boot_longer() -> None:
    cfg = builders.config(models=[{"name": "llama-3.1-8b"}, {"name": "llama-3.1-70b"}])
    small, big = itype("aws", "g6.xlarge"), itype("aws", "g6.48xlarge")  # 10 vs 100 Gbit/s
    assert node_boot_s(cfg, "llama-3.1-70b", big) > node_boot_s(cfg, "llama-3.1-8b", big)
    assert node_boot_s(cfg, "llama-3.1-8b", small) > node_boot_s(cfg, "llama-3.1-8b", big)
    # 8-GPU hosts take longer to start than the single-GPU shapes of the same family.
    assert node_boot_s(cfg, "llama-3.1-8b", itype("aws", "p5.48xlarge")) > node_boot_s(
        cfg, "llama-3.1-8b", itype("aws", "p5.4xlarge")
    )


def test_every_catalog_type_has_figures_and_boots_within_reason() -> None:
    cfg = builders.config(models=[{"name": "llama-3.1-8b"}, {"name": "llama-3.1-70b"}])
    fig = load_boot()
    for it in CATALOG.instance_types.values():
        assert fig.load_gb_per_s(it) is not None and fig.start_s(it) is not None, it.name
        for m in ("llama-3.1-8b", "llama-3.1-70b"):
            assert 300.0 < node_boot_s(cfg, m, it) < 900.0


def test_unknown_figures_fall_back_to_the_configured_boot_time() -> None:
    cfg = builders.config(planning={"default_boot_time_s": 777.0})
    odd = InstanceType(Cloud.AWS, "x9.future", "H100", 8, 80.0, 192, 2048.0)  # no network
    assert node_boot_s(cfg, builders.MODEL, odd) == 777.0
    unknown_model = builders.config(
        models=[{"name": "my-model", "profile": "llama-3.1-8b"}, {"name": "other"}],
        planning={"default_boot_time_s": 700.0},
    )
    g6 = itype("aws", "g6.xlarge")
    assert node_boot_s(unknown_model, "other", g6) == 700.0  # size unknown
    assert node_boot_s(unknown_model, "my-model", g6) < 700.0  # its profile's size


def test_a_malformed_boot_file_names_the_key(tmp_path: Path) -> None:
    doc = json.loads(DEFAULT_BOOT_PATH.read_text())
    doc["image_pull_s"] = "slow"
    path = tmp_path / "boot.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(BootDataError, match=r"boot.json: image_pull_s: expected a finite number"):
        load_boot(path)


@pytest.mark.parametrize("per_node", [False, True])
def test_the_planners_launch_cost_uses_the_pools_boot_time(per_node: bool) -> None:
    # With churn_from_node_boot, g6.xlarge (8B only) costs 8B's boot there (under 7
    # minutes) at its price, amortised; by default the configured boot time.
    cfg = builders.config(planning={"churn_from_node_boot": per_node})
    profiles = load_profiles()
    problem, cands = build_problem(
        cfg, CATALOG, profiles, [Demand(builders.MODEL, builders.REGION, 10.0)], []
    )
    amort_h = cfg.solver.churn_amortization_h
    checked = 0
    for spec, o in zip(problem.pools, cands.offerings, strict=True):
        if o.pool.instance_type != "g6.xlarge":
            continue
        boot_h = node_boot_s(cfg, builders.MODEL, itype("aws", "g6.xlarge")) / 3600.0
        assert boot_h < 600.0 / 3600.0
        if not per_node:
            boot_h = cfg.planning.default_boot_time_s / 3600.0
        assert spec.launch_usd_per_hour == pytest.approx(o.usd_per_hour * boot_h / amort_h)
        checked += 1
    assert checked > 0


@settings(max_examples=80, deadline=None)
@given(
    small_b=st.floats(0.1, 500.0),
    extra_b=st.floats(0.0, 500.0),
    gbps=st.floats(0.5, 4000.0),
)
def test_boot_grows_with_model_size_and_never_beats_the_fixed_parts(
    small_b: float, extra_b: float, gbps: float
) -> None:
    cfg = builders.config(models=[{"name": "a"}, {"name": "b"}])
    base = load_boot()
    fig = dataclasses.replace(base, network_gbps={"aws:x.large": gbps})
    it = InstanceType(Cloud.AWS, "x.large", "L4", 1, 24.0, 4, 16.0)
    models = [
        Model("a", small_b, 1.0, 1000.0),
        Model("b", small_b + extra_b, 1.0, 1000.0),
    ]
    a = node_boot_s(cfg, "a", it, fig, models)
    b = node_boot_s(cfg, "b", it, fig, models)
    fixed = base.instance_start_s["aws"][""] + base.image_pull_s + base.engine_start_s
    assert fixed <= a <= b and math.isfinite(b)
