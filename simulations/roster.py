"""Policies the simulator can replay, by name.

`POLICIES` maps a name (as given to ``capsched simulate --policy``) to a factory
(`simulations.policies.PolicyFactory`): capsched's own policy, the diagnostic
`capsched-perfect-forecast`, and the baselines of `simulations.baselines.registry`.
The registry is written out here, not filled by import side effects, so the modules it
names import nothing back from it.
"""

from __future__ import annotations

from collections.abc import Sequence

from scheduler.config import Config
from scheduler.decide.observation import Policy
from scheduler.decide.policy import CapschedPolicy
from scheduler.domain import CapacityProfile
from scheduler.fleet.catalog import Catalog
from simulations.baselines.registry import BASELINES
from simulations.perfect_forecast import perfect_forecast
from simulations.policies import PolicyFactory, TraceInfo


def _capsched(
    config: Config, catalog: Catalog, profiles: Sequence[CapacityProfile], info: TraceInfo
) -> Policy:
    policy: Policy = CapschedPolicy(config, catalog, tuple(profiles))
    return policy


def _capsched_perfect_forecast(
    config: Config, catalog: Catalog, profiles: Sequence[CapacityProfile], info: TraceInfo
) -> Policy:
    return perfect_forecast(config, catalog, profiles, info)


POLICIES: dict[str, PolicyFactory] = {
    "capsched": _capsched,
    "capsched-perfect-forecast": _capsched_perfect_forecast,
    **BASELINES,
}


def policy_names() -> list[str]:
    """Every registered policy name, baselines included."""
    return sorted(POLICIES)


def make_policy(
    name: str,
    config: Config,
    catalog: Catalog,
    profiles: Sequence[CapacityProfile],
    info: TraceInfo,
) -> Policy:
    """A fresh policy called `name` (KeyError naming the known ones if there is none)."""
    try:
        factory = POLICIES[name]
    except KeyError:
        raise KeyError(
            f"unknown policy {name!r}; expected one of {', '.join(sorted(POLICIES))}"
        ) from None
    return factory(config, catalog, profiles, info)
