"""What the screens show, computed from the API's JSON shapes: pure functions, no
Textual, no I/O, so they are tested and reused without a terminal.

Times are always relative to a reference `now_s` handed in (the daemon's clock, or a
database's latest event), never the wall clock, so a replayed or stopped run renders
the same every time.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text

from scheduler.domain import LAUNCH_LIMITS, HoldKind, Unmet
from tui.backend import DemandPoint, SeriesSize

# Columns a fleet group is keyed by, in display order.
GROUP_KEYS: tuple[str, ...] = ("model", "cloud", "region", "zone", "instance_type", "market")
# States counted per group, in lifecycle order.
STATES: tuple[str, ...] = (
    "requested",
    "booting",
    "ready",
    "unhealthy",
    "draining",
    "terminating",
    "interrupted",
)
# Nodes a plan counts as the current fleet (scheduler.decide.observation.Observation.serving).
SERVING = ("requested", "booting", "ready")


def fmt_age(seconds: float | None) -> str:
    """A short age: 45s, 12m, 3h05m, 2d04h; "-" when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def fmt_usd(value: float | None) -> str:
    """Dollars with cents, or "-"."""
    return "-" if value is None or not math.isfinite(value) else f"${value:,.2f}"


def held_items(held_back: Iterable[Any]) -> list[tuple[HoldKind | None, str]]:
    """A plan's or status's `held_back` as (kind, text) pairs. Items are the API's
    `{"kind", "nodes", "text"}` objects; a plain string (a database written before held
    items had a kind) keeps its text with no kind."""
    known = {k.value: k for k in HoldKind}
    out: list[tuple[HoldKind | None, str]] = []
    for item in held_back or ():
        if isinstance(item, Mapping):
            out.append((known.get(str(item.get("kind"))), str(item.get("text", ""))))
        else:
            out.append((None, str(item)))
    return out


def launch_limits_of(held_back: Iterable[Any]) -> list[HoldKind]:
    """The limits (budget, quota) that held launches back, in HoldKind order."""
    kinds = {k for k, _ in held_items(held_back) if k in LAUNCH_LIMITS}
    return [k for k in HoldKind if k in kinds]


def pool_key(row: Mapping[str, Any]) -> str:
    """scheduler.domain.Pool.key from a node or placement dict."""
    zone_or_region = row.get("zone") or row["region"]
    return f"{row['cloud']}/{zone_or_region}/{row['instance_type']}/{row['market']}"


# -- fleet ------------------------------------------------------------------------------------


@dataclass(slots=True)
class FleetGroup:
    """Nodes sharing model, cloud, region, zone, instance type and market."""

    key: tuple[str, ...]  # values of GROUP_KEYS
    pool: str  # the pool key, for prices
    counts: Counter[str] = field(default_factory=Counter)  # state -> nodes
    usd_per_hour: float = 0.0  # list price of the group's nodes
    oldest_s: float | None = None  # age of the group's oldest node
    newest_s: float | None = None  # age of its newest node
    node_ids: list[str] = field(default_factory=list)  # members, id order

    @property
    def total(self) -> int:
        """Nodes in the group."""
        return sum(self.counts.values())

    def text(self) -> str:
        """Everything a filter may match, lower case."""
        return " ".join((*self.key, self.pool, *self.node_ids)).lower()


def group_fleet(
    nodes: Iterable[Mapping[str, Any]], prices: Mapping[str, float], now_s: float
) -> list[FleetGroup]:
    """Live nodes grouped by GROUP_KEYS, sorted by key."""
    groups: dict[tuple[str, ...], FleetGroup] = {}
    for n in nodes:
        key = tuple(str(n.get(k) or "") for k in GROUP_KEYS)
        pool = str(n.get("pool") or pool_key(n))
        g = groups.setdefault(key, FleetGroup(key, pool))
        g.counts[str(n["state"])] += 1
        g.usd_per_hour += prices.get(pool, 0.0)
        g.node_ids.append(str(n["node_id"]))
        launched = n.get("launched_at_s")
        if launched is not None:
            age = now_s - float(launched)
            g.oldest_s = age if g.oldest_s is None else max(g.oldest_s, age)
            g.newest_s = age if g.newest_s is None else min(g.newest_s, age)
    return [groups[k] for k in sorted(groups)]


def matches(text: str, query: str) -> bool:
    """Every whitespace-separated word of `query` occurs in `text` (case-insensitive)."""
    hay = text.lower()
    return all(word in hay for word in query.lower().split())


