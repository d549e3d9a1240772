"""`capsched tui`: the Textual app, and its command line.

    capsched tui [--url URL | --socket PATH] [--token-file FILE]   # a running daemon
    capsched tui --db STATE.db                                      # a database, read-only

The app fetches everything in one exclusive worker on an interval (`set_interval`), keeps
the latest answers in `app.data`, and asks the visible screen to redraw. A fetch that
cannot reach the daemon marks the app disconnected and keeps the last data on screen;
the next interval simply tries again, so it reconnects by itself.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType

from scheduler.service.api_client import (
    ApiClient,
    ApiClientError,
    ApiError,
    ApiUnavailable,
    Unauthorized,
)
from tui.backend import ApiBackend, Backend, DbBackend, ReadOnly, load_prices
from tui.host import AppData
from tui.screens import (
    DataScreen,
    DemandScreen,
    EventsScreen,
    FleetScreen,
    HelpScreen,
    NodeScreen,
    PlanScreen,
)

# Modes in key order: number key -> mode name.
SCREENS: tuple[str, ...] = ("fleet", "demand", "plan", "events")


class CapschedApp(App[None]):
    """Watch the fleet, the forecast and the money; approve plans; drain nodes."""

    CSS_PATH = "app.tcss"
    TITLE = "capsched"
    MODES: ClassVar[dict[str, Any]] = {
        "fleet": FleetScreen,
        "demand": DemandScreen,
        "plan": PlanScreen,
        "events": EventsScreen,
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("1", "show('fleet')", "Fleet"),
        Binding("2", "show('demand')", "Demand"),
        Binding("3", "show('plan')", "Plan"),
        Binding("4", "show('events')", "Events"),
        Binding("tab", "cycle(1)", "Next", show=False, priority=True),
        Binding("shift+tab", "cycle(-1)", "Previous", show=False, priority=True),
    ]

    def __init__(
        self,
        backend: Backend,
        *,
        refresh_s: float = 2.0,
        prices: Mapping[str, float] | None = None,
        poll: bool = True,
    ) -> None:
        super().__init__()
        self.backend = backend  # where data comes from
        self.refresh_s = refresh_s  # seconds between fetches
        self.prices = dict(prices) if prices is not None else load_prices()  # pool -> $/h
        self.poll = poll  # False in tests that drive fetches themselves
        self.data = AppData()
        self._fetching = False

    # -- lifecycle --------------------------------------------------------------------------

    async def on_mount(self) -> None:
        await self.switch_mode("fleet")
        if self.poll:
            self.set_interval(self.refresh_s, self._tick)
        self.fetch()

    async def on_unmount(self) -> None:
        await self.backend.close()

    def _tick(self) -> None:
        # A fetch still in flight (a slow daemon) is left to finish or time out; starting
        # another would cancel it (exclusive) and a hung daemon would never show offline.
        if not self._fetching:
            self.fetch()

    def screen_title(self) -> str:
        """Title of the active screen, for the status bar."""
        screen = self.screen
        if isinstance(screen, NodeScreen):
            return f"Node {screen.node_id}"
        if isinstance(screen, DataScreen):
            index = SCREENS.index(self.current_mode) + 1 if self.current_mode in SCREENS else 0
            return f"{index} {screen.TITLE_TEXT}" if index else screen.TITLE_TEXT
        return ""

    # -- fetching ---------------------------------------------------------------------------

    @work(exclusive=True, group="fetch")
    async def fetch(self) -> None:
        """Fetch everything the screens show, then redraw. Never raises: a failure is
        shown in the header and the next interval tries again."""
        self._fetching = True
        b, d = self.backend, self.data
        try:
            status = await b.status()
            nodes = await b.nodes()
            plans = await b.plans(limit=20)
            events = await b.events(after=d.last_event_id, limit=1000)
            journal = await b.journal(limit=500)
            demand = await b.demand()
        except ApiUnavailable as exc:
            d.connected, d.error = False, str(exc)
        except ApiClientError as exc:
            # The daemon answered, but not with what we asked: connected, with a message.
            d.connected, d.error = True, f"daemon said: {exc}"
        else:
            if d.events and events and int(events[0]["id"]) <= int(d.events[-1]["id"]):
                d.events.clear()  # a different database behind the same address: start over
            d.status, d.nodes, d.plans, d.journal, d.demand = status, nodes, plans, journal, demand
            d.events.extend(events)
            d.connected, d.ever_connected, d.error = True, True, ""
        finally:
            self._fetching = False
            d.fetches += 1
        self.redraw()

    def redraw(self) -> None:
        """Ask the screens of the active mode to draw the latest data."""
        for screen in self.screen_stack:
            if isinstance(screen, DataScreen) and screen.is_mounted:
                screen.update_view()

    # -- actions ----------------------------------------------------------------------------

    async def action_show(self, mode: str) -> None:
        """Switch to one of the screens (a mode each, so each keeps its cursor)."""
        if self.current_mode != mode:
            await self.switch_mode(mode)

    async def action_cycle(self, step: int) -> None:
        """Next or previous screen, in number-key order."""
        index = SCREENS.index(self.current_mode) if self.current_mode in SCREENS else 0
        await self.action_show(SCREENS[(index + step) % len(SCREENS)])

    def action_help(self) -> None:
        """Show every key."""
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def open_node(self, node_id: str) -> None:
        """Open the Node screen of `node_id` over the current screen."""
        self.push_screen(NodeScreen(node_id))

    def decide_plan(self, plan_id: int, *, approve: bool) -> None:
        """Approve or reject plan `plan_id` (in a worker)."""
        self._act("approve" if approve else "reject", plan_id)

    def drain_node(self, node_id: str) -> None:
        """Drain `node_id` (in a worker); the caller confirmed first."""
        self._act("drain", node_id)

    @work(exclusive=True, group="action")
    async def _act(self, verb: str, target: int | str) -> None:
        """One action, its outcome as a notification, then a fresh fetch."""
        b = self.backend
        try:
            if verb == "approve":
                await b.approve(int(target))
            elif verb == "reject":
                await b.reject(int(target))
            else:
                await b.drain(str(target))
        except ReadOnly as exc:
            self.notify(str(exc), severity="warning")
            return
        except Unauthorized as exc:
            self.notify(
                f"{verb} refused: the token is missing or wrong ({exc.message}); pass --token-file",
                severity="error",
                timeout=10,
            )
            return
        except ApiError as exc:
            self.notify(f"{verb} {target} refused: {exc.message}", severity="error")
            return
        except ApiUnavailable as exc:
            self.notify(f"{verb} {target}: daemon unreachable ({exc})", severity="error")
            return
        done = {"approve": "approved", "reject": "rejected", "drain": "draining"}[verb]
        what = f"plan #{target}" if verb != "drain" else str(target)
        self.notify(f"{what} {done}")
        self.fetch()


# -- command line -----------------------------------------------------------------------------


def make_backend(args: argparse.Namespace) -> Backend:
    """The backend the arguments ask for (raises ValueError with a one-line reason)."""
    if args.db is not None:
        try:
            return DbBackend(args.db)
        except (OSError, ValueError) as exc:
            raise ValueError(str(exc)) from None
    from scheduler.service.api import TokenFileError, read_token

    token_file: Path | None = args.token_file
    if token_file is None and Path("capsched.token").exists():
        token_file = Path("capsched.token")
    token = None
    if token_file is not None:
        try:
            token = read_token(token_file)
        except TokenFileError as exc:
            raise ValueError(str(exc)) from None
    client = (
        ApiClient(socket_path=str(args.socket), token=token)
        if args.socket
        else ApiClient(args.url, token=token)
    )
    return ApiBackend(client)


def run(args: argparse.Namespace) -> int:
    """Entry point of `capsched tui`."""
    try:
        backend = make_backend(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    CapschedApp(backend, refresh_s=args.refresh_s).run()
    return 0


__all__ = ["SCREENS", "AppData", "CapschedApp", "make_backend", "run"]
