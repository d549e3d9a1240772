"""The control API: aiohttp on loopback or a Unix socket, used by the TUI and operators.

Reads (state, nodes, plans, events, journal, forecast, /metrics, /healthz) need no
token: they are on loopback only and show nothing secret. Actions (approve or reject a
plan, drain a node, pause, resume, reload) need `Authorization: Bearer <token>`, the
token read from a file of mode 0600 (`load_or_create_token`). Shapes: docs/api.md.

Nothing here logs the token or the Authorization header: the access log shows the path
without the query string's values (and with the token blanked out should one be pasted
into a path), error bodies never echo headers, and a request aiohttp cannot parse (a
header over 8,190 bytes, a control character) gets a JSON 431 or 400 and one log line
without the request's text (aiohttp's own answer logs the raw header line with a
traceback and echoes it back).

Every id and query parameter is checked against a range before it reaches SQLite, and
reads that can take more than a few milliseconds (the demand history) run in a worker
thread on a read connection of their own, so the event loop, and with it the tick, is
never held up by a client.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
import stat
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_request import BaseRequest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from scheduler.domain import Node
from scheduler.loop.store import StateStore, stored_unmet
from scheduler.service.control import Control

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Hosts the API may bind: loopback only. Anything reachable from elsewhere would expose
# the read endpoints (and a token guessing surface) to the network.
LOOPBACK_NAMES = frozenset({"localhost"})
DEFAULT_LIMIT = 100  # rows per list endpoint unless ?limit= says otherwise
MAX_LIMIT = 10_000  # a cap so one request cannot pull a months-old table into memory
# SQLite's INTEGER is 64-bit signed: a larger id cannot exist and cannot even be bound.
SQLITE_INT_MAX = 2**63 - 1
SQLITE_INT_MIN = -(2**63)
# An integer as the API takes it: ASCII digits, an optional minus, at most 19 digits (so
# int() never sees thousands of digits).
_INTEGER = re.compile(r"-?[0-9]{1,19}")
# Node ids are short printable ASCII (`StateStore.next_node_id`); anything longer or
# stranger cannot name a node, and is not handed to SQLite (a lone surrogate from a
# percent-encoded path cannot be bound as text).
MAX_NODE_ID_CHARS = 128
# aiohttp's limits on the request line and each header, kept at its defaults: a longer
# Authorization header is answered 431 (see `_RequestHandler`).
MAX_LINE_BYTES = 8190
REDACTED = "<redacted>"
MAX_LOGGED_PATH_CHARS = 512  # a log line shows at most this much of a path

_CONTROL: web.AppKey[Control] = web.AppKey("control")
_TOKEN: web.AppKey[bytes] = web.AppKey("token", bytes)
_REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("registry", CollectorRegistry)


class TokenFileError(Exception):
    """The token file cannot be used (too open, empty, unreadable); names the file."""


# -- token ------------------------------------------------------------------------------


def _check_mode(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TokenFileError(
            f"token file {path} has mode {stat.S_IMODE(mode):04o}: group or others may access"
            f" it; run `chmod 600 {path}` (or delete it to have a new one created)"
        )


def read_token(path: str | Path) -> str:
    """The token in `path`, refusing a file group or others may access."""
    p = Path(path)
    try:
        _check_mode(p)
        token = p.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise TokenFileError(f"token file {p}: {exc.strerror or exc}") from None
    if not token:
        raise TokenFileError(f"token file {p} is empty")
    return token


def load_or_create_token(path: str | Path) -> str:
    """The bearer token in `path`; a new random one (mode 0600) when the file is missing.
    A file readable or writable by group or others is refused (TokenFileError)."""
    p = Path(path)
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        token = secrets.token_urlsafe(32)
        try:
            # O_EXCL with the mode at creation: the file is never visible with wider
            # permissions, and two starting processes cannot both write one.
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return read_token(p)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
        log.info("api_token_created path=%s", p)
        return token
    return read_token(p)


# -- JSON shapes --------------------------------------------------------------------------


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, allow_nan=False))


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return _json({"error": message, **extra}, status=status)


def node_json(node: Node) -> dict[str, Any]:
    """A node as the API shows it."""
    pool = node.pool
    return {
        "node_id": node.node_id,
        "model": node.model,
        "cloud": pool.cloud.value,
        "region": pool.region,
        "zone": pool.zone,
        "instance_type": pool.instance_type,
        "market": pool.market.value,
        "pool": pool.key,
        "state": node.state.value,
        "cloud_instance_id": node.cloud_instance_id,
        "address": node.address,
        "launched_at_s": node.launched_at_s,
        "state_since_s": node.state_since_s,
    }


def plan_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored plan row with its JSON columns decoded."""
    out = dict(row)
    # `demand` (what the plan provisioned for: rates, sizes, buckets) is [] in plans
    # stored before it was recorded (migration 8).
    for key in ("placements", "notes", "held_back", "demand"):
        raw = out.get(key)
        out[key] = json.loads(raw) if raw else []
    # Every stored form of unmet demand leaves here as `Unmet.to_json` objects.
    out["unmet"] = [u.to_json() for u in stored_unmet(out.get("unmet"))]
    return out


