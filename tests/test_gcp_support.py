"""Test support for the GCP provider: a fake Compute Engine API on 127.0.0.1.

No tests here (pytest collects nothing from this module); `test_gcp.py` and
`test_provider_contract.py` import from it.

`FakeCompute` is a small `http.server` in a thread that answers the documented Compute
Engine v1 REST JSON for the calls the provider makes, so the provider is exercised
through google-cloud-compute's own REST transport (``url_scheme="http"``):

* ``POST   /compute/v1/projects/{p}/zones/{z}/instances?requestId=``  -> Operation
* ``GET    /compute/v1/projects/{p}/zones/{z}/instances[/{name}]``  (``filter=`` on labels)
* ``DELETE /compute/v1/projects/{p}/zones/{z}/instances/{name}?requestId=``  -> Operation
* ``GET    /compute/v1/projects/{p}/aggregated/instances?filter=``
* ``GET    /compute/v1/projects/{p}/zones/{z}/operations[/{op}]``, ``POST .../{op}/wait``

It keeps instances in memory, honours `requestId` like GCE (the same id returns the
same operation and does nothing again), answers a second insert of an existing name
with 409, gives every interface an internal IP (`networkIP`) as GCE does, records
every request (method, path, query, JSON body), and injects faults:
HTTP errors (403 QUOTA_EXCEEDED, 429, 500, a lost answer after the work was done),
operation errors (ZONE_RESOURCE_POOL_EXHAUSTED), operations that stay RUNNING for a few
polls, unreachable zones in aggregatedList (an UNREACHABLE warning on the zone's
scope), zones whose requests are held until the test releases them, and Spot
preemptions (instance TERMINATED plus a `compute.instances.preempted` operation).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from google.auth.credentials import AnonymousCredentials

from scheduler.sections.gcp import GcpConfig

PROJECT = "capsched-test"
ZONES = ("us-central1-a", "us-central1-b", "us-east4-a")
HOLD_MAX_S = 10.0  # a held request gives up after this long, so a broken test cannot hang

_PREFIX = f"/compute/v1/projects/{PROJECT}"
_BASE = f"https://www.googleapis.com{_PREFIX}"
_LABEL_RE = re.compile(r'labels\.([a-z0-9_-]+)\s*=\s*"?([^"\s)]*)"?')
_OPTYPE_RE = re.compile(r'operationType\s*=\s*"?([^"\s)]*)"?')


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class Fault:
    """One injected failure, used once."""

    verb: str  # "insert", "delete", "get", "list", "aggregatedList", "wait", "operations"
    zone: str | None  # only in this zone; None = any
    status: int = 0  # HTTP error status; 0 = an operation error instead
    reason: str = ""  # error reason (HTTP: errors[].reason; operation: errors[].code)
    forward: bool = False  # do the work first, then answer with the error (lost answer)


@dataclass
class Received:
    """One request the fake answered."""

    method: str  # HTTP method
    path: str  # URL path
    query: dict[str, str]  # query parameters (first value of each)
    body: dict[str, Any] | None  # JSON body, if any


@dataclass
class FakeCompute:
    """In-memory Compute Engine for one project, served over HTTP on 127.0.0.1."""

    zones: tuple[str, ...] = ZONES
    instances: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    operations: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    request_ids: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> op key
    received: list[Received] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)  # verb -> count
    created: int = 0  # instances ever created (ground truth for the contract)
    op_polls: int = 0  # operations stay RUNNING for this many get/wait calls
    unreachable: set[str] = field(default_factory=set)  # zones aggregatedList cannot reach
    list_lag: bool = False  # list and aggregatedList show nothing (a lagging index)
    faults: list[Fault] = field(default_factory=list)
    held: dict[str, threading.Event] = field(default_factory=dict)  # zone -> release
    lock: threading.RLock = field(default_factory=threading.RLock)
    url: str = ""
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1000))
    _polls: dict[tuple[str, str], int] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ control

    @contextlib.contextmanager
    def serve(self) -> Iterator[FakeCompute]:
        """Run the server on a free port of 127.0.0.1 for the block."""
        fake = self

        class Handler(_Handler):
            pass

        Handler.fake = fake
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        thread.start()
        try:
            yield self
        finally:
            for event in self.held.values():
                event.set()
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

    def config(self, owner: str = "test-owner", **overrides: Any) -> GcpConfig:
        """A provider config for this fake: every fake zone, our endpoint, short timeouts."""
        raw: dict[str, Any] = {
            "project": PROJECT,
            "owner": owner,
            "image": "projects/debian-cloud/global/images/family/debian-12",
            "network_tags": ["capsched"],
            "service_account_email": f"nodes@{PROJECT}.iam.gserviceaccount.com",
            "endpoint": self.url,
            "operation_timeout_s": 10.0,
            "call_timeout_s": 5.0,
            "zones": [
                {"name": z, "subnetwork": f"regions/{z.rsplit('-', 1)[0]}/subnetworks/inference"}
                for z in self.zones
            ],
        }
        raw.update(overrides)
        return GcpConfig.model_validate(raw)

    def inject(
        self,
        verb: str,
        reason: str,
        status: int = 0,
        *,
        zone: str | None = None,
        forward: bool = False,
    ) -> None:
        """Fail the next `verb` call (in `zone`): an HTTP error, or an operation error."""
        with self.lock:
            self.faults.append(Fault(verb, zone, status, reason, forward))

    def hold(self, zone: str) -> threading.Event:
        """Hold every request about `zone` until the returned event is set."""
        event = threading.Event()
        self.held[zone] = event
        return event

    def preempt(self, zone: str, name: str) -> None:
        """GCE reclaims a Spot VM: it stops (TERMINATED) and a preempted operation is logged."""
        with self.lock:
            inst = self.instances[(zone, name)]
            inst["status"] = "TERMINATED"
            self._operation(zone, "compute.instances.preempted", name, done=True)

    def ours(self, owner: str) -> list[dict[str, Any]]:
        """Instances carrying `owner`'s label, sorted by name."""
        with self.lock:
            found = [
                i for i in self.instances.values() if i["labels"].get("capsched-owner") == owner
            ]
        return sorted(found, key=lambda i: str(i["name"]))

    def bodies(self, verb: str = "POST") -> list[dict[str, Any]]:
        """JSON bodies of the requests with method `verb` received so far."""
        return [r.body for r in self.received if r.method == verb and r.body is not None]

    # ------------------------------------------------------------------ model

    def _fault(self, verb: str, zone: str | None) -> Fault | None:
        with self.lock:
            for i, f in enumerate(self.faults):
                if f.verb == verb and (f.zone is None or f.zone == zone):
                    return self.faults.pop(i)
        return None

    def _operation(
        self,
        zone: str,
        kind: str,
        target: str,
        *,
        done: bool = False,
        error: str = "",
        target_id: str = "",
    ) -> dict[str, Any]:
        n = next(self._ids)
        name = f"operation-{n}-{kind.rsplit('.', 1)[-1]}"
        op: dict[str, Any] = {
            "kind": "compute#operation",
            "id": str(n),
            "name": name,
            "zone": f"{_BASE}/zones/{zone}",
            "operationType": kind,
            "targetLink": f"{_BASE}/zones/{zone}/instances/{target}",
            "targetId": target_id or str(n),
            "status": "DONE" if done or not self.op_polls else "RUNNING",
            "progress": 100 if done or not self.op_polls else 0,
            "insertTime": _now(),
            "selfLink": f"{_BASE}/zones/{zone}/operations/{name}",
        }
        if error:
            op["_error"] = error  # applied when the operation completes
        self.operations[(zone, name)] = op
        self._polls[(zone, name)] = 0 if done else self.op_polls
        if op["status"] == "DONE":
            self._complete(zone, op)
        return op

    def _complete(self, zone: str, op: dict[str, Any]) -> None:
        op["status"], op["progress"], op["endTime"] = "DONE", 100, _now()
        error = op.pop("_error", "")
        if error:
            op["error"] = {"errors": [{"code": error, "message": f"fake: {error} in {zone}"}]}
            op["httpErrorStatusCode"] = 503 if "EXHAUSTED" in error else 403
            op["httpErrorMessage"] = "SERVICE UNAVAILABLE"
            if op["operationType"] == "insert":
                self.instances.pop((zone, _name_of(op)), None)
            return
        inst = self.instances.get((zone, _name_of(op)))
        if op["operationType"] == "insert" and inst is not None:
            inst["status"] = "RUNNING"
        if op["operationType"] == "delete":
            self.instances.pop((zone, _name_of(op)), None)

    def _poll(self, zone: str, name: str) -> dict[str, Any] | None:
        op = self.operations.get((zone, name))
        if op is None:
            return None
        left = self._polls.get((zone, name), 0)
        if op["status"] != "DONE":
            if left <= 1:
                self._complete(zone, op)
            self._polls[(zone, name)] = left - 1
        return op

    def insert(self, zone: str, body: dict[str, Any], rid: str, fault: Fault | None) -> Any:
        if rid and rid in self.request_ids:
            return self.operations[self.request_ids[rid]]  # GCE: same request, same answer
        name = str(body.get("name", ""))
        if (zone, name) in self.instances:
            return _error(409, "alreadyExists", f"The resource '{name}' already exists")
        n = next(self._ids)
        inst = dict(body)
        inst.update(
            kind="compute#instance",
            id=str(n),
            status="PROVISIONING",
            zone=f"{_BASE}/zones/{zone}",
            creationTimestamp=_now(),
            selfLink=f"{_BASE}/zones/{zone}/instances/{name}",
            machineType=f"{_BASE}/{body.get('machineType', '')}",
            labels=dict(body.get("labels") or {}),
            # GCE assigns each interface an internal IP from its subnetwork at insert.
            networkInterfaces=[
                {**nic, "name": f"nic{k}", "networkIP": f"10.128.{n // 256 % 256}.{n % 256}"}
                for k, nic in enumerate(body.get("networkInterfaces") or [{}])
            ],
        )
        self.instances[(zone, name)] = inst
        self.created += 1
        error = fault.reason if fault is not None and not fault.status else ""
        if error:
            self.created -= 1  # GCE rolls a refused insert back
        op = self._operation(zone, "insert", name, error=error, target_id=str(n))
        if rid:
            self.request_ids[rid] = (zone, op["name"])
        return op

    def delete(self, zone: str, name: str, rid: str) -> Any:
        if rid and rid in self.request_ids:
            return self.operations[self.request_ids[rid]]
        inst = self.instances.get((zone, name))
        if inst is None:
            return _error(404, "notFound", f"The resource '{name}' was not found")
        inst["status"] = "STOPPING"
        op = self._operation(zone, "delete", name, target_id=str(inst["id"]))
        if rid:
            self.request_ids[rid] = (zone, op["name"])
        return op

    def matching(self, zone: str | None, flt: str) -> list[dict[str, Any]]:
        wanted = dict(_LABEL_RE.findall(flt))
        if flt and not wanted:
            raise ValueError(f"fake: unsupported filter {flt!r}")
        if self.list_lag:
            return []
        return [
            i
            for (z, _), i in sorted(self.instances.items())
            if (zone is None or z == zone)
            and all(i["labels"].get(k) == v for k, v in wanted.items())
        ]


