"""A stock-out's second decision of a tick re-searches only what the refusal touched; a rise
under `planning.rise_adds_only` only adds to the target."""

from __future__ import annotations

import dataclasses
from typing import Any

import builders
import pytest

import solver.mip
from scheduler.decide.policy import CapschedPolicy
from scheduler.domain import Offering, Plan, Pool
from scheduler.fleet.catalog import load_catalog
from scheduler.fleet.profiles import load_profiles
from solver.problem import Problem, Solution

BIG = "llama-3.1-70b"
KEY = (builders.MODEL, builders.REGION)


def _targets(plan: Plan, model: str) -> dict[Pool, int]:
    return {pl.pool: pl.count for pl in plan.placements if pl.model == model}


def test_a_revise_keeps_the_targets_the_refused_pool_does_not_touch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = builders.fleet_config(
        models=[{"name": builders.MODEL, "min_replicas": 1}, {"name": BIG, "min_replicas": 1}]
    )
    catalog = load_catalog()
    policy = CapschedPolicy(cfg, catalog, load_profiles())
    rps = {(builders.MODEL, builders.REGION): 30.0, (BIG, builders.REGION): 6.0}
    first = policy.decide(builders.observation(0.0, offerings=catalog.offerings, rps=rps))
    small, big = _targets(first, builders.MODEL), _targets(first, BIG)
    assert small and big and first.kept_models == ()  # the first tick searched both
    # A launch of the 8B's was refused: its cheapest pool is out of stock. The 70B's
    # target does not use that pool (the two models run on different GPU kinds here).
    refused = min(small, key=lambda p: (p in big, -small[p]))
    assert refused not in big
    offerings: tuple[Offering, ...] = tuple(
        dataclasses.replace(o, available=False) if o.pool == refused else o
        for o in catalog.offerings
    )
    searched: list[tuple[str, ...]] = []
    solve = solver.mip.solve

    def counting(problem: Problem, **kw: Any) -> Solution:
        keep = set(kw.get("keep_models", ()))
        searched.append(tuple(m for i, m in enumerate(problem.models) if i not in keep))
        return solve(problem, **kw)

    monkeypatch.setattr("scheduler.decide.planner.solve", counting)
    revised = policy.revise(builders.observation(0.0, offerings=offerings, rps=rps))
    assert searched == [(builders.MODEL,)]  # the 70B stands: it is not searched again
    assert _targets(revised, BIG) == big
    assert refused not in _targets(revised, builders.MODEL)  # the 8B moved off the pool
    assert sum(_targets(revised, builders.MODEL).values()) >= 1


def test_rise_adds_only_reaches_the_solver_and_a_rise_keeps_the_target(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`planning.rise_adds_only` is the solver's `grow_kept` (whose effect on a search is
    `tests/test_solver.py`'s); the tick after a rise keeps each pool's nodes and adds."""
    solve = solver.mip.solve
    for adds_only in (False, True):
        passed: list[bool] = []

        def recording(problem: Problem, passed: list[bool] = passed, **kw: Any) -> Solution:
            passed.append(kw["grow_kept"])
            return solve(problem, **kw)

        monkeypatch.setattr("scheduler.decide.planner.solve", recording)
        cfg = builders.fleet_config(planning={"rise_adds_only": adds_only})
        catalog = load_catalog()
        policy = CapschedPolicy(cfg, catalog, load_profiles())
        seen = builders.observation(0.0, offerings=catalog.offerings, rps={KEY: 12.0})
        before = _targets(policy.decide(seen), builders.MODEL)
        rose = builders.observation(300.0, offerings=catalog.offerings, rps={KEY: 45.0})
        grown = policy.decide(rose)
        after = _targets(grown, builders.MODEL)
        assert passed == [adds_only, adds_only]
        assert all(after.get(pool, 0) >= count for pool, count in before.items())
        assert sum(after.values()) > sum(before.values()) and not grown.unmet
