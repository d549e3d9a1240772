"""The state database's guards (issue 15): one daemon per database, node ids that never
repeat across databases or after a restore, corruption noticed at start and on SIGHUP,
and `capsched backup`. The subprocess cases with real daemons are in tests/test_chaos.py."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import Clock, no_sleep
from hypothesis import given
from hypothesis import strategies as st

from adapters.sim import SimCloud
from capsched.cli import main as cli_main
from scheduler.config import Config, load_config
from scheduler.decide.decision import TickError
from scheduler.domain import Cloud, Market, Node, NodeState, Pool
from scheduler.domain.actions import Launch
from scheduler.fleet.catalog import load_catalog
from scheduler.loop.factory import build_scheduler
from scheduler.loop.state_lock import StateLock, StateLockHeld, lock_path_for
from scheduler.loop.store import (
    MIGRATIONS,
    StateDamaged,
    StateStore,
    check_integrity,
    parse_node_id,
)
from scheduler.ports.metrics import DemandSample
from scheduler.service.daemon import Daemon

MODEL, REGION = "llama-3.1-8b", "us-east"
POOL = Pool(Cloud.AWS, "us-east-1", "", "g6.xlarge", Market.SPOT)


def make_config(db: Path) -> Config:
    return Config.model_validate(
        {
            "scheduler": {"state_db": str(db)},
            "models": [{"name": MODEL, "min_replicas": 1}],
            "regions": [{"name": REGION, "location": "us-east-1", "max_latency_ms": 40}],
            "clouds": {
                "aws": {"regions": ["us-east-1", "us-east-2"], "gpu_kinds": ["L4", "L40S"]},
                "gcp": {"enabled": False},
            },
            "planning": {"robustness_fraction": 0.5, "budget_usd_per_hour": None},
            "solver": {"time_limit_s": 2.0},
            "guards": {"min_node_age_s": 0, "max_scale_down_fraction": 1.0},
        }
    )


class Metrics:
    def __init__(self, rps: float) -> None:
        self.rps = rps

    async def demand(self, now_s: float) -> DemandSample:
        return DemandSample(now_s, {(MODEL, REGION): self.rps})


def adopt(store: StateStore, node_id: str) -> None:
    """Record a node as the reconciler records an instance it finds tagged as ours."""
    store.add_node(Node(node_id, MODEL, POOL, NodeState.READY, "i-1", 0.0), 0.0, "adopted")


def seq(node_id: str) -> int:
    parts = parse_node_id(node_id)
    assert parts is not None, node_id
    return parts.seq


def corrupt_table(path: Path, table: str) -> None:
    """Random bytes over the root page of `table` (as a bad disk or a stray write would)."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the pages live in the main file now
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("select rootpage from sqlite_master where name = ?", (table,)).fetchone()
    conn.close()
    with path.open("r+b") as f:
        f.seek((root[0] - 1) * page_size)
        f.write(os.urandom(page_size))


# -- ids ----------------------------------------------------------------------------------------


def test_ids_carry_a_per_database_prefix_and_never_repeat_across_databases(
    tmp_path: Path,
) -> None:
    a, b = StateStore(tmp_path / "a.db"), StateStore(tmp_path / "b.db")
    ids_a = [a.next_node_id() for _ in range(3)]
    ids_b = [b.next_node_id() for _ in range(3)]
    assert not set(ids_a) & set(ids_b)
    parts = parse_node_id(ids_a[0])
    assert parts is not None and parts.prefix == a.id_prefix and parts.seq == 1
    assert ids_a[0] == f"{a.id_prefix}-00000001" and len(a.id_prefix) == len("cs-") + 6
    a.close()
    assert StateStore(tmp_path / "a.db").next_node_id() == f"{a.id_prefix}-00000004"


@pytest.mark.parametrize(
    ("node_id", "prefix", "number"),
    [
        ("cs-00000042", "cs", 42),
        ("cs-3fa9c2-00000007", "cs-3fa9c2", 7),
        ("cs-123456-1", "cs-123456", 1),
    ],
)
def test_both_id_forms_parse(node_id: str, prefix: str, number: int) -> None:
    parts = parse_node_id(node_id)
    assert parts is not None and (parts.prefix, parts.seq) == (prefix, number)


@pytest.mark.parametrize("node_id", ["cs-stray", "i-0abc", "cs-3fa9c2-", "cs-" + "9" * 19, ""])
def test_ids_in_no_form_we_write_do_not_parse(node_id: str) -> None:
    assert parse_node_id(node_id) is None


