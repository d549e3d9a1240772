"""Serving by size in a replay: each prompt-length bucket on the nodes the plan routes it
to (`[planning] place_by_size`, docs/profiles.md "Placement by size").

Where the trace has per-request sizes (`TraceInfo.buckets`) and `[planning] place_by_size`
is on, the replay's load signal reports each minute's bucket mix (`BucketedMetrics`),
capsched's plans route buckets to pools (`Placement.routes`; a baseline's route nothing),
and each step, for every policy:

* a ready node serves the buckets its pool's placement routes in the latest plan that
  held the pool (`RouteBook`; a pool the plans never routed a bucket to, a spare node or
  one placed before the plans had buckets, serves any bucket); a bucket a new plan moves
  elsewhere stays where it was until all its new nodes are ready (make before break);
* the minute's demand per bucket and source region goes to those nodes as a linear
  program finds the most served (`serve_buckets`): a node's time is shared between the
  buckets it serves, each at the node's rate for that bucket's mean size
  (`NodeService` at the size), within the source region's reach;
* each bucket's requests answered within its SLO are scored as the engine scores a
  model's (`simulations.latency.within_slo`: M/M/c below capacity, a backlog above it)
  over the node time it got (what it uses plus its part of the nodes' idle time), at the
  latency limit for its size.

What no routed node can take (a bucket the plan routed nowhere, or over capacity) is
unserved and counts against the SLO, as any unserved demand does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from ortools.linear_solver import pywraplp

from adapters.trace_metrics import TraceMetrics
from scheduler.domain import Plan, Pool, RequestSize
from scheduler.ports.metrics import DemandSample
from scheduler.ports.provider import Instance
from simulations.bucket_steps import BucketSteps
from simulations.ledger import NodeFigures

Range = tuple[float, float]  # (min, max) prompt tokens of a bucket

# Busy shares of a node group above which the routing pays a penalty (each level adds
# one to the slope): spreads a step's load over the groups routed to the same bucket.
BUSY_LEVELS = (0.5, 0.7, 0.8, 0.9, 0.95)


class BucketedMetrics:
    """The replay's load signal with each series' bucket mix of the same step."""

    def __init__(self, inner: TraceMetrics, buckets: BucketSteps) -> None:
        self.inner = inner  # the rates and mean sizes
        self.buckets = buckets  # per key and step (warm-up steps first, as `inner`)

    async def demand(self, now_s: float) -> DemandSample:
        """`inner`'s sample, with the buckets of the step it reports."""
        sample = await self.inner.demand(now_s)
        step = self.inner.step_at(now_s)
        split = {}
        for k, key in enumerate(self.inner.keys):
            found = self.buckets.at(k, step)
            if found:
                split[key] = found
        return replace(sample, buckets=split)


class RouteBook:
    """Which prompt ranges each (model, pool)'s nodes serve, make before break: per pool,
    what the latest plan holding it routed there (None: any range); and where that moved
    a range away from the pool, the pool keeps serving it until every node the latest
    plan routes that range to is ready (a router switches a bucket once its new nodes
    serve, as nodes are replaced only once their replacements are ready)."""

    def __init__(self) -> None:
        self.routed: dict[tuple[str, Pool], frozenset[Range] | None] = {}
        # What each pool was routed before its last change of routes.
        self.former: dict[tuple[str, Pool], frozenset[Range] | None] = {}
        # Per model, the latest plan's placements: pool -> (nodes, routed ranges).
        self.latest: dict[str, dict[Pool, tuple[int, frozenset[Range] | None]]] = {}

    def update(self, plan: Plan) -> None:
        """Take the routes of `plan`'s placements."""
        latest: dict[str, dict[Pool, tuple[int, frozenset[Range] | None]]] = {}
        for pl in plan.placements:
            ranges = (
                frozenset((r.min_input_tokens, r.max_input_tokens) for r in pl.routes)
                if pl.routes
                else None
            )
            key = (pl.model, pl.pool)
            if key in self.routed and self.routed[key] != ranges:
                self.former[key] = self.routed[key]
            self.routed[key] = ranges
            latest.setdefault(pl.model, {})[pl.pool] = (pl.count, ranges)
        self.latest = latest

    def serves(
        self, model: str, pool: Pool, rng: Range, ready: Mapping[tuple[str, Pool], int]
    ) -> bool:
        """Whether a node of `model` in `pool` takes requests of prompt range `rng`, with
        `ready` nodes per (model, pool)."""
        key = (model, pool)
        ranges = self.routed.get(key)
        if ranges is None or rng in ranges:
            return True
        if key not in self.former:
            return False
        before = self.former[key]
        return (before is None or rng in before) and not self._switched(model, rng, ready)

    def _switched(self, model: str, rng: Range, ready: Mapping[tuple[str, Pool], int]) -> bool:
        """Whether every node the latest plan routes `rng` to is ready."""
        return all(
            ready.get((model, pool), 0) >= count
            for pool, (count, ranges) in self.latest.get(model, {}).items()
            if ranges is None or rng in ranges
        )


