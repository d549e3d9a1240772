"""GPU-fault signals (`PrometheusSource.node_signals`) against a real Prometheus server,
judged by `scheduler.decide.health.gpu_fault` (issue 21, docs/health.md "GPU faults").

The Prometheus of test_prometheus_source.py (a `prometheus` binary on 127.0.0.1,
scraping every second) scrapes an exporter serving what DCGM's exporter and vLLM serve
for four nodes, told apart by a `node` label holding "address:9400": one GPU with an
Xid error, one whose double-bit ECC counter rises, one model server that runs nothing
while its queue grows, and one healthy node that also says its model is loaded. Waiting
for scrapes is the one place this polls, with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from test_prometheus_source import PROMETHEUS, Prometheus, prometheus, source_config

from adapters.prometheus import PrometheusSource
from scheduler.decide.health import FaultKind, gpu_fault
from scheduler.domain import Cloud, Market, Node, NodeState, Pool
from scheduler.ports.metrics import NodeSignals, SignalQuery

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="no `prometheus` binary on PATH (Debian package `prometheus`; .ci/run installs it)",
)

POOL = Pool(Cloud.AWS, "us-east-1", "", "g6e.xlarge", Market.ON_DEMAND)
ADDRESSES = {"xid": "10.0.0.1", "ecc": "10.0.0.2", "stalled": "10.0.0.3", "well": "10.0.0.4"}
WINDOW_S = 8.0  # the signal window: a few scrapes
DEADLINE_S = 40.0


@dataclass
class GpuExporter:
    """DCGM and vLLM series per node in the text exposition format (served by hand:
    prometheus_client escapes the colon of vLLM's metric names when Prometheus asks for
    OpenMetrics); values follow the time of each scrape."""

    t0_s: float = field(default_factory=time.time)
    xid: int = 0  # the Xid node's last Xid code (0 until the fault)
    lock: threading.Lock = field(default_factory=threading.Lock)  # scrapes run in a thread

    def fault(self, code: int) -> None:
        with self.lock:
            self.xid = code

    def text(self) -> str:
        elapsed_s = time.time() - self.t0_s
        with self.lock:
            xid_code = self.xid
        lines: list[str] = []
        for name, addr in ADDRESSES.items():
            node = f'node="{addr}:9400"'
            for gpu in ("0", "1"):
                code = xid_code if name == "xid" and gpu == "1" else 0
                lines.append(f'DCGM_FI_DEV_XID_ERRORS{{{node},gpu="{gpu}"}} {code}')
                # The ECC node's second GPU gains a double-bit error every 2 s.
                errors = math.floor(elapsed_s / 2) if name == "ecc" and gpu == "1" else 0
                lines.append(f'DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{{{node},gpu="{gpu}"}} {errors}')
            stalled = name == "stalled"
            lines.append(f"vllm:num_requests_running{{{node}}} {0 if stalled else 3}")
            lines.append(
                f"vllm:num_requests_waiting{{{node}}} {5 + 2 * elapsed_s if stalled else 0}"
            )
            lines.append(f"capsched_test_model_loaded{{{node}}} {1 if name == 'well' else 0}")
        return "\n".join(lines) + "\n"


@contextlib.contextmanager
def gpu_exporter() -> Iterator[tuple[GpuExporter, int]]:
    exporter = GpuExporter()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = exporter.text().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass  # quiet

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield exporter, int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GpuExporter, Prometheus]]:
    with gpu_exporter() as (exporter, port), prometheus(tmp_path_factory.mktemp("p"), port) as srv:
        yield exporter, srv


def nodes() -> list[Node]:
    return [
        Node(f"cs-{name}", "llama-3.1-8b", POOL, NodeState.READY, address=addr)
        for name, addr in ADDRESSES.items()
    ]


QUERY = SignalQuery("node", "{host}", WINDOW_S, ready_metric="capsched_test_model_loaded")


def faults(signals: dict[str, NodeSignals]) -> dict[str, FaultKind | None]:
    out: dict[str, FaultKind | None] = {}
    for node_id, s in signals.items():
        fault = gpu_fault(s, stall_queue_growth=2.0)
        out[node_id] = fault.kind if fault else None
    return out


async def test_xid_ecc_and_a_stalled_server_read_from_prometheus(
    live: tuple[GpuExporter, Prometheus],
) -> None:
    exporter, srv = live
    want = {
        "cs-xid": FaultKind.XID,
        "cs-ecc": FaultKind.ECC_DBE,
        "cs-stalled": FaultKind.STALLED,
        "cs-well": None,
    }
    exporter.fault(79)
    seen: dict[str, NodeSignals] = {}
    async with PrometheusSource(source_config(srv.url)) as source:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            seen = await source.node_signals(time.time(), nodes(), QUERY)
            if faults(seen) == want:
                break
            await asyncio.sleep(0.5)
        else:
            pytest.fail(f"faults not seen in {DEADLINE_S} s; last signals {seen}")
        assert seen["cs-xid"].xid == 79  # the worst of its two GPUs
        assert seen["cs-well"].running_max == 3 and seen["cs-well"].waiting == 0
        assert seen["cs-well"].loaded == 1 and seen["cs-xid"].loaded == 0
        # A node without series, or without an address to name it, is absent.
        stranger = Node("cs-x", "llama-3.1-8b", POOL, NodeState.READY, address="10.9.9.9")
        unaddressed = Node("cs-y", "llama-3.1-8b", POOL, NodeState.BOOTING)
        extra = await source.node_signals(time.time(), [stranger, unaddressed], QUERY)
        assert extra == {}


async def test_a_broken_signal_query_leaves_that_signal_unknown(
    live: tuple[GpuExporter, Prometheus],
) -> None:
    _, srv = live
    bad = SignalQuery("node", "{host}", WINDOW_S, ready_metric="sum(")  # not PromQL
    async with PrometheusSource(source_config(srv.url)) as source:
        deadline = time.monotonic() + DEADLINE_S
        got: dict[str, NodeSignals] = {}
        while time.monotonic() < deadline:
            got = await source.node_signals(time.time(), nodes(), bad)
            if "cs-well" in got and got["cs-well"].running_max == 3:
                break
            await asyncio.sleep(0.5)
    assert got["cs-well"].running_max == 3  # the other signals still read
    assert math.isnan(got["cs-well"].loaded)  # unknown, never 0 or 1
