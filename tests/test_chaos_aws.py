"""Chaos against AWS over moto's wire protocol: SIGKILL the daemon 30 times while the
load (from a small Prometheus-compatible endpoint) rises and falls, restart it each
time, then check moto's own listing: no node launched twice, none leaked.

The load is set per restart, not by the wall clock: a swing timed in seconds let a
slower machine sample the same phases on every restart, so the fleet sometimes never
had to change and the test checked nothing."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from daemon_proc import start_daemon, wait_for_ticks
from test_aws_support import MotoAccount, aws_env, fake_credentials_env  # noqa: F401

from scheduler.domain import NodeState
from scheduler.loop.store import StateStore

KILLS = 30
LOW_RPS, HIGH_RPS = 2.0, 60.0  # about one node's worth and about a dozen


def load_rps(run: int) -> float:
    """The load during the `run`-th daemon run: up from LOW_RPS to HIGH_RPS over the
    first half of the kills, back down over the second, then LOW_RPS."""
    half = KILLS / 2
    height = max(0.0, 1.0 - abs(run - half) / half)
    return LOW_RPS + (HIGH_RPS - LOW_RPS) * height


class _Load:
    """The rate the stub below serves; the test sets it before each daemon run."""

    rps = LOW_RPS


class _Prometheus(BaseHTTPRequestHandler):
    """Answers the three instant queries capsched sends: rate, peak and freshness."""

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        query = parse_qs(urlparse(self.path).query).get("query", [""])[0]
        now = time.time()
        value = now if "timestamp(" in query else _Load.rps
        result = [
            {"metric": {"model": "llama-3.1-8b", "region": "us-east"}, "value": [now, str(value)]}
        ]
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())


@pytest.fixture
def prometheus() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Prometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def write_config(tmp: Path, account: MotoAccount, prom_url: str) -> Path:
    aws = json.loads(account.config().model_dump_json())
    regions = "\n".join(
        f"""
[[aws.regions]]
name = "{r["name"]}"
image_id = "{r["image_id"]}"
subnets = {{ {", ".join(f'"{z}" = "{s}"' for z, s in r["subnets"].items())} }}
security_group_ids = {json.dumps(r["security_group_ids"])}
"""
        for r in aws["regions"]
    )
    path = tmp / "capsched.toml"
    path.write_text(
        f"""
[scheduler]
tick_interval_s = 2
state_db = "{tmp / "state.db"}"
[solver]
time_limit_s = 0.5
[daemon]
api_port = 0
[guards]
min_node_age_s = 0
max_scale_down_fraction = 1.0
drain_timeout_s = 0
[sources]
cloud = "aws"
demand = "prometheus"
[prometheus]
url = "{prom_url}"
retries = 0
[[models]]
name = "llama-3.1-8b"
[[regions]]
name = "us-east"
location = "us-east-1"
max_latency_ms = 100
[clouds.aws]
regions = {json.dumps(list(account.regions))}
markets = ["on-demand"]
gpu_kinds = ["L4", "L40S"]
[clouds.gcp]
enabled = false
[aws]
owner = "{account.owner}"
endpoint_url = "{account.url}"
max_attempts = 1
{regions}
"""
    )
    return path


def test_kill_9_against_moto_neither_duplicates_nor_leaks(
    tmp_path: Path,
    aws_env: str,  # noqa: F811 - the fixture imported above
    prometheus: str,
) -> None:
    account = MotoAccount.create(aws_env)
    config = write_config(tmp_path, account, prometheus)
    rng = random.Random(20261126)
    for run in range(KILLS):
        _Load.rps = load_rps(run)
        with start_daemon(config, tmp_path, fake_credentials_env()) as proc:
            wait_for_ticks(proc, 1)
            time.sleep(rng.uniform(0.0, 2.5))  # a random moment in the next ticks
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    _Load.rps = LOW_RPS
    with start_daemon(
        config, tmp_path, fake_credentials_env()
    ) as proc:  # a last clean run reconciles what is left
        wait_for_ticks(proc, 3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0

    store = StateStore(tmp_path / "state.db")
    nodes = {row["node_id"]: NodeState(row["state"]) for row in store.db.table("nodes").rows}
    launches = Counter(e.node_id for e in store.journal() if e.kind == "launch")
    created: list[str] = []
    live_in_cloud: set[str] = set()
    for region in account.regions:
        for inst in account.instances(region):
            node_id = {t["Key"]: t["Value"] for t in inst["Tags"]}["capsched-node"]
            created.append(node_id)
            if inst["State"]["Name"] in ("pending", "running"):
                live_in_cloud.add(node_id)
    live_in_store = {n for n, s in nodes.items() if s not in (NodeState.GONE, NodeState.FAILED)}
    duplicates = {n for n, c in Counter(created).items() if c > 1} | {
        n for n, c in launches.items() if c > 1
    }
    leaked = {n for n in live_in_cloud if nodes.get(n) in (NodeState.GONE, NodeState.FAILED)}
    unknown = live_in_cloud - set(nodes)
    terminated = sum(1 for e in store.journal() if e.kind == "terminate")
    print(
        f"\nchaos on moto: kills={KILLS} instances={len(created)} live={len(live_in_cloud)}"
        f" terminations={terminated} duplicates={len(duplicates)} leaked={len(leaked)}"
        f" unknown={len(unknown)} pending_journal={len(store.journal('pending'))}"
    )
    assert len(created) > 3 and terminated > 0  # it scaled up and down
    assert duplicates == set()
    assert leaked == set()
    assert unknown == set()
    assert live_in_cloud <= live_in_store
    assert store.journal("pending") == []
    store.close()