def _name_of(op: dict[str, Any]) -> str:
    return str(op["targetLink"]).rsplit("/", 1)[-1]


def _error(status: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
    domain = "usageLimits" if reason in ("quotaExceeded", "rateLimitExceeded") else "global"
    return status, {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": domain, "reason": reason}],
        }
    }


_HTTP_REASONS = {
    403: "quotaExceeded",
    404: "notFound",
    429: "rateLimitExceeded",
    500: "backendError",
    503: "backendError",
}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeCompute
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stalls

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _send(self, status: int, doc: Any) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        fake = self.fake
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        path = url.path
        if not path.startswith(_PREFIX + "/"):
            self._send(*_error(404, "notFound", f"fake: unknown path {path}"))
            return
        parts = path[len(_PREFIX) + 1 :].split("/")
        zone = parts[1] if parts[0] == "zones" and len(parts) > 1 else None
        verb = _verb(self.command, parts)
        with fake.lock:
            fake.received.append(Received(self.command, path, query, body))
            fake.calls[verb] += 1
        held = fake.held.get(zone) if zone else None
        if held is not None:
            held.wait(HOLD_MAX_S)
        if zone is not None and zone not in fake.zones:
            self._send(*_error(404, "notFound", f"fake: unknown zone {zone}"))
            return
        fault = fake._fault(verb, zone)
        if fault is not None and fault.status and not fault.forward:
            reason = fault.reason or _HTTP_REASONS.get(fault.status, "backendError")
            self._send(*_error(fault.status, reason, f"fake: injected {reason}"))
            return
        with fake.lock:
            try:
                answer = self._dispatch(verb, zone, parts, query, body, fault)
            except ValueError as exc:
                answer = _error(400, "invalid", str(exc))
        if fault is not None and fault.status and fault.forward:
            reason = fault.reason or _HTTP_REASONS.get(fault.status, "backendError")
            self._send(*_error(fault.status, reason, f"fake: injected {reason} (lost answer)"))
            return
        if isinstance(answer, tuple):
            self._send(*answer)
        else:
            self._send(200, answer)

    def _dispatch(
        self,
        verb: str,
        zone: str | None,
        parts: list[str],
        query: dict[str, str],
        body: dict[str, Any] | None,
        fault: Fault | None,
    ) -> Any:
        fake = self.fake
        rid = query.get("requestId", "")
        if verb == "aggregatedList":
            items: dict[str, Any] = {}
            matched = fake.matching(None, query.get("filter", ""))
            for z in fake.zones:
                if z in fake.unreachable:
                    # The documented shape of a scope the aggregated list could not read.
                    items[f"zones/{z}"] = {
                        "warning": {
                            "code": "UNREACHABLE",
                            "message": f"fake: the zone {z} is unreachable",
                            "data": [{"key": "scope", "value": f"zones/{z}"}],
                        }
                    }
                    continue
                mine = [i for i in matched if i["zone"].endswith(f"/zones/{z}")]
                items[f"zones/{z}"] = (
                    {"instances": mine}
                    if mine
                    else {"warning": {"code": "NO_RESULTS_ON_PAGE", "message": "none"}}
                )
            doc: dict[str, Any] = {
                "kind": "compute#instanceAggregatedList",
                "id": f"projects/{PROJECT}/aggregated/instances",
                "items": items,
                "selfLink": f"{_BASE}/aggregated/instances",
            }
            return doc
        assert zone is not None
        if verb == "insert":
            return fake.insert(zone, body or {}, rid, fault)
        if verb == "list":
            return {
                "kind": "compute#instanceList",
                "items": fake.matching(zone, query.get("filter", "")),
                "selfLink": f"{_BASE}/zones/{zone}/instances",
            }
        if verb == "get":
            inst = fake.instances.get((zone, parts[3]))
            if inst is None:
                return _error(404, "notFound", f"The resource '{parts[3]}' was not found")
            return inst
        if verb == "delete":
            return fake.delete(zone, parts[3], rid)
        if verb in ("wait", "operation"):
            op = fake._poll(zone, parts[3])
            if op is None:
                return _error(404, "notFound", f"The resource '{parts[3]}' was not found")
            return op
        if verb == "operations":
            m = _OPTYPE_RE.search(query.get("filter", ""))
            kind = m.group(1) if m else None
            ops = [
                op
                for (z, _), op in sorted(fake.operations.items())
                if z == zone and (kind is None or op["operationType"] == kind)
            ]
            return {"kind": "compute#operationList", "items": ops}
        return _error(404, "notFound", f"fake: unknown call {verb}")


def _verb(method: str, parts: list[str]) -> str:
    if parts[0] == "aggregated":
        return "aggregatedList"
    if len(parts) >= 3 and parts[2] == "instances":
        if len(parts) == 3:
            return "insert" if method == "POST" else "list"
        return "delete" if method == "DELETE" else "get"
    if len(parts) >= 3 and parts[2] == "operations":
        if len(parts) == 3:
            return "operations"
        return "wait" if parts[-1] == "wait" else "operation"
    return "unknown"


def credentials() -> AnonymousCredentials:
    """Credentials for the fake: anonymous (no token, nothing to leak)."""
    return AnonymousCredentials()  # type: ignore[no-untyped-call]
