"""What one tick knows about the world, and the policy interface that decides on it."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from scheduler.domain import Node, NodeState, Offering, Plan, Pool
from scheduler.forecast.band_feedback import BandMemory
from scheduler.ports.metrics import DemandSample
from scheduler.ports.provider import InterruptionNotice

if TYPE_CHECKING:
    from scheduler.config import Config


@dataclass(frozen=True, slots=True)
class Observation:
    """Every outside fact a decision may use; decisions read nothing else."""

    now_s: float  # time of the tick (virtual in simulations)
    demand: DemandSample  # latest request rates per (model, region)
    demand_complete: bool  # every configured (model, region) series present and finite
    nodes: tuple[Node, ...]  # live nodes (not gone or failed) after merging the cloud listing
    offerings: tuple[Offering, ...]  # current prices and availability
    notices: tuple[InterruptionNotice, ...]  # interruption notices still pending

    def serving(self) -> tuple[Node, ...]:
        """Nodes that count as capacity now or soon: requested, booting or ready,
        and not under an interruption notice."""
        noticed = {n.node_id for n in self.notices}
        alive = {NodeState.REQUESTED, NodeState.BOOTING, NodeState.READY}
        return tuple(n for n in self.nodes if n.state in alive and n.node_id not in noticed)

    def short_models(self, rate_of: Callable[[str, Pool], float]) -> frozenset[str]:
        """Models whose ready nodes serve less than the demand of this reading: `rate_of`
        gives the requests/s one node of a model in a pool sustains at the model's SLO
        (the whole rate, not the planning target's share of it). Such a model misses its
        SLO now, with or without a move of its nodes (docs/solver.md, "Preemption storms
        under a budget")."""
        ready: defaultdict[str, float] = defaultdict(float)
        for n in self.serving():
            if n.state is NodeState.READY:
                ready[n.model] += rate_of(n.model, n.pool)
        asked: defaultdict[str, float] = defaultdict(float)
        for (model, _), rps in self.demand.rps.items():
            asked[model] += rps if math.isfinite(rps) else 0.0
        return frozenset(m for m, rps in asked.items() if ready[m] < rps - 1e-9)


class Policy(Protocol):
    """Turns an observation into a target fleet. capsched's own policy and every
    baseline implement this, so the simulator runs them through the same reconciler.
    A policy may keep state between ticks (forecaster, hysteresis windows); that
    state is explicit, driven by `obs.now_s`, never by the wall clock."""

    name: str  # short name used in reports ("capsched", "spothedge", ...)

    def decide(self, obs: Observation) -> Plan:
        """The target fleet for this tick."""
        ...

    def revise(self, obs: Observation) -> Plan:
        """The target fleet for this tick again, on a newer observation of the same tick
        (a pool refused a launch): replaces the tick's `decide`, so the policy's state
        changes once per tick however often the tick decides."""
        ...

    def planned_rps(self) -> Mapping[tuple[str, str], float]:
        """Rates the last decision provisions for, per (model, region); empty for a
        policy that does not plan per series."""
        ...

    def forecast_quantiles(self) -> Mapping[tuple[str, str], Mapping[float, float]]:
        """Forecast peak over the horizon per quantile and (model, region) that the last
        decision used; empty for a policy without a forecaster."""
        ...

    def band_scales(self) -> Mapping[str, float]:
        """Per model, the factor on the forecast band the last decision planned with (1:
        the plain quantile); empty for a policy without one."""
        ...

    def warm_start(self, history: Sequence[DemandSample]) -> int:
        """Learn from demand observed before a restart (oldest first, the samples the
        earlier ticks saw) as if those ticks had run; returns the ticks learnt from."""
        ...

    def band_memory(self) -> BandMemory | None:
        """What the policy's forecast band has learnt from its past plans, for the store to
        keep across a restart; None for a policy without a learnt band."""
        ...

    def restore_band(self, memory: BandMemory) -> None:
        """Take up a band memory stored before a restart (`band_memory`)."""
        ...

    def reconfigure(self, config: Config) -> None:
        """Decide with `config` (already checked) from the next tick on."""
        ...

    def lower_bound(self) -> tuple[float, str] | None:
        """A lower bound on the replay's cost in USD and how it was found, for a policy
        that knows one (the simulator's oracle); None otherwise."""
        ...


class PolicyBase:
    """What a policy without a forecaster answers for the `Policy` members it has no
    use for: no per-series plan, no forecast, no bound, nothing to reload. The
    simulator's baselines (and the tests' fixed policies) build on it."""

    name: str  # short name used in reports

    def decide(self, obs: Observation) -> Plan:
        """The target fleet for this tick (each baseline defines it)."""
        raise NotImplementedError

    def revise(self, obs: Observation) -> Plan:
        """Decide again within the tick. Unlike capsched's policy a baseline does not roll
        its state back first: its state may change twice in a tick with a stock-out."""
        return self.decide(obs)

    def planned_rps(self) -> Mapping[tuple[str, str], float]:
        """Nothing planned per series."""
        return {}

    def forecast_quantiles(self) -> Mapping[tuple[str, str], Mapping[float, float]]:
        """No forecast."""
        return {}

    def band_scales(self) -> Mapping[str, float]:
        """No forecast band."""
        return {}

    def warm_start(self, history: Sequence[DemandSample]) -> int:
        """Nothing learnt from history."""
        return 0

    def band_memory(self) -> BandMemory | None:
        """No learnt band."""
        return None

    def restore_band(self, memory: BandMemory) -> None:
        """No band to restore."""

    def reconfigure(self, config: Config) -> None:
        """Keep deciding as built: such a policy reads no reloadable setting (the
        simulator builds one per replay and never reloads)."""

    def lower_bound(self) -> tuple[float, str] | None:
        """No bound."""
        return None
