"""The capacity of one node: the one place that says how many requests/s a node of a
configured model in a pool is counted on for.

A node carries its best capacity profile's rate at the model's SLO
(`scheduler.fleet.profiles.instance_rps`) times `planning.target_utilization`. The planner,
the reconciler, the policy, the baselines and the simulator's trace scaling all count
with this number; the replay engine counts the profile's full rate (utilisation 1.0).
"""

from __future__ import annotations

from collections.abc import Sequence

from scheduler.config import Config
from scheduler.domain import CapacityProfile, InstanceType, Pool
from scheduler.fleet.catalog import Catalog
from scheduler.fleet.profiles import instance_rps


def node_rps(
    config: Config,
    profiles: Sequence[CapacityProfile],
    model: str,
    itype: InstanceType,
    utilization: float | None = None,
) -> float:
    """Requests/s one node of the configured `model` on `itype` is planned to carry:
    profile rps at the model's SLO x `utilization` (default: the config's target
    utilisation); 0.0 where the model cannot be served there. KeyError for a model the
    config does not have."""
    section = config.model(model)
    util = config.planning.target_utilization if utilization is None else utilization
    return util * instance_rps(
        profiles, section.profile or section.name, itype, section.latency_slo_ms
    )


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
        # (model, GPU kind, GPU count, GPU memory) -> rps: all `instance_rps` depends on.
        self._cache: dict[tuple[str, str, int, float], float] = {}

    def itype(self, pool: Pool) -> InstanceType:
        """The instance type a pool sells (KeyError if the catalog has none)."""
        return self._catalog.instance_type(pool)

    def rps(self, model: str, pool: Pool) -> float:
        """Requests/s one node of `model` in `pool` is planned to carry (0: cannot serve).
        KeyError when the catalog has no instance type for the pool."""
        itype = self.itype(pool)
        key = (model, itype.gpu_kind, itype.gpu_count, itype.gpu_memory_gb)
        got = self._cache.get(key)
        if got is None:
            got = self._cache[key] = node_rps(
                self._config, self._profiles, model, itype, self._utilization
            )
        return got
