"""The state store: SQLite through sqlite-utils, WAL on, one writer.

Holds nodes and their transition history, the action journal, plans, and the
counter behind node ids. Every write is a short explicit transaction, so a crash
at any moment leaves either the old or the new state, never half of one. One
`StateStore` object per process owns the connection (skypilot #1441 and friends:
SQLite shared as a global led to years of "database is locked").

Node ids read `cs-<6 hex>-<sequence>`: the hex part is drawn at random when the database
is created and kept in it, so a lost database's replacement (or a restored backup, which
`backup` gives a part of its own) never hands out an id the cloud has already seen; the
sequence never falls below an id on record (docs/state.md).

Schema changes are numbered migrations applied in order on open; sqlite-utils builds
them and serves the occasional reads. The writes of every tick (node transitions, their
events, the journal, plans, demand) are fixed parameterised statements on the connection:
sqlite-utils re-reads a table's layout (PRAGMA table_info and friends) on each insert or
update, which was most of a replay's time. The live nodes are cached in the store and
re-read only after something may have changed them (see `live_nodes`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlite_utils
from sqlite_utils.db import NotFoundError

from scheduler.decide.cooldown import PoolCooling
from scheduler.decide.health import Streak
from scheduler.decide.obtainability import PoolEvidence
from scheduler.domain import (
    Cloud,
    Market,
    Node,
    NodeState,
    Plan,
    Pool,
    RequestSize,
    SizeBucket,
    Unmet,
)
from scheduler.domain.lifecycle import LIVE, check_transition
from scheduler.forecast.band_feedback import BandMemory
from scheduler.ports.metrics import DemandSample

if TYPE_CHECKING:
    from scheduler.decide.guards import Held

log = logging.getLogger(__name__)


def _migration_1(db: sqlite_utils.Database) -> None:
    db.table("meta").create({"key": str, "value": str}, pk="key")
    db.table("nodes").create(
        {
            "node_id": str,
            "model": str,
            "cloud": str,
            "region": str,
            "zone": str,
            "instance_type": str,
            "market": str,
            "state": str,
            "cloud_instance_id": str,
            "launched_at_s": float,
            "state_since_s": float,
        },
        pk="node_id",
    )
    db.table("nodes").create_index(["state"])
    db.table("node_events").create(
        {"id": int, "node_id": str, "at_s": float, "old": str, "new": str, "cause": str},
        pk="id",
    )
    db.table("node_events").create_index(["node_id"])
    db.table("journal").create(
        {
            "id": int,
            "at_s": float,
            "kind": str,
            "node_id": str,
            "status": str,
            "detail": str,
            "updated_at_s": float,
        },
        pk="id",
    )
    db.table("journal").create_index(["status"])
    db.table("plans").create(
        {
            "id": int,
            "at_s": float,
            "policy": str,
            "status": str,
            "usd_per_hour": float,
            "objective": float,
            "gap": float,
            "solve_time_s": float,
            "placements": str,
            "unmet": str,
            "notes": str,
            "held_back": str,
        },
        pk="id",
    )


def _migration_2(db: sqlite_utils.Database) -> None:
    # Plans waiting for (or given) approval in manual and threshold modes.
    db.table("plans").add_column("approval", str, not_null_default="auto")


def _migration_3(db: sqlite_utils.Database) -> None:
    # What each tick saw and planned per series, the forecast quantiles behind the plan,
    # and every config the daemon ran with.
    db.table("demand").create(
        {
            "at_s": float,
            "model": str,
            "region": str,
            "rps": float,
            "peak_rps": float,
            "planned_rps": float,
            "forecast": str,
        },
    )
    db.table("demand").create_index(["at_s"])
    db.table("config_generations").create(
        {"generation": int, "at_s": float, "path": str, "text": str}, pk="generation"
    )


def _migration_4(db: sqlite_utils.Database) -> None:
    # Where each node is reachable, as its cloud lists it: the HTTP drainer scrapes the
    # node's metrics there, also after a restart. NULL until the cloud reports one.
    db.table("nodes").add_column("address", str)


# Node ids: "cs-" + the database's random part + a zero-padded sequence number, or the
# "cs-" + sequence form databases wrote before migration 5 (still read, adopted and counted).
_NODE_ID = re.compile(r"^cs-(?:(?P<part>[0-9a-f]{6})-)?(?P<seq>[0-9]{1,18})$")
_ID_PREFIX = re.compile(r"^cs-[0-9a-f]{6}$")


@dataclass(frozen=True, slots=True)
class NodeIdParts:
    """What a capsched node id is made of."""

    prefix: str  # "cs-3fa9c2" (per database), or "cs" for an id in the old form
    seq: int  # the database's sequence number


def parse_node_id(node_id: str) -> NodeIdParts | None:
    """The parts of a capsched node id, or None for an id in no form we write."""
    m = _NODE_ID.match(node_id)
    if m is None:
        return None
    part = m.group("part")
    return NodeIdParts(f"cs-{part}" if part else "cs", int(m.group("seq")))


def new_id_prefix() -> str:
    """A fresh random per-database part of node ids, e.g. "cs-3fa9c2"."""
    return f"cs-{secrets.token_hex(3)}"


def _seq_above(conn: sqlite3.Connection, node_ids: Iterable[str]) -> None:
    # Raise the stored sequence to the highest of `node_ids`, whatever their prefix (the
    # database a restored one replaced had another), so the sequence only ever grows
    # across a loss or a restore; never lowers it.
    top = 0
    for node_id in node_ids:
        parts = parse_node_id(node_id)
        if parts is not None:
            top = max(top, parts.seq)
    if top:
        conn.execute(
            "insert into meta (key, value) values ('node_seq', ?) on conflict (key) do update"
            " set value = excluded.value where cast(meta.value as integer) < ?",
            (str(top), top),
        )


def _migration_5(db: sqlite_utils.Database) -> None:
    # Node ids get a random per-database part, and the sequence is put above every id on
    # record: a database emptied next to a live cloud used to restart at cs-00000001 and
    # collide with the ids it had adopted (issue 15).
    conn = db.conn
    prefix = new_id_prefix()
    conn.execute("insert into meta (key, value) values ('node_id_prefix', ?)", (prefix,))
    _seq_above(conn, [r[0] for r in conn.execute("select node_id from nodes")])


def _migration_6(db: sqlite_utils.Database) -> None:
    # What capsched learned about each pool's capacity (scheduler/decide/obtainability.py): a
    # restarted daemon keeps avoiding the zone that just stocked out.
    db.table("pool_obtainability").create(
        {
            "cloud": str,
            "region": str,
            "zone": str,
            "instance_type": str,
            "market": str,
            "refusals": float,
            "preemptions": float,
            "at_s": float,
        },
        pk=("cloud", "region", "zone", "instance_type", "market"),
    )


def _migration_7(db: sqlite_utils.Database) -> None:
    # Node health across restarts (issue 21, docs/health.md): each pool's cooldown (until
    # when, its refusals and health strikes, whether strikes quarantined it), each checked
    # node's streak, and when ready nodes were last declared unhealthy (the replacement
    # limit's window). Without them a restarted daemon retried a quarantined pool at once
    # and a sick node needed a whole new streak of failed checks.
    db.table("pool_cooldown").create(
        {
            "cloud": str,
            "region": str,
            "zone": str,
            "instance_type": str,
            "market": str,
            "until_s": float,  # NULL: not cooling
            "refusals_s": str,  # JSON list of times
            "strikes_s": str,  # JSON list of times
            "quarantined_strikes": int,
            "good_launch_s": float,  # NULL: no healthy boot seen
        },
        pk=("cloud", "region", "zone", "instance_type", "market"),
    )
    db.table("health_streaks").create(
        {"node_id": str, "passes": int, "fails": int, "checked_at_s": float}, pk="node_id"
    )
    db.table("health_replacements").create({"at_s": float})


def _migration_8(db: sqlite_utils.Database) -> None:
    # Request sizes per tick and series (issue 20, docs/forecasting.md "Request sizes"):
    # the mean prompt / output tokens the load signal reported, the size the plan counted
    # the requests as, and the split by prompt length (JSON list of SizeBucket.to_json);
    # and what each plan provisioned for (JSON list of Demand.to_json). Rows written
    # before have NULL: unknown, which readers show as null / [].
    demand = db.table("demand")
    for column in (
        "input_tokens",
        "output_tokens",
        "planned_input_tokens",
        "planned_output_tokens",
    ):
        demand.add_column(column, float)
    demand.add_column("buckets", str)
    db.table("plans").add_column("demand", str)


def _migration_9(db: sqlite_utils.Database) -> None:
    # What a policy's forecast band has learnt (BandMemory.to_json), one row per policy,
    # replaced every tick: a restart takes it up instead of the plain quantile.
    db.table("band_memory").create({"policy": str, "at_s": float, "memory": str}, pk="policy")


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _migration_1,
    _migration_2,
    _migration_3,
    _migration_4,
    _migration_5,
    _migration_6,
    _migration_7,
    _migration_8,
    _migration_9,
]

# Demand history older than this is pruned as new rows arrive.
_HUGE = 1e300  # stands for an unbounded time in SQL (SQLite has no infinity literal)
DEMAND_HISTORY_S = 14 * 86400.0

# Columns a `Node` is built from, in the order `_node_from` reads them.
_NODE_COLUMNS = (
    "node_id, model, cloud, region, zone, instance_type, market, state, cloud_instance_id, "
    "launched_at_s, state_since_s, address"
)
_LIVE_STATES = tuple(sorted(s.value for s in LIVE))
_SELECT_LIVE = (
    f"select {_NODE_COLUMNS} from nodes where state in ({','.join('?' for _ in _LIVE_STATES)})"
    " order by node_id"
)
_SELECT_NODE = f"select {_NODE_COLUMNS} from nodes where node_id = ?"
_INSERT_NODE = f"insert into nodes ({_NODE_COLUMNS}) values ({','.join('?' * 12)})"
_INSERT_EVENT = "insert into node_events (node_id, at_s, old, new, cause) values (?, ?, ?, ?, ?)"
# A REAL as JSON may show, or NULL: SQLite's JSON writes an infinity as `Inf`.
_FINITE = "case when abs({0}) <= 1.7976931348623157e308 then {0} end"
# One JSON object per demand row, newest first through the at_s index (migration 3; its
# entries end in the rowid, so ordering a tick's rows by rowid costs no sort), stopped
# after `limit` rows.
_DEMAND_NUMBERS = (
    "at_s",
    "rps",
    "peak_rps",
    "planned_rps",
    "input_tokens",
    "output_tokens",
    "planned_input_tokens",
    "planned_output_tokens",
)
_SELECT_DEMAND_RECENT_JSON = (
    "select json_object('at_s', {at_s}, 'model', model, 'region', region, 'rps', {rps},"
    " 'peak_rps', {peak_rps}, 'planned_rps', {planned_rps},"
    " 'forecast', json(coalesce(forecast, '{{}}')),"
    " 'input_tokens', {input_tokens}, 'output_tokens', {output_tokens},"
    " 'planned_input_tokens', {planned_input_tokens},"
    " 'planned_output_tokens', {planned_output_tokens},"
    " 'buckets', json(coalesce(buckets, '[]')))"
    " from demand where at_s > ? order by at_s desc, rowid desc limit ?"
).format(**{c: _FINITE.format(c) for c in _DEMAND_NUMBERS})
# The rows of the newest tick, with their sizes (the TUI's Demand screen over a database;
# a tick writes one row per configured series). Rows written before migration 8 have none.
_SELECT_LATEST_SIZES = (
    "select model, region, at_s, input_tokens, output_tokens, planned_input_tokens,"
    " planned_output_tokens, buckets from demand"
    " where at_s = (select max(at_s) from demand) order by model, region"
)


def _pool_columns(pool: Pool) -> tuple[str, str, str, str, str]:
    """A pool as the store's columns: cloud, region, zone, instance_type, market."""
    return (pool.cloud.value, pool.region, pool.zone, pool.instance_type, pool.market.value)


