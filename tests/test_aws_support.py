"""Test support for the AWS provider: one moto server per session, an account per test.

No tests here (pytest collects nothing from this module); `test_aws.py` and
`test_provider_contract.py` import from it. Everything goes over HTTP:

* `moto_endpoint()` starts moto's threaded server on 127.0.0.1 (a free port) once per
  process; the `aws_env` fixture puts fake credentials in the environment and keeps
  real ones (shared files, instance metadata) out of reach.
* `MotoAccount.create(url)` makes, in each test region, a VPC with two subnets in two
  zones, a security group and an SQS queue; instances are told apart by a fresh owner
  tag per test, so tests share the server without seeing each other.
* `FaultProxy` sits between the provider and moto and answers chosen API actions with
  an AWS error (optionally after passing the request on, to lose the response of a
  call that did happen), and counts calls per action.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import boto3
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from moto.server import ThreadedMotoServer

from scheduler.sections.aws import AwsConfig

REGIONS = ("us-east-1", "us-west-2")
ACCESS_KEY = "AKIDCAPSCHEDTEST0001"
SECRET_KEY = "capsched-test-secret-never-logged"  # fake, for the log check

_lock = threading.Lock()
_server: ThreadedMotoServer | None = None
_url: str | None = None


def moto_endpoint() -> str:
    """URL of the session's moto server, started on first use (once per process)."""
    global _server, _url
    with _lock:
        if _url is None:
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()  # returns once the socket is bound and serving
            host, port = server.get_host_and_port()
            _server, _url = server, f"http://{host}:{port}"
        return _url


def fake_credentials_env() -> dict[str, str]:
    """Environment for fake credentials, with every other credential source disabled."""
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGIONS[0],
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@pytest.fixture(scope="session")
def aws_env() -> Iterator[str]:
    """Fake credentials in the environment for the session; yields the moto URL."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in fake_credentials_env().items():
            mp.setenv(k, v)
        mp.delenv("AWS_SESSION_TOKEN", raising=False)
        mp.delenv("AWS_PROFILE", raising=False)
        yield moto_endpoint()


_boto_clients: dict[tuple[str, str, str], Any] = {}


def boto(service: str, region: str, url: str) -> Any:
    """A boto3 client on moto (the test's own view), made once per service and region."""
    key = (service, region, url)
    if key not in _boto_clients:
        _boto_clients[key] = boto3.client(service, region_name=region, endpoint_url=url)
    return _boto_clients[key]


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@dataclass
class RegionSetup:
    """What a test account has in one region."""

    subnets: dict[str, str]  # zone -> subnet id
    security_group: str  # group id
    queue_url: str  # interruption queue


@dataclass
class MotoAccount:
    """A per-test slice of the moto server: its own owner tag, network and queues."""

    url: str  # moto endpoint
    owner: str  # capsched-owner value of this test
    regions: dict[str, RegionSetup]  # per region

    @classmethod
    def create(cls, url: str) -> MotoAccount:
        """Make a VPC, two subnets, a security group and a queue in each test region."""
        owner = f"t-{uuid.uuid4().hex[:12]}"
        regions: dict[str, RegionSetup] = {}
        for region in REGIONS:
            ec2 = boto("ec2", region, url)
            vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
            subnets = {}
            for i, zone in enumerate((f"{region}a", f"{region}b")):
                sub = ec2.create_subnet(
                    VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=zone
                )
                subnets[zone] = sub["Subnet"]["SubnetId"]
            sg = ec2.create_security_group(GroupName=owner, Description="capsched test", VpcId=vpc)
            sqs = boto("sqs", region, url)
            queue = sqs.create_queue(QueueName=f"{owner}-{region}")["QueueUrl"]
            regions[region] = RegionSetup(subnets, sg["GroupId"], queue)
        return cls(url, owner, regions)

    def config(self, endpoints: dict[str, str] | None = None, **overrides: Any) -> AwsConfig:
        """An `AwsConfig` for this account; `endpoints` overrides a region's endpoint."""
        regions = [
            {
                "name": name,
                "image_id": "ami-12c6146b",
                "subnets": setup.subnets,
                "security_group_ids": [setup.security_group],
                "sqs_queue_url": setup.queue_url,
                "endpoint_url": (endpoints or {}).get(name, ""),
            }
            for name, setup in self.regions.items()
        ]
        doc: dict[str, Any] = {
            "owner": self.owner,
            "regions": regions,
            "endpoint_url": self.url,
            "max_attempts": 1,
            "connect_timeout_s": 3.0,  # a loaded 2-core CI box can take over 1 s to accept
            "read_timeout_s": 4.0,
            "call_timeout_s": 5.0,
        }
        doc.update(overrides)
        return AwsConfig.model_validate(doc)

    def ec2(self, region: str) -> Any:
        """A boto3 EC2 client on moto (the test's own view, not the provider's)."""
        return boto("ec2", region, self.url)

    def instances(self, region: str, node_id: str | None = None) -> list[dict[str, Any]]:
        """Every instance moto holds with this test's owner tag (terminated included)."""
        filters = [{"Name": "tag:capsched-owner", "Values": [self.owner]}]
        if node_id is not None:
            filters.append({"Name": "tag:capsched-node", "Values": [node_id]})
        pages = self.ec2(region).describe_instances(Filters=filters)["Reservations"]
        return [i for r in pages for i in r["Instances"]]

    def send_event(
        self, region: str, detail_type: str, instance_id: str, time: str, **detail: str
    ) -> str:
        """Put an EventBridge-shaped EC2 event into the region's queue; returns its id."""
        event_id = str(uuid.uuid4())
        body = {
            "version": "0",
            "id": event_id,
            "detail-type": detail_type,
            "source": "aws.ec2",
            "account": "123456789012",
            "time": time,
            "region": region,
            "resources": [f"arn:aws:ec2:{region}:123456789012:instance/{instance_id}"],
            "detail": {"instance-id": instance_id, **detail},
        }
        self.send_raw(region, json.dumps(body))
        return event_id

    def send_raw(self, region: str, body: str) -> None:
        """Put any message body into the region's queue."""
        sqs = boto("sqs", region, self.url)
        sqs.send_message(QueueUrl=self.regions[region].queue_url, MessageBody=body)

    def queue_depth(self, region: str) -> int:
        """Messages still in the region's queue, visible or in flight."""
        sqs = boto("sqs", region, self.url)
        attrs = sqs.get_queue_attributes(
            QueueUrl=self.regions[region].queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(
            attrs["ApproximateNumberOfMessagesNotVisible"]
        )


@dataclass
class Fault:
    """One injected answer for the next call of `action`."""

    action: str  # API action, e.g. "RunInstances"
    code: str  # AWS error code
    status: int  # HTTP status
    forward: bool = False  # pass the request to moto first, then answer with the error


EC2_ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
    "<Message>injected by the test</Message></Error></Errors>"
    "<RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>"
)
_HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}


