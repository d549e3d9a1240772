"""PrometheusSource against a fake Prometheus HTTP API: parsing, staleness, retries and
every failure mode (each must give an empty or NaN sample and a warning, never raise)."""

from __future__ import annotations

import base64
import logging
import math
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.prometheus import PrometheusSource
from scheduler.sections.prometheus import PrometheusConfig

NOW_S = 1_700_000_000.0
RATE_Q = "sum by (model, region) (rate(vllm:request_success_total[5m]))"
FRESH_Q = "max by (model, region) (timestamp(vllm:request_success_total))"

Reply = Callable[[web.Request], web.StreamResponse]


def vector(*series: tuple[dict[str, str], float, float | str]) -> dict[str, Any]:
    """A successful instant-vector response: (labels, sample time, value) per series."""
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": m, "value": [t, str(v)]} for m, t, v in series],
        },
    }


def json_reply(doc: object, status: int = 200) -> Reply:
    return lambda _req: web.json_response(doc, status=status)


def text_reply(text: str, status: int = 200, content_type: str = "text/html") -> Reply:
    return lambda _req: web.Response(text=text, status=status, content_type=content_type)


RATES = vector(
    ({"model": "llama", "region": "eu"}, NOW_S, 4.5),
    ({"model": "llama", "region": "us"}, NOW_S, 2.0),
)
FRESH = vector(
    ({"model": "llama", "region": "eu"}, NOW_S, NOW_S - 3),
    ({"model": "llama", "region": "us"}, NOW_S, NOW_S - 3),
)


@dataclass
class FakePrometheus:
    """Answers /api/v1/query from per-query reply queues (the last reply repeats)."""

    replies: dict[str, list[Reply]] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)  # query params seen
    auth_headers: list[str | None] = field(default_factory=list)

    def on(self, query: str, *replies: Reply) -> None:
        self.replies[query] = list(replies)

    def count(self, query: str) -> int:
        return sum(1 for r in self.requests if r["query"] == query)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        params = dict(request.query)
        self.requests.append(params)
        self.auth_headers.append(request.headers.get("Authorization"))
        queue = self.replies.get(params.get("query", ""))
        if not queue:
            return web.json_response(
                {"status": "error", "errorType": "bad_data", "error": "unknown query"}, status=400
            )
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        return reply(request)


