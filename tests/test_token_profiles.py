"""Profiles as a function of request size: the token cost model scales the rps table,
leaves the reference request exactly as it was, and stays within its held-out error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.domain import REFERENCE_SIZE, Cloud, RequestSize
from scheduler.fleet.catalog import load_catalog
from scheduler.fleet.profiles import (
    instance_rps,
    load_profiles,
    load_token_costs,
    parse_token_costs,
    size_factor,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BUNDLED = REPO / "scheduler" / "data" / "token_profiles.json"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not present")

CELLS = sorted({(p.model, p.gpu_kind, p.gpu_count) for p in load_profiles()})
tokens = st.floats(min_value=1.0, max_value=50_000.0, allow_nan=False)


def test_every_profile_cell_has_a_token_cost_model() -> None:
    covered = {(c.model, c.gpu_kind, c.gpu_count) for c in load_token_costs()}
    assert set(CELLS) <= covered


@pytest.mark.parametrize("size", [None, REFERENCE_SIZE, RequestSize(763, 232)])
def test_the_reference_request_keeps_todays_rates(size: RequestSize | None) -> None:
    catalog = load_catalog()
    profiles = load_profiles()
    for itype in catalog.instance_types.values():
        for model in ("llama-3.2-3b", "llama-3.1-8b", "llama-3.1-70b"):
            assert instance_rps(profiles, model, itype, size=size) == instance_rps(
                profiles, model, itype
            )


@given(cell=st.sampled_from(CELLS), inp=tokens, out=tokens, more=st.floats(1.0, 20.0))
def test_longer_requests_never_raise_the_rate(
    cell: tuple[str, str, int], inp: float, out: float, more: float
) -> None:
    base = size_factor(*cell, RequestSize(inp, out))
    assert base > 0
    assert size_factor(*cell, RequestSize(inp * more, out)) <= base * (1 + 1e-12)
    assert size_factor(*cell, RequestSize(inp, out * more)) <= base * (1 + 1e-12)


def test_ten_thousand_token_prompts_need_several_times_the_capacity() -> None:
    p5 = load_catalog().instance_types[(Cloud.AWS, "p5.48xlarge")]
    profiles = load_profiles()
    short = instance_rps(profiles, "llama-3.1-8b", p5, size=RequestSize(500, 232))
    long = instance_rps(profiles, "llama-3.1-8b", p5, size=RequestSize(10_000, 232))
    assert short > instance_rps(profiles, "llama-3.1-8b", p5) > long
    assert short / long > 5


def test_held_out_error_is_within_target() -> None:
    doc = json.loads(BUNDLED.read_text(encoding="utf-8"))
    used = doc["holdout"]["groups_used"]
    assert used["points"] >= 100
    assert used["median"] <= 0.15 and used["mean"] <= 0.15


def test_a_token_file_for_another_reference_is_refused() -> None:
    doc = json.loads(BUNDLED.read_text(encoding="utf-8"))
    doc["reference_mix"]["input_tokens"] = 512
    with pytest.raises(ValueError, match="reference"):
        parse_token_costs(doc, "x.json")


@needs_shared
def test_regenerating_from_shared_data_is_byte_identical(tmp_path: Path) -> None:
    out = tmp_path / "token_profiles.json"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "build_token_profiles.py"),
            "--shared",
            str(SHARED),
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    assert out.read_bytes() == BUNDLED.read_bytes()


@given(inp=st.floats(0.01, 128.0), out=st.floats(0.01, 128.0))
def test_a_tiny_size_reading_plans_like_the_smallest_measured_request(
    inp: float, out: float
) -> None:
    # A load signal that divides token rates by request rates can read one token per
    # request (a broken exporter, a fake): capacity must not grow past what the smallest
    # measured request (128 / 128 tokens) gives, or one node looks like enough for any load.
    l4 = load_catalog().instance_types[(Cloud.GCP, "g2-standard-4")]
    profiles = load_profiles()
    floor = instance_rps(profiles, "llama-3.1-8b", l4, size=RequestSize(128, 128))
    tiny = instance_rps(profiles, "llama-3.1-8b", l4, size=RequestSize(inp, out))
    assert tiny == pytest.approx(floor)
    assert floor < 5 * instance_rps(profiles, "llama-3.1-8b", l4)