def _pool_of(cloud: str, region: str, zone: str | None, itype: str, market: str) -> Pool:
    """The pool stored as `_pool_columns`."""
    return Pool(Cloud(cloud), region, zone or "", itype, Market(market))


def _dicts(conn: sqlite3.Connection, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
    # Rows as {column: value}, on any connection (no row factory needed).
    cur = conn.execute(sql, tuple(args))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur]


def _latest(
    conn: sqlite3.Connection, table: str, where: str | None, args: Sequence[Any], limit: int
) -> list[dict[str, Any]]:
    # The newest `limit` rows of `table` by id, newest first: readers page with a limit,
    # so a daemon that has run for months answers in constant time.
    cond = f" where {where}" if where else ""
    return _dicts(conn, f"select * from {table}{cond} order by id desc limit ?", [*args, limit])


def _recent_events(
    conn: sqlite3.Connection, limit: int, node_id: str | None, after_id: int | None
) -> list[dict[str, Any]]:
    where: list[str] = []
    args: list[Any] = []
    if node_id is not None:
        where.append("node_id = ?")
        args.append(node_id)
    if after_id is not None:
        where.append("id > ?")
        args.append(after_id)
    return _latest(conn, "node_events", " and ".join(where) or None, args, limit)[::-1]


def _recent_journal(
    conn: sqlite3.Connection, limit: int, status: str | None
) -> list[dict[str, Any]]:
    where, args = ("status = ?", [status]) if status else (None, [])
    return _latest(conn, "journal", where, args, limit)[::-1]