def _finite(value: Any) -> Any:
    # JSON has no NaN; the store may hold one (e.g. a gap) and allow_nan=False would fail.
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _integer(raw: str, lo: int, hi: int) -> int | None:
    """`raw` as an integer in lo..hi, or None (not an integer, or out of the range)."""
    if not _INTEGER.fullmatch(raw):
        return None
    value = int(raw)
    return value if lo <= value <= hi else None


def _limit(request: web.Request) -> int:
    value = _integer(request.query.get("limit", str(DEFAULT_LIMIT)), 1, MAX_LIMIT)
    if value is None:
        raise web.HTTPBadRequest(reason=f"limit must be an integer between 1 and {MAX_LIMIT}")
    return value


def _int_param(
    request: web.Request, name: str, lo: int = SQLITE_INT_MIN, hi: int = SQLITE_INT_MAX
) -> int | None:
    """Query parameter `name` as an integer in lo..hi; None when absent; 400 otherwise."""
    raw = request.query.get(name)
    if raw is None:
        return None
    value = _integer(raw, lo, hi)
    if value is None:
        raise web.HTTPBadRequest(reason=f"{name} must be an integer between {lo} and {hi}")
    return value


def _plan_id(request: web.Request) -> int | None:
    """The path's plan id; None when no plan can have it (beyond SQLite's INTEGER)."""
    return _integer(request.match_info["plan_id"], 0, SQLITE_INT_MAX)


def _node_id(request: web.Request) -> str | None:
    """The path's node id; None when no node can have it (too long, not printable ASCII)."""
    node_id = request.match_info["node_id"]
    ok = len(node_id) <= MAX_NODE_ID_CHARS and node_id.isascii() and node_id.isprintable()
    return node_id if ok else None


def shown_path(path: str, token: bytes) -> str:
    """`path` as a log line may show it: the token, should it have been pasted into the
    path, blanked out; anything not printable escaped (a decoded %0A must not start a
    forged log line); cut to MAX_LOGGED_PATH_CHARS."""
    text = token.decode("utf-8", "replace")
    shown = path.replace(text, REDACTED) if text else path
    if not shown.isprintable():
        shown = shown.encode("unicode_escape").decode("ascii")
    if len(shown) > MAX_LOGGED_PATH_CHARS:
        shown = shown[:MAX_LOGGED_PATH_CHARS] + f"...({len(shown)} chars)"
    return shown


def _shown_path(request: web.Request) -> str:
    return shown_path(request.path, request.app[_TOKEN])


# -- middleware ---------------------------------------------------------------------------


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as a JSON body, including aiohttp's own 404/405/400."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)
    except Exception:
        # Logged without the request's headers (they may carry the token).
        log.exception("api_error method=%s path=%s", request.method, _shown_path(request))
        return _error(500, "internal error")


def _authorized(request: web.Request) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    given = given.strip()
    # A token is printable ASCII; anything else (non-ASCII bytes arrive as lone
    # surrogates, which cannot even be encoded) is simply not it.
    if scheme.lower() != "bearer" or not given or not (given.isascii() and given.isprintable()):
        return False
    # Constant time: the comparison must not reveal how many leading bytes matched.
    return hmac.compare_digest(given.encode("ascii"), request.app[_TOKEN])


