"""Pilot tests of the TUI against a real daemon (embedded default: simulated cloud and the
bundled trace) started here as a subprocess: navigation and help, approve and reject in
manual mode, drain with a confirmation, and the disconnected state with reconnection.

No sleeps: the tests wait on the daemon's own log lines (read by a thread) and on the
app's workers; the app's refresh interval is replaced by explicit fetches."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scheduler.service.api_client import ApiClient
from tui.app import CapschedApp
from tui.backend import ApiBackend
from tui.screens import ConfirmScreen, HelpScreen, NodeScreen, StatusBar

CONFIG_TEXT = """
[scheduler]
tick_interval_s = 300
state_db = "{db}"
[daemon]
tick_timeout_s = 60
api_port = {port}
approval_mode = "{approval}"
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
SIZE = (120, 40)
WAIT_S = 120.0  # upper bound on any one wait for the daemon; never slept


class Daemon:
    """`capsched daemon` in a subprocess; a thread reads its log so the pipe never fills
    and the test can wait for a line."""

    def __init__(self, workdir: Path, *, approval: str = "auto", port: int = 0) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        config = workdir / "capsched.toml"
        config.write_text(CONFIG_TEXT.format(db=workdir / "state.db", port=port, approval=approval))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "capsched.cli", "daemon", "--config", str(config)],
            stderr=subprocess.PIPE,
            text=True,
            cwd=workdir,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.address = self.wait_for("api_listening address=").split("address=")[1].split()[0]
        self.token = (workdir / "capsched.token").read_text().strip()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<eof>")
            self._cond.notify_all()

    def wait_for(self, text: str, *, start: int = 0) -> str:
        """The first log line from index `start` on containing `text` (blocks)."""
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    if text in line:
                        return line
                    if line == "<eof>":
                        raise AssertionError(f"daemon exited before {text!r}")
                if not self._cond.wait(timeout=WAIT_S):
                    raise AssertionError(f"no {text!r} from the daemon in {WAIT_S} s")

    async def until(self, text: str, *, start: int = 0) -> str:
        """`wait_for` off the event loop, so the app keeps running meanwhile."""
        return await asyncio.to_thread(self.wait_for, text, start=start)

    def stop(self) -> None:
        """SIGTERM and wait: the daemon finishes its tick and exits 0."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
        self._reader.join(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(*, approval: str = "auto", port: int = 0, name: str = "d") -> Daemon:
        daemon = Daemon(tmp_path / name, approval=approval, port=port)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


def app_for(daemon_address: str, token: str | None = None) -> CapschedApp:
    """An app on the daemon's API, fetching only when the test says so."""
    return CapschedApp(ApiBackend(ApiClient(daemon_address, token=token)), poll=False)


async def settle(app: CapschedApp, pilot: object) -> None:
    """Let every worker finish and the screen catch up."""
    from textual.pilot import Pilot

    assert isinstance(pilot, Pilot)
    await app.workers.wait_for_complete()
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()


async def refetch(app: CapschedApp, pilot: object) -> None:
    """What the refresh interval does, once."""
    app._tick()
    await settle(app, pilot)


def header(app: CapschedApp) -> str:
    return app.screen.query_one(StatusBar).plain


async def test_navigation_by_keys_and_the_help_screen(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon()
    await daemon.until("logger=scheduler.loop.actuator launched")
    await daemon.until("logger=scheduler.loop.reconciler tick now_s=")
    app = app_for(daemon.address)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert app.data.connected and app.data.nodes
        assert "● connected" in header(app) and "$" in header(app)
        assert app.current_mode == "fleet"
        for key, mode in (("2", "demand"), ("3", "plan"), ("4", "events"), ("1", "fleet")):
            await pilot.press(key)
            await settle(app, pilot)
            assert app.current_mode == mode
            assert mode.capitalize() in header(app)
        await pilot.press("tab")
        assert app.current_mode == "demand"
        await pilot.press("shift+tab", "shift+tab")
        assert app.current_mode == "events"
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        # Enter on an event opens that node's screen; escape comes back.
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, NodeScreen)
        assert app.screen.history and app.screen.node is not None
        await pilot.press("escape")
        assert app.current_mode == "events" and not isinstance(app.screen, NodeScreen)
        await pilot.press("q")
    assert app.return_code == 0


async def test_approve_and_reject_a_pending_plan(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon(approval="manual")
    first = await daemon.until("plan_pending plan_id=")
    app = app_for(daemon.address, daemon.token)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert "1 pending approval" in header(app)
        await pilot.press("3")
        await settle(app, pilot)
        plan = app.data.plans[0]
        assert plan["approval"] == "pending" and f"plan_id={plan['id']}" in first
        await pilot.press("r")
        await settle(app, pilot)
        async with ApiClient(daemon.address) as api:
            assert (await api.plan(plan["id"]))["approval"] == "rejected"
        # The next tick plans again and waits again: approve that one.
        mark = len(daemon.lines)
        await daemon.until("plan_pending plan_id=", start=mark)
        await refetch(app, pilot)
        pending = app.data.plans[0]
        assert pending["approval"] == "pending" and pending["id"] != plan["id"]
        await pilot.press("a")
        await settle(app, pilot)
        async with ApiClient(daemon.address) as api:
            assert (await api.plan(pending["id"]))["approval"] == "approved"
        await daemon.until("logger=scheduler.loop.actuator launched", start=mark)
        assert app.data.plans[0]["approval"] == "approved"
        assert "0 pending approvals" in header(app)


async def test_drain_a_node_after_confirming(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon()
    line = await daemon.until("new=ready cause=serving")
    node_id = line.split("node_id=")[1].split()[0]
    app = app_for(daemon.address, daemon.token)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.open_node(node_id)
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, NodeScreen) and screen.node is not None
        assert screen.node["state"] == "ready"
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # no: nothing happens
        await settle(app, pilot)
        assert app.screen is screen
        async with ApiClient(daemon.address) as api:
            assert (await api.node(node_id))["state"] == "ready"
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(app, pilot)
        async with ApiClient(daemon.address) as api:
            assert (await api.node(node_id))["state"] in ("draining", "terminating", "gone")
        await refetch(app, pilot)
        assert screen.node["state"] != "ready"
        assert any(e["cause"] == "manual drain" for e in screen.history)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_disconnected_state_and_reconnection(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    port = free_port()
    app = app_for(f"http://127.0.0.1:{port}")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        # Nothing listens yet: a clear offline state, no crash, no data.
        assert not app.data.connected and "DISCONNECTED" in header(app)
        assert "waiting for the daemon" in header(app)
        daemon = start_daemon(port=port)
        await daemon.until("logger=scheduler.loop.reconciler tick now_s=")
        await refetch(app, pilot)
        assert app.data.connected and "● connected" in header(app)
        nodes = list(app.data.nodes)
        assert nodes
        daemon.stop()
        await refetch(app, pilot)
        assert not app.data.connected
        assert "DISCONNECTED" in header(app) and "retrying" in header(app)
        assert app.data.nodes == nodes  # the last data stays on screen
        # The daemon comes back on the same address; the next refresh reconnects.
        again = start_daemon(port=port, name="d")
        await again.until("api_listening address=")
        await refetch(app, pilot)
        assert app.data.connected and "● connected" in header(app)
