"""Log lines a person can read: the time (and the simulated time) on a terminal, plain
key=value for journald, JSON on request; launches, drains and terminations say why in
numbers, and every tick line carries the fleet and the load against the plan."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from daemon_proc import start_daemon
from hypothesis import given
from hypothesis import strategies as st

from capsched.service import build_edges
from scheduler.domain.actions import Launch
from scheduler.fleet.catalog import load_catalog
from scheduler.fleet.profiles import load_profiles
from scheduler.loop.logs import (
    JsonFormatter,
    KeyValueFormatter,
    event,
    format_value,
    iso_utc,
    resolve_format,
    set_virtual_clock,
)
from scheduler.loop.store import StateStore

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
CONFIG = """
[scheduler]
tick_interval_s = 300
state_db = "{db}"
[solver]
node_limit = 2000
[daemon]
api_port = 0
[sources]
speedup = 600
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


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def record(message: str = "tick now_s=5") -> logging.LogRecord:
    return logging.LogRecord(
        "scheduler.loop.reconciler", logging.INFO, __file__, 1, message, (), None
    )


def test_auto_is_timed_on_a_terminal_and_plain_elsewhere() -> None:
    assert resolve_format("auto", Terminal()) == "timed"
    assert resolve_format("auto", io.StringIO()) == "plain"  # a pipe, a file, journald
    assert resolve_format("json", Terminal()) == "json"


def test_timed_lines_carry_utc_time_and_the_simulated_time() -> None:
    rec = record()
    rec.created = 0.25
    assert KeyValueFormatter(timed=True).format(rec) == (
        "time=1970-01-01T00:00:00.250Z level=INFO logger=scheduler.loop.reconciler tick now_s=5"
    )
    set_virtual_clock(lambda: 1700158680.0)
    try:
        timed = KeyValueFormatter(timed=True).format(rec)
        plain = KeyValueFormatter(timed=False).format(rec)
    finally:
        set_virtual_clock(None)
    assert timed.startswith("time=1970-01-01T00:00:00.250Z sim_time=2023-11-16T18:18:00.000Z ")
    assert plain == "level=INFO logger=scheduler.loop.reconciler tick now_s=5"  # journald's


def test_json_keeps_an_event_s_fields_typed() -> None:
    logger = logging.getLogger("test_logs.json")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        event(logger, logging.INFO, "launched", node_id="cs-1", rps=1.5, nodes=3, gone=math.nan)
        logger.info("plain text=%s", "kept")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["event"] == "launched" and first["node_id"] == "cs-1"
    assert first["rps"] == 1.5 and first["nodes"] == 3 and first["gone"] is None
    assert re.fullmatch(ISO, first["time"]) and first["level"] == "INFO"
    assert second["message"] == "plain text=kept"


@given(st.text(max_size=30))
def test_a_text_value_reads_back_as_one_token(text: str) -> None:
    # A key=value line splits on spaces: a value with spaces, quotes or "=" is quoted.
    shown = format_value(text)
    if shown.startswith('"'):
        assert json.loads(shown) == text
    else:
        assert shown == text and " " not in shown and "=" not in shown


def test_iso_utc_is_zulu_to_the_millisecond() -> None:
    assert iso_utc(1700158680.5) == "2023-11-16T18:18:00.500Z"


def test_a_terminal_gets_the_time_in_front(tmp_path: Path) -> None:
    # `capsched plan -v` logs its solve; on a terminal (a pseudo-terminal here) every
    # line starts with the time, through a pipe (journald, a file) none does.
    command = [sys.executable, "-m", "capsched.cli", "-v", "plan"]
    main, replica = os.openpty()
    try:
        done = subprocess.run(
            command, stderr=replica, stdout=subprocess.DEVNULL, cwd=tmp_path, check=False
        )
        os.close(replica)
        chunks = []
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(main)
    assert done.returncode == 0
    lines = [x for x in b"".join(chunks).decode().splitlines() if "level=" in x]
    assert lines and all(re.match(rf"time={ISO} level=", x) for x in lines)
    piped = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, check=False)
    plain = [x for x in piped.stderr.splitlines() if "level=" in x]
    assert plain and all(x.startswith("level=") for x in plain)


