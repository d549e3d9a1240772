"""One constructor for the scheduler, shared by the daemon and the simulator
(as Karpenter's simulated provider calls the production controller constructor)."""

from __future__ import annotations

import asyncio

from scheduler.config import Config
from scheduler.decide.health import HealthProbe
from scheduler.decide.observation import Policy
from scheduler.decide.policy import CapschedPolicy
from scheduler.domain import CapacityProfile
from scheduler.fleet.catalog import Catalog, load_catalog
from scheduler.fleet.profiles import load_profiles
from scheduler.loop.actuator import Actuator, Sleep
from scheduler.loop.reconciler import Reconciler
from scheduler.loop.store import StateStore
from scheduler.ports.drain import Drainer, NoTrafficLayer
from scheduler.ports.metrics import MetricsSource
from scheduler.ports.provider import Provider


def build_scheduler(
    config: Config,
    *,
    provider: Provider,
    metrics: MetricsSource,
    store: StateStore,
    policy: Policy | None = None,
    drainer: Drainer | None = None,
    catalog: Catalog | None = None,
    profiles: tuple[CapacityProfile, ...] | None = None,
    sleep: Sleep = asyncio.sleep,
    health_probe: HealthProbe | None = None,
) -> Reconciler:
    """A reconciler wired to these edges; the policy defaults to capsched's own.
    `health_probe` checks nodes when the config has a `[health]` section."""
    catalog = catalog or load_catalog()
    profiles = profiles if profiles is not None else load_profiles()
    drainer = drainer or NoTrafficLayer()
    return Reconciler(
        config=config,
        catalog=catalog,
        profiles=profiles,
        provider=provider,
        metrics=metrics,
        policy=policy or CapschedPolicy(config, catalog, profiles),
        store=store,
        drainer=drainer,
        actuator=Actuator(store, provider, drainer, sleep=sleep, seed=config.solver.seed),
        health_probe=health_probe,
    )
