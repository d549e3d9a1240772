"""The embedded default of `capsched simulate` gives the same numbers on every machine
(issue 16, defect 7): its spot capacity comes from series bundled in the repository,
made by scripts/build_spot_series.py, and it never reads the shared spot traces, which
stay available as an opt-in scenario."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import simulations.scenario as scenario_module
from simulations.engine import run_policy
from simulations.scenario import (
    DEFAULT_SCENARIO_PATH,
    SKYPILOT_SCENARIO_PATH,
    SPOT_TRACES_ENV,
    load_scenario,
)
from simulations.world import WorldSpec, build_world

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "simulations" / "data" / "spot"
sys.path.insert(0, str(REPO / "scripts"))
import build_spot_series  # noqa: E402


def _decoy_shared(folder: Path) -> Path:
    """A shared-traces folder where every trace the opt-in scenario names is all zeros:
    a default that read it would lose its whole spot capacity."""
    scenario, _ = load_scenario(SKYPILOT_SCENARIO_PATH)
    for entry in scenario.spot_traces:
        path = folder / entry.file.removeprefix("$SPOT/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"metadata": {"gap_seconds": 60}, "data": [0] * 600}))
    return folder


def test_the_embedded_default_never_looks_for_the_shared_traces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def forbidden() -> Path | None:
        raise AssertionError("the embedded default asked for the shared spot traces")

    monkeypatch.setattr(scenario_module, "spot_traces_dir", forbidden)
    world, notes = build_world(WorldSpec(None, None))
    assert not [n for n in notes if "spot" in n]  # no "skipped", no "not found", no loop
    sources = {Path(t.source).resolve() for t in world.info.spot_traces.values()}
    assert sources == {p.resolve() for p in BUNDLED.glob("*.json")}
    assert len(sources) == 6
    groups = {(p.cloud.value, p.zone or p.region) for p in world.info.spot_traces}
    assert groups == {(c.value, w) for c, w in build_spot_series.GROUPS}


def test_same_numbers_with_or_without_the_shared_traces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Where the shared folder exists (or CAPSCHED_SPOT_TRACES points somewhere), the
    # embedded default's replay is the one a clone without it gets.
    def summary(name: str) -> dict[str, object]:
        world, _ = build_world(WorldSpec(None, None))
        out = run_policy(world, "spothedge", tmp_path / f"{name}.db").summary(None)
        return {k: v for k, v in out.items() if k != "wall_s"}

    monkeypatch.setenv(SPOT_TRACES_ENV, str(tmp_path / "absent"))
    without = summary("without")
    monkeypatch.setenv(SPOT_TRACES_ENV, str(_decoy_shared(tmp_path / "shared")))
    assert summary("with") == without


def test_the_bundled_series_are_what_the_documented_script_makes(tmp_path: Path) -> None:
    assert build_spot_series.main(["--out", str(tmp_path)]) == 0
    made = sorted(p.name for p in tmp_path.glob("*.json"))
    assert made == sorted(p.name for p in BUNDLED.glob("*.json"))
    for name in made:
        assert (tmp_path / name).read_bytes() == (BUNDLED / name).read_bytes(), name


def test_the_series_follow_the_catalog_rates() -> None:
    # A group reclaimed 50x as often loses more capacity, and a rate of 0 loses none.
    quiet = build_spot_series.series(0.0, seed=1, ticks=2000, gap_s=300, slots=16, outage_s=3600)
    calm = build_spot_series.series(0.02, seed=1, ticks=2000, gap_s=300, slots=16, outage_s=3600)
    busy = build_spot_series.series(1.0, seed=1, ticks=2000, gap_s=300, slots=16, outage_s=3600)
    assert quiet == [16] * 2000
    assert sum(busy) < sum(calm) < sum(quiet)
    assert busy[0] == calm[0] == 16  # every slot starts available


def test_the_real_traces_are_an_opt_in_scenario(tmp_path: Path) -> None:
    opt_in, _ = load_scenario(SKYPILOT_SCENARIO_PATH)
    default, _ = load_scenario(DEFAULT_SCENARIO_PATH)
    assert len(opt_in.spot_traces) == 6
    assert all(e.file.startswith("$SPOT/") for e in opt_in.spot_traces)
    assert not any(e.file.startswith("$SPOT/") for e in default.spot_traces)
    assert opt_in.config == default.config  # the same world but for its spot capacity
    pools = sorted(e.pools for e in opt_in.spot_traces)
    assert pools == sorted(e.pools for e in default.spot_traces)
