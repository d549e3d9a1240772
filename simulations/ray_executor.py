"""Sweeps on a Ray cluster: `capsched simulate --sweep SWEEP.toml --executor ray`.

Each (scenario, policy) pair of a sweep is one Ray task. Workers may run on other
machines, so nothing a task needs or makes goes through the driver's disk:

* the driver builds every scenario's `World` (it reads the config, trace, scenario and
  spot-trace files) and ships it through the object store, once per scenario;
* a task replays into a state database in its own scratch folder and returns the
  `RunResult` with the database's bytes; the driver writes them where the local process
  pool would have written the database, so `run.json`, `summary.json` and `sweep.json`
  come out the same as with `--executor local`.

A worker needs capsched's code and dependencies only (the same version as the driver's):
installed on every node, or the code shipped by a runtime env (`--ray-runtime-env
'{"working_dir": "."}'`) to nodes that have the dependencies.

Cluster: `--ray-address`, else `RAY_ADDRESS`, else a local cluster started here for the
sweep and shut down after it: loopback only, no dashboard, no usage stats, `num_cpus` CPUs.
Ray is the optional extra `capsched[ray]`; without it `RayUnavailable` says so.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import sqlite3
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from simulations.engine import RunResult, World, run_policy
from simulations.world import SweepTask

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'capsched[ray]'"


class RayUnavailable(RuntimeError):
    """Ray cannot be imported here (the optional extra is not installed)."""


class ClusterUnavailable(RuntimeError):
    """The Ray cluster could not be started or joined."""


def import_ray(address: str | None) -> ModuleType:
    """Import Ray, set up for a local cluster when `address` is None or on loopback.

    The environment is read by Ray at import time, so it is set first: no usage stats;
    and for a cluster on this machine a loopback node address (Ray otherwise rewrites
    127.0.0.1 to the machine's outside address, and its servers listen there; the
    variable's name is historical, it switches off multi-node networking on any platform).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None or _on_loopback(address):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise RayUnavailable(
            f"--executor ray needs Ray, which is not installed here: {INSTALL_HINT}"
        ) from None
    return ray


def _on_loopback(address: str) -> bool:
    """Whether a Ray address ("HOST:PORT", "ray://HOST:PORT") names this machine."""
    host = urlsplit(address if "://" in address else f"//{address}").hostname
    if host is None:
        return False  # "auto" and the like: whatever Ray finds
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cluster_address(cli_address: str | None) -> str | None:
    """The cluster to join: the option, else RAY_ADDRESS, else None (start a local one)."""
    return cli_address or os.environ.get("RAY_ADDRESS") or None


def parse_runtime_env(text: str) -> dict[str, Any]:
    """`--ray-runtime-env`: a JSON object (Ray checks its keys when the sweep starts)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--ray-runtime-env: not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError("--ray-runtime-env: expected a JSON object")
    return value


def run_sweep(
    worlds: Mapping[str, World],
    tasks: Sequence[SweepTask],
    on_done: Callable[[SweepTask, RunResult], None],
    *,
    address: str | None,
    num_cpus: int,
    runtime_env: Mapping[str, Any] | None = None,
) -> None:
    """Run every task on Ray and call `on_done` on the driver as each one finishes.

    `worlds` maps each task's scenario to its world; the task's `state_db` is where the
    driver writes the run's database. `runtime_env` applies to the tasks (their code, for
    a cluster without capsched installed). A failed task cancels the others and its error
    is raised here (Ray's error type subclasses the task's own).
    """
    ray = import_ray(address)
    env = dict(runtime_env) if runtime_env is not None else None
    options: dict[str, Any] = {"num_cpus": 1, "max_retries": 0}
    started_here = not ray.is_initialized()
    if started_here:
        try:
            _init(ray, address, num_cpus, env)  # the job's env: ships a working_dir once
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = address or "a local cluster"
            message = f"--executor ray: cannot start or join {where}: {exc}"
            raise ClusterUnavailable(message) from exc
    elif env is not None:
        options["runtime_env"] = env  # joined a Ray session this process already had
    try:
        remote = ray.remote(**options)(replay_task)
        refs = {name: ray.put(world) for name, world in worlds.items()}
        pending: dict[Any, SweepTask] = {
            remote.remote(refs[t.scenario], t.policy): t for t in tasks
        }
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    task = pending.pop(ref)
                    result, database = ray.get(ref)
                    _write_database(task.state_db, database)
                    result.state_db = str(task.state_db)
                    on_done(task, result)
        finally:
            for ref in pending:
                ray.cancel(ref)
    finally:
        if started_here:
            ray.shutdown()


def _init(
    ray: ModuleType, address: str | None, num_cpus: int, runtime_env: dict[str, Any] | None
) -> None:
    if address is not None:
        log.info("ray_connect address=%s", address)
        ray.init(address=address, runtime_env=runtime_env, logging_level=logging.WARNING)
        return
    log.info("ray_local_cluster num_cpus=%d", num_cpus)
    ray.init(
        address="local",  # always a new cluster, never one found on the machine
        num_cpus=max(1, num_cpus),
        include_dashboard=False,
        runtime_env=runtime_env,
        logging_level=logging.WARNING,
    )


def replay_task(world: World, policy: str) -> tuple[RunResult, bytes]:
    """One replay on a worker: the result and its state database's bytes.

    The database lives in a scratch folder that is gone when the task returns; the
    result's `state_db` names that folder until the driver points it at its own copy.
    """
    with tempfile.TemporaryDirectory(prefix="capsched-sweep-") as scratch:
        db = Path(scratch) / "state.db"
        result = run_policy(world, policy, db)
        return result, database_bytes(db)


def database_bytes(path: Path) -> bytes:
    """The SQLite file at `path` with its write-ahead log folded in: one file to copy."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return path.read_bytes()


def _write_database(path: Path, data: bytes) -> None:
    # A log left beside an older database of the same name would be replayed into this
    # one on its first open.
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
