"""Where the TUI gets its data: one `Backend` protocol, two implementations.

`ApiBackend` talks to a running daemon through its control API (`scheduler.service.api_client`,
the only way into a live daemon, docs/api.md). `DbBackend` opens a state database
read-only (SQLite `mode=ro`), for a finished simulation or a stopped daemon. Both
answer in the API's JSON shapes, so the screens never know which one they read.

Errors: `ApiUnavailable` means "show disconnected and retry"; `ReadOnly` means the
backend cannot act (a database is only browsed); `ApiError` is the daemon saying no.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from prometheus_client.parser import text_string_to_metric_families

from scheduler.loop.store import StateReader, stored_unmet
from scheduler.service.api_client import ApiClient, ApiError, ApiUnavailable


class ReadOnly(Exception):
    """The backend only reads (a state database); actions need a running daemon."""


@dataclass(frozen=True, slots=True)
class DemandPoint:
    """One moment of one model's demand picture (values summed over regions)."""

    t_s: float  # time of the sample, on the daemon's (or the database's) clock
    demand: float | None  # observed demand; None when unknown (missing, or not stored)
    planned: float | None  # what the plan provisions for (forecast peak or observed)
    capacity: float | None  # what the ready nodes serve


@dataclass(frozen=True, slots=True)
class BucketShare:
    """One prompt-length bucket of a series' requests."""

    label: str  # the prompt range, "0-1024", "4096+" (tokens)
    share: float  # fraction of the series' requests


@dataclass(frozen=True, slots=True)
class SeriesSize:
    """The request size of one (model, region) at the latest tick (docs/api.md, demand)."""

    region: str  # source region
    input_tokens: float | None  # mean prompt tokens per request reported; None: unknown
    output_tokens: float | None  # mean output tokens per request reported; None: unknown
    planned_input_tokens: float | None  # prompt tokens the plan counted; None: the reference
    planned_output_tokens: float | None  # output tokens the plan counted; None: the reference
    buckets: tuple[BucketShare, ...]  # the split by prompt length; (): not known


@dataclass(frozen=True, slots=True)
class DemandView:
    """Per-model demand series plus what the horizon holds, in one unit."""

    unit: str  # "rps" (live metrics) or "nodes" (reconstructed from a database)
    series: dict[str, list[DemandPoint]]  # model -> points, oldest first
    horizon_peak: dict[str, dict[str, float]]  # model -> quantile -> forecast peak
    note: str  # one line saying where the numbers come from
    # model -> request size per region at the latest tick recorded, in region order
    sizes: dict[str, list[SeriesSize]] = field(default_factory=dict)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def latest_sizes(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[SeriesSize]]:
    """Demand rows (the API's `GET /v1/demand` shape, any order) as each series' size at
    its latest row, per model, regions in name order. Rows without the size keys (an
    older daemon) give sizes all None."""
    latest: dict[tuple[str, str], Mapping[str, Any]] = {}
    for row in rows:
        key = (str(row["model"]), str(row["region"]))
        if key not in latest or float(row["at_s"]) >= float(latest[key]["at_s"]):
            latest[key] = row
    out: dict[str, list[SeriesSize]] = {}
    for (model, region), row in sorted(latest.items()):
        buckets = tuple(
            BucketShare(str(b["range"]), float(b["share"]))
            for b in row.get("buckets") or []
            if isinstance(b, Mapping) and _number(b.get("share")) is not None
        )
        out.setdefault(model, []).append(
            SeriesSize(
                region,
                _number(row.get("input_tokens")),
                _number(row.get("output_tokens")),
                _number(row.get("planned_input_tokens")),
                _number(row.get("planned_output_tokens")),
                buckets,
            )
        )
    return out