def _action(handler: Handler) -> Handler:
    """Require the bearer token before `handler` runs."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        if not _authorized(request):
            log.warning("api_unauthorized method=%s path=%s", request.method, _shown_path(request))
            response = _error(401, "missing or wrong bearer token")
            response.headers["WWW-Authenticate"] = 'Bearer realm="capsched"'
            return response
        return await handler(request)

    return guarded


# -- read endpoints -----------------------------------------------------------------------


async def _healthz(request: web.Request) -> web.Response:
    return _json({"ok": True})


async def _status(request: web.Request) -> web.Response:
    return _json(_finite(request.app[_CONTROL].status()))


async def _forecast(request: web.Request) -> web.Response:
    return _json(_finite(request.app[_CONTROL].forecast()))


async def _nodes(request: web.Request) -> web.Response:
    store = request.app[_CONTROL].store
    return _json(_finite({"nodes": [node_json(n) for n in store.live_nodes()]}))


def _unknown_node(request: web.Request) -> web.Response:
    return _error(404, f"unknown node {request.match_info['node_id'][:MAX_NODE_ID_CHARS]}")


def _unknown_plan(request: web.Request) -> web.Response:
    return _error(404, f"unknown plan {request.match_info['plan_id'][:20]}")


async def _node(request: web.Request) -> web.Response:
    node_id = _node_id(request)
    node = request.app[_CONTROL].store.node(node_id) if node_id is not None else None
    if node is None:
        return _unknown_node(request)
    return _json(_finite(node_json(node)))


async def _node_events(request: web.Request) -> web.Response:
    node_id = _node_id(request)
    store = request.app[_CONTROL].store
    if node_id is None or store.node(node_id) is None:
        return _unknown_node(request)
    rows = store.recent_events(limit=_limit(request), node_id=node_id)
    return _json(_finite({"node_id": node_id, "events": rows}))


async def _events(request: web.Request) -> web.Response:
    after = _int_param(request, "after", lo=0)
    store = request.app[_CONTROL].store
    rows = store.recent_events(limit=_limit(request), after_id=after)
    return _json(_finite({"events": rows}))


async def _journal(request: web.Request) -> web.Response:
    status = request.query.get("status")
    store = request.app[_CONTROL].store
    rows = store.recent_journal(limit=_limit(request), status=status)
    return _json(_finite({"journal": rows}))


async def _plans(request: web.Request) -> web.Response:
    store = request.app[_CONTROL].store
    rows = store.plans(_limit(request))
    return _json(_finite({"plans": [plan_json(r) for r in rows]}))


async def _demand(request: web.Request) -> web.Response:
    """Demand, its peak, the planned rate and the forecast quantiles per tick and series:
    the latest `limit` rows after `since_s`, oldest first. Off the event loop: a 14-day
    history holds about 800k rows."""
    store: StateStore = request.app[_CONTROL].store
    since = _int_param(request, "since_s")
    limit = _limit(request)
    since_s = float(since) if since is not None else float("-inf")
    rows = await asyncio.to_thread(store.demand_recent_json, since_s, limit)
    return web.Response(text='{"demand": ' + rows + "}", content_type="application/json")


async def _plan(request: web.Request) -> web.Response:
    plan_id = _plan_id(request)
    row = request.app[_CONTROL].store.plan_row(plan_id) if plan_id is not None else None
    if row is None:
        return _unknown_plan(request)
    return _json(_finite(plan_json(row)))


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[_REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# -- actions ------------------------------------------------------------------------------


async def _decide_plan(request: web.Request, verb: str) -> web.Response:
    control = request.app[_CONTROL]
    plan_id = _plan_id(request)
    row = control.store.plan_row(plan_id) if plan_id is not None else None
    if plan_id is None or row is None:
        return _unknown_plan(request)
    done = await (control.approve(plan_id) if verb == "approve" else control.reject(plan_id))
    if not done:
        # Stored but not the one waiting: approved, rejected, superseded or never held.
        current = control.store.plan_row(plan_id) or row
        return _error(
            409,
            f"plan {plan_id} is not the pending plan",
            plan_id=plan_id,
            approval=current.get("approval"),
        )
    state = "approved" if verb == "approve" else "rejected"
    log.info("api_plan_%s plan_id=%d", state, plan_id)
    return _json({"plan_id": plan_id, "approval": state})


async def _approve(request: web.Request) -> web.Response:
    return await _decide_plan(request, "approve")


async def _reject(request: web.Request) -> web.Response:
    return await _decide_plan(request, "reject")


async def _drain(request: web.Request) -> web.Response:
    control = request.app[_CONTROL]
    node_id = _node_id(request)
    node = control.store.node(node_id) if node_id is not None else None
    if node_id is None or node is None:
        return _unknown_node(request)
    if not await control.drain(node_id):
        latest = control.store.node(node_id) or node
        return _error(
            409,
            f"node {node_id} cannot be drained in state {latest.state.value}",
            node_id=node_id,
            state=latest.state.value,
        )
    log.info("api_drain node_id=%s", node_id)
    return _json({"node_id": node_id, "draining": True}, status=202)


async def _pause(request: web.Request) -> web.Response:
    await request.app[_CONTROL].pause()
    log.info("api_pause")
    return _json({"paused": True})


async def _resume(request: web.Request) -> web.Response:
    await request.app[_CONTROL].resume()
    log.info("api_resume")
    return _json({"paused": False})


async def _reload(request: web.Request) -> web.Response:
    problems = await request.app[_CONTROL].reload()
    if problems:
        return _error(422, "new config refused; the old one keeps running", problems=list(problems))
    return _json({"reloaded": True, "problems": []})


# -- app and server -----------------------------------------------------------------------


def make_app(
    control: Control, token: str, *, metrics_registry: CollectorRegistry
) -> web.Application:
    """The control API application over `control`; actions need `token`."""
    if not token:
        raise ValueError("an empty token would let anyone act")
    app = web.Application(middlewares=[_errors])
    app[_CONTROL] = control
    app[_TOKEN] = token.encode("utf-8")
    app[_REGISTRY] = metrics_registry
    r = app.router
    r.add_get("/healthz", _healthz)
    r.add_get("/metrics", _metrics)
    r.add_get("/v1/status", _status)
    r.add_get("/v1/forecast", _forecast)
    r.add_get("/v1/nodes", _nodes)
    r.add_get("/v1/nodes/{node_id}", _node)
    r.add_get("/v1/nodes/{node_id}/events", _node_events)
    r.add_get("/v1/events", _events)
    r.add_get("/v1/journal", _journal)
    r.add_get("/v1/plans", _plans)
    r.add_get("/v1/demand", _demand)
    r.add_get(r"/v1/plans/{plan_id:\d+}", _plan)
    r.add_post(r"/v1/plans/{plan_id:\d+}/approve", _action(_approve))
    r.add_post(r"/v1/plans/{plan_id:\d+}/reject", _action(_reject))
    r.add_post("/v1/nodes/{node_id}/drain", _action(_drain))
    r.add_post("/v1/pause", _action(_pause))
    r.add_post("/v1/resume", _action(_resume))
    r.add_post("/v1/reload", _action(_reload))
    return app


class _AccessLog(AbstractAccessLogger):
    """One key=value line per request: remote, method, path, the query's parameter names
    (never their values: a token pasted into a query string would be logged), status, size
    and duration. No header is logged, so never the Authorization header."""

    token = b""  # the API token, blanked out of paths; set per app by `_access_log_class`

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Write the line for `request` and its `response`."""
        self.logger.info(
            "api_access remote=%s method=%s path=%s query=%s status=%d bytes=%d duration_s=%.6f",
            request.remote,
            request.method,
            shown_path(request.path, self.token),
            ",".join(sorted({shown_path(k, self.token) for k in request.query})) or "-",
            response.status,
            response.body_length,
            time,
        )


