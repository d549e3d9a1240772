"""Savings plans (issue 22): a `[[commitments]]` entry with `usd_per_hour_committed`, an
amount of USD per hour that pays for matching on-demand usage (its region, its instance
family) at its rates up to that amount, billed whether used or not (docs/commitments.md).
Config checks, the coverage rule, the planner drawing on it at no marginal cost, and the
simulator's bill."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from capsched.cli import main
from scheduler.config import (
    DEFAULT_CONFIG_PATH,
    CommitmentKind,
    Config,
    ConfigError,
    parse_config,
)
from scheduler.decide.config_check import check_config
from scheduler.decide.planner import make_plan
from scheduler.domain import Cloud, Demand, Market, Placement, Pool
from scheduler.fleet.catalog import load_catalog
from scheduler.fleet.commitments import (
    SpendCommitment,
    family_of,
    resolve_spend_commitments,
    split_spend,
)
from scheduler.fleet.profiles import load_profiles
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


def savings_plan(**over: Any) -> dict[str, Any]:
    """A valid savings plan entry with `over` merged in."""
    return {
        "cloud": "aws",
        "region": "us-east-1",
        "instance_family": "g6e",
        "usd_per_hour_committed": 2.5,
        **over,
    }


def toml_of(*entries: dict[str, Any]) -> str:
    lines = []
    for entry in entries:
        lines.append("[[commitments]]")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in entry.items())
    return BASE + "\n".join(lines) + "\n"


def with_commitments(config: Config, *entries: dict[str, Any]) -> Config:
    raw = config.model_dump(mode="json")
    raw["commitments"] = list(entries)
    return Config.model_validate(raw)


# --- config ---------------------------------------------------------------------------


def test_an_amount_alone_is_a_savings_plan() -> None:
    (c,) = parse_config(toml_of(savings_plan()), Path("c.toml")).commitments
    assert c.kind is CommitmentKind.SAVINGS_PLAN and c.usd_per_hour_committed == 2.5
    assert c.label == "aws/us-east-1/g6e-savings-plan" and c.count is None


@pytest.mark.parametrize(
    ("entry", "key", "reason"),
    [
        (
            savings_plan(usd_per_hour_committed=0),
            "commitments[0].usd_per_hour_committed",
            "greater than 0",
        ),
        (
            savings_plan(usd_per_hour_committed="5"),
            "commitments[0].usd_per_hour_committed",
            "number",
        ),
        (savings_plan(count=2), "commitments[0]", "count is not a key of a savings plan"),
        (
            savings_plan(instance_type="g6e.xlarge"),
            "commitments[0]",
            "instance_type is not a key of a savings plan",
        ),
        (
            {
                k: v
                for k, v in savings_plan(kind="savings_plan").items()
                if k != "usd_per_hour_committed"
            },
            "commitments[0]",
            'kind "savings_plan" needs usd_per_hour_committed',
        ),
        (
            savings_plan(kind="reserved"),
            "commitments[0]",
            'usd_per_hour_committed needs kind = "savings_plan"',
        ),
        (
            {"cloud": "aws", "region": "us-east-1", "instance_type": "g6e.xlarge"},
            "commitments[0]",
            "count missing",
        ),
    ],
)
def test_a_bad_savings_plan_names_file_key_and_reason(
    tmp_path: Path, entry: dict[str, Any], key: str, reason: str
) -> None:
    path = tmp_path / "c.toml"
    with pytest.raises(ConfigError) as err:
        parse_config(toml_of(entry), path)
    text = "\n".join(err.value.problems)
    assert f"{path}: {key}" in text and reason in text, text


def test_validate_config_names_a_family_or_region_the_catalog_does_not_sell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml_of(savings_plan(instance_family="zz9")))
    assert main(["validate-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: commitments[0].instance_family: unknown aws instance family 'zz9'" in err
    config = with_commitments(parse_config(BASE, Path("x.toml")), savings_plan(region="mars-1"))
    assert check_config(config, CATALOG, load_profiles()) == [
        "commitments[0].region: the catalog sells no on-demand g6e instance in region 'mars-1'"
    ]


def test_a_savings_plan_covers_its_family_in_its_region_best_discount_first() -> None:
    config = with_commitments(
        small_config(), savings_plan(), savings_plan(name="any", instance_family=None)
    )
    family, anything = resolve_spend_commitments(config, CATALOG)
    assert family.index == 0 and anything.index == 1
    assert {family_of(p.cloud, p.instance_type) for p in family.pools} == {"g6e"}
    assert all(p.market is Market.ON_DEMAND and p.region == "us-east-1" for p in anything.pools)
    assert set(family.pools) < set(anything.pools)
    rate = dict(zip(family.pools, family.rate_usd_per_hour, strict=True))
    assert rate[OD_POOL] == RESERVED  # the catalog's reserved price is the plan's rate
    discounts = [
        1 - r / od
        for r, od in zip(family.rate_usd_per_hour, family.on_demand_usd_per_hour, strict=True)
    ]
    assert discounts == sorted(discounts, reverse=True)


# --- the coverage rule ------------------------------------------------------------------------

A = Pool(Cloud.AWS, "us-east-1", "", "g6e.xlarge", Market.ON_DEMAND)
B = Pool(Cloud.AWS, "us-east-1", "", "g6e.2xlarge", Market.ON_DEMAND)


def _plan(amount: float) -> SpendCommitment:
    # A: rate 1.0 of 2.0 on-demand (50% off, first); B: rate 3.0 of 4.0 (25% off).
    return SpendCommitment("sp", 0, (A, B), (1.0, 3.0), (2.0, 4.0), amount)


def test_the_amount_covers_whole_nodes_then_a_share_of_the_next() -> None:
    covered, left = split_spend([_plan(2.5)], {A: 3, B: 1})
    assert covered == {(0, A): 2.5} and left == pytest.approx({A: 0.5, B: 1.0})
    covered, left = split_spend([_plan(5.0)], {A: 2, B: 2})
    assert covered == pytest.approx({(0, A): 2.0, (0, B): 1.0}) and left == pytest.approx({B: 1.0})
    # Two plans never cover one node twice.
    covered, left = split_spend([_plan(1.0), _plan(1.0)], {A: 1.5})
    assert covered == pytest.approx({(0, A): 1.0, (1, A): 0.5}) and left == {}


def test_the_bill_charges_the_amount_and_on_demand_beyond_it() -> None:
    # Three A nodes for the first hour, none for the second, under 2.5 USD/h: 2.5 nodes
    # covered for an hour (5.00 USD of on-demand price not billed), the half node beyond
    # pays on-demand; the amount bills both hours.
    intervals = [(A, 0.0, 3600.0)] * 3
    bill = bill_commitments(
        [], intervals, {A: 2.0, B: 4.0}, 0.0, np.array([3600.0, 7200.0]), [_plan(2.5)]
    )
    assert bill.fee_usd.tolist() == pytest.approx([2.5, 5.0])
    assert bill.covered_usd.tolist() == pytest.approx([5.0, 5.0])
    (use,) = bill.usage
    assert use.used_node_hours == pytest.approx(2.5) and use.used_fee_usd == pytest.approx(2.5)
    assert use.utilisation == pytest.approx(0.5)  # half the amount paid went unused


# --- the planner ------------------------------------------------------------------------------


def _plan_config(**planning: Any) -> Config:
    raw = small_config().model_dump(mode="json")
    raw["planning"] = {"robustness_fraction": 0.0, **planning}
    raw["clouds"]["aws"]["markets"] = ["on-demand"]
    return Config.model_validate(raw)


def test_the_planner_draws_on_the_amount_at_no_marginal_cost_and_never_past_it() -> None:
    base = _plan_config()
    demand = [Demand(MODEL, "us-east", 30.0)]
    profiles = load_profiles()
    without = make_plan(base, CATALOG, profiles, demand)
    config = with_commitments(base, savings_plan(usd_per_hour_committed=3 * RESERVED + 0.5))
    plan = make_plan(config, CATALOG, profiles, demand)
    (use,) = plan.savings_plans
    assert use.usd_per_hour_used <= use.usd_per_hour_committed + 1e-9
    assert use.nodes >= 3 and use.usd_per_hour_used > 2 * RESERVED  # the amount is used
    assert plan.objective < without.objective  # usage within it costs nothing at the margin
    assert not plan.unmet and plan.commitments == ()
    # A node the amount pays for only in part is planned at its on-demand price.
    small = make_plan(
        with_commitments(base, savings_plan(usd_per_hour_committed=0.5 * RESERVED)),
        CATALOG,
        profiles,
        demand,
    )
    assert small.savings_plans[0].nodes == 0


def test_plan_json_and_text_show_the_savings_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    block = toml_of(savings_plan(name="sp", usd_per_hour_committed=2.5)).removeprefix(BASE)
    path.write_text(DEFAULT_CONFIG_PATH.read_text() + "\n" + block)
    assert main(["plan", "--config", str(path), "--json"]) == 0
    (sp,) = json.loads(capsys.readouterr().out)["savings_plans"]
    assert sp["name"] == "sp" and sp["usd_per_hour_committed"] == 2.5
    assert 0 < sp["usd_per_hour_used"] <= 2.5 and sp["nodes"] >= 1
    assert main(["plan", "--config", str(path)]) == 0
    assert "savings plan sp: " in capsys.readouterr().out


# --- a replay ---------------------------------------------------------------------------------


async def test_a_replay_bills_the_amount_used_or_not(tmp_path: Path) -> None:
    # A fixed fleet of 3 on-demand g6e.xlarge for an hour under a plan paying for 2 of
    # them: the amount, plus one node at the list price.
    amount = 2 * RESERVED
    config = with_commitments(small_config(), savings_plan(usd_per_hour_committed=amount))
    with registered("fixed", Fixed((Placement(MODEL, OD_POOL, 3),))):
        r = await replay(world(config, [1.0] * 60), "fixed", tmp_path / "s.db")
    assert r.cost_by_market["commitment"][-1] == pytest.approx(amount)
    assert r.cost_by_market["on-demand"][-1] == pytest.approx(PRICES[OD_POOL])
    s = r.summary(None)
    assert s["commitment_utilisation"] == pytest.approx(1.0)
    assert s["commitments"][0]["usd_per_hour_committed"] == pytest.approx(amount)


# --- the solver's spend cap -------------------------------------------------------------------


@pytest.mark.parametrize(("amount", "free"), [(2.5, 2), (0.9, 0), (10.0, 5)])
def test_the_solver_draws_whole_nodes_within_the_amount_and_pays_for_the_rest(
    amount: float, free: int
) -> None:
    from solver import DemandSpec, PoolSpec, Problem, SpendCap, solve

    # Two ways to the same node: a copy drawing 1 USD/h from the amount at price 0, and
    # the pool at 2 USD/h. 5 rps at 1 rps a node.
    pools = (PoolSpec("copy", 0, 0, False, 0.0), PoolSpec("od", 0, 0, False, 2.0))
    problem = Problem(
        models=("m",),
        pools=pools,
        capacity_rps=np.ones((1, 2)),
        demands=(DemandSpec(0, "r", 5.0, (0,)),),
        current=np.zeros((1, 2), dtype=np.int64),
        spend_caps=(SpendCap("sp", (0,), (1.0,), amount),),
    )
    s = solve(problem, time_limit_s=5, seed=0)
    assert s.nodes.tolist() == [[free, 5 - free]]
    assert s.usd_per_hour == pytest.approx(2.0 * (5 - free))


def test_one_models_savings_plan_leaves_the_other_models_plan_alone() -> None:
    from solver import DemandSpec, PoolSpec, Problem, SpendCap, solve

    # Two copies drawing 1 USD/h each from a 1 USD/h amount (one whole node in all) that
    # only m0 can use; m1 runs elsewhere and barely moved, so it is kept without a search.
    # m0's own search used to plan both copies (each within its own room), the union broke
    # the amount, and the joint search of both models ran: m1 was searched again.
    pools = (
        PoolSpec("copy-a", 0, 0, False, 0.0, max_nodes=1),
        PoolSpec("copy-b", 0, 0, False, 0.0, max_nodes=1),
        PoolSpec("od", 0, 0, False, 2.0),
        PoolSpec("other", 0, 0, False, 1.0),
    )
    problem = Problem(
        models=("m0", "m1"),
        pools=pools,
        capacity_rps=np.array([[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]),
        demands=(DemandSpec(0, "r", 2.0, (0,)), DemandSpec(1, "r", 1.0, (0,))),
        current=np.array([[0, 0, 0, 0], [0, 0, 0, 1]], dtype=np.int64),
        spend_caps=(SpendCap("sp", (0, 1), (1.0, 1.0), 1.0),),
    )
    s = solve(problem, time_limit_s=5, seed=0, keep_models=(1,))
    assert s.kept_models == (1,)
    assert s.nodes[0, :2].sum() == 1 and s.nodes[0, 2] == 1 and s.nodes[1].tolist() == [0, 0, 0, 1]
