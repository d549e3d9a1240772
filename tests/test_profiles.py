"""Capacity profiles: what a replica sustains, and how many replicas an instance holds."""

from __future__ import annotations

import csv
import itertools
import math
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from scheduler.domain import CapacityProfile, Cloud, InstanceType
from scheduler.fleet.catalog import Catalog, load_catalog
from scheduler.fleet.profiles import instance_rps, load_models, load_profiles, model_info

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BUNDLED = REPO / "scheduler" / "data" / "profiles.json"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not present")

SMALL, MID, LARGE = "llama-3.2-3b", "llama-3.1-8b", "llama-3.1-70b"


@pytest.fixture(scope="module")
def profiles() -> tuple[CapacityProfile, ...]:
    return load_profiles()


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def aws(catalog: Catalog, name: str) -> InstanceType:
    return catalog.instance_types[(Cloud.AWS, name)]


def test_covers_three_model_sizes_on_the_main_gpu_kinds(
    profiles: tuple[CapacityProfile, ...],
) -> None:
    cells = {(p.model, p.gpu_kind) for p in profiles}
    for model in (SMALL, MID, LARGE):
        for kind in ("L4", "A10G", "A100", "H100", "L40S", "H200"):
            assert (model, kind) in cells, (model, kind)
    assert {m.name for m in load_models()} == {SMALL, MID, LARGE}


def test_every_row_says_where_it_comes_from(profiles: tuple[CapacityProfile, ...]) -> None:
    for p in profiles:
        assert p.source.startswith(("measured:", "derived:")), p
        assert p.rps > 0 and p.latency_ms > 0
        assert math.isfinite(p.rps) and math.isfinite(p.latency_ms)


def test_measured_l4_sweep_is_copied_exactly(profiles: tuple[CapacityProfile, ...]) -> None:
    # shuntserve g6.xlarge Llama-3.2-3B, batch 8: 0.9186 req/s, p50 e2e 17,313.8 ms.
    (row,) = [
        p
        for p in profiles
        if (p.model, p.gpu_kind, p.gpu_count, p.batch_size) == (SMALL, "L4", 1, 8)
    ]
    assert row.rps == pytest.approx(0.9186137, rel=1e-4)
    assert row.latency_ms == pytest.approx(17313.8, abs=0.1)
    assert row.source.startswith("measured: shuntserve")


def test_rps_grows_with_batch_in_measured_sweeps(profiles: tuple[CapacityProfile, ...]) -> None:
    sweeps: dict[tuple[str, str, int, str], list[CapacityProfile]] = defaultdict(list)
    for p in profiles:
        if p.source.startswith("measured:"):
            sweeps[(p.model, p.gpu_kind, p.gpu_count, p.source)].append(p)
    assert len(sweeps) >= 8
    for key, rows in sweeps.items():
        rows.sort(key=lambda p: p.batch_size)
        assert len(rows) >= 4, key
        for a, b in itertools.pairwise(rows):
            assert b.rps > a.rps, (key, a.batch_size, b.batch_size)
            assert b.latency_ms >= a.latency_ms * 0.95, (key, a.batch_size, b.batch_size)


def test_models_only_get_profiles_on_gpus_they_fit(
    profiles: tuple[CapacityProfile, ...], catalog: Catalog
) -> None:
    memory = {t.gpu_kind: t.gpu_memory_gb for t in catalog.instance_types.values()}
    for p in profiles:
        need = model_info(p.model).gpu_memory_gb
        assert p.gpu_count * memory[p.gpu_kind] >= need, p
    info = model_info(LARGE)
    assert info.gpu_memory_gb == pytest.approx(70.6 * 2 * 1.2, abs=0.1)  # bf16 + 20% KV cache
    assert not [p for p in profiles if p.model == LARGE and p.gpu_count < 8 and p.gpu_kind == "L4"]


def test_a_70b_model_does_not_run_on_one_l4(
    profiles: tuple[CapacityProfile, ...], catalog: Catalog
) -> None:
    assert instance_rps(profiles, LARGE, aws(catalog, "g6.xlarge")) == 0.0
    assert instance_rps(profiles, LARGE, aws(catalog, "g6.12xlarge"), 1e9) == 0.0  # 4 x 24 GB
    assert instance_rps(profiles, LARGE, aws(catalog, "g6.48xlarge")) > 0.0


