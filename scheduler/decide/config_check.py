"""Checks of a valid config against the catalog and the capacity profiles.

The schema (scheduler.config) proves a file is well formed; these checks prove
the names in it exist: regions, locations, accelerators, profiles.
"""

from __future__ import annotations

from collections.abc import Sequence

from scheduler.config import Config
from scheduler.decide.planner import PlanningError, resolve_location
from scheduler.domain import CapacityProfile, Cloud
from scheduler.fleet.catalog import Catalog


def _known(values: set[str]) -> str:
    shown = sorted(values)
    more = f", ... {len(shown) - 12} more" if len(shown) > 12 else ""
    return ", ".join(shown[:12]) + more


def check_config(
    config: Config, catalog: Catalog, profiles: Sequence[CapacityProfile]
) -> list[str]:
    """One line per name in `config` that the catalog or profiles do not know."""
    problems: list[str] = []
    profile_models = {p.model for p in profiles}
    for i, m in enumerate(config.models):
        key = m.profile or m.name
        if key not in profile_models:
            field = "profile" if m.profile else "name"
            problems.append(
                f"models[{i}].{field}: no capacity profile {key!r}"
                f" (known: {_known(profile_models)})"
            )
    for i, r in enumerate(config.regions):
        try:
            resolve_location(catalog, r.location)
        except PlanningError:
            problems.append(f"regions[{i}].location: {r.location!r} is not a catalog region")
    for cloud in Cloud:
        section = getattr(config.clouds, cloud.value)
        regions = {o.pool.region for o in catalog.offerings if o.pool.cloud is cloud}
        kinds = {t.gpu_kind for (c, _), t in catalog.instance_types.items() if c is cloud}
        for j, region in enumerate(section.regions):
            if region not in regions:
                problems.append(
                    f"clouds.{cloud.value}.regions[{j}]: unknown region {region!r}"
                    f" (known: {_known(regions)})"
                )
        for j, kind in enumerate(section.gpu_kinds):
            if kind not in kinds:
                problems.append(
                    f"clouds.{cloud.value}.gpu_kinds[{j}]: unknown accelerator {kind!r}"
                    f" (known: {_known(kinds)})"
                )
    for i, q in enumerate(config.quotas):
        regions = {o.pool.region for o in catalog.offerings if o.pool.cloud is q.cloud}
        if q.region is not None and q.region not in regions:
            problems.append(f"quotas[{i}].region: unknown {q.cloud.value} region {q.region!r}")
    return problems
