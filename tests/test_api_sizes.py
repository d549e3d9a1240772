"""Request sizes and size buckets through the daemon's store and control API (issue 20):
each tick records, per series, the mean prompt / output tokens the load signal reported,
the size the plan counted, and the split by prompt length; `GET /v1/demand` and
`GET /v1/plans` serve them. A database written before sizes were recorded still opens,
its rows without sizes served as null / []."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import builders
import pytest
from fakes import no_sleep
from test_api import TOKEN, FakeControl

from adapters.sim import SimCloud
from scheduler.domain import RequestSize, SizeBucket
from scheduler.fleet.catalog import load_catalog
from scheduler.loop.factory import build_scheduler
from scheduler.loop.store import MIGRATIONS, StateStore
from scheduler.ports.metrics import DemandSample
from scheduler.service.api import make_app, serve
from scheduler.service.telemetry import Telemetry

MODEL, REGION = builders.MODEL, builders.REGION
KEY = (MODEL, REGION)
MIX = (
    SizeBucket(0.0, 1024.0, 0.6, RequestSize(420.0, 180.0)),
    SizeBucket(1024.0, 4096.0, 0.3, RequestSize(2100.0, 180.0)),
    SizeBucket(4096.0, math.inf, 0.1, RequestSize(9000.0, 180.0)),
)


class SizedMetrics:
    """A load signal that reports a rate, a mean size and a bucket mix, until told not to."""

    def __init__(self) -> None:
        self.sized = True

    async def demand(self, now_s: float) -> DemandSample:
        if not self.sized:
            return DemandSample(now_s, {KEY: 20.0})
        return DemandSample(
            now_s,
            {KEY: 20.0},
            input_tokens={KEY: 1530.0},
            output_tokens={KEY: 180.0},
            buckets={KEY: MIX},
        )


@asynccontextmanager
async def served(store: StateStore) -> AsyncIterator[str]:
    app = make_app(FakeControl(store), TOKEN, metrics_registry=Telemetry().registry)
    runner, address = await serve(app, host="127.0.0.1", port=0)
    try:
        yield address
    finally:
        await runner.cleanup()


async def get(address: str, path: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(address + path) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_the_api_serves_what_each_tick_saw_and_planned_per_series(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    catalog = load_catalog()
    cloud = SimCloud(catalog.offerings, catalog.instance_types, boot_time_s=60)
    metrics = SizedMetrics()
    config = builders.fleet_config(scheduler={"state_db": str(tmp_path / "state.db")})
    rec = build_scheduler(config, provider=cloud, metrics=metrics, store=store, sleep=no_sleep)
    await rec.tick(0.0)
    metrics.sized = False  # the histogram and token counters go away
    cloud.advance_to(300.0)
    await rec.tick(300.0)
    async with served(store) as address:
        demand = (await get(address, "/v1/demand"))["demand"]
        plans = (await get(address, "/v1/plans"))["plans"]
    store.close()

    first, second = demand
    assert (first["input_tokens"], first["output_tokens"]) == (1530.0, 180.0)
    assert (first["planned_input_tokens"], first["planned_output_tokens"]) == (1530.0, 180.0)
    assert [(b["range"], b["share"], b["input_tokens"]) for b in first["buckets"]] == [
        ("0-1024", 0.6, 420.0),
        ("1024-4096", 0.3, 2100.0),
        ("4096+", 0.1, 9000.0),
    ]
    assert first["buckets"][-1]["max_input_tokens"] is None  # no upper end
    # Nothing reported: no observed size or mix; the plan still counts the recent mean.
    assert (second["input_tokens"], second["output_tokens"], second["buckets"]) == (None, None, [])
    assert (second["planned_input_tokens"], second["planned_output_tokens"]) == (1530.0, 180.0)
    # The plan says what it provisioned for, sizes included.
    latest = plans[0]["demand"]
    assert [(d["model"], d["region"]) for d in latest] == [KEY]
    assert (latest[0]["input_tokens"], latest[0]["output_tokens"]) == (1530.0, 180.0)
    assert latest[0]["rps"] >= 20.0


async def test_a_database_from_before_sizes_opens_and_serves_them_as_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v7.db"
    with monkeypatch.context() as m:
        m.setattr("scheduler.loop.store.MIGRATIONS", MIGRATIONS[:7])
        old = StateStore(path)
    with old.transaction():
        old.db.conn.execute(
            "insert into demand (at_s, model, region, rps, peak_rps, planned_rps, forecast)"
            " values (60.0, 'm', 'r', 2.0, 2.5, 3.0, '{}')"
        )
        old.db.conn.execute(
            "insert into plans (at_s, policy, status, usd_per_hour, objective, gap,"
            " solve_time_s, placements, unmet, notes, held_back)"
            " values (60.0, 'capsched', 'optimal', 1.0, 1.0, 0.0, 0.1, '[]', '[]', '[]', '[]')"
        )
    old.close()
    store = StateStore(path)  # migrates
    async with served(store) as address:
        demand = (await get(address, "/v1/demand"))["demand"]
        plans = (await get(address, "/v1/plans"))["plans"]
    store.close()
    assert demand == [
        {
            "at_s": 60.0,
            "model": "m",
            "region": "r",
            "rps": 2.0,
            "peak_rps": 2.5,
            "planned_rps": 3.0,
            "forecast": {},
            "input_tokens": None,
            "output_tokens": None,
            "planned_input_tokens": None,
            "planned_output_tokens": None,
            "buckets": [],
        }
    ]
    assert plans[0]["demand"] == []


async def test_the_tui_demand_screen_shows_each_series_size(tmp_path: Path) -> None:
    from textual.widgets import Static

    from scheduler.loop.store import DemandRecord
    from scheduler.service.api_client import ApiClient
    from tui.app import CapschedApp
    from tui.backend import ApiBackend

    store = StateStore(tmp_path / "state.db")
    for at_s, size in ((0.0, RequestSize(900.0, 150.0)), (300.0, RequestSize(1530.0, 180.0))):
        store.record_demand(
            at_s,
            [
                DemandRecord(MODEL, REGION, 20.0, 22.0, 25.0, {}, size, size, MIX),
                DemandRecord(MODEL, "eu-west", 5.0, 5.0, 6.0, {}),
            ],
        )
    async with served(store) as address:
        app = CapschedApp(ApiBackend(ApiClient(address)), poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.press("2")
            await app.workers.wait_for_complete()
            await pilot.pause()
            text = str(app.screen.query_one("#chart", Static).content)
            await pilot.press("q")
    store.close()
    # The latest tick's size per series; the mix by prompt length where it is known.
    assert (
        f"{REGION}: prompt 1,530 / output 180 tokens; "
        "by prompt 0-1024 60%, 1024-4096 30%, 4096+ 10%"
    ) in text
    assert "eu-west: prompt - / output - tokens (planned as the reference request)" in text
    assert "prompt 900" not in text
