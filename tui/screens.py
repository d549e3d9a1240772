"""The TUI's screens: Fleet, Demand, Plan, Events (one mode each), Node (pushed on
top of the screen it was opened from), the help screen and the confirmation modal.

Screens only render what the app last fetched (`app.data`) and ask the app to act;
every network call lives in the app's workers (docs: STYLE.md point 12).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, cast

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Input, Label, Static

from tui.host import Host
from tui.views import (
    FLEET_SORTS,
    STATES,
    activity,
    demand_chart,
    fleet_usd_per_hour,
    fmt_age,
    fmt_usd,
    group_fleet,
    held_items,
    launch_limits_of,
    matches,
    plan_diff,
    size_line,
    sort_groups,
    unmet_rows,
)

# Rows of unmet demand the plan screen shows before its table scrolls.
UNMET_ROWS_SHOWN = 6
# Short state names for the fleet's "other states" column.
SHORT = {
    "requested": "req",
    "booting": "boot",
    "ready": "ready",
    "unhealthy": "sick",  # failed its health checks: being replaced (docs/health.md)
    "draining": "drain",
    "terminating": "term",
    "interrupted": "intr",
}


def clock(at_s: float | None) -> str:
    """A timestamp on the daemon's clock, in UTC (never the viewer's time zone)."""
    if at_s is None:
        return "-"
    return time.strftime("%m-%d %H:%M:%S", time.gmtime(at_s))


class StatusBar(Static):
    """The header every screen carries: money, headroom, approvals, connection."""

    plain = ""  # the last text drawn, without styles (what tests and logs read)

    def render_status(self, app: Host) -> None:
        """Redraw from the app's latest fetch."""
        d = app.data
        s = d.status
        text = Text()
        text.append(" capsched ", "bold reverse")
        text.append(f" {app.screen_title()} ", "bold")
        text.append("│ ")
        text.append(f"{fmt_usd(s.get('usd_per_hour'))}/h", "bold")
        text.append(" │ headroom ")
        headroom = s.get("headroom")
        text.append(
            "-" if headroom is None else f"{headroom:.2f}x",
            "bold red" if headroom is not None and headroom < 1.0 else "bold",
        )
        pending = int(s.get("pending_count") or 0)
        text.append(" │ ")
        text.append(
            f"{pending} pending approval" + ("" if pending == 1 else "s"),
            "bold black on yellow" if pending else "",
        )
        if s.get("paused"):
            text.append(" │ ")
            text.append("PAUSED", "bold black on yellow")
        limits = launch_limits_of(s.get("held_back") or [])
        if limits:
            text.append(" │ ")
            text.append(
                f"LAUNCHES HELD: {' + '.join(k.value for k in limits)}", "bold white on red"
            )
        text.append(" │ ")
        if app.backend.read_only:
            text.append("● read-only", "bold cyan")
        elif d.connected:
            text.append("● connected", "bold green")
        elif d.ever_connected:
            text.append("✖ DISCONNECTED", "bold white on red")
            text.append(f" retrying every {app.refresh_s:g}s")
        else:
            text.append("✖ DISCONNECTED", "bold white on red")
            text.append(" waiting for the daemon")
        text.append(f"  {app.backend.label}", "dim")
        self.set_class(not d.connected and not app.backend.read_only, "-offline")
        self.plain = text.plain
        self.update(text)


class DataScreen(Screen[None]):
    """A screen showing the app's latest data, redrawn after each fetch."""

    TITLE_TEXT: ClassVar[str] = ""

    @property
    def capsched(self) -> Host:
        """The app, typed."""
        return cast(Host, self.app)

    def compose_body(self) -> ComposeResult:
        """The screen's own widgets, between the status bar and the footer."""
        yield from ()

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield Static("", id="offline-banner")
        yield from self.compose_body()
        yield Footer()

    def on_screen_resume(self) -> None:
        self.update_view()

    def update_view(self) -> None:
        """Redraw from `app.data`."""
        self.query_one(StatusBar).render_status(self.capsched)
        banner = self.query_one("#offline-banner", Static)
        d = self.capsched.data
        offline = not d.connected and not self.capsched.backend.read_only
        banner.display = offline or bool(d.error)
        if offline:
            banner.update(
                Text(
                    f"daemon unreachable: {d.error or 'no answer yet'}; "
                    "showing the last data received",
                    "bold",
                )
            )
        elif d.error:
            banner.update(Text(d.error, "bold"))
        self.render_data()

    def render_data(self) -> None:
        """Draw the screen's widgets from `app.data`."""


