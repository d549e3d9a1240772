"""`GET /v1/demand` on a full history: 14 days of 5-minute ticks for 200 series (806,400
rows, the size at which it used to take seconds on the event loop). The answer is the
latest `limit` rows after `since_s`, oldest first, read with ORDER BY ... LIMIT in SQL
and in a worker thread, so the event loop (which runs the daemon's ticks) keeps its
schedule while four requests run at once.

The history is built synthetically by `fill_demand_history` (also used by
benchmarks/bench_api_demand.py, which measures the latency)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from test_api import TOKEN, FakeControl, token_never_logged  # noqa: F401

from scheduler.loop.store import StateStore
from scheduler.service.api import make_app, serve
from scheduler.service.telemetry import Telemetry

TICK_S = 300.0
DAYS = 14
SERIES = 200
END_S = 1_767_225_600.0  # the last tick's time
# How late the event loop may wake up while the requests run. Generous: a read on the
# loop itself took seconds at this size; off the loop it is a few milliseconds.
LOOP_LAG_BOUND_S = 2.0


@dataclass(frozen=True)
class History:
    """What `fill_demand_history` wrote."""

    ticks: list[float]  # tick times, oldest first
    keys: list[tuple[str, str]]  # (model, region) in the order each tick wrote them

    def row(self, tick: int, series: int) -> dict[str, object]:
        """The row written for `tick` (index into `ticks`) and `series`, as the API shows it."""
        model, region = self.keys[series]
        return {
            "at_s": self.ticks[tick],
            "model": model,
            "region": region,
            "rps": rps(tick, series),
            "peak_rps": rps(tick, series) * 1.5,
            "planned_rps": rps(tick, series) * 2.0,
            "forecast": {"0.5": rps(tick, series), "0.9": rps(tick, series) * 1.25},
            # Sizes are not written here (as by a daemon from before they were recorded).
            "input_tokens": None,
            "output_tokens": None,
            "planned_input_tokens": None,
            "planned_output_tokens": None,
            "buckets": [],
        }

    def latest(self, *, since_s: float, limit: int) -> list[dict[str, object]]:
        """The expected answer: rows after `since_s`, the latest `limit`, oldest first."""
        first_tick = next((t for t, at_s in enumerate(self.ticks) if at_s > since_s), None)
        if first_tick is None:
            return []
        n = len(self.keys)
        start = max(first_tick * n, len(self.ticks) * n - limit)  # flat row index
        return [self.row(i // n, i % n) for i in range(start, len(self.ticks) * n)]


def rps(tick: int, series: int) -> float:
    # Distinct per row, so a row out of place or from the wrong tick is noticed; binary
    # fractions, so every value (and 1.25, 1.5, 2 times it) has a short exact decimal
    # form and survives SQLite's 15-digit JSON unchanged.
    return tick * 256.0 + series / 8.0


def fill_demand_history(
    store: StateStore,
    *,
    days: float = DAYS,
    series: int = SERIES,
    tick_s: float = TICK_S,
    end_s: float = END_S,
) -> History:
    """Write `days` of ticks, `series` (model, region) rows each, ending at `end_s`, as the
    daemon's `record_demand` would have (same table, same columns), in one transaction."""
    n_ticks = round(days * 86400 / tick_s)
    ticks = [end_s - (n_ticks - 1 - i) * tick_s for i in range(n_ticks)]
    keys = [(f"model-{s // 4:02d}", f"region-{s % 4}") for s in range(series)]

    def rows() -> object:
        for t, at_s in enumerate(ticks):
            for s, (model, region) in enumerate(keys):
                v = rps(t, s)
                forecast = json.dumps({"0.5": v, "0.9": v * 1.25})
                yield (at_s, model, region, v, v * 1.5, v * 2.0, forecast)

    with store.transaction():
        store.db.conn.executemany(
            "insert into demand (at_s, model, region, rps, peak_rps, planned_rps, forecast)"
            " values (?, ?, ?, ?, ?, ?, ?)",
            rows(),  # type: ignore[arg-type]
        )
    return History(ticks, keys)


@pytest.fixture(scope="module")
def history_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, History]:
    path = tmp_path_factory.mktemp("demand") / "state.db"
    store = StateStore(path)
    history = fill_demand_history(store)
    store.close()
    return path, history


@dataclass
class Served:
    address: str
    history: History

    def url(self, query: str) -> str:
        return f"{self.address}/v1/demand?{query}"


