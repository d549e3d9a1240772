"""AWS EC2 as a `Provider` (aiobotocore), across several regions at once.

What each call does (contract in `scheduler.ports.provider`):

* **launch**: first looks for an instance already tagged `capsched-node=<node id>` in
  the pool's region (DescribeInstances by tag) and returns it: EC2's `ClientToken` is
  only honoured for a while (and moto's server ignores it), so our own tag lookup is
  what makes a retried launch safe. Otherwise RunInstances, on-demand or spot
  (one-time, terminate on interruption), in a subnet of the pool's zone; for a pool
  without a zone (the catalog's AWS pools) the zones configured for the region are
  tried in an order that starts at a zone picked from the node id (spreading nodes
  over zones), moving to the next zone only on a capacity error. The first zone's
  `ClientToken` is the node id itself, so a retry after a lost response that hits the
  same zone is deduplicated by EC2 as well; a fall-back zone gets its own token.
  Instances and their volumes carry `capsched-owner`, `capsched-node`,
  `capsched-model` and `capsched-pool` tags.
* **list_instances**: DescribeInstances filtered by `capsched-owner` in every region
  concurrently. **If any region fails, the call raises `Transient`** (after every
  other region has answered, each bounded by `call_timeout_s`): a partial listing
  would read as "those nodes are gone" to the reconciler, which then marks them gone
  and relaunches; a failed tick is retried on the next one instead. Instances the
  cloud reclaimed (spot) stay listed as `PREEMPTED` while EC2 still shows them;
  instances terminated on our request are left out.
* **terminate**: finds every instance tagged with the node id (in the region where we
  last saw it, else in all regions) plus the id we cached at launch (DescribeInstances
  may lag a launch), and terminates each; `InvalidInstanceID.NotFound` and "already
  terminated" are success. Not found anywhere while some region failed raises
  `Transient` (we cannot tell it is gone).
* **offerings**: the catalog's AWS offerings for the configured regions; spot prices
  are replaced by live ones from DescribeSpotPriceHistory (mean over the configured
  zones' current prices), refreshed per region once `spot_price_ttl_s` has passed.
  A region whose refresh fails keeps its last prices (or the catalog's) and is tried
  again after min(TTL, 60 s); offerings never fail because of prices.
* **interruption_notices**: drains each region's SQS queue of EventBridge events (the
  Karpenter setup): spot interruption warnings and rebalance recommendations become
  notices with deadline = event time + `notice_window_s` (120 s); state changes to
  stopping/stopped/shutting-down/terminated become notices with deadline = the event
  time (it is already going). Messages are deleted once handled, including events
  that are malformed or not about our instances; a message whose instance could not
  be looked up is left in the queue for redelivery. A failing region is logged and
  skipped (its messages wait in the queue); the other regions' notices are returned.
  An event id is returned once even if SQS delivers it twice.

Errors: `error_class` maps EC2/SQS error codes to the typed errors; transport errors
and timeouts are `Transient`. Credentials come from the standard chain (environment,
profile, instance role) through aiobotocore; requests, parameters and credentials
are never logged, only our own ids and AWS error codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import time
import zlib
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError, ClientError

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
from scheduler.sections.aws import AwsConfig, AwsRegionConfig

log = logging.getLogger(__name__)

OWNER_TAG = "capsched-owner"  # which capsched deployment owns the instance
NODE_TAG = "capsched-node"  # our node id (the idempotency key)
MODEL_TAG = "capsched-model"  # model the node serves
POOL_TAG = "capsched-pool"  # `Pool.key` the node was launched in

SPOT_WARNING = "EC2 Spot Instance Interruption Warning"
REBALANCE = "EC2 Instance Rebalance Recommendation"
STATE_CHANGE = "EC2 Instance State-change Notification"
GOING_STATES = frozenset({"stopping", "stopped", "shutting-down", "terminated"})
SPOT_REASONS = frozenset({"Server.SpotInstanceTermination", "Server.SpotInstanceShutdown"})
PRICE_RETRY_S = 60.0  # a failed spot price refresh is tried again after at most this long
SEEN_EVENTS = 4096  # event ids remembered to return each notice once

# Error codes -> typed errors. Codes are matched before the HTTP status because EC2
# sends InsufficientInstanceCapacity with a 500.
CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "InsufficientHostCapacity",
        "InsufficientReservedInstanceCapacity",
        "InsufficientFreeAddressesInSubnet",  # this zone's subnet is full: another zone may do
        "SpotMaxPriceTooLow",
        "UnfulfillableCapacity",
        "Unsupported",  # instance type not sold in this zone
    }
)
QUOTA_CODES = frozenset(
    {
        "VcpuLimitExceeded",
        "MaxSpotInstanceCountExceeded",
        "InstanceLimitExceeded",
        # The account cannot launch here at all (not authorised, region not enabled):
        # the reaction a quota gets (leave the pool alone for a while) is the right one.
        "UnauthorizedOperation",
        "OptInRequired",
        "PendingVerification",
        "Blocked",
    }
)
TRANSIENT_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "Unavailable",
        "InternalError",
        "InternalFailure",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
    }
)
NOT_FOUND_CODES = frozenset(
    {
        "InvalidInstanceID.Malformed",
        "InvalidAMIID.Malformed",
        "InvalidAMIID.Unavailable",
        "InvalidSubnetID.Malformed",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
    }
)


def error_class(code: str, http_status: int) -> type[ProviderError]:
    """The typed error for an AWS error `code` answered with `http_status`.

    Unknown codes are `Transient` (5xx or not): the message keeps the code, and the
    scheduler's reaction to a transient error (retry, then let the launch lapse) is
    safe for anything we did not foresee.
    """
    if code in CAPACITY_CODES:
        return InsufficientCapacity
    if code in QUOTA_CODES:
        return QuotaExceeded
    if code in TRANSIENT_CODES:
        return Transient
    if code in NOT_FOUND_CODES or code.endswith((".NotFound", "NotFoundException")):
        return NotFound
    return Transient


def client_token(node_id: str, zone: str | None = None) -> str:
    """EC2 `ClientToken` for launching `node_id` (in a fall-back `zone`): at most 64 ASCII."""
    raw = node_id if zone is None else f"{node_id}@{zone}"
    if len(raw) <= 64 and raw.isascii() and raw.isprintable():
        return raw
    return hashlib.sha256(raw.encode()).hexdigest()


def zone_order(zones: Iterable[str], node_id: str) -> list[str]:
    """Zones to try for `node_id`: sorted, rotated to start at one picked by the node id."""
    ordered = sorted(zones)
    if not ordered:
        return []
    k = zlib.crc32(node_id.encode()) % len(ordered)
    return ordered[k:] + ordered[:k]


@dataclass(frozen=True, slots=True)
class Ec2Event:
    """One EventBridge event about an EC2 instance, as read from SQS."""

    event_id: str  # EventBridge event id (dedup key)
    detail_type: str  # EventBridge detail-type
    instance_id: str  # EC2 instance id the event is about
    time_s: float  # event time, epoch seconds
    state: str  # new state for state-change events, "" otherwise


def parse_event(body: str) -> Ec2Event | None:
    """Decode an SQS message body holding an EventBridge EC2 event; None if it is not one."""
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    detail = doc.get("detail")
    kind = doc.get("detail-type")
    if not isinstance(detail, dict) or kind not in (SPOT_WARNING, REBALANCE, STATE_CHANGE):
        return None
    instance_id = detail.get("instance-id")
    raw_time = doc.get("time")
    if not isinstance(instance_id, str) or not isinstance(raw_time, str):
        return None
    try:
        at = datetime.fromisoformat(raw_time)
    except ValueError:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    state = detail.get("state", "")
    return Ec2Event(
        event_id=str(doc.get("id") or f"{kind}/{instance_id}/{raw_time}"),
        detail_type=kind,
        instance_id=instance_id,
        time_s=at.timestamp(),
        state=state if isinstance(state, str) else "",
    )


def _tags(raw: Mapping[str, Any]) -> dict[str, str]:
    return {str(t.get("Key")): str(t.get("Value")) for t in raw.get("Tags") or ()}


def _state(raw: Mapping[str, Any]) -> InstanceState:
    name = str((raw.get("State") or {}).get("Name", ""))
    reason = str((raw.get("StateReason") or {}).get("Code", ""))
    if name == "pending":
        return InstanceState.PENDING
    if name == "running":
        return InstanceState.RUNNING
    if name in ("shutting-down", "terminated", "stopping", "stopped") and reason in SPOT_REASONS:
        return InstanceState.PREEMPTED
    if name == "terminated":
        return InstanceState.TERMINATED
    # shutting-down on our request; stopping/stopped never happen to our instances (we
    # launch with terminate-on-interruption), and a stopped one serves nothing either.
    return InstanceState.TERMINATING


def _pool(region: str, raw: Mapping[str, Any], tags: Mapping[str, str]) -> Pool:
    parts = tags.get(POOL_TAG, "").split("/")
    if len(parts) == 4 and parts[0] == Cloud.AWS and parts[3] in tuple(Market):
        where = parts[1]
        return Pool(Cloud.AWS, region, "" if where == region else where, parts[2], Market(parts[3]))
    market = Market.SPOT if raw.get("InstanceLifecycle") == "spot" else Market.ON_DEMAND
    return Pool(Cloud.AWS, region, "", str(raw.get("InstanceType", "")), market)


def _address(raw: Mapping[str, Any]) -> str | None:
    """The private IPv4 address (the drainer reaches nodes inside the VPC), else the
    primary interface's, else an IPv6-only subnet's address; None before one exists."""
    for value in (
        raw.get("PrivateIpAddress"),
        ((raw.get("NetworkInterfaces") or [{}])[0] or {}).get("PrivateIpAddress"),
        raw.get("Ipv6Address"),
    ):
        if isinstance(value, str) and value:
            return value
    return None


def _launched_at(raw: Mapping[str, Any]) -> float:
    at = raw.get("LaunchTime")
    if isinstance(at, datetime):
        return at.timestamp()
    return math.nan


class AwsProvider(AsyncResource):
    """EC2 in the configured regions as a `scheduler.ports.provider.Provider`.

    `offerings` is the catalog's list (every cloud; only AWS pools in configured regions
    are used). Use as ``async with AwsProvider(...) as p:`` or call `close()`; clients
    are created on first use per (service, region).
    """

    def __init__(
        self,
        config: AwsConfig,
        offerings: Sequence[Offering],
        *,
        session: AioSession | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cfg = config
        self._regions: dict[str, AwsRegionConfig] = {r.name: r for r in config.regions}
        self._catalog = [
            o for o in offerings if o.pool.cloud is Cloud.AWS and o.pool.region in self._regions
        ]
        self._session = session or AioSession(profile=config.profile or None)
        self._clock = clock  # TTLs only; never used for instance times
        self._boto_config = AioConfig(
            connect_timeout=config.connect_timeout_s,
            read_timeout=config.read_timeout_s,
            retries={"mode": "standard", "total_max_attempts": config.max_attempts},
            user_agent_extra="capsched",
        )
        self._stack = contextlib.AsyncExitStack()
        self._clients: dict[tuple[str, str], Any] = {}
        self._client_locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        self._known: dict[str, Instance] = {}  # node id -> last seen instance of ours
        self._by_cloud_id: dict[str, str] = {}  # cloud instance id -> node id
        self._spot: dict[str, dict[tuple[str, str], float]] = {}  # region -> (type, zone) -> $
        self._next_refresh: dict[str, float] = {}  # region -> clock time of the next refresh
        self._seen: OrderedDict[str, None] = OrderedDict()  # event ids already returned

    # ------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        """Close every AWS client (their HTTP connection pools)."""
        await self._stack.aclose()
        self._clients.clear()

    # ------------------------------------------------------------------ plumbing

    async def _client(self, service: str, region: str) -> Any:
        key = (service, region)
        client = self._clients.get(key)
        if client is not None:
            return client
        async with self._client_locks[key]:
            client = self._clients.get(key)
            if client is None:
                rc = self._regions[region]
                endpoint = rc.endpoint_url or self._cfg.endpoint_url or None
                client = await self._stack.enter_async_context(
                    self._session.create_client(
                        service, region_name=region, endpoint_url=endpoint, config=self._boto_config
                    )
                )
                self._clients[key] = client
        return client

    async def _api(
        self, service: str, region: str, op: str, *, pool: Pool | None = None, **params: Any
    ) -> dict[str, Any]:
        """One AWS call, bounded by `call_timeout_s`, with its failure typed."""
        try:
            async with asyncio.timeout(self._cfg.call_timeout_s):
                client = await self._client(service, region)
                result: dict[str, Any] = await getattr(client, op)(**params)
                return result
        except ClientError as exc:
            err = exc.response.get("Error") or {}
            code = str(err.get("Code", ""))
            status = int((exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode", 0))
            cls = error_class(code, status)
            log.info(
                "aws_error region=%s op=%s code=%s status=%d typed=%s",
                region, op, code, status, cls.__name__,
            )  # fmt: skip
            raise cls(f"{region} {op}: {code}: {err.get('Message', '')}", pool=pool) from None
        except TimeoutError:
            raise Transient(
                f"{region} {op}: no answer within {self._cfg.call_timeout_s:g} s", pool=pool
            ) from None
        except (BotoCoreError, aiohttp.ClientError, OSError) as exc:
            raise Transient(f"{region} {op}: {type(exc).__name__}: {exc}", pool=pool) from None

    async def _describe(
        self, region: str, filters: list[dict[str, Any]], *, pool: Pool | None = None
    ) -> list[Instance]:
        """Our instances in `region` matching `filters` (the owner filter is added)."""
        flt = [{"Name": f"tag:{OWNER_TAG}", "Values": [self._cfg.owner]}, *filters]
        out: list[Instance] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"Filters": flt}
            if token:
                params["NextToken"] = token
            page = await self._api("ec2", region, "describe_instances", pool=pool, **params)
            for reservation in page.get("Reservations") or ():
                for raw in reservation.get("Instances") or ():
                    inst = self._instance(region, raw)
                    if inst is not None:
                        out.append(inst)
            token = page.get("NextToken")
            if not token:
                return out

    def _instance(self, region: str, raw: Mapping[str, Any]) -> Instance | None:
        tags = _tags(raw)
        node_id = tags.get(NODE_TAG)
        if not node_id or tags.get(OWNER_TAG) != self._cfg.owner:
            return None
        inst = Instance(
            node_id=node_id,
            cloud_instance_id=str(raw["InstanceId"]),
            model=tags.get(MODEL_TAG, ""),
            pool=_pool(region, raw, tags),
            state=_state(raw),
            launched_at_s=_launched_at(raw),
            address=_address(raw),
        )
        self._remember(inst)
        return inst

    def _remember(self, inst: Instance) -> None:
        if inst.state is InstanceState.TERMINATED:
            return
        self._known[inst.node_id] = inst
        self._by_cloud_id[inst.cloud_instance_id] = inst.node_id

    def _forget(self, node_id: str) -> None:
        inst = self._known.pop(node_id, None)
        if inst is not None:
            self._by_cloud_id.pop(inst.cloud_instance_id, None)

    def _region_of(self, pool: Pool) -> AwsRegionConfig:
        rc = self._regions.get(pool.region) if pool.cloud is Cloud.AWS else None
        if rc is None:
            raise NotFound(f"{pool.key}: region {pool.region!r} is not configured", pool=pool)
        return rc

    # ------------------------------------------------------------------ Provider

    async def launch(self, request: LaunchRequest) -> Instance:
        """Start one instance; a node id that already has one gets that one back."""
        pool = request.pool
        rc = self._region_of(pool)
        existing = await self._describe(
            rc.name, [{"Name": f"tag:{NODE_TAG}", "Values": [request.node_id]}], pool=pool
        )
        if existing:
            # Prefer one still alive, then the oldest: the one the first attempt made.
            inst = min(
                existing,
                key=lambda i: (i.state is InstanceState.TERMINATED, i.launched_at_s),
            )
            log.info(
                "aws_launch_found node_id=%s region=%s instance_id=%s state=%s",
                request.node_id, rc.name, inst.cloud_instance_id, inst.state,
            )  # fmt: skip
            return inst
        if pool.zone:
            if pool.zone not in rc.subnets:
                raise NotFound(f"{pool.key}: no subnet configured for zone {pool.zone}", pool=pool)
            zones = [pool.zone]
        else:
            zones = zone_order(rc.subnets, request.node_id)
        last: InsufficientCapacity | None = None
        for i, zone in enumerate(zones):
            try:
                return await self._run_instance(request, rc, zone, first=i == 0)
            except InsufficientCapacity as exc:
                last = exc
                log.info(
                    "aws_launch_no_capacity node_id=%s pool=%s zone=%s error=%s",
                    request.node_id, pool.key, zone, exc,
                )  # fmt: skip
        assert last is not None  # zones is never empty: config requires a subnet
        raise InsufficientCapacity(f"{pool.key}: every zone refused: {last}", pool=pool)

    async def _run_instance(
        self, request: LaunchRequest, rc: AwsRegionConfig, zone: str, *, first: bool
    ) -> Instance:
        pool = request.pool
        tags = [
            {"Key": OWNER_TAG, "Value": self._cfg.owner},
            {"Key": NODE_TAG, "Value": request.node_id},
            {"Key": MODEL_TAG, "Value": request.model},
            {"Key": POOL_TAG, "Value": pool.key},
        ]
        params: dict[str, Any] = {
            "MinCount": 1,
            "MaxCount": 1,
            "InstanceType": pool.instance_type,
            "SubnetId": rc.subnets[zone],
            "ClientToken": client_token(request.node_id, None if first else zone),
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tags},
                {"ResourceType": "volume", "Tags": tags},
            ],
        }
        if rc.image_id:
            params["ImageId"] = rc.image_id
        if rc.launch_template:
            key = (
                "LaunchTemplateId" if rc.launch_template.startswith("lt-") else "LaunchTemplateName"
            )
            params["LaunchTemplate"] = {
                key: rc.launch_template,
                "Version": rc.launch_template_version,
            }
        if rc.security_group_ids:
            params["SecurityGroupIds"] = list(rc.security_group_ids)
        if pool.market is Market.SPOT:
            params["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {
                    "SpotInstanceType": "one-time",
                    "InstanceInterruptionBehavior": "terminate",
                },
            }
        resp = await self._api("ec2", rc.name, "run_instances", pool=pool, **params)
        raw = (resp.get("Instances") or [{}])[0]
        if "InstanceId" not in raw:
            raise Transient(f"{rc.name} run_instances: no instance in the answer", pool=pool)
        inst = Instance(
            node_id=request.node_id,
            cloud_instance_id=str(raw["InstanceId"]),
            model=request.model,
            pool=pool,
            state=_state(raw),
            launched_at_s=_launched_at(raw),
            address=_address(raw),
        )
        self._remember(inst)
        log.info(
            "aws_launch node_id=%s pool=%s zone=%s instance_id=%s",
            request.node_id, pool.key, zone, inst.cloud_instance_id,
        )  # fmt: skip
        return inst

    async def list_instances(self) -> list[Instance]:
        """Our instances in every region; raises `Transient` if any region fails."""
        names = list(self._regions)
        results = await asyncio.gather(
            *(self._describe(name, []) for name in names), return_exceptions=True
        )
        out: list[Instance] = []
        failed: list[str] = []
        for name, res in zip(names, results, strict=True):
            if isinstance(res, ProviderError):
                failed.append(f"{name}: {res}")
                log.warning("aws_list_failed region=%s error=%s", name, res)
            elif isinstance(res, BaseException):
                raise res
            else:
                out.extend(i for i in res if i.state is not InstanceState.TERMINATED)
        if failed:
            raise Transient(
                f"list_instances: {len(failed)} of {len(names)} regions failed "
                f"(a partial listing would read as lost nodes): {'; '.join(failed)}"
            )
        return sorted(out, key=lambda i: i.node_id)

    async def terminate(self, node_id: str) -> None:
        """Terminate every instance tagged `node_id`; already gone is not an error."""
        cached = self._known.get(node_id)
        names = [cached.pool.region] if cached is not None else list(self._regions)
        flt = [{"Name": f"tag:{NODE_TAG}", "Values": [node_id]}]
        results = await asyncio.gather(
            *(self._describe(name, flt) for name in names), return_exceptions=True
        )
        targets: set[tuple[str, str]] = set()
        errors: list[str] = []
        for name, res in zip(names, results, strict=True):
            if isinstance(res, ProviderError):
                errors.append(f"{name}: {res}")
            elif isinstance(res, BaseException):
                raise res
            else:
                targets.update(
                    (name, i.cloud_instance_id)
                    for i in res
                    if i.state not in (InstanceState.TERMINATED, InstanceState.PREEMPTED)
                )
        if cached is not None:
            targets.add((cached.pool.region, cached.cloud_instance_id))  # listing may lag
        if not targets and errors:
            raise Transient(f"terminate {node_id}: cannot tell whether it is gone: {errors}")
        for region, instance_id in sorted(targets):
            with contextlib.suppress(NotFound):  # already gone
                await self._api("ec2", region, "terminate_instances", InstanceIds=[instance_id])
            log.info(
                "aws_terminate node_id=%s region=%s instance_id=%s", node_id, region, instance_id
            )
        self._forget(node_id)

    async def offerings(self) -> list[Offering]:
        """Catalog offerings of the configured regions, spot prices made live where known."""
        now = self._clock()
        due = [r for r in self._regions if now >= self._next_refresh.get(r, -math.inf)]
        if due:
            results = await asyncio.gather(
                *(self._refresh_prices(r) for r in due), return_exceptions=True
            )
            ttl = self._cfg.spot_price_ttl_s
            for region, res in zip(due, results, strict=True):
                if isinstance(res, ProviderError):
                    self._next_refresh[region] = now + min(ttl, PRICE_RETRY_S)
                    log.warning("aws_spot_prices_failed region=%s error=%s", region, res)
                elif isinstance(res, BaseException):
                    raise res
                else:
                    self._next_refresh[region] = now + ttl
        out: list[Offering] = []
        for o in self._catalog:
            p = o.pool
            live = self._spot.get(p.region, {}).get((p.instance_type, p.zone))
            if p.market is Market.SPOT and live is not None:
                o = replace(o, usd_per_hour=live, price_is_estimate=False)
            out.append(o)
        return out

    async def _refresh_prices(self, region: str) -> None:
        types = sorted(
            {
                o.pool.instance_type
                for o in self._catalog
                if o.pool.region == region and o.pool.market is Market.SPOT
            }
        )
        if not types:
            return
        start = datetime.fromtimestamp(self._clock(), UTC)
        latest: dict[tuple[str, str], tuple[datetime, float]] = {}
        token: str | None = None
        while True:
            params: dict[str, Any] = {
                "InstanceTypes": types,
                "ProductDescriptions": ["Linux/UNIX"],
                "StartTime": start,
                "MaxResults": 1000,
            }
            if token:
                params["NextToken"] = token
            page = await self._api("ec2", region, "describe_spot_price_history", **params)
            for rec in page.get("SpotPriceHistory") or ():
                if not str(rec.get("ProductDescription", "")).startswith("Linux/UNIX"):
                    continue
                key = (str(rec.get("InstanceType")), str(rec.get("AvailabilityZone")))
                at = rec.get("Timestamp")
                try:
                    price = float(rec["SpotPrice"])
                except (KeyError, TypeError, ValueError):
                    continue
                if not isinstance(at, datetime) or not math.isfinite(price):
                    continue
                if key not in latest or at > latest[key][0]:
                    latest[key] = (at, price)
            token = page.get("NextToken")
            if not token:
                break
        zones = set(self._regions[region].subnets)
        prices: dict[tuple[str, str], float] = {(t, z): p for (t, z), (_, p) in latest.items()}
        by_type: dict[str, list[tuple[str, float]]] = defaultdict(list)
        for (t, z), p in prices.items():
            by_type[t].append((z, p))
        for t, zp in by_type.items():
            # A zone-less pool launches in one of the configured zones: price it at their
            # mean (all of the region's zones when none of ours has a price).
            ours = [p for z, p in zp if z in zones] or [p for _, p in zp]
            prices[(t, "")] = sum(ours) / len(ours)
        self._spot[region] = prices
        log.info("aws_spot_prices region=%s types=%d zones=%d", region, len(by_type), len(latest))

    async def interruption_notices(self) -> list[InterruptionNotice]:
        """Notices from every region's queue; a failing region is logged and skipped."""
        queues = [r for r in self._regions.values() if r.sqs_queue_url]
        results = await asyncio.gather(
            *(self._drain_queue(r) for r in queues), return_exceptions=True
        )
        out: list[InterruptionNotice] = []
        for rc, res in zip(queues, results, strict=True):
            if isinstance(res, ProviderError):
                log.warning("aws_notices_failed region=%s error=%s", rc.name, res)
            elif isinstance(res, BaseException):
                raise res
            else:
                out.extend(res)
        return out

    async def _drain_queue(self, rc: AwsRegionConfig) -> list[InterruptionNotice]:
        url = rc.sqs_queue_url
        out: list[InterruptionNotice] = []
        for _ in range(self._cfg.max_sqs_batches):
            resp = await self._api(
                "sqs", rc.name, "receive_message",
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
            )  # fmt: skip
            messages = resp.get("Messages") or []
            if not messages:
                break
            events = [(m, parse_event(str(m.get("Body", "")))) for m in messages]
            unknown = sorted(
                {e.instance_id for _, e in events if e and e.instance_id not in self._by_cloud_id}
            )
            resolved: dict[str, Instance] | None = {}
            if unknown:
                try:
                    found = await self._describe(
                        rc.name, [{"Name": "instance-id", "Values": unknown}]
                    )
                    resolved = {i.cloud_instance_id: i for i in found}
                except ProviderError as exc:
                    # Keep those messages: they come back after the visibility timeout.
                    log.warning("aws_notice_lookup_failed region=%s error=%s", rc.name, exc)
                    resolved = None
            handled: list[str] = []
            for message, event in events:
                handle = str(message.get("ReceiptHandle", ""))
                if event is None:
                    log.info("aws_notice_ignored region=%s reason=not_an_ec2_event", rc.name)
                    handled.append(handle)
                    continue
                node_id = self._by_cloud_id.get(event.instance_id)
                inst = self._known.get(node_id) if node_id else None
                if inst is None:
                    if resolved is None:
                        continue  # lookup failed: leave it in the queue
                    inst = resolved.get(event.instance_id)
                handled.append(handle)
                notice = self._notice(event, inst)
                if notice is None or event.event_id in self._seen:
                    continue
                self._seen[event.event_id] = None
                while len(self._seen) > SEEN_EVENTS:
                    self._seen.popitem(last=False)
                out.append(notice)
                log.info(
                    "aws_notice node_id=%s instance_id=%s kind=%r deadline_s=%.0f",
                    notice.node_id, notice.cloud_instance_id, event.detail_type, notice.deadline_s,
                )  # fmt: skip
            await self._delete(rc, handled)
            if resolved is None:
                break
        return out

    def _notice(self, event: Ec2Event, inst: Instance | None) -> InterruptionNotice | None:
        if inst is None:
            return None  # not one of ours (or gone long ago)
        if event.detail_type in (SPOT_WARNING, REBALANCE):
            deadline = event.time_s + self._cfg.notice_window_s
        elif event.state in GOING_STATES:
            deadline = event.time_s  # already stopping or gone
        else:
            return None  # pending/running: nothing to do
        return InterruptionNotice(inst.node_id, inst.cloud_instance_id, inst.pool, deadline)

    async def _delete(self, rc: AwsRegionConfig, handles: list[str]) -> None:
        if not handles:
            return
        entries = [{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(handles)]
        try:
            resp = await self._api(
                "sqs", rc.name, "delete_message_batch", QueueUrl=rc.sqs_queue_url, Entries=entries
            )
        except ProviderError as exc:
            # Redelivered later; the event id dedup keeps each notice single.
            log.warning("aws_notice_delete_failed region=%s error=%s", rc.name, exc)
            return
        if resp.get("Failed"):
            log.warning("aws_notice_delete_failed region=%s count=%d", rc.name, len(resp["Failed"]))