@dataclass(frozen=True, slots=True)
class NodeGroup:
    """The ready nodes of one model in one pool, as the buckets see them."""

    location: int  # index of the pool's location (the engine's `loc_index`)
    nodes: int  # ready nodes, not draining
    serves: tuple[bool, ...]  # per bucket: routed here
    figures: tuple[NodeFigures | None, ...]  # per bucket: one node at its size (None: empty)


@dataclass(frozen=True, slots=True)
class BucketService:
    """One model's step served by bucket."""

    flows: np.ndarray  # (buckets, regions): rps routed to nodes
    capacity_rps: np.ndarray  # (buckets,): rps of the node time each bucket got
    slots: np.ndarray  # (buckets,): requests in service at once on that time
    service_s: np.ndarray  # (buckets,): mean service time there
    wait_s: np.ndarray  # (buckets,): mean wait budget there (NodeService.wait_s)


def serve_buckets(
    demand: np.ndarray, groups: Sequence[NodeGroup], reach: np.ndarray
) -> BucketService:
    """The most of `demand` (buckets x regions, rps) the `groups` serve: a linear
    program, each group's node time shared between the buckets routed to it (a bucket's
    request takes 1 / the node's rate for its size), each region only to locations in
    its `reach` (regions x locations)."""
    n_b, n_r = demand.shape
    zeros = BucketService(
        np.zeros((n_b, n_r)), np.zeros(n_b), np.zeros(n_b), np.zeros(n_b), np.zeros(n_b)
    )
    if demand.sum() <= 0 or not groups:
        return zeros
    lp = pywraplp.Solver.CreateSolver("GLOP")
    x: dict[tuple[int, int, int], pywraplp.Variable] = {}
    for g, grp in enumerate(groups):
        for b in range(n_b):
            fig = grp.figures[b]
            if not grp.serves[b] or fig is None or fig.rps <= 0:
                continue
            for r in range(n_r):
                if demand[b, r] > 0 and reach[r, grp.location]:
                    x[b, r, g] = lp.NumVar(0.0, float(demand[b, r]), "")
    if not x:
        return zeros
    for b in range(n_b):
        for r in range(n_r):
            terms = [v for (bb, rr, _), v in x.items() if bb == b and rr == r]
            if terms:
                lp.Add(lp.Sum(terms) <= float(demand[b, r]))
    loads: list[tuple[pywraplp.LinearExpr, float]] = []  # per group: node time, nodes
    for g, grp in enumerate(groups):
        terms = [
            v * (1.0 / grp.figures[b].rps)  # type: ignore[union-attr]
            for (b, _, gg), v in x.items()
            if gg == g
        ]
        if terms:
            lp.Add(lp.Sum(terms) <= float(grp.nodes))
            loads.append((lp.Sum(terms), float(grp.nodes)))
    # First the most served; then, serving that, the load spread as a load balancer
    # spreads it: a convex penalty on each group's busy share (a vertex of the first
    # program may fill one pool while another routed to the same bucket idles).
    total = lp.Sum(list(x.values()))
    lp.Maximize(total)
    lp.Solve()
    most = lp.Objective().Value()
    lp.Add(total >= most - 1e-7 * max(1.0, most))
    over: list[pywraplp.Variable] = []
    for expr, nodes in loads:
        for level in BUSY_LEVELS:
            e = lp.NumVar(0.0, lp.infinity(), "")
            lp.Add(e >= expr - level * nodes)
            over.append(e)
    lp.Minimize(lp.Sum(over))
    lp.Solve()
    flows = np.zeros((n_b, n_r))
    time = np.zeros((len(groups), n_b))  # node time per group and bucket
    for (b, r, g), v in x.items():
        val = max(v.solution_value(), 0.0)
        flows[b, r] += val
        time[g, b] += val / groups[g].figures[b].rps  # type: ignore[union-attr]
    capacity, slots, weight = np.zeros(n_b), np.zeros(n_b), np.zeros(n_b)
    wait = np.zeros(n_b)
    for g, grp in enumerate(groups):
        used = float(time[g].sum())
        if used <= 0:
            continue
        for b in range(n_b):
            fig = grp.figures[b]
            if fig is None or time[g, b] <= 0:
                continue
            got = time[g, b] * grp.nodes / used  # its time plus its part of the idle time
            capacity[b] += got * fig.rps
            slots[b] += got * fig.slots
            weight[b] += got * fig.rps * fig.latency_s
            wait[b] += got * fig.rps * fig.wait_s
    with np.errstate(invalid="ignore", divide="ignore"):
        service = np.where(capacity > 0, weight / capacity, 0.0)
        wait_s = np.where(capacity > 0, wait / capacity, 0.0)
    return BucketService(flows, capacity, np.maximum(np.round(slots), 1.0), service, wait_s)


