"""The simulated cloud: the `Provider` the simulator and the tests run against.

It implements `scheduler.ports.provider.Provider` exactly (same async calls, same typed
errors, same idempotency) and never reads the wall clock: the replay engine moves
it forward with `advance_to(now_s)`, and every effect (boot finished, notice sent,
instance reclaimed) happens at a virtual time.

What it models:

* **Offerings** from the catalog (the scenario may pass multiplied prices and
  interruption rates); a pool not offered, or offered as unavailable, refuses
  launches with `InsufficientCapacity`.
* **Boot-to-ready**: a launched instance is `PENDING` for its boot time, then
  `RUNNING`: `boot_time_by_type` where it names the instance type, else `boot_time(model,
  instance type)` when given (the simulator and the embedded daemon pass
  `scheduler.fleet.boot.node_boot_s`), else `boot_time_s` for every type.
* **Per-second billing by market** from the launch until termination or reclaim,
  with the one-minute minimum both AWS and GCP apply to a stopped instance.
* **Moving spot prices** (`spot_prices`, see `adapters.spot_prices`): a pool with a
  price series is listed at the price in force and billed at the price of every
  second, as AWS bills spot; other pools keep the offering's price, locked at launch.
* **Spot capacity from traces** (SkyPilot spot-traces format, see `SpotTrace`): the
  count at a tick is how many spot instances the pool can hold; when it falls below
  the live instances there, the excess gets an interruption notice and is reclaimed
  when the notice window ends (AWS 120 s, GCP 30 s); while the pool is full (count
  0 included) launches there fail with `InsufficientCapacity`.
* **Random interruptions** where a spot pool has no trace: each instance's time to
  notice is exponential with the offering's `interruptions_per_hour`, drawn from a
  generator seeded by (seed, pool, n-th launch in the pool), so a replay repeats
  exactly whatever the step size.
* **Test hooks**: every call is recorded in `calls`; `inject_error(method, error)`
  makes the next call of that method raise `error` once.
* **Model-server faults** (`SimFaults`, the scenario's `[faults]`): a share of the
  instances whose model server never becomes healthy, a rate at which serving ones turn
  sick, and pools whose every boot fails during a window. Each instance's fate is drawn
  from (seed, its launch number), so the k-th launch of every policy meets the same
  fault. `serving()` lists what really serves (the replay engine's capacity) and
  `SimHealthProbe` answers health checks from it. Without faults every running
  instance serves.
* **Addresses**: every instance reports `node_address` when one is given (tests point
  the HTTP drainer at a local server that way), else a fake private IP derived from
  its instance number (`sim-0000258` is 10.0.1.2): deterministic, and serving nothing.

Clouds do not announce spot stock-outs, so by default `offerings()` keeps listing a
stocked-out spot pool as available and only the launch fails; `reveal_stockouts=True`
marks it unavailable instead (an optimistic cloud, for what-if comparisons).
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import zlib
from collections import defaultdict, deque
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

import numpy as np

from adapters.spot_prices import SpotPriceSeries
from scheduler.domain import Cloud, InstanceType, Market, Node, Offering, Pool
from scheduler.fleet.notice import NOTICE_S
from scheduler.ports.provider import (
    Instance,
    InstanceState,
    InsufficientCapacity,
    InterruptionNotice,
    LaunchRequest,
    ProviderError,
)

log = logging.getLogger(__name__)

MIN_BILLED_S = 60.0  # both clouds bill at least one minute per instance
LISTING_RETENTION_S = 300.0  # reclaimed instances stay listed (as PREEMPTED) this long
LIVE_STATES = frozenset({InstanceState.PENDING, InstanceState.RUNNING})


class SpotTraceError(ValueError):
    """A spot trace file that cannot be used; the message names the file."""


@dataclass(frozen=True, eq=False)
class SpotTrace:
    """Spot capacity of one pool over time: `counts[i]` instances fit during tick i.

    Times are relative to the start of the replay. The trace repeats (`loop`) when the
    replay is longer than the trace, so a 2-day trace can drive a week; `offset_s`
    starts the replay part-way into the trace. Times before the trace's start hold
    its first count.
    """

    source: str  # file the counts came from (for reports and attribution)
    gap_s: float  # length of one tick, seconds (`metadata.gap_seconds`)
    counts: np.ndarray  # int64 per tick: spot instances the pool can hold
    offset_s: float = 0.0  # trace time at replay time 0
    loop: bool = True  # wrap around at the end instead of holding the last count

    def index_at(self, t_s: float) -> int:
        """Tick index in force at replay-relative time `t_s`."""
        i = max(0, math.floor((t_s + self.offset_s) / self.gap_s))
        n = len(self.counts)
        return i % n if self.loop else min(max(i, 0), n - 1)

    def capacity_at(self, t_s: float) -> int:
        """Spot instances the pool can hold at replay-relative time `t_s`."""
        return int(self.counts[self.index_at(t_s)])

    def next_tick_after(self, t_s: float) -> float:
        """First tick boundary strictly after `t_s` (replay-relative)."""
        k = math.floor((t_s + self.offset_s) / self.gap_s) + 1
        nxt = k * self.gap_s - self.offset_s
        # Rounding can land `nxt` on `t_s` itself (a caller looping "until the next
        # boundary" then never moves): step on until it is strictly later.
        while nxt <= t_s:
            k += 1
            nxt = k * self.gap_s - self.offset_s
        return nxt

    def scaled(self, factor: float) -> SpotTrace:
        """The same trace with every count multiplied by `factor` (rounded)."""
        counts = np.rint(self.counts * factor).astype(np.int64)
        return replace(self, counts=counts)


def load_spot_trace(
    path: Path | str, *, scale: float = 1.0, offset_s: float = 0.0, loop: bool = True
) -> SpotTrace:
    """Read a SkyPilot spot trace: ``{"metadata": {"gap_seconds": G}, "data": [n0, ...]}``.

    `scale` multiplies the counts (a 1-node trace with scale 8 says "0 or 8 fit").
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpotTraceError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise SpotTraceError(f"{p}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise SpotTraceError(f"{p}: expected a JSON object with metadata and data")
    gap = (doc.get("metadata") or {}).get("gap_seconds")
    if isinstance(gap, bool) or not isinstance(gap, int | float) or not gap > 0:
        raise SpotTraceError(f"{p}: metadata.gap_seconds must be a positive number, got {gap!r}")
    data = doc.get("data")
    if not isinstance(data, list) or not data:
        raise SpotTraceError(f"{p}: data must be a non-empty list of counts")
    for i, v in enumerate(data):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise SpotTraceError(f"{p}: data[{i}]: expected a count >= 0, got {v!r}")
    if not (scale > 0 and math.isfinite(scale)):
        raise SpotTraceError(f"{p}: scale must be a positive number, got {scale!r}")
    counts = np.rint(np.asarray(data, dtype=np.float64) * scale).astype(np.int64)
    return SpotTrace(str(p), float(gap), counts, float(offset_s), loop)


def fake_address(cloud_instance_id: str) -> str:
    """The simulated private IP of instance `sim-N`: 10.0.0.0/8 numbered by N."""
    n = int(cloud_instance_id.rsplit("-", 1)[-1])
    return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


@dataclass(frozen=True, slots=True)
class SimFaults:
    """Model-server faults the simulated cloud injects (issue 21)."""

    never_healthy_share: float = 0.0  # share of launches whose server never serves
    sick_per_node_day: float = 0.0  # rate at which a serving instance turns sick, per day
    bad_pools: frozenset[Pool] = frozenset()  # pools whose every boot fails...
    bad_from_s: float = -math.inf  # ...from this virtual time...
    bad_until_s: float = math.inf  # ...until this one

    @property
    def any(self) -> bool:
        """Whether any fault is injected."""
        return bool(self.never_healthy_share > 0 or self.sick_per_node_day > 0 or self.bad_pools)


@dataclass(frozen=True, slots=True)
class SimStorm:
    """A preemption storm (issue 22): at `at_s` every pool of `pools` (spot pools) loses
    `share` of the spot nodes it holds then, rounded up (they get interruption notices
    at once), and holds at most what it kept until `until_s`: the capacity the storm took
    does not come back before it ends, and a pool that held nothing takes nothing. The
    same rule for every policy: what a storm takes is a share of what each one runs."""

    at_s: float  # virtual time the storm strikes
    share: float = 0.5  # share of each pool's spot nodes reclaimed, 0 < share <= 1
    until_s: float = math.inf  # virtual time the storm's caps lift
    pools: frozenset[Pool] = frozenset()  # the spot pools it strikes


@dataclass(slots=True)
class _Instance:
    """The simulated cloud's record of one instance (mutable, private)."""

    node_id: str  # our id (the capsched-node tag)
    cloud_instance_id: str  # simulated cloud id
    model: str  # model tag
    pool: Pool  # pool it runs in
    state: InstanceState  # current state
    launched_at_s: float  # accepted at this time; billing starts here
    ready_at_s: float  # boot finished (PENDING -> RUNNING) at this time
    usd_per_hour: float  # price locked in at launch
    gpus: int  # accelerators, for GPU-hours
    ended_at_s: float | None = None  # billing stopped (terminated or reclaimed)
    deadline_s: float | None = None  # reclaim time once a notice was sent
    healthy: bool = True  # False: its model server never serves (an injected fault)
    sick_at_s: float = math.inf  # its model server stops serving at this time (a fault)

    def serves(self, now_s: float) -> bool:
        """Whether its model server answers and serves at `now_s`."""
        return self.state is InstanceState.RUNNING and self.healthy and now_s < self.sick_at_s


@dataclass(frozen=True, slots=True)
class Usage:
    """What the simulated cloud has billed so far."""

    cost_by_market: Mapping[Market, float]  # USD per market
    gpu_hours: float  # accelerator-hours billed

    @property
    def cost_usd(self) -> float:
        """Total USD over both markets."""
        return float(sum(self.cost_by_market.values()))


@dataclass
class SimCounters:
    """Counts of what happened in the simulated cloud."""

    launches: int = 0  # instances created (idempotent retries not counted)
    failed_launches: int = 0  # launches refused (capacity, unavailable, injected)
    terminations: int = 0  # live instances terminated on request
    notices: int = 0  # interruption notices sent
    preemptions: int = 0  # instances reclaimed at the end of their notice
    by_pool_failures: dict[str, int] = field(default_factory=dict)  # refused launches per pool
    faulty_boots: int = 0  # instances whose model server never serves (injected)


class SimCloud:
    """A simulated cloud implementing `scheduler.ports.provider.Provider`, moved by `advance_to`."""

    # Class default: a state pickled before addresses existed (PersistentSimCloud) loads too.
    _node_address: str | None = None
    _prices: Mapping[Pool, SpotPriceSeries] = MappingProxyType({})
    _faults: SimFaults = SimFaults()

    def __init__(
        self,
        offerings: Sequence[Offering],
        instance_types: Mapping[tuple[Cloud, str], InstanceType],
        *,
        start_s: float = 0.0,
        boot_time_s: float = 600.0,
        boot_time_by_type: Mapping[str, float] | None = None,
        boot_time: Callable[[str, InstanceType], float] | None = None,
        spot_traces: Mapping[Pool, SpotTrace] | None = None,
        seed: int = 0,
        notice_s: Mapping[Cloud, float] = NOTICE_S,
        random_interruptions: bool = True,
        reveal_stockouts: bool = False,
        listing_retention_s: float = LISTING_RETENTION_S,
        node_address: str | None = None,
        spot_prices: Mapping[Pool, SpotPriceSeries] | None = None,
        faults: SimFaults | None = None,
        storm: SimStorm | None = None,
    ) -> None:
        self._faults = faults or SimFaults()  # injected model-server faults
        self._storm = storm  # a preemption storm to strike, if any
        self._storm_caps: dict[Pool, int] | None = None  # per pool, once the storm struck
        self._offerings = {o.pool: o for o in offerings}
        self._types = instance_types
        self._start_s = start_s
        self._now_s = start_s
        self._boot_s = boot_time_s
        self._boot_by_type = dict(boot_time_by_type or {})
        self._boot_of = boot_time  # per (model, instance type), below the per-type overrides
        self._traces = dict(spot_traces or {})
        self._seed = seed
        self._notice_s = notice_s
        self._random = random_interruptions
        self._reveal = reveal_stockouts
        self._retention_s = listing_retention_s
        self._node_address = node_address  # every instance's address; None: a fake per instance
        self._prices = dict(spot_prices or {})  # price over time per pool (times from start_s)
        self._instances: dict[str, _Instance] = {}
        self._by_pool: dict[Pool, set[str]] = defaultdict(set)  # live node ids per pool
        self._events: list[tuple[float, int, str, str]] = []  # (time, seq, kind, node_id)
        self._seq = 0
        self.version = 0  # bumped whenever the set of running instances changes
        self._launch_seq: dict[Pool, int] = defaultdict(int)
        self._unread: list[InterruptionNotice] = []
        self._injected: dict[str, deque[ProviderError]] = defaultdict(deque)
        self._closed_cost: dict[Market, float] = {m: 0.0 for m in Market}
        self._closed_gpu_s = 0.0
        self._gone: deque[tuple[float, str]] = deque()  # (drop from listing at, node id)
        self.calls: list[tuple[str, str]] = []  # (method, argument) of every provider call
        self.counters = SimCounters()

    # ------------------------------------------------------------------ time

    @property
    def now_s(self) -> float:
        """Current virtual time of the cloud."""
        return self._now_s

    @property
    def unread_notices(self) -> int:
        """Notices sent but not yet fetched with `interruption_notices`."""
        return len(self._unread)

    def advance_to(self, t_s: float) -> None:
        """Move virtual time to `t_s`, applying every boot, notice and reclaim on the way."""
        self.advance_until_notice(t_s, stop_at_notice=False)

    def advance_until_notice(self, t_s: float, *, stop_at_notice: bool = True) -> float:
        """Advance towards `t_s`, stopping just after the first new interruption notice.

        Returns the time reached (`t_s` unless a notice stopped it earlier), so the
        engine can tick at the moment a notice arrives.
        """
        if t_s < self._now_s:
            raise ValueError(f"cannot go back in time: {t_s} < {self._now_s}")
        while True:
            at = self._next_event_time(t_s)
            if at is None:
                break
            self._now_s = at
            sent = self._apply_events(at)
            if stop_at_notice and sent:
                return at
        self._now_s = t_s
        self._expire_listing()
        return t_s

    def _next_event_time(self, limit_s: float) -> float | None:
        best = self._events[0][0] if self._events else math.inf
        storm = self._storm
        if storm is not None:
            if self._storm_caps is None and storm.at_s > self._now_s:
                best = min(best, storm.at_s)
            elif self._storm_caps is not None and storm.until_s > self._now_s:
                best = min(best, storm.until_s)
        for pool, live in self._by_pool.items():
            trace = self._traces.get(pool) if live else None
            if trace is not None:
                rel = trace.next_tick_after(self._now_s - self._start_s)
                # At a fractional start (a warm-up of a fractional boot time) the sum can
                # round back onto now itself, and the loop would never move: look past it
                # (by a microsecond, far below any trace's tick and above the rounding).
                while self._start_s + rel <= self._now_s:
                    rel = trace.next_tick_after(rel + 1e-6)
                best = min(best, self._start_s + rel)
        return best if best <= limit_s else None

    def _apply_events(self, at: float) -> int:
        """Apply everything due at `at`; returns how many notices were sent."""
        sent = 0
        while self._events and self._events[0][0] <= at:
            _, _, kind, node_id = heapq.heappop(self._events)
            inst = self._instances[node_id]
            if inst.state not in LIVE_STATES:
                continue
            if kind == "ready" and inst.state is InstanceState.PENDING:
                inst.state = InstanceState.RUNNING
                self.version += 1
            elif kind == "sick":
                self.version += 1  # it stops serving: the replay's capacity changes
            elif kind == "notice" and inst.deadline_s is None:
                self._notify(inst, at)
                sent += 1
            elif kind == "reclaim":
                self._end(inst, at, InstanceState.PREEMPTED)
                self.counters.preemptions += 1
                log.info("sim_preempted node_id=%s pool=%s at_s=%.0f", node_id, inst.pool.key, at)
        storm = self._storm
        if storm is not None and self._storm_caps is None and at >= storm.at_s:
            self._storm_caps = {}
            for pool in storm.pools:
                live = self._by_pool.get(pool, set())
                n = sum(1 for i in live if self._instances[i].deadline_s is None)
                self._storm_caps[pool] = math.floor(n * (1.0 - storm.share) + 1e-9)
            log.info(
                "sim_storm at_s=%.0f share=%.2f pools=%d nodes_kept=%d",
                at, storm.share, len(storm.pools), sum(self._storm_caps.values()),
            )  # fmt: skip
        for pool, live in self._by_pool.items():
            cap = self._cap_at(pool, at) if live else None
            if cap is None:
                continue
            holding = sorted(n for n in live if self._instances[n].deadline_s is None)
            excess = len(holding) - cap
            if excess > 0:
                # Which instances a cloud reclaims is its business; pick them with the
                # run's seed so a replay repeats.
                rng = np.random.default_rng([self._seed, zlib.crc32(pool.key.encode()), int(at)])
                for i in sorted(rng.choice(len(holding), size=excess, replace=False)):
                    self._notify(self._instances[holding[int(i)]], at)
                    sent += 1
        return sent

    def _notify(self, inst: _Instance, at: float) -> None:
        inst.deadline_s = at + self._notice_s.get(inst.pool.cloud, 120.0)
        self.counters.notices += 1
        self._unread.append(
            InterruptionNotice(inst.node_id, inst.cloud_instance_id, inst.pool, inst.deadline_s)
        )
        self._push(inst.deadline_s, "reclaim", inst.node_id)
        log.info(
            "sim_notice node_id=%s pool=%s at_s=%.0f deadline_s=%.0f",
            inst.node_id, inst.pool.key, at, inst.deadline_s,
        )  # fmt: skip

    def _push(self, at: float, kind: str, node_id: str) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, self._seq, kind, node_id))

    def _end(self, inst: _Instance, at: float, state: InstanceState) -> None:
        self.version += 1
        inst.state = state
        inst.ended_at_s = at
        self._by_pool[inst.pool].discard(inst.node_id)
        billed = max(MIN_BILLED_S, math.ceil(at - inst.launched_at_s - 1e-9))
        self._closed_cost[inst.pool.market] += self._billed_usd(inst, billed)
        self._closed_gpu_s += inst.gpus * billed
        if state is InstanceState.PREEMPTED:
            self._gone.append((at + self._retention_s, inst.node_id))

    def _billed_usd(self, inst: _Instance, seconds: float) -> float:
        """What `seconds` of `inst` from its launch cost: at its pool's price series where
        there is one, else at the price locked in at launch."""
        series = self._prices.get(inst.pool)
        if series is None:
            return inst.usd_per_hour * seconds / 3600.0
        start = inst.launched_at_s - self._start_s
        return series.cost_usd(start, start + seconds)

    def _expire_listing(self) -> None:
        while self._gone and self._gone[0][0] <= self._now_s:
            _, node_id = self._gone.popleft()
            inst = self._instances[node_id]
            if inst.state is InstanceState.PREEMPTED:
                inst.state = InstanceState.TERMINATED

    # ------------------------------------------------------------------ test hooks

    def inject_error(self, method: str, error: ProviderError) -> None:
        """Make the next call of `method` ("launch", "terminate", ...) raise `error` once."""
        self._injected[method].append(error)

    def _call(self, method: str, arg: str = "") -> None:
        self.calls.append((method, arg))
        queue = self._injected.get(method)
        if queue:
            raise queue.popleft()

    # ------------------------------------------------------------------ Provider

    def _cap_at(self, pool: Pool, at: float) -> int | None:
        """Spot instances `pool` can hold at virtual time `at`: its trace's count, and
        during a storm at most what the storm left it; None when nothing limits it."""
        trace = self._traces.get(pool)
        cap = None if trace is None else trace.capacity_at(at - self._start_s)
        storm, caps = self._storm, self._storm_caps
        if storm is not None and caps is not None and pool in caps and at < storm.until_s:
            cap = caps[pool] if cap is None else min(cap, caps[pool])
        return cap

    def _capacity_left(self, pool: Pool) -> int | None:
        cap = self._cap_at(pool, self._now_s)
        if cap is None:
            return None
        live = self._by_pool.get(pool, ())
        holding = sum(1 for n in live if self._instances[n].deadline_s is None)
        return cap - holding

    def boot_time_s(self, model: str, itype: InstanceType) -> float:
        """Launch-to-ready delay of a node of `model` on `itype` (see the module doc)."""
        if itype.name in self._boot_by_type:
            return self._boot_by_type[itype.name]
        if self._boot_of is not None:
            return self._boot_of(model, itype)
        return self._boot_s

    async def launch(self, request: LaunchRequest) -> Instance:
        """Start one instance; a second launch with the same node id returns the first."""
        try:
            self._call("launch", request.node_id)
        except ProviderError:
            self.counters.failed_launches += 1
            raise
        existing = self._instances.get(request.node_id)
        if existing is not None:
            return self._snapshot(existing)
        pool = request.pool
        offering = self._offerings.get(pool)
        reason = None
        if offering is None:
            reason = "pool not offered"
        elif not offering.available:
            reason = "pool unavailable"
        else:
            left = self._capacity_left(pool)
            if left is not None and left <= 0:
                reason = "no spot capacity"
        if reason is not None or offering is None:
            self.counters.failed_launches += 1
            key = pool.key
            self.counters.by_pool_failures[key] = self.counters.by_pool_failures.get(key, 0) + 1
            log.info("sim_launch_failed node_id=%s pool=%s reason=%r", request.node_id, key, reason)
            raise InsufficientCapacity(f"{pool.key}: {reason}", pool=pool)
        itype = self._types[(pool.cloud, pool.instance_type)]
        boot = self.boot_time_s(request.model, itype)
        inst = _Instance(
            node_id=request.node_id,
            cloud_instance_id=f"sim-{len(self._instances) + 1:07d}",
            model=request.model,
            pool=pool,
            state=InstanceState.RUNNING if boot <= 0 else InstanceState.PENDING,
            launched_at_s=self._now_s,
            ready_at_s=self._now_s + boot,
            usd_per_hour=offering.usd_per_hour,
            gpus=itype.gpu_count,
        )
        self._instances[inst.node_id] = inst
        self._by_pool[pool].add(inst.node_id)
        self.counters.launches += 1
        self._inject(inst)
        self.version += 1
        if boot > 0:
            self._push(inst.ready_at_s, "ready", inst.node_id)
        self._launch_seq[pool] += 1
        rate = offering.interruptions_per_hour
        if pool.market is Market.SPOT and pool not in self._traces and self._random and rate > 0:
            rng = np.random.default_rng(
                [self._seed, zlib.crc32(pool.key.encode()), self._launch_seq[pool]]
            )
            self._push(self._now_s + float(rng.exponential(3600.0 / rate)), "notice", inst.node_id)
        log.info(
            "sim_launch node_id=%s pool=%s ready_at_s=%.0f", inst.node_id, pool.key, inst.ready_at_s
        )
        return self._snapshot(inst)

    def _inject(self, inst: _Instance) -> None:
        """Draw the new instance's model-server fate from (seed, its launch number)."""
        f = self._faults
        if not f.any:
            return
        rng = np.random.default_rng([self._seed, 0x4EA17, self.counters.launches])
        never, delay = float(rng.random()), float(rng.exponential(1.0))
        bad = inst.pool in f.bad_pools and f.bad_from_s <= self._now_s < f.bad_until_s
        if bad or never < f.never_healthy_share:
            inst.healthy = False
            self.counters.faulty_boots += 1
        elif f.sick_per_node_day > 0:
            inst.sick_at_s = inst.ready_at_s + delay * 86400.0 / f.sick_per_node_day
            self._push(inst.sick_at_s, "sick", inst.node_id)

    def serves(self, node_id: str) -> bool:
        """Whether `node_id`'s model server serves now (running and not faulty)."""
        inst = self._instances.get(node_id)
        return inst is not None and inst.serves(self._now_s)

    async def terminate(self, node_id: str) -> None:
        """Terminate `node_id`; already gone (or never known) is not an error."""
        self._call("terminate", node_id)
        inst = self._instances.get(node_id)
        if inst is None or inst.state not in LIVE_STATES:
            return
        self._end(inst, self._now_s, InstanceState.TERMINATED)
        self.counters.terminations += 1

    async def list_instances(self) -> list[Instance]:
        """Live instances, and reclaimed ones for a few minutes after (as PREEMPTED)."""
        self._call("list_instances")
        # Live instances are the pools' members, reclaimed ones wait in `_gone` until
        # they drop off the listing: no need to walk every instance a week ever had.
        ids = {n for live in self._by_pool.values() for n in live}
        ids.update(n for _, n in self._gone)
        listed = (self._instances[n] for n in sorted(ids))
        return [
            self._snapshot(i)
            for i in listed
            if i.state in LIVE_STATES or i.state is InstanceState.PREEMPTED
        ]

    async def offerings(self) -> list[Offering]:
        """Every pool this cloud sells, at the scenario's prices (in force now)."""
        self._call("offerings")
        out = list(self._offerings.values())
        if self._prices:
            rel = self._now_s - self._start_s
            for i, o in enumerate(out):
                series = self._prices.get(o.pool)
                if series is not None:
                    out[i] = replace(o, usd_per_hour=series.price_at(rel), price_is_estimate=False)
        if self._reveal:
            for i, o in enumerate(out):
                left = self._capacity_left(o.pool)
                if left is not None and left <= 0:
                    out[i] = replace(o, available=False)
        return out

    async def interruption_notices(self) -> list[InterruptionNotice]:
        """Notices sent since the last call."""
        self._call("interruption_notices")
        out, self._unread = self._unread, []
        return out

    # ------------------------------------------------------------------ accounting

    def _snapshot(self, inst: _Instance) -> Instance:
        address = self._node_address or fake_address(inst.cloud_instance_id)
        return Instance(
            inst.node_id, inst.cloud_instance_id, inst.model, inst.pool, inst.state,
            inst.launched_at_s, address,
        )  # fmt: skip

    def running(self) -> Iterator[Instance]:
        """Instances up and serving now (RUNNING), in node id order."""
        for pool_ids in self._by_pool.values():
            for node_id in pool_ids:
                inst = self._instances[node_id]
                if inst.state is InstanceState.RUNNING:
                    yield self._snapshot(inst)

    def serving(self) -> Iterator[Instance]:
        """Instances whose model server serves now: `running()` less the injected faults."""
        for pool_ids in self._by_pool.values():
            for node_id in pool_ids:
                inst = self._instances[node_id]
                if inst.serves(self._now_s):
                    yield self._snapshot(inst)

    def live_by_pool(self) -> dict[Pool, int]:
        """Live (pending or running) instances per pool."""
        return {p: len(ids) for p, ids in self._by_pool.items() if ids}

    def usage(self) -> Usage:
        """Cost and GPU-hours billed up to now (live instances by the second so far)."""
        cost = dict(self._closed_cost)
        gpu_s = self._closed_gpu_s
        for ids in self._by_pool.values():
            for node_id in ids:
                inst = self._instances[node_id]
                up_s = self._now_s - inst.launched_at_s
                cost[inst.pool.market] += self._billed_usd(inst, up_s)
                gpu_s += inst.gpus * up_s
        return Usage(cost, gpu_s / 3600.0)

    def cost_by_model_pool(self) -> dict[tuple[str, Pool], float]:
        """USD billed up to now per (model tag, pool), by the rule of `usage` (an ended
        instance for its billed seconds, a live one by the second so far): the parts of
        `usage().cost_usd`, for the cost per model and GPU kind of a replay
        (`simulations.token_cost`)."""
        out: dict[tuple[str, Pool], float] = {}
        for inst in self._instances.values():
            if inst.ended_at_s is not None:
                up_s = max(MIN_BILLED_S, math.ceil(inst.ended_at_s - inst.launched_at_s - 1e-9))
            else:
                up_s = self._now_s - inst.launched_at_s
            key = (inst.model, inst.pool)
            out[key] = out.get(key, 0.0) + self._billed_usd(inst, up_s)
        return out

    def billed_intervals(
        self, pools: Collection[Pool] | None = None
    ) -> list[tuple[Pool, float, float]]:
        """(pool, launched at, billed until) of every instance ever launched in `pools`
        (None: every pool): until its end, or now while it lives (the commitments'
        coverage is counted on these, `simulations.commitment_bill`)."""
        out: list[tuple[Pool, float, float]] = []
        for inst in self._instances.values():
            if pools is None or inst.pool in pools:
                end = inst.ended_at_s if inst.ended_at_s is not None else self._now_s
                out.append((inst.pool, inst.launched_at_s, end))
        return out

    def spot_capacity(self, pool: Pool) -> int | None:
        """Spot instances `pool` can hold now; None when no trace limits it."""
        return self._cap_at(pool, self._now_s)


class SimHealthProbe:
    """A `scheduler.decide.health.HealthProbe` answered by the simulated cloud: a node passes
    when its instance runs and its model server serves (see `SimFaults`)."""

    def __init__(self, cloud: SimCloud) -> None:
        self.cloud = cloud  # the simulated cloud the nodes run in

    async def check(self, node: Node) -> bool | None:
        """Whether the node's simulated model server answers."""
        return self.cloud.serves(node.node_id)