# Sort orders of the fleet table: name -> key function (all ascending; cost and counts
# read best descending, which the caller asks for).
FLEET_SORTS: dict[str, tuple[bool, Any]] = {
    "group": (False, lambda g: g.key),
    "nodes": (True, lambda g: (g.total, g.key)),
    "ready": (True, lambda g: (g.counts["ready"], g.key)),
    "cost": (True, lambda g: (g.usd_per_hour, g.key)),
    "age": (True, lambda g: (g.oldest_s or 0.0, g.key)),
}


def sort_groups(groups: list[FleetGroup], by: str) -> list[FleetGroup]:
    """`groups` in one of FLEET_SORTS' orders."""
    descending, key = FLEET_SORTS[by]
    return sorted(groups, key=key, reverse=descending)


# -- plan -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DiffRow:
    """One (model, pool) of a plan against the current fleet."""

    model: str  # model served
    pool: str  # pool key
    current: int  # serving nodes now (requested, booting, ready)
    target: int  # nodes the plan wants
    launches: int  # nodes to add
    drains: int  # ready nodes to drain
    terminations: int  # not-yet-serving nodes to terminate
    usd_per_hour_change: float  # price of the change

    @property
    def change(self) -> int:
        """Target minus current."""
        return self.target - self.current


def plan_diff(
    plan: Mapping[str, Any], nodes: Iterable[Mapping[str, Any]], prices: Mapping[str, float]
) -> list[DiffRow]:
    """The plan's target against the serving fleet, as scheduler.decide.diff.propose sees it:
    surplus nodes that serve nothing yet are terminated first, ready ones drained."""
    live: defaultdict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for n in nodes:
        if n["state"] in SERVING:
            live[str(n["model"]), str(n.get("pool") or pool_key(n))][str(n["state"])] += 1
    target: Counter[tuple[str, str]] = Counter()
    for p in plan.get("placements", []):
        target[str(p["model"]), pool_key(p)] += int(p["count"])
    rows = []
    for key in sorted(set(live) | set(target)):
        have = live.get(key, Counter())
        current, want = sum(have.values()), target.get(key, 0)
        surplus = max(0, current - want)
        not_ready = have["requested"] + have["booting"]
        terminations = min(surplus, not_ready)
        rows.append(
            DiffRow(
                key[0],
                key[1],
                current,
                want,
                max(0, want - current),
                surplus - terminations,
                terminations,
                (want - current) * prices.get(key[1], 0.0),
            )
        )
    return rows


def unmet_rows(unmet: Iterable[Unmet]) -> list[Unmet]:
    """A plan's unmet demand as the plan screen lists it: entries with load left,
    highest priority first, then the most load, then by name."""
    left = [u for u in unmet if u.rps > 0]
    return sorted(left, key=lambda u: (-u.priority, -u.rps, u.model, u.region))


def fleet_usd_per_hour(nodes: Iterable[Mapping[str, Any]], prices: Mapping[str, float]) -> float:
    """List price of the serving nodes, the figure a plan's price compares with."""
    return sum(
        prices.get(str(n.get("pool") or pool_key(n)), 0.0) for n in nodes if n["state"] in SERVING
    )


# -- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Activity:
    """One line of the Events screen: a node transition or a journaled action."""

    at_s: float  # when it happened
    kind: str  # "node" (transition) or the action kind ("launch", "drain", "terminate")
    node_id: str  # node concerned
    what: str  # "booting -> ready", or the action's status
    cause: str  # the transition's cause, or the action's detail
    order: tuple[int, int]  # tie-break: (source, id), so equal times sort stably

    def text(self) -> str:
        """Everything a filter may match."""
        return f"{self.kind} {self.node_id} {self.what} {self.cause}"


def activity(
    events: Iterable[Mapping[str, Any]], journal: Iterable[Mapping[str, Any]]
) -> list[Activity]:
    """Transitions and actions merged, newest first."""
    out = [
        Activity(
            float(e["at_s"]),
            "node",
            str(e["node_id"]),
            f"{e['old'] or '(new)'} -> {e['new']}",
            str(e["cause"]),
            (0, int(e["id"])),
        )
        for e in events
    ]
    out += [
        Activity(
            float(j["at_s"]),
            str(j["kind"]),
            str(j["node_id"]),
            str(j["status"]),
            str(j["detail"]),
            (1, int(j["id"])),
        )
        for j in journal
    ]
    return sorted(out, key=lambda a: (a.at_s, a.order), reverse=True)


# -- demand chart ------------------------------------------------------------------------------