@dataclass
class FaultProxy:
    """An HTTP proxy in front of moto that injects AWS errors into chosen EC2 calls."""

    upstream: str  # moto URL
    faults: list[Fault] = field(default_factory=list)  # consumed in order, first match wins
    calls: Counter[str] = field(default_factory=Counter)  # requests seen per action
    url: str = ""  # set once serving

    def inject(self, action: str, code: str, status: int = 400, *, forward: bool = False) -> None:
        """Answer the next `action` call with error `code` (after moto ran it if `forward`)."""
        self.faults.append(Fault(action, code, status, forward))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        action = _action(request, body)
        self.calls[action] += 1
        fault = next((f for f in self.faults if f.action == action), None)
        if fault is not None:
            self.faults.remove(fault)
            if fault.forward:
                await self._forward(request, body)
            return web.Response(
                status=fault.status, text=EC2_ERROR.format(code=fault.code), content_type="text/xml"
            )
        status, headers, payload = await self._forward(request, body)
        return web.Response(status=status, body=payload, headers=headers)

    async def _forward(
        self, request: web.Request, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method, self.upstream + request.path_qs, headers=headers, data=body
            ) as resp,
        ):
            payload = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP_HEADERS}
            return resp.status, out, payload

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[FaultProxy]:
        """Serve on 127.0.0.1 (a free port) inside the `async with`."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        self.url = str(server.make_url("")).rstrip("/")
        try:
            yield self
        finally:
            await server.close()


def _action(request: web.Request, body: bytes) -> str:
    target = request.headers.get("X-Amz-Target", "")
    if target:  # JSON protocol (SQS): "AmazonSQS.ReceiveMessage"
        return target.rsplit(".", 1)[-1]
    form = parse_qs(body.decode("utf-8", "replace"))
    return form.get("Action", [""])[0]


async def blackhole() -> tuple[asyncio.Server, str]:
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(65536):
                pass
        finally:
            writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"
