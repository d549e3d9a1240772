"""Control API benchmark: `GET /v1/demand` latency on a full 14-day history, and how late
the event loop (which runs the daemon's ticks) wakes up meanwhile.

Run:  .venv/bin/python benchmarks/bench_api_demand.py [--days 14] [--series 200]
                                                     [--requests 200] [--db PATH] [--old]

The history is written synthetically (tests/test_api_demand.py `fill_demand_history`: 5-minute
ticks, `--series` rows each; 14 x 200 is 806,400 rows) into a fresh database, or `--db`
is reused if it already holds one. The API is served on 127.0.0.1 in this process, as
the daemon serves it, and asked over HTTP; the client reads the raw body (no JSON
decoding), so the figures are the server's. A heartbeat task on the same event loop
asks to wake every 20 ms and records how late it wakes: a tick scheduled on this loop
would start that late.

Printed, per limit (100, 1,000, 10,000): p50, p99 and max latency of `--requests`
sequential requests (half without since_s, half with a since_s a random number of ticks
back), then the same with 4 clients in parallel, each with the heartbeat's worst and
p99 lateness. `--old` also times the previous implementation (the whole history read
and decoded on the loop, then sliced) once.

Target (issue 15): p99 under 50 ms for limit <= 1000 at 806k rows while ticks keep their
schedule.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_api import FakeControl
from test_api_demand import TICK_S, fill_demand_history

from scheduler.loop.store import StateStore
from scheduler.service.api import make_app, serve
from scheduler.service.telemetry import Telemetry

LIMITS = (100, 1000, 10_000)
PARALLEL = 4
HEARTBEAT_S = 0.02


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(v: float) -> str:
    return f"{v * 1000:8.1f} ms"


class Heartbeat:
    """How late the event loop wakes a task that sleeps HEARTBEAT_S at a time."""

    def __init__(self) -> None:
        self.lags_s: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(HEARTBEAT_S)
            self.lags_s.append(max(0.0, time.perf_counter() - asked - HEARTBEAT_S))

    def __enter__(self) -> Heartbeat:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def timed_get(session: aiohttp.ClientSession, url: str) -> float:
    started = time.perf_counter()
    async with session.get(url) as resp:
        await resp.read()
        assert resp.status == 200, resp.status
    return time.perf_counter() - started


def urls(address: str, limit: int, n: int, end_s: float, rng: random.Random) -> list[str]:
    out = []
    for i in range(n):
        if i % 2:
            back = rng.randint(1, 2000)  # up to about a week of ticks back
            out.append(f"{address}/v1/demand?since_s={int(end_s - back * TICK_S)}&limit={limit}")
        else:
            out.append(f"{address}/v1/demand?limit={limit}")
    return out


async def run(args: argparse.Namespace) -> None:
    path = Path(args.db) if args.db else Path(tempfile.mkdtemp()) / "state.db"
    store = StateStore(path)
    (rows,) = store.db.execute("select count(*) from demand").fetchone()
    if rows == 0:
        started = time.perf_counter()
        fill_demand_history(store, days=args.days, series=args.series)
        (rows,) = store.db.execute("select count(*) from demand").fetchone()
        print(f"history: {rows:,} rows written in {time.perf_counter() - started:.1f} s ({path})")
    else:
        print(f"history: {rows:,} rows reused from {path}")
    (end_s,) = store.db.execute("select max(at_s) from demand").fetchone()

    if args.old:
        started = time.perf_counter()
        old = store.demand_history()[-100:]
        took = ms(time.perf_counter() - started)
        print(f"previous implementation, limit=100, on the loop: {took}")
        assert len(old) == 100

    app = make_app(FakeControl(store), "bench-token", metrics_registry=Telemetry().registry)
    runner, address = await serve(app, host="127.0.0.1", port=0)
    rng = random.Random(15)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=PARALLEL)) as s:
            for u in urls(address, 100, 10, end_s, rng):  # warm the page cache
                await timed_get(s, u)
            print(f"\n{'':24}{'p50':>11}{'p99':>11}{'max':>11}   loop lateness worst / p99")
            for limit in LIMITS:
                n = args.requests if limit < 10_000 else max(20, args.requests // 4)
                with Heartbeat() as beat:
                    seq = [await timed_get(s, u) for u in urls(address, limit, n, end_s, rng)]
                print(
                    f"limit={limit:<6} 1 client  {ms(pct(seq, 0.5))}{ms(pct(seq, 0.99))}"
                    f"{ms(max(seq))}   {ms(max(beat.lags_s))} / {ms(pct(beat.lags_s, 0.99))}"
                )
                todo = urls(address, limit, n, end_s, rng)
                with Heartbeat() as beat:
                    par: list[float] = []
                    for i in range(0, len(todo), PARALLEL):
                        par += await asyncio.gather(
                            *(timed_get(s, u) for u in todo[i : i + PARALLEL])
                        )
                print(
                    f"limit={limit:<6} {PARALLEL} clients {ms(pct(par, 0.5))}{ms(pct(par, 0.99))}"
                    f"{ms(max(par))}   {ms(max(beat.lags_s))} / {ms(pct(beat.lags_s, 0.99))}"
                )
                mean = statistics.fmean(seq) * 1000
                print(f"  ({n} requests each; mean {mean:.1f} ms sequential)")
    finally:
        await runner.cleanup()
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=float, default=14.0)
    parser.add_argument("--series", type=int, default=200)
    parser.add_argument("--requests", type=int, default=200, help="requests per limit and mode")
    parser.add_argument("--db", default="", help="reuse (or create) this state database")
    parser.add_argument("--old", action="store_true", help="also time the previous read once")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
