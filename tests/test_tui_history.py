"""The TUI's Demand screen starts from the daemon's stored history, summed over regions."""

from __future__ import annotations

from typing import Any

from tui.backend import ApiBackend


class FakeClient:
    base_url = "http://127.0.0.1:1"
    socket_path = ""

    async def __aenter__(self) -> FakeClient:
        return self

    async def demand(self, *, limit: int | None = None) -> list[dict[str, Any]]:
        row = {"model": "m", "planned_rps": 2.0}
        return [
            {**row, "at_s": 0.0, "region": "a", "rps": 1.0},
            {**row, "at_s": 0.0, "region": "b", "rps": 1.5},
            {**row, "at_s": 300.0, "region": "a", "rps": 2.0},
            {**row, "at_s": 300.0, "region": "b", "rps": None},  # a region was missing
        ]


async def test_history_is_seeded_from_the_store() -> None:
    backend = ApiBackend(FakeClient())  # type: ignore[arg-type]
    await backend._open()
    view = await backend.demand()
    points = view.series["m"]
    assert [(p.t_s, p.demand, p.planned) for p in points] == [(0.0, 2.5, 4.0), (300.0, None, 4.0)]
