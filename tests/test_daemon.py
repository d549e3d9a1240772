"""The daemon: failures stay inside a tick, reloads keep a good config, pause, manual
drain, recovery of half-done actions, and a clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import Clock, no_sleep

from adapters.sim import SimCloud
from scheduler.config import load_config
from scheduler.decide.policy import CapschedPolicy
from scheduler.domain import NodeState
from scheduler.fleet.catalog import load_catalog
from scheduler.loop.factory import build_scheduler
from scheduler.loop.store import StateStore
from scheduler.ports.metrics import DemandSample
from scheduler.service.daemon import Daemon

REPO = Path(__file__).resolve().parents[1]
CONFIG_TEXT = """
[scheduler]
tick_interval_s = 300
state_db = "{db}"
[daemon]
tick_timeout_s = {timeout}
api_port = 0
[guards]
min_node_age_s = 0
[[models]]
name = "llama-3.1-8b"
[[models]]
name = "llama-3.1-70b"
[[regions]]
name = "us-east"
location = "us-east-1"
[clouds.aws]
regions = ["us-east-1", "us-east-2"]
[clouds.gcp]
enabled = false
"""


class Metrics:
    def __init__(self, rps: float = 10.0) -> None:
        self.rps = rps

    async def demand(self, now_s: float) -> DemandSample:
        return DemandSample(
            now_s, {("llama-3.1-8b", "us-east"): self.rps, ("llama-3.1-70b", "us-east"): 0.5}
        )


def make(tmp_path: Path, timeout: float = 60.0) -> tuple[Daemon, SimCloud, Path, Clock]:
    path = tmp_path / "capsched.toml"
    path.write_text(CONFIG_TEXT.format(db=tmp_path / "state.db", timeout=timeout))
    config = load_config(path)
    catalog = load_catalog()
    cloud = SimCloud(catalog.offerings, catalog.instance_types, boot_time_s=60)
    store = StateStore(config.scheduler.state_db)
    rec = build_scheduler(config, provider=cloud, metrics=Metrics(), store=store, sleep=no_sleep)
    clock = Clock()

    async def advance(now_s: float) -> None:
        cloud.advance_to(now_s)

    daemon = Daemon(
        config=config, config_path=path, reconciler=rec, store=store, clock=clock, advance=advance
    )
    return daemon, cloud, path, clock


async def test_a_failing_tick_is_counted_and_the_next_one_runs(tmp_path: Path) -> None:
    daemon, _, _, _ = make(tmp_path)

    def broken(obs: object) -> object:
        raise RuntimeError("policy bug")

    good = daemon.reconciler.policy.decide
    daemon.reconciler.policy.decide = broken  # type: ignore[method-assign,assignment]
    assert await daemon.tick_once() is None
    assert daemon.stats.tick_errors == 1 and "policy bug" in daemon.stats.last_error
    daemon.reconciler.policy.decide = good  # type: ignore[method-assign]
    report = await daemon.tick_once()
    assert report is not None and report.actions
    assert daemon.stats.ticks == 1


async def test_a_hanging_tick_times_out(tmp_path: Path) -> None:
    daemon, cloud, _, _ = make(tmp_path, timeout=0.05)
    never = asyncio.Event()

    async def hang() -> list[object]:
        await never.wait()
        return []

    cloud.list_instances = hang  # type: ignore[method-assign,assignment]
    assert await daemon.tick_once() is None
    assert "timed out" in daemon.stats.last_error


async def test_bad_reload_keeps_the_running_config(tmp_path: Path) -> None:
    daemon, _, path, _ = make(tmp_path)
    before = daemon.config
    path.write_text(path.read_text().replace("tick_interval_s = 300", "tick_interval_s = -5"))
    problems = await daemon.reload()
    assert problems and "scheduler.tick_interval_s" in problems[0] and str(path) in problems[0]
    assert daemon.config is before and daemon.reconciler.config is before
    assert daemon.stats.reload_failures == 1 and daemon.stats.config_generation == 1


async def test_good_reload_switches_config(tmp_path: Path) -> None:
    daemon, _, path, _ = make(tmp_path)
    path.write_text(path.read_text().replace("[daemon]", "[daemon]\ndry_run = true"))
    assert await daemon.reload() == []
    assert daemon.config.daemon.dry_run and daemon.reconciler.config.daemon.dry_run
    assert daemon.stats.config_generation == 2
    report = await daemon.tick_once()
    assert report is not None and report.actions == ()


async def test_paused_daemon_plans_but_does_not_act(tmp_path: Path) -> None:
    daemon, cloud, _, _ = make(tmp_path)
    await daemon.pause()
    report = await daemon.tick_once()
    assert report is not None and report.plan is not None and report.actions == ()
    assert cloud.counters.launches == 0
    await daemon.resume()
    report = await daemon.tick_once()
    assert report is not None and report.actions


async def test_manual_drain_then_replacement(tmp_path: Path) -> None:
    daemon, _, _, clock = make(tmp_path)
    await daemon.tick_once()
    clock.now = 120.0
    await daemon.tick_once()
    ready = [n for n in daemon.store.live_nodes() if n.state is NodeState.READY]
    assert ready
    assert await daemon.drain(ready[0].node_id)
    assert not await daemon.drain("no-such-node")
    assert daemon.store.node(ready[0].node_id).state is NodeState.DRAINING  # type: ignore[union-attr]
    clock.now = 240.0
    report = await daemon.tick_once()
    assert report is not None
    kinds = {type(a).__name__ for a in report.actions}
    assert {"Launch", "Terminate"} <= kinds  # the plan still wants the capacity


async def test_recovery_finishes_a_half_done_termination(tmp_path: Path) -> None:
    daemon, cloud, _, _ = make(tmp_path)
    await daemon.tick_once()
    node = daemon.store.live_nodes()[0]
    # A crash after the journal entry, before the cloud call and the state change:
    daemon.store.journal_begin("terminate", node.node_id, 1.0, "plan")
    await daemon.recover()
    assert daemon.store.journal("pending") == []
    assert daemon.store.node(node.node_id).state is NodeState.TERMINATING  # type: ignore[union-attr]
    assert node.node_id not in {i.node_id for i in cloud.running()}


def test_sigterm_stops_the_daemon_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "capsched.toml"
    path.write_text(CONFIG_TEXT.format(db=tmp_path / "state.db", timeout=60))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        [sys.executable, "-m", "capsched.cli", "daemon", "--config", str(path)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
    ) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:  # blocks until the daemon says it ticked once
            if "tick now_s=" in line:
                break
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=60) == 0
    assert "daemon_stopped" in rest
    assert "Traceback" not in rest
    store = StateStore(tmp_path / "state.db")
    assert store.plans(1)  # the tick's plan was persisted
    store.close()


def test_daemon_with_a_trace_that_does_not_fit_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "capsched.toml"
    text = CONFIG_TEXT.format(db=tmp_path / "state.db", timeout=60)
    path.write_text(text.replace('[[models]]\nname = "llama-3.1-70b"\n', ""))
    proc = subprocess.run(
        [sys.executable, "-m", "capsched.cli", "daemon", "--config", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "not a configured model/region" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("bad", ["[[models]\n", "[scheduler]\ntick_interval_s = 'x'\n"])
def test_daemon_with_a_broken_config_exits_2(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(bad)
    proc = subprocess.run(
        [sys.executable, "-m", "capsched.cli", "daemon", "--config", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 2 and str(path) in proc.stderr and "Traceback" not in proc.stderr


async def test_systemd_hears_ready_watchdog_and_stopping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    sock_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(sock_path))
        listener.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", str(sock_path))
        monkeypatch.setenv("WATCHDOG_USEC", "20000")
        daemon, _, _, _ = make(tmp_path)
        async with daemon:
            await daemon.tick_once()
        messages = []
        while True:
            try:
                messages.append(listener.recv(4096).decode())
            except BlockingIOError:
                break
    assert messages[0].startswith("READY=1")
    assert any(m == "WATCHDOG=1" for m in messages)
    assert messages[-1] == "STOPPING=1"


async def test_unreachable_prometheus_never_scales_down(tmp_path: Path) -> None:
    import socket

    from adapters.prometheus import PrometheusSource
    from capsched.service import build_edges
    from scheduler.fleet.profiles import load_profiles

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "capsched.toml"
    text = CONFIG_TEXT.format(db=tmp_path / "state.db", timeout=60)
    path.write_text(
        text
        + f'[sources]\ndemand = "prometheus"\n[prometheus]\nurl = "http://127.0.0.1:{port}"\n'
        + "retries = 0\ntimeout_s = 1\n"
    )
    config = load_config(path)
    catalog = load_catalog()
    edges = build_edges(config, catalog, load_profiles())
    assert isinstance(edges.metrics, PrometheusSource)
    store = StateStore(config.scheduler.state_db)
    rec = build_scheduler(
        config, provider=edges.provider, metrics=edges.metrics, store=store, sleep=no_sleep
    )
    report = await rec.tick(edges.clock())
    assert not report.demand_complete
    assert not any(type(a).__name__ in ("Drain", "Terminate") for a in report.actions)
    await edges.metrics.close()
    store.close()


async def test_manual_approval_through_the_api_of_a_running_daemon(tmp_path: Path) -> None:
    import stat

    from scheduler.service.api_client import ApiClient, Unauthorized

    path = tmp_path / "capsched.toml"
    text = CONFIG_TEXT.format(db=tmp_path / "state.db", timeout=60)
    path.write_text(text.replace("[daemon]", '[daemon]\napproval_mode = "manual"'))
    with subprocess.Popen(
        [sys.executable, "-m", "capsched.cli", "daemon", "--config", str(path)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as proc:
        assert proc.stderr is not None
        address = ""
        for line in proc.stderr:  # blocks until the API listens and a plan is pending
            if "api_listening address=" in line:
                address = line.split("address=")[1].split()[0]
            if "plan_pending plan_id=" in line:
                break
        token_file = tmp_path / "capsched.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        async with ApiClient(address) as anon:
            status = await anon.status()
            assert status["approval_mode"] == "manual" and status["pending_plan_id"]
            with pytest.raises(Unauthorized):
                await anon.approve(status["pending_plan_id"])
        async with ApiClient(address, token=token_file.read_text().strip()) as api:
            await api.approve(status["pending_plan_id"])
        for line in proc.stderr:  # the approved plan acts at once
            if "logger=scheduler.loop.actuator launched" in line:
                break
        for line in proc.stderr:  # and the tick that launched is exported
            if "logger=scheduler.loop.reconciler tick now_s=" in line:
                break
        async with ApiClient(address) as anon:
            exposition = await anon.metrics()
            nodes = await anon.nodes()
            history = await anon.demand()
        assert nodes and "capsched_nodes{" in exposition
        assert {(h["model"], h["region"]) for h in history} == {
            ("llama-3.1-8b", "us-east"),
            ("llama-3.1-70b", "us-east"),
        }
        assert all(h["planned_rps"] is not None for h in history)
        assert 'capsched_actions_total{kind="launch",result="ok"}' in exposition
        proc.send_signal(signal.SIGTERM)
        proc.stderr.read()
        assert proc.wait(timeout=60) == 0


async def test_notices_between_ticks_wake_the_loop_and_replace_at_once(tmp_path: Path) -> None:
    import numpy as np

    from adapters.sim import SpotTrace
    from scheduler.domain import Market

    daemon, cloud, _, clock = make(tmp_path)
    await daemon.tick_once()
    clock.now = 120.0
    await daemon.tick_once()
    spot = [n for n in daemon.store.live_nodes() if n.pool.market is Market.SPOT]
    assert spot, "the plan uses spot here"
    # The cloud takes that pool's capacity away: a notice comes out.
    cloud._traces[spot[0].pool] = SpotTrace("test", 60.0, np.array([0]))
    cloud.advance_to(180.0)
    assert await daemon.poll_notices_once() >= 1
    assert daemon._wake.is_set()
    clock.now = 181.0
    report = await daemon.tick_once()
    assert report is not None
    assert daemon.store.node(spot[0].node_id).state is NodeState.INTERRUPTED  # type: ignore[union-attr]
    assert any(type(a).__name__ == "Launch" for a in report.actions)


async def test_reload_refuses_what_start_refuses(tmp_path: Path) -> None:
    # Start runs check_config (names the catalog must know); a reload skipped it, so a
    # region the catalog does not know was taken and every later tick failed on it.
    daemon, _, path, _ = make(tmp_path)
    before = daemon.config
    path.write_text(path.read_text().replace('location = "us-east-1"', 'location = "mars-1"'))
    problems = await daemon.reload()
    assert problems == [f"{path}: regions[0].location: 'mars-1' is not a catalog region"]
    assert daemon.config is before and daemon.reconciler.config is before
    assert daemon.stats.reload_failures == 1 and daemon.stats.config_generation == 1
    report = await daemon.tick_once()
    assert report is not None and report.plan is not None  # still planning on the old config


async def test_reload_rebuilds_the_forecaster_only_when_the_forecast_changed(
    tmp_path: Path,
) -> None:
    daemon, _, path, _ = make(tmp_path)
    policy = daemon.reconciler.policy
    assert isinstance(policy, CapschedPolicy)
    await daemon.tick_once()
    learnt = policy.forecaster
    path.write_text(path.read_text().replace("min_node_age_s = 0", "min_node_age_s = 60"))
    assert await daemon.reload() == []
    assert policy.forecaster is learnt  # an unrelated change keeps what it learnt
    assert policy.config.guards.min_node_age_s == 60
    path.write_text(path.read_text() + "\n[forecast]\nhorizon_min = 60\n")
    assert await daemon.reload() == []
    assert policy.forecaster is not learnt
    assert policy.forecaster.config.horizon_min == 60  # was: the old 30-minute forecaster
    report = await daemon.tick_once()
    assert report is not None and report.decision is not None
    assert report.decision.planned_rps  # the new forecaster plans from the next tick on


async def test_status_lists_the_last_ticks_errors_as_typed_items(tmp_path: Path) -> None:
    daemon, _, _, _ = make(tmp_path)

    async def broken(now_s: float) -> DemandSample:
        raise TimeoutError("scrape took too long")

    daemon.reconciler.metrics.demand = broken  # type: ignore[method-assign]
    report = await daemon.tick_once()
    assert report is not None
    [error] = daemon.status()["errors"]
    assert error["kind"] == "metrics" and error["node_id"] == "" and error["pool"] is None
    assert "scrape took too long" in error["text"]
