"""The state store: SQLite through sqlite-utils, WAL on, one writer.

Holds nodes and their transition history, the action journal, plans, and the
counter behind node ids. Every write is a short explicit transaction, so a crash
at any moment leaves either the old or the new state, never half of one. One
`StateStore` object per process owns the connection (skypilot #1441 and friends:
SQLite shared as a global led to years of "database is locked").

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
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlite_utils
from sqlite_utils.db import NotFoundError

from scheduler.domain import Cloud, Market, Node, NodeState, Plan, Pool
from scheduler.lifecycle import LIVE, check_transition

if TYPE_CHECKING:
    from scheduler.guards import Held

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


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _migration_1,
    _migration_2,
    _migration_3,
    _migration_4,
]

# Demand history older than this is pruned as new rows arrive.
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


def _finite_or_none(v: object) -> float | None:
    # Load signals can hand over anything; the history keeps numbers only.
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


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

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db = sqlite_utils.Database(conn)
        if self.path != ":memory:":
            self.db.enable_wal()
        conn.execute("PRAGMA synchronous=NORMAL")  # safe with WAL: a crash loses no commit
        conn.execute("PRAGMA busy_timeout=5000")
        self._conn = conn
        self._live: _LiveCache | None = None
        self._migrate()

    # -- plumbing ---------------------------------------------------------------------------

    def _migrate(self) -> None:
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

    def next_node_id(self, prefix: str = "cs") -> str:
        """A new node id, unique for this store forever (survives restarts)."""
        with self.transaction(), self._nodes_untouched() as conn:
            row = conn.execute("select value from meta where key='node_seq'").fetchone()
            seq = int(row[0]) + 1 if row else 1
            conn.execute(
                "insert into meta (key, value) values ('node_seq', ?)"
                " on conflict (key) do update set value = excluded.value",
                (str(seq),),
            )
        return f"{prefix}-{seq:08d}"

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
            pool=Pool(Cloud(cloud), region, zone or "", itype, Market(market)),
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
                    pool.cloud.value,
                    pool.region,
                    pool.zone,
                    pool.instance_type,
                    pool.market.value,
                    node.state.value,
                    node.cloud_instance_id,
                    node.launched_at_s,
                    at_s,
                    node.address,
                ),
            )
            self._conn.execute(_INSERT_EVENT, (node.node_id, at_s, "", node.state.value, cause))

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
        placements = [
            {
                "model": pl.model,
                "cloud": pl.pool.cloud.value,
                "region": pl.pool.region,
                "zone": pl.pool.zone,
                "instance_type": pl.pool.instance_type,
                "market": pl.pool.market.value,
                "count": pl.count,
            }
            for pl in plan.placements
        ]
        with self.transaction(), self._nodes_untouched() as conn:
            cur = conn.execute(
                "insert into plans (at_s, policy, status, usd_per_hour, objective, gap,"
                " solve_time_s, placements, unmet, notes, held_back, approval)"
                " values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    at_s,
                    policy,
                    plan.status.value,
                    plan.usd_per_hour,
                    plan.objective,
                    plan.gap,
                    plan.solve_time_s,
                    json.dumps(placements),
                    json.dumps([[u.model, u.region, u.rps] for u in plan.unmet]),
                    json.dumps(list(plan.notes)),
                    json.dumps([h.to_json() for h in held_back]),
                    approval,
                ),
            )
            plan_id = cur.lastrowid
        assert isinstance(plan_id, int)
        return plan_id

    def set_plan_approval(self, plan_id: int, approval: str) -> None:
        """Record an approval decision on a stored plan."""
        with self.transaction():
            self.db.table("plans").update(plan_id, {"approval": approval})

    def record_demand(
        self,
        at_s: float,
        rows: list[tuple[str, str, float, float, float, dict[float, float]]],
    ) -> None:
        """One tick's (model, region, rps, peak rps, planned rps, forecast quantile peaks)."""
        with self.transaction(), self._nodes_untouched() as conn:
            conn.executemany(
                "insert into demand (at_s, model, region, rps, peak_rps, planned_rps, forecast)"
                " values (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        at_s,
                        m,
                        r,
                        _finite_or_none(rps),
                        _finite_or_none(peak),
                        _finite_or_none(planned),
                        json.dumps({str(q): v for q, v in quantiles.items() if math.isfinite(v)}),
                    )
                    for m, r, rps, peak, planned, quantiles in rows
                ],
            )
            conn.execute("delete from demand where at_s < ?", (at_s - DEMAND_HISTORY_S,))

    def demand_history(self, since_s: float = -math.inf) -> list[dict[str, Any]]:
        """Recorded demand rows after `since_s`, oldest first."""
        rows = self.db.table("demand").rows_where("at_s > ?", [since_s], order_by="at_s")
        return [{**r, "forecast": json.loads(r["forecast"] or "{}")} for r in rows]

    def record_config(self, at_s: float, path: str, text: str) -> int:
        """A config the daemon starts or reloads with; returns its generation."""
        with self.transaction():
            table = self.db.table("config_generations")
            table.insert({"at_s": at_s, "path": path, "text": text})
            generation = table.last_pk
        assert isinstance(generation, int)
        return generation

    def plans(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest plans, newest first."""
        return list(self.db.table("plans").rows_where(order_by="id desc", limit=limit))