@pytest.fixture
async def served(history_db: tuple[Path, History]) -> AsyncIterator[Served]:
    path, history = history_db
    store = StateStore(path)
    app = make_app(FakeControl(store), TOKEN, metrics_registry=Telemetry().registry)
    runner, address = await serve(app, host="127.0.0.1", port=0)
    try:
        yield Served(address, history)
    finally:
        await runner.cleanup()
        store.close()


async def get(session: aiohttp.ClientSession, url: str) -> list[dict[str, object]]:
    async with session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    rows: list[dict[str, object]] = body["demand"]
    return rows


async def test_the_full_history_is_there(history_db: tuple[Path, History]) -> None:
    path, history = history_db
    assert len(history.ticks) * len(history.keys) == 806_400
    store = StateStore(path)
    try:
        (count,) = store.db.execute("select count(*) from demand").fetchone()
    finally:
        store.close()
    assert count == 806_400


@pytest.mark.parametrize(
    ("since_ticks_back", "limit"),
    [
        (None, 100),  # the default view: the latest rows
        (None, 1000),  # five whole ticks
        (None, 250),  # a whole tick and the last 50 rows of the one before
        (3, 1000),  # fewer rows after since_s than the limit
        (0, 1000),  # since_s is the last tick: nothing after it
        (None, 10_000),  # the TUI's request
    ],
)
async def test_demand_is_the_latest_rows_oldest_first(
    served: Served, since_ticks_back: int | None, limit: int
) -> None:
    h = served.history
    if since_ticks_back is None:
        query, since_s = f"limit={limit}", float("-inf")
    else:
        since_s = h.ticks[-1 - since_ticks_back]
        query = f"since_s={int(since_s)}&limit={limit}"
    async with aiohttp.ClientSession() as session:
        rows = await get(session, served.url(query))
    assert rows == h.latest(since_s=since_s, limit=limit)


async def test_the_default_limit_is_100(served: Served) -> None:
    async with aiohttp.ClientSession() as session:
        rows = await get(session, f"{served.address}/v1/demand")
    assert rows == served.history.latest(since_s=float("-inf"), limit=100)


async def test_values_json_cannot_carry_are_null(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    with store.transaction():
        store.db.conn.execute(
            "insert into demand (at_s, model, region, rps, peak_rps, planned_rps, forecast)"
            " values (60.0, 'm', 'r', ?, ?, 1.5, NULL)",
            (float("inf"), float("-inf")),
        )
    app = make_app(FakeControl(store), TOKEN, metrics_registry=Telemetry().registry)
    runner, address = await serve(app, host="127.0.0.1", port=0)
    try:
        async with aiohttp.ClientSession() as session:
            rows = await get(session, f"{address}/v1/demand")
    finally:
        await runner.cleanup()
        store.close()
    assert rows == [
        {
            "at_s": 60.0,
            "model": "m",
            "region": "r",
            "rps": None,
            "peak_rps": None,
            "planned_rps": 1.5,
            "forecast": {},
            "input_tokens": None,
            "output_tokens": None,
            "planned_input_tokens": None,
            "planned_output_tokens": None,
            "buckets": [],
        }
    ]


async def test_four_parallel_requests_leave_the_event_loop_free(served: Served) -> None:
    """A tick is a task on this event loop: it starts on time only if the loop wakes up
    when asked. A heartbeat asks every 20 ms; its worst lateness while four large demand
    requests run at once must stay far below what one read on the loop used to cost."""
    done = asyncio.Event()
    worst_lag_s = 0.0
    beats = 0

    async def heartbeat() -> None:
        nonlocal worst_lag_s, beats
        while not done.is_set():
            asked = time.perf_counter()
            await asyncio.sleep(0.02)
            worst_lag_s = max(worst_lag_s, time.perf_counter() - asked - 0.02)
            beats += 1

    beat = asyncio.create_task(heartbeat())
    h = served.history
    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(
            get(session, served.url("limit=10000")),
            get(session, served.url("limit=10000")),
            get(session, served.url(f"since_s={int(h.ticks[-40])}&limit=10000")),
            get(session, served.url("limit=1000")),
        )
    done.set()
    await beat
    expected = h.latest(since_s=float("-inf"), limit=10_000)
    assert answers[0] == expected and answers[1] == expected
    assert answers[2] == h.latest(since_s=h.ticks[-40], limit=10_000)  # 39 ticks, 7800 rows
    assert answers[3] == expected[-1000:]
    assert beats > 0
    assert worst_lag_s < LOOP_LAG_BOUND_S, f"event loop held for {worst_lag_s:.2f} s"
