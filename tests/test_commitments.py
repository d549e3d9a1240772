"""Commitments (`[[commitments]]`, docs/commitments.md): config checks, the planner using
capacity already paid for first, the simulator billing it used or not, and the sweep
that answers "which commitment should I buy"."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsched.cli import main
from scheduler.config import CommitmentKind, Config, ConfigError, parse_config
from scheduler.decide.config_check import check_config
from scheduler.decide.planner import make_plan
from scheduler.domain import Cloud, Demand, Market, Placement, Pool, UnmetReason
from scheduler.fleet.catalog import load_catalog
from scheduler.fleet.commitments import Commitment, resolve_commitments, split_covered
from scheduler.fleet.profiles import load_profiles
from simulations import commitment_sweep
from simulations.commitment_bill import bill_commitments
from simulations.engine import replay

sys.path.insert(0, str(Path(__file__).parent))
from sim_helpers import MODEL, OD_POOL, Fixed, registered, small_config, world

CATALOG = load_catalog()
PRICES = {o.pool: o.usd_per_hour for o in CATALOG.offerings}
RESERVED = CATALOG.reserved_usd_per_hour[(Cloud.AWS, "us-east-1", "g6e.xlarge")]

BASE = """
[[models]]
name = "llama-3.1-8b"
[[regions]]
name = "us-east"
location = "us-east-1"
"""


def commitment(**over: Any) -> dict[str, Any]:
    """A valid [[commitments]] entry with `over` merged in."""
    return {
        "cloud": "aws",
        "region": "us-east-1",
        "instance_type": "g6e.xlarge",
        "count": 2,
        **over,
    }


def with_commitments(config: Config, *entries: dict[str, Any]) -> Config:
    """`config` with these [[commitments]] entries."""
    raw = config.model_dump(mode="json")
    raw["commitments"] = list(entries)
    return Config.model_validate(raw)


def toml_of(entry: dict[str, Any]) -> str:
    lines = ["[[commitments]]"]
    for key, value in entry.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return BASE + "\n".join(lines) + "\n"


# --- config ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "key", "reason"),
    [
        ({"count": 0}, "commitments[0].count", "greater than or equal to 1"),
        ({"count": True}, "commitments[0].count", "whole number"),
        ({"kind": "spot"}, "commitments[0].kind", "reserved"),
        ({"cloud": "azure"}, "commitments[0].cloud", "aws"),
        ({"usd_per_hour": -1.0}, "commitments[0].usd_per_hour", "greater than or equal to 0"),
        ({"zone": "us-west-2a"}, "commitments[0]", "not in region"),
        ({"instance_typ": "g6e.xlarge"}, "commitments[0].instance_typ", "unknown key"),
    ],
)
def test_a_bad_commitment_names_file_key_and_reason(
    tmp_path: Path, over: dict[str, Any], key: str, reason: str
) -> None:
    path = tmp_path / "c.toml"
    with pytest.raises(ConfigError) as err:
        parse_config(toml_of(commitment(**over)), path)
    text = "\n".join(err.value.problems)
    assert str(path) in text and key in text and reason in text


def test_catalog_checks_name_the_commitment_that_cannot_be_placed() -> None:
    config = with_commitments(
        parse_config(BASE, Path("x.toml")),
        commitment(instance_type="g9.xlarge"),
        commitment(zone="us-east-1a", name="zonal"),
        commitment(name="fine"),
    )
    problems = check_config(config, CATALOG, load_profiles())
    assert problems == [
        "commitments[0].instance_type: unknown aws instance type 'g9.xlarge'",
        "commitments[1].zone: the catalog sells no on-demand g6e.xlarge in zone 'us-east-1a'"
        " (AWS pools are regional: leave zone unset)",
    ]


def test_validate_config_rejects_a_commitment_the_catalog_does_not_sell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml_of(commitment(region="mars-1")))
    assert main(["validate-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "commitments[0].region" in err and "mars-1" in err


def test_duplicate_commitment_names_are_refused(tmp_path: Path) -> None:
    text = toml_of(commitment()) + toml_of(commitment()).removeprefix(BASE)
    with pytest.raises(ConfigError, match=r"duplicate name 'aws/us-east-1/g6e\.xlarge'"):
        parse_config(text, tmp_path / "c.toml")


def test_default_price_is_the_reserved_price_else_on_demand() -> None:
    config = with_commitments(
        small_config(),
        commitment(),
        commitment(name="priced", usd_per_hour=0.5),
        commitment(name="gcp", cloud="gcp", region="us-central1", instance_type="g2-standard-4"),
    )
    ri, priced, gcp = resolve_commitments(config, CATALOG)
    assert ri.usd_per_hour == RESERVED < PRICES[OD_POOL]
    assert ri.pools == (OD_POOL,) and ri.kind is CommitmentKind.RESERVED
    assert priced.usd_per_hour == 0.5
    # No reserved price for GCP in the data: the on-demand price of its cheapest zone, and
    # without a zone it covers every zone of the region.
    assert len(gcp.pools) > 1 and {p.region for p in gcp.pools} == {"us-central1"}
    assert gcp.usd_per_hour == min(PRICES[p] for p in gcp.pools)


# --- planner ----------------------------------------------------------------------------


def _plan_config(**planning: Any) -> Config:
    raw = small_config().model_dump(mode="json")
    raw["planning"] = {"robustness_fraction": 0.0, **planning}
    raw["clouds"]["aws"]["markets"] = ["on-demand"]
    return Config.model_validate(raw)


def test_a_plan_uses_committed_capacity_first_and_its_objective_falls() -> None:
    base = _plan_config()
    demand = [Demand(MODEL, "us-east", 30.0)]
    profiles = load_profiles()
    without = make_plan(base, CATALOG, profiles, demand)
    # Commit to a type the free plan does not pick: the plan moves onto it.
    chosen = {pl.pool.instance_type for pl in without.placements}
    other = next(
        t for t in ("g6e.xlarge", "g6.xlarge", "g5.xlarge", "g6e.2xlarge") if t not in chosen
    )
    committed = with_commitments(base, commitment(instance_type=other, count=2))
    plan = make_plan(committed, CATALOG, profiles, demand)
    pool = Pool(Cloud.AWS, "us-east-1", "", other, Market.ON_DEMAND)
    assert sum(pl.count for pl in plan.placements if pl.pool == pool) >= 2
    (use,) = plan.commitments
    assert (use.used, use.count) == (2, 2)
    assert not plan.unmet
    # The solver counts the committed nodes at no marginal cost.
    assert plan.objective < without.objective
    # Nodes beyond the count pay the list price: a commitment of 1 is used once.
    one = make_plan(
        with_commitments(base, commitment(instance_type=other, count=1)), CATALOG, profiles, demand
    )
    assert [u.used for u in one.commitments] == [1]


def test_committed_capacity_is_shared_between_models_up_to_its_count() -> None:
    raw = _plan_config().model_dump(mode="json")
    # Two models alike: alone, each would take all 3 committed nodes.
    raw["models"] = [{"name": MODEL}, {"name": "twin", "profile": MODEL}]
    raw["commitments"] = [commitment(count=3)]
    config = Config.model_validate(raw)
    demand = [Demand(MODEL, "us-east", 20.0), Demand("twin", "us-east", 20.0)]
    plan = make_plan(config, CATALOG, load_profiles(), demand)
    (use,) = plan.commitments
    assert use.used == 3
    by_model = {pl.model: pl.count for pl in plan.placements if pl.pool == OD_POOL}
    assert set(by_model) == {MODEL, "twin"} and sum(by_model.values()) >= 3
    # The 3 free nodes are priced at 0, the rest at the list price.
    listed = sum(PRICES[pl.pool] * pl.count for pl in plan.placements)
    assert plan.usd_per_hour == pytest.approx(listed)


@settings(max_examples=12, deadline=None)
@given(count=st.integers(1, 6), rps=st.floats(0.5, 60.0), current=st.integers(0, 8))
def test_committed_nodes_are_free_up_to_the_count_and_never_make_a_plan_dearer(
    count: int, rps: float, current: int
) -> None:
    base = _plan_config()
    demand = [Demand(MODEL, "us-east", rps)]
    fleet = [Placement(MODEL, OD_POOL, current)] if current else []
    profiles = load_profiles()
    without = make_plan(base, CATALOG, profiles, demand, fleet)
    plan = make_plan(
        with_commitments(base, commitment(count=count)), CATALOG, profiles, demand, fleet
    )
    (use,) = plan.commitments
    in_pool = sum(pl.count for pl in plan.placements if pl.pool == OD_POOL)
    assert use.used == min(count, in_pool)
    assert not plan.unmet
    # Free capacity never raises the objective; beyond the count a node pays its price.
    assert plan.objective <= without.objective + 1e-6
    listed = sum(PRICES[pl.pool] * pl.count for pl in plan.placements)
    assert plan.usd_per_hour == pytest.approx(listed)


def test_a_used_up_commitment_is_not_named_as_the_limit_on_unmet_demand() -> None:
    # The budget leaves demand unmet; the commitment is used up. The one limit is the
    # budget: the committed pool's list-price twin next to it has the same capacity.
    # Two models alike: one uses the commitment, the other could but finds it used up.
    raw = _plan_config(budget_usd_per_hour=8.0).model_dump(mode="json")
    raw["models"] = [{"name": MODEL}, {"name": "twin", "profile": MODEL}]
    raw["commitments"] = [commitment(count=1)]
    config = Config.model_validate(raw)
    demand = [Demand(MODEL, "us-east", 200.0), Demand("twin", "us-east", 200.0)]
    plan = make_plan(config, CATALOG, load_profiles(), demand)
    assert [u.used for u in plan.commitments] == [1]
    assert plan.unmet and all(u.reasons == (UnmetReason.BUDGET,) for u in plan.unmet)
    assert plan.usd_per_hour <= 8.0 + 1e-6


def test_plan_json_lists_commitments_and_their_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        BASE
        + '[clouds.gcp]\nenabled = false\n[clouds.aws]\nregions = ["us-east-1"]\n'
        + toml_of(commitment(name="ri", count=2)).removeprefix(BASE)
    )
    demand = tmp_path / "d.json"
    demand.write_text(json.dumps({"demand": [{"model": MODEL, "region": "us-east", "rps": 5}]}))
    assert main(["plan", "--config", str(cfg), "--demand", str(demand), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (c,) = doc["commitments"]
    assert c["name"] == "ri" and c["count"] == 2 and c["used"] == 2
    assert c["pools"] == [OD_POOL.key]
    assert c["fee_usd_per_hour"] == pytest.approx(2 * RESERVED, abs=1e-3)
    nodes = {(n["instance_type"], n["market"]): n["count"] for n in doc["nodes"]}
    assert nodes[("g6e.xlarge", "on-demand")] >= 2
    assert main(["plan", "--config", str(cfg), "--demand", str(demand)]) == 0
    assert "commitment ri (reserved): 2 of 2 nodes used" in capsys.readouterr().out


# --- billing ----------------------------------------------------------------------------

POOL_A = Pool(Cloud.AWS, "us-east-1", "", "g6e.xlarge", Market.ON_DEMAND)


def _commitment(count: int, pools: tuple[Pool, ...] = (POOL_A,)) -> Commitment:
    return Commitment("c", CommitmentKind.RESERVED, pools, count, 1, 1.0, 3.0)


def test_bill_covers_up_to_the_count_and_bills_the_fee_used_or_not() -> None:
    # Two nodes for the first hour, none for the second: 1 committed node covers one
    # hour of one node; the fee runs both hours.
    intervals = [(POOL_A, 0.0, 3600.0), (POOL_A, 0.0, 3600.0)]
    ends = np.array([3600.0, 7200.0])
    bill = bill_commitments([_commitment(1)], intervals, {POOL_A: 3.0}, 0.0, ends)
    assert bill.fee_usd.tolist() == pytest.approx([1.0, 2.0])
    assert bill.covered_usd.tolist() == pytest.approx([3.0, 3.0])
    (use,) = bill.usage
    assert use.used_node_hours == pytest.approx(1.0)
    assert use.utilisation == pytest.approx(0.5)


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(0, 4),
    spans=st.lists(st.tuples(st.integers(-3, 12), st.integers(0, 12)), min_size=0, max_size=8),
)
def test_covered_time_is_the_integral_of_min_count_and_live(
    count: int, spans: list[tuple[int, int]]
) -> None:
    # Intervals on a grid of 10-minute slots; accounting from slot 0 to slot 12.
    intervals = [(POOL_A, a * 600.0, (a + d) * 600.0) for a, d in spans]
    live = np.zeros(12)
    for a, d in spans:
        for k in range(max(a, 0), min(a + d, 12)):
            live[k] += 1
    expected_h = float(np.minimum(live, count).sum()) / 6.0
    ends = np.arange(1, 13) * 600.0
    bill = bill_commitments([_commitment(count)], intervals, {POOL_A: 3.0}, 0.0, ends)
    assert bill.usage[0].used_node_hours == pytest.approx(expected_h)
    assert bill.covered_usd[-1] == pytest.approx(3.0 * expected_h)
    assert np.all(np.diff(bill.covered_usd) >= -1e-9)


def test_overlapping_commitments_never_cover_a_node_twice() -> None:
    covered, rest = split_covered([_commitment(2), _commitment(2)], {POOL_A: 3})
    assert covered == {(0, POOL_A): 2, (1, POOL_A): 1} and rest == {}
    covered, rest = split_covered([_commitment(1)], {POOL_A: 3})
    assert covered == {(0, POOL_A): 1} and rest == {POOL_A: 2}


async def test_an_unused_commitment_is_billed_every_hour(tmp_path: Path) -> None:
    # The fleet runs elsewhere (spot): the commitment covers nothing and still bills.
    spot = Pool(Cloud.AWS, "us-east-1", "", "g6e.xlarge", Market.SPOT)
    config = with_commitments(small_config(), commitment(count=2))
    with registered("fixed", Fixed((Placement(MODEL, spot, 1),))):
        r = await replay(world(config, [1.0] * 60), "fixed", tmp_path / "s.db")
    assert r.cost_by_market["commitment"][-1] == pytest.approx(2 * RESERVED)
    assert r.cost_by_market["on-demand"][-1] == pytest.approx(0.0)
    assert r.cost_usd == pytest.approx(2 * RESERVED + r.cost_by_market["spot"][-1])
    s = r.summary(None)
    assert s["commitment_utilisation"] == 0.0
    assert s["commitments"][0]["paid_node_hours"] == pytest.approx(2.0)


async def test_a_baseline_node_in_the_committed_pool_is_covered(tmp_path: Path) -> None:
    # A policy that knows nothing of commitments runs 3 on-demand nodes where 2 are
    # committed: it pays the fee plus one node at the list price.
    config = with_commitments(small_config(), commitment(count=2))
    with registered("fixed", Fixed((Placement(MODEL, OD_POOL, 3),))):
        r = await replay(world(config, [1.0] * 60), "fixed", tmp_path / "s.db")
    assert r.cost_by_market["commitment"][-1] == pytest.approx(2 * RESERVED)
    assert r.cost_by_market["on-demand"][-1] == pytest.approx(PRICES[OD_POOL])
    assert r.summary(None)["commitment_utilisation"] == pytest.approx(1.0)


def test_the_documented_example_uncommented_is_a_valid_commitment() -> None:
    text = (Path(__file__).parents[1] / "config.example.toml").read_text()
    first = text.index("# [[commitments]]")
    second = text.index("# [[commitments]]", first + 1)  # the savings plan
    blocks = []
    for block in (text[first:second], text[second:]):
        keys = [ln[2:] for ln in block.splitlines() if ln.startswith("# ") and " = " in ln]
        blocks.append(
            "\n".join(["[[commitments]]", *(k for k in keys if not k.startswith("zone"))])
        )
    config = parse_config(BASE + "\n".join(blocks) + "\n", Path("example.toml"))
    c, sp = config.commitments
    assert (c.label, c.count, c.kind) == ("ri-us-east-1-g6e", 2, CommitmentKind.RESERVED)
    assert (sp.label, sp.usd_per_hour_committed, sp.kind, sp.instance_family) == (
        "sp-us-east-1-g6e",
        5.0,
        CommitmentKind.SAVINGS_PLAN,
        "g6e",
    )
    assert check_config(config, CATALOG, load_profiles()) == []
    # Without [[commitments]] the example has none: today's plans are unchanged.
    assert parse_config(text, Path("example.toml")).commitments == ()


# --- which commitment to buy -------------------------------------------------------------


def test_sweep_picks_the_cheapest_count_on_a_scripted_replay(tmp_path: Path) -> None:
    # A fleet of 2 on-demand nodes for an hour: each committed node up to 2 saves the
    # on-demand price and costs the reserved one; a third is paid for and idle.
    w = world(small_config(), [1.0] * 60)
    spec = commitment_sweep.parse_spec("aws/us-east-1/g6e.xlarge:3,0,1,2", w.config, w.catalog)
    assert isinstance(spec, commitment_sweep.SweepSpec) and spec.levels == (0, 1, 2, 3)
    with registered("fixed", Fixed((Placement(MODEL, OD_POOL, 2),))):
        rows = commitment_sweep.sweep(w, spec, ["fixed"], tmp_path)
    costs = [r.cost_usd for r in rows]
    od = PRICES[OD_POOL]
    assert costs == pytest.approx([2 * od, RESERVED + od, 2 * RESERVED, 3 * RESERVED])
    assert [r.utilisation for r in rows] == pytest.approx([1.0, 1.0, 1.0, 2 / 3])
    best = commitment_sweep.chosen(rows)["fixed"]
    assert best.level == 2
    commitment_sweep.write_outputs(tmp_path, rows, spec)
    doc = json.loads((tmp_path / "commitment_sweep.json").read_text())
    assert doc["chosen"] == {"fixed": 2} and len(doc["rows"]) == 4
    assert (tmp_path / "commitment_sweep.png").stat().st_size > 0


def test_sweep_varies_a_configured_commitment_and_keeps_its_price(tmp_path: Path) -> None:
    config = with_commitments(small_config(), commitment(name="mine", usd_per_hour=0.1))
    w = world(config, [1.0] * 30)
    spec = commitment_sweep.parse_spec("aws/us-east-1/g6e.xlarge:0,1", w.config, w.catalog)
    assert isinstance(spec, commitment_sweep.SweepSpec) and spec.pool == "mine"
    with registered("fixed", Fixed((Placement(MODEL, OD_POOL, 1),))):
        rows = commitment_sweep.sweep(w, spec, ["fixed"], tmp_path)
    assert [r.commitment_usd for r in rows] == pytest.approx([0.0, 0.05])
    assert [r.on_demand_usd for r in rows] == pytest.approx([PRICES[OD_POOL] / 2, 0.0])


def test_sweep_of_a_savings_plan_amount_picks_the_cheapest_amount(tmp_path: Path) -> None:
    # Two on-demand g6e.xlarge for an hour. An amount pays for usage at the reserved rate
    # up to itself (a share of the next node at the end); beyond two nodes' rate it is
    # paid for and idle.
    w = world(small_config(), [1.0] * 60)
    two = 2 * RESERVED
    text = f"savings:aws/us-east-1/g6e:{two},0,{RESERVED},{3 * RESERVED}"
    spec = commitment_sweep.parse_spec(text, w.config, w.catalog)
    assert isinstance(spec, commitment_sweep.SweepSpec) and spec.section.is_spend
    assert spec.levels == pytest.approx((0, RESERVED, two, 3 * RESERVED))
    with registered("fixed", Fixed((Placement(MODEL, OD_POOL, 2),))):
        rows = commitment_sweep.sweep(w, spec, ["fixed"], tmp_path)
    od = PRICES[OD_POOL]
    costs = [r.cost_usd for r in rows]
    assert costs == pytest.approx([2 * od, RESERVED + od, two, 3 * RESERVED])
    assert [r.utilisation for r in rows] == pytest.approx([1.0, 1.0, 1.0, 2 / 3])
    assert commitment_sweep.chosen(rows)["fixed"].level == pytest.approx(two)
    commitment_sweep.write_outputs(tmp_path, rows, spec)
    doc = json.loads((tmp_path / "commitment_sweep.json").read_text())
    assert doc["kind"] == "savings_plan" and doc["instance_family"] == "g6e"
    assert [r["usd_per_hour_committed"] for r in doc["rows"]] == pytest.approx(spec.levels)
    assert "USD/h" in commitment_sweep.table(rows, spec)


def test_a_savings_sweep_varies_the_configs_savings_plan_of_the_same_family() -> None:
    config = with_commitments(
        small_config(),
        {"name": "sp", "cloud": "aws", "region": "us-east-1", "usd_per_hour_committed": 1.0},
    )
    spec = commitment_sweep.parse_spec("savings:aws/us-east-1/*:0,2", config, CATALOG)
    assert isinstance(spec, commitment_sweep.SweepSpec) and spec.pool == "sp"
    other = commitment_sweep.parse_spec("savings:aws/us-east-1/g6e:0,2", config, CATALOG)
    assert isinstance(other, commitment_sweep.SweepSpec) and other.pool != "sp"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("aws/us-east-1/g6e.xlarge", "expected CLOUD/REGION-OR-ZONE/TYPE:COUNTS"),
        ("aws/us-east-1:0,1", "expected CLOUD/REGION-OR-ZONE/TYPE:COUNTS"),
        ("savings:aws/us-east-1:0,1", "expected savings:CLOUD/REGION/FAMILY-OR-"),
        ("savings:aws/us-east-1/g6e:a", "amounts must be USD per hour"),
        ("savings:aws/us-east-1/g6e:-1,2", "amounts >= 0"),
        ("savings:aws/us-east-1/zz9:0,2", "unknown aws instance family 'zz9'"),
        ("savings:aws/mars-1/*:0,2", "mars-1"),
        ("aws/us-east-1/g6e.xlarge:a,b", "whole numbers"),
        ("aws/us-east-1/g6e.xlarge:-1,2", "counts >= 0"),
        ("azure/us-east-1/g6e.xlarge:0,1", "unknown cloud"),
        ("aws/mars-1/g6e.xlarge:0,1", "no on-demand g6e.xlarge in mars-1"),
    ],
)
def test_a_bad_sweep_argument_says_why(text: str, reason: str) -> None:
    with pytest.raises(commitment_sweep.SweepSpecError, match=reason):
        commitment_sweep.parse_spec(text, small_config(), CATALOG)


def test_auto_sweeps_always_include_no_commitment() -> None:
    auto = commitment_sweep.parse_spec("auto:4,2", small_config(), CATALOG)
    assert auto == commitment_sweep.AutoSweep((0, 2, 4), savings=False)
    auto = commitment_sweep.parse_spec("savings:auto:2.5,1", small_config(), CATALOG)
    assert auto == commitment_sweep.AutoSweep((0, 1, 2.5), savings=True)


def test_a_savings_auto_sweep_covers_every_family_of_the_busiest_pools_region(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["simulate", "--commitment-sweep", "savings:auto:0,1.5", "--out", str(out)]
    assert main([*args, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "auto: capsched ran the most on-demand node-hours in " in printed
    doc = json.loads((out / "commitment_sweep.json").read_text())
    assert doc["kind"] == "savings_plan" and doc["instance_family"] is None
    assert doc["pool"].endswith("/any-savings-plan")
    assert [r["usd_per_hour_committed"] for r in doc["rows"]] == [0, 1.5]


def test_cli_sweep_writes_the_curve_and_names_the_choice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["simulate", "--commitment-sweep", "auto:0,1", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "auto: capsched ran the most on-demand node-hours in " in printed
    assert "chosen: capsched buys " in printed
    doc = json.loads((out / "commitment_sweep.json").read_text())
    assert [r["count"] for r in doc["rows"]] == [0, 1]
    assert (out / "commitment_sweep.png").exists()
    bad = ["simulate", "--commitment-sweep", "aws/x/y:1", "--out", str(out), "--no-progress"]
    assert main(bad) == 2
    assert "no on-demand y in x" in capsys.readouterr().err


def test_simulate_refuses_a_commitment_outside_the_allowed_pools(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The example config allows five AWS regions; eu-north-1 sells g6e.xlarge but is not one.
    example = (Path(__file__).parents[1] / "config.example.toml").read_text()
    cfg = tmp_path / "c.toml"
    cfg.write_text(example + toml_of(commitment(region="eu-north-1")).removeprefix(BASE))
    args = ["simulate", "--config", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]
    assert main([*args, "--policy", "static-peak"]) == 2
    err = capsys.readouterr().err
    assert "commitments[0].region" in err and "eu-north-1" in err
    assert "the config's [clouds] allow" in err
    # validate-config refuses it too: it would be paid for and never used.
    assert main(["validate-config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "commitments[0].region: the config's [clouds] allow no on-demand g6e.xlarge" in err
