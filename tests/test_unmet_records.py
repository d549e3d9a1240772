"""Unmet demand is one typed record (`scheduler.domain.Unmet`) from the planner to the
screen: stored by the state store, served by the control API in the JSON form of
docs/api.md, read back by the API client and by the read-only database backend as
records, and listed by the TUI's plan screen with its priority and reasons. Plans stored
before the record had a JSON form (lists) read the same way."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from test_api import TOKEN, FakeControl, plan, token_never_logged  # noqa: F401
from textual.widgets import DataTable

from scheduler.domain import Unmet, UnmetReason
from scheduler.loop.store import StateStore, stored_unmet
from scheduler.service.api import make_app, serve
from scheduler.service.api_client import ApiClient, BadReply
from scheduler.service.telemetry import Telemetry

SMALL, BIG = "llama-3.1-8b", "llama-3.1-70b"
UNMET = (
    Unmet(SMALL, "us-east", 1.5, 0, (UnmetReason.BUDGET,)),
    Unmet(BIG, "eu-west", 2.25, 7, (UnmetReason.QUOTA, UnmetReason.BUDGET)),
    Unmet(BIG, "us-east", 0.5, 7, (UnmetReason.CAPACITY,)),
)
SIZE = (120, 40)


def legacy_plan(store: StateStore, at_s: float, unmet: str) -> int:
    """A plan stored by an older capsched: its unmet column as that version wrote it."""
    plan_id = store.record_plan(plan(), at_s, "capsched")
    store.db.execute("update plans set unmet = ? where id = ?", (unmet, plan_id))
    return plan_id


@dataclass
class Served:
    address: str
    store: StateStore
    new: int  # a plan with UNMET
    legacy: int  # a plan stored as [model, region, rps] lists


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    store = StateStore(tmp_path / "state.db")
    legacy = legacy_plan(store, 10.0, '[["llama-3.1-8b", "us-east", 3.0]]')
    new = store.record_plan(replace(plan(), unmet=UNMET), 20.0, "capsched")
    telemetry = Telemetry()
    app = make_app(FakeControl(store), TOKEN, metrics_registry=telemetry.registry)
    runner, address = await serve(app, host="127.0.0.1", port=0)
    try:
        yield Served(address, store, new, legacy)
    finally:
        await runner.cleanup()
        store.close()


def test_the_json_form_round_trips_and_names_what_is_wrong() -> None:
    for u in UNMET:
        assert Unmet.from_json(u.to_json()) == u
    assert UNMET[1].to_json() == {
        "model": BIG,
        "region": "eu-west",
        "rps": 2.25,
        "priority": 7,
        "reasons": ["quota", "budget"],
    }
    good = UNMET[0].to_json()
    for bad, says in (
        ({**good, "reasons": ["weather"]}, "unknown reasons ['weather']"),
        ({**good, "reasons": [["budget"]]}, "unknown reasons"),
        ({**good, "priority": "high"}, "priority must be an integer"),
        ({**good, "rps": None}, "rps must be a number"),
        ({k: v for k, v in good.items() if k != "region"}, "no 'region'"),
        ([SMALL, "us-east", 1.5], "not an object"),
    ):
        with pytest.raises(ValueError, match=re.escape(says)):
            Unmet.from_json(bad)


def test_the_store_reads_every_stored_form_as_records(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.db")
    new = store.record_plan(replace(plan(), unmet=UNMET), 1.0, "capsched")
    three = legacy_plan(store, 2.0, '[["llama-3.1-8b", "us-east", 3.0]]')
    five = legacy_plan(store, 3.0, '[["llama-3.1-70b", "us-east", 2.0, 7, ["quota"]]]')
    rows = {r["id"]: r for r in store.plans()}
    assert stored_unmet(rows[new]["unmet"]) == UNMET
    assert stored_unmet(rows[three]["unmet"]) == (Unmet(SMALL, "us-east", 3.0),)
    assert stored_unmet(rows[five]["unmet"]) == (
        Unmet(BIG, "us-east", 2.0, 7, (UnmetReason.QUOTA,)),
    )
    assert stored_unmet(None) == () and stored_unmet("[]") == ()
    store.close()


async def test_the_api_serves_objects_and_the_client_gives_records(served: Served) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as s, s.get(served.address + "/v1/plans") as resp:
        body = await resp.json()
    by_id = {p["id"]: p for p in body["plans"]}
    assert by_id[served.new]["unmet"] == [u.to_json() for u in UNMET]
    # An old row leaves the API in today's form, never as a list.
    assert by_id[served.legacy]["unmet"] == [
        {"model": SMALL, "region": "us-east", "rps": 3.0, "priority": 0, "reasons": []}
    ]
    async with ApiClient(served.address) as c:
        plans = {p["id"]: p for p in await c.plans()}
        assert plans[served.new]["unmet"] == UNMET
        assert (await c.plan(served.legacy))["unmet"] == (Unmet(SMALL, "us-east", 3.0),)


async def test_the_client_refuses_an_unmet_entry_it_cannot_read() -> None:
    async def plans(_: web.Request) -> web.Response:
        item = {"model": SMALL, "region": "us-east", "rps": 1.0, "reasons": ["weather"]}
        return web.json_response({"plans": [{"id": 3, "unmet": [item]}]})

    app = web.Application()
    app.router.add_get("/v1/plans", plans)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        async with ApiClient(f"http://{host}:{port}") as c:
            with pytest.raises(BadReply, match=r"plan 3: .*unknown reasons"):
                await c.plans()
    finally:
        await runner.cleanup()


def unmet_table(app: Any) -> list[list[str]]:
    table = app.screen.query_one("#unmet", DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def test_the_plan_screen_lists_unmet_demand_by_priority_from_the_api(
    served: Served,
) -> None:
    from tui.app import CapschedApp
    from tui.backend import ApiBackend

    app = CapschedApp(ApiBackend(ApiClient(served.address)), poll=False, prices={})
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        await pilot.press("3")
        await app.workers.wait_for_complete()
        await pilot.pause()
        table = app.screen.query_one("#unmet", DataTable)
        assert [str(c.label) for c in table.columns.values()] == [
            "unmet demand of",
            "source region",
            "priority",
            "unmet rps",
            "why",
        ]
        # Highest priority first, then the most load.
        assert unmet_table(app) == [
            [BIG, "eu-west", "7", "2.2", "quota, budget"],
            [BIG, "us-east", "7", "0.5", "capacity"],
            [SMALL, "us-east", "0", "1.5", "budget"],
        ]


async def test_the_plan_screen_reads_an_old_database_the_same_way(tmp_path: Path) -> None:
    from tui.app import CapschedApp
    from tui.backend import DbBackend

    store = StateStore(tmp_path / "old.db")
    legacy_plan(store, 5.0, '[["llama-3.1-8b", "us-east", 3.0], ["llama-3.1-70b", "x", 0.0]]')
    store.close()
    app = CapschedApp(DbBackend(tmp_path / "old.db"), poll=False, prices={})
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        await pilot.press("3")
        await app.workers.wait_for_complete()
        await pilot.pause()
        # No load left: no row; no priority stored: the default, 0; no reasons: "-".
        assert unmet_table(app) == [[SMALL, "us-east", "0", "3.0", "-"]]