class Backend(Protocol):
    """What the TUI reads and does. Shapes are those of docs/api.md."""

    label: str  # where the data comes from, for the header
    read_only: bool  # True when actions are impossible

    async def status(self) -> dict[str, Any]:
        """Control status; always has `now_s` (reference time for ages) and
        `pending_plan_id`, plus `usd_per_hour` and `headroom` when known."""
        ...

    async def nodes(self) -> list[dict[str, Any]]:
        """Live nodes, in id order."""
        ...

    async def node(self, node_id: str) -> dict[str, Any]:
        """One node, live or not (ApiError 404 when unknown)."""
        ...

    async def node_events(self, node_id: str) -> list[dict[str, Any]]:
        """One node's transitions, oldest first."""
        ...

    async def events(self, *, after: int | None, limit: int) -> list[dict[str, Any]]:
        """Transitions of all nodes after event id `after`, oldest first."""
        ...

    async def journal(self, *, limit: int) -> list[dict[str, Any]]:
        """The latest journaled actions, oldest first."""
        ...

    async def plans(self, *, limit: int) -> list[dict[str, Any]]:
        """The latest plans, newest first, each with its `unmet` demand as a tuple of
        `scheduler.domain.Unmet` records (as `ApiClient.plans` gives them)."""
        ...

    async def demand(self) -> DemandView:
        """Demand, planned demand and ready capacity over time, per model."""
        ...

    async def approve(self, plan_id: int) -> None:
        """Approve the pending plan."""
        ...

    async def reject(self, plan_id: int) -> None:
        """Reject the pending plan."""
        ...

    async def drain(self, node_id: str) -> None:
        """Drain one ready node."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


# -- the control API -------------------------------------------------------------------------


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class MetricsReading:
    """The few gauges of /metrics the TUI shows."""

    usd_per_hour: float | None  # capsched_fleet_cost_usd_per_hour
    demand: dict[str, float | None]  # model -> observed rps (None if any region is missing)
    planned: dict[str, float]  # model -> planned rps
    capacity: dict[str, float]  # model -> ready capacity rps
    forecast_peak: dict[str, dict[str, float]]  # model -> quantile -> peak rps


def parse_metrics(text: str) -> MetricsReading:
    """The TUI's gauges from a Prometheus exposition (labels summed over regions)."""
    usd: float | None = None
    demand: dict[str, float | None] = {}
    planned: defaultdict[str, float] = defaultdict(float)
    capacity: dict[str, float] = {}
    peak: defaultdict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            name, labels, value = s.name, s.labels, float(s.value)
            if name == "capsched_fleet_cost_usd_per_hour":
                usd = _finite(value)
            elif name == "capsched_demand_rps":
                m = labels["model"]
                # A missing region makes the model's total unknown, not smaller.
                prev = demand.get(m, 0.0)
                demand[m] = None if prev is None or not math.isfinite(value) else prev + value
            elif name == "capsched_planned_demand_rps" and math.isfinite(value):
                planned[labels["model"]] += value
            elif name == "capsched_capacity_rps" and math.isfinite(value):
                capacity[labels["model"]] = value
            elif name == "capsched_forecast_peak_rps" and math.isfinite(value):
                peak[labels["model"]][labels["quantile"]] += value
    return MetricsReading(
        usd, demand, dict(planned), capacity, {m: dict(q) for m, q in peak.items()}
    )


def _total(values: Iterable[object]) -> float | None:
    """Sum over regions; None when any region's value is unknown."""
    total = 0.0
    for v in values:
        if not isinstance(v, int | float):
            return None
        total += float(v)
    return total


def headroom_of(demand: dict[str, float | None], capacity: dict[str, float]) -> float | None:
    """Ready capacity over observed demand, all models together (None when unknown)."""
    if not demand or any(v is None for v in demand.values()):
        return None
    total = sum(v for v in demand.values() if v is not None)
    if total <= 0:
        return None
    return sum(capacity.values()) / total


# Demand rows read for the sizes at each refresh: the latest tick of up to this many series.
SIZE_ROWS = 1000