def test_daemon_json_lines_say_why_and_carry_fleet_and_load(tmp_path: Path) -> None:
    config = tmp_path / "capsched.toml"
    config.write_text(CONFIG.format(db=tmp_path / "state.db"))
    docs: list[dict[str, object]] = []
    with start_daemon(config, tmp_path, args=["--log-format", "json"]) as proc:
        assert proc.stderr is not None
        ticks = 0
        for line in proc.stderr:
            doc = json.loads(line)  # every line is one JSON object
            docs.append(doc)
            if doc.get("event") == "tick":
                ticks += 1
                if ticks == 3:
                    break
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=60) == 0
    docs.extend(json.loads(line) for line in rest.splitlines())
    assert all(re.fullmatch(ISO, str(d["time"])) for d in docs)
    decisions = [d for d in docs if "event" in d]  # from the loop, on the demo's own clock
    assert decisions and all(re.fullmatch(ISO, str(d["sim_time"])) for d in decisions)
    launches = [d for d in docs if d.get("event") == "launched"]
    assert launches
    for d in launches:
        assert {"model", "pool", "reason"} <= d.keys()
        assert isinstance(d["planned_rps"], float | int) and d["planned_rps"] >= 0
        assert d["planned_capacity_rps"] >= d["capacity_rps"]  # type: ignore[operator]
        assert d["pool_planned"] > d["pool_nodes"]  # type: ignore[operator]
    tick = [d for d in docs if d.get("event") == "tick"][-1]
    for key in ("nodes", "planned_nodes", "fleet_usd_per_hour", "usd_per_hour"):
        assert isinstance(tick[key], int | float)
    assert tick["demand_rps"] > 0 and tick["planned_rps"] >= tick["demand_rps"]  # type: ignore[operator]


async def test_tick_reports_and_actions_carry_typed_numbers(tmp_path: Path) -> None:
    from fakes import no_sleep

    from scheduler.config import load_config
    from scheduler.loop.factory import build_scheduler

    path = tmp_path / "capsched.toml"
    path.write_text(CONFIG.format(db=tmp_path / "state.db"))
    config = load_config(path)
    catalog, profiles = load_catalog(), load_profiles()
    edges = build_edges(config, catalog, profiles)
    store = StateStore(config.scheduler.state_db)
    rec = build_scheduler(
        config,
        provider=edges.provider,
        metrics=edges.metrics,
        store=store,
        catalog=catalog,
        profiles=profiles,
        sleep=no_sleep,
    )
    start = edges.clock()
    await edges.advance(start)
    first = await rec.tick(start)
    await edges.advance(start + 300)
    second = await rec.tick(start + 300)
    store.close()
    assert first.plan is not None and first.fleet is not None and second.fleet is not None
    assert first.fleet.nodes == 0 and first.fleet.usd_per_hour == 0.0
    assert first.fleet.planned_nodes == sum(p.count for p in first.plan.placements)
    assert first.fleet.planned_rps == pytest.approx(sum(d.rps for d in first.plan.demand))
    assert second.fleet.nodes == first.fleet.planned_nodes  # the first plan's launches
    assert second.fleet.usd_per_hour == pytest.approx(first.plan.usd_per_hour)
    launches = [a for a in first.actions if isinstance(a, Launch)]
    assert launches and all(a.grounds is not None for a in launches)
    wanted = {(p.model, p.pool): p.count for p in first.plan.placements}
    for a in launches:
        assert a.grounds is not None and a.grounds.model == a.model
        assert a.grounds.pool_planned == wanted[a.model, a.pool]


def test_log_lines_after_a_replay_carry_no_simulated_time(tmp_path: Path) -> None:
    # Before: the replay's clock stayed installed; every later line of the process
    # (another test, a sweep's summary) was stamped with the replay's last time.
    from simulations.engine import run_policy
    from simulations.world import WorldSpec, build_world

    world, _ = build_world(WorldSpec(None, None))
    run_policy(world, "static-peak", tmp_path / "s.db")
    rec = record()
    rec.created = 0.25
    assert "sim_time=" not in KeyValueFormatter(timed=True).format(rec)
