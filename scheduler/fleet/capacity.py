"""The capacity of one node: the one place that says how many requests/s a node of a
configured model in a pool is counted on for.

A node carries its best capacity profile's rate at the model's SLO
(`scheduler.fleet.profiles.instance_capacity`) times `planning.target_utilization` (under a
per-token SLO, at most the utilisation that leaves room to wait for a slot). The planner,
the reconciler, the policy, the baselines and the simulator's trace scaling all count
with this number; the replay engine counts the profile's full rate (utilisation 1.0).

The request size counts too: a node serving requests of mean size `size` (a
`RequestSize`; None means the reference request of the profiles) carries the profile
rate times `scheduler.fleet.profiles.size_factor` (docs/profiles.md "Request size"), so the
same rate of long prompts needs more nodes than of short ones. `demand_size` is the
one rule for the size of a model's mixed demand.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from scheduler.config import Config
from scheduler.domain import (
    REFERENCE_SIZE,
    CapacityProfile,
    Demand,
    InstanceType,
    Pool,
    RequestSize,
)
from scheduler.fleet.catalog import Catalog
from scheduler.fleet.profiles import instance_capacity
from scheduler.ports.metrics import DemandSample


def sample_sizes(sample: DemandSample) -> dict[str, RequestSize | None]:
    """Per model in `sample`, the mean size of its observed load (`demand_size` over its
    regions' rates and sizes; a region without a size counts as the reference request).
    Readings that are not finite positive numbers are no size."""
    demand: list[Demand] = []
    for (model, region), rps in sample.rps.items():
        if not (isinstance(rps, float | int) and math.isfinite(rps) and rps > 0):
            continue
        inp = sample.input_tokens.get((model, region), math.nan)
        out = sample.output_tokens.get((model, region), math.nan)
        ok = all(isinstance(v, float | int) and math.isfinite(v) and v > 0 for v in (inp, out))
        demand.append(Demand(model, region, float(rps), RequestSize(inp, out) if ok else None))
    return {model: demand_size(demand, model) for model in {d.model for d in demand}}


def token_load(demand: Demand) -> float:
    """`demand`'s rate in reference requests' worth of tokens: rps x tokens per request /
    the reference request's tokens; exactly `rps` without a size. For comparing loads of
    different sizes (is it a rise?), not for capacity, which `node_rps` computes."""
    if demand.size is None:
        return demand.rps
    return demand.rps * demand.size.tokens / REFERENCE_SIZE.tokens


def demand_size(demand: Iterable[Demand], model: str) -> RequestSize | None:
    """The mean request size of `model`'s demand: prompt and output tokens averaged
    over its entries weighted by rate (an entry without a size counts as the reference
    request). None when no entry has a size, or none has a positive rate (the reference
    request: capacity exactly as without sizes)."""
    rate = inp = out = 0.0
    sized = False
    for d in demand:
        if d.model != model or not d.rps > 0:
            continue
        size = d.size or REFERENCE_SIZE
        sized = sized or d.size is not None
        rate += d.rps
        inp += d.rps * size.input_tokens
        out += d.rps * size.output_tokens
    if not sized or rate <= 0:
        return None
    return RequestSize(inp / rate, out / rate)


def node_rps(
    config: Config,
    profiles: Sequence[CapacityProfile],
    model: str,
    itype: InstanceType,
    utilization: float | None = None,
    size: RequestSize | None = None,
) -> float:
    """Requests/s one node of the configured `model` on `itype` is planned to carry:
    profile rps at the model's SLO for requests of `size` (None: the reference request)
    x `utilization` (default: the config's target utilisation); 0.0 where the model
    cannot be served there. KeyError for a model the config does not have. Under a
    per-token SLO the batch is the one that carries most with room for waits at the
    config's target utilisation, and the default utilisation is the share of the node
    that leaves that room (`instance_capacity`, at most the target); an explicit
    `utilization` scales the batch's full rate."""
    section = config.model(model)
    target = config.planning.target_utilization
    rps, planned = instance_capacity(
        profiles,
        section.profile or section.name,
        itype,
        section.latency_slo_ms,
        None,
        size,
        section.token_slo,
        target,
    )
    return (planned if utilization is None else utilization) * rps


class NodeCapacity:
    """`node_rps` per (model, pool), cached: many pools share an instance shape, and a
    tick asks for the same pairs again and again."""

    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        profiles: Sequence[CapacityProfile],
        utilization: float | None = None,
    ) -> None:
        self._config = config  # models, their SLOs and the target utilisation
        self._catalog = catalog  # the instance type each pool sells
        self._profiles = profiles  # measured capacity profiles
        self._utilization = utilization  # None: the config's target utilisation
        # (model, GPU kind, GPU count, GPU memory, size) -> rps: all `instance_rps`
        # depends on.
        self._cache: dict[tuple[str, str, int, float, RequestSize | None], float] = {}

    def itype(self, pool: Pool) -> InstanceType:
        """The instance type a pool sells (KeyError if the catalog has none)."""
        return self._catalog.instance_type(pool)

    def rps(self, model: str, pool: Pool, size: RequestSize | None = None) -> float:
        """Requests/s one node of `model` in `pool` is planned to carry for requests of
        `size` (None: the reference request); 0: cannot serve. KeyError when the catalog
        has no instance type for the pool."""
        itype = self.itype(pool)
        key = (model, itype.gpu_kind, itype.gpu_count, itype.gpu_memory_gb, size)
        got = self._cache.get(key)
        if got is None:
            if len(self._cache) > _CACHE_LIMIT:  # per-minute sizes of a long replay
                self._cache.clear()
            got = self._cache[key] = node_rps(
                self._config, self._profiles, model, itype, self._utilization, size
            )
        return got


_CACHE_LIMIT = 100_000  # NodeCapacity entries kept before the cache starts over
