"""Size buckets from the model servers' prompt-length histogram, read by PrometheusSource
from a real Prometheus server (issue 20).

Reuses the server of tests/test_prometheus_source.py (a `prometheus` binary on
127.0.0.1 scraping a test exporter every second). The exporter here serves, per (model,
region), what vLLM does: a request counter, prompt and generated token counters, and a
prompt-length histogram with vLLM's 1-2-5 bucket edges, every value growing linearly in
time, so each rate (and each histogram bucket's rate) is known exactly. The histogram's
edges do not match capsched's (1024 and 4096 prompt tokens): the source maps them.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import builders
import pytest
from fakes import no_sleep
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from test_prometheus_source import (
    METRIC,
    OUTPUT_METRIC,
    OUTPUT_QUERY,
    PROMETHEUS,
    PROMPT_METRIC,
    PROMPT_QUERY,
    RATE_WINDOW_S,
    Prometheus,
    poll,
    prometheus,
    source_config,
)

from adapters.prometheus import PrometheusSource
from adapters.sim import SimCloud
from scheduler.fleet.catalog import load_catalog
from scheduler.loop.factory import build_scheduler
from scheduler.loop.store import StateStore
from scheduler.ports.metrics import DemandSample
from scheduler.sections.prometheus import PrometheusConfig

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="no `prometheus` binary on PATH (Debian package `prometheus`; .ci/run installs it)",
)

HISTOGRAM = "capsched_test_request_prompt_tokens"  # like vllm:request_prompt_tokens
HISTOGRAM_QUERY = f"sum by (model, region, le) (rate({HISTOGRAM}_bucket[{RATE_WINDOW_S}s]))"
HISTOGRAM_FRESHNESS_QUERY = f"max by (model, region) (timestamp({HISTOGRAM}_count))"
# vLLM's prompt-length bucket edges (1-2-5 steps up to the model's context length).
VLLM_EDGES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)
# Half the requests with 200-500 prompt tokens, 30 % with 1000-2000, 20 % with 5000-10000.
SHARES = {500.0: 0.5, 2000.0: 0.3, 10000.0: 0.2}
MEAN_PROMPT = 0.5 * 350 + 0.3 * 1500 + 0.2 * 7500  # 2125 tokens, as the token counter says
MEAN_OUTPUT = 180.0


@dataclass
class Series:
    """What the exporter serves for one (model, region)."""

    rps: float
    tokens: tuple[float, float] = (MEAN_PROMPT, MEAN_OUTPUT)  # mean prompt, output tokens
    # Share of the requests in the histogram range ending at each `le` (not cumulative);
    # None: no histogram for this series.
    shares: dict[float, float] | None = field(default_factory=lambda: dict(SHARES))
    nan_histogram: bool = False  # every histogram value NaN (a broken exporter)


@dataclass(eq=False)  # hashable by identity: the registry keys collectors
class VllmLike:
    """A collector serving vLLM-like counters and a prompt-length histogram."""

    series: dict[tuple[str, str], Series] = field(default_factory=dict)
    t0_s: float = field(default_factory=time.time)
    lock: threading.Lock = field(default_factory=threading.Lock)  # scrapes run in a thread

    def collect(self) -> Iterable[Metric]:
        labels = ["model", "region"]
        requests = CounterMetricFamily(METRIC, "Requests.", labels=labels)
        prompt = CounterMetricFamily(PROMPT_METRIC, "Prompt tokens.", labels=labels)
        output = CounterMetricFamily(OUTPUT_METRIC, "Generated tokens.", labels=labels)
        histogram = HistogramMetricFamily(HISTOGRAM, "Prompt tokens per request.", labels=labels)
        elapsed_s = time.time() - self.t0_s
        with self.lock:
            for (model, region), s in self.series.items():
                n = 100.0 + s.rps * elapsed_s  # requests so far
                requests.add_metric([model, region], n)
                prompt.add_metric([model, region], n * s.tokens[0])
                output.add_metric([model, region], n * s.tokens[1])
                if s.shares is None:
                    continue
                cumulative, buckets = 0.0, []
                for le in VLLM_EDGES:
                    cumulative += s.shares.get(float(le), 0.0)
                    value = math.nan if s.nan_histogram else n * cumulative
                    buckets.append((f"{le:g}", value))
                buckets.append(("+Inf", math.nan if s.nan_histogram else n))
                histogram.add_metric([model, region], buckets, sum_value=n * s.tokens[0])
        yield requests
        yield prompt
        yield output
        yield histogram


@contextlib.contextmanager
def exporter() -> Iterator[tuple[VllmLike, int]]:
    collector = VllmLike()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield collector, int(server.server_port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VllmLike, Prometheus]]:
    with exporter() as (collector, port), prometheus(tmp_path_factory.mktemp("prom"), port) as srv:
        yield collector, srv


def sized_config(url: str, **over: object) -> PrometheusConfig:
    sized = {
        "prompt_tokens_query": PROMPT_QUERY,
        "output_tokens_query": OUTPUT_QUERY,
        "prompt_histogram_query": HISTOGRAM_QUERY,
        "prompt_histogram_freshness_query": HISTOGRAM_FRESHNESS_QUERY,
    }
    return source_config(url, **(sized | over))


def mix(sample: DemandSample, key: tuple[str, str]) -> dict[str, tuple[float, float, float]]:
    """The sample's buckets of `key` as range label -> (share, mean prompt, mean output)."""
    return {
        b.label: (b.share, b.size.input_tokens, b.size.output_tokens)
        for b in sample.buckets.get(key, ())
    }


