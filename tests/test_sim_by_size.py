"""Placement by size in the replay (`[planning] place_by_size`, docs/profiles.md
"Placement by size"): each prompt-length bucket of a minute is served on the nodes the
plan routes it to, at its own size; off, the replay is as before."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from scheduler.config import Config
from scheduler.domain import Cloud, Market, Placement, Pool, RequestSize, SizeRoute
from scheduler.fleet.catalog import load_catalog
from scheduler.fleet.profiles import load_profiles
from scheduler.forecast.buckets import PROMPT_EDGES
from simulations.bucket_steps import BucketSteps
from simulations.demand import load_demand
from simulations.engine import RunResult, World, replay
from simulations.traces import read_series
from tests.sim_helpers import MODEL, OD_POOL, Fixed, registered, small_config, world

H100_POOL = Pool(Cloud.AWS, "us-east-1", "", "p5.48xlarge", Market.ON_DEMAND)
SHORT, LONG = (500.0, 200.0), (8000.0, 200.0)  # (prompt, output) tokens of the two classes
MINUTES = 20


def by_size_config(on: bool, **models: object) -> Config:
    base = small_config()
    raw = base.model_dump(mode="json")
    raw["planning"]["place_by_size"] = on
    raw["models"] = [{**m, **models} for m in raw["models"]]
    return Config.model_validate(raw)


def two_classes(config: Config, rps: float, long_share: float = 0.5) -> World:
    """`rps` every minute, `long_share` of it 8,000-token prompts, the rest 500-token ones."""
    w = world(config, [rps] * MINUTES)
    n_keys = len(w.info.keys)
    shares = np.full((len(PROMPT_EDGES) + 1, n_keys, MINUTES), np.nan)
    tokens = np.full((2, len(PROMPT_EDGES) + 1, n_keys, MINUTES), np.nan)
    shares[:, 0] = 0.0
    shares[0, 0], shares[2, 0] = 1 - long_share, long_share
    for k in range(2):
        tokens[k, 0, 0], tokens[k, 2, 0] = SHORT[k], LONG[k]
    mean = np.full((2, n_keys, MINUTES), np.nan)
    for k in range(2):
        mean[k, 0] = (1 - long_share) * SHORT[k] + long_share * LONG[k]
    info = replace(w.info, tokens=mean, buckets=BucketSteps(PROMPT_EDGES, shares, tokens))
    return replace(w, info=info)


def served_share(result: RunResult) -> float:
    return float(result.served_rps.sum() / result.demand_rps.sum())


def short_route(rps: float) -> tuple[SizeRoute, ...]:
    return (SizeRoute(0.0, 1024.0, rps),)


async def test_long_prompts_are_served_on_the_nodes_routed_to_them(tmp_path: Path) -> None:
    w = two_classes(by_size_config(True), 0.6)
    routed = (
        Placement(MODEL, OD_POOL, 2, short_route(0.3)),
        Placement(MODEL, H100_POOL, 1, (SizeRoute(4096.0, math.inf, 0.3),)),
    )
    with registered("fixed", Fixed(routed)):
        both = await replay(w, "fixed", tmp_path / "a.db")
    assert served_share(both) == pytest.approx(1.0)
    assert both.per_model()[MODEL]["slo_attainment"] == pytest.approx(1.0, abs=1e-3)


async def test_a_bucket_routed_nowhere_is_unserved(tmp_path: Path) -> None:
    w = two_classes(by_size_config(True), 0.6)
    # The same L40S nodes, once routed only the short prompts, once routed nothing (a
    # node no plan routed a bucket to serves any): only the routing differs.
    with registered("fixed", Fixed((Placement(MODEL, OD_POOL, 2, short_route(0.3)),))):
        short_only = await replay(w, "fixed", tmp_path / "a.db")
    with registered("fixed", Fixed((Placement(MODEL, OD_POOL, 2),))):
        any_bucket = await replay(w, "fixed", tmp_path / "b.db")
    assert served_share(short_only) == pytest.approx(0.5)
    assert served_share(any_bucket) == pytest.approx(1.0)
    assert short_only.cost_usd == pytest.approx(any_bucket.cost_usd)


async def test_each_bucket_takes_node_time_at_its_own_size(tmp_path: Path) -> None:
    # Two L40S nodes serving both classes: as the long share grows the same nodes
    # serve fewer requests (8,000-token prompts take far longer), down to less than all.
    config = by_size_config(True)
    shares = []
    with registered("fixed", Fixed((Placement(MODEL, OD_POOL, 2),))):
        for i, long_share in enumerate((0.0, 0.5, 1.0)):
            w = two_classes(config, 3.0, long_share)
            shares.append(served_share(await replay(w, "fixed", tmp_path / f"{i}.db")))
    assert shares[0] == pytest.approx(1.0)
    assert shares[0] > shares[1] > shares[2]


async def test_capsched_by_size_routes_long_prompts_where_they_fit(tmp_path: Path) -> None:
    # 2 s to the first token + 99 ms per output token: 8,000-token prompts fit the
    # first-token budget only at small batches (docs/profiles.md "Latency SLOs"); capsched
    # routes them to nodes that serve them, all of them. A wait for a slot delays the first
    # token; the planner counts each node at the load whose waits fit the budget left
    # (`queue_utilization`), so they are within the SLO too.
    config = by_size_config(True, latency_slo_ms=None, ttft_slo_ms=2000, tpot_slo_ms=99.1379)
    result = await replay(two_classes(config, 2.0, 0.2), "capsched", tmp_path / "a.db")
    assert served_share(result) == pytest.approx(1.0, abs=1e-3)
    assert result.per_model()[MODEL]["slo_attainment"] >= 0.99


async def test_the_oracle_sizes_for_long_prompts_under_a_per_token_slo(tmp_path: Path) -> None:
    # Every request an 8,000-token prompt, 2 s to the first token: a node fits such a
    # prompt only at a small batch, so it carries far fewer of them than the token cost
    # model alone says. The oracle counts each pool's nodes at the batch the size leaves
    # (the planner's rate at each step's size), so its schedule serves them within the
    # SLO (counted in reference requests it served none of them within it).
    config = by_size_config(False, latency_slo_ms=None, ttft_slo_ms=2000, tpot_slo_ms=99.1379)
    result = await replay(two_classes(config, 2.0, 1.0), "oracle", tmp_path / "a.db")
    assert served_share(result) == pytest.approx(1.0, abs=1e-3)
    assert result.per_model()[MODEL]["slo_attainment"] >= 0.99


async def test_with_by_size_off_the_replay_is_as_before(tmp_path: Path) -> None:
    # Off, a trace with buckets replays as one without (today's replay); on, a trace
    # without per-request sizes too.
    sized = two_classes(by_size_config(False), 2.0, 0.3)
    plain = replace(sized, info=replace(sized.info, buckets=None))
    no_sizes_on = replace(plain, config=by_size_config(True))
    runs = [
        await replay(w, "capsched", tmp_path / f"{i}.db")
        for i, w in enumerate((sized, plain, no_sizes_on))
    ]
    for other in runs[1:]:
        assert other.cost_usd == runs[0].cost_usd
        assert np.array_equal(other.served_rps, runs[0].served_rps)
        assert np.array_equal(other.within_slo_rps, runs[0].within_slo_rps)
        assert other.launches == runs[0].launches


def test_traces_with_request_sizes_keep_each_minutes_buckets(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(
        "timestamp,model,region,input_tokens,output_tokens\n"
        "0,llama-3.1-8b,us-east,100,10\n10,llama-3.1-8b,us-east,300,30\n"
        "20,llama-3.1-8b,us-east,9000,5\n61,llama-3.1-8b,us-east,2000,7\n"
    )
    series = read_series(path, "requests")
    assert series.buckets is not None
    first = series.buckets.at(0, 0)
    assert [(b.label, round(b.share, 4), b.size) for b in first] == [
        ("0-1024", 0.6667, RequestSize(200.0, 20.0)),
        ("4096+", 0.3333, RequestSize(9000.0, 5.0)),
    ]
    assert [b.label for b in series.buckets.at(0, 1)] == ["1024-4096"]
    # The demand the replay reads keeps them per configured (model, region).
    demand = load_demand(path, small_config(), load_catalog(), load_profiles())
    assert demand.buckets is not None
    assert [b.label for b in demand.buckets.at(0, 0)] == ["0-1024", "4096+"]
    azure = tmp_path / "a.csv"
    azure.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,5000,110\n"
    )
    a = read_series(azure, "azure-llm")
    assert a.buckets is not None
    assert [b.label for b in a.buckets.at(0, 0)] == ["0-1024", "4096+"]
