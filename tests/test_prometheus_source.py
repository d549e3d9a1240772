"""PrometheusSource against a real Prometheus server scraping a test exporter.

The test starts a `prometheus` binary on 127.0.0.1 (free port, temporary storage)
that scrapes, every second, an exporter serving a counter with model/region labels.
The counter's value is a linear function of the time of each scrape, so its rate is
known exactly whatever the scrape jitter. Waiting for Prometheus (readiness, first
samples, staleness markers) is the one place these tests poll, with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, Metric

from adapters.prometheus import PrometheusSource
from scheduler.ports.metrics import DemandSample
from scheduler.sections.prometheus import PrometheusConfig

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="no `prometheus` binary on PATH (Debian package `prometheus`; .ci/run installs it)",
)

METRIC = "capsched_test_requests"  # exposed as capsched_test_requests_total
RATE_WINDOW_S = 10  # rate() divides by the whole window: exact once it holds samples
RATE_QUERY = f"sum by (model, region) (rate({METRIC}_total[{RATE_WINDOW_S}s]))"
FRESHNESS_QUERY = f"max by (model, region) (timestamp({METRIC}_total))"
READY_DEADLINE_S = 60.0  # Prometheus start-up, generous for slow CI machines
SERIES_DEADLINE_S = 40.0  # a full rate window of scrapes, or a staleness marker


@dataclass(eq=False)  # hashable by identity: the registry keys collectors
class LinearCounters:
    """A collector whose counters grow at a fixed rate per (model, region)."""

    rps: dict[tuple[str, str], float] = field(default_factory=dict)  # series exported now
    t0_s: float = field(default_factory=time.time)
    lock: threading.Lock = field(default_factory=threading.Lock)  # scrapes run in a thread

    def set(self, model: str, region: str, rps: float | None) -> None:
        with self.lock:
            if rps is None:
                self.rps.pop((model, region), None)
            else:
                self.rps[(model, region)] = rps

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(METRIC, "Test requests.", labels=["model", "region"])
        elapsed_s = time.time() - self.t0_s
        with self.lock:
            for (model, region), rps in self.rps.items():
                family.add_metric([model, region], 1000.0 + rps * elapsed_s)
        yield family


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def exporter() -> Iterator[tuple[LinearCounters, int]]:
    counters = LinearCounters()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(counters)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield counters, int(server.server_port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@dataclass
class Prometheus:
    url: str  # base URL
    proc: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)


@contextlib.contextmanager
def prometheus(workdir: Path, target_port: int) -> Iterator[Prometheus]:
    """A Prometheus scraping 127.0.0.1:`target_port` every second, ready when yielded."""
    assert PROMETHEUS is not None
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: capsched-test\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{target_port}']\n",
        encoding="utf-8",
    )
    port = free_port()
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = Prometheus(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        wait_ready(server)
        yield server
    finally:
        server.stop()


def wait_ready(server: Prometheus) -> None:
    """Poll /-/ready until 200 or the deadline; fail with the server's log otherwise."""
    deadline = time.monotonic() + READY_DEADLINE_S
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    log_tail = server.log_path.read_text(errors="replace")[-3000:]
    pytest.fail(f"prometheus not ready (exit code {server.proc.poll()}); log:\n{log_tail}")


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LinearCounters, Prometheus]]:
    with exporter() as (counters, port), prometheus(tmp_path_factory.mktemp("prom"), port) as srv:
        yield counters, srv


def source_config(url: str, **over: object) -> PrometheusConfig:
    return PrometheusConfig.model_validate(
        {
            "url": url,
            "query": RATE_QUERY,
            "freshness_query": FRESHNESS_QUERY,
            "max_staleness_s": 5.0,
            "timeout_s": 5.0,
            "backoff_s": 0.05,
        }
        | over
    )


async def poll(
    source: PrometheusSource, done: Callable[[DemandSample], bool]
) -> tuple[DemandSample, list[DemandSample]]:
    """Ask `source` every half second until `done` or the deadline; all samples seen."""
    seen: list[DemandSample] = []
    deadline = time.monotonic() + SERIES_DEADLINE_S
    while time.monotonic() < deadline:
        sample = await source.demand(time.time())
        seen.append(sample)
        if done(sample):
            return sample, seen
        await asyncio.sleep(0.5)
    pytest.fail(f"condition not met in {SERIES_DEADLINE_S} s; last sample {seen[-1].rps}")


def finite(sample: DemandSample, *keys: tuple[str, str]) -> bool:
    return all(math.isfinite(sample.rps.get(k, math.nan)) for k in keys)


async def test_rate_per_model_and_region(live: tuple[LinearCounters, Prometheus]) -> None:
    counters, srv = live
    expected = {("llama", "eu"): 4.0, ("llama", "us"): 1.5, ("mistral", "eu"): 0.5}
    for (model, region), rps in expected.items():
        counters.set(model, region, rps)

    def converged(sample: DemandSample) -> bool:
        # Until the window is full of samples, rate() reads low; then it is exact.
        return all(
            sample.rps.get(k, math.nan) == pytest.approx(rps, rel=0.1)
            for k, rps in expected.items()
        )

    async with PrometheusSource(source_config(srv.url)) as source:
        sample, seen = await poll(source, converged)
    assert sample.complete(set(expected))
    # Never 0 on the way: before the first two scrapes a series is absent or NaN.
    assert all(s.rps.get(k) != 0.0 for s in seen for k in expected)


async def test_series_that_stops_is_nan_never_zero(
    live: tuple[LinearCounters, Prometheus], caplog: pytest.LogCaptureFixture
) -> None:
    counters, srv = live
    key = ("qwen", "ap")
    counters.set(*key, 2.0)
    async with PrometheusSource(source_config(srv.url)) as source:
        await poll(source, lambda s: finite(s, key))
        counters.set(*key, None)  # the exporter stops exposing the series
        with caplog.at_level(logging.WARNING):
            last, seen = await poll(source, lambda s: math.isnan(s.rps.get(key, math.nan)))
            # The rate window still holds samples: only the freshness check says stale.
            raw = await source.query(RATE_QUERY, last.at_s)
    assert key in last.rps and math.isnan(last.rps[key])
    assert not last.complete({key})
    assert all(s.rps.get(key) != 0.0 for s in seen)
    assert math.isfinite(raw[key][1])
    assert "prometheus_stale_series" in caplog.text and "qwen/ap" in caplog.text


async def test_prometheus_down(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with exporter() as (counters, port):
        counters.set("llama", "eu", 1.0)
        with prometheus(tmp_path / "prom", port) as srv:
            async with PrometheusSource(source_config(srv.url, retries=2)) as source:
                await poll(source, lambda s: finite(s, ("llama", "eu")))
                srv.stop()
                with caplog.at_level(logging.WARNING):
                    sample = await source.demand(time.time())
    assert sample.rps == {}
    assert not sample.complete({("llama", "eu")})
    assert "prometheus_demand_failed" in caplog.text
    assert "ClientConnectorError" in caplog.text
