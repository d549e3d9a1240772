"""What the screens may ask of the app: its latest data and four actions.

The screens (tui.screens) render `AppData` and call back into the app through `Host`,
a protocol the app (tui.app.CapschedApp) satisfies; so screens never import the app,
and the app imports the screens, one way.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from tui.backend import Backend, DemandView

EVENTS_KEPT = 5000  # transitions kept in memory for the Events screen


@dataclass
class AppData:
    """The latest answers from the backend."""

    status: dict[str, Any] = field(default_factory=dict)  # Backend.status()
    nodes: list[dict[str, Any]] = field(default_factory=list)  # live nodes
    plans: list[dict[str, Any]] = field(default_factory=list)  # latest plans, newest first
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=EVENTS_KEPT))
    journal: list[dict[str, Any]] = field(default_factory=list)  # latest actions
    demand: DemandView | None = None  # demand picture per model
    connected: bool = False  # the last fetch succeeded
    ever_connected: bool = False  # some fetch succeeded (else: still waiting to attach)
    error: str = ""  # why the last fetch failed, "" when it did not
    fetches: int = 0  # completed fetches, successful or not

    @property
    def last_event_id(self) -> int | None:
        """Id of the newest transition held, to ask only for newer ones."""
        return int(self.events[-1]["id"]) if self.events else None


class Host(Protocol):
    """The app as the screens see it."""

    backend: Backend  # where data comes from
    data: AppData  # the latest fetch
    refresh_s: float  # seconds between fetches
    prices: dict[str, float]  # pool key -> USD/h

    def screen_title(self) -> str:
        """Title of the active screen, for the status bar."""
        ...

    def open_node(self, node_id: str) -> None:
        """Show one node's screen."""
        ...

    def decide_plan(self, plan_id: int, *, approve: bool) -> None:
        """Approve or reject a pending plan."""
        ...

    def drain_node(self, node_id: str) -> None:
        """Drain one node."""
        ...
