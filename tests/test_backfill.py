"""A first start does not forecast from a cold start either: a daemon whose store holds no
demand learns from the metrics source's own history (`Reconciler.backfill`,
`PrometheusSource.history`), against a fake Prometheus API and a real Prometheus server
whose storage holds hours of history written by promtool."""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import builders
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from fakes import Clock, no_sleep
from test_daemon import CONFIG_TEXT
from test_prometheus_source import PROMETHEUS, free_port, prometheus

import adapters.prometheus
import scheduler.loop.reconciler as reconciler_module
from adapters.prometheus import PrometheusSource
from adapters.sim import SimCloud
from scheduler.config import Config, load_config
from scheduler.decide.policy import CapschedPolicy
from scheduler.fleet.catalog import load_catalog
from scheduler.fleet.profiles import load_profiles
from scheduler.loop.factory import build_scheduler
from scheduler.loop.reconciler import Reconciler
from scheduler.loop.store import StateStore
from scheduler.ports.metrics import DemandHistorySource, DemandSample, MetricsSource
from scheduler.sections.prometheus import PrometheusConfig
from scheduler.service.daemon import Daemon

KEY = (builders.MODEL, builders.REGION)
END_S = 1_800_000_000.0
STEP_S = 300.0
QUERY = "sum by (model, region) (rate(requests_total[5m]))"
PEAK = "max by (model, region) (peak)"


def rate_at(t: float) -> float:
    return 10.0 + 5.0 * math.sin(2 * math.pi * t / 86_400)