def _refill(table: DataTable[Any], rows: list[tuple[str, list[Any]]]) -> None:
    """Replace a table's rows, keeping the cursor on the same row key when it survives."""
    keep = None
    if table.row_count and table.cursor_row >= 0:
        try:
            keep = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:  # a cursor past the end after a shrink: start from the top
            keep = None
    table.clear()
    for key, cells in rows:
        table.add_row(*cells, key=key)
    if keep is not None:
        for index, (key, _) in enumerate(rows):
            if key == keep:
                table.move_cursor(row=index, animate=False)
                break


# -- Fleet ------------------------------------------------------------------------------------


class FleetScreen(DataScreen):
    """Nodes grouped by model, cloud, region, zone, instance type and market."""

    TITLE_TEXT = "Fleet"
    AUTO_FOCUS = "#groups"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "cycle_sort", "Sort"),
        Binding("slash", "filter", "Filter"),
        Binding("escape", "clear_filter", "Clear", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sort_by = "group"  # one of FLEET_SORTS
        self._group_nodes: dict[str, list[str]] = {}

    def compose_body(self) -> ComposeResult:
        yield Input(placeholder="filter (/): words to match, e.g. spot us-east", id="filter")
        yield Label("", id="fleet-summary")
        table: DataTable[Any] = DataTable(id="groups", cursor_type="row", zebra_stripes=True)
        table.add_columns(
            "model", "cloud", "zone/region", "instance type", "market",
            "nodes", "ready", "other states", "$/h", "oldest", "newest",
        )  # fmt: skip
        yield table
        yield Label("nodes of the group (enter: node screen)", id="members-title")
        members: DataTable[Any] = DataTable(id="members", cursor_type="row")
        members.add_columns("node", "state", "for", "age", "cloud instance")
        yield members

    def action_filter(self) -> None:
        """Focus the filter box."""
        self.query_one("#filter", Input).focus()

    def action_clear_filter(self) -> None:
        """Empty the filter and go back to the table."""
        self.query_one("#filter", Input).value = ""
        self.query_one("#groups", DataTable).focus()

    def action_cycle_sort(self) -> None:
        """Next sort order: group, nodes, ready, cost, age."""
        names = list(FLEET_SORTS)
        self.sort_by = names[(names.index(self.sort_by) + 1) % len(names)]
        self.render_data()

    @on(Input.Changed, "#filter")
    def _filter_changed(self) -> None:
        self.render_data()

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.query_one("#groups", DataTable).focus()

    def render_data(self) -> None:
        d = self.capsched.data
        now_s = float(d.status.get("now_s") or 0.0)
        query = self.query_one("#filter", Input).value
        groups = group_fleet(d.nodes, self.capsched.prices, now_s)
        shown = sort_groups([g for g in groups if matches(g.text(), query)], self.sort_by)
        total_nodes = sum(g.total for g in shown)
        self.query_one("#fleet-summary", Label).update(
            f"{len(shown)} of {len(groups)} groups, {total_nodes} nodes, "
            f"{fmt_usd(sum(g.usd_per_hour for g in shown))}/h   sort: {self.sort_by} (s)"
            + (f"   filter: {query!r}" if query else "")
        )
        self._group_nodes = {"|".join(g.key): g.node_ids for g in shown}
        rows = [
            (
                "|".join(g.key),
                [
                    g.key[0],
                    g.key[1],
                    g.key[3] or g.key[2],  # a zone names its region too
                    g.key[4],
                    g.key[5],
                    str(g.total),
                    str(g.counts["ready"]),
                    " ".join(
                        f"{SHORT[s]} {g.counts[s]}" for s in STATES if s != "ready" and g.counts[s]
                    ),
                    fmt_usd(g.usd_per_hour),
                    fmt_age(g.oldest_s),
                    fmt_age(g.newest_s),
                ],
            )
            for g in shown
        ]
        _refill(self.query_one("#groups", DataTable), rows)
        self._show_members()

    def _show_members(self) -> None:
        table = self.query_one("#groups", DataTable)
        ids: list[str] = []
        if table.row_count:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
            ids = self._group_nodes.get(str(key), [])
        d = self.capsched.data
        now_s = float(d.status.get("now_s") or 0.0)
        by_id = {n["node_id"]: n for n in d.nodes}
        rows = []
        for node_id in ids:
            n = by_id[node_id]
            rows.append(
                (
                    node_id,
                    [
                        node_id,
                        n["state"],
                        fmt_age(now_s - float(n["state_since_s"] or now_s)),
                        fmt_age(now_s - float(n["launched_at_s"] or now_s)),
                        n.get("cloud_instance_id") or "",
                    ],
                )
            )
        _refill(self.query_one("#members", DataTable), rows)

    @on(DataTable.RowHighlighted, "#groups")
    def _group_highlighted(self) -> None:
        self._show_members()

    @on(DataTable.RowSelected, "#groups")
    def _group_selected(self) -> None:
        self.query_one("#members", DataTable).focus()

    @on(DataTable.RowSelected, "#members")
    def _member_selected(self, event: DataTable.RowSelected) -> None:
        self.capsched.open_node(str(event.row_key.value))


# -- Demand -----------------------------------------------------------------------------------


class DemandScreen(DataScreen):
    """Demand against planned demand and ready capacity over time, per model."""

    TITLE_TEXT = "Demand"

    def compose_body(self) -> ComposeResult:
        yield Label("", id="demand-note")
        with VerticalScroll(id="charts"):
            yield Static("", id="chart")

    def render_data(self) -> None:
        d = self.capsched.data
        view = d.demand
        if view is None:
            self.query_one("#demand-note", Label).update("no data yet")
            return
        self.query_one("#demand-note", Label).update(f"{view.note}; unit: {view.unit}")
        width = max(40, self.app.size.width - 4)
        now_s = float(d.status.get("now_s") or 0.0)
        out = Text()
        for model, points in view.series.items():
            last = points[-1] if points else None

            def num(v: float | None) -> str:
                return "-" if v is None else f"{v:.1f}"

            out.append(f"{model}", "bold")
            if last is not None:
                out.append(
                    f"   demand {num(last.demand)}   planned {num(last.planned)}"
                    f"   ready capacity {num(last.capacity)} {view.unit}"
                )
            out.append("\n")
            for size in view.sizes.get(model, []):
                out.append(f"  {size_line(size)}\n")
            out.append_text(
                demand_chart(
                    points,
                    width=width,
                    height=9,
                    unit=view.unit,
                    horizon=view.horizon_peak.get(model),
                    now_s=now_s,
                )
            )
            out.append("\n\n")
        if not view.series:
            out.append("no models reported yet")
        self.query_one("#chart", Static).update(out)


# -- Plan -------------------------------------------------------------------------------------


class PlanScreen(DataScreen):
    """The latest plan against the current fleet; approve or reject a pending one."""

    TITLE_TEXT = "Plan"
    AUTO_FOCUS = "#diff"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "approve", "Approve"),
        Binding("r", "reject", "Reject"),
    ]

    def compose_body(self) -> ComposeResult:
        yield Static("", id="plan-summary")
        table: DataTable[Any] = DataTable(id="diff", cursor_type="row", zebra_stripes=True)
        table.add_columns(
            "model", "pool", "now", "target", "change", "launch", "drain", "terminate", "$/h change"
        )
        yield table
        # What the plan leaves unserved, one row per series, highest priority first.
        unmet: DataTable[Any] = DataTable(id="unmet", cursor_type="row", zebra_stripes=True)
        unmet.add_columns("unmet demand of", "source region", "priority", "unmet rps", "why")
        yield unmet
        yield Static("", id="plan-reasons")

    def _plan(self) -> dict[str, Any] | None:
        plans = self.capsched.data.plans
        return plans[0] if plans else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Approve and reject show (and work) only while the shown plan waits for approval.
        if action in ("approve", "reject"):
            plan = self._plan()
            return (
                plan is not None
                and plan.get("approval") == "pending"
                and not self.capsched.backend.read_only
            )
        return True

    def action_approve(self) -> None:
        """Approve the pending plan."""
        plan = self._plan()
        if plan is not None:
            self.capsched.decide_plan(int(plan["id"]), approve=True)

    def action_reject(self) -> None:
        """Reject the pending plan."""
        plan = self._plan()
        if plan is not None:
            self.capsched.decide_plan(int(plan["id"]), approve=False)

    def render_data(self) -> None:
        d = self.capsched.data
        plan = self._plan()
        summary = self.query_one("#plan-summary", Static)
        reasons = self.query_one("#plan-reasons", Static)
        table = self.query_one("#diff", DataTable)
        unmet = self.query_one("#unmet", DataTable)
        self.refresh_bindings()
        if plan is None:
            summary.update("no plan yet")
            reasons.update("")
            table.clear()
            unmet.clear()
            return
        _refill(
            unmet,
            [
                (
                    f"{u.model}|{u.region}",
                    [
                        u.model,
                        u.region,
                        str(u.priority),
                        f"{u.rps:.1f}",
                        ", ".join(r.value for r in u.reasons) or "-",
                    ],
                )
                for u in unmet_rows(plan["unmet"])
            ],
        )
        # As tall as its rows (up to UNMET_ROWS_SHOWN, then it scrolls) plus its header
        # and border: a DataTable's `height: auto` measures before the rows arrive.
        unmet.display = unmet.row_count > 0
        unmet.styles.height = min(unmet.row_count, UNMET_ROWS_SHOWN) + 2
        prices = self.capsched.prices
        rows = plan_diff(plan, d.nodes, prices)
        now_usd = fleet_usd_per_hour(d.nodes, prices)
        plan_usd = plan.get("usd_per_hour")
        change = None if plan_usd is None else plan_usd - now_usd
        approval = str(plan.get("approval", "auto"))
        text = Text()
        text.append(f"plan #{plan['id']}", "bold")
        text.append(f" at {clock(plan.get('at_s'))} UTC by {plan.get('policy')}   solver ")
        status = str(plan.get("status"))
        text.append(status, "bold green" if status == "optimal" else "bold yellow")
        gap = plan.get("gap")
        text.append(
            f" (gap {'-' if gap is None else f'{gap:.2%}'}, {plan.get('solve_time_s') or 0:.2f} s)"
        )
        text.append("   approval ")
        text.append(
            approval,
            "bold black on yellow" if approval == "pending" else "bold",
        )
        if approval == "pending" and not self.capsched.backend.read_only:
            text.append("   a: approve  r: reject", "bold")
        text.append("\n")
        text.append(f"fleet now {fmt_usd(now_usd)}/h → plan {fmt_usd(plan_usd)}/h   change ")
        if change is None:
            text.append("-")
        elif abs(change) < 0.005:
            text.append("none")
        else:
            text.append(
                f"{'+' if change >= 0 else '-'}{fmt_usd(abs(change))}/h",
                "bold red" if change > 0 else "bold green",
            )
        launches = sum(r.launches for r in rows)
        drains = sum(r.drains for r in rows)
        terms = sum(r.terminations for r in rows)
        text.append(f"   launches {launches}  drains {drains}  terminations {terms}")
        summary.update(text)
        _refill(
            table,
            [
                (
                    f"{r.model}|{r.pool}",
                    [
                        r.model,
                        r.pool,
                        str(r.current),
                        str(r.target),
                        Text(f"{r.change:+d}" if r.change else "0", _change_style(r.change)),
                        str(r.launches or ""),
                        str(r.drains or ""),
                        str(r.terminations or ""),
                        f"{r.usd_per_hour_change:+.2f}" if r.change else "",
                    ],
                )
                for r in rows
            ],
        )
        why = Text()
        for title, items in (
            (
                "held back by the guards",
                [text for _, text in held_items(plan.get("held_back") or [])],
            ),
            ("solver notes", plan.get("notes") or []),
        ):
            why.append(f"{title}: ", "bold")
            why.append("none\n" if not items else "\n")
            for item in items:
                why.append(f"  • {item}\n")
        reasons.update(why)


