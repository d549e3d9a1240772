"""Fuzzing the control API of a running `capsched daemon` (a subprocess on the embedded
simulated cloud, logging at debug level): hypothesis writes raw HTTP requests with any
method, path (route words, huge and negative ids, the token, percent-encoded and raw
bytes), query, headers (malformed, oversize and real Authorization headers among them)
and body. No answer may be a 5xx, every error is JSON, and once the daemon has stopped
cleanly no line of its log holds the token or a traceback.

The examples are bounded (derandomized in CI, see conftest.py) so the test takes seconds;
`--hypothesis-profile=explore` searches further."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = 250
WAIT_S = 120.0  # upper bound on waiting for the daemon's address line; never slept
CONFIG_TEXT = """
[scheduler]
tick_interval_s = 300
state_db = "{db}"
[daemon]
api_port = 0
approval_mode = "manual"
[guards]
min_node_age_s = 0
[[models]]
name = "llama-3.1-8b"
[[models]]
name = "llama-3.1-70b"
[[regions]]
name = "us-east"
location = "us-east-1"
[clouds.aws]
regions = ["us-east-1", "us-east-2"]
[clouds.gcp]
enabled = false
"""
# The routes, with {} where an id goes, so most fuzzed requests reach a handler.
ROUTES = [
    "/healthz", "/metrics", "/v1/status", "/v1/forecast", "/v1/nodes", "/v1/nodes/{}",
    "/v1/nodes/{}/events", "/v1/events", "/v1/journal", "/v1/plans", "/v1/demand",
    "/v1/plans/{}", "/v1/plans/{}/approve", "/v1/plans/{}/reject", "/v1/nodes/{}/drain",
    "/v1/pause", "/v1/resume", "/v1/reload",
]  # fmt: skip
# Other path words, for paths off the routes.
WORDS = ["", "v1", "nodes", "plans", "cs-00000001", "cs-00000002", "1", "0", "..", "%2e%2e"]
QUERY_NAMES = ["limit", "after", "since_s", "status", "token", "access_token"]
HEADER_NAMES = ["Authorization", "authorization", "Accept", "Content-Type", "Cookie", "X-Token"]
# Headers the test sets itself (framing): fuzzing them would only make a request the
# server rightly waits on for more bytes.
FRAMING = {"content-length", "transfer-encoding", "host", "connection", "expect"}
TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


class RunningDaemon:
    """`capsched -v daemon` in a subprocess; a thread keeps every log line it writes."""

    def __init__(self, workdir: Path) -> None:
        config = workdir / "capsched.toml"
        config.write_text(CONFIG_TEXT.format(db=workdir / "state.db"))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "capsched.cli", "-v", "daemon", "--config", str(config)],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            errors="replace",
            cwd=workdir,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self._listening = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._listening.wait(WAIT_S):
            self.stop()
            raise AssertionError(f"daemon did not listen: {''.join(self.lines)[-2000:]}")
        line = next(line for line in self.lines if "api_listening address=" in line)
        address = line.split("address=")[1].split()[0]  # http://127.0.0.1:PORT
        self.port = int(address.rsplit(":", 1)[1])
        self.token = (workdir / "capsched.token").read_text().strip()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if "api_listening address=" in line:
                self._listening.set()
        self._listening.set()  # exited: stop waiting

    def stop(self) -> int:
        """SIGTERM, wait for the exit code, and keep the rest of the log."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self._reader.join(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code


