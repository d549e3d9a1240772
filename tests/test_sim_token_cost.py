"""Cost per million tokens per model and per GPU kind of a replay (simulations.token_cost):
the parts add up to the policy's cost and tokens, a policy on one GPU kind reports that
kind only, nodes that serve nothing raise the cost per token, commitments are in it, and
`capsched simulate` prints and writes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sim_helpers import MODEL, OD_POOL, Fixed, registered, small_config, world

from capsched.cli import main
from scheduler.config import Config
from scheduler.domain import Cloud, Market, Placement, Pool
from simulations.engine import RunResult, World, replay
from simulations.token_cost import UNUSED_COMMITMENT

L4_POOL = Pool(Cloud.AWS, "us-east-1", "", "g6.xlarge", Market.ON_DEMAND)  # OD_POOL is L40S
MINUTES = 60


def small_world(config: Config | None = None, rps: float = 0.5) -> World:
    return world(config or small_config(), [rps] * MINUTES)


async def run(tmp_path: Path, w: World, *placements: Placement, name: str = "r") -> RunResult:
    with registered("fixed", Fixed(tuple(placements))):
        return await replay(w, "fixed", tmp_path / f"{name}.db")


def assert_parts_add_up(summary: dict[str, Any], result: RunResult) -> None:
    for key in ("usd_per_million_tokens_by_model", "usd_per_million_tokens_by_gpu_kind"):
        parts = summary[key].values()
        assert sum(p["usd"] for p in parts) == pytest.approx(summary["cost_usd"], abs=1e-3), key
        assert sum(p["million_tokens"] for p in parts) == pytest.approx(
            result.served_tokens / 1e6, rel=1e-6
        ), key


async def test_kinds_and_models_add_up_to_the_policy_and_split_by_capacity(
    tmp_path: Path,
) -> None:
    w = small_world(rps=1.0)
    l4 = await run(tmp_path, w, Placement(MODEL, L4_POOL, 1), name="l4")
    l40s = await run(tmp_path, w, Placement(MODEL, OD_POOL, 1), name="l40s")
    both = await run(tmp_path, w, Placement(MODEL, L4_POOL, 1), Placement(MODEL, OD_POOL, 1))
    summary = both.summary(None)
    assert summary["unserved_fraction"] == 0.0
    assert_parts_add_up(summary, both)
    kinds = summary["usd_per_million_tokens_by_gpu_kind"]
    assert set(kinds) == {"L4", "L40S"}
    assert set(summary["usd_per_million_tokens_by_model"]) == {MODEL}
    # Served tokens split over the kinds as their ready capacity (each node alone).
    cap_l4, cap_l40s = float(l4.capacity_rps.mean()), float(l40s.capacity_rps.mean())
    assert cap_l4 > 0 and cap_l40s > 0
    share = kinds["L4"]["million_tokens"] / (
        kinds["L4"]["million_tokens"] + kinds["L40S"]["million_tokens"]
    )
    assert share == pytest.approx(cap_l4 / (cap_l4 + cap_l40s), rel=1e-6)
    # Each kind bills what its node alone bills.
    assert kinds["L4"]["usd"] == pytest.approx(l4.cost_usd, rel=1e-6)
    assert kinds["L40S"]["usd"] == pytest.approx(l40s.cost_usd, rel=1e-6)
    for entry in kinds.values():
        assert entry["usd_per_million_tokens"] == pytest.approx(
            entry["usd"] / entry["million_tokens"], rel=1e-3
        )


async def test_a_policy_on_one_gpu_kind_reports_that_kind_only(tmp_path: Path) -> None:
    result = await run(tmp_path, small_world(), Placement(MODEL, OD_POOL, 2))
    summary = result.summary(None)
    (kind,) = summary["usd_per_million_tokens_by_gpu_kind"]
    assert kind == "L40S"
    whole = summary["usd_per_million_tokens_by_gpu_kind"]["L40S"]
    assert whole["usd_per_million_tokens"] == pytest.approx(
        summary["usd_per_million_tokens"], rel=1e-3
    )
    assert summary["usd_per_million_tokens_by_model"][MODEL] == whole


async def test_nodes_that_serve_nothing_raise_the_cost_per_token(tmp_path: Path) -> None:
    w = small_world(rps=0.2)
    one = (await run(tmp_path, w, Placement(MODEL, OD_POOL, 1), name="one")).summary(None)
    four = (await run(tmp_path, w, Placement(MODEL, OD_POOL, 4), name="four")).summary(None)
    assert one["unserved_fraction"] == four["unserved_fraction"] == 0.0
    a = one["usd_per_million_tokens_by_gpu_kind"]["L40S"]
    b = four["usd_per_million_tokens_by_gpu_kind"]["L40S"]
    assert b["million_tokens"] == pytest.approx(a["million_tokens"], rel=1e-9)
    assert b["usd"] == pytest.approx(4 * a["usd"], rel=1e-6)
    assert b["usd_per_million_tokens"] == pytest.approx(4 * a["usd_per_million_tokens"], rel=1e-3)


async def test_an_idle_gpu_kind_bills_and_has_no_cost_per_token(tmp_path: Path) -> None:
    # Nothing to serve for the second model: its L4 nodes bill and serve no token.
    config = Config.model_validate(
        {
            **small_config().model_dump(mode="json"),
            "models": [
                {"name": MODEL, "min_replicas": 1},
                {"name": "idle-8b", "profile": MODEL, "min_replicas": 1},
            ],
        }
    )
    result = await run(
        tmp_path,
        small_world(config),
        Placement(MODEL, OD_POOL, 1),
        Placement("idle-8b", L4_POOL, 1),
    )
    summary = result.summary(None)
    assert_parts_add_up(summary, result)
    idle = summary["usd_per_million_tokens_by_model"]["idle-8b"]
    assert idle["usd"] > 0 and idle["million_tokens"] == 0.0
    assert idle["usd_per_million_tokens"] is None
    assert summary["usd_per_million_tokens_by_gpu_kind"]["L4"]["usd_per_million_tokens"] is None


def with_commitment(instance_type: str) -> Config:
    raw = small_config().model_dump(mode="json")
    raw["commitments"] = [
        {"cloud": "aws", "region": "us-east-1", "instance_type": instance_type, "count": 1}
    ]
    return Config.model_validate(raw)


async def test_commitments_are_in_the_cost_of_the_nodes_they_cover(tmp_path: Path) -> None:
    used = await run(
        tmp_path, small_world(with_commitment("g6e.xlarge")), Placement(MODEL, OD_POOL, 1)
    )
    summary = used.summary(None)
    assert summary["commitment_usd"] > 0
    assert_parts_add_up(summary, used)
    assert set(summary["usd_per_million_tokens_by_gpu_kind"]) == {"L40S"}
    # A commitment where no node ran is billed under its own name, on its GPU kind.
    unused = await run(
        tmp_path,
        small_world(with_commitment("g6e.xlarge")),
        Placement(MODEL, L4_POOL, 1),
        name="unused",
    )
    summary = unused.summary(None)
    assert_parts_add_up(summary, unused)
    by_model = summary["usd_per_million_tokens_by_model"]
    assert by_model[UNUSED_COMMITMENT]["usd"] == pytest.approx(summary["commitment_usd"])
    assert by_model[UNUSED_COMMITMENT]["million_tokens"] == 0.0
    assert summary["usd_per_million_tokens_by_gpu_kind"]["L40S"]["usd_per_million_tokens"] is None


def test_simulate_prints_and_writes_the_cost_per_token_by_kind_and_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(
        "minute,requests,model,region\n"
        + "".join(f"{m},{300 + 20 * m},{MODEL},us-east\n" for m in range(15))
    )
    scenario = tmp_path / "s.toml"
    scenario.write_text('name = "test"\n[cloud]\nboot_time_s = 120\n')
    out = tmp_path / "out"
    args = ["simulate", "--trace", str(trace), "--scenario", str(scenario)]
    assert main([*args, "--policy", "reactive", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    policies = json.loads((out / "summary.json").read_text())["policies"]
    assert set(policies) == {"reactive", "static-peak"}
    for entry in policies.values():
        kinds = entry["usd_per_million_tokens_by_gpu_kind"]
        assert kinds and sum(k["usd"] for k in kinds.values()) == pytest.approx(
            entry["cost_usd"], abs=1e-3
        )
    lines = printed.splitlines()
    kind_header = next(line for line in lines if line.startswith("USD/Mtok by GPU kind"))
    model_header = next(line for line in lines if line.startswith("USD/Mtok by model"))
    models = sorted({m for e in policies.values() for m in e["usd_per_million_tokens_by_model"]})
    assert MODEL in models and model_header.split()[3:] == models
    kinds = sorted({k for e in policies.values() for k in e["usd_per_million_tokens_by_gpu_kind"]})
    assert kind_header.split()[4:] == kinds
    at = lines.index(kind_header)
    reactive = next(line for line in lines[at:] if line.startswith("reactive"))
    expected = policies["reactive"]["usd_per_million_tokens_by_gpu_kind"]
    for kind, cell in zip(kinds, reactive.split()[1:], strict=True):
        value = expected.get(kind, {}).get("usd_per_million_tokens")
        assert cell == ("-" if kind not in expected else f"{value:.3f}")
