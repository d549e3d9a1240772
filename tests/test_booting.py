"""Nodes still booting are kept until they are ready (README: "never cancels nodes still
booting"), on the daemon's own path: the embedded default's edges (simulated cloud,
bundled trace), the reconciler and the daemon's tick, over an hour of ticks.

Before the fix launches of this replay were cancelled a tick later (`booting ->
terminating cause=plan no longer needs it (not serving yet)`; 8 of 53 in an issue's run of
the daemon): a model whose planned demand rose past its target was searched again from
that target without its booting nodes committed, and a pool's surplus was taken from its
booting nodes first. Either fix alone still lets this replay cancel one.
"""

from __future__ import annotations

from pathlib import Path

from fakes import no_sleep

from capsched.service import build_edges
from scheduler.config import Config, load_config
from scheduler.domain import NodeState
from scheduler.fleet.catalog import load_catalog
from scheduler.fleet.profiles import load_profiles
from scheduler.loop.factory import build_scheduler
from scheduler.loop.store import StateStore
from scheduler.service.daemon import Daemon

TICK_S = 300.0
NOT_SERVING = {NodeState.REQUESTED.value, NodeState.BOOTING.value}


def embedded_default(tmp_path: Path) -> Config:
    config = load_config(None)
    return config.model_copy(
        update={
            "scheduler": config.scheduler.model_copy(
                update={"state_db": str(tmp_path / "state.db")}
            ),
            # A work limit instead of the clock: the same replay on any machine.
            "solver": config.solver.model_copy(update={"node_limit": 2000}),
            "sources": config.sources.model_copy(update={"sim_state": ""}),  # in memory
        }
    )


async def test_the_daemon_keeps_every_booting_node_until_it_is_ready(tmp_path: Path) -> None:
    config = embedded_default(tmp_path)
    catalog, profiles = load_catalog(), load_profiles()
    edges = build_edges(config, catalog, profiles)
    store = StateStore(config.scheduler.state_db)
    reconciler = build_scheduler(
        config,
        provider=edges.provider,
        metrics=edges.metrics,
        store=store,
        catalog=catalog,
        profiles=profiles,
        sleep=no_sleep,
    )
    start = edges.clock()
    now = [start]
    daemon = Daemon(
        config=config,
        config_path=None,
        reconciler=reconciler,
        store=store,
        clock=lambda: now[0],
        advance=edges.advance,
    )
    for i in range(13):  # an hour of the trace, ticks 5 minutes apart
        now[0] = start + i * TICK_S
        report = await daemon.tick_once()
        assert report is not None and report.plan is not None
        # What the plan wants covers every node launched and not serving yet.
        wanted = {(p.model, p.pool): p.count for p in report.plan.placements}
        for node in store.live_nodes():
            if node.state in (NodeState.REQUESTED, NodeState.BOOTING):
                same = [
                    n
                    for n in store.live_nodes()
                    if (n.model, n.pool) == (node.model, node.pool)
                    and n.state in (NodeState.REQUESTED, NodeState.BOOTING)
                ]
                assert wanted.get((node.model, node.pool), 0) >= len(same)

    events = store.events()
    launched = {e["node_id"] for e in events if e["new"] == NodeState.REQUESTED.value}
    cancelled = [
        (e["node_id"], e["cause"])
        for e in events
        if e["old"] in NOT_SERVING and e["new"] == NodeState.TERMINATING.value
    ]
    ready = {e["node_id"] for e in events if e["new"] == NodeState.READY.value}
    store.close()
    assert len(launched) >= 10  # the replay scaled up and moved nodes
    assert cancelled == []
    assert len(ready) >= len(launched) - 4  # all but the last tick's launches came up
