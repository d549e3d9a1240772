"""The live load signal: request rate per (model, region) from Prometheus.

`PrometheusSource.demand(now_s)` runs two instant queries at `time=now_s` over the
HTTP API (`/api/v1/query`):

* `query` (e.g. `sum by (model, region) (rate(vllm:request_success_total[5m]))`)
  gives the rate. Several result series with the same (model, region) are summed.
* `queue_query` (default `sum by (model, region) (vllm:num_requests_waiting)`, optional)
  gives the requests queued at the model servers, which the fast loop between ticks
  reads as load the rate does not show (scheduler.loop.fast_loop).
* `freshness_query` (e.g. `max by (model, region) (timestamp(vllm:request_success_total))`)
  gives the time of the newest raw sample behind each (model, region). An instant
  query stamps every result with the evaluation time, so the rate alone cannot say
  how old its data is, and a `rate(...[5m])` keeps returning a value for up to five
  minutes after its exporter went away. A series whose newest sample is older than
  `max_staleness_s`, or that has no sample at all, reads as NaN.

A failure (Prometheus down, timeout, 5xx after retries, non-JSON, `status=error`,
a result that is not a vector) never raises: it is logged as a warning with its
reason and the sample comes back empty, which the reconciler reads as incomplete
and therefore never scales down on. Missing always means NaN or absent, never 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Mapping
from typing import Any

import aiohttp
from yarl import URL

from adapters._http import FetchError, Sleep, fetch, split_credentials
from adapters.resource import AsyncResource
from scheduler.ports.metrics import DemandSample
from scheduler.sections.prometheus import PrometheusConfig

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (model, region)


class PrometheusQueryError(Exception):
    """A query gave no usable answer; the message says why and holds no credentials."""


class PrometheusSource(AsyncResource):
    """A `MetricsSource` backed by the Prometheus HTTP API.

    Use as `async with PrometheusSource(config) as source:` or call `close()`; a
    session passed in is the caller's to close.
    """

    def __init__(
        self,
        config: PrometheusConfig,
        *,
        session: aiohttp.ClientSession | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.config = config
        self._session = session  # created on first use when not given
        self._owns_session = session is None  # close only what we opened
        self._sleep = sleep  # backoff between retries; injected so tests never wait
        self._bad_url: str | None = None  # kept so demand() reports it like any failure
        self._auth_headers: dict[str, str] = {}  # basic auth from the URL's userinfo
        self._endpoint = URL("http://invalid/")  # replaced below unless the URL is bad
        try:
            base, self._auth_headers = split_credentials(config.url)
            self._endpoint = base / "api" / "v1" / "query"
        except FetchError as exc:
            self._bad_url = str(exc)

    async def close(self) -> None:
        """Close the HTTP session if this source opened it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def demand(self, now_s: float) -> DemandSample:
        """Request rates at `now_s`; stale or absent series are NaN, a failure is empty.

        Never raises (except on cancellation).
        """
        try:
            return await self._demand(now_s)
        except PrometheusQueryError as exc:
            reason = str(exc)
        except Exception as exc:  # a load-signal bug must not take the tick with it
            reason = f"unexpected {type(exc).__name__}: {exc}"
        log.warning(
            "prometheus_demand_failed url=%s now_s=%.0f reason=%s",
            self._safe_url(),
            now_s,
            reason,
        )
        return DemandSample(now_s)

    async def _demand(self, now_s: float) -> DemandSample:
        cfg = self.config
        if cfg.freshness_query:
            # Both finish before either failure is raised: no query is left running.
            both = await asyncio.gather(
                self.query(cfg.query, now_s),
                self.query(cfg.freshness_query, now_s),
                return_exceptions=True,
            )
            rates_or_exc, newest_or_exc = both
            if isinstance(rates_or_exc, BaseException):
                raise rates_or_exc
            if isinstance(newest_or_exc, BaseException):
                raise newest_or_exc
            rates, newest = rates_or_exc, newest_or_exc
        else:
            rates = await self.query(cfg.query, now_s)
            newest = None
        out: dict[Key, float] = {}
        stale: set[Key] = set()
        for key, (at_s, value) in rates.items():
            out[key] = value
            if now_s - at_s > cfg.max_staleness_s:
                stale.add(key)
        if newest is not None:
            for key in rates.keys() | newest.keys():
                if key not in newest or now_s - newest[key][1] > cfg.max_staleness_s:
                    stale.add(key)  # exporter gone, scrapes failing, or Prometheus behind
                elif key not in rates:
                    out[key] = math.nan  # fresh but no rate yet (one sample in the window)
        for key in stale:
            out[key] = math.nan
        peak: dict[Key, float] = {}
        if cfg.peak_query:
            # The highest short-window rate of the tick; a failure here only loses the peaks.
            try:
                peaks = await self.query(cfg.peak_query, now_s)
            except PrometheusQueryError as exc:
                log.warning("prometheus_peak_failed now_s=%.0f reason=%s", now_s, exc)
                peaks = {}
            peak = {k: v for k, (_, v) in peaks.items() if k in out and k not in stale}
        waiting: dict[Key, float] = {}
        if cfg.queue_query:
            # Requests queued at the model servers (the fast loop reads a standing queue as
            # load); a failure here only loses the queue.
            try:
                queued = await self.query(cfg.queue_query, now_s)
            except PrometheusQueryError as exc:
                log.warning("prometheus_queue_failed now_s=%.0f reason=%s", now_s, exc)
                queued = {}
            waiting = {k: v for k, (_, v) in queued.items() if k in out and k not in stale}
        if stale:
            log.warning(
                "prometheus_stale_series now_s=%.0f max_staleness_s=%g count=%d series=%s",
                now_s,
                cfg.max_staleness_s,
                len(stale),
                ",".join(f"{m}/{r}" for m, r in sorted(stale)),
            )
        return DemandSample(now_s, out, peak, waiting)

    async def query(self, promql: str, now_s: float) -> dict[Key, tuple[float, float]]:
        """Run one instant query at `now_s`: (model, region) -> (sample time, value).

        Series lacking either label are skipped; repeated keys are summed (keeping the
        oldest time). Raises `PrometheusQueryError` on any failure.
        """
        if self._bad_url is not None:
            raise PrometheusQueryError(self._bad_url)
        cfg = self.config
        params = {"query": promql, "time": f"{now_s:.3f}", "timeout": f"{cfg.timeout_s:g}"}
        try:
            resp = await fetch(
                self._get_session(),
                "GET",
                self._endpoint,
                headers=self._auth_headers,
                params=params,
                timeout_s=cfg.timeout_s,
                retries=cfg.retries,
                backoff_s=cfg.backoff_s,
                sleep=self._sleep,
                what="prometheus_query",
            )
        except FetchError as exc:
            raise PrometheusQueryError(f"request failed: {exc}") from None
        try:
            doc = json.loads(resp.body)
        except (ValueError, UnicodeDecodeError):
            raise PrometheusQueryError(
                f"non-JSON response (HTTP {resp.status}, content-type {resp.content_type!r})"
            ) from None
        if not isinstance(doc, dict):
            raise PrometheusQueryError(f"response is not a JSON object (HTTP {resp.status})")
        if doc.get("status") != "success":
            raise PrometheusQueryError(
                f"status={doc.get('status')!r} HTTP {resp.status} "
                f"error_type={doc.get('errorType')!r} error={_short(doc.get('error'))!r}"
            )
        if resp.status != 200:
            raise PrometheusQueryError(f"unexpected HTTP {resp.status}")
        data = doc.get("data")
        if not isinstance(data, dict):
            raise PrometheusQueryError("response has no data object")
        if data.get("resultType") != "vector":
            raise PrometheusQueryError(
                f"result type {data.get('resultType')!r}, expected 'vector' "
                "(the query must return an instant vector)"
            )
        result = data.get("result")
        if not isinstance(result, list):
            raise PrometheusQueryError("data.result is not a list")
        return self._parse_vector(result)

    def _parse_vector(self, result: list[Any]) -> dict[Key, tuple[float, float]]:
        cfg = self.config
        out: dict[Key, tuple[float, float]] = {}
        unlabelled = 0
        for item in result:
            try:
                labels: Mapping[str, str] = item["metric"]
                at_s, text = item["value"]
                at_s, value = float(at_s), float(text)
            except (KeyError, TypeError, ValueError):
                raise PrometheusQueryError(f"malformed vector element: {_short(item)!r}") from None
            model, region = labels.get(cfg.model_label), labels.get(cfg.region_label)
            if not model or not region:
                unlabelled += 1
                continue
            key = (model, region)
            if key in out:
                prev_s, prev = out[key]
                out[key] = (min(prev_s, at_s), prev + value)
            else:
                out[key] = (at_s, value)
        if unlabelled:
            log.warning(
                "prometheus_unlabelled_series count=%d model_label=%s region_label=%s",
                unlabelled,
                cfg.model_label,
                cfg.region_label,
            )
        return out

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def _safe_url(self) -> str:
        return "<invalid>" if self._bad_url is not None else str(self._endpoint)


def _short(value: object, limit: int = 200) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."
