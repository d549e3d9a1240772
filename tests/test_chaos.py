"""Chaos: SIGKILL the daemon at 50 random moments while it scales up and down against
the simulated cloud kept on disk, restart it each time, then check that no node was
launched twice, none leaked, and the journal is consistent. Also what an unlucky operator
does to the state database (issue 15): a second daemon on it, an emptied one next to the
live cloud, and one restored from a backup after a `kill -9`."""

from __future__ import annotations

import asyncio
import math
import pickle
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from daemon_proc import start_daemon, wait_for_ticks

from adapters.sim import SimCloud
from scheduler.domain import NodeState
from scheduler.loop.store import StateStore, parse_node_id
from scheduler.ports.provider import InstanceState
from tui.backend import DbBackend

KILLS = 50
LIVE_CLOUD = {InstanceState.PENDING, InstanceState.RUNNING}


def write_world(tmp: Path, api: str = "api_port = 0", name: str = "capsched.toml") -> Path:
    # Demand swings between ~1 and ~10 nodes' worth every 30 minutes (virtual).
    rows = ["minute,requests,model,region"]
    for t in range(240):
        rpm = 300 + 2700 * (0.5 + 0.5 * math.sin(2 * math.pi * t / 30))
        rows.append(f"{t},{round(rpm)},llama-3.1-8b,us-east")
    (tmp / "trace.csv").write_text("\n".join(rows) + "\n")
    config = tmp / name
    config.write_text(
        f"""
[scheduler]
tick_interval_s = 300
state_db = "{tmp / "state.db"}"
[solver]
time_limit_s = 0.5
[daemon]
{api}
[guards]
min_node_age_s = 0
max_scale_down_fraction = 1.0
drain_timeout_s = 60
[sources]
trace = "{tmp / "trace.csv"}"
trace_format = "minute-csv"
speedup = 1200
sim_boot_time_s = 120
sim_state = "{tmp / "cloud.pkl"}"
[[models]]
name = "llama-3.1-8b"
[[regions]]
name = "us-east"
location = "us-east-1"
[clouds.aws]
regions = ["us-east-1", "us-east-2"]
gpu_kinds = ["L4", "L40S"]
[clouds.gcp]
enabled = false
"""
    )
    return config


@dataclass(frozen=True)
class Audit:
    """The simulated cloud on disk against the state database, after the daemons stopped."""

    cloud: SimCloud  # as the last daemon left it
    nodes: dict[str, NodeState]  # every node the database records
    launches_per_node: dict[str, int]  # launch journal entries per node id
    unknown: set[str]  # running, tagged as ours, never recorded
    leaked: set[str]  # running, but recorded as gone or failed
    ghosts: set[str]  # recorded as live (past requested), not in the cloud
    pending: int  # journal entries left pending


def audit(tmp: Path) -> Audit:
    with (tmp / "cloud.pkl").open("rb") as f:
        cloud = pickle.load(f)
    instances = list(cloud._instances.values())
    live_in_cloud = {i.node_id for i in instances if i.state in LIVE_CLOUD}
    store = StateStore(tmp / "state.db")
    nodes = {row["node_id"]: NodeState(row["state"]) for row in store.db.table("nodes").rows}
    live_in_store = {nid for nid, s in nodes.items() if s not in (NodeState.GONE, NodeState.FAILED)}
    launches_per_node: dict[str, int] = {}
    for entry in store.journal():
        if entry.kind == "launch":
            launches_per_node[entry.node_id] = launches_per_node.get(entry.node_id, 0) + 1
    assert len({i.cloud_instance_id for i in instances}) == len(instances)
    result = Audit(
        cloud=cloud,
        nodes=nodes,
        launches_per_node=launches_per_node,
        unknown=live_in_cloud - set(nodes),
        leaked={
            nid
            for nid in live_in_cloud
            if nid in nodes and nodes[nid] in (NodeState.GONE, NodeState.FAILED)
        },
        ghosts={
            nid
            for nid in live_in_store - live_in_cloud
            if nodes[nid] not in (NodeState.REQUESTED, NodeState.TERMINATING, NodeState.INTERRUPTED)
        },
        pending=len(store.journal("pending")),
    )
    store.close()
    return result


def stop(proc: subprocess.Popen[str], ticks: int = 3) -> str:
    """Let a running daemon tick, SIGTERM it, and return the rest of its log."""
    wait_for_ticks(proc, ticks)
    proc.send_signal(signal.SIGTERM)
    assert proc.stderr is not None
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, rest
    return rest


