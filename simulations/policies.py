"""What a replayed policy may know of its run, and the shape of a policy factory.

`PolicyFactory` is ``(config, catalog, profiles, trace_info) -> Policy``; the registry
of factories by name is `simulations.roster`. `TraceInfo` is what the run knows beyond
one tick's observation: the whole demand trace and the spot availability traces. Only
the `oracle` baseline (perfect foresight), `static-peak` (sized for the trace's peak)
and the diagnostic `capsched-perfect-forecast` (capsched fed the true future demand
instead of its forecast) may read ahead in it; every other policy must decide from
`Observation` alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from adapters.sim import SpotTrace
from adapters.spot_prices import SpotPriceSeries
from scheduler.config import Config
from scheduler.decide.observation import Policy
from scheduler.domain import CapacityProfile, Demand, Offering, Pool, RequestSize
from scheduler.fleet.capacity import demand_size
from scheduler.fleet.catalog import Catalog
from simulations.bucket_steps import BucketSteps
from simulations.scenario import SpotHedgeSection


@dataclass(frozen=True, eq=False)
class TraceInfo:
    """The replayed scenario as a whole: demand over time and spot capacity per pool."""

    start_s: float  # virtual time of the first step (epoch seconds when the trace has dates)
    step_s: float  # length of one demand step, seconds (60)
    keys: tuple[tuple[str, str], ...]  # (model, region) of each demand row
    demand_rps: np.ndarray  # shape (len(keys), n_steps): requests/s per step, after scaling
    offerings: tuple[Offering, ...]  # what the simulated cloud sells (scenario multipliers applied)
    spot_traces: Mapping[Pool, SpotTrace] = field(default_factory=dict)  # capacity per spot pool
    # Spot price over time per pool (times from start_s); other pools keep their offering's.
    spot_prices: Mapping[Pool, SpotPriceSeries] = field(default_factory=dict)
    # Launch-to-ready delay of every instance in the simulated cloud; where nodes boot per
    # model and type (`World.boot_per_node`), the longest of those (warm-up, oracle).
    boot_time_s: float = 600.0
    seed: int = 0  # seed of the run (random interruptions, tie breaks)
    # The `spothedge` baseline's parameters (the scenario's `[spothedge]` table).
    spothedge: SpotHedgeSection = field(default_factory=SpotHedgeSection)
    # Mean (input, output) tokens per request per key and step, shape (2, len(keys),
    # n_steps), NaN: the reference request; None: the trace gives no sizes
    # (simulations.demand.DemandTrace.tokens).
    tokens: np.ndarray | None = None
    # Each key's requests split by prompt length per step (simulations.demand.DemandTrace
    # .buckets); None: the trace gives no per-request sizes.
    buckets: BucketSteps | None = None

    def demand_at(self, step: int) -> list[Demand]:
        """Every series' rate and mean request size at `step` (clamped to the trace)."""
        t = min(max(step, 0), self.n_steps - 1)
        out = []
        for k, (m, r) in enumerate(self.keys):
            rps = float(self.demand_rps[k, t])
            size = None
            if self.tokens is not None and np.isfinite(self.tokens[:, k, t]).all():
                size = RequestSize(float(self.tokens[0, k, t]), float(self.tokens[1, k, t]))
            out.append(Demand(m, r, 0.0 if math.isnan(rps) else rps, size))
        return out

    def size_at(self, model: str, step: int) -> RequestSize | None:
        """The mean request size of `model`'s demand at `step` (`demand_size` over its
        series); None without sizes (the reference request)."""
        if self.tokens is None:
            return None
        return demand_size(self.demand_at(step), model)

    @property
    def n_steps(self) -> int:
        """Number of demand steps."""
        return int(self.demand_rps.shape[1])

    @property
    def end_s(self) -> float:
        """Virtual time at which the replay ends."""
        return self.start_s + self.step_s * self.n_steps

    def peak_rps(self) -> dict[tuple[str, str], float]:
        """Highest per-step rate of every (model, region) series."""
        peaks = np.nanmax(self.demand_rps, axis=1, initial=0.0)
        return {k: float(v) for k, v in zip(self.keys, peaks, strict=True)}

    def demand_series(self) -> dict[tuple[str, str], np.ndarray]:
        """Requests/s per step of every (model, region)."""
        return {k: self.demand_rps[i] for i, k in enumerate(self.keys)}

    def spot_capacity_series(self) -> dict[Pool, np.ndarray]:
        """Per traced spot pool, the fewest instances it can hold during each demand step
        (a trace tick shorter than a step can empty the pool for part of it)."""
        out: dict[Pool, np.ndarray] = {}
        done: dict[int, np.ndarray] = {}  # one trace often drives many pools
        for pool, trace in self.spot_traces.items():
            if id(trace) not in done:
                sub = max(1, math.ceil(self.step_s / trace.gap_s))
                rel = np.arange(self.n_steps)[:, None] * self.step_s + (
                    np.arange(sub)[None, :] * (self.step_s / sub)
                )
                idx = np.maximum(np.floor((rel + trace.offset_s) / trace.gap_s), 0).astype(np.int64)
                n = len(trace.counts)
                idx = idx % n if trace.loop else np.minimum(idx, n - 1)
                done[id(trace)] = trace.counts[idx].min(axis=1)
            out[pool] = done[id(trace)]
        return out

    def spot_capacity_at(self, pool: Pool, t_s: float) -> int | None:
        """Spot instances `pool` can hold at `t_s`; None when no trace limits it."""
        trace = self.spot_traces.get(pool)
        return None if trace is None else trace.capacity_at(t_s - self.start_s)


PolicyFactory = Callable[[Config, Catalog, Sequence[CapacityProfile], TraceInfo], Policy]