def settled(sample: DemandSample, key: tuple[str, str], rps: float) -> bool:
    """The rate window is full (the rate reads low until then) and the mix is there."""
    got = mix(sample, key)
    return (
        sample.rps.get(key, math.nan) == pytest.approx(rps, rel=0.1)
        and len(got) == 3
        and got["4096+"][0] == pytest.approx(0.2, rel=0.05)
    )


async def test_the_histogram_becomes_capscheds_size_buckets(
    live: tuple[VllmLike, Prometheus],
) -> None:
    collector, srv = live
    key, plain = ("llama", "eu"), ("llama", "us")
    with collector.lock:
        collector.series[key] = Series(rps=4.0)
        collector.series[plain] = Series(rps=2.0, shares=None)  # no histogram exported
    async with PrometheusSource(sized_config(srv.url)) as source:
        sample, seen = await poll(source, lambda s: settled(s, key, 4.0))
    got = mix(sample, key)
    # vLLM's ranges mapped onto capsched's: 200-500 lies under 1024; of 1000-2000, the
    # 24 tokens below 1024 count there, the rest in 1024-4096; 5000-10000 is 4096+.
    assert got["0-1024"][0] == pytest.approx(0.5 + 0.3 * 24 / 1000, rel=0.05)
    assert got["1024-4096"][0] == pytest.approx(0.3 * 976 / 1000, rel=0.05)
    assert got["0-1024"][1] == pytest.approx(350 * 0.5 / 0.5072 + 1012 * 0.0072 / 0.5072, rel=0.05)
    assert got["1024-4096"][1] == pytest.approx(1512.0, rel=0.05)
    assert got["4096+"][1] == pytest.approx(7500.0, rel=0.05)
    # The histogram knows prompts only: each bucket has the series' mean output size.
    assert [out for _, _, out in got.values()] == [pytest.approx(MEAN_OUTPUT, rel=0.05)] * 3
    assert math.fsum(share for share, _, _ in got.values()) == pytest.approx(1.0)
    # Rate and mean size as before; a series without a histogram is one mix at its mean.
    assert sample.rps[key] == pytest.approx(4.0, rel=0.1)
    assert sample.input_tokens[plain] == pytest.approx(MEAN_PROMPT, rel=0.1)
    assert plain not in sample.buckets
    assert all(plain not in s.buckets for s in seen)


async def test_a_histogram_that_stops_or_reads_nan_gives_no_buckets_never_a_lower_rate(
    live: tuple[VllmLike, Prometheus],
) -> None:
    collector, srv = live
    stops, broken = ("qwen", "eu"), ("qwen", "us")
    with collector.lock:
        collector.series[stops] = Series(rps=3.0)
        collector.series[broken] = Series(rps=1.0, nan_histogram=True)
    async with PrometheusSource(sized_config(srv.url)) as source:
        await poll(source, lambda s: settled(s, stops, 3.0))
        with collector.lock:
            collector.series[stops].shares = None  # the histogram goes away, requests go on
        last, seen = await poll(source, lambda s: stops not in s.buckets)
        raw = await source.query(HISTOGRAM_QUERY, last.at_s)
    # The rate window still holds histogram samples: only the freshness check drops it.
    assert math.isfinite(raw[stops][1])
    assert last.rps[stops] == pytest.approx(3.0, rel=0.1)
    assert last.input_tokens[stops] == pytest.approx(MEAN_PROMPT, rel=0.1)
    # A NaN histogram never gives buckets; the rate and mean size are untouched.
    assert all(broken not in s.buckets for s in seen)
    assert last.rps[broken] == pytest.approx(1.0, rel=0.1)
    assert broken in last.input_tokens
    assert all(s.rps.get(k) != 0.0 for s in seen for k in (stops, broken))


async def test_without_the_histogram_query_there_are_no_buckets(
    live: tuple[VllmLike, Prometheus],
) -> None:
    collector, srv = live
    key = ("mistral", "eu")
    with collector.lock:
        collector.series[key] = Series(rps=2.0)
    async with PrometheusSource(sized_config(srv.url)) as source:
        await poll(source, lambda s: settled(s, key, 2.0))
    off = sized_config(srv.url, prompt_histogram_query="")
    async with PrometheusSource(off) as source:
        bare = await source.demand(time.time())
    assert bare.buckets == {}
    assert bare.input_tokens[key] == pytest.approx(MEAN_PROMPT, rel=0.1)


async def test_a_tick_on_the_prometheus_source_records_the_mix(
    live: tuple[VllmLike, Prometheus], tmp_path: Path
) -> None:
    """Through the daemon's loop: a reconciler reading this Prometheus stores the series'
    mean size and bucket mix with the tick (what `GET /v1/demand` and the TUI show)."""
    collector, srv = live
    key = (builders.MODEL, builders.REGION)
    with collector.lock:
        collector.series[key] = Series(rps=2.0)
    catalog = load_catalog()
    cloud = SimCloud(catalog.offerings, catalog.instance_types, boot_time_s=60)
    store = StateStore(tmp_path / "state.db")
    config = builders.fleet_config(scheduler={"state_db": str(tmp_path / "state.db")})
    async with PrometheusSource(sized_config(srv.url)) as source:
        await poll(source, lambda s: settled(s, key, 2.0))
        rec = build_scheduler(config, provider=cloud, metrics=source, store=store, sleep=no_sleep)
        await rec.tick(time.time())
    (row,) = store.demand_history()
    store.close()
    assert row["input_tokens"] == pytest.approx(MEAN_PROMPT, rel=0.1)
    assert row["planned_input_tokens"] == pytest.approx(MEAN_PROMPT, rel=0.1)
    assert [b["range"] for b in row["buckets"]] == ["0-1024", "1024-4096", "4096+"]
    assert row["buckets"][-1]["share"] == pytest.approx(0.2, rel=0.05)
