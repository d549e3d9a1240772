"""Health checks over HTTP: a node serves when its health endpoint answers as expected.

`HttpHealthProbe.check(node)` GETs the `[health].url` template filled in for the node
(e.g. `http://{host}:8000/health`, vLLM's endpoint) once, without retries (the
reconciler checks again every `interval_s` and acts only on a streak): the expected
status is a pass; another status, a connection error or a timeout is a fail; a node
with no address known yet cannot be checked (None). It never raises for one node.

Templates take the drainer's placeholders (`adapters.http_drain.render`), and the
address behind `{host}` comes from the same resolver the drainer uses.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from adapters._http import FetchError, fetch, safe_url, split_credentials
from adapters.http_drain import NodeEndpoints, Resolver, render
from scheduler.domain import Node
from scheduler.sections.health import HttpHealthConfig

log = logging.getLogger(__name__)


class HttpHealthProbe(NodeEndpoints):
    """A `scheduler.decide.health.HealthProbe` for model servers with a health endpoint.

    Close with `close()` or `async with`; a session passed in is the caller's to close.
    """

    event = "health"  # log lines: health_resolve_failed

    def __init__(
        self,
        config: HttpHealthConfig,
        resolve: Resolver,
        *,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        super().__init__(resolve, session=session)
        self.config = config

    async def check(self, node: Node) -> bool | None:
        """True when the endpoint answered the expected status, False when it did not
        answer or answered another, None when the node has no address yet."""
        cfg = self.config
        host = await self._address(node) if "{host}" in cfg.url else ""
        if host is None:
            return None
        raw = render(cfg.url, node, host)
        try:
            url, auth_headers = split_credentials(raw)
            resp = await fetch(
                self._get_session(),
                "GET",
                url,
                headers=auth_headers,
                timeout_s=cfg.timeout_s,
                retries=0,
                backoff_s=0.0,
                sleep=asyncio.sleep,
                what="health_check",
            )
        except FetchError as exc:
            log.info("health_check_failed node_id=%s url=%s reason=%s", node.node_id,
                     safe_url(raw), exc)  # fmt: skip
            return False
        if resp.status != cfg.expected_status:
            log.info(
                "health_check_failed node_id=%s url=%s reason=HTTP_%d",
                node.node_id,
                url,
                resp.status,
            )
            return False
        return True
