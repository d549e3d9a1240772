"""The control API under hostile or broken requests, sent as raw bytes over a real socket
(an HTTP client library would refuse to send most of them): the token never reaches a
log line (query strings, paths, oversize or malformed Authorization headers), aiohttp's
parse errors come back as JSON 431/400 without echoing the request, a malformed
Authorization header is a 401, and ids or parameters beyond SQLite's INTEGER are a JSON
400/404, never a 500.

Every test here runs under `token_never_logged` (from test_api): all log records of the
test (aiohttp's access and server logs included) are formatted with their tracebacks and
searched for the token and for tracebacks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_api import TOKEN, FakeControl, add_node, plan, token_never_logged  # noqa: F401

from scheduler.domain import NodeState
from scheduler.loop.store import StateStore
from scheduler.service.api import REDACTED, make_app, serve
from scheduler.service.telemetry import Telemetry

SQLITE_INT_MAX = 2**63 - 1


def short(value: object) -> str:
    """A test id for a long bytes parameter."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}..({len(text)} chars)"


@dataclass
class Served:
    """The API over a fake control, on 127.0.0.1."""

    control: FakeControl
    port: int
    ready_node: str  # a READY node
    pending_plan: int  # the plan approve/reject accept


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    store = StateStore(tmp_path / "state.db")
    ready = add_node(store, NodeState.READY)
    pending = store.record_plan(plan(9.0), 20.0, "capsched", (), approval="pending")
    control = FakeControl(store, pending_plan_id=pending)
    app = make_app(control, TOKEN, metrics_registry=Telemetry().registry)
    runner, address = await serve(app, host="127.0.0.1", port=0)
    try:
        yield Served(control, int(address.rsplit(":", 1)[1]), ready, pending)
    finally:
        await runner.cleanup()
        store.close()


@dataclass(frozen=True)
class Reply:
    """A raw HTTP response."""

    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        assert self.headers.get("content-type", "").startswith("application/json"), self
        return json.loads(self.body)


