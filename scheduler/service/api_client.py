"""A small async client of the control API (scheduler.service.api), for the TUI and scripts.

One method per endpoint; every failure is one of four types, so a caller has one
reaction each: `ApiUnavailable` (daemon not running or not answering: show "offline",
retry later), `Unauthorized` (token missing or wrong: say so, do not retry),
`ApiError` (the daemon answered no: show its message) and `BadReply` (an answer this
client cannot read: show it). Records with a domain type come back as that type (a
plan's unmet demand as `scheduler.domain.Unmet`). The token is never put in an
exception message or a repr.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import aiohttp

from scheduler.config import DaemonSection
from scheduler.domain import Unmet


class ApiClientError(Exception):
    """Base of the client's errors."""


class ApiUnavailable(ApiClientError):
    """The daemon could not be reached, or did not answer in time."""


class ApiError(ApiClientError):
    """The daemon answered with an error status (400, 404, 409, 422, 500, ...)."""

    def __init__(self, status: int, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status  # HTTP status code
        self.message = message  # the API's "error" field
        self.body = body or {}  # the whole JSON error body (e.g. "problems", "approval")


class Unauthorized(ApiError):
    """The action needs a valid bearer token (HTTP 401)."""


class BadReply(ApiClientError):
    """The daemon answered, with a body this client cannot read (a field of the wrong
    shape, e.g. from a daemon of another version)."""


def _plan(body: Any) -> dict[str, Any]:
    """A Plan of docs/api.md with its `unmet` entries as `Unmet` records."""
    if not isinstance(body, dict):
        raise BadReply(f"a plan that is not an object: {body!r:.200}")
    try:
        unmet = tuple(Unmet.from_json(u) for u in body.get("unmet") or [])
    except ValueError as exc:
        raise BadReply(f"plan {body.get('id')}: {exc}") from None
    return {**body, "unmet": unmet}


class ApiClient:
    """Talks to one daemon over TCP (`base_url`) or a Unix socket (`socket_path`).
    Use as `async with ApiClient(...) as api:`."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:9464",
        *,
        socket_path: str = "",
        token: str | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        # Over a Unix socket the host part is only for the Host header.
        self.base_url = "http://localhost" if socket_path else base_url.rstrip("/")
        self.socket_path = socket_path
        self._token = token
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def for_config(cls, daemon: DaemonSection, *, token: str | None = None) -> ApiClient:
        """A client for the daemon configured by `daemon` (socket if set, else TCP)."""
        host = f"[{daemon.api_host}]" if ":" in daemon.api_host else daemon.api_host
        return cls(f"http://{host}:{daemon.api_port}", socket_path=daemon.api_socket, token=token)

    def __repr__(self) -> str:
        where = f"unix:{self.socket_path}" if self.socket_path else self.base_url
        return f"ApiClient({where}, token={'set' if self._token else 'none'})"

    async def __aenter__(self) -> ApiClient:
        connector: aiohttp.BaseConnector | None = (
            aiohttp.UnixConnector(path=self.socket_path) if self.socket_path else None
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout_s)
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- plumbing ---------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        auth: bool = False,
        ok: tuple[int, ...] = (),
    ) -> tuple[int, Any]:
        if self._session is None:
            raise RuntimeError("use `async with ApiClient(...)`")
        headers = {}
        if auth:
            if not self._token:
                raise Unauthorized(401, "no token configured for actions")
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            async with self._session.request(
                method, self.base_url + path, params=params, headers=headers
            ) as resp:
                if resp.content_type == "application/json":
                    body: Any = await resp.json()
                else:
                    body = await resp.text()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            where = f"unix:{self.socket_path}" if self.socket_path else self.base_url
            raise ApiUnavailable(f"capsched API at {where}: {type(exc).__name__}: {exc}") from exc
        if status < 400 or status in ok:
            return status, body
        data = body if isinstance(body, dict) else {}
        message = str(data.get("error", body if isinstance(body, str) else ""))
        if status == 401:
            raise Unauthorized(status, message or "unauthorized", data)
        raise ApiError(status, message or "error", data)

    async def _get(self, path: str, **params: Any) -> Any:
        query = {k: str(v) for k, v in params.items() if v is not None}
        return (await self._request("GET", path, params=query or None))[1]

    async def _post(self, path: str, ok: tuple[int, ...] = ()) -> Any:
        return (await self._request("POST", path, auth=True, ok=ok))[1]

    # -- reads ------------------------------------------------------------------------------

    async def healthz(self) -> bool:
        """Whether the daemon answers."""
        body = await self._get("/healthz")
        return bool(isinstance(body, dict) and body.get("ok"))

    async def status(self) -> dict[str, Any]:
        """Mode, paused, last tick, pending plan, config generation (GET /v1/status)."""
        result: dict[str, Any] = await self._get("/v1/status")
        return result

    async def nodes(self) -> list[dict[str, Any]]:
        """Live nodes (GET /v1/nodes)."""
        body = await self._get("/v1/nodes")
        return list(body["nodes"])

    async def node(self, node_id: str) -> dict[str, Any]:
        """One node, live or not (GET /v1/nodes/{id})."""
        result: dict[str, Any] = await self._get(f"/v1/nodes/{node_id}")
        return result

    async def node_events(self, node_id: str, *, limit: int | None = None) -> list[dict[str, Any]]:
        """Transition history of one node, oldest first (GET /v1/nodes/{id}/events)."""
        body = await self._get(f"/v1/nodes/{node_id}/events", limit=limit)
        return list(body["events"])

    async def events(
        self, *, after: int | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Transitions of all nodes, oldest first; `after` an event id to poll for newer."""
        body = await self._get("/v1/events", after=after, limit=limit)
        return list(body["events"])

    async def journal(
        self, *, status: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The action journal, oldest first (GET /v1/journal)."""
        body = await self._get("/v1/journal", status=status, limit=limit)
        return list(body["journal"])

    async def plans(self, *, limit: int | None = None) -> list[dict[str, Any]]:
        """The latest plans, newest first (GET /v1/plans); each plan's `unmet` is a
        tuple of `Unmet` records (BadReply when an entry is not one)."""
        body = await self._get("/v1/plans", limit=limit)
        return [_plan(p) for p in body["plans"]]

    async def demand(
        self, *, since_s: int | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Demand history, oldest first (GET /v1/demand)."""
        body = await self._get("/v1/demand", since_s=since_s, limit=limit)
        return list(body["demand"])

    async def plan(self, plan_id: int) -> dict[str, Any]:
        """One plan (GET /v1/plans/{id}), its `unmet` as `Unmet` records."""
        return _plan(await self._get(f"/v1/plans/{int(plan_id)}"))

    async def forecast(self) -> dict[str, Any]:
        """Planned demand and forecast quantiles (GET /v1/forecast)."""
        result: dict[str, Any] = await self._get("/v1/forecast")
        return result

    async def metrics(self) -> str:
        """The Prometheus text exposition (GET /metrics)."""
        return str(await self._get("/metrics"))

    # -- actions ----------------------------------------------------------------------------

    async def approve(self, plan_id: int) -> dict[str, Any]:
        """Approve the pending plan; ApiError 404 (unknown) or 409 (not pending)."""
        result: dict[str, Any] = await self._post(f"/v1/plans/{int(plan_id)}/approve")
        return result

    async def reject(self, plan_id: int) -> dict[str, Any]:
        """Reject the pending plan; ApiError 404 (unknown) or 409 (not pending)."""
        result: dict[str, Any] = await self._post(f"/v1/plans/{int(plan_id)}/reject")
        return result

    async def drain(self, node_id: str) -> dict[str, Any]:
        """Drain one node; ApiError 404 (unknown) or 409 (not ready)."""
        result: dict[str, Any] = await self._post(f"/v1/nodes/{node_id}/drain")
        return result

    async def pause(self) -> dict[str, Any]:
        """Stop acting until `resume` (ticks still observe and plan)."""
        result: dict[str, Any] = await self._post("/v1/pause")
        return result

    async def resume(self) -> dict[str, Any]:
        """Act again."""
        result: dict[str, Any] = await self._post("/v1/resume")
        return result

    async def reload(self) -> list[str]:
        """Ask the daemon to re-read its config; the problems if it refused the new one."""
        body = await self._post("/v1/reload", ok=(422,))
        return [str(p) for p in body.get("problems", [])]
