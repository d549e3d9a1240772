"""Daemon benchmark: latency of one reconcile tick and memory with 1,000 nodes, 20 models.

Run:  .venv/bin/python benchmarks/bench_daemon.py [--nodes 1000] [--baseline-nodes 100]
                                                 [--models 20] [--ticks 50]

The state is built directly: a state store and a simulated cloud pre-filled with
`--nodes` ready nodes spread over the pools a first solve picks for `--models` models
(named model-00.., each on one of the three profiled models) in two source regions.
After `--warmup` untimed ticks (the forecaster's cold start reshapes the prefilled
fleet), `Reconciler.tick` runs `--ticks` times, five virtual minutes apart, while demand
drifts slowly (a +-10 % swell over the run, 1 % noise), as the daemon would run it.

Per tick, wall time is split into: cloud calls (time inside the provider, i.e. the
simulated cloud's listing and actions), plan (the policy: forecast and solve), and the
rest (merging the listing into the store, guards, journaling, recording the plan).
Printed: p50 and p99 of the tick excluding cloud calls, with and without the plan,
the solves' own time, and the peak RSS of the process (getrusage); the same for the
baseline fleet (`--baseline-nodes`, run first) and the ratios between the two.

Target (issue 5): p99 under 1 s including the solve, peak RSS under 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import random
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from adapters.sim import SimCloud
from scheduler.config import Config
from scheduler.decide.observation import Observation
from scheduler.decide.planner import make_plan
from scheduler.decide.policy import CapschedPolicy
from scheduler.domain import CapacityProfile, Demand, Node, NodeState, Plan
from scheduler.fleet.catalog import Catalog, load_catalog
from scheduler.fleet.profiles import load_profiles
from scheduler.loop.factory import build_scheduler
from scheduler.loop.store import StateStore
from scheduler.ports.metrics import DemandSample
from scheduler.ports.provider import LaunchRequest, Provider

PROFILES = ("llama-3.1-8b", "llama-3.2-3b", "llama-3.1-70b")
REGIONS = (("us-east", "us-east-1"), ("eu-west", "eu-west-1"))
TICK_S = 300.0


def make_config(models: int) -> Config:
    return Config.model_validate(
        {
            "models": [
                {"name": f"model-{i:02d}", "profile": PROFILES[i % len(PROFILES)]}
                for i in range(models)
            ],
            "regions": [
                {"name": name, "location": loc, "max_latency_ms": 60} for name, loc in REGIONS
            ],
            "planning": {"budget_usd_per_hour": None},
            "guards": {"min_node_age_s": 0},
            "scheduler": {"state_db": ":memory:"},
        }
    )


@dataclass
class Stopwatch:
    """Wall seconds spent inside wrapped calls."""

    elapsed_s: float = 0.0  # running total

    async def timed(self, call: Awaitable[Any]) -> Any:
        t0 = time.perf_counter()
        try:
            return await call
        finally:
            self.elapsed_s += time.perf_counter() - t0


class TimedProvider:
    """Forwards to the simulated cloud, adding the time of every call to a stopwatch."""

    def __init__(self, inner: Provider, watch: Stopwatch) -> None:
        self.inner, self.watch = inner, watch

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self.inner, name)

        async def call(*args: Any) -> Any:
            return await self.watch.timed(method(*args))

        return call


class TimedPolicy(CapschedPolicy):
    """capsched's policy with its decisions timed (a `revise` decides again through
    `decide`, so it is timed once). A subclass, not a wrapper: it answers the whole
    `Policy` interface as capsched does, however that interface grows."""

    def __init__(
        self, config: Config, catalog: Catalog, profiles: Sequence[CapacityProfile]
    ) -> None:
        super().__init__(config, catalog, profiles)
        self.elapsed_s = 0.0  # wall seconds inside decide
        self.solves: list[float] = []  # solver time per tick (0 when the last plan stood)
        self.searched: list[int] = []  # models searched per tick (the rest were kept)
        self._timed_last: Plan | None = None

    def decide(self, obs: Observation) -> Plan:
        t0 = time.perf_counter()
        plan = super().decide(obs)
        self.elapsed_s += time.perf_counter() - t0
        fresh = plan is not self._timed_last
        self.solves.append(plan.solve_time_s if fresh else 0.0)
        self.searched.append(len(self.config.models) - len(plan.kept_models) if fresh else 0)
        self._timed_last = plan
        return plan


class Load:
    """Demand per (model, region): a base, a slow swell, and a little noise."""

    def __init__(self, base: dict[tuple[str, str], float], ticks: int, seed: int = 0) -> None:
        self.base, self.ticks = base, ticks
        self.rng = random.Random(seed)
        self.i = 0

    def rates(self, i: int) -> dict[tuple[str, str], float]:
        swell = 1.0 + 0.1 * math.sin(2 * math.pi * i / max(1, self.ticks))
        return {k: v * swell * (1 + 0.01 * self.rng.uniform(-1, 1)) for k, v in self.base.items()}

    async def demand(self, now_s: float) -> DemandSample:
        return DemandSample(now_s, self.rates(self.i))


def base_demand(
    config: Config, catalog: Catalog, nodes: int
) -> tuple[dict[tuple[str, str], float], Plan]:
    """Per-series rates whose plan needs about `nodes` nodes, and that plan."""
    profiles = load_profiles()
    keys = [(m.name, r.name) for m in config.models for r in config.regions]
    rng = random.Random(1)
    weights = {k: rng.uniform(0.5, 1.5) for k in keys}
    scale = 1.0
    for _ in range(6):
        demand = [Demand(m, r, w * scale) for (m, r), w in weights.items()]
        plan = make_plan(config, catalog, profiles, demand)
        count = sum(p.count for p in plan.placements)
        if abs(count - nodes) <= 0.03 * nodes:
            break
        scale *= nodes / max(1, count)
    return {k: w * scale for k, w in weights.items()}, plan


async def prefill(store: StateStore, cloud: SimCloud, plan: Plan, now_s: float) -> int:
    """Launch the plan's fleet in the cloud and record it ready in the store."""
    n = 0
    with store.transaction():
        for pl in plan.placements:
            for _ in range(pl.count):
                node_id = store.next_node_id()
                inst = await cloud.launch(LaunchRequest(node_id, pl.model, pl.pool))
                node = Node(node_id, pl.model, pl.pool, NodeState.READY, inst.cloud_instance_id)
                store.add_node(node, now_s - 3600.0, cause="benchmark prefill")
                n += 1
    return n


