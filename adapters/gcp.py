"""Google Compute Engine as a `Provider` (google-cloud-compute), across several zones at once.

What each call does (contract in `scheduler.ports.provider`):

* **launch**: first looks in the pool's zone for an instance labelled
  `capsched-node=<node id>` (instances.list filtered by our owner and node labels)
  and returns it: GCE's `requestId` is only honoured for a while, so our own lookup is
  what makes a retried launch safe. Otherwise instances.insert, on-demand or Spot
  (`scheduling.provisioningModel=SPOT`, `instanceTerminationAction=DELETE`), with the
  machine type, guest accelerators for machine types that need them attached (a2, a3
  and g2 bundle their GPUs; `GcpConfig.accelerators` names them for N1), the boot
  image and the zone's subnetwork, then waits on the zone operation (zoneOperations.wait,
  bounded by `operation_timeout_s`) and maps its error. Three things make a retry
  after a lost answer create nothing new: the `requestId` is a UUID5 of the node id
  (GCE returns the first request's operation), the instance name is derived from the
  owner and node id (a second insert gets 409 "already exists", and we return the
  existing instance), and the label lookup above. A zone-less GCP pool launches in
  the region's configured zones, starting at one picked from the node id and moving
  on only on a capacity error.
* **list_instances**: one instances.aggregatedList filtered by the `capsched-owner`
  label; only configured zones count. **If a configured zone is unreachable** (its
  scoped list carries an UNREACHABLE warning, or it is named in `unreachables`),
  **the call raises `Transient`**: a partial listing would read as
  "those nodes are gone" to the reconciler, which would relaunch them. Spot instances
  that stop without our asking (status STOPPING/TERMINATED/SUSPENDED) and instances
  named by a `compute.instances.preempted` operation are listed as `PREEMPTED`.
* **terminate**: instances.delete of the name derived from the node id in the zone
  where we last saw it (else in every configured zone, concurrently); 404 is success.
  The delete operation is not waited on: the listing shows the instance as
  `TERMINATING` until it is gone. A zone that fails raises `Transient` after the other
  zones were tried (delete is idempotent, the retry is safe).
* **offerings**: the catalog's GCP offerings in the configured zones (no live prices:
  Compute Engine has no spot price API; the catalog's prices are GCP's list prices).
* **interruption_notices**: lists `compute.instances.preempted` operations in every
  configured zone concurrently; each one about an instance of ours becomes a notice
  with deadline = now (GCP gives 30 s from the preemption and a poll sees it late, so
  the only safe reading is "already going"). Each operation is returned once. A
  failing zone is logged and skipped.

Every call runs the synchronous client in a thread pool of our own (not
`asyncio.to_thread`'s shared default pool: a hanging zone would otherwise hold threads
the rest of the process needs), under a per-zone semaphore, so one slow or failing
zone never stalls the others; every HTTP call has a timeout and no library retries
(the scheduler retries on its next tick).

Labels: GCP label values are lowercase ``[a-z0-9_-]``, at most 63 characters.
`label_value` lowercases, replaces other characters with "-" and, when it changed or
shortened the value, appends 8 hex digits of a hash so distinct ids stay distinct.
The exact node id, model and pool key are also kept in instance metadata
(`capsched-node`, `capsched-model`, `capsched-pool`) and read back from there.

Errors: `error_class` maps Compute error reasons (HTTP errors and operation errors) to
the typed errors; transport errors and timeouts are `Transient`. Credentials come from
Application Default Credentials unless given; requests, bodies and credentials are
never logged, only our own ids, zones and GCE error reasons.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import logging
import math
import re
import threading
import time
import uuid
import zlib
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

import requests
from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.auth import credentials as ga_credentials
from google.auth import exceptions as auth_exc
from google.cloud import compute_v1
from google.cloud.compute_v1.services.instances.transports.rest import InstancesRestTransport
from google.cloud.compute_v1.services.zone_operations.transports.rest import (
    ZoneOperationsRestTransport,
)

from adapters.resource import AsyncResource
from scheduler.domain import Cloud, Market, Offering, Pool
from scheduler.ports.provider import (
    Instance,
    InstanceState,
    InsufficientCapacity,
    InterruptionNotice,
    LaunchRequest,
    NotFound,
    ProviderError,
    QuotaExceeded,
    Transient,
)
from scheduler.sections.gcp import GcpConfig, GcpZoneConfig, zone_region

log = logging.getLogger(__name__)

T = TypeVar("T")

OWNER_LABEL = "capsched-owner"  # which capsched deployment owns the instance
NODE_LABEL = "capsched-node"  # our node id, sanitised (the lookup key)
MODEL_LABEL = "capsched-model"  # model the node serves, sanitised
NODE_META = "capsched-node"  # metadata item: the exact node id
MODEL_META = "capsched-model"  # metadata item: the exact model name
POOL_META = "capsched-pool"  # metadata item: `Pool.key` the node was launched in

PREEMPTED_OP = "compute.instances.preempted"
# Statuses a Spot VM passes through when GCE reclaims it (with DELETE it then vanishes).
STOPPED_STATUSES = frozenset({"STOPPING", "STOPPED", "TERMINATED", "SUSPENDING", "SUSPENDED"})
SEEN_OPS = 4096  # preemption operation ids remembered to return each notice once
WAIT_SLICE_S = 120.0  # zoneOperations.wait returns after at most ~2 min; ask in slices
# Namespace of our requestIds (uuid5 of the owner and node id): fixed forever, because a
# retry after a restart must send the same id.
REQUEST_NS = uuid.UUID("5b0c7c1e-3f1d-5c7a-9a51-6a1c2d7e9f00")
_DEFAULT_ENDPOINT = "compute.googleapis.com"

# Compute error reasons -> typed errors. HTTP errors carry camelCase reasons
# ("quotaExceeded"), operation errors UPPER_SNAKE codes; both are normalised to the
# latter. Reasons are matched before the HTTP status: a quota error is a 403.
CAPACITY_CODES = frozenset(
    {
        "ZONE_RESOURCE_POOL_EXHAUSTED",
        "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
        "RESOURCE_EXHAUSTED",  # as an operation error: no capacity (as HTTP 429: throttling)
        "RESOURCE_POOL_EXHAUSTED",
        "UNSUPPORTED_OPERATION",  # e.g. this machine type is not sold in this zone
        "STOCKOUT",
    }
)
QUOTA_CODES = frozenset(
    {
        "QUOTA_EXCEEDED",
        "LIMIT_EXCEEDED",
        # The project cannot launch here at all (permissions, billing, API disabled): the
        # reaction a quota gets (leave the pool alone for a while) is the right one.
        "FORBIDDEN",
        "PERMISSION_DENIED",
        "ACCESS_NOT_CONFIGURED",
        "ACCOUNT_DISABLED",
        "BILLING_DISABLED",
        "INSUFFICIENT_PERMISSIONS",
    }
)
TRANSIENT_CODES = frozenset(
    {
        "RATE_LIMIT_EXCEEDED",
        "USER_RATE_LIMIT_EXCEEDED",
        "BACKEND_ERROR",
        "INTERNAL_ERROR",
        "SERVICE_UNAVAILABLE",
        "TIMEOUT",
        "DEADLINE_EXCEEDED",
        "RESOURCE_NOT_READY",
        "RESOURCE_OPERATION_RATE_EXCEEDED",
    }
)
NOT_FOUND_CODES = frozenset({"NOT_FOUND", "RESOURCE_NOT_FOUND"})
EXISTS_CODES = frozenset({"ALREADY_EXISTS", "RESOURCE_ALREADY_EXISTS", "CONFLICT"})

_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_LABEL_BAD_RE = re.compile(r"[^a-z0-9_-]")
_NAME_BAD_RE = re.compile(r"[^a-z0-9-]+")


class _AlreadyExists(ProviderError):
    """insert answered 409: an instance with our deterministic name is there already."""


def normalise_code(code: str) -> str:
    """A Compute error reason as UPPER_SNAKE: "quotaExceeded" -> "QUOTA_EXCEEDED"."""
    if any(c.islower() for c in code):
        code = _CAMEL_RE.sub("_", code)
    return code.upper()


def error_class(codes: Iterable[str], http_status: int) -> type[ProviderError]:
    """The typed error for Compute error `codes` (reasons) answered with `http_status`.

    Unknown codes are `Transient`, as on AWS: the message keeps the code, and the
    scheduler's reaction to a transient error (retry, then let the launch lapse) is
    safe for anything we did not foresee.
    """
    found = {normalise_code(c) for c in codes if c}
    if http_status == 429:
        return Transient  # "RESOURCE_EXHAUSTED" over 429 is throttling, not capacity
    if found & CAPACITY_CODES:
        return InsufficientCapacity
    if found & QUOTA_CODES:
        return QuotaExceeded
    if found & TRANSIENT_CODES:
        return Transient
    if found & NOT_FOUND_CODES or http_status == 404:
        return NotFound
    if found & EXISTS_CODES or http_status == 409:
        return _AlreadyExists
    if http_status == 403:
        return QuotaExceeded
    return Transient


def label_value(raw: str) -> str:
    """`raw` as a GCP label value: lowercase ``[a-z0-9_-]``, at most 63 characters.

    A value that had to change gets 8 hex digits of a hash of the original appended,
    so two ids that sanitise alike ("Node.1" and "node-1") keep distinct labels.
    """
    clean = _LABEL_BAD_RE.sub("-", raw.lower())
    if clean == raw and len(clean) <= 63:
        return clean
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return f"{clean[:54]}-{digest}"


def instance_name(owner: str, node_id: str) -> str:
    """The GCE instance name for our `node_id`: ``[a-z]([-a-z0-9]{0,61}[a-z0-9])?``.

    "cs-" + a readable slug of the node id + 8 hex digits of a hash of owner and node
    id: deterministic (a retried insert collides with the first one instead of making
    a second instance) and distinct per owner (two deployments sharing a project never
    touch each other's instances by name).
    """
    slug = _NAME_BAD_RE.sub("-", node_id.lower()).strip("-")[:50].strip("-")
    digest = hashlib.sha256(f"{owner}/{node_id}".encode()).hexdigest()[:8]
    return f"cs-{slug}-{digest}" if slug else f"cs-{digest}"


def request_id(owner: str, node_id: str, *, zone: str | None = None) -> str:
    """The GCE `requestId` (a UUID5) inserting our `node_id` (in a fall-back `zone`).

    GCE answers a repeated requestId with the first request's operation, even a failed
    one; that is safe because a refused launch marks the node failed and the scheduler
    never launches that node id again.
    """
    key = f"insert/{owner}/{node_id}" + ("" if zone is None else f"@{zone}")
    return str(uuid.uuid5(REQUEST_NS, key))


def zone_order(zones: Iterable[str], node_id: str) -> list[str]:
    """Zones to try for `node_id`: sorted, rotated to start at one picked by the node id."""
    ordered = sorted(zones)
    if not ordered:
        return []
    k = zlib.crc32(node_id.encode()) % len(ordered)
    return ordered[k:] + ordered[:k]


def _last_segment(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _timestamp(raw: str) -> float:
    if not raw:
        return math.nan
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return math.nan


def _metadata(raw: compute_v1.Instance) -> dict[str, str]:
    return {str(i.key): str(i.value) for i in raw.metadata.items}


def _address(raw: compute_v1.Instance) -> str | None:
    """The first interface's internal IP (the drainer reaches nodes inside the VPC), else
    its IPv6 address (IPv6-only subnets); None before GCE has assigned one."""
    for nic in raw.network_interfaces[:1]:
        for value in (nic.network_i_p, nic.ipv6_address):
            if value:
                return str(value)
    return None


def _is_spot(raw: compute_v1.Instance) -> bool:
    s = raw.scheduling
    return s.provisioning_model == "SPOT" or bool(s.preemptible)


def _pool(zone: str, raw: compute_v1.Instance, meta: Mapping[str, str]) -> Pool:
    parts = meta.get(POOL_META, "").split("/")
    if len(parts) == 4 and parts[0] == Cloud.GCP and parts[3] in tuple(Market):
        where = parts[1]
        region = zone_region(zone)
        return Pool(Cloud.GCP, region, "" if where == region else where, parts[2], Market(parts[3]))
    market = Market.SPOT if _is_spot(raw) else Market.ON_DEMAND
    machine = _last_segment(raw.machine_type)
    return Pool(Cloud.GCP, zone_region(zone), zone, machine, market)


def _typed_from_call_error(exc: gexc.GoogleAPICallError) -> tuple[type[ProviderError], str]:
    codes: list[str] = []
    for e in exc.errors or ():
        if isinstance(e, Mapping):
            codes.append(str(e.get("reason", "")))
    if exc.reason:
        codes.append(str(exc.reason))
    status = int(exc.code or 0)
    return error_class(codes, status), ",".join(c for c in codes if c) or f"HTTP {status}"


class GcpProvider(AsyncResource):
    """Compute Engine in the configured zones as a `scheduler.ports.provider.Provider`.

    `offerings` is the catalog's list (every cloud; only GCP pools in configured zones
    are used). `credentials` default to Application Default Credentials. Use as
    ``async with GcpProvider(...) as p:`` or call `close()`.
    """

    def __init__(
        self,
        config: GcpConfig,
        offerings: Sequence[Offering],
        *,
        credentials: ga_credentials.Credentials | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cfg = config
        self._zones: dict[str, GcpZoneConfig] = {z.name: z for z in config.zones}
        self._catalog = [
            o
            for o in offerings
            if o.pool.cloud is Cloud.GCP
            and (
                o.pool.zone in self._zones
                or (not o.pool.zone and any(z.region == o.pool.region for z in config.zones))
            )
        ]
        self._clock = clock  # notice deadlines only
        # Created here, not lazily: without Application Default Credentials this fails at
        # start-up with google.auth's own message instead of on the first tick.
        endpoint = config.endpoint or _DEFAULT_ENDPOINT
        scheme = "http" if endpoint.startswith("http://") else "https"
        options = ClientOptions(api_endpoint=endpoint)
        self._instances = compute_v1.InstancesClient(
            credentials=credentials,
            client_options=options,
            transport=functools.partial(InstancesRestTransport, url_scheme=scheme),
        )
        self._operations = compute_v1.ZoneOperationsClient(
            credentials=credentials,
            client_options=options,
            transport=functools.partial(ZoneOperationsRestTransport, url_scheme=scheme),
        )
        workers = len(self._zones) * config.max_calls_per_zone + 2
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="capsched-gcp")
        self._sems: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(config.max_calls_per_zone)
        )
        self._closed = threading.Event()
        self._known: dict[str, Instance] = {}  # node id -> last seen instance of ours
        self._by_name: dict[tuple[str, str], str] = {}  # (zone, instance name) -> node id
        self._deleting: set[str] = set()  # node ids we asked GCE to delete
        self._preempted: set[str] = set()  # node ids named by a preemption operation
        self._seen: OrderedDict[str, None] = OrderedDict()  # preemption op ids returned

    # ------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        """Close the HTTP sessions and the thread pool (calls in flight are not awaited)."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._instances.transport.close()  # type: ignore[no-untyped-call]
        self._operations.transport.close()  # type: ignore[no-untyped-call]
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ plumbing

    async def _call(
        self,
        zone_: str,
        op: str,
        fn: Callable[..., T],
        /,
        *,
        pool: Pool | None = None,
        timeout_s: float | None = None,
        **kwargs: Any,
    ) -> T:
        """One Compute call in `zone` ("" = global), bounded in time, its failure typed."""
        timeout = timeout_s or self._cfg.call_timeout_s
        call = functools.partial(fn, retry=None, timeout=timeout, **kwargs)
        where = zone_ or "global"
        try:
            async with self._sems[where]:
                async with asyncio.timeout(timeout + 5.0):
                    loop = asyncio.get_running_loop()
                    ctx = contextvars.copy_context()
                    return await loop.run_in_executor(self._executor, ctx.run, call)
        except gexc.GoogleAPICallError as exc:
            cls, codes = _typed_from_call_error(exc)
            log.info(
                "gcp_error zone=%s op=%s codes=%s status=%s typed=%s",
                where, op, codes, exc.code, cls.__name__,
            )  # fmt: skip
            raise cls(f"{where} {op}: {codes}: {exc.message}", pool=pool) from None
        except TimeoutError:
            raise Transient(f"{where} {op}: no answer within {timeout:g} s", pool=pool) from None
        except (requests.RequestException, auth_exc.TransportError, OSError) as exc:
            raise Transient(f"{where} {op}: {type(exc).__name__}", pool=pool) from None
        except RuntimeError as exc:  # the executor was shut down under us
            raise Transient(f"{where} {op}: provider closed: {exc}", pool=pool) from None

    def _owner_filter(self, node_id: str | None = None) -> str:
        flt = f'(labels.{OWNER_LABEL} = "{self._cfg.owner}")'
        if node_id is not None:
            flt += f' AND (labels.{NODE_LABEL} = "{label_value(node_id)}")'
        return flt

    def _instance(self, zone: str, raw: compute_v1.Instance) -> Instance | None:
        labels = dict(raw.labels)
        if labels.get(OWNER_LABEL) != self._cfg.owner:
            return None
        meta = _metadata(raw)
        node_id = meta.get(NODE_META) or labels.get(NODE_LABEL, "")
        if not node_id:
            return None
        inst = Instance(
            node_id=node_id,
            cloud_instance_id=str(raw.id) if raw.id else raw.name,
            model=meta.get(MODEL_META) or labels.get(MODEL_LABEL, ""),
            pool=_pool(zone, raw, meta),
            state=self._state(node_id, raw),
            launched_at_s=_timestamp(raw.creation_timestamp),
            address=_address(raw),
        )
        self._known[node_id] = inst
        self._by_name[(zone, raw.name)] = node_id
        return inst

    def _state(self, node_id: str, raw: compute_v1.Instance) -> InstanceState:
        status = raw.status
        if node_id in self._deleting:
            return InstanceState.TERMINATING
        if node_id in self._preempted:
            return InstanceState.PREEMPTED
        if status in ("PROVISIONING", "STAGING", "REPAIRING", "PENDING"):
            return InstanceState.PENDING
        if status == "RUNNING":
            return InstanceState.RUNNING
        if status in STOPPED_STATUSES and _is_spot(raw):
            # We never stop our instances, only delete them: a Spot VM that stops
            # without our delete was reclaimed by GCE.
            return InstanceState.PREEMPTED
        return InstanceState.TERMINATING

    def _zones_for(self, pool: Pool, node_id: str) -> list[str]:
        if pool.cloud is not Cloud.GCP:
            raise NotFound(f"{pool.key}: not a GCP pool", pool=pool)
        if pool.zone:
            if pool.zone not in self._zones:
                raise NotFound(f"{pool.key}: zone {pool.zone} is not configured", pool=pool)
            return [pool.zone]
        zones = [z for z, c in self._zones.items() if c.region == pool.region]
        if not zones:
            raise NotFound(f"{pool.key}: region {pool.region} has no configured zone", pool=pool)
        return zone_order(zones, node_id)

    async def _list_zone(self, zone: str, flt: str, *, pool: Pool | None = None) -> list[Instance]:
        """Our instances in one zone matching `flt` (instances.list, every page)."""

        def fetch(**kw: Any) -> list[compute_v1.Instance]:
            req = compute_v1.ListInstancesRequest(project=self._cfg.project, zone=zone, filter=flt)
            return list(self._instances.list(request=req, **kw))

        raws = await self._call(zone, "instances.list", fetch, pool=pool)
        return [i for i in (self._instance(zone, r) for r in raws) if i is not None]

    async def _get(self, zone: str, name: str, *, pool: Pool | None = None) -> Instance | None:
        raw = await self._call(
            zone, "instances.get", self._instances.get,
            pool=pool, project=self._cfg.project, zone=zone, instance=name,
        )  # fmt: skip
        return self._instance(zone, raw)

    async def _wait(
        self, zone: str, operation: compute_v1.Operation, *, pool: Pool | None = None
    ) -> compute_v1.Operation:
        """Wait for a zone operation until DONE or `operation_timeout_s`; raise its error."""
        deadline = time.monotonic() + self._cfg.operation_timeout_s
        op = operation
        while op.status != compute_v1.Operation.Status.DONE:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Transient(
                    f"{zone} operation {op.name}: not done within "
                    f"{self._cfg.operation_timeout_s:g} s",
                    pool=pool,
                )
            op = await self._call(
                zone, "zoneOperations.wait", self._operations.wait,
                pool=pool, timeout_s=min(left, WAIT_SLICE_S) + 10.0,
                project=self._cfg.project, zone=zone, operation=op.name,
            )  # fmt: skip
        self._raise_for(zone, op, pool=pool)
        return op

    def _raise_for(self, zone: str, op: compute_v1.Operation, *, pool: Pool | None) -> None:
        errors = list(op.error.errors) if op.error else []
        if not errors:
            return
        codes = [str(e.code) for e in errors]
        cls = error_class(codes, int(op.http_error_status_code or 0))
        message = "; ".join(f"{e.code}: {e.message}" for e in errors)
        log.info(
            "gcp_operation_error zone=%s operation=%s codes=%s typed=%s",
            zone, op.name, ",".join(codes), cls.__name__,
        )  # fmt: skip
        raise cls(f"{zone} {op.operation_type or 'operation'}: {message}", pool=pool)

    # ------------------------------------------------------------------ Provider

    async def launch(self, request: LaunchRequest) -> Instance:
        """Start one instance; a node id that already has one gets that one back."""
        pool = request.pool
        zones = self._zones_for(pool, request.node_id)
        flt = self._owner_filter(request.node_id)
        found = await asyncio.gather(*(self._list_zone(z, flt, pool=pool) for z in zones))
        existing = [i for batch in found for i in batch if i.node_id == request.node_id]
        if existing:
            # Prefer one still alive, then the oldest: the one the first attempt made.
            inst = min(
                existing,
                key=lambda i: (i.state is not InstanceState.RUNNING, i.launched_at_s),
            )
            log.info(
                "gcp_launch_found node_id=%s pool=%s instance_id=%s state=%s",
                request.node_id, pool.key, inst.cloud_instance_id, inst.state,
            )  # fmt: skip
            return inst
        last: InsufficientCapacity | None = None
        for i, zone in enumerate(zones):
            try:
                return await self._insert(request, zone, first=i == 0)
            except InsufficientCapacity as exc:
                last = exc
                log.info(
                    "gcp_launch_no_capacity node_id=%s pool=%s zone=%s error=%s",
                    request.node_id, pool.key, zone, exc,
                )  # fmt: skip
        assert last is not None  # zones is never empty
        if len(zones) == 1:
            raise last
        raise InsufficientCapacity(f"{pool.key}: every zone refused: {last}", pool=pool)

    def _body(self, request: LaunchRequest, zone: str) -> compute_v1.Instance:
        cfg, zc, pool = self._cfg, self._zones[zone], request.pool
        name = instance_name(cfg.owner, request.node_id)
        labels = {
            OWNER_LABEL: cfg.owner,
            NODE_LABEL: label_value(request.node_id),
            MODEL_LABEL: label_value(request.model),
        }
        disk_params = compute_v1.AttachedDiskInitializeParams(
            source_image=zc.image or cfg.image,
            disk_size_gb=cfg.boot_disk_gb,
            labels=labels,
        )
        if cfg.boot_disk_type:
            disk_params.disk_type = f"zones/{zone}/diskTypes/{cfg.boot_disk_type}"
        nic = compute_v1.NetworkInterface(subnetwork=zc.subnetwork)
        if zc.network:
            nic.network = zc.network
        if cfg.external_ip:
            nic.access_configs = [
                compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")
            ]
        spot = pool.market is Market.SPOT
        scheduling = compute_v1.Scheduling(
            # GPU VMs cannot live-migrate; Spot VMs must not restart on their own.
            on_host_maintenance="TERMINATE",
            automatic_restart=not spot,
        )
        if spot:
            scheduling.provisioning_model = "SPOT"
            scheduling.instance_termination_action = "DELETE"
        body = compute_v1.Instance(
            name=name,
            machine_type=f"zones/{zone}/machineTypes/{pool.instance_type}",
            labels=labels,
            metadata=compute_v1.Metadata(
                items=[
                    compute_v1.Items(key=NODE_META, value=request.node_id),
                    compute_v1.Items(key=MODEL_META, value=request.model),
                    compute_v1.Items(key=POOL_META, value=pool.key),
                ]
            ),
            disks=[
                compute_v1.AttachedDisk(
                    boot=True, auto_delete=True, type_="PERSISTENT", initialize_params=disk_params
                )
            ],
            network_interfaces=[nic],
            scheduling=scheduling,
        )
        accel = cfg.accelerators.get(pool.instance_type)
        if accel is not None:  # a2/a3/g2 bundle their GPUs; N1 needs them attached
            body.guest_accelerators = [
                compute_v1.AcceleratorConfig(
                    accelerator_type=f"zones/{zone}/acceleratorTypes/{accel.type}",
                    accelerator_count=accel.count,
                )
            ]
        if cfg.network_tags:
            body.tags = compute_v1.Tags(items=list(cfg.network_tags))
        if cfg.service_account_email:
            body.service_accounts = [
                compute_v1.ServiceAccount(
                    email=cfg.service_account_email,
                    scopes=["https://www.googleapis.com/auth/cloud-platform"],
                )
            ]
        return body

    async def _insert(self, request: LaunchRequest, zone: str, *, first: bool) -> Instance:
        pool = request.pool
        body = self._body(request, zone)
        rid = request_id(self._cfg.owner, request.node_id, zone=None if first else zone)
        try:
            op = await self._call(
                zone, "instances.insert", self._instances.insert_unary,
                pool=pool,
                request=compute_v1.InsertInstanceRequest(
                    project=self._cfg.project, zone=zone, instance_resource=body, request_id=rid
                ),
            )  # fmt: skip
            await self._wait(zone, op, pool=pool)
        except _AlreadyExists:
            log.info("gcp_launch_exists node_id=%s zone=%s", request.node_id, zone)
        try:
            inst = await self._get(zone, body.name, pool=pool)
        except NotFound:
            # Done without error but gone already (reclaimed or deleted at once).
            raise Transient(f"{zone}: {body.name} vanished after insert", pool=pool) from None
        if inst is None:
            raise Transient(f"{zone}: {body.name} exists but is not ours", pool=pool)
        log.info(
            "gcp_launch node_id=%s pool=%s zone=%s instance_id=%s",
            request.node_id, pool.key, zone, inst.cloud_instance_id,
        )  # fmt: skip
        return inst

    async def list_instances(self) -> list[Instance]:
        """Our instances in the configured zones; `Transient` if any of those is unreachable."""

        def fetch(**kw: Any) -> tuple[list[tuple[str, compute_v1.Instance]], set[str]]:
            req = compute_v1.AggregatedListInstancesRequest(
                project=self._cfg.project, filter=self._owner_filter()
            )
            pager = self._instances.aggregated_list(request=req, **kw)
            found: list[tuple[str, compute_v1.Instance]] = []
            unreachable: set[str] = set()
            for page in pager.pages:
                unreachable.update(_last_segment(u) for u in page.unreachables)
                for scope, scoped in page.items.items():
                    zone = _last_segment(scope)
                    if getattr(scoped.warning, "code", "") == "UNREACHABLE":
                        unreachable.add(zone)
                    found.extend((zone, raw) for raw in scoped.instances)
            return found, unreachable

        found, unreachable = await self._call("", "instances.aggregatedList", fetch)
        failed = sorted(unreachable & set(self._zones))
        if failed:
            log.warning("gcp_list_failed zones=%s", ",".join(failed))
            raise Transient(
                f"list_instances: {len(failed)} of {len(self._zones)} zones unreachable "
                f"(a partial listing would read as lost nodes): {', '.join(failed)}"
            )
        out = [
            inst
            for zone, raw in found
            if zone in self._zones and (inst := self._instance(zone, raw)) is not None
        ]
        self._deleting &= {i.node_id for i in out}  # gone for good: forget the delete
        return sorted(out, key=lambda i: i.node_id)

    async def terminate(self, node_id: str) -> None:
        """Delete our instance `node_id`; already gone is not an error."""
        name = instance_name(self._cfg.owner, node_id)
        cached = self._known.get(node_id)
        zones = [cached.pool.zone] if cached is not None and cached.pool.zone else list(self._zones)
        self._deleting.add(node_id)
        results = await asyncio.gather(
            *(self._delete(zone, node_id, name) for zone in zones), return_exceptions=True
        )
        errors: list[str] = []
        for zone, res in zip(zones, results, strict=True):
            if isinstance(res, ProviderError):
                errors.append(f"{zone}: {res}")
            elif isinstance(res, BaseException):
                raise res
        if errors:
            raise Transient(f"terminate {node_id}: {'; '.join(errors)}")

    async def _delete(self, zone: str, node_id: str, name: str) -> None:
        try:
            op = await self._call(
                zone, "instances.delete", self._instances.delete_unary,
                # No requestId: delete is idempotent by itself (404 = gone), and a fixed id
                # would make GCE replay a failed delete's operation to every retry.
                project=self._cfg.project, zone=zone, instance=name,
            )  # fmt: skip
            self._raise_for(zone, op, pool=None)  # only fails here if it failed at once
        except NotFound:
            return  # already gone
        log.info("gcp_terminate node_id=%s zone=%s name=%s", node_id, zone, name)

    async def offerings(self) -> list[Offering]:
        """Catalog offerings of the configured zones (GCP list prices; none are live)."""
        return list(self._catalog)

    async def interruption_notices(self) -> list[InterruptionNotice]:
        """Preemptions of our Spot VMs in every zone; a failing zone is logged and skipped."""
        zones = list(self._zones)
        results = await asyncio.gather(
            *(self._preemptions(z) for z in zones), return_exceptions=True
        )
        out: list[InterruptionNotice] = []
        now = self._clock()
        for zone, res in zip(zones, results, strict=True):
            if isinstance(res, ProviderError):
                log.warning("gcp_notices_failed zone=%s error=%s", zone, res)
                continue
            if isinstance(res, BaseException):
                raise res
            for op in res:
                key = f"{zone}/{op.id or op.name}"
                node_id = self._by_name.get((zone, _last_segment(op.target_link)))
                inst = self._known.get(node_id) if node_id else None
                if inst is None or key in self._seen:
                    continue  # not ours (or not seen since start), or returned already
                self._seen[key] = None
                while len(self._seen) > SEEN_OPS:
                    self._seen.popitem(last=False)
                self._preempted.add(inst.node_id)
                out.append(InterruptionNotice(inst.node_id, inst.cloud_instance_id, inst.pool, now))
                log.info(
                    "gcp_notice node_id=%s zone=%s instance_id=%s deadline_s=%.0f",
                    inst.node_id, zone, inst.cloud_instance_id, now,
                )  # fmt: skip
        return out

    async def _preemptions(self, zone: str) -> list[compute_v1.Operation]:
        def fetch(**kw: Any) -> list[compute_v1.Operation]:
            req = compute_v1.ListZoneOperationsRequest(
                project=self._cfg.project, zone=zone, filter=f'operationType = "{PREEMPTED_OP}"'
            )
            return list(self._operations.list(request=req, **kw))

        return await self._call(zone, "zoneOperations.list", fetch)