def stored_unmet(raw: str | None) -> tuple[Unmet, ...]:
    """A plans row's `unmet` column as records. Rows hold `Unmet.to_json` objects;
    rows stored before that hold lists, [model, region, rps] or, while issue 22 was under
    way, [model, region, rps, priority, reasons]: read here, once, so no reader ever
    sees a list. ValueError naming the entry when one is neither."""
    out: list[Unmet] = []
    for item in json.loads(raw) if raw else []:
        if isinstance(item, list) and 3 <= len(item) <= 5:
            model, region, rps, *rest = item
            priority = rest[0] if rest else 0
            item = {
                "model": model,
                "region": region,
                "rps": rps,
                "priority": priority,
                "reasons": rest[1] if len(rest) > 1 else [],
            }
        out.append(Unmet.from_json(item))
    return tuple(out)


def _finite_json(value: Any) -> Any:
    # JSON text without NaN or infinities (json.dumps would write `NaN`): null instead.
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_json(v) for v in value]
    return value


def _finite_or_none(v: object) -> float | None:
    # Load signals can hand over anything; the history keeps numbers only.
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


@dataclass(frozen=True, slots=True)
class DemandRecord:
    """What one tick saw and planned for one series (a row of the demand history)."""

    model: str  # model requested
    region: str  # source region
    rps: float  # observed rate (NaN: missing)
    peak_rps: float  # highest short-window rate of the tick (NaN: not known)
    planned_rps: float  # rate the plan provisions for (NaN: the policy does not say)
    quantiles: Mapping[float, float]  # forecast peak over the horizon per quantile level
    size: RequestSize | None = None  # mean size the load signal reported; None: unknown
    planned_size: RequestSize | None = None  # size the plan counted; None: the reference
    # The observed split by prompt length (DemandSample.buckets); empty: one mix.
    buckets: tuple[SizeBucket, ...] = ()


def _tokens(size: RequestSize | None) -> tuple[float | None, float | None]:
    if size is None:
        return None, None
    return _finite_or_none(size.input_tokens), _finite_or_none(size.output_tokens)


