"""What the control API may ask of the running daemon (the TUI talks to it through
the API only). Reads come from the state store; actions go through these methods."""

from __future__ import annotations

from typing import Any, Protocol

from scheduler.loop.store import StateStore


class Control(Protocol):
    """The daemon as the control API sees it."""

    store: StateStore  # read-only use: nodes, events, plans, journal

    def status(self) -> dict[str, Any]:
        """Mode, paused, last tick time and result, pending plan id, config generation."""
        ...

    def forecast(self) -> dict[str, Any]:
        """Latest planned demand and forecast quantiles per (model, region)."""
        ...

    async def approve(self, plan_id: int) -> bool:
        """Approve the pending plan `plan_id`; False if it is not the pending one."""
        ...

    async def reject(self, plan_id: int) -> bool:
        """Reject the pending plan `plan_id`; False if it is not the pending one."""
        ...

    async def drain(self, node_id: str) -> bool:
        """Drain one node by hand (it is replaced if the plan still wants it);
        False if the node is unknown or not ready."""
        ...

    async def pause(self) -> None:
        """Stop acting (ticks still observe and plan) until `resume`."""
        ...

    async def resume(self) -> None:
        """Act again."""
        ...

    async def reload(self) -> list[str]:
        """Re-read the config file; the problems if it is invalid (the old one stays)."""
        ...
