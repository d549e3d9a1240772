"""`capsched simulate --sweep --executor ray`: the same results as the local process pool,
databases that come back from the workers, and a clear message without the extra."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from capsched.cli import main
from simulations import ray_executor
from simulations.scenario import Scenario
from simulations.world import WorldSpec, build_world

# Wall-clock figures: they differ between any two runs, on any executor.
TIMING = {"wall_s", "solve_time_p95_s", "solve_time_s"}


def _sweep(tmp_path: Path) -> tuple[Path, Path]:
    """A 10-minute trace and two scenarios; the node limit makes capsched's plans repeat."""
    trace = tmp_path / "t.csv"
    trace.write_text("minute,requests\n" + "".join(f"{m},{120 + 10 * m}\n" for m in range(10)))
    sweep = tmp_path / "sweep.toml"
    common = "cloud = { boot_time_s = 60 }\nconfig = { solver = { node_limit = 2000 } }\n"
    sweep.write_text(
        'policies = ["capsched", "reactive"]\n'
        f'[[scenarios]]\nname = "base"\n{common}'
        f'[[scenarios]]\nname = "pricey-spot"\n{common}'
        "market = { spot_price_multiplier = 3.0 }\n"
    )
    return trace, sweep


def _without_timing(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


def _json(path: Path, out: Path) -> Any:
    # run.json names each state database under its own output folder.
    return _without_timing(json.loads(path.read_text().replace(str(out), "OUT")))


def _rows(db: Path) -> dict[str, list[dict[str, Any]]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        tables = [r[0] for r in conn.execute("select name from sqlite_master where type='table'")]
        return {
            t: [_without_timing(dict(r)) for r in conn.execute(f"select * from {t} order by 1")]
            for t in sorted(tables)
        }
    finally:
        conn.close()


@pytest.fixture
def ray(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """Ray, imported the way the executor imports it; any cluster left is shut down."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # a local cluster, whatever the shell says
    # Read at import: loopback only, no usage stats (as ray_executor.import_ray sets them).
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    module = pytest.importorskip("ray")
    yield module
    if module.is_initialized():
        module.shutdown()


def test_ray_sweep_matches_the_local_process_pool(tmp_path: Path, ray: ModuleType) -> None:
    trace, sweep = _sweep(tmp_path)
    args = ["simulate", "--sweep", str(sweep), "--trace", str(trace), "--no-progress"]
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert main([*args, "--out", str(local), "--workers", "2"]) == 0
    assert main([*args, "--out", str(remote), "--workers", "2", "--executor", "ray"]) == 0
    assert not ray.is_initialized()  # the sweep shut down the cluster it started

    files = sorted(p.relative_to(local) for p in local.rglob("*") if p.suffix in {".json", ".db"})
    assert len(files) == 1 + 2 * 2 + 2 * 3  # sweep.json; summary and run; 3 databases each
    assert sorted(p.relative_to(remote) for p in remote.rglob("*") if p.is_file()) == sorted(
        p.relative_to(local) for p in local.rglob("*") if p.is_file()
    )
    for name in files:
        if name.suffix == ".json":
            assert _json(remote / name, remote) == _json(local / name, local), name
        else:
            assert _rows(remote / name) == _rows(local / name), name
    doc = json.loads((remote / "sweep.json").read_text())
    assert set(doc["scenarios"]["base"]["policies"]) == {"capsched", "reactive", "static-peak"}
    run = json.loads((remote / "base" / "run.json").read_text())
    assert run["state_db"]["capsched"] == str(remote / "base" / "state-capsched.db")


def test_a_task_returns_its_database_and_leaves_nothing_on_the_worker(tmp_path: Path) -> None:
    trace, _ = _sweep(tmp_path)
    scenario = Scenario.model_validate({"name": "s", "cloud": {"boot_time_s": 60}})
    world, _ = build_world(WorldSpec(config_path=None, trace_path=trace, scenario=scenario))
    result, data = ray_executor.replay_task(world, "reactive")
    assert not Path(result.state_db).parent.exists()  # the scratch folder is gone
    db = tmp_path / "state.db"
    db.write_bytes(data)
    nodes = _rows(db)["nodes"]
    assert len(nodes) == result.launches > 0


def test_missing_ray_names_the_extra_to_install(tmp_path: Path) -> None:
    trace, sweep = _sweep(tmp_path)
    out = tmp_path / "out"
    # `import ray` fails in the child as it does where the extra is not installed.
    child = "import sys; sys.modules['ray'] = None\nfrom capsched.cli import main\n"
    child += "sys.exit(main(sys.argv[1:]))"
    args = ["simulate", "--sweep", str(sweep), "--trace", str(trace), "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-c", child, *args, "--executor", "ray"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'capsched[ray]'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--executor", "ray"], "--executor ray runs sweeps only"),
        (["--ray-address", "127.0.0.1:6379"], "--ray-address needs --executor ray"),
        (["--ray-runtime-env", "{}"], "--ray-runtime-env needs --executor ray"),
    ],
)
def test_ray_options_outside_a_ray_sweep_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(["simulate", "--out", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("runtime_env", "message"),
    [("{working_dir", "not valid JSON"), ('["."]', "expected a JSON object")],
)
def test_a_bad_runtime_env_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], runtime_env: str, message: str
) -> None:
    _, sweep = _sweep(tmp_path)
    args = ["simulate", "--sweep", str(sweep), "--out", str(tmp_path / "out")]
    assert main([*args, "--executor", "ray", "--ray-runtime-env", runtime_env]) == 2
    assert f"--ray-runtime-env: {message}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:6379", True),
        ("ray://localhost:10001", True),
        ("[::1]:6379", True),
        ("ray://head.example:10001", False),
        ("10.0.0.5:6379", False),
        ("auto", False),
    ],
)
def test_a_cluster_on_loopback_is_joined_on_loopback(address: str, loopback: bool) -> None:
    # Ray would rewrite 127.0.0.1 to the machine's outside address and fail to reach it.
    assert ray_executor._on_loopback(address) is loopback
