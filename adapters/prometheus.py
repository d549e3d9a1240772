"""The live load signal: request rate per (model, region) from Prometheus.

`PrometheusSource.demand(now_s)` runs two instant queries at `time=now_s` over the
HTTP API (`/api/v1/query`):

* `query` (e.g. `sum by (model, region) (rate(vllm:request_success_total[5m]))`)
  gives the rate. Several result series with the same (model, region) are summed.
* `queue_query` (default `sum by (model, region) (vllm:num_requests_waiting)`, optional)
  gives the requests queued at the model servers, which the fast loop between ticks
  reads as load the rate does not show (scheduler.loop.fast_loop).
* `prompt_tokens_query` and `output_tokens_query` (defaults: the rates of
  `vllm:prompt_tokens_total` and `vllm:generation_tokens_total` over the same 5 minutes)
  give token rates; divided by the request rate they are the mean prompt and output
  tokens per request (`DemandSample.input_tokens` / `output_tokens`), where the rate is
  positive and fresh. Optional: without them, or on their failure, sizes are unknown.
* `prompt_histogram_query` (default: the rate of each `le` bucket of vLLM's
  `vllm:request_prompt_tokens` histogram over the same 5 minutes) gives the requests'
  split by prompt length, mapped onto capsched's size buckets
  (`scheduler.forecast.buckets.from_histogram`) as `DemandSample.buckets`, for series
  with a fresh positive rate and a mean size. `prompt_histogram_freshness_query` gives
  the time of the histogram's newest sample: older than `max_staleness_s`, or absent,
  and the series gets no buckets. A histogram that is missing, stale, NaN or fails to
  load only loses the buckets (the mean size still counts); it never touches a rate.
* `freshness_query` (e.g. `max by (model, region) (timestamp(vllm:request_success_total))`)
  gives the time of the newest raw sample behind each (model, region). An instant
  query stamps every result with the evaluation time, so the rate alone cannot say
  how old its data is, and a `rate(...[5m])` keeps returning a value for up to five
  minutes after its exporter went away. A series whose newest sample is older than
  `max_staleness_s`, or that has no sample at all, reads as NaN.

`node_signals(now_s, nodes, query)` reads, for `[health]`'s GPU-fault checks, each
node's Xid errors, ECC double-bit error increase and model-server queue over a window
(docs/health.md, "GPU faults"), one query per signal grouped by a node label.

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
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
from yarl import URL

from adapters._http import FetchError, Sleep, fetch, split_credentials
from adapters.resource import AsyncResource
from scheduler.domain import Node, RequestSize, SizeBucket
from scheduler.forecast.buckets import from_histogram
from scheduler.ports.metrics import DemandSample, NodeSignals, SignalQuery
from scheduler.sections.prometheus import PrometheusConfig

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (model, region)


MAX_RANGE_POINTS = 10_000  # steps per range query (Prometheus refuses more than 11,000)


@dataclass(frozen=True, slots=True)
class PromptHistogram:
    """One reading of the prompt-length histogram."""

    les: dict[Key, dict[float, float]]  # (model, region) -> le -> cumulative rate
    fresh: frozenset[Key] | None  # series whose histogram is fresh; None: not checked


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
        self._range_endpoint = URL("http://invalid/")
        try:
            base, self._auth_headers = split_credentials(config.url)
            self._endpoint = base / "api" / "v1" / "query"
            self._range_endpoint = base / "api" / "v1" / "query_range"
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
        # The histogram's queries run beside the token queries (the mapping needs both).
        sizes_or_exc, histogram_or_exc = await asyncio.gather(
            self._sizes(now_s, out, stale), self._histogram(now_s), return_exceptions=True
        )
        if isinstance(sizes_or_exc, BaseException):
            raise sizes_or_exc  # a bug or a cancellation, once both have finished
        if isinstance(histogram_or_exc, BaseException):
            raise histogram_or_exc
        inp, out_tokens = sizes_or_exc
        buckets = self._buckets(now_s, histogram_or_exc, inp, out_tokens)
        if stale:
            log.warning(
                "prometheus_stale_series now_s=%.0f max_staleness_s=%g count=%d series=%s",
                now_s,
                cfg.max_staleness_s,
                len(stale),
                ",".join(f"{m}/{r}" for m, r in sorted(stale)),
            )
        return DemandSample(now_s, out, peak, waiting, inp, out_tokens, buckets)

    async def _sizes(
        self, now_s: float, rates: Mapping[Key, float], stale: set[Key]
    ) -> tuple[dict[Key, float], dict[Key, float]]:
        """Mean prompt and output tokens per request per fresh series with a positive
        rate: token rate / request rate. A failure of either query only loses sizes."""
        cfg = self.config
        if not (cfg.prompt_tokens_query and cfg.output_tokens_query):
            return {}, {}
        got = await asyncio.gather(
            self.query(cfg.prompt_tokens_query, now_s),
            self.query(cfg.output_tokens_query, now_s),
            return_exceptions=True,
        )
        answers: list[dict[Key, tuple[float, float]]] = []
        for answer in got:
            if isinstance(answer, PrometheusQueryError):
                log.warning("prometheus_tokens_failed now_s=%.0f reason=%s", now_s, answer)
                return {}, {}
            if isinstance(answer, BaseException):
                raise answer  # a bug or a cancellation: `demand` handles it at its boundary
            answers.append(answer)
        prompt, output = answers
        inp: dict[Key, float] = {}
        out: dict[Key, float] = {}
        for key, rps in rates.items():
            if key in stale or not (math.isfinite(rps) and rps > 0):
                continue
            p, o = prompt.get(key), output.get(key)
            if p is None or o is None:
                continue
            i_tok, o_tok = p[1] / rps, o[1] / rps
            if math.isfinite(i_tok) and math.isfinite(o_tok) and i_tok > 0 and o_tok > 0:
                inp[key], out[key] = i_tok, o_tok
        return inp, out

    async def _histogram(self, now_s: float) -> PromptHistogram | None:
        """The prompt-length histogram per series and, with its freshness query, which
        series' histograms are fresh; None when not configured (or without the token
        queries it needs) or on a failed query (logged: only the buckets are lost)."""
        cfg = self.config
        if not (cfg.prompt_histogram_query and cfg.prompt_tokens_query and cfg.output_tokens_query):
            return None
        queries = [self._vector(cfg.prompt_histogram_query, now_s)]
        if cfg.prompt_histogram_freshness_query:
            queries.append(self._vector(cfg.prompt_histogram_freshness_query, now_s))
        got = await asyncio.gather(*queries, return_exceptions=True)
        for answer in got:
            if isinstance(answer, PrometheusQueryError):
                log.warning("prometheus_histogram_failed now_s=%.0f reason=%s", now_s, answer)
                return None
            if isinstance(answer, BaseException):
                raise answer  # a bug or a cancellation: `demand` handles it at its boundary
        les = self._parse_histogram(cast(list[Any], got[0]))
        if len(got) == 1:
            return PromptHistogram(les, None)
        newest = self._parse_vector(cast(list[Any], got[1]))
        fresh = {k for k, (_, t) in newest.items() if now_s - t <= cfg.max_staleness_s}
        return PromptHistogram(les, frozenset(fresh))

    def _buckets(
        self,
        now_s: float,
        histogram: PromptHistogram | None,
        inp: Mapping[Key, float],
        out: Mapping[Key, float],
    ) -> dict[Key, tuple[SizeBucket, ...]]:
        """The size buckets of each series that has a mean size (fresh, positive rate:
        `_sizes`) and a fresh, readable prompt-length histogram; the others have none
        (logged when they have an unusable histogram)."""
        if histogram is None:
            return {}
        result: dict[Key, tuple[SizeBucket, ...]] = {}
        dropped: list[Key] = []
        for key, les in histogram.les.items():
            if key not in inp or key not in out:
                continue  # no fresh rate or no mean size: no buckets either
            mix = from_histogram(les, RequestSize(inp[key], out[key]))
            if (histogram.fresh is not None and key not in histogram.fresh) or not mix:
                dropped.append(key)
                continue
            result[key] = mix
        if dropped:
            log.warning(
                "prometheus_histogram_unusable now_s=%.0f count=%d series=%s",
                now_s,
                len(dropped),
                ",".join(f"{m}/{r}" for m, r in sorted(dropped)),
            )
        return result

    def _parse_histogram(self, result: list[Any]) -> dict[Key, dict[float, float]]:
        """A histogram's vector as (model, region) -> le -> cumulative value; series of
        one (model, region, le) are summed. A series without an `le` that reads as a
        number is skipped."""
        out: dict[Key, dict[float, float]] = {}
        for item in result:
            try:
                labels: Mapping[str, str] = item["metric"]
                value = float(item["value"][1])
            except (KeyError, TypeError, ValueError, IndexError):
                raise PrometheusQueryError(f"malformed vector element: {_short(item)!r}") from None
            model, region = (
                labels.get(self.config.model_label),
                labels.get(self.config.region_label),
            )
            try:
                le = float(labels.get("le", "nan"))
            except (TypeError, ValueError):
                continue
            if not model or not region or le != le:
                continue
            les = out.setdefault((model, region), {})
            les[le] = les.get(le, 0.0) + value
        return out

    async def query(self, promql: str, now_s: float) -> dict[Key, tuple[float, float]]:
        """Run one instant query at `now_s`: (model, region) -> (sample time, value).

        Series lacking either label are skipped; repeated keys are summed (keeping the
        oldest time). Raises `PrometheusQueryError` on any failure.
        """
        return self._parse_vector(await self._vector(promql, now_s))

    async def node_signals(
        self, now_s: float, nodes: Sequence[Node], query: SignalQuery
    ) -> dict[str, NodeSignals]:
        """Per-node GPU and model-server signals at `now_s` (a `NodeSignalSource`): one
        instant query per signal, grouped by `query.node_label`, matched to `nodes` by
        the label's value (`query.node_value` filled in for the node, a ":port" suffix
        on the series ignored). A query that fails leaves its signal NaN (logged); a
        node without series is absent. Never raises (except on cancellation)."""
        by_value: dict[str, str] = {}
        for node in nodes:
            if "{host}" in query.node_value and not node.address:
                continue  # not reachable yet: nothing names it
            by_value[_fill(query.node_value, node)] = node.node_id
        if not by_value:
            return {}
        label, w = query.node_label, f"{max(1, round(query.window_s))}s"
        queries = {
            "xid": f"max by ({label}) (max_over_time(DCGM_FI_DEV_XID_ERRORS[{w}]))",
            "ecc_dbe_increase": (
                f"sum by ({label}) (increase(DCGM_FI_DEV_ECC_DBE_VOL_TOTAL[{w}]))"
            ),
            "running_max": f"max by ({label}) (max_over_time(vllm:num_requests_running[{w}]))",
            "waiting_growth": f"sum by ({label}) (delta(vllm:num_requests_waiting[{w}]))",
            "waiting": f"sum by ({label}) (vllm:num_requests_waiting)",
        }
        if query.ready_metric:
            queries["loaded"] = f"max by ({label}) ({query.ready_metric})"
        answers = await asyncio.gather(
            *(self._vector(q, now_s) for q in queries.values()), return_exceptions=True
        )
        readings: dict[str, dict[str, float]] = {}  # node id -> field -> value
        for (name, promql), answer in zip(queries.items(), answers, strict=True):
            if isinstance(answer, BaseException):
                if not isinstance(answer, Exception):
                    raise answer  # cancellation
                log.warning("prometheus_signal_failed signal=%s query=%r reason=%s", name,
                            promql, answer)  # fmt: skip
                continue
            for value_of_label, value in _by_label(answer, label).items():
                node_id = by_value.get(value_of_label) or by_value.get(_no_port(value_of_label))
                if node_id is None:
                    continue
                got = readings.setdefault(node_id, {})
                # Several series for one node (one per GPU, or per exporter port): the
                # worst wins for faults, queues add up.
                if name not in got:
                    got[name] = value
                elif name in _SUMMED:
                    got[name] += value
                else:
                    got[name] = max(got[name], value)
        return {k: NodeSignals(**v) for k, v in readings.items()}

    async def history(self, end_s: float, step_s: float, max_span_s: float) -> list[DemandSample]:
        """`history_s` (at most `max_span_s`) of request rates (`query`, and `peak_query`
        where set) before `end_s`, one sample per `step_s` at `end_s - k x step_s`, oldest
        first, by range queries of at most `MAX_RANGE_POINTS` steps; a series absent or not
        finite at a step is absent from that sample, and steps without any series are left
        out. A failure of the rates is logged and gives no history (the daemon then starts
        cold); one of the peaks only loses the peaks. Never raises (except on
        cancellation)."""
        span_s = min(self.config.history_s, max_span_s)
        if span_s <= 0 or step_s <= 0:
            return []
        try:
            return await self._history(end_s, span_s, step_s)
        except PrometheusQueryError as exc:
            reason = str(exc)
        except Exception as exc:  # a history bug must not stop the daemon from starting
            reason = f"unexpected {type(exc).__name__}: {exc}"
        log.warning(
            "prometheus_history_failed url=%s end_s=%.0f span_s=%.0f reason=%s",
            self._safe_url(),
            end_s,
            span_s,
            reason,
        )
        return []

    async def _history(self, end_s: float, span_s: float, step_s: float) -> list[DemandSample]:
        cfg = self.config
        steps = int(span_s // step_s)
        first = end_s - steps * step_s
        rates: dict[float, dict[Key, float]] = {}
        peaks: dict[float, dict[Key, float]] = {}
        for lo in range(0, steps + 1, MAX_RANGE_POINTS):
            hi = min(steps, lo + MAX_RANGE_POINTS - 1)
            start_s, stop_s = first + lo * step_s, first + hi * step_s
            matrix = await self._matrix(cfg.query, start_s, stop_s, step_s)
            _collect(rates, self._parse_matrix(matrix))
            if cfg.peak_query:
                try:
                    peak = await self._matrix(cfg.peak_query, start_s, stop_s, step_s)
                    _collect(peaks, self._parse_matrix(peak))
                except PrometheusQueryError as exc:
                    log.warning("prometheus_history_peak_failed reason=%s", exc)
        return [
            DemandSample(at_s, rps, {k: v for k, v in peaks.get(at_s, {}).items() if k in rps})
            for at_s, rps in sorted(rates.items())
        ]

    async def _matrix(self, promql: str, start_s: float, end_s: float, step_s: float) -> list[Any]:
        """The result list of one range query that returns a matrix."""
        params = {
            "query": promql,
            "start": f"{start_s:.3f}",
            "end": f"{end_s:.3f}",
            "step": f"{step_s:g}",
            "timeout": f"{self.config.timeout_s:g}",
        }
        return await self._result(self._range_endpoint, params, "matrix")

    def _parse_matrix(self, result: list[Any]) -> dict[Key, list[tuple[float, float]]]:
        """(model, region) -> [(time, value)] of a matrix, repeated keys summed per time."""
        cfg = self.config
        out: dict[Key, dict[float, float]] = {}
        for item in result:
            try:
                labels: Mapping[str, str] = item["metric"]
                points = [(round(float(t), 3), float(v)) for t, v in item["values"]]
            except (KeyError, TypeError, ValueError):
                raise PrometheusQueryError(f"malformed matrix element: {_short(item)!r}") from None
            model, region = labels.get(cfg.model_label), labels.get(cfg.region_label)
            if not model or not region:
                continue
            series = out.setdefault((model, region), {})
            for at_s, value in points:
                series[at_s] = series.get(at_s, 0.0) + value
        return {key: sorted(series.items()) for key, series in out.items()}

    async def _vector(self, promql: str, now_s: float) -> list[Any]:
        """The result list of one instant query at `now_s` that returns a vector."""
        params = {
            "query": promql,
            "time": f"{now_s:.3f}",
            "timeout": f"{self.config.timeout_s:g}",
        }
        return await self._result(self._endpoint, params, "vector")

    async def _result(self, endpoint: URL, params: dict[str, str], kind: str) -> list[Any]:
        """The result list of one API query whose result type must be `kind`."""
        if self._bad_url is not None:
            raise PrometheusQueryError(self._bad_url)
        cfg = self.config
        try:
            resp = await fetch(
                self._get_session(),
                "GET",
                endpoint,
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
        if data.get("resultType") != kind:
            raise PrometheusQueryError(
                f"result type {data.get('resultType')!r}, expected {kind!r} "
                "(the query must be an instant vector expression)"
            )
        result = data.get("result")
        if not isinstance(result, list):
            raise PrometheusQueryError("data.result is not a list")
        return result

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


_SUMMED = frozenset({"ecc_dbe_increase", "waiting_growth", "waiting"})  # add up per node
_PORT = re.compile(r"^(?P<host>.+):[0-9]+$")


def _collect(
    into: dict[float, dict[Key, float]], series: Mapping[Key, list[tuple[float, float]]]
) -> None:
    """Add a parsed matrix to per-time readings, leaving out values that are not finite."""
    for key, points in series.items():
        for at_s, value in points:
            if math.isfinite(value):
                into.setdefault(at_s, {})[key] = value


def _fill(template: str, node: Node) -> str:
    """`template` with the node's fields (as in label values: not URL-encoded)."""
    return template.format_map(
        {
            "node_id": node.node_id,
            "model": node.model,
            "cloud_instance_id": node.cloud_instance_id or "",
            "host": node.address or "",
        }
    )


def _no_port(value: str) -> str:
    """`value` without a trailing ":port" (an `instance` label is host:port)."""
    m = _PORT.match(value)
    return m.group("host") if m else value


def _by_label(result: list[Any], label: str) -> dict[str, float]:
    """A vector's values by the value of `label` (series without it are skipped; NaN
    values are kept: a reading that is not a number is missing, not zero)."""
    out: dict[str, float] = {}
    for item in result:
        try:
            name = item["metric"].get(label)
            value = float(item["value"][1])
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            raise PrometheusQueryError(f"malformed vector element: {_short(item)!r}") from None
        if isinstance(name, str) and name:
            out[name] = value
    return out


def _short(value: object, limit: int = 200) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."