def _tokens(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def size_line(size: SeriesSize) -> str:
    """One series' request size as the Demand screen shows it: the mean prompt / output
    tokens per request reported, what the plan counted when it differs, and the split by
    prompt length where known ("-": not reported)."""
    line = f"{size.region}: prompt {_tokens(size.input_tokens)} / output "
    line += f"{_tokens(size.output_tokens)} tokens"
    planned = (size.planned_input_tokens, size.planned_output_tokens)
    if planned == (None, None):
        line += " (planned as the reference request)"
    elif planned != (size.input_tokens, size.output_tokens):
        line += f" (planned {_tokens(planned[0])} / {_tokens(planned[1])})"
    if size.buckets:
        line += "; by prompt " + ", ".join(f"{b.label} {b.share:.0%}" for b in size.buckets)
    return line


def _scale(values: Sequence[float | None]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    top = max(finite, default=0.0)
    return top * 1.1 if top > 0 else 1.0


def _at(points: Sequence[DemandPoint], t_s: float) -> DemandPoint | None:
    """The latest point at or before `t_s` (values hold until the next sample)."""
    found = None
    for p in points:
        if p.t_s > t_s:
            break
        found = p
    return found


def demand_chart(
    points: Sequence[DemandPoint],
    *,
    width: int,
    height: int,
    unit: str,
    horizon: Mapping[str, float] | None = None,
    now_s: float | None = None,
) -> Text:
    """A text chart over time, oldest left, "now" at the right edge of the past: ready
    capacity as a filled area, planned as `─`, demand as `●`, and (when known) the
    forecast's highest quantile peak over the horizon to the right of "now" as `┄`.
    Each column shows the latest sample at its time, so sparse samples draw steps."""
    plot_w = max(10, width - 10)  # room for the y-axis labels
    hor_w = 8 if horizon else 0
    past_w = plot_w - hor_w
    pts = sorted(points, key=lambda p: p.t_s)
    hi_q = max(horizon, key=float) if horizon else None
    peak = horizon[hi_q] if horizon and hi_q is not None else None
    top = _scale(
        [p.demand for p in pts] + [p.planned for p in pts] + [p.capacity for p in pts] + [peak]
    )
    rows = max(3, height - 2)
    end_s = max(now_s if now_s is not None else 0.0, pts[-1].t_s if pts else 0.0)
    start_s = pts[0].t_s if pts else end_s
    step_s = (end_s - start_s) / max(1, past_w - 1)

    def level(v: float | None) -> int | None:
        if v is None or not math.isfinite(v):
            return None
        return min(rows - 1, max(0, round(v / top * (rows - 1))))

    grid: list[list[tuple[str, str]]] = [[(" ", "")] * plot_w for _ in range(rows)]
    for x in range(past_w if pts else 0):
        p = _at(pts, start_s + x * step_s)
        if p is None:
            continue
        cap = level(p.capacity)
        if cap is not None and p.capacity:
            for y in range(cap + 1):
                grid[y][x] = ("▒", "green")
        plan = level(p.planned)
        if plan is not None:
            grid[plan][x] = ("─", "bold cyan")
        dem = level(p.demand)
        if dem is not None:
            grid[dem][x] = ("●", "bold yellow")
    if peak is not None:
        peak_y = level(peak)
        if peak_y is not None:
            for x in range(past_w, plot_w):
                grid[peak_y][x] = ("┄", "magenta")
    text = Text()
    for r in range(rows - 1, -1, -1):
        labelled = r % 2 == 0 or r == rows - 1
        text.append(f"{top * r / (rows - 1):8.1f} ┤" if labelled else "         │", "dim")
        for ch, style in grid[r]:
            text.append(ch, style)
        text.append("\n")
    text.append("         └" + "─" * plot_w + "\n", "dim")
    if pts:
        left = f"-{fmt_age(end_s - start_s)}"
        right = "now" + (" │ horizon" if hor_w else "")
        pad = max(1, past_w - len(left) - 3)
        text.append(" " * 10 + left + " " * pad + right, "dim")
    else:
        text.append(" " * 10 + "no samples yet", "dim")
    legend = Text.assemble(
        ("  ▒ ready capacity", "green"),
        ("  ─ planned", "bold cyan"),
        ("  ● demand", "bold yellow"),
    )
    if peak is not None:
        legend.append(f"  ┄ forecast q{hi_q} peak over the horizon", "magenta")
    legend.append(f"   ({unit})", "dim")
    text.append("\n")
    text.append_text(legend)
    return text
