"""Draining over HTTP: a deregistration hook, then the node's own Prometheus metrics.

`HttpDrainer.begin(node)` calls the configured hook once (e.g.
`POST http://router:8000/admin/deregister?node={node_id}`), retrying 5xx and
connection errors; with no hook configured it does nothing. A hook that still fails
raises `DrainHookError`, so the actuator records the drain as failed; the node is
draining all the same and the drain deadline still bounds the wait.

`HttpDrainer.in_flight(node, now_s)` scrapes the node's metrics endpoint and sums
the configured gauges (by default vLLM's running and waiting requests) over all
label sets. Anything it cannot read (no address, unreachable, non-200, unparsable,
metric absent, negative or non-finite) is None: unknown, so the reconciler's drain
deadline decides, never a made-up 0.

URL templates take `{node_id}`, `{host}`, `{model}` and `{cloud_instance_id}`;
every value but `{host}` is percent-encoded. The address behind `{host}` (a host or
host:port) comes from the resolver the daemon passes in.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import Awaitable, Callable
from urllib.parse import quote

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from adapters._http import FetchError, Sleep, fetch, safe_url, split_credentials
from adapters.resource import AsyncResource
from scheduler.domain import Node
from scheduler.sections.drain import HttpDrainConfig

log = logging.getLogger(__name__)

__all__ = [
    "DrainHookError",
    "HttpDrainConfig",
    "HttpDrainer",
    "Resolver",
    "count_in_flight",
]

Resolver = Callable[[Node], "str | Awaitable[str | None] | None"]
"""The node's address (host or host:port) for `{host}`; None when not known yet."""


class DrainHookError(Exception):
    """The deregistration hook failed; the message holds no credentials."""


class NodeEndpoints(AsyncResource):
    """What the drainer and the health probe share: an HTTP session (opened on first
    use and closed by `close()` unless the caller passed its own) and the resolver that
    gives a node's address for `{host}`. `event` prefixes the log line of a resolver
    failure (`<event>_resolve_failed`)."""

    event = "endpoint"

    def __init__(self, resolve: Resolver, *, session: aiohttp.ClientSession | None = None) -> None:
        self._resolve = resolve  # node -> address for {host}
        self._session = session  # created on first use when not given
        self._owns_session = session is None  # close only what we opened

    async def close(self) -> None:
        """Close the HTTP session if this object opened it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _address(self, node: Node) -> str | None:
        try:
            got = self._resolve(node)
            if inspect.isawaitable(got):
                got = await got
        except Exception as exc:  # a resolver bug reads as "address unknown"
            log.warning(
                "%s_resolve_failed node_id=%s error=%s:%s",
                self.event,
                node.node_id,
                type(exc).__name__,
                exc,
            )
            return None
        return got or None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session


class HttpDrainer(NodeEndpoints):
    """A `scheduler.ports.drain.Drainer` for routers with an admin hook and vLLM-style nodes.

    Close with `close()` or `async with`; a session passed in is the caller's to close.
    """

    event = "drain"  # log lines: drain_resolve_failed

    def __init__(
        self,
        config: HttpDrainConfig,
        resolve: Resolver,
        *,
        session: aiohttp.ClientSession | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        super().__init__(resolve, session=session)
        self.config = config
        self._sleep = sleep  # backoff between hook retries; injected so tests never wait

    async def begin(self, node: Node) -> None:
        """Call the deregistration hook once for `node` (no-op without a hook).

        Raises `DrainHookError` when the hook cannot be called or answers non-2xx.
        """
        cfg = self.config
        if not cfg.hook_url:
            log.info("drain_begin node_id=%s hook=none", node.node_id)
            return
        host = await self._address(node) if "{host}" in cfg.hook_url else ""
        if host is None:
            raise DrainHookError(f"no address known for node {node.node_id}")
        raw = render(cfg.hook_url, node, host)
        try:
            url, auth_headers = split_credentials(raw)
            resp = await fetch(
                self._get_session(),
                cfg.hook_method,
                url,
                headers=auth_headers,
                timeout_s=cfg.timeout_s,
                retries=cfg.hook_retries,
                backoff_s=cfg.backoff_s,
                sleep=self._sleep,
                what="drain_hook",
            )
        except FetchError as exc:
            raise DrainHookError(f"hook {cfg.hook_method} {safe_url(raw)} failed: {exc}") from None
        if not 200 <= resp.status < 300:
            raise DrainHookError(f"hook {cfg.hook_method} {url} answered HTTP {resp.status}")
        log.info(
            "drain_begin node_id=%s hook=%s url=%s status=%d",
            node.node_id,
            cfg.hook_method,
            url,
            resp.status,
        )

    async def in_flight(self, node: Node, now_s: float) -> int | None:
        """Requests still running (and queued) on `node`; None when unknown. Never raises."""
        try:
            count, reason = await self._scrape(node)
        except Exception as exc:  # unknown, not fatal: the drain deadline decides
            count, reason = None, f"unexpected {type(exc).__name__}: {exc}"
        if count is not None:
            log.debug("drain_in_flight node_id=%s count=%d", node.node_id, count)
            return count
        log.warning(
            "drain_in_flight_unknown node_id=%s now_s=%.0f reason=%s", node.node_id, now_s, reason
        )
        return None

    async def _scrape(self, node: Node) -> tuple[int | None, str]:
        cfg = self.config
        host = await self._address(node) if "{host}" in cfg.metrics_url else ""
        if host is None:
            return None, "no address"
        raw = render(cfg.metrics_url, node, host)
        try:
            url, auth_headers = split_credentials(raw)
            # One attempt: the reconciler asks again on its next tick.
            resp = await fetch(
                self._get_session(),
                "GET",
                url,
                headers=auth_headers,
                timeout_s=cfg.timeout_s,
                retries=0,
                backoff_s=0.0,
                sleep=self._sleep,
                what="drain_scrape",
            )
        except FetchError as exc:
            return None, f"{safe_url(raw)}: {exc}"
        if resp.status != 200:
            return None, f"{url}: HTTP {resp.status}"
        return count_in_flight(resp.body, cfg.in_flight_metrics)


def count_in_flight(body: bytes, metrics: tuple[str, ...]) -> tuple[int | None, str]:
    """Sum the samples named in `metrics` in a Prometheus text exposition.

    Returns (count, "") or (None, reason) when the text does not parse, none of the
    metrics is present, or the sum is negative or not finite.
    """
    wanted = set(metrics)
    total = 0.0
    found = False
    try:
        text = body.decode("utf-8")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in wanted:
                    total += sample.value
                    found = True
    except Exception as exc:  # the parser raises several types on garbage
        return None, f"unparsable exposition: {type(exc).__name__}: {exc}"[:300]
    if not found:
        return None, f"none of {sorted(wanted)} exposed"
    if not math.isfinite(total) or total < 0:
        return None, f"in-flight sum is {total}"
    return round(total), ""


def render(template: str, node: Node, host: str) -> str:
    """`template` with the node's fields filled in (all but `{host}` percent-encoded)."""
    return template.format_map(
        {
            "node_id": quote(node.node_id, safe=""),
            "model": quote(node.model, safe=""),
            "cloud_instance_id": quote(node.cloud_instance_id or "", safe=""),
            "host": host,
        }
    )