class ApiBackend:
    """A running daemon, through `ApiClient`. The session outlives connection
    failures, so the next refresh after the daemon comes back simply succeeds."""

    read_only = False

    def __init__(self, client: ApiClient, *, history: int = 720) -> None:
        self.client = client
        self.label = f"unix:{client.socket_path}" if client.socket_path else client.base_url
        # Demand history: seeded from the daemon's store, then sampled from /metrics.
        self._history: defaultdict[str, deque[DemandPoint]] = defaultdict(
            lambda: deque(maxlen=history)
        )
        self._last: MetricsReading | None = None
        self._opened = False

    async def _open(self) -> None:
        if not self._opened:
            await self.client.__aenter__()
            self._opened = True
            await self._seed_history()

    async def _seed_history(self) -> None:
        """Start the charts from the daemon's stored demand history (GET /v1/demand), so
        the Demand screen shows the last hours, not only the time since the TUI opened."""
        try:
            rows = await self.client.demand(limit=10_000)
        except ApiError:  # a daemon without the endpoint: sample from now on
            return
        by_time: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            by_time[str(row["model"]), float(row["at_s"])].append(row)
        for (model, at_s), group in sorted(by_time.items(), key=lambda kv: kv[0][1]):
            self._history[model].append(
                DemandPoint(
                    at_s,
                    _total(r.get("rps") for r in group),
                    _total(r.get("planned_rps") for r in group),
                    None,  # ready capacity is not stored per tick
                )
            )

    async def status(self) -> dict[str, Any]:
        await self._open()
        status = dict(await self.client.status())
        reading = parse_metrics(await self.client.metrics())
        self._last = reading
        now_s = float(status.get("now_s") or 0.0)
        for model in sorted(set(reading.capacity) | set(reading.planned) | set(reading.demand)):
            points = self._history[model]
            if points and points[-1].t_s == now_s:
                points.pop()  # same daemon instant: keep the newest reading only
            points.append(
                DemandPoint(
                    now_s,
                    reading.demand.get(model),
                    reading.planned.get(model),
                    reading.capacity.get(model),
                )
            )
        status["usd_per_hour"] = reading.usd_per_hour
        status["headroom"] = headroom_of(reading.demand, reading.capacity)
        status["pending_count"] = 1 if status.get("pending_plan_id") else 0
        return status

    async def nodes(self) -> list[dict[str, Any]]:
        await self._open()
        return await self.client.nodes()

    async def node(self, node_id: str) -> dict[str, Any]:
        await self._open()
        return await self.client.node(node_id)

    async def node_events(self, node_id: str) -> list[dict[str, Any]]:
        await self._open()
        return await self.client.node_events(node_id, limit=10_000)

    async def events(self, *, after: int | None, limit: int) -> list[dict[str, Any]]:
        await self._open()
        return await self.client.events(after=after, limit=limit)

    async def journal(self, *, limit: int) -> list[dict[str, Any]]:
        await self._open()
        return await self.client.journal(limit=limit)

    async def plans(self, *, limit: int) -> list[dict[str, Any]]:
        await self._open()
        return await self.client.plans(limit=limit)

    async def demand(self) -> DemandView:
        peak = self._last.forecast_peak if self._last else {}
        try:
            # The latest rows hold every series' latest tick (one row per series a tick).
            sizes = latest_sizes(await self.client.demand(limit=SIZE_ROWS))
        except ApiError:  # a daemon without the endpoint: no sizes
            sizes = {}
        return DemandView(
            "rps",
            {m: list(p) for m, p in sorted(self._history.items())},
            peak,
            "stored demand history, then sampled from /metrics while this TUI runs",
            sizes,
        )

    async def approve(self, plan_id: int) -> None:
        await self._open()
        await self.client.approve(plan_id)

    async def reject(self, plan_id: int) -> None:
        await self._open()
        await self.client.reject(plan_id)

    async def drain(self, node_id: str) -> None:
        await self._open()
        await self.client.drain(node_id)

    async def close(self) -> None:
        await self.client.close()
        self._opened = False


# -- a state database, read-only -------------------------------------------------------------


def load_prices() -> dict[str, float]:
    """USD per hour per pool key from the bundled catalog (what the daemon prices with)."""
    from scheduler.domain import prices_of
    from scheduler.fleet.catalog import load_catalog

    return {pool.key: usd for pool, usd in prices_of(load_catalog().offerings).items()}


def _pool_key(row: dict[str, Any]) -> str:
    # Pool.key of scheduler.domain, rebuilt from the row (the API sends it as "pool").
    return f"{row['cloud']}/{row['zone'] or row['region']}/{row['instance_type']}/{row['market']}"


def _plan_row(row: dict[str, Any]) -> dict[str, Any]:
    """A plans row in the API client's Plan shape (JSON columns decoded, unmet demand as
    `Unmet` records, NaN as None)."""
    out = dict(row)
    for key in ("placements", "notes", "held_back", "demand"):
        out[key] = json.loads(out.get(key) or "[]")
    out["unmet"] = stored_unmet(out["unmet"])
    for key in ("usd_per_hour", "objective", "gap", "solve_time_s"):
        value = out.get(key)
        if isinstance(value, float) and not math.isfinite(value):
            out[key] = None
    out.setdefault("approval", "auto")
    return out