@dataclass
class Sleeps:
    """Records backoff delays instead of waiting."""

    delays: list[float] = field(default_factory=list)

    async def __call__(self, delay_s: float) -> None:
        self.delays.append(delay_s)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakePrometheus, str]]:
    prom = FakePrometheus()
    app = web.Application()
    app.router.add_get("/api/v1/query", prom.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield prom, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def closed_port() -> int:
    """A local port nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(url: str, **over: Any) -> PrometheusConfig:
    return PrometheusConfig(url=url, backoff_s=0.25, **over)


async def demand(
    cfg: PrometheusConfig, sleeps: Sleeps | None = None
) -> dict[tuple[str, str], float]:
    async with PrometheusSource(cfg, sleep=sleeps or Sleeps()) as source:
        sample = await source.demand(NOW_S)
    assert sample.at_s == NOW_S
    return dict(sample.rps)


def nan_keys(rps: dict[tuple[str, str], float]) -> set[tuple[str, str]]:
    return {k for k, v in rps.items() if math.isnan(v)}


async def test_rates_per_model_and_region(fake: tuple[FakePrometheus, str]) -> None:
    prom, url = fake
    prom.on(RATE_Q, json_reply(RATES))
    prom.on(FRESH_Q, json_reply(FRESH))
    assert await demand(config(url)) == {("llama", "eu"): 4.5, ("llama", "us"): 2.0}
    assert {r["time"] for r in prom.requests} == {f"{NOW_S:.3f}"}
    assert {r["timeout"] for r in prom.requests} == {"10"}


async def test_custom_labels_duplicates_summed_unlabelled_skipped(
    fake: tuple[FakePrometheus, str], caplog: pytest.LogCaptureFixture
) -> None:
    prom, url = fake
    q = "rate(reqs_total[1m])"
    prom.on(
        q,
        json_reply(
            vector(
                ({"served_model": "m", "src": "eu", "instance": "a"}, NOW_S, 1.0),
                ({"served_model": "m", "src": "eu", "instance": "b"}, NOW_S, 2.5),
                ({"served_model": "m", "instance": "c"}, NOW_S, 9.0),  # no region label
            )
        ),
    )
    cfg = config(url, query=q, freshness_query="", model_label="served_model", region_label="src")
    with caplog.at_level(logging.WARNING):
        assert await demand(cfg) == {("m", "eu"): 3.5}
    assert "prometheus_unlabelled_series count=1" in caplog.text
    assert prom.count(q) == 1  # no freshness query when it is disabled


async def test_stale_or_absent_freshness_is_nan_never_zero(
    fake: tuple[FakePrometheus, str], caplog: pytest.LogCaptureFixture
) -> None:
    prom, url = fake
    prom.on(
        RATE_Q,
        json_reply(
            vector(
                ({"model": "a", "region": "eu"}, NOW_S, 1.0),  # fresh
                ({"model": "b", "region": "eu"}, NOW_S, 2.0),  # newest sample too old
                ({"model": "c", "region": "eu"}, NOW_S, 3.0),  # no sample at all
                ({"model": "e", "region": "eu"}, NOW_S - 600, 5.0),  # rate evaluated too long ago
            )
        ),
    )
    prom.on(
        FRESH_Q,
        json_reply(
            vector(
                ({"model": "a", "region": "eu"}, NOW_S, NOW_S - 10),
                ({"model": "b", "region": "eu"}, NOW_S, NOW_S - 121),
                ({"model": "d", "region": "eu"}, NOW_S, NOW_S - 1),  # fresh, no rate yet
                ({"model": "e", "region": "eu"}, NOW_S, NOW_S - 1),
            )
        ),
    )
    with caplog.at_level(logging.WARNING):
        rps = await demand(config(url, max_staleness_s=120))
    assert rps[("a", "eu")] == 1.0
    assert nan_keys(rps) == {("b", "eu"), ("c", "eu"), ("d", "eu"), ("e", "eu")}
    assert "prometheus_stale_series" in caplog.text
    assert "count=3 series=b/eu,c/eu,e/eu" in caplog.text


async def test_5xx_then_success_retries_with_backoff(fake: tuple[FakePrometheus, str]) -> None:
    prom, url = fake
    prom.on(
        RATE_Q, text_reply("busy", 503), json_reply({"status": "error"}, 500), json_reply(RATES)
    )
    prom.on(FRESH_Q, json_reply(FRESH))
    sleeps = Sleeps()
    assert await demand(config(url, retries=2), sleeps) == {
        ("llama", "eu"): 4.5,
        ("llama", "us"): 2.0,
    }
    assert prom.count(RATE_Q) == 3
    assert sleeps.delays == [0.25, 0.5]


async def test_5xx_until_retries_spent_is_empty(
    fake: tuple[FakePrometheus, str], caplog: pytest.LogCaptureFixture
) -> None:
    prom, url = fake
    prom.on(
        RATE_Q,
        json_reply({"status": "error", "errorType": "unavailable", "error": "overloaded"}, 503),
    )
    prom.on(FRESH_Q, json_reply(FRESH))
    with caplog.at_level(logging.WARNING):
        assert await demand(config(url, retries=1)) == {}
    assert prom.count(RATE_Q) == 2
    assert "prometheus_demand_failed" in caplog.text
    assert "HTTP 503" in caplog.text and "overloaded" in caplog.text


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (
            text_reply("<html>login</html>"),
            "non-JSON response (HTTP 200, content-type 'text/html')",
        ),
        (json_reply([1, 2]), "not a JSON object"),
        (
            json_reply({"status": "error", "errorType": "bad_data", "error": "parse error"}, 400),
            "status='error' HTTP 400 error_type='bad_data' error='parse error'",
        ),
        (
            json_reply({"status": "success", "data": {"resultType": "matrix", "result": []}}),
            "result type 'matrix', expected 'vector'",
        ),
        (
            json_reply({"status": "success", "data": {"resultType": "scalar", "result": [1, "2"]}}),
            "result type 'scalar'",
        ),
        (json_reply({"status": "success"}), "no data object"),
        (
            json_reply({"status": "success", "data": {"resultType": "vector", "result": [{}]}}),
            "malformed vector element",
        ),
        (
            json_reply(
                {
                    "status": "success",
                    "data": {
                        "resultType": "vector",
                        "result": [{"metric": {}, "value": [1, "not-a-number"]}],
                    },
                }
            ),
            "malformed vector element",
        ),
    ],
)
async def test_bad_response_is_empty_with_reason(
    fake: tuple[FakePrometheus, str],
    caplog: pytest.LogCaptureFixture,
    reply: Reply,
    reason: str,
) -> None:
    prom, url = fake
    prom.on(RATE_Q, reply)
    prom.on(FRESH_Q, json_reply(FRESH))
    sleeps = Sleeps()
    with caplog.at_level(logging.WARNING):
        assert await demand(config(url), sleeps) == {}
    assert prom.count(RATE_Q) == 1  # a 2xx/4xx answer is not retried
    assert sleeps.delays == []
    assert reason in caplog.text


async def test_freshness_query_failure_is_empty(
    fake: tuple[FakePrometheus, str], caplog: pytest.LogCaptureFixture
) -> None:
    prom, url = fake
    prom.on(RATE_Q, json_reply(RATES))
    prom.on(FRESH_Q, text_reply("oops"))
    with caplog.at_level(logging.WARNING):
        assert await demand(config(url)) == {}
    assert "non-JSON" in caplog.text


async def test_prometheus_unreachable_is_empty_after_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sleeps = Sleeps()
    with caplog.at_level(logging.WARNING):
        rps = await demand(
            config(f"http://127.0.0.1:{closed_port()}", retries=2, freshness_query=""), sleeps
        )
    assert rps == {}
    assert sleeps.delays == [0.25, 0.5]
    assert "prometheus_demand_failed" in caplog.text
    assert "request failed: ClientConnectorError" in caplog.text


async def test_timeout_is_empty(caplog: pytest.LogCaptureFixture) -> None:
    # A listening socket that never answers: the request must give up after timeout_s.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        with caplog.at_level(logging.WARNING):
            rps = await demand(config(url, timeout_s=0.05, retries=0, freshness_query=""))
    assert rps == {}
    assert "timeout after 0.05 s" in caplog.text


async def test_credentials_sent_as_basic_auth_never_logged(
    fake: tuple[FakePrometheus, str], caplog: pytest.LogCaptureFixture
) -> None:
    prom, url = fake
    prom.on(RATE_Q, text_reply("nope", 502))
    prom.on(FRESH_Q, json_reply(FRESH))
    secret_url = url.replace("http://", "http://scraper:s3cret@")
    with caplog.at_level(logging.DEBUG):
        assert await demand(config(secret_url, retries=1)) == {}
    expected = "Basic " + base64.b64encode(b"scraper:s3cret").decode()
    assert set(prom.auth_headers) == {expected}
    assert "prometheus_demand_failed" in caplog.text
    assert "s3cret" not in caplog.text and "scraper" not in caplog.text


def test_config_rejects_non_http_url() -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        PrometheusConfig(url="prom:9090")
    assert PrometheusConfig(url="http://prom:9090/").url == "http://prom:9090"


async def test_peak_of_the_tick_comes_with_the_rates(fake: tuple[FakePrometheus, str]) -> None:
    from scheduler.sections.prometheus import DEFAULT_PEAK_QUERY

    prom, url = fake
    prom.on(RATE_Q, json_reply(RATES))
    prom.on(FRESH_Q, json_reply(FRESH))
    prom.on(
        DEFAULT_PEAK_QUERY, json_reply(vector(({"model": "llama", "region": "eu"}, NOW_S, 7.5)))
    )
    async with PrometheusSource(config(url), sleep=Sleeps()) as source:
        sample = await source.demand(NOW_S)
    assert sample.rps[("llama", "eu")] == 4.5
    assert dict(sample.peak_rps) == {("llama", "eu"): 7.5}


async def test_a_failing_peak_query_keeps_the_rates(fake: tuple[FakePrometheus, str]) -> None:
    prom, url = fake
    prom.on(RATE_Q, json_reply(RATES))
    prom.on(FRESH_Q, json_reply(FRESH))  # the peak query gets the fake's 400
    async with PrometheusSource(config(url), sleep=Sleeps()) as source:
        sample = await source.demand(NOW_S)
    assert sample.rps == {("llama", "eu"): 4.5, ("llama", "us"): 2.0}
    assert dict(sample.peak_rps) == {}


async def test_the_servers_queue_comes_with_the_rates(fake: tuple[FakePrometheus, str]) -> None:
    from scheduler.sections.prometheus import DEFAULT_QUEUE_QUERY

    prom, url = fake
    prom.on(RATE_Q, json_reply(RATES))
    prom.on(FRESH_Q, json_reply(FRESH))
    queue = vector(
        ({"model": "llama", "region": "eu"}, NOW_S, 40.0),
        ({"model": "other", "region": "eu"}, NOW_S, 9.0),  # no rate: not a reading
    )
    prom.on(DEFAULT_QUEUE_QUERY, json_reply(queue))
    async with PrometheusSource(config(url), sleep=Sleeps()) as source:
        sample = await source.demand(NOW_S)
    assert dict(sample.waiting) == {("llama", "eu"): 40.0}
    prom.on(DEFAULT_QUEUE_QUERY, text_reply("down", status=400))
    async with PrometheusSource(config(url), sleep=Sleeps()) as source:
        sample = await source.demand(NOW_S)
    assert sample.rps == {("llama", "eu"): 4.5, ("llama", "us"): 2.0}  # only the queue is lost
    assert dict(sample.waiting) == {}