def test_an_eight_gpu_instance_holds_eight_small_replicas(
    profiles: tuple[CapacityProfile, ...], catalog: Catalog
) -> None:
    one = instance_rps(profiles, SMALL, aws(catalog, "p5.4xlarge"))  # 1 x H100
    eight = instance_rps(profiles, SMALL, aws(catalog, "p5.48xlarge"))  # 8 x H100
    assert one > 0
    assert eight == pytest.approx(8 * one)
    l4 = instance_rps(profiles, SMALL, aws(catalog, "g6.xlarge"))
    assert instance_rps(profiles, SMALL, aws(catalog, "g6.12xlarge")) == pytest.approx(4 * l4)


def test_instance_rps_uses_only_rows_within_the_slo(
    profiles: tuple[CapacityProfile, ...], catalog: Catalog
) -> None:
    for name in ("g6.xlarge", "g5.48xlarge", "p4d.24xlarge", "p5.48xlarge", "g6e.12xlarge"):
        itype = aws(catalog, name)
        for m in load_models():
            got = instance_rps(profiles, m.name, itype)
            usable = [
                (itype.gpu_count // p.gpu_count) * p.rps
                for p in profiles
                if p.model == m.name
                and p.gpu_kind == itype.gpu_kind
                and itype.gpu_count % p.gpu_count == 0
                and p.latency_ms <= m.latency_slo_ms
            ]
            assert got == max(usable, default=0.0)
    # A tighter SLO never gives more capacity; one below every latency gives none.
    g6 = aws(catalog, "g6.xlarge")
    assert instance_rps(profiles, SMALL, g6, 15_000) < instance_rps(profiles, SMALL, g6)
    assert instance_rps(profiles, SMALL, g6, 1_000) == 0.0


def test_default_slos_follow_the_documented_rule(profiles: tuple[CapacityProfile, ...]) -> None:
    # SLO = latency at batch 8 on the smallest L4 group, rounded up to a whole second.
    for m in load_models():
        l4 = [p for p in profiles if p.model == m.name and p.gpu_kind == "L4"]
        tp = min(p.gpu_count for p in l4)
        (row,) = [p for p in l4 if p.gpu_count == tp and p.batch_size == 8]
        assert m.latency_slo_ms == math.ceil(row.latency_ms / 1000) * 1000
        assert 10_000 <= m.latency_slo_ms <= 40_000


def test_unknown_model_has_no_capacity(
    profiles: tuple[CapacityProfile, ...], catalog: Catalog
) -> None:
    assert instance_rps(profiles, "no-such-model", aws(catalog, "p5.48xlarge"), 30_000) == 0.0
    with pytest.raises(KeyError):
        instance_rps(profiles, "no-such-model", aws(catalog, "p5.48xlarge"))


def test_default_profiles_are_loaded_once(profiles: tuple[CapacityProfile, ...]) -> None:
    assert load_profiles() is profiles
    assert load_profiles(BUNDLED) == profiles


@needs_shared
def test_splitwise_rows_convert_prefill_and_decode_to_the_reference_mix(
    profiles: tuple[CapacityProfile, ...],
) -> None:
    # latency(b) = prompt_time(b) x prefill(763)/prefill(512) + token_time(b) x 232, in ms.
    path = SHARED / "profiles/llm_perf_profiles_splitwise_sageserve/splitwise_perf_model.csv"
    with path.open(newline="") as f:
        rows = [
            r
            for r in csv.DictReader(f)
            if r["model"] == "llama2-70b"
            and r["hardware"] == "h100-80gb"
            and r["tensor_parallel"] == "8"
            and r["token_size"] == "128"
        ]

    def med(col: str, prompt: int, batch: int) -> float:
        return statistics.median(
            float(r[col])
            for r in rows
            if int(r["prompt_size"]) == prompt and int(r["batch_size"]) == batch
        )

    p512, p1024 = med("prompt_time", 512, 1), med("prompt_time", 1024, 1)
    scale = (p512 + (p1024 - p512) * (763 - 512) / 512) / p512
    expected = med("prompt_time", 512, 16) * scale + med("token_time", 512, 16) * 232
    (row,) = [
        p
        for p in profiles
        if (p.model, p.gpu_kind, p.gpu_count, p.batch_size) == (LARGE, "H100", 8, 16)
    ]
    assert row.latency_ms == pytest.approx(expected, abs=0.1)
    assert row.rps == pytest.approx(16 / expected * 1000, rel=1e-4)


@needs_shared
def test_regenerating_from_shared_data_is_byte_identical(tmp_path: Path) -> None:
    out = tmp_path / "profiles.json"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "build_profiles.py"),
            "--shared",
            str(SHARED),
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    assert out.read_bytes() == BUNDLED.read_bytes()
