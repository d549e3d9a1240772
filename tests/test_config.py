"""Config loading: the example documents every key, bad files say exactly what is wrong."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from capsched.cli import main
from scheduler.config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config.example.toml"


def keys_of(model: type[BaseModel]) -> set[str]:
    """Every key name the schema accepts, at any depth."""
    out: set[str] = set()
    for name, field in model.model_fields.items():
        out.add(name)
        ann = field.annotation
        inner = getattr(ann, "__args__", None)
        for t in (ann, *(inner or ())):
            if isinstance(t, type) and issubclass(t, BaseModel):
                out |= keys_of(t)
    return out


def test_example_is_the_embedded_default_and_valid() -> None:
    assert EXAMPLE.read_text() == DEFAULT_CONFIG_PATH.read_text()
    config = load_config(EXAMPLE)
    assert [m.name for m in config.models] == ["llama-3.1-8b", "llama-3.1-70b"]
    assert load_config(None) == config


def test_example_documents_every_key_with_a_comment() -> None:
    lines = EXAMPLE.read_text().splitlines()
    undocumented = []
    for key in sorted(keys_of(Config)):
        # An optional key may be shown commented out ("# key = value") under its comment.
        pattern = re.compile(rf"^\s*((# )?\[+[\w.-]*\b{key}\b[\w.-]*\]+|(# )?{key}\s*=)")
        documented = any(
            pattern.match(line) and i > 0 and lines[i - 1].lstrip().startswith("#")
            for i, line in enumerate(lines)
        )
        if not documented:
            undocumented.append(key)
    assert undocumented == []


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


MINIMAL = """
[[models]]
name = "llama-3.1-8b"
[[regions]]
name = "us"
location = "us-east-1"
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            MINIMAL + "[solver]\ntime_limit_s = -1\n",
            "solver.time_limit_s: Input should be greater than 0",
        ),
        (MINIMAL + "[planning]\nrobustness_fraction = 2\n", "planning.robustness_fraction"),
        (MINIMAL + "[solver]\nseeed = 1\n", "solver.seeed: unknown key; did you mean 'seed'?"),
        (
            MINIMAL + "[[quotas]]\ncloud = 'azure'\nmax_gpus = 1\n",
            "quotas[0].cloud: Input should be 'aws' or 'gcp'",
        ),
        (MINIMAL.replace('name = "us"\n', ""), "regions[0].name: required key is missing"),
        (MINIMAL + "[[models]]\nname = 'llama-3.1-8b'\n", "duplicate name 'llama-3.1-8b'"),
        ("[[models]\nname = 1\n", "not valid TOML"),
        (MINIMAL + "[drain]\nkind = 'grpc'\n", "drain.kind: Input should be 'none' or 'http'"),
        (
            MINIMAL + "[drain]\nhook_url = 'http://router/drain?n={nodeid}'\n",
            "drain.hook_url: unknown placeholder(s) ['nodeid']",
        ),
        (
            MINIMAL + "[drain]\nmetrics_url = 'ftp://{host}/metrics'\n",
            "drain.metrics_url: must start with http:// or https://",
        ),
        (MINIMAL + "[drain]\nmetrics_url = 'http://{host'\n", "drain.metrics_url: bad template"),
        (MINIMAL + "[drain]\ntimeout_s = nan\n", "drain.timeout_s"),
        (MINIMAL + "[drain]\nin_flight_metrics = []\n", "drain.in_flight_metrics"),
        ('"[" = 1\n' + MINIMAL, '"[": unknown key'),
        (
            MINIMAL.replace('"llama-3.1-8b"\n', '"llama-3.1-8b"\nttft_slo_ms = 500\n', 1),
            "ttft_slo_ms needs tpot_slo_ms too",
        ),
    ],
)
def test_broken_config_names_file_key_and_reason(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert any(str(path) in p and expected in p for p in err.value.problems), err.value.problems


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "[solver]\ntime_limit_s = 0\nworkers = 0\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert len(err.value.problems) == 2


def test_validate_config_exit_code_and_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, MINIMAL + "[planning]\ntarget_utilization = 0\n")
    assert main(["validate-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: planning.target_utilization: Input should be greater than 0" in err
    assert "Traceback" not in err


def test_validate_config_checks_names_against_the_catalog(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = MINIMAL.replace("us-east-1", "mars-north-1") + (
        "[clouds.aws]\nregions = ['us-east-1', 'atlantis-1']\n"
    )
    text = text.replace('name = "llama-3.1-8b"', 'name = "gpt-17"')
    path = write(tmp_path, text)
    assert main(["validate-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "models[0].name: no capacity profile 'gpt-17'" in err
    assert "regions[0].location: 'mars-north-1' is not a catalog region" in err
    assert "clouds.aws.regions[1]: unknown region 'atlantis-1'" in err


def test_validate_config_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate-config", str(EXAMPLE)]) == 0
    assert "ok" in capsys.readouterr().out


def test_console_script_prints_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "[[models]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "capsched.cli", "validate-config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert str(path) in proc.stderr


def test_aws_cloud_needs_its_table_and_a_real_load_signal(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '[sources]\ncloud = "aws"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert any("no [aws] table" in p for p in err.value.problems)
    example = EXAMPLE.read_text().replace('cloud = "sim"', 'cloud = "aws"')
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, example))
    assert any('needs sources.demand = "prometheus"' in p for p in err.value.problems)
    example = example.replace('demand = "trace"', 'demand = "prometheus"')
    assert load_config(write(tmp_path, example)).sources.cloud == "aws"