def _access_log_class(token: bytes) -> type[AbstractAccessLogger]:
    # aiohttp builds the access logger from a class; this one carries the app's token.
    class AccessLog(_AccessLog):
        pass

    AccessLog.token = token
    return AccessLog


class _RequestHandler(web.RequestHandler):
    """aiohttp's connection handler with its answer to a request it cannot parse (or a
    handler failure outside the app's middleware) replaced. aiohttp logs the exception with
    a traceback, and its message holds the offending line, an oversize or malformed
    Authorization header with the token in it; it also echoes that line back as text. Here:
    one log line naming only the error's type, and a JSON body."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The response to a request that never reached the app, or failed outside it."""
        if isinstance(exc, LineTooLong):
            status, text = 431, f"request line or a header over {MAX_LINE_BYTES} bytes"
        elif isinstance(exc, HttpProcessingError):
            status, text = 400, "malformed HTTP request"
        elif status == 504:
            text = "request timed out"
        else:
            status, text = 500, "internal error"
        error = type(exc).__name__ if exc is not None else "-"
        if status == 500:
            # A bug in our code, not in the request: keep the traceback (no headers in it).
            log.error("api_request_failed status=%d error=%s", status, error, exc_info=exc)
        else:
            log.warning("api_bad_request status=%d error=%s", status, error)
        if request.writer.output_size > 0:  # as aiohttp: a response is already under way
            raise ConnectionError("response already started; cannot send the error")
        response = _error(status, text)
        response.force_close()
        return response