def _change_style(change: int) -> str:
    return "bold green" if change > 0 else ("bold red" if change < 0 else "dim")


# -- Events -----------------------------------------------------------------------------------


class EventsScreen(DataScreen):
    """Actions and node transitions with their causes, newest first, following live."""

    TITLE_TEXT = "Events"
    AUTO_FOCUS = "#events"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter"),
        Binding("f", "toggle_follow", "Follow"),
        Binding("escape", "clear_filter", "Clear", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.follow = True  # new events go on top and the cursor stays there

    def compose_body(self) -> ComposeResult:
        yield Input(placeholder="filter (/): e.g. cs-00000003, interrupted, drain", id="filter")
        yield Label("", id="events-summary")
        table: DataTable[Any] = DataTable(id="events", cursor_type="row", zebra_stripes=True)
        table.add_columns("time (UTC)", "ago", "kind", "node", "what", "cause / detail")
        yield table

    def action_filter(self) -> None:
        """Focus the filter box."""
        self.query_one("#filter", Input).focus()

    def action_clear_filter(self) -> None:
        """Empty the filter and go back to the table."""
        self.query_one("#filter", Input).value = ""
        self.query_one("#events", DataTable).focus()

    def action_toggle_follow(self) -> None:
        """Follow new events live, or hold the list still to read it."""
        self.follow = not self.follow
        self.render_data()

    @on(Input.Changed, "#filter")
    def _filter_changed(self) -> None:
        self.render_data()

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.query_one("#events", DataTable).focus()

    def render_data(self) -> None:
        d = self.capsched.data
        table = self.query_one("#events", DataTable)
        query = self.query_one("#filter", Input).value
        if not self.follow and table.row_count:
            self.query_one("#events-summary", Label).update(
                "paused (f to follow again): new events are not shown"
            )
            return
        now_s = float(d.status.get("now_s") or 0.0)
        items = [a for a in activity(d.events, d.journal) if matches(a.text(), query)]
        self.query_one("#events-summary", Label).update(
            f"{len(items)} events, newest first   following live (f to hold)"
            + (f"   filter: {query!r}" if query else "")
        )
        _refill(
            table,
            [
                (
                    f"{a.order[0]}:{a.order[1]}",
                    [
                        clock(a.at_s),
                        fmt_age(now_s - a.at_s),
                        Text(a.kind, "bold" if a.kind != "node" else "dim"),
                        a.node_id,
                        a.what,
                        a.cause,
                    ],
                )
                for a in items[:1000]
            ],
        )
        if self.follow and table.row_count:
            table.move_cursor(row=0, animate=False)

    @on(DataTable.RowSelected, "#events")
    def _selected(self, event: DataTable.RowSelected) -> None:
        table = self.query_one("#events", DataTable)
        node_id = table.get_row(event.row_key)[3]
        self.capsched.open_node(str(node_id))


# -- Node -------------------------------------------------------------------------------------


class NodeScreen(DataScreen):
    """One node's details and history; drain it after a confirmation."""

    TITLE_TEXT = "Node"
    AUTO_FOCUS = "#history"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("d", "drain", "Drain"),
    ]

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id  # the node shown
        self.node: dict[str, Any] | None = None  # its last fetched record
        self.history: list[dict[str, Any]] = []  # its transitions, oldest first

    def compose_body(self) -> ComposeResult:
        yield Static("", id="node-detail")
        table: DataTable[Any] = DataTable(id="history", cursor_type="row", zebra_stripes=True)
        table.add_columns("time (UTC)", "ago", "from", "to", "cause")
        yield table
        yield Label("actions on this node", id="actions-title")
        actions: DataTable[Any] = DataTable(id="node-actions", cursor_type="row")
        actions.add_columns("time (UTC)", "action", "status", "detail")
        yield actions

    def on_mount(self) -> None:
        self.load()

    def update_view(self) -> None:
        super().update_view()
        self.load()

    @work(exclusive=True, group="node")
    async def load(self) -> None:
        """Fetch the node and its history (a worker: the screen never waits on I/O)."""
        from scheduler.service.api_client import ApiClientError

        backend = self.capsched.backend
        try:
            self.node = await backend.node(self.node_id)
            self.history = await backend.node_events(self.node_id)
        except ApiClientError as exc:
            self.query_one("#node-detail", Static).update(f"{self.node_id}: {exc}")
            return
        self._draw()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Drain only what can be drained: a ready node, on a daemon (not a database).
        if action == "drain":
            return (
                self.node is not None
                and self.node.get("state") == "ready"
                and not self.capsched.backend.read_only
            )
        return True

    def action_back(self) -> None:
        """Back to the screen this one was opened from."""
        self.dismiss()

    def action_drain(self) -> None:
        """Ask, then drain."""
        node = self.node
        if node is None:
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.capsched.drain_node(self.node_id)

        self.app.push_screen(
            ConfirmScreen(
                f"Drain {self.node_id}?",
                f"{node['model']} on {node.get('pool', '')}, {node['state']}. "
                "It stops taking requests, finishes what it has, and is terminated; "
                "the scheduler replaces it if the plan still wants the capacity.",
            ),
            confirmed,
        )

    def _draw(self) -> None:
        node = self.node
        if node is None:
            return
        now_s = float(self.capsched.data.status.get("now_s") or 0.0)
        text = Text()
        text.append(self.node_id, "bold")
        text.append(f"   {node['model']}   {node.get('pool', '')}   ")
        text.append(str(node["state"]).upper(), "bold reverse")
        since = float(node.get("state_since_s") or now_s)
        launched = float(node.get("launched_at_s") or now_s)
        text.append(
            f" for {fmt_age(now_s - since)}   age {fmt_age(now_s - launched)}"
            f"   launched {clock(node.get('launched_at_s'))} UTC"
            f"   cloud instance {node.get('cloud_instance_id') or '-'}"
        )
        price = self.capsched.prices.get(str(node.get("pool", "")))
        text.append(f"   {fmt_usd(price)}/h")
        if node.get("state") == "ready" and not self.capsched.backend.read_only:
            text.append("   d: drain", "bold")
        self.query_one("#node-detail", Static).update(text)
        self.refresh_bindings()
        _refill(
            self.query_one("#history", DataTable),
            [
                (
                    str(e["id"]),
                    [
                        clock(e["at_s"]),
                        fmt_age(now_s - float(e["at_s"])),
                        e["old"] or "(new)",
                        e["new"],
                        e["cause"],
                    ],
                )
                for e in reversed(self.history)
            ],
        )
        _refill(
            self.query_one("#node-actions", DataTable),
            [
                (str(j["id"]), [clock(j["at_s"]), j["kind"], j["status"], j["detail"]])
                for j in reversed(self.capsched.data.journal)
                if j["node_id"] == self.node_id
            ],
        )