def test_kill_9_at_random_moments_neither_duplicates_nor_leaks(tmp_path: Path) -> None:
    config = write_world(tmp_path)
    rng = random.Random(20261126)
    for _ in range(KILLS):
        with start_daemon(config, tmp_path) as proc:
            wait_for_ticks(proc, 1)
            time.sleep(rng.uniform(0.0, 0.6))  # a random moment inside the next ticks
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)

    # A last clean run reconciles whatever the kills left half done.
    with start_daemon(config, tmp_path) as proc:
        stop(proc)

    a = audit(tmp_path)
    instances = list(a.cloud._instances.values())
    # Launching twice would show as one node id journaled as launched more than once, or
    # a cloud instance no journaled launch asked for. (Convergence to the plan under faults
    # is tests/test_faults.py's job; here the kills only have to leave nothing behind.)
    duplicates = {nid for nid, n in a.launches_per_node.items() if n > 1}
    duplicates |= {i.node_id for i in instances} - set(a.launches_per_node)
    print(
        f"\nchaos: kills={KILLS} launches={a.cloud.counters.launches}"
        f" terminations={a.cloud.counters.terminations} nodes={len(a.nodes)}"
        f" duplicates={len(duplicates)} leaked={len(a.leaked)}"
        f" unknown={len(a.unknown)} ghosts={len(a.ghosts)} pending_journal={a.pending}"
    )
    assert a.cloud.counters.launches > 10 and a.cloud.counters.terminations > 0  # it did scale
    assert duplicates == set()
    assert a.leaked == set()
    assert a.unknown == set()
    assert a.ghosts == set()
    assert a.pending == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.parametrize("api", ["api_port = 0", "api_port = {port}", 'api_socket = "{sock}"'])
def test_a_second_daemon_on_the_same_database_exits_2_naming_the_first(
    tmp_path: Path, api: str
) -> None:
    """Issue 15: two daemons on one state database both acted (45 + 35 launches in 25 s
    where one makes about 8), each marking the other's nodes gone."""
    first_config = write_world(tmp_path)
    second_api = api.format(port=_free_port(), sock=tmp_path / "api.sock")
    second_config = write_world(tmp_path, api=second_api, name="second.toml")
    with start_daemon(first_config, tmp_path) as first:
        wait_for_ticks(first, 1)
        second = subprocess.run(
            [sys.executable, "-m", "capsched.cli", "daemon", "--config", str(second_config)],
            capture_output=True, text=True, check=False, timeout=120, cwd=tmp_path,
        )  # fmt: skip
        assert second.returncode == 2, second.stderr
        errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in second.stderr
        assert f"pid {first.pid}" in errors[0] and "state.db.lock" in errors[0]
        assert "daemon_started" not in second.stderr  # it never ran a loop
        # Readers need no lock: the TUI browses the database the first daemon holds.
        browsed = asyncio.run(DbBackend(tmp_path / "state.db").nodes())
        assert browsed and all(n["node_id"] for n in browsed)
        wait_for_ticks(first, 2)  # the first goes on undisturbed
        launches = pickle.loads((tmp_path / "cloud.pkl").read_bytes()).counters.launches
        first.send_signal(signal.SIGKILL)  # the kernel drops the lock with the process
        first.wait(timeout=30)
    # The lock outlives no holder: the second daemon now starts and carries on the fleet.
    with start_daemon(second_config, tmp_path) as second_run:
        rest = stop(second_run)
    assert "Traceback" not in rest and "tick_error error=" not in rest
    a = audit(tmp_path)
    assert a.cloud.counters.launches >= launches
    assert a.unknown == a.leaked == a.ghosts == set() and a.pending == 0


