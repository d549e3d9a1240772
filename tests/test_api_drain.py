"""Manual drains through the API against the real daemon: twenty parallel
`POST /v1/nodes/{id}/drain` of one node, sent while a tick holds the daemon's tick lock,
drain it once: one 202, nineteen 409s, one journal entry, the router hook called once.

No sleeps: the tick is held on an event inside the cloud's listing, and the requests are
released once all twenty have reached the daemon."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from fakes import Clock, no_sleep
from test_api import TOKEN, token_never_logged  # noqa: F401
from test_daemon import CONFIG_TEXT, Metrics

from adapters.sim import SimCloud
from scheduler.config import load_config
from scheduler.domain import Node, NodeState
from scheduler.fleet.catalog import load_catalog
from scheduler.loop.factory import build_scheduler
from scheduler.loop.store import StateStore
from scheduler.ports.provider import Instance
from scheduler.service.api import make_app, serve
from scheduler.service.daemon import Daemon
from scheduler.service.telemetry import Telemetry

PARALLEL = 20


class CountingRouter:
    """A `Drainer` whose deregistration hook records each node it was called for."""

    def __init__(self) -> None:
        self.hooked: list[str] = []  # node ids, in call order

    async def begin(self, node: Node) -> None:
        self.hooked.append(node.node_id)

    async def in_flight(self, node: Node, now_s: float) -> int | None:
        return 1  # still serving: the drain stays open for the whole test


async def test_parallel_drains_of_one_node_drain_it_once(tmp_path: Path) -> None:
    path = tmp_path / "capsched.toml"
    path.write_text(CONFIG_TEXT.format(db=tmp_path / "state.db", timeout=60.0))
    config = load_config(path)
    catalog = load_catalog()
    cloud = SimCloud(catalog.offerings, catalog.instance_types, boot_time_s=60)
    store = StateStore(config.scheduler.state_db)
    router = CountingRouter()
    reconciler = build_scheduler(
        config, provider=cloud, metrics=Metrics(), store=store, drainer=router, sleep=no_sleep
    )
    clock = Clock()

    async def advance(now_s: float) -> None:
        cloud.advance_to(now_s)

    daemon = Daemon(
        config=config, config_path=path, reconciler=reconciler, store=store, clock=clock,
        advance=advance,
    )  # fmt: skip
    await daemon.tick_once()
    clock.now = 120.0
    await daemon.tick_once()
    target = next(n for n in store.live_nodes() if n.state is NodeState.READY).node_id
    assert router.hooked == []

    # A tick that holds the lock until the test lets it go.
    listing = cloud.list_instances
    in_tick, release = asyncio.Event(), asyncio.Event()

    async def held_listing() -> list[Instance]:
        in_tick.set()
        await release.wait()
        return await listing()

    cloud.list_instances = held_listing  # type: ignore[method-assign]
    # Count the drains that reached the daemon, to release the tick once all have.
    drain = daemon.drain
    arrived, all_arrived = 0, asyncio.Event()

    async def counted_drain(node_id: str) -> bool:
        nonlocal arrived
        arrived += 1
        if arrived == PARALLEL:
            all_arrived.set()
        return await drain(node_id)

    daemon.drain = counted_drain  # type: ignore[method-assign]

    app = make_app(daemon, TOKEN, metrics_registry=Telemetry().registry)
    runner, address = await serve(app, host="127.0.0.1", port=0)
    try:
        clock.now = 240.0
        tick = asyncio.create_task(daemon.tick_once())
        await in_tick.wait()
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:

            async def post() -> tuple[int, dict[str, object]]:
                async with session.post(f"{address}/v1/nodes/{target}/drain") as resp:
                    return resp.status, await resp.json()

            posts = [asyncio.create_task(post()) for _ in range(PARALLEL)]
            await all_arrived.wait()
            release.set()
            replies = await asyncio.gather(*posts)
        await tick
    finally:
        await runner.cleanup()

    statuses = sorted(status for status, _ in replies)
    assert statuses == [202] + [409] * (PARALLEL - 1)
    refused = [body for status, body in replies if status == 409]
    assert all(body["state"] == "draining" for body in refused)
    assert router.hooked == [target]
    drains = [e for e in store.journal() if e.kind == "drain" and e.node_id == target]
    assert len(drains) == 1 and drains[0].status == "done"
    assert store.node(target).state is NodeState.DRAINING  # type: ignore[union-attr]
    store.close()
