"""The simulator serves tokens: traces keep per-minute request sizes, the replay's node
capacity follows them, and every policy plans with them."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.trace_metrics import TraceMetrics
from capsched.cli import main
from scheduler.config import Config
from scheduler.domain import REFERENCE_SIZE, Cloud, Placement, RequestSize
from scheduler.fleet.catalog import load_catalog
from scheduler.fleet.profiles import instance_rps, load_profiles, model_info, size_factor
from scheduler.forecast.sizes import SizeMix
from scheduler.ports.metrics import DemandSample
from simulations.engine import World, node_service, replay
from simulations.traces import read_series
from tests.sim_helpers import MODEL, OD_POOL, Fixed, registered, small_config, world


def sized_world(tokens: tuple[float, float] | None, minutes: int = 10) -> World:
    w = world(small_config(), [1.0] * minutes)
    if tokens is None:
        return w
    t = np.full((2, 1, minutes), np.nan)
    t[0], t[1] = tokens
    return replace(w, info=replace(w.info, tokens=t))


async def test_node_capacity_follows_the_minute_size(tmp_path: Path) -> None:
    with registered("fixed", Fixed((Placement(MODEL, OD_POOL, 1),))):
        plain = await replay(sized_world(None), "fixed", tmp_path / "a.db")
        ref = await replay(sized_world((763.0, 232.0)), "fixed", tmp_path / "b.db")
        long = await replay(sized_world((10_000.0, 232.0)), "fixed", tmp_path / "c.db")
    assert np.array_equal(ref.capacity_rps, plain.capacity_rps)
    assert ref.cost_usd == pytest.approx(plain.cost_usd, rel=1e-12)
    # g6e.xlarge: one L40S, 8B at TP1.
    expected = size_factor(MODEL, "L40S", 1, RequestSize(10_000.0, 232.0))
    ready = plain.capacity_rps[0] > 0
    assert np.allclose(long.capacity_rps[0][ready] / plain.capacity_rps[0][ready], expected)


def write_requests(path: Path, input_tokens: int) -> Path:
    # 20 minutes at 10 requests/s of llama-3.1-8b from us-east.
    lines = ["timestamp,model,region,input_tokens,output_tokens"]
    for k in range(20 * 60 * 10):
        lines.append(f"{1_700_000_000 + k / 10:.1f},llama-3.1-8b,us-east,{input_tokens},200")
    path.write_text("\n".join(lines) + "\n")
    return path


def cost_usd(tmp_path: Path, trace: Path, name: str) -> float:
    scenario = tmp_path / "s.toml"
    scenario.write_text('name = "test"\n[cloud]\nboot_time_s = 120\n')
    out = tmp_path / name
    code = main(
        ["simulate", "--trace", str(trace), "--scenario", str(scenario), "--policy",
         "capsched", "--out", str(out), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    entry = json.loads((out / "summary.json").read_text())["policies"]["capsched"]
    assert entry["slo_attainment"] >= 0.95
    return float(entry["cost_usd"])


def test_simulate_uses_the_token_columns_of_a_requests_trace(tmp_path: Path) -> None:
    short = cost_usd(tmp_path, write_requests(tmp_path / "short.csv", 500), "short")
    long = cost_usd(tmp_path, write_requests(tmp_path / "long.csv", 10_000), "long")
    assert long > 2 * short


def write_mooncake(path: Path, input_tokens: int) -> Path:
    # The same arrivals as `write_requests`, in Mooncake's JSON lines (milliseconds).
    lines = [
        json.dumps(
            {
                "timestamp": k * 100,
                "input_length": input_tokens,
                "output_length": 200,
                "hash_ids": [k],
            }
        )
        for k in range(20 * 60 * 10)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_simulate_reads_a_mooncake_trace_and_its_sizes(tmp_path: Path) -> None:
    # Mooncake's conversation trace averages 12,035 prompt tokens: detected by its first
    # line, replayed at its sizes: long prompts cost over twice what short ones do.
    long = cost_usd(tmp_path, write_mooncake(tmp_path / "long.jsonl", 12_000), "mlong")
    short = cost_usd(tmp_path, write_mooncake(tmp_path / "short.jsonl", 500), "mshort")
    assert long > 2 * short


def test_requests_and_azure_traces_keep_sizes_per_minute(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(
        "timestamp,input_tokens,output_tokens\n0,100,10\n30,300,30\n61,1000,5\n190,50,50\n"
    )
    s = read_series(path, "requests")
    assert s.tokens is not None
    assert s.tokens[:, 0, 0].tolist() == [200.0, 20.0]
    assert s.tokens[:, 0, 1].tolist() == [1000.0, 5.0]
    assert np.isnan(s.tokens[:, 0, 2]).all()  # a minute without requests has no size
    azure = tmp_path / "a.csv"
    azure.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,110\n"
    )
    a = read_series(azure, "azure-llm")
    assert a.tokens is not None and a.tokens[:, 0, 0].tolist() == [385.0, 77.0]


async def test_trace_metrics_report_the_last_minutes_sizes() -> None:
    tokens = np.array([[[100.0, np.nan]], [[10.0, np.nan]]])
    m = TraceMetrics([(MODEL, "us-east")], np.array([[1.0, 2.0]]), start_s=0.0, tokens=tokens)
    first = await m.demand(60.0)
    assert first.input_tokens == {(MODEL, "us-east"): 100.0}
    assert first.output_tokens == {(MODEL, "us-east"): 10.0}
    later = await m.demand(120.0)
    assert later.input_tokens == {} and later.output_tokens == {}


def test_size_mix_plans_for_the_heavier_of_mean_and_latest() -> None:
    key = (MODEL, "us-east")
    mix = SizeMix(half_life_s=600.0)
    assert mix.size(key) is None
    mix.update(DemandSample(0.0, input_tokens={key: 1000.0}, output_tokens={key: 100.0}))
    assert mix.size(key) == RequestSize(1000.0, 100.0)
    # A shift to longer requests counts at once.
    mix.update(DemandSample(60.0, input_tokens={key: 4000.0}, output_tokens={key: 100.0}))
    assert mix.size(key) == RequestSize(4000.0, 100.0)
    # A shift back only as the mean follows it: one half-life later, halfway.
    mix.update(DemandSample(660.0, input_tokens={key: 1000.0}, output_tokens={key: 100.0}))
    got = mix.size(key)
    assert got is not None and 1000.0 < got.input_tokens < 4000.0
    # Readings that are not sizes are ignored.
    mix.update(DemandSample(720.0, input_tokens={key: float("nan")}, output_tokens={key: 1.0}))
    assert mix.size(key) == got


def test_reference_size_constant_matches_the_profiles() -> None:
    assert (REFERENCE_SIZE.input_tokens, REFERENCE_SIZE.output_tokens) == (763.0, 232.0)
    assert size_factor(MODEL, "L40S", 1, RequestSize(763.0, 232.0)) == 1.0


@pytest.mark.parametrize("policy", ["oracle", "static-peak", "reactive", "spothedge"])
def test_every_baseline_plans_more_for_longer_requests(tmp_path: Path, policy: str) -> None:
    def cost(name: str, tokens: int) -> float:
        trace = write_requests(tmp_path / f"{name}.csv", tokens)
        scenario = tmp_path / "s.toml"
        scenario.write_text('name = "test"\n[cloud]\nboot_time_s = 120\n')
        out = tmp_path / name
        args = ["simulate", "--trace", str(trace), "--scenario", str(scenario)]
        assert main([*args, "--policy", policy, "--out", str(out), "--no-progress"]) == 0
        entry = json.loads((out / "summary.json").read_text())["policies"][policy]
        assert entry["slo_attainment"] >= 0.9
        return float(entry["cost_usd"])

    assert cost("long", 10_000) > 2 * cost("short", 500)


async def test_cost_per_million_tokens_counts_the_served_sizes(tmp_path: Path) -> None:
    minutes = 60
    w = world(small_config(), [0.1] * minutes)
    t = np.full((2, 1, minutes), np.nan)
    t[0], t[1] = 10_000.0, 232.0
    sized = replace(w, info=replace(w.info, tokens=t))
    with registered("fixed", Fixed((Placement(MODEL, OD_POOL, 1),))):
        plain = (await replay(w, "fixed", tmp_path / "a.db")).summary(None)
        long = (await replay(sized, "fixed", tmp_path / "b.db")).summary(None)
    assert plain["unserved_fraction"] == 0.0 and long["unserved_fraction"] == 0.0
    served = 0.1 * minutes * 60
    assert plain["usd_per_million_tokens"] == pytest.approx(
        plain["cost_usd"] / (served * 995) * 1e6, rel=1e-3
    )
    assert long["usd_per_million_tokens"] == pytest.approx(
        long["cost_usd"] / (served * 10_232) * 1e6, rel=1e-3
    )


def test_burstgpt_raw_token_columns_are_read_as_sizes(tmp_path: Path) -> None:
    path = tmp_path / "burst.csv"
    path.write_text(
        "Timestamp,Request tokens,Response tokens,Total tokens,Log Type\n"
        "5,472,18,490,Conversation log\n20,1000,200,1200,Conversation log\n"
    )
    s = read_series(path, "auto")
    assert s.format == "requests" and s.tokens is not None
    assert s.tokens[:, 0, 0].tolist() == [736.0, 109.0]


@given(
    inp=st.floats(1.0, 50_000.0, allow_nan=False),
    out=st.floats(1.0, 5_000.0, allow_nan=False),
    name=st.sampled_from(["g6e.xlarge", "g6.xlarge", "p5.48xlarge", "p4d.24xlarge"]),
    model=st.sampled_from(["llama-3.2-3b", "llama-3.1-8b", "llama-3.1-70b"]),
)
@settings(max_examples=50, deadline=None)
def test_the_replay_serves_at_the_sized_rate_the_planner_counts(
    inp: float, out: float, name: str, model: str
) -> None:
    itype = load_catalog().instance_types[(Cloud.AWS, name)]
    info = model_info(model)
    size = RequestSize(inp, out)
    profiles = load_profiles()
    svc = node_service(profiles, model, itype, info.latency_slo_ms, info.gpu_memory_gb, size)
    assert svc.rps == pytest.approx(instance_rps(profiles, model, itype, size=size), rel=1e-12)


async def test_a_per_token_slo_is_met_when_the_load_is_foreseen(tmp_path: Path) -> None:
    # Issue #20: under TTFT/TPOT SLOs a node is planned at the load that keeps 99 % of
    # first tokens within budget (`scheduler.fleet.profiles.queue_utilization`), and the
    # replay's queue charges waits the same way; with the load known in advance the plan
    # serves the SLO through a step from 3 to 12 requests/s. What capsched's own replays
    # lose under a per-token SLO is what its forecast does not foresee before the new
    # nodes boot (docs/profiles.md "Latency SLOs", "Where the reference file's misses are").
    plain = small_config()
    token = plain.models[0].model_copy(update={"ttft_slo_ms": 2_000.0, "tpot_slo_ms": 99.1379})
    config = Config.model_validate(plain.model_dump() | {"models": [token.model_dump()]})
    assert config.models[0].token_slo is not None
    w = world(config, [3.0] * 15 + [12.0] * 15, boot_time_s=300.0, warmup_s=600.0)
    t = np.full((2, 1, 30), np.nan)
    t[0], t[1] = REFERENCE_SIZE.input_tokens, REFERENCE_SIZE.output_tokens
    w = replace(w, info=replace(w.info, tokens=t))
    run = await replay(w, "capsched-perfect-forecast", tmp_path / "tok.db")
    # Counted at the target utilisation without room to wait, the same replay gives 0.996.
    assert run.summary(None)["slo_attainment"] >= 0.999