# What a database may meet: ids it adopts (its own, old-form ones, other databases'),
# ids of ended instances the cloud lists, and ids it hands out itself.
_FOREIGN = "cs-abcdef"
_operation = st.one_of(
    st.tuples(st.just("new"), st.just(0)),
    st.tuples(
        st.sampled_from(["adopt_old", "adopt_own", "adopt_foreign", "seen"]), st.integers(1, 60)
    ),
)


@given(ops=st.lists(_operation, max_size=40))
def test_a_new_id_is_never_one_on_record_and_the_sequence_only_grows(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int]]
) -> None:
    store = StateStore(tmp_path_factory.mktemp("ids") / "s.db")
    assert store.id_prefix != _FOREIGN
    own = store.id_prefix
    known: set[str] = set()
    issued: list[int] = []
    floor = 0  # the highest sequence number of every id recorded or seen so far
    for op, n in ops:
        if op == "new":
            node_id = store.next_node_id()
            assert node_id not in known
            assert seq(node_id) > floor and (not issued or seq(node_id) > issued[-1])
            issued.append(seq(node_id))
            floor = seq(node_id)
            adopt(store, node_id)  # launched: recorded like any other
            known.add(node_id)
            continue
        node_id = {
            "adopt_old": f"cs-{n:08d}",
            "adopt_own": f"{own}-{n:08d}",
            "adopt_foreign": f"{_FOREIGN}-{n:08d}",
            "seen": f"{own}-{n:08d}",
        }[op]
        if node_id in known:
            continue
        known.add(node_id)
        if op == "seen":
            store.note_node_ids([node_id])  # an ended instance the cloud still lists
        else:
            adopt(store, node_id)
        floor = max(floor, n)  # another database's ids count too: the sequence only grows
    store.close()


