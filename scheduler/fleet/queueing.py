"""The queue model of a node: M/M/c, the one model the planner and the replay share.

A node serving a model at a capacity profile holds `node_slots` requests in service at
once (its rate x its service time, Little's law); a request that finds them all busy
waits. The replay (`simulations.latency.within_slo_share`) counts a request within the
SLO when its wait fits its budget; the planner (`scheduler.fleet.profiles.best_profile`)
picks, under a per-token SLO, only a batch whose first-token budget leaves a wait that a
node at the planned utilisation meets (`wait_within`), so both judge a wait alike
(docs/profiles.md "Latency SLOs").
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray


def node_slots(rps: float, latency_s: float) -> int:
    """Requests in service at once on a node of `rps` whose requests take `latency_s`
    (Little's law, at least one)."""
    return max(1, round(rps * latency_s))


def erlang_c(offered: ArrayLike, slots: ArrayLike) -> NDArray[Any]:
    """Probability that an arrival waits in M/M/c with `slots` servers (c >= 1) and
    `offered` load in servers (arrival rate / one server's rate); 1 where the load
    reaches c. Vectorised: Erlang B by its recursion up to the largest c, frozen per
    entry once k reaches its c."""
    a = np.asarray(offered, dtype=np.float64)
    c = np.asarray(slots, dtype=np.int64)
    b = np.ones(np.broadcast(a, c).shape)
    for k in range(1, int(np.max(c, initial=1)) + 1):
        b = np.where(k <= c, a * b / (k + a * b), b)
    rho = np.minimum(a / c, 1.0)
    return np.where(rho < 1.0, b / np.maximum(1.0 - rho * (1.0 - b), 1e-300), 1.0)


def _erlang_c_one(offered: float, slots: int) -> float:
    """`erlang_c` of one node below full load (offered < slots), in plain floats: the
    planner asks it for many rows and sizes, where numpy's per-call cost dominates."""
    b = 1.0
    for k in range(1, slots + 1):
        b = offered * b / (k + offered * b)
    rho = offered / slots
    return b / max(1.0 - rho * (1.0 - b), 1e-300)


def wait_within(utilization: float, capacity_rps: float, slots: int, wait_s: float) -> float:
    """P(wait <= `wait_s`) at a node of `capacity_rps` with `slots` servers loaded to
    `utilization` of it: 1 - Erlang C x exp(-(capacity - load) x wait); 0 when the budget
    is negative or the node is full (the replay's `within_slo_share` per request)."""
    if wait_s < 0 or capacity_rps <= 0 or utilization >= 1.0:
        return 0.0
    if utilization <= 0:
        return 1.0
    wait_prob = _erlang_c_one(utilization * slots, slots)
    drain = capacity_rps * (1.0 - utilization)
    return 1.0 - wait_prob * math.exp(-drain * wait_s) if math.isfinite(wait_s) else 1.0


def max_utilization(
    capacity_rps: float, slots: int, wait_s: float, attainment: float, cap: float
) -> float:
    """The largest utilisation <= `cap` (to 1e-4) at which `attainment` of the requests
    of a node of `capacity_rps` and `slots` wait no more than `wait_s` (`wait_within`,
    which falls as the load grows); 0 when none does."""
    if wait_within(cap, capacity_rps, slots, wait_s) >= attainment:
        return cap
    lo, hi = 0.0, cap
    while hi - lo > 1e-4:
        mid = (lo + hi) / 2
        if wait_within(mid, capacity_rps, slots, wait_s) >= attainment:
            lo = mid
        else:
            hi = mid
    return lo
