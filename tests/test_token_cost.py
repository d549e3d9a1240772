"""The attribution of a replay's cost and served tokens to models and GPU kinds
(simulations.token_cost), and the table `capsched simulate` prints from it."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.domain import Cloud, Market, Pool
from simulations.report import breakdown_table, breakdown_tables
from simulations.token_cost import (
    SEVERAL_KINDS,
    UNKNOWN_KIND,
    UNUSED_COMMITMENT,
    CommitmentCharge,
    NodeGroup,
    TokenCost,
    attribute_tokens,
    attribute_usd,
    token_costs,
)

L4_OD = Pool(Cloud.AWS, "us-east-1", "", "g6.xlarge", Market.ON_DEMAND)
L4_SPOT = Pool(Cloud.AWS, "us-east-1", "", "g6.xlarge", Market.SPOT)
L40S_OD = Pool(Cloud.AWS, "us-east-1", "", "g6e.xlarge", Market.ON_DEMAND)
KIND = {"g6.xlarge": "L4", "g6e.xlarge": "L40S"}


def kind_of(pool: Pool) -> str:
    return KIND[pool.instance_type]


def test_served_tokens_split_over_kinds_by_ready_capacity() -> None:
    served = np.array([[1.0, 2.0, 0.5], [0.0, 1.0, 0.0]])  # (models, steps) rps
    tokens = np.array([[100.0, 100.0, 200.0], [50.0, 50.0, 50.0]])
    capacity = {
        "L4": np.array([[1.0, 0.0, 1.0], [0.0, 2.0, 0.0]]),
        "L40S": np.array([[3.0, 4.0, 1.0], [0.0, 0.0, 0.0]]),
    }
    got = attribute_tokens(("a", "b"), served, tokens, capacity, 60.0)
    assert got[NodeGroup("a", "L4")] == pytest.approx(60 * (1 * 100 * 0.25 + 0.5 * 200 * 0.5))
    assert got[NodeGroup("a", "L40S")] == pytest.approx(
        60 * (1 * 100 * 0.75 + 2 * 100 + 0.5 * 200 * 0.5)
    )
    assert got[NodeGroup("b", "L4")] == pytest.approx(60 * 50)
    assert NodeGroup("b", "L40S") not in got  # no capacity there: no group
    assert sum(got.values()) == pytest.approx(float((served * tokens).sum()) * 60)


def test_served_tokens_without_ready_capacity_are_kept_apart() -> None:
    got = attribute_tokens(("a",), np.array([[1.0]]), np.array([[10.0]]), {}, 60.0)
    assert got == {NodeGroup("a", UNKNOWN_KIND): pytest.approx(600.0)}


def test_usd_is_billed_over_the_trace_per_model_and_kind() -> None:
    end = {("a", L4_OD): 5.0, ("a", L4_SPOT): 2.0, ("a", L40S_OD): 4.0, ("b", L4_OD): 1.0}
    start = {("a", L4_OD): 1.0, ("a", L40S_OD): 4.0}  # already billed at the trace start
    got = attribute_usd(end, start, kind_of)
    assert got == {
        NodeGroup("a", "L4"): pytest.approx(6.0),
        NodeGroup("a", "L40S"): 0.0,
        NodeGroup("b", "L4"): pytest.approx(1.0),
    }


def test_a_commitment_is_split_by_the_on_demand_usd_in_its_pools() -> None:
    end = {("a", L4_OD): 3.0, ("b", L4_OD): 1.0, ("b", L4_SPOT): 10.0, ("a", L40S_OD): 2.0}
    charge = CommitmentCharge(frozenset({L4_OD}), -2.0)  # covered more than its fee
    got = attribute_usd(end, {}, kind_of, [charge])
    assert got[NodeGroup("a", "L4")] == pytest.approx(3.0 - 1.5)
    assert got[NodeGroup("b", "L4")] == pytest.approx(11.0 - 0.5)  # spot is not covered
    assert got[NodeGroup("a", "L40S")] == pytest.approx(2.0)
    assert sum(got.values()) == pytest.approx(sum(end.values()) - 2.0)


def test_a_commitment_where_no_node_ran_is_its_own_group() -> None:
    one = CommitmentCharge(frozenset({L40S_OD}), 7.0)
    several = CommitmentCharge(frozenset({L40S_OD, L4_OD}), 3.0)
    got = attribute_usd({("a", L4_SPOT): 1.0}, {}, kind_of, [one, several])
    assert got[NodeGroup(UNUSED_COMMITMENT, "L40S")] == pytest.approx(7.0)
    assert got[NodeGroup(UNUSED_COMMITMENT, SEVERAL_KINDS)] == pytest.approx(3.0)


def test_groups_sum_per_model_and_per_kind() -> None:
    usd = {NodeGroup("a", "L4"): 2.0, NodeGroup("b", "L4"): 1.0, NodeGroup("a", "L40S"): 3.0}
    tokens = {NodeGroup("a", "L4"): 1e6, NodeGroup("b", "L4"): 3e6}
    costs = token_costs(TokenCost(6.0, 4e6), usd, tokens)
    assert costs.by_model == {"a": TokenCost(5.0, 1e6), "b": TokenCost(1.0, 3e6)}
    assert costs.by_gpu_kind == {"L4": TokenCost(3.0, 4e6), "L40S": TokenCost(3.0, 0.0)}
    assert costs.by_gpu_kind["L4"].usd_per_million_tokens == pytest.approx(0.75)
    assert costs.by_gpu_kind["L40S"].usd_per_million_tokens is None  # billed, served nothing
    assert costs.total.as_json() == {
        "usd": 6.0,
        "million_tokens": 4.0,
        "usd_per_million_tokens": 1.5,
    }


def entry(usd: float, mtok: float) -> dict[str, float | None]:
    return TokenCost(usd, mtok * 1e6).as_json()


def test_breakdown_table_marks_kinds_a_policy_did_not_run_or_left_idle() -> None:
    policies = {
        "capsched": {"usd_per_million_tokens_by_gpu_kind": {"L4": entry(1.0, 4.0)}},
        "static-peak": {
            "usd_per_million_tokens_by_gpu_kind": {"L4": entry(3.0, 2.0), "L40S": entry(2.0, 0)}
        },
    }
    lines = breakdown_table(policies, "usd_per_million_tokens_by_gpu_kind").splitlines()
    assert lines[0].split() == ["USD/Mtok", "by", "GPU", "kind", "L4", "L40S"]
    assert lines[2].split() == ["capsched", "0.250", "-"]
    assert lines[3].split() == ["static-peak", "1.500", "idle"]
    # Without per-model figures (an older summary) only the GPU kinds are printed.
    assert breakdown_tables(policies) == "\n".join(lines)
    assert breakdown_tables({"capsched": {}}) == ""