@dataclass
class Result:
    nodes: int  # nodes at the start
    models: int  # models served
    ticks: int  # ticks timed
    excl_cloud_s: list[float] = field(default_factory=list)  # tick minus cloud calls
    excl_plan_s: list[float] = field(default_factory=list)  # also minus the policy
    plan_s: list[float] = field(default_factory=list)  # the policy alone
    solve_s: list[float] = field(default_factory=list)  # solver time per tick
    searched: list[int] = field(default_factory=list)  # models searched per tick
    actions: int = 0  # actions over the run
    peak_rss_mb: float = 0.0  # process peak after this run


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


async def run(nodes: int, models: int, ticks: int, warmup: int) -> Result:
    config = make_config(models)
    catalog = load_catalog()
    base, first = base_demand(config, catalog, nodes)
    start_s = 7 * 86400.0
    cloud = SimCloud(
        catalog.offerings,
        catalog.instance_types,
        start_s=start_s - 3600.0,
        boot_time_s=0.0,
        random_interruptions=False,
    )
    store = StateStore(":memory:")
    placed = await prefill(store, cloud, first, start_s)
    watch = Stopwatch()
    policy = TimedPolicy(config, catalog, load_profiles())
    load = Load(base, ticks)
    rec = build_scheduler(
        config,
        provider=TimedProvider(cloud, watch),  # type: ignore[arg-type]
        metrics=load,
        store=store,
        policy=policy,
        catalog=catalog,
    )
    result = Result(placed, models, ticks)
    for i in range(-warmup, ticks):
        now = start_s + (i + warmup) * TICK_S
        cloud.advance_to(now)
        load.i = max(0, i)
        if i < 0:  # the forecaster's cold start reshapes the prefilled fleet: not timed
            await rec.tick(now)
            continue
        cloud0, plan0 = watch.elapsed_s, policy.elapsed_s
        t0 = time.perf_counter()
        report = await rec.tick(now)
        total = time.perf_counter() - t0
        cloud_s, plan_s = watch.elapsed_s - cloud0, policy.elapsed_s - plan0
        result.excl_cloud_s.append(total - cloud_s)
        result.excl_plan_s.append(total - cloud_s - plan_s)
        result.plan_s.append(plan_s)
        result.actions += len(report.actions)
    result.solve_s = policy.solves[warmup:]
    result.searched = policy.searched[warmup:]
    result.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    store.close()
    return result