class DbBackend:
    """A state database opened read-only: nothing here can change it. Times are the
    database's own; "now" is its latest recorded moment, so ages do not drift with
    the wall clock."""

    read_only = True

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.label = f"db:{self.path.name} (read-only)"
        # Reads run in worker threads (a large database must not freeze the screen).
        self._reader = StateReader(self.path)

    def latest_s(self) -> float:
        """The database's latest recorded time (its "now")."""
        return self._reader.latest_s()

    @staticmethod
    def _node(row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "zone": row["zone"] or "", "pool": _pool_key(row)}

    def _live(self) -> list[dict[str, Any]]:
        return [self._node(r) for r in self._reader.live_node_rows()]

    def _status(self) -> dict[str, Any]:
        latest = self._reader.plans(1)
        pending = self._reader.pending_plan_ids()
        prices = load_prices()
        usd = sum(prices.get(n["pool"], 0.0) for n in self._live())
        last = _plan_row(latest[0]) if latest else None
        return {
            "approval_mode": "read-only",
            "paused": False,
            "now_s": self.latest_s(),
            "pending_plan_id": pending[0] if pending else None,
            "pending_count": len(pending),
            "last_plan_status": last["status"] if last else None,
            "last_plan_usd_per_hour": last["usd_per_hour"] if last else None,
            "held_back": last["held_back"] if last else [],
            "usd_per_hour": usd,
            "headroom": None,  # demand is not stored in the database
        }

    async def status(self) -> dict[str, Any]:
        return await asyncio.to_thread(self._status)

    async def nodes(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._live)

    async def node(self, node_id: str) -> dict[str, Any]:
        row = await asyncio.to_thread(self._reader.node_row, node_id)
        if row is None:
            raise ApiError(404, f"unknown node {node_id}")
        return self._node(row)

    async def node_events(self, node_id: str) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._reader.events, node_id)

    async def events(self, *, after: int | None, limit: int) -> list[dict[str, Any]]:
        return await asyncio.to_thread(
            lambda: self._reader.recent_events(limit=limit, after_id=after or 0)
        )

    async def journal(self, *, limit: int) -> list[dict[str, Any]]:
        return await asyncio.to_thread(lambda: self._reader.recent_journal(limit=limit))

    async def plans(self, *, limit: int) -> list[dict[str, Any]]:
        rows = await asyncio.to_thread(self._reader.plans, limit)
        return [_plan_row(r) for r in rows]

    def _demand(self) -> DemandView:
        # The database keeps no demand samples; what it does keep is each plan's target
        # and every node transition, so "planned nodes vs ready nodes" is rebuilt exactly,
        # one point at every plan and every transition.
        model_of = self._reader.node_models()
        events = self._reader.events()
        plans = [_plan_row(r) for r in self._reader.plans()]
        models = sorted(
            set(model_of.values()) | {p["model"] for q in plans for p in q["placements"]}
        )
        # (time, 0 = transition first / 1 = plan, index): a plan sees the fleet of its time.
        moments = sorted(
            [(e["at_s"], 0, i) for i, e in enumerate(events)]
            + [(p["at_s"], 1, i) for i, p in enumerate(plans)]
        )
        ready: defaultdict[str, int] = defaultdict(int)
        state: dict[str, str] = {}
        target: dict[str, float] | None = None  # the latest plan's nodes per model
        series: dict[str, list[DemandPoint]] = {m: [] for m in models}
        for at_s, kind, i in moments:
            if kind == 0:
                e = events[i]
                model = model_of.get(e["node_id"], "?")
                ready[model] -= state.get(e["node_id"]) == "ready"
                ready[model] += e["new"] == "ready"
                state[e["node_id"]] = e["new"]
            else:
                target = {}
                for p in plans[i]["placements"]:
                    target[p["model"]] = target.get(p["model"], 0.0) + p["count"]
            for m in models:
                planned = None if target is None else target.get(m, 0.0)
                point = DemandPoint(at_s, None, planned, ready[m])
                if series[m] and series[m][-1].t_s == at_s:
                    series[m][-1] = point  # several changes at one instant: keep the last
                else:
                    series[m].append(point)
        return DemandView(
            "nodes",
            series,
            {},
            "from the database: planned nodes per plan against ready nodes;"
            " request sizes of the latest tick",
            latest_sizes(self._reader.latest_demand_sizes()),
        )

    async def demand(self) -> DemandView:
        return await asyncio.to_thread(self._demand)

    async def approve(self, plan_id: int) -> None:
        raise ReadOnly("a state database is read-only: approve on a running daemon")

    async def reject(self, plan_id: int) -> None:
        raise ReadOnly("a state database is read-only: reject on a running daemon")

    async def drain(self, node_id: str) -> None:
        raise ReadOnly("a state database is read-only: drain on a running daemon")

    async def close(self) -> None:
        self._reader.close()


__all__ = [
    "ApiBackend",
    "ApiError",
    "ApiUnavailable",
    "Backend",
    "BucketShare",
    "DbBackend",
    "DemandPoint",
    "DemandView",
    "ReadOnly",
    "SeriesSize",
    "headroom_of",
    "latest_sizes",
    "parse_metrics",
]