@dataclass(frozen=True, slots=True)
class _LiveCache:
    """The live nodes as last read, and the connection's write marks at that moment."""

    mark: tuple[int, int]  # (total_changes, data_version) when read or last known unchanged
    nodes: list[Node]  # live nodes in id order
    by_id: dict[str, Node]  # the same, by node id


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One action as journaled: written before the cloud call, closed after it."""

    id: int  # entry id
    at_s: float  # when the action was decided
    kind: str  # "launch" | "drain" | "terminate"
    node_id: str  # node acted on (the idempotency token for launches)
    status: str  # "pending" (cloud call may or may not have happened) | "done" | "failed"
    detail: str  # reason and outcome


class StateStore:
    """All of capsched's durable state. Not thread-safe: one owner."""

    def __init__(self, path: str | Path, *, id_prefix: str | None = None) -> None:
        """Open (or create) the store at `path`. `id_prefix` fixes the node-id part of a
        database this call creates (a replay that must repeat exactly); otherwise it is
        drawn at random, and an existing database keeps its own."""
        if id_prefix is not None and not _ID_PREFIX.match(id_prefix):
            raise ValueError(f"node id prefix {id_prefix!r}: expected cs-<6 hex digits>")
        self.path = str(path)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db = sqlite_utils.Database(conn)
        if self.path != ":memory:":
            self.db.enable_wal()
        conn.execute("PRAGMA synchronous=NORMAL")  # safe with WAL: a crash loses no commit
        conn.execute("PRAGMA busy_timeout=5000")
        self._conn = conn
        self._live: _LiveCache | None = None
        created = self._migrate() == 0
        if created and id_prefix is not None:
            conn.execute("update meta set value = ? where key = 'node_id_prefix'", (id_prefix,))
        row = conn.execute("select value from meta where key='node_id_prefix'").fetchone()
        # This database's part of every node id it hands out ("cs", the old form, only when
        # migration 5 has not run: tests that stop the migrations early).
        self.id_prefix: str = row[0] if row else "cs"

    # -- plumbing ---------------------------------------------------------------------------

    def _migrate(self) -> int:
        # Returns the schema version found (0: the database was created here).
        version = 0
        if "meta" in self.db.table_names():
            row = self.db.execute("select value from meta where key='schema_version'").fetchone()
            version = int(row[0]) if row else 0
        for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.transaction():
                migration(self.db)
                self.db.table("meta").upsert(
                    {"key": "schema_version", "value": str(number)}, pk="key"
                )
            log.info("store_migrated path=%s schema_version=%d", self.path, number)
        return version

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A short explicit transaction; nested use joins the outer one."""
        conn = self.db.conn
        if conn.in_transaction:
            yield
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            # Rolling back lowers no change counter: a cache read inside the transaction
            # could show rows that no longer exist.
            self._live = None
            raise
        conn.execute("COMMIT")

    def _mark(self) -> tuple[int, int]:
        # total_changes counts every row this connection wrote (also uncommitted ones);
        # data_version moves when another connection commits (a second process).
        row = self._conn.execute("PRAGMA data_version").fetchone()
        return self._conn.total_changes, int(row[0])

    @contextmanager
    def _nodes_untouched(self) -> Iterator[sqlite3.Connection]:
        """Writes in this block leave the nodes table alone, so a live cache that was
        valid before stays valid (if the block raises, it is dropped)."""
        live = self._live
        fresh = live is not None and live.mark == self._mark()
        yield self._conn
        if fresh and live is not None:
            self._live = _LiveCache(self._mark(), live.nodes, live.by_id)

    def close(self) -> None:
        """Close the connection."""
        self.db.conn.close()

    # -- ids ----------------------------------------------------------------------------------

    def next_node_id(self) -> str:
        """A new node id, unique for this store forever (survives restarts), above every
        id the store has recorded or been told of (`note_node_ids`), and carrying the
        database's random part, so no other database hands it out."""
        with self.transaction(), self._nodes_untouched() as conn:
            row = conn.execute("select value from meta where key='node_seq'").fetchone()
            seq = int(row[0]) + 1 if row else 1
            conn.execute(
                "insert into meta (key, value) values ('node_seq', ?)"
                " on conflict (key) do update set value = excluded.value",
                (str(seq),),
            )
        return f"{self.id_prefix}-{seq:08d}"

    def note_node_ids(self, node_ids: Iterable[str]) -> None:
        """Ids seen in the cloud (ended instances included): later ids go above them."""
        with self.transaction(), self._nodes_untouched() as conn:
            _seq_above(conn, node_ids)

    def has_nodes(self) -> bool:
        """Whether any node was ever recorded (False for a new or emptied database)."""
        return self._conn.execute("select 1 from nodes limit 1").fetchone() is not None

    # -- nodes --------------------------------------------------------------------------------

    @staticmethod
    def _node_from(row: tuple[Any, ...]) -> Node:
        # `row` holds _NODE_COLUMNS in order.
        (node_id, model, cloud, region, zone, itype, market, state, cid, launched, since, addr) = (
            row
        )
        return Node(
            node_id=node_id,
            model=model,
            pool=_pool_of(cloud, region, zone, itype, market),
            state=NodeState(state),
            cloud_instance_id=cid,
            launched_at_s=launched,
            state_since_s=since,
            address=addr or None,
        )

    def _live_cache(self) -> _LiveCache:
        mark = self._mark()
        live = self._live
        if live is None or live.mark != mark:
            nodes = [self._node_from(r) for r in self._conn.execute(_SELECT_LIVE, _LIVE_STATES)]
            live = self._live = _LiveCache(mark, nodes, {n.node_id: n for n in nodes})
        return live

    def node(self, node_id: str) -> Node | None:
        """The node `node_id`, or None."""
        live = self._live
        if live is not None and node_id in live.by_id and live.mark == self._mark():
            return live.by_id[node_id]
        row = self._conn.execute(_SELECT_NODE, (node_id,)).fetchone()
        return self._node_from(row) if row else None

    def live_nodes(self) -> list[Node]:
        """Nodes not gone or failed, in id order.

        A tick asks several times (observe, merge, drains) and writes far less often, so
        the answer is kept until something may have changed it: any row this connection
        wrote (SQLite's `total_changes`, which also catches writes past the store's
        methods) other than the store's own writes to other tables, a commit by another
        connection (`data_version`), or a rollback."""
        return list(self._live_cache().nodes)

    def add_node(self, node: Node, at_s: float, cause: str) -> None:
        """Record a new node (normally REQUESTED) and its first event."""
        pool = node.pool
        with self.transaction():
            self._conn.execute(
                _INSERT_NODE,
                (
                    node.node_id,
                    node.model,
                    *_pool_columns(pool),
                    node.state.value,
                    node.cloud_instance_id,
                    node.launched_at_s,
                    at_s,
                    node.address,
                ),
            )
            self._conn.execute(_INSERT_EVENT, (node.node_id, at_s, "", node.state.value, cause))
            # An adopted node may carry an id above the sequence (a restored database).
            _seq_above(self._conn, (node.node_id,))

    def transition(
        self,
        node_id: str,
        new: NodeState,
        at_s: float,
        cause: str,
        *,
        cloud_instance_id: str | None = None,
    ) -> Node:
        """Move a node to `new` (checked against the lifecycle table) and record why."""
        node = self.node(node_id)
        if node is None:
            raise KeyError(node_id)
        if node.state == new:
            return node
        check_transition(node.state, new)
        with self.transaction():
            if cloud_instance_id is None:
                self._conn.execute(
                    "update nodes set state = ?, state_since_s = ? where node_id = ?",
                    (new.value, at_s, node_id),
                )
            else:
                self._conn.execute(
                    "update nodes set state = ?, state_since_s = ?, cloud_instance_id = ?"
                    " where node_id = ?",
                    (new.value, at_s, cloud_instance_id, node_id),
                )
            self._conn.execute(_INSERT_EVENT, (node_id, at_s, node.state.value, new.value, cause))
        log.info(
            "node_transition node_id=%s old=%s new=%s cause=%s", node_id, node.state, new, cause
        )
        updated = self.node(node_id)
        assert updated is not None
        return updated

    def set_address(self, node_id: str, address: str | None) -> None:
        """Record where `node_id` is reachable (as its cloud lists it); not a transition."""
        with self.transaction():
            cur = self._conn.execute(
                "update nodes set address = ? where node_id = ?", (address, node_id)
            )
            if cur.rowcount == 0:
                raise NotFoundError  # as sqlite-utils' update raised it
        log.info("node_address node_id=%s address=%s", node_id, address)

    def events(self, node_id: str | None = None) -> list[dict[str, Any]]:
        """Transition history, oldest first, of one node or all."""
        if node_id is None:
            return list(self.db.table("node_events").rows_where(order_by="id"))
        return list(
            self.db.table("node_events").rows_where("node_id = ?", [node_id], order_by="id")
        )

    def recent_events(
        self, *, limit: int, node_id: str | None = None, after_id: int | None = None
    ) -> list[dict[str, Any]]:
        """The latest `limit` transitions, oldest first: of one node, or after the event id
        `after_id`, or of all nodes. Costs `limit` rows, not the history."""
        return _recent_events(self._conn, limit, node_id, after_id)

    def node_ids_entering(
        self, state: NodeState, *, after_id: int | None = None, since_s: float = -math.inf
    ) -> list[str]:
        """Ids of the nodes that entered `state` after the event id `after_id` (when given)
        and at or after `since_s`, one per such transition, in event order."""
        where, args = "new = ? and at_s >= ?", [state.value, since_s]
        if after_id is not None:
            where, args = where + " and id > ?", [*args, after_id]
        rows = self.db.table("node_events").rows_where(where, args, order_by="id")
        return [r["node_id"] for r in rows]

    def node_ids_moved(self, old: NodeState, new: NodeState) -> list[str]:
        """Ids of the nodes that ever moved `old -> new`, in event order."""
        rows = self._conn.execute(
            "select node_id from node_events where old = ? and new = ? order by id",
            (old.value, new.value),
        )
        return [r[0] for r in rows]

    def last_event_id(self) -> int:
        """The id of the latest transition (0 when there is none)."""
        last = self._conn.execute("select max(id) from node_events").fetchone()[0]
        return int(last) if last is not None else 0

    # -- journal ------------------------------------------------------------------------------

    def journal_begin(self, kind: str, node_id: str, at_s: float, detail: str) -> int:
        """Journal an action before its cloud call; returns the entry id."""
        with self.transaction(), self._nodes_untouched() as conn:
            cur = conn.execute(
                "insert into journal (at_s, kind, node_id, status, detail, updated_at_s)"
                " values (?, ?, ?, 'pending', ?, ?)",
                (at_s, kind, node_id, detail, at_s),
            )
            entry_id = cur.lastrowid
        assert isinstance(entry_id, int)
        return entry_id

    def journal_end(self, entry_id: int, status: str, at_s: float, detail: str) -> None:
        """Close a journal entry with its outcome ("done" or "failed")."""
        with self.transaction(), self._nodes_untouched() as conn:
            cur = conn.execute(
                "update journal set status = ?, detail = ?, updated_at_s = ? where id = ?",
                (status, detail, at_s, entry_id),
            )
            if cur.rowcount == 0:
                raise NotFoundError  # as sqlite-utils' update raised it

    def journal(self, status: str | None = None) -> list[JournalEntry]:
        """Journal entries, oldest first, optionally only those with `status`."""
        where, args = ("status = ?", [status]) if status else (None, [])
        rows = self.db.table("journal").rows_where(where, args, order_by="id")
        return [
            JournalEntry(r["id"], r["at_s"], r["kind"], r["node_id"], r["status"], r["detail"])
            for r in rows
        ]

    def recent_journal(self, *, limit: int, status: str | None = None) -> list[dict[str, Any]]:
        """The latest `limit` journal rows (only those with `status`, when given), oldest
        first, as stored (id, at_s, kind, node_id, status, detail, updated_at_s)."""
        return _recent_journal(self._conn, limit, status)

    # -- plans --------------------------------------------------------------------------------

    def record_plan(
        self,
        plan: Plan,
        at_s: float,
        policy: str,
        held_back: Sequence[Held] = (),
        approval: str = "auto",
    ) -> int:
        """Store a plan with its solver verdict, what the guards held back (as
        `Held.to_json` objects), and its approval ("auto", "pending", "approved",
        "rejected", "dry-run"); returns its id."""
        placements = [pl.to_json() for pl in plan.placements]
        with self.transaction(), self._nodes_untouched() as conn:
            cur = conn.execute(
                "insert into plans (at_s, policy, status, usd_per_hour, objective, gap,"
                " solve_time_s, placements, unmet, notes, held_back, approval, demand)"
                " values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    at_s,
                    policy,
                    plan.status.value,
                    plan.usd_per_hour,
                    plan.objective,
                    plan.gap,
                    plan.solve_time_s,
                    json.dumps(placements),
                    # Unmet.to_json objects; older rows hold lists (see `stored_unmet`).
                    json.dumps([u.to_json() for u in plan.unmet]),
                    json.dumps(list(plan.notes)),
                    json.dumps([h.to_json() for h in held_back]),
                    approval,
                    # What the plan provisioned for, sizes and buckets included.
                    json.dumps([_finite_json(d.to_json()) for d in plan.demand]),
                ),
            )
            plan_id = cur.lastrowid
        assert isinstance(plan_id, int)
        return plan_id

    def set_plan_approval(self, plan_id: int, approval: str) -> None:
        """Record an approval decision on a stored plan."""
        with self.transaction():
            self.db.table("plans").update(plan_id, {"approval": approval})

    def record_demand(self, at_s: float, rows: Sequence[DemandRecord]) -> None:
        """One tick's demand per series: rates, forecast quantile peaks, sizes, buckets."""
        with self.transaction(), self._nodes_untouched() as conn:
            conn.executemany(
                "insert into demand (at_s, model, region, rps, peak_rps, planned_rps, forecast,"
                " input_tokens, output_tokens, planned_input_tokens, planned_output_tokens,"
                " buckets) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        at_s,
                        d.model,
                        d.region,
                        _finite_or_none(d.rps),
                        _finite_or_none(d.peak_rps),
                        _finite_or_none(d.planned_rps),
                        json.dumps({str(q): v for q, v in d.quantiles.items() if math.isfinite(v)}),
                        *_tokens(d.size),
                        *_tokens(d.planned_size),
                        json.dumps([b.to_json() for b in d.buckets]) if d.buckets else None,
                    )
                    for d in rows
                ],
            )
            conn.execute("delete from demand where at_s < ?", (at_s - DEMAND_HISTORY_S,))

    def record_band_memory(self, policy: str, at_s: float, memory: BandMemory) -> None:
        """Keep what `policy`'s forecast band has learnt (replacing the last record)."""
        with self.transaction(), self._nodes_untouched() as conn:
            conn.execute(
                "insert or replace into band_memory (policy, at_s, memory) values (?, ?, ?)",
                (policy, at_s, memory.model_dump_json()),
            )

    def band_memory(self, policy: str) -> BandMemory | None:
        """What `policy`'s band had learnt when last recorded; None when nothing was, or
        when the record cannot be read (logged: the band then learns again)."""
        with self._read_connection() as conn:
            row = conn.execute(
                "select at_s, memory from band_memory where policy = ?", (policy,)
            ).fetchone()
        if row is None:
            return None
        try:
            return BandMemory.model_validate_json(row[1])
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            log.warning("band_memory_unreadable policy=%s at_s=%.0f error=%s", policy, row[0], exc)
            return None

    def demand_history(self, since_s: float = -math.inf) -> list[dict[str, Any]]:
        """Recorded demand rows after `since_s`, oldest first (`forecast` and `buckets`
        decoded; a row without buckets has [])."""
        rows = self.db.table("demand").rows_where("at_s > ?", [since_s], order_by="at_s")
        return [
            {
                **r,
                "forecast": json.loads(r["forecast"] or "{}"),
                "buckets": json.loads(r["buckets"] or "[]"),
            }
            for r in rows
        ]

    def demand_samples(
        self, since_s: float = -math.inf, *, span_s: float = math.inf, max_ticks: int = -1
    ) -> list[DemandSample]:
        """The recorded observations after `since_s` as the samples the ticks saw, oldest
        first: per tick time, each series' rate and short-window peak (a missing reading
        is absent, as it was). What a restarted policy warms its forecaster on. `span_s`
        keeps only the ticks less than that long before the latest, `max_ticks` (≥ 0)
        only that many of the latest; the rest is not read."""
        samples: dict[float, tuple[dict[tuple[str, str], float], dict[tuple[str, str], float]]]
        samples = {}
        # The ticks wanted are chosen in SQL (on the at_s index) before any row is read.
        ticks = (
            "select distinct at_s from demand where at_s > ?"
            " and at_s > (select max(at_s) from demand) - ? order by at_s desc limit ?"
        )
        with self._read_connection() as conn:
            rows = conn.execute(
                "select at_s, model, region, rps, peak_rps from demand"
                f" where at_s in ({ticks}) order by at_s, rowid",
                (max(since_s, -_HUGE), min(span_s, _HUGE), max_ticks),
            ).fetchall()
        for at_s, model, region, rps, peak in rows:
            rates, peaks = samples.setdefault(float(at_s), ({}, {}))
            if rps is not None:
                rates[model, region] = float(rps)
            if peak is not None:
                peaks[model, region] = float(peak)
        return [DemandSample(at, rates, peaks) for at, (rates, peaks) in samples.items()]

    def demand_recent_json(self, since_s: float = -math.inf, limit: int = 100) -> str:
        """The latest `limit` demand rows after `since_s`, oldest first, as the text of a
        JSON array of objects (at_s, model, region, rps, peak_rps, planned_rps, forecast,
        input_tokens, output_tokens, planned_input_tokens, planned_output_tokens, buckets).

        Made for a worker thread while the owner writes: the read runs on a connection of
        its own (WAL lets it read a consistent snapshot beside the writer), walks the at_s
        index backwards so it costs `limit` rows, not the history, and SQLite encodes the
        rows, so the thread hardly holds the GIL the event loop needs. Numbers come with
        15 significant digits; an infinity becomes null, as NaN already is in SQLite."""
        with self._read_connection() as conn:
            rows = conn.execute(_SELECT_DEMAND_RECENT_JSON, (since_s, limit)).fetchall()
        return "[" + ",".join(row[0] for row in reversed(rows)) + "]"

    @contextmanager
    def _read_connection(self) -> Iterator[sqlite3.Connection]:
        # An in-memory database cannot be opened a second time: its own connection serves
        # the read (only tests serve the API over one; the daemon's state is a file).
        if self.path == ":memory:":
            yield self._conn
            return
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            yield conn
        finally:
            conn.close()

    def record_config(self, at_s: float, path: str, text: str) -> int:
        """A config the daemon starts or reloads with; returns its generation."""
        with self.transaction():
            table = self.db.table("config_generations")
            table.insert({"at_s": at_s, "path": path, "text": text})
            generation = table.last_pk
        assert isinstance(generation, int)
        return generation

    def save_obtainability(self, evidence: Mapping[Pool, PoolEvidence]) -> None:
        """Replace the stored per-pool obtainability evidence with `evidence`."""
        with self.transaction():
            self._conn.execute("delete from pool_obtainability")
            self._conn.executemany(
                "insert into pool_obtainability (cloud, region, zone, instance_type, market,"
                " refusals, preemptions, at_s) values (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        *_pool_columns(p),
                        ev.refusals,
                        ev.preemptions,
                        ev.at_s,
                    )
                    for p, ev in sorted(evidence.items(), key=lambda kv: kv[0].key)
                ],
            )

    def obtainability(self) -> dict[Pool, PoolEvidence]:
        """The stored per-pool obtainability evidence (see `save_obtainability`)."""
        return _obtainability_rows(self._conn)

    def save_pool_cooldown(self, cooling: Mapping[Pool, PoolCooling]) -> None:
        """Replace the stored pool cooldown (scheduler.decide.cooldown) with `cooling`."""
        with self.transaction(), self._nodes_untouched() as conn:
            conn.execute("delete from pool_cooldown")
            conn.executemany(
                "insert into pool_cooldown (cloud, region, zone, instance_type, market,"
                " until_s, refusals_s, strikes_s, quarantined_strikes, good_launch_s)"
                " values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        *_pool_columns(p),
                        c.until_s,
                        json.dumps(c.refusals_s),
                        json.dumps(c.strikes_s),
                        c.quarantined_strikes,
                        c.good_launch_s,
                    )
                    for p, c in sorted(cooling.items(), key=lambda kv: kv[0].key)
                ],
            )

    def pool_cooldown(self) -> dict[Pool, PoolCooling]:
        """The stored pool cooldown (see `save_pool_cooldown`)."""
        rows = self._conn.execute(
            "select cloud, region, zone, instance_type, market, until_s, refusals_s,"
            " strikes_s, quarantined_strikes, good_launch_s from pool_cooldown"
        ).fetchall()
        return {
            _pool_of(c, r, z, t, m): PoolCooling(
                None if until is None else float(until),
                tuple(float(x) for x in json.loads(refusals)),
                tuple(float(x) for x in json.loads(strikes)),
                int(quarantined),
                None if good is None else float(good),
            )
            for c, r, z, t, m, until, refusals, strikes, quarantined, good in rows
        }

    def save_health(self, streaks: Mapping[str, Streak], replaced_at_s: Sequence[float]) -> None:
        """Replace the stored health checks (scheduler.decide.health): each checked node's
        streak, and when ready nodes were declared unhealthy within the window."""
        with self.transaction(), self._nodes_untouched() as conn:
            conn.execute("delete from health_streaks")
            conn.executemany(
                "insert into health_streaks (node_id, passes, fails, checked_at_s)"
                " values (?, ?, ?, ?)",
                [
                    (k, v.passes, v.fails, _finite_or_none(v.checked_at_s))
                    for k, v in sorted(streaks.items())
                ],
            )
            conn.execute("delete from health_replacements")
            conn.executemany(
                "insert into health_replacements (at_s) values (?)", [(t,) for t in replaced_at_s]
            )

    def health_streaks(self) -> dict[str, Streak]:
        """The stored streak of each checked node (see `save_health`)."""
        rows = self._conn.execute(
            "select node_id, passes, fails, checked_at_s from health_streaks"
        ).fetchall()
        return {
            k: Streak(int(p), int(f), -math.inf if at is None else float(at))
            for k, p, f, at in rows
        }

    def health_replacements(self) -> list[float]:
        """When ready nodes were declared unhealthy (see `save_health`), oldest first."""
        rows = self._conn.execute("select at_s from health_replacements order by at_s")
        return [float(r[0]) for r in rows]

    def plans(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest plans, newest first, as stored (JSON columns as text)."""
        return _latest(self._conn, "plans", None, [], limit)

    def plan_row(self, plan_id: int) -> dict[str, Any] | None:
        """The stored plan `plan_id` (JSON columns as text), or None."""
        rows = list(self.db.table("plans").rows_where("id = ?", [plan_id]))
        return rows[0] if rows else None


class StateReader:
    """A state database opened read-only (SQLite `mode=ro`): a finished simulation or a
    stopped daemon, browsed without any chance of changing it. Rows come as the store
    holds them (JSON columns as text). Safe to call from worker threads: one query at a
    time on its one connection."""

    def __init__(self, path: str | Path) -> None:
        """Open the database at `path`; FileNotFoundError when there is none."""
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"state database {self.path}: no such file")
        uri = self.path.resolve().as_uri() + "?mode=ro"
        self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        self._lock = threading.Lock()  # one query at a time on the one connection

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return _dicts(self._conn, sql, args)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def latest_s(self) -> float:
        """The latest recorded time: a transition, a journal update or a plan (0.0 when
        the database holds none)."""
        row = self._rows(
            "select max(t) as t from ("
            " select max(at_s) as t from node_events"
            " union all select max(updated_at_s) from journal"
            " union all select max(at_s) from plans)"
        )
        return float(row[0]["t"] or 0.0)

    def live_node_rows(self) -> list[dict[str, Any]]:
        """Rows of the nodes not gone or failed, in id order."""
        marks = ",".join("?" for _ in _LIVE_STATES)
        return self._rows(
            f"select * from nodes where state in ({marks}) order by node_id", _LIVE_STATES
        )

    def node_row(self, node_id: str) -> dict[str, Any] | None:
        """The row of node `node_id`, live or not, or None."""
        rows = self._rows("select * from nodes where node_id = ?", (node_id,))
        return rows[0] if rows else None

    def node_models(self) -> dict[str, str]:
        """The model of every node ever recorded, by node id."""
        return {r["node_id"]: r["model"] for r in self._rows("select node_id, model from nodes")}

    def events(self, node_id: str | None = None) -> list[dict[str, Any]]:
        """Transitions, of one node (by id) or of all (by time, then id)."""
        if node_id is not None:
            return self._rows("select * from node_events where node_id = ? order by id", (node_id,))
        return self._rows("select * from node_events order by at_s, id")

    def recent_events(self, *, limit: int, after_id: int | None = None) -> list[dict[str, Any]]:
        """The latest `limit` transitions after the event id `after_id`, oldest first."""
        with self._lock:
            return _recent_events(self._conn, limit, None, after_id)

    def recent_journal(self, *, limit: int) -> list[dict[str, Any]]:
        """The latest `limit` journal rows, oldest first."""
        with self._lock:
            return _recent_journal(self._conn, limit, None)

    def plans(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The latest `limit` plans, newest first; without `limit`, every plan in the order
        they were made (time, then id)."""
        if limit is None:
            return self._rows("select * from plans order by at_s, id")
        with self._lock:
            return _latest(self._conn, "plans", None, [], limit)

    def latest_demand_sizes(self) -> list[dict[str, Any]]:
        """The newest tick's demand rows with their sizes (model, region, at_s,
        input_tokens, output_tokens, planned_input_tokens, planned_output_tokens, and
        `buckets` decoded), by model and region; [] for a database written before sizes
        were recorded (migration 8), which this read-only reader cannot migrate."""
        try:
            rows = self._rows(_SELECT_LATEST_SIZES)
        except sqlite3.OperationalError:
            return []  # no such column: an older database
        return [{**r, "buckets": json.loads(r["buckets"] or "[]")} for r in rows]

    def pending_plan_ids(self) -> list[int]:
        """Ids of the plans waiting for approval, newest first."""
        rows = self._rows("select id from plans where approval = 'pending' order by id desc")
        return [int(r["id"]) for r in rows]


# -- integrity and backups ------------------------------------------------------------------


class StateDamaged(Exception):
    """The state database fails SQLite's check or cannot be read; `str()` is one line."""


def _obtainability_rows(conn: sqlite3.Connection) -> dict[Pool, PoolEvidence]:
    rows = conn.execute(
        "select cloud, region, zone, instance_type, market, refusals, preemptions, at_s"
        " from pool_obtainability"
    ).fetchall()
    return {
        _pool_of(c, r, z, t, m): PoolEvidence(float(a), float(b), float(at))
        for c, r, z, t, m, a, b, at in rows
    }


def read_obtainability(path: str | Path) -> dict[Pool, PoolEvidence]:
    """The obtainability evidence of the state database at `path`, read only; empty when
    the file does not exist or predates migration 6 (`capsched plan` shows it)."""
    p = Path(path)
    if not p.is_file():
        return {}
    conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return _obtainability_rows(conn)
    except sqlite3.OperationalError:
        return {}  # no such table: an older database
    finally:
        conn.close()


def _connect_existing(path: Path) -> sqlite3.Connection:
    # mode=rw: never creates a database where none was (a typo must not make an empty one).
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=5.0)