def show(r: Result) -> None:
    print(
        f"  {r.nodes} nodes, {r.models} models, {r.ticks} ticks, {r.actions} actions\n"
        f"    tick excl. cloud calls:           p50 {pct(r.excl_cloud_s, 0.5) * 1e3:7.1f} ms"
        f"   p99 {pct(r.excl_cloud_s, 0.99) * 1e3:7.1f} ms\n"
        f"    tick excl. cloud and plan/solve:  p50 {pct(r.excl_plan_s, 0.5) * 1e3:7.1f} ms"
        f"   p99 {pct(r.excl_plan_s, 0.99) * 1e3:7.1f} ms\n"
        f"    policy (forecast + solve):        p50 {pct(r.plan_s, 0.5) * 1e3:7.1f} ms"
        f"   p99 {pct(r.plan_s, 0.99) * 1e3:7.1f} ms"
        f"   (solver itself: p50 {pct(r.solve_s, 0.5) * 1e3:.1f} ms,"
        f" p99 {pct(r.solve_s, 0.99) * 1e3:.1f} ms)\n"
        f"    models searched per tick:         p50 {pct([float(n) for n in r.searched], 0.5):7.0f}"
        f"      max {max(r.searched, default=0):4d} of {r.models}\n"
        f"    peak RSS so far: {r.peak_rss_mb:.0f} MB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--baseline-nodes", type=int, default=100)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--ticks", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5, help="untimed ticks first")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print("baseline:")
    small = asyncio.run(run(args.baseline_nodes, args.models, args.ticks, args.warmup))
    show(small)
    print("target:")
    big = asyncio.run(run(args.nodes, args.models, args.ticks, args.warmup))
    show(big)
    ratio = big.nodes / max(1, small.nodes)
    print(f"ratios target/baseline (nodes x{ratio:.1f}):")
    for label, a, b in (
        ("tick excl. cloud p50", big.excl_cloud_s, small.excl_cloud_s),
        ("tick excl. cloud p99", big.excl_cloud_s, small.excl_cloud_s),
        ("excl. cloud and plan p50", big.excl_plan_s, small.excl_plan_s),
        ("excl. cloud and plan p99", big.excl_plan_s, small.excl_plan_s),
    ):
        q = 0.99 if label.endswith("p99") else 0.5
        print(f"  {label:26s} x{pct(a, q) / max(1e-9, pct(b, q)):.2f}")
    p99 = pct(big.excl_cloud_s, 0.99)
    ok = p99 < 1.0 and big.peak_rss_mb < 300
    print(
        f"target p99 < 1 s incl. solve: {p99:.3f} s; peak RSS < 300 MB: {big.peak_rss_mb:.0f} MB"
        f" -> {'met' if ok else 'MISSED'}"
    )
    print(f"(mean tick excl. cloud: {statistics.fmean(big.excl_cloud_s) * 1e3:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