async def send(port: int, head: bytes, body: bytes = b"") -> Reply:
    """Send `head` (request line and headers, CRLF-separated, without the blank line) and
    `body` as they are; read the response until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        length = f"Content-Length: {len(body)}\r\n".encode() if body else b""
        writer.write(head + b"\r\nConnection: close\r\n" + length + b"\r\n" + body)
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
    top, _, payload = data.partition(b"\r\n\r\n")
    status_line, *header_lines = top.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Reply(int(status_line.split()[1]), headers, payload)


def request(method: str, target: bytes, *headers: bytes) -> bytes:
    return b"\r\n".join(
        [f"{method} ".encode() + target + b" HTTP/1.1", b"Host: 127.0.0.1", *headers]
    )


# -- 4: the token never reaches the logs -------------------------------------------------


async def test_a_token_in_the_query_string_is_not_logged(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    for target in (
        b"/v1/status?token=" + TOKEN.encode(),
        b"/v1/events?after=1&access_token=" + TOKEN.encode() + b"&limit=5",
        b"/v1/plans?" + TOKEN.encode(),  # as a parameter name
    ):
        reply = await send(served.port, request("GET", target))
        assert reply.status == 200
    reply = await send(served.port, request("POST", b"/v1/pause?token=" + TOKEN.encode()))
    assert reply.status == 401  # a token in the query string is not accepted
    access = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert len(access) == 4
    # The path and the parameter names stay, for the operator.
    assert "path=/v1/events query=access_token,after,limit" in access[1]
    assert f"path=/v1/plans query={REDACTED}" in access[2]


async def test_a_token_pasted_into_a_path_is_blanked_out_of_the_log(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    reply = await send(served.port, request("GET", b"/v1/nodes/" + TOKEN.encode()))
    assert reply.status == 404
    reply = await send(served.port, request("POST", b"/v1/nodes/" + TOKEN.encode() + b"/drain"))
    assert reply.status == 401
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"path=/v1/nodes/{REDACTED} " in m for m in messages)
    assert any(
        f"api_unauthorized method=POST path=/v1/nodes/{REDACTED}/drain" in m for m in messages
    )


async def test_a_path_cannot_forge_a_log_line(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    forged = b"/v1/nodes/x%0Alevel=ERROR%20logger=scheduler.service.api%20api_pause%0D"
    reply = await send(served.port, request("GET", forged))
    assert reply.status == 404
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "\n" in m or "\r" in m]
    assert any(
        "path=/v1/nodes/x\\nlevel=ERROR logger=scheduler.service.api api_pause\\r" in m
        for m in messages
    )


@pytest.mark.parametrize(
    ("header", "status"),
    [
        # Over aiohttp's 8,190-byte limit per header line.
        (b"Authorization: Bearer " + TOKEN.encode() + b"A" * 9000, 431),
        (b"Authorization: Bearer " + b"A" * 9000 + TOKEN.encode(), 431),
        # Control characters aiohttp's parser refuses.
        (b"Authorization: Bearer " + TOKEN.encode() + b"\x01", 400),
        (b"Authorization: Bearer " + TOKEN.encode() + b"\x00x", 400),
        (b"Authorization: Bearer \x7f" + TOKEN.encode(), 400),
        (b"X-Forwarded-Token: " + TOKEN.encode() + b"\x1b[0m", 400),
    ],
    ids=short,
)
async def test_an_unparseable_header_is_json_without_echo_or_traceback(
    served: Served, caplog: pytest.LogCaptureFixture, header: bytes, status: int
) -> None:
    reply = await send(served.port, request("POST", b"/v1/pause", header))
    assert reply.status == status
    assert "error" in reply.json()
    assert TOKEN.encode() not in reply.body and b"Bearer" not in reply.body
    warnings = [r for r in caplog.records if r.name == "scheduler.service.api"]
    assert [r.getMessage().split()[:2] for r in warnings] == [
        ["api_bad_request", f"status={status}"]
    ]
    assert all(r.exc_info is None for r in caplog.records)
    assert served.control.calls == []


async def test_an_oversize_request_line_is_json_431(served: Served) -> None:
    reply = await send(served.port, request("GET", b"/v1/nodes/" + b"x" * 9000))
    assert reply.status == 431 and "error" in reply.json()
    assert b"xxxx" not in reply.body


# -- 5: a malformed Authorization header is 401, never 500 -------------------------------


@pytest.mark.parametrize(
    "value",
    [
        b"Bearer \xff\xfe",  # not UTF-8: arrives as lone surrogates
        b"Bearer " + TOKEN.encode() + b"\xe2\x80\x8b",  # the token and a zero-width space
        "Bearer ťoken-é".encode(),
        b"Bearer \xc3",
        b"Bearer",
        b"Bearer ",
        b"\xff\xfe " + TOKEN.encode(),  # a non-ASCII scheme
        b"Bearer\t" + TOKEN.encode(),  # no space after the scheme
        b"Bearer " + TOKEN.encode() + b" " + TOKEN.encode(),
    ],
)
async def test_a_malformed_authorization_header_is_401(served: Served, value: bytes) -> None:
    reply = await send(served.port, request("POST", b"/v1/pause", b"Authorization: " + value))
    assert reply.status == 401
    assert reply.json() == {"error": "missing or wrong bearer token"}
    assert served.control.calls == []


async def test_the_right_token_still_acts(served: Served) -> None:
    auth = b"Authorization: Bearer " + TOKEN.encode()
    reply = await send(served.port, request("POST", b"/v1/pause", auth))
    assert reply.status == 200 and reply.json() == {"paused": True}
    assert served.control.calls == [("pause", None)]


# -- 6: huge ids and parameters are 400/404 JSON, never 500 ------------------------------

HUGE = [b"9" * 20, b"9" * 27, b"9" * 400, b"9" * 5000, str(SQLITE_INT_MAX + 2).encode()]


@pytest.mark.parametrize("digits", HUGE, ids=short)
@pytest.mark.parametrize(
    ("method", "template"),
    [
        ("GET", b"/v1/plans/%s"),
        ("POST", b"/v1/plans/%s/approve"),
        ("POST", b"/v1/plans/%s/reject"),
    ],
)
async def test_a_plan_id_beyond_sqlite_integer_is_404(
    served: Served, method: str, template: bytes, digits: bytes
) -> None:
    auth = b"Authorization: Bearer " + TOKEN.encode()
    reply = await send(served.port, request(method, template % digits, auth))
    assert reply.status == 404
    assert reply.json()["error"].startswith("unknown plan ")
    assert len(reply.body) < 200  # the id is not echoed at length
    assert served.control.calls == []


@pytest.mark.parametrize("digits", HUGE, ids=short)
@pytest.mark.parametrize(
    "template",
    [
        b"/v1/events?after=%s",
        b"/v1/events?after=-%s",
        b"/v1/demand?since_s=%s",
        b"/v1/demand?since_s=-%s",
        b"/v1/plans?limit=%s",
        b"/v1/journal?limit=%s",
        b"/v1/demand?limit=%s",
    ],
)
async def test_a_parameter_beyond_its_range_is_400(
    served: Served, template: bytes, digits: bytes
) -> None:
    reply = await send(served.port, request("GET", template % digits))
    assert reply.status == 400
    name = template.split(b"?")[1].split(b"=")[0].decode()
    assert reply.json()["error"].startswith(f"{name} must be an integer between ")


@pytest.mark.parametrize(
    "target",
    [
        b"/v1/events?after=-1",
        b"/v1/events?after=1.5",
        b"/v1/events?after=1_000",
        b"/v1/events?after=%20%201",
        b"/v1/events?after=%D9%A1",  # an Arabic-Indic digit: int() would take it
        b"/v1/events?after=",
        b"/v1/demand?since_s=1e9",
        b"/v1/demand?since_s=nan",
        b"/v1/plans?limit=0",
        b"/v1/plans?limit=10001",
    ],
)
async def test_a_parameter_that_is_not_a_plain_integer_in_range_is_400(
    served: Served, target: bytes
) -> None:
    reply = await send(served.port, request("GET", target))
    assert reply.status == 400 and "must be an integer between" in reply.json()["error"]


async def test_the_largest_ids_and_parameters_are_answered(served: Served) -> None:
    top = str(SQLITE_INT_MAX).encode()
    assert (await send(served.port, request("GET", b"/v1/plans/" + top))).status == 404
    events = await send(served.port, request("GET", b"/v1/events?after=" + top))
    assert events.status == 200 and events.json() == {"events": []}
    demand = await send(served.port, request("GET", b"/v1/demand?since_s=-" + top))
    assert demand.status == 200 and demand.json() == {"demand": []}
    plans = await send(served.port, request("GET", b"/v1/plans?limit=10000"))
    assert plans.status == 200 and [p["id"] for p in plans.json()["plans"]] == [served.pending_plan]


@pytest.mark.parametrize(
    "node_id",
    [
        b"%FF%FE",  # not UTF-8 once decoded
        b"%ED%A0%80",  # an encoded lone surrogate
        b"cs-%00",
        b"x" * 5000,
        b"%E2%80%8Bcs-00000001",  # a zero-width space before a real id
    ],
    ids=short,
)
@pytest.mark.parametrize(
    ("method", "template"),
    [("GET", b"/v1/nodes/%s"), ("GET", b"/v1/nodes/%s/events"), ("POST", b"/v1/nodes/%s/drain")],
)
async def test_a_node_id_no_node_can_have_is_404(
    served: Served, method: str, template: bytes, node_id: bytes
) -> None:
    auth = b"Authorization: Bearer " + TOKEN.encode()
    reply = await send(served.port, request(method, template % node_id, auth))
    assert reply.status == 404
    assert reply.json()["error"].startswith("unknown node ")
    assert served.control.calls == []
