"""What a new user meets first (issue 16): `simulate --out` naming a file, the notes a
replay prints, and the files the embedded default daemon leaves in a clone."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from capsched.cli import main
from scheduler.config import load_config
from simulations.demand import assign_series
from simulations.traces import TraceSeries

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("sub", ["", "deeper/still"])
def test_simulate_out_naming_a_file_is_one_line_and_exit_2(
    tmp_path: Path, sub: str, capsys: pytest.CaptureFixture[str]
) -> None:
    existing = tmp_path / "report.txt"
    existing.write_text("keep me\n")
    out = existing / sub if sub else existing
    assert main(["simulate", "--policy", "static-peak", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --out {out}: ")
    assert "not a folder" in err[0]
    assert existing.read_text() == "keep me\n"  # untouched


def series(*names: str) -> TraceSeries:
    values = np.full((len(names), 3), 60.0)
    return TraceSeries("t.csv", "minute-csv", names, 0.0, 60.0, values, "requests/min")


def test_a_series_already_named_for_its_pair_gets_no_note() -> None:
    config = load_config()
    _, rows, notes = assign_series(series("llama-3.1-8b/us-east", "chat"), config)
    assert notes == [f"series chat -> {config.models[0].name}/{config.regions[0].name}"]
    assert rows.sum() > 0
    _, _, renamed = assign_series(series("code"), config, mapping={"code": "llama-3.1-70b/eu-west"})
    assert renamed == ["series code -> llama-3.1-70b/eu-west"]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
@pytest.mark.parametrize(
    "name", ["capsched.token", "deploy/other.token", "capsched.db", "capsched.sim"]
)
def test_what_the_embedded_default_writes_is_ignored_by_git(name: str) -> None:
    # The daemon writes its API token, state and simulated cloud into the working
    # directory, usually the clone: none of it may end up in a commit.
    found = subprocess.run(["git", "check-ignore", "--no-index", "-q", name], cwd=REPO, check=False)
    assert found.returncode == 0, f"{name} is not in .gitignore"