def steps_with_data(span_s: float) -> list[float]:
    """The steps at which `FakeRangeApi` has a finite rate of some series."""
    times = [END_S - span_s + i * STEP_S for i in range(int(span_s // STEP_S) + 1)]
    return [t for t in times if round(t / STEP_S) % 7 != 0 or t > END_S - 43_200]


class FakeRangeApi:
    """Answers /api/v1/query_range: `rate_at` for KEY's rates, 2x for its peaks; its rates
    are NaN at every 7th step, and a second series (region "us") exists only in the last
    12 hours."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.fail_peaks = False
        self.fail_all = False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        params = dict(request.query)
        self.requests.append(params)
        if self.fail_all or (self.fail_peaks and params["query"] == PEAK):
            return web.json_response({"status": "error", "error": "boom"}, status=503)
        start, end, step = float(params["start"]), float(params["end"]), float(params["step"])
        times = np.arange(start, end + step / 2, step)
        series: list[dict[str, Any]] = []
        if params["query"] == QUERY:
            main = [[t, "NaN" if round(t / step) % 7 == 0 else str(rate_at(t))] for t in times]
            us = [[t, "1.5"] for t in times if t > END_S - 43_200]
            series.append({"metric": {"model": KEY[0], "region": KEY[1]}, "values": main})
            if us:
                series.append({"metric": {"model": KEY[0], "region": "us"}, "values": us})
        elif params["query"] == PEAK:
            values = [[t, str(2 * rate_at(t))] for t in times]
            series.append({"metric": {"model": KEY[0], "region": KEY[1]}, "values": values})
        doc = {"status": "success", "data": {"resultType": "matrix", "result": series}}
        return web.json_response(doc)


@pytest.fixture
async def api() -> AsyncIterator[tuple[FakeRangeApi, str]]:
    fake = FakeRangeApi()
    app = web.Application()
    app.router.add_get("/api/v1/query_range", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield fake, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def reconciler(config: Config, metrics: MetricsSource, tmp_path: Path) -> Reconciler:
    """A reconciler on the simulated cloud and an empty state store."""
    catalog = load_catalog()
    cloud = SimCloud(catalog.offerings, catalog.instance_types, random_interruptions=False)
    store = StateStore(tmp_path / "a.db")
    return build_scheduler(config, provider=cloud, metrics=metrics, store=store, sleep=no_sleep)


def cfg(url: str, **over: Any) -> PrometheusConfig:
    base = {"url": url, "query": QUERY, "peak_query": PEAK, "backoff_s": 0.0, "retries": 0}
    return PrometheusConfig.model_validate(base | over)


async def test_history_is_one_sample_per_step_oldest_first(
    api: tuple[FakeRangeApi, str],
) -> None:
    _fake, url = api
    async with PrometheusSource(cfg(url, history_s=86_400.0), sleep=no_sleep) as source:
        samples = await source.history(END_S, STEP_S, 1e9)
    # A day at 5 minutes, oldest first; a step where no series has a rate is left out.
    assert [s.at_s for s in samples] == steps_with_data(86_400.0)
    assert samples[-1].at_s == END_S
    # The caller's cap (what a restart would read from its store) bounds the span.
    async with PrometheusSource(cfg(url, history_s=86_400.0), sleep=no_sleep) as source:
        capped = await source.history(END_S, STEP_S, 3_600.0)
    assert [s.at_s for s in capped] == steps_with_data(3_600.0)
    for s in samples:
        if round(s.at_s / STEP_S) % 7 == 0:  # a NaN rate is missing, with its peak
            assert KEY not in s.rps and KEY not in s.peak_rps
        else:
            assert s.rps[KEY] == pytest.approx(rate_at(s.at_s))
            assert s.peak_rps[KEY] == pytest.approx(2 * rate_at(s.at_s))
        # A series that did not exist yet is absent, never zero.
        assert ((KEY[0], "us") in s.rps) == (s.at_s > END_S - 43_200)


async def test_a_long_span_is_read_in_range_queries_prometheus_accepts(
    api: tuple[FakeRangeApi, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = api
    monkeypatch.setattr(adapters.prometheus, "MAX_RANGE_POINTS", 50)
    async with PrometheusSource(cfg(url, history_s=86_400.0), sleep=no_sleep) as source:
        samples = await source.history(END_S, STEP_S, 1e9)
    rate_queries = [r for r in fake.requests if r["query"] == QUERY]
    assert len(rate_queries) == 6  # 289 steps in queries of at most 50
    for r in rate_queries:
        points = (float(r["end"]) - float(r["start"])) / STEP_S + 1
        assert points <= 50
    assert [s.at_s for s in samples] == steps_with_data(86_400.0)  # none twice, none lost


async def test_a_failure_gives_no_history_and_a_peak_failure_only_loses_peaks(
    api: tuple[FakeRangeApi, str], caplog: pytest.LogCaptureFixture
) -> None:
    fake, url = api
    fake.fail_peaks = True
    async with PrometheusSource(cfg(url, history_s=3_600.0), sleep=no_sleep) as source:
        samples = await source.history(END_S, STEP_S, 1e9)
        assert samples and all(s.peak_rps == {} for s in samples)
        fake.fail_all = True
        with caplog.at_level(logging.WARNING):
            assert await source.history(END_S, STEP_S, 1e9) == []
    assert "prometheus_history_failed" in caplog.text
    async with PrometheusSource(cfg(url, history_s=0.0), sleep=no_sleep) as source:
        before = len(fake.requests)
        assert await source.history(END_S, STEP_S, 1e9) == []
        assert len(fake.requests) == before  # off: not even asked


class _HistoryTrace:
    """A load source that also keeps `rates` before the daemon started, one per tick."""

    def __init__(self, rates: list[float]) -> None:
        self.rates = rates
        self.asked: list[tuple[float, float]] = []

    async def demand(self, now_s: float) -> DemandSample:
        return DemandSample(now_s, {KEY: self.rates[-1]})

    async def history(self, end_s: float, step_s: float, max_span_s: float) -> list[DemandSample]:
        self.asked.append((end_s, step_s))
        n = len(self.rates) - 1
        return [
            DemandSample(end_s - (n - 1 - i) * step_s, {KEY: v})
            for i, v in enumerate(self.rates[:-1])
        ]


async def test_a_first_start_learns_the_sources_history(tmp_path: Path) -> None:
    config = builders.fleet_config(forecast={"band_feedback": False})
    tick = config.scheduler.tick_interval_s
    rng = np.random.default_rng(7)
    t = np.arange(600)
    rates = list(20.0 + 10.0 * np.sin(2 * np.pi * t / 288) + rng.normal(0.0, 1.0, 600))
    now = 600 * tick
    source = _HistoryTrace(rates)
    assert isinstance(source, DemandHistorySource)
    catalog = load_catalog()
    rec = reconciler(config, source, tmp_path)
    assert rec.warm_start() == 0  # an empty store
    assert await rec.backfill(now) == len(rates) - 1
    assert source.asked == [(now - tick, tick)]
    # It plans as a policy that had seen every one of those ticks, not as a cold one.
    seen = CapschedPolicy(config, catalog, load_profiles())
    for i, v in enumerate(rates[:-1]):
        seen.planned_demand(builders.observation(now - (len(rates) - 1 - i) * tick, rps={KEY: v}))
    cold = CapschedPolicy(config, catalog, load_profiles())
    obs = builders.observation(now, rps={KEY: rates[-1]})
    assert isinstance(rec.policy, CapschedPolicy)
    expected = seen.planned_demand(obs)[0].rps
    assert rec.policy.planned_demand(obs)[0].rps == expected
    assert cold.planned_demand(obs)[0].rps != expected


async def test_a_source_without_history_starts_cold(tmp_path: Path) -> None:
    class _NoHistory:
        async def demand(self, now_s: float) -> DemandSample:
            return DemandSample(now_s, {KEY: 5.0})

    rec = reconciler(builders.fleet_config(), _NoHistory(), tmp_path)
    assert await rec.backfill(3_600.0) == 0


# -- a real Prometheus whose storage holds six hours written by promtool ------------------

PROMTOOL = shutil.which("promtool")
HOURS = 6


def _openmetrics(end_s: float) -> str:
    """A counter at 2 rps for the first three hours, 5 rps after, sampled every 30 s."""
    lines = ["# HELP requests Test requests.", "# TYPE requests counter"]
    value, t = 0.0, end_s - HOURS * 3600
    while t <= end_s:
        lines.append(f'requests_total{{model="{KEY[0]}",region="{KEY[1]}"}} {value} {t:.0f}')
        value += 30 * (2.0 if t < end_s - HOURS * 1800 else 5.0)
        t += 30
    return "\n".join([*lines, "# EOF", ""])


@pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="no `prometheus`/`promtool` on PATH (Debian package `prometheus`)",
)
async def test_history_from_a_real_prometheus(tmp_path: Path) -> None:
    assert PROMETHEUS is not None and PROMTOOL is not None
    end_s = float(int(time.time()) // 60 * 60 - 600)
    source = tmp_path / "history.om"
    source.write_text(_openmetrics(end_s), encoding="utf-8")
    subprocess.run(  # into the storage `prometheus` starts on
        [
            PROMTOOL,
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            str(source),
            str(tmp_path / "data"),
        ],
        check=True,
        capture_output=True,
    )
    with prometheus(tmp_path, free_port()) as server:  # the target: nothing listens there
        config = PrometheusConfig.model_validate(
            {"url": server.url, "query": QUERY, "peak_query": "", "history_s": HOURS * 3600.0}
        )
        async with PrometheusSource(config) as prom:
            samples = await prom.history(end_s, STEP_S, 1e9)
    assert samples, server.log_path.read_text(errors="replace")[-2000:]
    early = [s.rps[KEY] for s in samples if s.at_s < end_s - HOURS * 1800 - 600]
    late = [s.rps[KEY] for s in samples if s.at_s > end_s - HOURS * 1800 + 600]
    assert early and late
    assert all(v == pytest.approx(2.0, rel=0.02) for v in early)
    assert all(v == pytest.approx(5.0, rel=0.02) for v in late)
    assert all(s.at_s <= end_s for s in samples)


class _DaemonHistory:
    """The daemon test's load with a day of history before it started."""

    def __init__(self) -> None:
        self.asked = 0

    async def demand(self, now_s: float) -> DemandSample:
        return DemandSample(now_s, {("llama-3.1-8b", "us-east"): 10.0})

    async def history(self, end_s: float, step_s: float, max_span_s: float) -> list[DemandSample]:
        self.asked += 1
        return [
            DemandSample(end_s - k * step_s, {("llama-3.1-8b", "us-east"): 8.0 + k % 5})
            for k in range(288, -1, -1)
        ]


async def test_the_daemon_backfills_on_a_first_start_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "capsched.toml"
    path.write_text(CONFIG_TEXT.format(db=tmp_path / "state.db", timeout=60.0))
    config = load_config(path)
    catalog = load_catalog()
    source = _DaemonHistory()

    def daemon() -> Daemon:
        cloud = SimCloud(catalog.offerings, catalog.instance_types, boot_time_s=60)
        store = StateStore(config.scheduler.state_db)
        rec = build_scheduler(config, provider=cloud, metrics=source, store=store, sleep=no_sleep)
        clock = Clock()
        clock.now = 90_000.0

        async def advance(now_s: float) -> None:
            cloud.advance_to(now_s)

        return Daemon(
            config=config, config_path=path, reconciler=rec, store=store, clock=clock,
            advance=advance,
        )  # fmt: skip

    first = daemon()
    with caplog.at_level(logging.INFO, logger="scheduler.loop.reconciler"):
        async with first:
            assert await first.tick_once() is not None
    assert source.asked == 1 and "backfill ticks=289" in caplog.text
    # A restart finds the tick it recorded in its store: no history asked.
    async with daemon():
        pass
    assert source.asked == 1


async def test_a_history_that_hangs_starts_cold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class _Hangs(_DaemonHistory):
        async def history(
            self, end_s: float, step_s: float, max_span_s: float
        ) -> list[DemandSample]:
            await asyncio.Event().wait()
            return []

    monkeypatch.setattr(reconciler_module, "BACKFILL_TIMEOUT_S", 0.05)
    rec = reconciler(builders.fleet_config(), _Hangs(), tmp_path)
    with caplog.at_level(logging.WARNING):
        assert await rec.backfill(3_600.0) == 0
    assert "backfill_timed_out" in caplog.text