def check_integrity(path: str | Path) -> list[str]:
    """What `PRAGMA quick_check` finds wrong with the database at `path` (empty: nothing,
    also for a database that does not exist yet). It opens a connection of its own, so it
    may run in a thread beside a store that is in use."""
    if str(path) == ":memory:":
        return []
    file = Path(path)
    if not file.exists() or file.stat().st_size == 0:
        return []  # new: nothing to check yet
    try:
        conn = _connect_existing(file)
        try:
            rows = conn.execute("PRAGMA quick_check(5)").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed", I/O errors
        return [str(exc)]
    # One problem a line; SQLite heads them with "*** in database main ***".
    lines = (line.strip() for r in rows for line in str(r[0]).splitlines())
    problems = [line for line in lines if line and not line.startswith("***")]
    return [] if problems == ["ok"] else problems


class BackupError(Exception):
    """`backup_database` refused or failed; `str()` is one line naming the file."""


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """What `backup_database` wrote."""

    path: Path  # the backup file
    size_bytes: int  # its size
    nodes: int  # node records it holds
    id_prefix: str  # the part of node ids a database restored from it hands out


def backup_database(source: str | Path, dest: str | Path, *, overwrite: bool = False) -> BackupInfo:
    """Copy the state database `source` to `dest` with SQLite's online backup API.

    Safe while a daemon writes to `source` (one consistent snapshot; WAL lets the daemon
    go on writing) and needs no daemon lock. The copy is written beside `dest` first,
    checked with `quick_check`, and only then moved into place, so a failed or damaged
    backup never replaces a good one. The copy gets a node-id part of its own: a daemon
    restored from it can never hand out an id the lost database issued after the backup.
    """
    src, dst = Path(source), Path(dest)
    if not src.is_file():
        raise BackupError(f"{src}: no such database")
    if dst.exists() and not overwrite:
        raise BackupError(f"{dst}: exists; pass --force to replace it")
    if dst.exists() and dst.resolve() == src.resolve():
        raise BackupError(f"{dst}: is the database itself")
    if not dst.parent.is_dir():
        raise BackupError(f"{dst}: directory {dst.parent} does not exist")
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        try:
            from_conn = _connect_existing(src)
            to_conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                from_conn.backup(to_conn)  # all pages in one step: one consistent snapshot
                problems = check_integrity(tmp)
                if problems:
                    raise BackupError(
                        f"{src}: fails its integrity check ({problems[0]}); backup not written"
                    )
                prefix, nodes = _rekey_copy(to_conn)
                # A backup is one self-contained file (no -wal beside it).
                to_conn.execute("PRAGMA journal_mode=DELETE")
            finally:
                from_conn.close()
                to_conn.close()
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"{src}: cannot back up: {exc}") from exc
        if overwrite:
            os.replace(tmp, dst)
        else:
            try:
                os.link(tmp, dst)  # fails if `dst` appeared meanwhile: never clobbers
            except FileExistsError:
                raise BackupError(f"{dst}: exists; pass --force to replace it") from None
        fd = os.open(dst.parent, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename (or link) itself survives a power cut
        finally:
            os.close(fd)
    except OSError as exc:
        raise BackupError(f"{dst}: cannot write: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return BackupInfo(dst, dst.stat().st_size, nodes, prefix)


def _rekey_copy(conn: sqlite3.Connection) -> tuple[str, int]:
    # Give a backup copy its own node-id part; returns (that part, node records in the copy).
    # A copy of a database older than migration 5 gets one when it is opened (restored).
    tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
    if "meta" not in tables or "nodes" not in tables:
        return "", 0  # an empty database: restoring it is the same as starting new
    prefix = new_id_prefix()
    cur = conn.execute("update meta set value = ? where key = 'node_id_prefix'", (prefix,))
    nodes = int(conn.execute("select count(*) from nodes").fetchone()[0])
    return (prefix if cur.rowcount else ""), nodes