def test_an_emptied_database_next_to_a_live_cloud_starts_only_with_adopt(
    tmp_path: Path,
) -> None:
    """Issue 15: a zero-length database beside the live cloud restarted the node-id counter
    at 1 and failed every launch with UNIQUE constraint failed: nodes.node_id."""
    config = write_world(tmp_path)
    with start_daemon(config, tmp_path) as proc:
        stop(proc, ticks=4)
    fleet = audit(tmp_path)
    old_ids = set(fleet.cloud._instances)
    running = {i.node_id for i in fleet.cloud._instances.values() if i.state in LIVE_CLOUD}
    assert running
    (tmp_path / "state.db").write_bytes(b"")  # lost: emptied in place

    refused = subprocess.run(
        [sys.executable, "-m", "capsched.cli", "daemon", "--config", str(config)],
        capture_output=True, text=True, check=False, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.returncode == 2, refused.stderr
    assert len(errors) == 1 and "--adopt" in errors[0] and "backup" in errors[0]
    assert f"{len(running)} running instance(s)" in errors[0]
    store = StateStore(tmp_path / "state.db")
    assert not store.has_nodes()  # nothing adopted, nothing done
    store.close()

    with start_daemon(config, tmp_path, args=["--adopt"]) as proc:
        rest = stop(proc, ticks=8)
    assert "UNIQUE" not in rest and "tick_error error=" not in rest and "Traceback" not in rest
    a = audit(tmp_path)
    assert running <= set(a.nodes)  # the fleet the lost database ran is adopted
    new_ids = set(a.launches_per_node)
    assert new_ids and not new_ids & old_ids  # new launches never reuse an id the cloud had
    assert a.unknown == a.leaked == a.ghosts == set() and a.pending == 0


def test_restored_backup_after_kill_9_neither_duplicates_nor_leaks(tmp_path: Path) -> None:
    """The restore path of docs/state.md: back up while the daemon runs, let it go on
    launching and terminating, kill -9 it, put the backup in place, start again."""
    config = write_world(tmp_path)
    db = tmp_path / "state.db"
    backup = tmp_path / "backup.db"
    with start_daemon(config, tmp_path) as proc:
        wait_for_ticks(proc, 4)
        done = subprocess.run(
            [sys.executable, "-m", "capsched.cli", "backup", "--config", str(config),
             "--to", str(backup)],
            capture_output=True, text=True, check=False, timeout=120, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        wait_for_ticks(proc, 12)  # launches and terminations the backup does not know
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    lost_cloud = pickle.loads((tmp_path / "cloud.pkl").read_bytes())
    issued_before = set(lost_cloud._instances)
    # What the restored daemon can see of them: the cloud lists live instances (and
    # reclaimed ones for a while), not those the lost daemon terminated after the backup.
    listed = asyncio.run(lost_cloud.list_instances())
    top_listed = max((_seq(i.node_id) for i in listed), default=0)
    conn = sqlite3.connect(f"{backup.as_uri()}?mode=ro", uri=True)
    in_backup = {r[0] for r in conn.execute("select node_id from journal where kind = 'launch'")}
    conn.close()
    assert in_backup and len(in_backup) < len(issued_before)  # it went on after the backup
    assert Path(f"{db}-wal").exists()  # what the killed daemon left, to be discarded

    # Restore as docs/state.md says: the backup in place, the stale WAL of the lost one gone.
    for stale in (Path(f"{db}-wal"), Path(f"{db}-shm")):
        stale.unlink(missing_ok=True)
    shutil.copyfile(backup, db)
    with start_daemon(config, tmp_path) as proc:  # not new: no --adopt needed
        rest = stop(proc, ticks=12)
    assert "Traceback" not in rest and "tick_error error=" not in rest

    a = audit(tmp_path)
    after = set(a.launches_per_node) - in_backup  # launched by the restored database
    instances = list(a.cloud._instances.values())
    duplicates = {nid for nid, n in a.launches_per_node.items() if n > 1}
    duplicates |= after & issued_before  # a launch the cloud answered with an old instance
    print(
        f"\nrestore: issued_before={len(issued_before)} launched_in_backup={len(in_backup)}"
        f" issued_after={len(after)} instances={len(instances)}"
        f" duplicates={len(duplicates)} leaked={len(a.leaked)} unknown={len(a.unknown)}"
    )
    assert after  # it launched after the restore
    assert duplicates == set()
    # New ids carry the backup's own prefix (`capsched backup`), so none can be an id the
    # lost database handed out after the backup, listed or not; and their sequence is above
    # every id the cloud still lists (docs/state.md, "Restore").
    lost_prefixes = {_prefix(nid) for nid in issued_before - in_backup}
    assert {_prefix(nid) for nid in after}.isdisjoint(lost_prefixes)
    assert min(_seq(nid) for nid in after) > top_listed
    assert len({i.node_id for i in instances}) == len(instances) == a.cloud.counters.launches
    assert a.unknown == a.leaked == a.ghosts == set() and a.pending == 0


def _seq(node_id: str) -> int:
    parts = parse_node_id(node_id)
    assert parts is not None, node_id
    return parts.seq


def _prefix(node_id: str) -> str:
    parts = parse_node_id(node_id)
    assert parts is not None, node_id
    return parts.prefix