def test_old_databases_keep_their_ids_and_continue_above_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A database from before migration 5 whose counter fell behind an adopted id (the
    # state issue 15 found after an emptied database adopted its old fleet).
    path = tmp_path / "v4.db"
    with monkeypatch.context() as m:
        m.setattr("scheduler.loop.store.MIGRATIONS", MIGRATIONS[:4])
        old = StateStore(path)
        assert old.next_node_id() == "cs-00000001"
        adopt(old, "cs-00000007")
        old.close()
    store = StateStore(path)
    new = store.next_node_id()
    assert new.startswith(store.id_prefix + "-") and store.id_prefix != "cs"
    assert seq(new) == 8
    node = store.node("cs-00000007")
    assert node is not None and node.state is NodeState.READY


async def test_an_emptied_database_next_to_a_live_fleet_adopts_and_keeps_launching(
    tmp_path: Path,
) -> None:
    """Issue 15: a zero-length database beside a cloud still running its fleet adopted the
    nodes, restarted the id counter at 1 and failed every launch on the UNIQUE constraint."""
    catalog = load_catalog()
    cloud = SimCloud(catalog.offerings, catalog.instance_types, boot_time_s=60)
    metrics = Metrics(20.0)
    lost = StateStore(tmp_path / "lost.db")
    rec = build_scheduler(
        make_config(tmp_path / "lost.db"), provider=cloud, metrics=metrics, store=lost,
        sleep=no_sleep,
    )  # fmt: skip
    for now in (0.0, 300.0):
        cloud.advance_to(now)
        await rec.tick(now)
    fleet = {i.node_id for i in await cloud.list_instances()}
    assert len(fleet) >= 2
    lost.close()

    (tmp_path / "new.db").write_bytes(b"")  # the database is emptied
    store = StateStore(tmp_path / "new.db")
    rec = build_scheduler(
        make_config(tmp_path / "new.db"), provider=cloud, metrics=metrics, store=store,
        sleep=no_sleep,
    )  # fmt: skip
    metrics.rps = 60.0  # more demand: the fleet has to grow
    errors: list[TickError] = []
    launched: list[str] = []
    for now in (600.0, 900.0, 1200.0):
        cloud.advance_to(now)
        report = await rec.tick(now)
        errors += report.errors
        launched += [a.node_id for a in report.actions if isinstance(a, Launch)]
    assert errors == []  # was: IntegrityError UNIQUE constraint failed: nodes.node_id
    assert all(store.node(i) is not None for i in fleet)  # the old fleet is adopted
    assert launched and not set(launched) & fleet  # and the fleet grew with fresh ids
    live = {n.node_id for n in store.live_nodes()}
    assert len(live) > len(fleet)
    assert {i.node_id for i in await cloud.list_instances()} == live


# -- the lock -----------------------------------------------------------------------------------


def test_a_second_lock_on_one_database_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    held = StateLock.acquire(db)
    with pytest.raises(StateLockHeld) as refused:
        StateLock.acquire(db)  # another open file description: flock conflicts as across processes
    assert refused.value.holder_pid == os.getpid()
    assert str(os.getpid()) in str(refused.value) and str(lock_path_for(db)) in str(refused.value)
    StateLock.acquire(tmp_path / "other.db").release()  # another database is another lock
    held.release()
    StateLock.acquire(db).release()  # free again


# -- integrity ----------------------------------------------------------------------------------


def seeded_store(path: Path, nodes: int = 300) -> StateStore:
    """A store with enough rows that the journal and nodes span several pages."""
    store = StateStore(path)
    for i in range(nodes):
        node_id = store.next_node_id()
        adopt(store, node_id)
        entry = store.journal_begin("launch", node_id, float(i), "plan wants more " * 4)
        if i % 7:
            store.journal_end(entry, "done", float(i), "i-1")
    return store


def test_quick_check_finds_random_bytes_over_a_page(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    seeded_store(path).close()
    assert check_integrity(path) == []
    corrupt_table(path, "journal")
    problems = check_integrity(path)
    assert problems and all(isinstance(p, str) for p in problems)


def test_quick_check_of_a_new_or_missing_database_finds_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty.db").write_bytes(b"")
    assert check_integrity(tmp_path / "empty.db") == []
    assert check_integrity(tmp_path / "missing.db") == []
    assert not (tmp_path / "missing.db").exists()  # the check creates nothing


def test_quick_check_of_a_file_that_is_no_database_reports_it(tmp_path: Path) -> None:
    (tmp_path / "junk.db").write_bytes(os.urandom(8192))
    assert check_integrity(tmp_path / "junk.db")


def write_config(tmp_path: Path, db: str | Path) -> Path:
    config_path = tmp_path / "capsched.toml"
    config_path.write_text(
        f'[scheduler]\nstate_db = "{db}"\n[daemon]\napi_port = 0\n'
        f'token_file = "{tmp_path / "capsched.token"}"\n'
        f'[[models]]\nname = "{MODEL}"\nmin_replicas = 1\n[[models]]\nname = "llama-3.1-70b"\n'
        f'[[regions]]\nname = "{REGION}"\nlocation = "us-east-1"\n'
        '[clouds.aws]\nregions = ["us-east-1"]\n[clouds.gcp]\nenabled = false\n'
    )
    return config_path


def make_daemon(tmp_path: Path, store: StateStore) -> tuple[Daemon, SimCloud]:
    config_path = write_config(tmp_path, store.path)
    config = load_config(config_path)
    catalog = load_catalog()
    cloud = SimCloud(catalog.offerings, catalog.instance_types, boot_time_s=60)
    rec = build_scheduler(
        config, provider=cloud, metrics=Metrics(20.0), store=store, sleep=no_sleep
    )
    clock = Clock()

    async def advance(now_s: float) -> None:
        cloud.advance_to(now_s)

    daemon = Daemon(
        config=config, config_path=config_path, reconciler=rec, store=store, clock=clock,
        advance=advance,
    )  # fmt: skip
    return daemon, cloud


async def test_recover_on_a_malformed_database_raises_one_line_not_a_traceback(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    seeded_store(path).close()
    corrupt_table(path, "journal")
    store = StateStore(path)  # opens: meta and the schema are intact
    daemon, _ = make_daemon(tmp_path, store)
    with pytest.raises(StateDamaged) as damaged:
        await daemon.recover()
    assert "\n" not in str(damaged.value) and str(path) in str(damaged.value)
    store.close()


async def test_sighup_on_a_damaged_database_logs_an_error_and_stops_acting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = seeded_store(tmp_path / "s.db", nodes=0)
    daemon, cloud = make_daemon(tmp_path, store)
    await daemon.hangup()  # a healthy database: nothing changes
    assert not daemon.paused and daemon.status()["state_db_problem"] == ""
    # Config generations fill pages the store does not read again while it runs: the
    # damage is there all the same, and only the check notices it.
    for i in range(200):
        store.record_config(float(i), "x", "filler " * 40)
    corrupt_table(Path(store.path), "config_generations")
    with caplog.at_level(logging.ERROR, logger="scheduler.service.daemon"):
        await daemon.hangup()
    assert daemon.paused
    assert daemon.status()["state_db_problem"]
    assert any("state_db_damaged" in r.getMessage() for r in caplog.records)
    launches_before = len([c for c in cloud.calls if c[0] == "launch"])
    report = await daemon.tick_once()
    assert report is not None and report.actions == ()  # observed and planned, acted on nothing
    assert len([c for c in cloud.calls if c[0] == "launch"]) == launches_before


# -- backups ------------------------------------------------------------------------------------


def run_cli(*args: str) -> int:
    return cli_main(list(args))


def test_backup_copies_the_state_and_gives_the_copy_its_own_id_prefix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = seeded_store(tmp_path / "state.db", nodes=20)
    last = store.next_node_id()
    # The store stays open (as a running daemon keeps it): the backup needs no lock.
    assert (
        run_cli("backup", "--db", str(tmp_path / "state.db"), "--to", str(tmp_path / "b.db")) == 0
    )
    assert "20 nodes" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("b.db")) == ["b.db"]
    restored = StateStore(tmp_path / "b.db")
    assert restored.id_prefix != store.id_prefix
    assert {n.node_id for n in restored.live_nodes()} == {n.node_id for n in store.live_nodes()}
    assert len(restored.journal()) == len(store.journal())
    after = restored.next_node_id()
    assert after.startswith(restored.id_prefix) and seq(after) > seq(last)
    store.close()
    restored.close()


def test_backup_refuses_to_overwrite_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seeded_store(tmp_path / "state.db", nodes=3).close()
    dest = tmp_path / "b.db"
    dest.write_bytes(b"an older backup")
    assert run_cli("backup", "--db", str(tmp_path / "state.db"), "--to", str(dest)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(dest) in err and "--force" in err
    assert dest.read_bytes() == b"an older backup"
    assert run_cli("backup", "--db", str(tmp_path / "state.db"), "--to", str(dest), "--force") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.db", "state.db"]  # no temp left
    assert check_integrity(dest) == []
    restored = StateStore(dest)
    assert restored.has_nodes()
    restored.close()


def test_backup_of_a_damaged_database_keeps_the_last_good_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "state.db"
    seeded_store(db).close()
    good = tmp_path / "b.db"
    assert run_cli("backup", "--db", str(db), "--to", str(good)) == 0
    before = good.read_bytes()
    corrupt_table(db, "journal")
    capsys.readouterr()
    assert run_cli("backup", "--db", str(db), "--to", str(good), "--force") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "integrity" in err and "Traceback" not in err
    assert good.read_bytes() == before


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--db", "{tmp}/missing.db", "--to", "{tmp}/b.db"], "no such database"),
        (["--db", "{tmp}/state.db", "--to", "{tmp}/nodir/b.db"], "does not exist"),
    ],
)
def test_backup_bad_paths_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    seeded_store(tmp_path / "state.db", nodes=1).close()
    assert run_cli("backup", *[a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err
    assert not (tmp_path / "missing.db").exists()


def test_daemon_refuses_a_damaged_database_with_a_restore_line(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    seeded_store(db).close()
    corrupt_table(db, "nodes")
    config = write_config(tmp_path, db)
    proc = subprocess.run(
        [sys.executable, "-m", "capsched.cli", "daemon", "--config", str(config)],
        capture_output=True, text=True, check=False, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, proc.stderr
    assert len(errors) == 1 and "damaged" in errors[0] and "backup" in errors[0]
    assert "docs/state.md" in errors[0] and "Traceback" not in proc.stderr


async def test_daemon_start_on_damage_only_recovery_meets_exits_2_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 15: over some pages `recover()` crashed with a traceback (rc 1). Damage the
    start's quick_check does not see (it is bypassed here) must still end in one line."""
    from capsched.service import run_daemon

    db = tmp_path / "state.db"
    seeded_store(db).close()
    corrupt_table(db, "journal")
    monkeypatch.setattr("capsched.service.check_integrity", lambda path: [])
    config = write_config(tmp_path, db)
    code = await run_daemon(load_config(config), config)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2
    assert len(errors) == 1 and "cannot recover" in errors[0] and "backup" in errors[0]
    assert "Traceback" not in err
    StateLock.acquire(db).release()  # and the lock was let go


def test_a_replay_fixes_its_id_prefix_and_an_existing_database_keeps_its_own(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path / "replay.db", id_prefix="cs-00002a")
    assert store.next_node_id() == "cs-00002a-00000001"
    store.close()
    again = StateStore(tmp_path / "replay.db", id_prefix="cs-ffffff")  # not created here
    assert again.next_node_id() == "cs-00002a-00000002"
    again.close()
    with pytest.raises(ValueError, match="cs-<6 hex digits>"):
        StateStore(tmp_path / "bad.db", id_prefix="cs-XYZ")
