"""The SQLite state store: WAL, transitions with causes, journal, ids across restarts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.decide.cooldown import PoolCooldown, PoolCooling
from scheduler.decide.health import Streak
from scheduler.domain import Cloud, Market, Node, NodeState, Pool, RequestSize, SizeBucket
from scheduler.domain.lifecycle import IllegalTransition
from scheduler.loop.store import MIGRATIONS, DemandRecord, StateReader, StateStore

POOL = Pool(Cloud.AWS, "us-east-1", "", "g6.xlarge", Market.SPOT)


def new_node(store: StateStore, at_s: float = 0.0) -> Node:
    node = Node(store.next_node_id(), "llama-3.1-8b", POOL, NodeState.REQUESTED, launched_at_s=at_s)
    store.add_node(node, at_s, cause="test")
    return node


def test_wal_is_on_and_schema_versioned(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.db")
    assert store.db.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("select value from meta where key='schema_version'").fetchone()[
        0
    ] == str(len(MIGRATIONS))


def test_transitions_are_recorded_with_causes(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.db")
    node = new_node(store)
    store.transition(node.node_id, NodeState.BOOTING, 1.0, "accepted", cloud_instance_id="i-1")
    store.transition(node.node_id, NodeState.READY, 2.0, "healthy")
    got = store.node(node.node_id)
    assert got is not None and got.state is NodeState.READY and got.cloud_instance_id == "i-1"
    assert got.state_since_s == 2.0
    events = [(e["old"], e["new"], e["cause"]) for e in store.events(node.node_id)]
    assert events == [
        ("", "requested", "test"),
        ("requested", "booting", "accepted"),
        ("booting", "ready", "healthy"),
    ]


def test_illegal_transition_changes_nothing(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.db")
    node = new_node(store)
    with pytest.raises(IllegalTransition):
        store.transition(node.node_id, NodeState.DRAINING, 1.0, "bad")
    got = store.node(node.node_id)
    assert got is not None and got.state is NodeState.REQUESTED
    assert len(store.events(node.node_id)) == 1


def test_node_ids_stay_unique_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    first = StateStore(path)
    ids = {first.next_node_id() for _ in range(3)}
    first.close()
    second = StateStore(path)  # migrations are not re-applied; the counter carries on
    ids |= {second.next_node_id() for _ in range(3)}
    assert len(ids) == 6


def test_journal_keeps_pending_entries_until_closed(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.db")
    a = store.journal_begin("launch", "cs-1", 0.0, "plan")
    b = store.journal_begin("terminate", "cs-2", 0.0, "plan")
    store.journal_end(a, "done", 1.0, "i-1")
    assert [e.node_id for e in store.journal("pending")] == ["cs-2"]
    assert [e.status for e in store.journal()] == ["done", "pending"]
    assert b > a


def test_failed_transaction_rolls_back(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.db")
    with pytest.raises(RuntimeError), store.transaction():
        new_node(store)
        raise RuntimeError("crash between the two writes")
    assert store.live_nodes() == []


def test_demand_history_keeps_numbers_and_prunes_old_rows(tmp_path: Path) -> None:
    from scheduler.loop.store import DEMAND_HISTORY_S

    store = StateStore(tmp_path / "s.db")
    store.record_demand(0.0, [DemandRecord("m", "r", 1.5, float("nan"), 2.0, {0.95: 3.0})])
    garbage = DemandRecord("m", "r", "garbage", 4.0, 2.5, {})  # type: ignore[arg-type]
    store.record_demand(60.0, [garbage])
    rows = store.demand_history()
    assert [(r["rps"], r["peak_rps"], r["planned_rps"]) for r in rows] == [
        (1.5, None, 2.0),
        (None, 4.0, 2.5),
    ]
    assert rows[0]["forecast"] == {"0.95": 3.0}
    assert [r["at_s"] for r in store.demand_history(since_s=0.0)] == [60.0]
    store.record_demand(DEMAND_HISTORY_S + 30.0, [DemandRecord("m", "r", 1.0, 1.0, 1.0, {})])
    assert [r["at_s"] for r in store.demand_history()] == [60.0, DEMAND_HISTORY_S + 30.0]


def test_config_generations_count_across_restarts(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.db")
    assert store.record_config(0.0, "a.toml", "x = 1") == 1
    store.close()
    store = StateStore(tmp_path / "s.db")
    assert store.record_config(5.0, "a.toml", "x = 2") == 2


def test_addresses_are_kept_and_survive_a_restart(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.db")
    known = Node("cs-a", "m", POOL, NodeState.REQUESTED, address="10.0.0.7")
    store.add_node(known, 0.0, cause="test")
    later = new_node(store)
    assert store.node(later.node_id).address is None  # type: ignore[union-attr]
    store.set_address(later.node_id, "10.0.0.8")
    store.close()
    reopened = StateStore(tmp_path / "s.db")
    assert {n.node_id: n.address for n in reopened.live_nodes()} == {
        "cs-a": "10.0.0.7",
        later.node_id: "10.0.0.8",
    }
    assert reopened.events(later.node_id)[-1]["new"] == "requested"  # not a transition


def test_migration_4_adds_addresses_to_an_existing_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v3.db"
    with monkeypatch.context() as m:
        m.setattr("scheduler.loop.store.MIGRATIONS", MIGRATIONS[:3])
        old = StateStore(path)
    row = {"node_id": "cs-old", "model": "m", "cloud": "aws", "region": "us-east-1", "zone": ""}
    row |= {"instance_type": "g6.xlarge", "market": "spot", "state": "ready"}
    old.db.table("nodes").insert(row)  # a node as schema 3 stored it
    old.close()
    store = StateStore(path)
    version = store.db.execute("select value from meta where key='schema_version'").fetchone()
    assert version[0] == str(len(MIGRATIONS))
    node = store.node("cs-old")
    assert node is not None and node.state is NodeState.READY and node.address is None
    store.set_address("cs-old", "10.1.2.3")
    assert store.node("cs-old").address == "10.1.2.3"  # type: ignore[union-attr]


# -- the live-node cache: never an answer the database would not give ----------------------


def test_live_nodes_follow_the_stores_own_writes(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.db")
    a = new_node(store)
    assert [n.node_id for n in store.live_nodes()] == [a.node_id]
    b = new_node(store)  # a write after the read
    assert [n.node_id for n in store.live_nodes()] == [a.node_id, b.node_id]
    store.transition(a.node_id, NodeState.FAILED, 1.0, "refused")
    assert [n.node_id for n in store.live_nodes()] == [b.node_id]
    assert store.node(a.node_id).state is NodeState.FAILED  # type: ignore[union-attr]
    store.set_address(b.node_id, "10.0.0.9")
    assert store.node(b.node_id).address == "10.0.0.9"  # type: ignore[union-attr]
    assert store.live_nodes()[0].address == "10.0.0.9"


def test_live_nodes_stay_right_across_writes_to_other_tables(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.db")
    a = new_node(store)
    before = store.live_nodes()
    entry = store.journal_begin("launch", a.node_id, 0.0, "plan")
    store.journal_end(entry, "done", 1.0, "i-1")
    store.record_demand(1.0, [DemandRecord("m", "r", 1.0, 1.0, 1.0, {})])
    assert store.live_nodes() == before
    store.transition(a.node_id, NodeState.BOOTING, 2.0, "accepted", cloud_instance_id="i-1")
    assert [(n.state, n.cloud_instance_id) for n in store.live_nodes()] == [
        (NodeState.BOOTING, "i-1")
    ]


def test_live_nodes_see_writes_past_the_store_and_from_other_connections(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path / "s.db")
    a = new_node(store)
    assert store.live_nodes()[0].state is NodeState.REQUESTED
    store.db.table("nodes").update(a.node_id, {"state": "booting"})  # not through a method
    assert store.live_nodes()[0].state is NodeState.BOOTING
    other = StateStore(tmp_path / "s.db")  # a second process on the same file
    other.transition(a.node_id, NodeState.READY, 1.0, "healthy")
    assert store.live_nodes()[0].state is NodeState.READY
    assert store.node(a.node_id).state is NodeState.READY  # type: ignore[union-attr]
    b = new_node(other)
    assert [n.node_id for n in store.live_nodes()] == [a.node_id, b.node_id]


def test_live_nodes_read_inside_a_rolled_back_transaction_are_forgotten(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path / "s.db")
    kept = new_node(store)
    with pytest.raises(RuntimeError), store.transaction():
        lost = new_node(store)
        store.transition(kept.node_id, NodeState.FAILED, 1.0, "refused")
        assert [n.node_id for n in store.live_nodes()] == [lost.node_id]
        raise RuntimeError("crash")
    assert [n.node_id for n in store.live_nodes()] == [kept.node_id]
    assert store.node(kept.node_id).state is NodeState.REQUESTED  # type: ignore[union-attr]
    assert store.node(lost.node_id) is None


def test_updates_of_unknown_rows_raise_as_before(tmp_path: Path) -> None:
    from sqlite_utils.db import NotFoundError

    store = StateStore(tmp_path / "s.db")
    with pytest.raises(NotFoundError):
        store.set_address("cs-missing", "10.0.0.1")
    with pytest.raises(NotFoundError):
        store.journal_end(42, "done", 0.0, "none")
    with pytest.raises(KeyError):
        store.transition("cs-missing", NodeState.BOOTING, 0.0, "none")


# -- node health across restarts (migration 7) ----------------------------------------------

_times = st.lists(st.floats(-1e9, 1e9, allow_nan=False), max_size=5).map(tuple)
_cooling = st.builds(
    PoolCooling,
    st.one_of(st.none(), st.floats(-1e9, 1e9, allow_nan=False)),
    _times,
    _times,
    st.integers(0, 100),
    st.one_of(st.none(), st.floats(-1e9, 1e9, allow_nan=False)),
)
_pools = st.builds(
    Pool,
    st.sampled_from(list(Cloud)),
    st.sampled_from(["us-east-1", "us-central1"]),
    st.sampled_from(["", "us-central1-a"]),
    st.sampled_from(["g6.xlarge", "g2-standard-8"]),
    st.sampled_from(list(Market)),
)


@settings(max_examples=25, deadline=None)
@given(
    cooling=st.dictionaries(_pools, _cooling, max_size=6),
    streaks=st.dictionaries(
        st.text("abc-0123", min_size=1, max_size=8),
        st.builds(Streak, st.integers(0, 50), st.integers(0, 50),
                  st.floats(-1e9, 1e9, allow_nan=False)),
        max_size=6,
    ),
    replaced=st.lists(st.floats(0, 1e9, allow_nan=False), max_size=5),
)  # fmt: skip
def test_pool_cooldown_and_health_streaks_survive_a_restart(
    tmp_path_factory: pytest.TempPathFactory,
    cooling: dict[Pool, PoolCooling],
    streaks: dict[str, Streak],
    replaced: list[float],
) -> None:
    path = tmp_path_factory.mktemp("h") / "s.db"
    store = StateStore(path)
    store.save_pool_cooldown(cooling)
    store.save_health(streaks, replaced)
    store.close()
    reopened = StateStore(path)
    assert reopened.pool_cooldown() == cooling
    assert reopened.health_streaks() == streaks
    assert reopened.health_replacements() == sorted(replaced)
    # The cooldown rebuilt from what was stored is the one that was saved (a pool with
    # nothing to remember is no state).
    empty = PoolCooling(None, (), (), 0)
    assert PoolCooldown(reopened.pool_cooldown()).snapshot() == {
        p: c for p, c in cooling.items() if c != empty
    }
    reopened.close()


def test_migration_7_gives_an_existing_database_an_empty_health_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v6.db"
    with monkeypatch.context() as m:
        m.setattr("scheduler.loop.store.MIGRATIONS", MIGRATIONS[:6])
        StateStore(path).close()
    store = StateStore(path)
    assert store.pool_cooldown() == {} and store.health_streaks() == {}
    assert store.health_replacements() == []


# -- request sizes per tick (migration 8) ---------------------------------------------------


def test_sizes_and_buckets_are_kept_per_tick_and_series(tmp_path: Path) -> None:
    mix = (
        SizeBucket(0.0, 1024.0, 0.75, RequestSize(500.0, 120.0)),
        SizeBucket(1024.0, math.inf, 0.25, RequestSize(3000.0, 120.0)),
    )
    store = StateStore(tmp_path / "s.db")
    store.record_demand(
        0.0,
        [
            DemandRecord(
                "m",
                "r",
                2.0,
                2.0,
                3.0,
                {},
                size=RequestSize(1125.0, 120.0),
                planned_size=RequestSize(1200.0, 125.0),
                buckets=mix,
            ),
            DemandRecord("m", "s", 1.0, 1.0, 1.0, {}, size=RequestSize(math.nan, 10.0)),
        ],
    )
    sized, unsized = store.demand_history()
    assert (sized["input_tokens"], sized["output_tokens"]) == (1125.0, 120.0)
    assert (sized["planned_input_tokens"], sized["planned_output_tokens"]) == (1200.0, 125.0)
    assert [(b["range"], b["share"]) for b in sized["buckets"]] == [
        ("0-1024", 0.75),
        ("1024+", 0.25),
    ]
    # A size that is not a number is kept as unknown, never as a number.
    assert unsized["input_tokens"] is None and unsized["buckets"] == []
    store.close()
    reader = StateReader(tmp_path / "s.db")
    assert [(r["region"], r["input_tokens"]) for r in reader.latest_demand_sizes()] == [
        ("r", 1125.0),
        ("s", None),
    ]
    reader.close()


def test_a_read_only_reader_of_a_database_from_before_sizes_shows_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v7.db"
    with monkeypatch.context() as m:
        m.setattr("scheduler.loop.store.MIGRATIONS", MIGRATIONS[:7])
        StateStore(path).close()
    reader = StateReader(path)  # read-only: it cannot migrate
    assert reader.latest_demand_sizes() == []
    reader.close()
