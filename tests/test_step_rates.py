"""`StepRates` asks `NodeCapacity` once per (model, pool) and distinct size, however often
the oracle's pool pruning and rounding read it (issue #20: asking per step and per call
kept the oracle on the x10 prompts running for more than 10 minutes)."""

from __future__ import annotations

from typing import cast

import pytest

from scheduler.domain import Cloud, Market, Pool, RequestSize
from scheduler.fleet.capacity import NodeCapacity
from simulations.baselines.common import StepRates


class CountingCapacity:
    """A NodeCapacity stand-in: rps = 1000 / tokens (the reference: 1), counting calls."""

    def __init__(self) -> None:
        self.calls = 0  # rps look-ups so far

    def rps(self, model: str, pool: Pool, size: RequestSize | None = None) -> float:
        self.calls += 1
        scale = 2.0 if pool.instance_type == "g.2" else 1.0
        return scale * (1.0 if size is None else 1000.0 / size.tokens)


def pool(itype: str) -> Pool:
    return Pool(Cloud.AWS, "us-east-1", "", itype, Market.ON_DEMAND)


SMALL, LARGE = RequestSize(100.0, 100.0), RequestSize(400.0, 100.0)


@pytest.mark.parametrize("steps", [10, 1_000])
def test_capacity_is_asked_once_per_pool_and_distinct_size(steps: int) -> None:
    fake = CountingCapacity()
    sizes = [SMALL if t % 3 else (LARGE if t % 2 else None) for t in range(steps)]
    rates = StepRates(cast(NodeCapacity, fake), {"m": sizes})
    pools = [pool("g.1"), pool("g.2")]
    for _ in range(5):  # as the pruning's pairs and the rounding's trials read it again
        for p in pools:
            rates.distinct("m", p)
            for first in range(0, steps, 7):
                rates.over("m", p, first, 7, most=False)
                rates.over("m", p, first, 7, most=True)
            rates.at("m", p, steps - 1)
    assert fake.calls == len(pools) * 3  # None, SMALL, LARGE: independent of the steps


def test_rates_are_the_capacity_at_each_steps_size() -> None:
    fake = CountingCapacity()
    sizes = [SMALL, LARGE, None, SMALL]
    rates = StepRates(cast(NodeCapacity, fake), {"m": sizes})
    p = pool("g.2")
    assert [rates.at("m", p, t) for t in range(4)] == [fake.rps("m", p, s) for s in sizes]
    assert rates.distinct("m", p) == (2.0, fake.rps("m", p, SMALL), fake.rps("m", p, LARGE))
    assert rates.over("m", p, 0, 2, most=False) == fake.rps("m", p, LARGE)
    assert rates.over("m", p, 0, 2, most=True) == fake.rps("m", p, SMALL)
    assert rates.over("m", p, 1, 0, most=True) == 0.0
    # A model planned at one size: the reference rate throughout.
    assert rates.over("other", p, 0, 3, most=False) == fake.rps("other", p)