class _Server(web.Server):
    """aiohttp's low-level server, handing its connections to `_RequestHandler`."""

    def __init__(
        self,
        handler: Callable[[BaseRequest], Awaitable[web.StreamResponse]],
        *,
        request_factory: Any,
        handler_kwargs: dict[str, Any],
    ) -> None:
        super().__init__(handler, request_factory=request_factory, **handler_kwargs)
        self._handler_kwargs = handler_kwargs  # what each connection's handler is built with

    def __call__(self) -> web.RequestHandler:
        return _RequestHandler(self, loop=asyncio.get_running_loop(), **self._handler_kwargs)


class _Runner(web.AppRunner):
    """An AppRunner whose server answers malformed requests with JSON and logs no request
    text (see `_RequestHandler`), with the token-free access log."""

    def __init__(self, app: web.Application, *, token: bytes) -> None:
        super().__init__(app, handle_signals=False)
        self._handler_kwargs: dict[str, Any] = {
            "access_log_class": _access_log_class(token),
            "max_line_size": MAX_LINE_BYTES,
            "max_field_size": MAX_LINE_BYTES,
        }

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()  # runs the app's startup and freezes it
        return _Server(
            base.request_handler,
            request_factory=base.request_factory,
            handler_kwargs=self._handler_kwargs,
        )


def check_loopback(host: str) -> None:
    """Raise ValueError unless `host` is a loopback address or "localhost"."""
    if host in LOOPBACK_NAMES:
        return
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"refusing to serve the control API on {host!r}: only 127.0.0.1, ::1, localhost"
            " or a Unix socket (api_socket) are allowed"
        )


async def serve(
    app: web.Application, *, host: str = "127.0.0.1", port: int = 0, socket_path: str = ""
) -> tuple[web.AppRunner, str]:
    """Start `app` on a Unix socket (when `socket_path` is set) or on loopback `host:port`
    (port 0 picks a free one). Returns the runner (call `await runner.cleanup()` to stop)
    and the address: "unix:<path>" or "http://<host>:<port>"."""
    if not socket_path:
        check_loopback(host)
    runner = _Runner(app, token=app[_TOKEN])
    await runner.setup()
    try:
        site: web.BaseSite
        if socket_path:
            site = web.UnixSite(runner, socket_path)
            await site.start()
            # Same owner only, like the token file: the socket needs no wider access.
            os.chmod(socket_path, 0o600)
            address = f"unix:{socket_path}"
        else:
            site = web.TCPSite(runner, host, port)
            await site.start()
            bound = runner.addresses[0]
            shown = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
            address = f"http://{shown}:{bound[1]}"
    except BaseException:
        await runner.cleanup()
        raise
    log.info("api_listening address=%s", address)
    return runner, address
