"""Builders for small replays: a one-model config, a scripted policy, a hand-made world."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from adapters.sim import SpotTrace
from adapters.spot_prices import SpotPriceSeries
from scheduler.config import Config
from scheduler.decide.observation import Observation, Policy, PolicyBase
from scheduler.domain import Cloud, Market, Placement, Plan, PlanStatus, Pool
from scheduler.fleet.catalog import Catalog, load_catalog
from scheduler.fleet.profiles import load_profiles
from simulations import roster
from simulations.engine import World
from simulations.policies import TraceInfo

MODEL = "llama-3.1-8b"
OD_POOL = Pool(Cloud.AWS, "us-east-1", "", "g6e.xlarge", Market.ON_DEMAND)
SPOT_POOL = Pool(Cloud.AWS, "us-east-1", "", "g6e.xlarge", Market.SPOT)


def small_config(**scheduler: object) -> Config:
    """One model, one region, AWS us-east-1 only, ticks every 5 minutes."""
    return Config.model_validate(
        {
            "scheduler": {"tick_interval_s": 300, **scheduler},
            "models": [{"name": MODEL, "min_replicas": 1}],
            "regions": [{"name": "us-east", "location": "us-east-1", "max_latency_ms": 40}],
            "clouds": {"aws": {"regions": ["us-east-1"]}, "gcp": {"enabled": False}},
            "guards": {"min_node_age_s": 0},
        }
    )


class Fixed(PolicyBase):
    """A policy that always wants the same fleet."""

    name = "fixed"

    def __init__(self, placements: tuple[Placement, ...]) -> None:
        self.placements = placements  # the fleet it asks for every tick

    def decide(self, obs: Observation) -> Plan:
        return Plan(PlanStatus.OPTIMAL, self.placements, 0.0, 0.0, 0.0, 0.0)


@contextmanager
def registered(name: str, policy: Policy) -> Iterator[None]:
    """Register `policy` under `name` for the duration of a test."""
    roster.POLICIES[name] = lambda *_: policy
    try:
        yield
    finally:
        del roster.POLICIES[name]


def world(
    config: Config,
    demand_rps: list[float],
    *,
    spot: dict[Pool, SpotTrace] | None = None,
    boot_time_s: float = 0.0,
    warmup_s: float = 0.0,
    seed: int = 0,
    catalog: Catalog | None = None,
    prices: dict[Pool, SpotPriceSeries] | None = None,
) -> World:
    """A world replaying `demand_rps` (one value per minute) for the config's first pair."""
    cat = catalog or load_catalog()
    keys = tuple((m.name, r.name) for m in config.models for r in config.regions)
    rps = np.zeros((len(keys), len(demand_rps)))
    rps[0] = demand_rps
    info = TraceInfo(
        start_s=0.0,
        step_s=60.0,
        keys=keys,
        demand_rps=rps,
        offerings=cat.offerings,
        spot_traces=spot or {},
        spot_prices=prices or {},
        boot_time_s=boot_time_s,
        seed=seed,
    )
    return World(config, cat, load_profiles(), info, warmup_s=warmup_s)