# -- modals -----------------------------------------------------------------------------------


class ConfirmScreen(ModalScreen[bool]):
    """Yes or no, before an action that cannot be taken back."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "Cancel"),
    ]

    def __init__(self, question: str, detail: str) -> None:
        super().__init__()
        self.question = question  # one line, the action asked
        self.detail = detail  # what it will do

    def compose(self) -> ComposeResult:
        # A vertical stack sizes each part to its content, so the detail wraps onto as
        # many lines as it needs (an `auto` grid row gave it one line and cut it off).
        with Vertical(id="confirm"):
            yield Label(self.question, id="question")
            yield Static(self.detail, id="confirm-detail")
            with Horizontal(id="confirm-buttons"):
                yield Button("Yes (y)", variant="error", id="yes")
                yield Button("No (n)", variant="primary", id="no")

    def action_answer(self, yes: bool) -> None:
        """Close with the answer."""
        self.dismiss(yes)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


HELP = """\
[b]Screens[/b]
  1  Fleet     nodes grouped by model, cloud, region, zone, instance type, market
  2  Demand    demand, planned demand and ready capacity over time, per model
  3  Plan      the latest plan against the fleet; a approve, r reject (when pending)
  4  Events    transitions and actions, newest first; f follow/hold
  tab / shift+tab   next / previous screen
  enter     on a node (Fleet's lower table, Events): Node screen; d drain, esc back

[b]Everywhere[/b]
  /  filter (Fleet, Events)   esc  clear the filter
  s  sort the fleet (group, nodes, ready, cost, age)
  ?  this help   q  quit

[b]Header[/b]
  fleet $/h, headroom (ready capacity over demand), pending approvals,
  and whether the daemon answers; it reconnects by itself.
"""


class HelpScreen(ModalScreen[None]):
    """Every key, per screen."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "dismiss", "Close"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Static("capsched TUI — keys", id="help-title")
            yield Static(HELP, id="help-body")
            yield Static("esc, ? or q closes", id="help-footer")