def send(port: int, raw: bytes) -> tuple[int, dict[str, str]]:
    """Send `raw` and read the answer to the end: its status and headers."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    top = data.partition(b"\r\n\r\n")[0].decode("latin-1")
    status_line, *header_lines = top.split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


def requests(token: str) -> st.SearchStrategy[bytes]:
    """Raw requests, with Content-Length and Connection: close set right."""
    tok = token.encode()
    digits = st.integers(1, 5000).map(lambda n: ("9" * n).encode())
    numbers = st.integers(-(10**30), 10**30).map(lambda i: str(i).encode())
    segment = st.one_of(
        st.sampled_from(["cs-00000001", "cs-00000002", "1", "2"]).map(str.encode),
        numbers,
        digits,
        st.just(tok),
        st.text(max_size=20).map(lambda t: quote(t, safe="").encode()),
        st.binary(max_size=12).map(lambda b: bytes(c for c in b if c > 0x20 and c != 0x7F)),
    )
    on_route = st.tuples(st.sampled_from(ROUTES), segment).map(
        lambda r: r[0].encode().replace(b"{}", r[1])
    )
    off_route = st.lists(st.one_of(st.sampled_from(WORDS).map(str.encode), segment), max_size=5)
    path = st.one_of(on_route, on_route, on_route, off_route.map(lambda s: b"/" + b"/".join(s)))
    text = st.text(max_size=20).map(quote).map(str.encode)
    value = st.one_of(numbers, digits, st.just(tok), text)
    name = st.one_of(st.sampled_from(QUERY_NAMES), st.text(max_size=8).map(quote)).map(str.encode)
    query = st.lists(st.tuples(name, value), max_size=3).map(
        lambda pairs: (b"?" + b"&".join(k + b"=" + v for k, v in pairs)) if pairs else b""
    )
    printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
    header_value = st.one_of(
        st.just(b"Bearer " + tok),
        st.just(b"Bearer " + tok),
        st.just(b"Bearer " + tok + b"A" * 9000),
        printable.map(lambda t: b"Bearer " + t.encode()),
        printable.map(str.encode),
        st.binary(max_size=40).map(lambda b: b"Bearer " + b),  # non-ASCII, controls
        st.tuples(st.binary(max_size=8), st.binary(max_size=8)).map(lambda p: p[0] + tok + p[1]),
    ).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
    header_name = st.one_of(
        st.sampled_from(HEADER_NAMES), st.text(TOKEN_CHARS, min_size=1, max_size=12)
    ).filter(lambda n: n.lower() not in FRAMING)
    headers = st.lists(st.tuples(header_name.map(str.encode), header_value), max_size=2)
    known = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
    method = st.one_of(
        st.sampled_from(["GET", "POST"]),
        st.sampled_from(["GET", "POST"]),
        known,
        st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=8),  # not HTTP: a 400
    )
    body = st.one_of(st.just(b""), st.binary(max_size=200), st.just(b'{"plan_id": 1}'))

    def build(
        method: str, path: bytes, query: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> bytes:
        lines = [method.encode() + b" " + path + query + b" HTTP/1.1", b"Host: 127.0.0.1"]
        lines += [k + b": " + v for k, v in headers]
        lines += [b"Connection: close", f"Content-Length: {len(body)}".encode()]
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    return st.builds(build, method, path, query, headers, body)


def test_fuzzed_requests_get_no_5xx_and_leave_no_token_or_traceback_in_the_log(
    tmp_path: Path,
) -> None:
    daemon = RunningDaemon(tmp_path)
    answered: dict[int, int] = {}  # status -> count
    try:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(requests(daemon.token))
        def fuzz(raw: bytes) -> None:
            status, headers = send(daemon.port, raw)
            answered[status] = answered.get(status, 0) + 1
            assert status < 500, raw[:300]
            if status >= 400:
                assert headers.get("content-type", "").startswith("application/json"), raw[:300]

        fuzz()
    finally:
        code = daemon.stop()
    assert code == 0
    # The requests got past the parser to the handlers, and were refused in several ways.
    assert {200, 400, 401, 404} <= set(answered), answered
    assert sum(answered.values()) >= EXAMPLES
    log = daemon.lines
    assert any("api_access" in line for line in log)
    leaked = [line for line in log if daemon.token in line]
    assert not leaked, leaked[:3]
    tracebacks = [line for line in log if "Traceback" in line]
    assert not tracebacks, "".join(log)[-3000:]
