"""What a replay accounts per step, in named parts `simulations.engine.replay` calls.

- `ReadyCapacity`: the ready capacity at a step's start per model and serving location,
  recomputed only when the serving fleet, the draining set or the request sizes change;
- `Backlog`: deferrable (batch) demand that capacity did not serve, queued oldest first
  until its deadline, and the requests that missed it;
- `Ledger`: the per-step arrays a `RunResult` is made of (demand, capacity, served,
  slots, service time, tokens per request, capacity per market and per GPU kind, cost
  per market, the forecast and the per-series figures).

Nothing here reads a clock or a cloud API: the replay passes each step's facts in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

import numpy as np

from scheduler.domain import REFERENCE_SIZE, Market, Pool, RequestSize
from scheduler.ports.provider import Instance


class NodeFigures(Protocol):
    """How one node serves (`simulations.engine.NodeService`)."""

    @property
    def rps(self) -> float:
        """Requests/s it sustains at the SLO."""
        ...

    @property
    def slots(self) -> int:
        """Requests it holds in flight."""
        ...

    @property
    def latency_s(self) -> float:
        """Mean service time of one request."""
        ...

    @property
    def wait_s(self) -> float:
        """How long a request may wait for a slot and still be within the SLO."""
        ...


class ReadyCapacity:
    """Ready capacity at the start of a step, per model and serving location."""

    def __init__(
        self,
        n_models: int,
        n_locations: int,
        service: Callable[[str, Pool, RequestSize | None], NodeFigures],
        model_index: Mapping[str, int],
        loc_index: Mapping[str, int],
        gpu_kind: Callable[[Pool], str] | None = None,
    ) -> None:
        """`gpu_kind`: the GPU kind of a pool's instance type, for the capacity per GPU
        kind (None: every node's kind is "")."""
        self._service = service
        self._gpu_kind = gpu_kind or (lambda _: "")
        self._model_index = model_index
        self._loc_index = loc_index
        self._shape = (n_models, n_locations)
        self._key: object = None  # what the figures below were computed for
        self.by_location = np.zeros(self._shape)  # rps per (model, location)
        self.latency_weight = np.zeros(self._shape)  # sum of rps x latency per (model, location)
        self.wait_weight = np.zeros(self._shape)  # sum of rps x wait budget per (model, location)
        self.slots = np.zeros(self._shape, dtype=np.int64)  # in flight per (model, location)
        self.by_market = {m.value: 0.0 for m in Market}  # rps per market, all models
        self.by_kind: dict[str, np.ndarray] = {}  # GPU kind -> rps per model

    def update(
        self,
        version: int,
        serving: Callable[[], Iterable[Instance]],
        draining: frozenset[str],
        sizes: tuple[RequestSize | None, ...],
    ) -> None:
        """Recompute for the cloud's `version` of its fleet (`serving()`: the instances
        that serve now), the nodes `draining` (no new traffic) and each model's request
        `sizes`, unless nothing of that changed since the last call."""
        key = (version, draining, sizes)
        if key == self._key:
            return
        self._key = key
        self.by_location = np.zeros(self._shape)
        self.latency_weight = np.zeros(self._shape)
        self.wait_weight = np.zeros(self._shape)
        self.slots = np.zeros(self._shape, dtype=np.int64)
        self.by_market = {m.value: 0.0 for m in Market}
        self.by_kind = {}
        for inst in serving():
            if inst.node_id in draining or inst.model not in self._model_index:
                continue
            m = self._model_index[inst.model]
            loc = self._loc_index[inst.pool.location]
            svc = self._service(inst.model, inst.pool, sizes[m])
            self.by_location[m, loc] += svc.rps
            self.slots[m, loc] += svc.slots
            self.latency_weight[m, loc] += svc.rps * svc.latency_s
            if svc.rps > 0:
                self.wait_weight[m, loc] += svc.rps * svc.wait_s
            self.by_market[inst.pool.market.value] += svc.rps
            kind = self._gpu_kind(inst.pool)
            if kind not in self.by_kind:
                self.by_kind[kind] = np.zeros(self._shape[0])
            self.by_kind[kind][m] += svc.rps


class Backlog:
    """Deferrable (batch) series queue what capacity does not serve: per series, FIFO
    [arrival step, requests left]; a request unserved past its deadline is a miss."""

    def __init__(
        self,
        deadlines_s: Sequence[float | None],
        key_rows: Sequence[tuple[int, int]],
        keys: Sequence[tuple[str, str]],
        step_s: float,
    ) -> None:
        """`deadlines_s` per model (None: interactive), `key_rows` the (model, region)
        index of each series, `keys` its (model, region) names."""
        self.deadlines_s = list(deadlines_s)
        self._key_rows = list(key_rows)
        self._keys = list(keys)
        self._step_s = step_s
        self.queues: dict[int, deque[list[float]]] = {
            s: deque() for s, (m, _) in enumerate(key_rows) if deadlines_s[m] is not None
        }
        self.waiting: dict[tuple[str, str], float] = {}  # requests waiting per series now
        self.missed = np.zeros(len(deadlines_s))  # requests past their deadline per model

    def waiting_rps(self, series: int) -> float:
        """What waits in `series`, as a rate over one step."""
        return sum(q[1] for q in self.queues.get(series, ())) / self._step_s

    def serve(self, step: int, arrived_rps: Sequence[float], served_rps: np.ndarray) -> None:
        """Serve step `step`: per series its arrivals (`arrived_rps`) and its routed rate
        (`served_rps`, models x regions), oldest first; drop what can no longer make it."""
        for s, queue in self.queues.items():
            m, r = self._key_rows[s]
            serve_in_order(
                queue, step, arrived_rps[s] * self._step_s, served_rps[m, r] * self._step_s
            )
            deadline = self.deadlines_s[m] or 0.0
            while queue and (step + 1 - queue[0][0]) * self._step_s > deadline + 1e-9:
                self.missed[m] += queue.popleft()[1]  # cannot be served in time any more
            self.waiting[self._keys[s]] = sum(q[1] for q in queue)

    def at_end(self, models: Sequence[str]) -> dict[str, float]:
        """Requests still waiting, within their deadline, per deferrable model."""
        out = {models[m]: 0.0 for m, d in enumerate(self.deadlines_s) if d is not None}
        for s, queue in self.queues.items():
            out[models[self._key_rows[s][0]]] += sum(q[1] for q in queue)
        return out


def serve_in_order(queue: deque[list[float]], step: int, arrived: float, served: float) -> None:
    """Serve `served` requests of a deferrable series, oldest first (what waited, then the
    step's `arrived` ones), and queue the arrivals left over as arriving at `step`."""
    while queue and served > 1e-9:
        take = min(queue[0][1], served)
        queue[0][1] -= take
        served -= take
        if queue[0][1] <= 1e-9:
            queue.popleft()
    left = arrived - min(arrived, served)
    if left > 1e-9:
        queue.append([float(step), left])


class Ledger:
    """The per-step figures of one replay (see the module docstring)."""

    def __init__(self, n_models: int, n_series: int, n_steps: int) -> None:
        shape = (n_models, n_steps)
        self.demand = np.zeros(shape)  # requests/s arriving per model
        self.capacity = np.zeros(shape)  # ready capacity per model
        # ready capacity per model within reach of a region with load: the servers of the
        # step's queue (capacity out of every loaded region's reach shortens no wait)
        self.queue_capacity = np.zeros(shape)
        self.served = np.zeros(shape)  # demand routed to capacity per model
        # what reaches the model's queue: served, and the excess of regions with capacity
        # in reach, which waits (`simulations.latency.within_slo`)
        self.arrivals = np.zeros(shape)
        self.slots = np.zeros(shape, dtype=np.int64)  # in flight per model, within reach
        self.tokens = np.zeros(shape)  # tokens per request per model
        self.service_s = np.zeros(shape)  # mean service time per model, within reach
        self.wait_s = np.zeros(shape)  # mean wait budget per model, within reach
        self.by_market = {m.value: np.zeros(n_steps) for m in Market}  # capacity per market
        # GPU kind -> ready capacity per model (models, steps): how a step's served tokens
        # split over GPU kinds (simulations.token_cost).
        self.by_kind: dict[str, np.ndarray] = {}
        self.cost = {m.value: np.zeros(n_steps) for m in Market}  # cumulative USD per market
        self.forecast = np.full(n_steps, np.nan)  # the policy's planned total
        self.series_demand = np.zeros((n_series, n_steps))
        self.series_capacity = np.zeros((n_series, n_steps))
        self.series_served = np.zeros((n_series, n_steps))
        self.series_planned = np.full((n_series, n_steps), np.nan)

    def record_fleet(
        self, step: int, ready: ReadyCapacity, sizes: Sequence[RequestSize | None]
    ) -> None:
        """The fleet's side of step `step`: request sizes, capacity per market (the
        slots and service time of the nodes the load can reach: `simulations.engine`)."""
        for m, size in enumerate(sizes):
            self.tokens[m, step] = (size or REFERENCE_SIZE).tokens
        for market, rps in ready.by_market.items():
            self.by_market[market][step] = rps
        for kind, per_model in ready.by_kind.items():
            if kind not in self.by_kind:
                self.by_kind[kind] = np.zeros_like(self.demand)
            self.by_kind[kind][:, step] = per_model

    def record_cost(self, step: int, spent: Mapping[Market, float]) -> None:
        """Cumulative cost per market at the end of step `step`."""
        for market in Market:
            self.cost[market.value][step] = spent.get(market, 0.0)