class BucketLedger:
    """Per model, bucket and step what `serve_buckets` found, and the latency limits, for
    the requests within the SLO at the end (`simulations.latency.within_slo`)."""

    def __init__(self, n_models: int, n_buckets: int, n_steps: int) -> None:
        shape = (n_models, n_buckets, n_steps)
        self.served = np.zeros(shape)  # rps served
        self.arrivals = np.zeros(shape)  # rps reaching a bucket with capacity (what may wait)
        self.capacity = np.zeros(shape)  # rps of the node time it got
        self.slots = np.zeros(shape, dtype=np.int64)  # requests in service at once
        self.service_s = np.zeros(shape)  # mean service time
        self.limit_s = np.full(shape, math.inf)  # latency limit at the bucket's size
        self.models: set[int] = set()  # models served by bucket in some step

    def record(
        self,
        m: int,
        step: int,
        got: BucketService,
        limits_s: Sequence[float],
        demand_rps: np.ndarray,
    ) -> None:
        """Model `m`'s step `step` (`demand_rps`: each bucket's arrivals)."""
        self.models.add(m)
        self.served[m, :, step] = served = got.flows.sum(axis=1)
        self.arrivals[m, :, step] = np.where(got.capacity_rps > 0, demand_rps, served)
        self.capacity[m, :, step] = got.capacity_rps
        self.slots[m, :, step] = got.slots.astype(np.int64)
        self.service_s[m, :, step] = got.service_s
        self.limit_s[m, :, step] = limits_s


class BySize:
    """The replay's side of placement by size: the routes, the step's node groups, the
    step's buckets per model and the per-bucket ledger."""

    def __init__(
        self,
        buckets: BucketSteps,
        key_rows: Sequence[tuple[int, int]],
        n_models: int,
        n_steps: int,
    ) -> None:
        self.buckets = buckets  # per key and trace step (no warm-up)
        self.key_rows = list(key_rows)  # (model, region) index per key
        self.ranges = buckets.ranges()
        self.routes = RouteBook()
        self.ledger = BucketLedger(n_models, buckets.n_buckets, n_steps)
        self._counts: dict[tuple[str, Pool], int] = {}
        self._counted_for: object = None

    def count_nodes(
        self, version: int, serving: Callable[[], Iterable[Instance]], draining: frozenset[str]
    ) -> Mapping[tuple[str, Pool], int]:
        """Ready nodes per (model, pool), not draining (recounted when the fleet changed)."""
        key = (version, draining)
        if key != self._counted_for:
            counts: dict[tuple[str, Pool], int] = {}
            for inst in serving():
                if inst.node_id not in draining:
                    counts[inst.model, inst.pool] = counts.get((inst.model, inst.pool), 0) + 1
            self._counts, self._counted_for = counts, key
        return self._counts

    def step_mix(
        self, m: int, step: int, demand_reg: np.ndarray, rps_by_key: np.ndarray, n_regions: int
    ) -> tuple[np.ndarray, list[RequestSize | None]]:
        """Model `m`'s demand at `step` per bucket and region (its per-region total
        `demand_reg`, arrivals and what waits, split as the step's arrivals are) and each
        bucket's mean size (None: empty)."""
        n_b = self.buckets.n_buckets
        split = np.zeros((n_b, n_regions))
        weight = np.zeros(n_b)
        tokens = np.zeros((2, n_b))
        for k, (mm, r) in enumerate(self.key_rows):
            if mm != m:
                continue
            shares = self.buckets.shares[:, k, step]
            rate = float(np.nan_to_num(rps_by_key[k]))
            if not np.isfinite(shares).any() or shares.sum() <= 0:
                shares = np.eye(n_b)[0]  # no mix known (no request): the first bucket
            shares = np.nan_to_num(shares)
            split[:, r] += shares
            w = shares * rate
            weight += w
            for j in range(2):
                tokens[j] += w * np.nan_to_num(self.buckets.tokens[j, :, k, step])
        # Per region, its total split by the region's mix (regions sharing a key list
        # were summed above; normalise per region).
        col = split.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            split = np.where(col > 0, split / col, 0.0) * demand_reg[None, :]
        sizes: list[RequestSize | None] = []
        for b in range(n_b):
            if weight[b] > 0 and tokens[0, b] > 0:
                # At least one output token: a minute of answers cut at 0 is still served.
                out = max(tokens[1, b] / weight[b], 1.0)
                sizes.append(RequestSize(tokens[0, b] / weight[b], out))
            else:
                sizes.append(None)
        return split, sizes

    def groups(
        self,
        model: str,
        counts: Mapping[tuple[str, Pool], int],
        sizes: Sequence[RequestSize | None],
        service: Callable[[str, Pool, RequestSize | None], NodeFigures],
        loc_index: Mapping[str, int],
    ) -> list[NodeGroup]:
        """The node groups of `model` for buckets of `sizes`."""
        out: list[NodeGroup] = []
        for (mm, pool), n in sorted(counts.items()):
            if mm != model or n <= 0:
                continue
            out.append(
                NodeGroup(
                    loc_index[pool.location],
                    n,
                    tuple(self.routes.serves(model, pool, rng, counts) for rng in self.ranges),
                    tuple(None if s is None else service(model, pool, s) for s in sizes),
                )
            )
        return out
