"""The bucket mix a policy placing by size plans from (scheduler.forecast.bucket_mix), the
per-step buckets of a trace (scheduler.forecast.buckets.BucketSteps), and the replay's
routing of buckets to nodes (simulations.by_size.serve_buckets)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scheduler.domain import Demand, RequestSize, SizeBucket
from scheduler.forecast.bucket_mix import BucketMix
from scheduler.forecast.buckets import split_by_prompt
from scheduler.ports.metrics import DemandSample
from simulations.bucket_steps import BucketSteps
from simulations.by_size import NodeGroup, serve_buckets
from simulations.engine import NodeService

KEY = ("m", "r")
SHORT = RequestSize(400.0, 200.0)
LONG = RequestSize(8000.0, 100.0)


def reading(at_s: float, long_share: float) -> DemandSample:
    buckets = (
        SizeBucket(0.0, 1024.0, 1 - long_share, SHORT),
        SizeBucket(4096.0, math.inf, long_share, LONG),
    )
    return DemandSample(at_s, {KEY: 10.0}, buckets={KEY: buckets})


def test_without_a_reading_a_demand_is_not_split() -> None:
    mix = BucketMix()
    d = Demand("m", "r", 10.0, SHORT)
    assert mix.split(d) == d


def test_a_steady_mix_splits_the_rate_by_its_shares() -> None:
    mix = BucketMix()
    for t in range(5):
        mix.update(reading(60.0 * t, 0.25))
    d = mix.split(Demand("m", "r", 10.0))
    assert d.rps == pytest.approx(10.0)
    assert [b.share for b in d.buckets] == pytest.approx([0.75, 0.25])
    assert [b.size for b in d.buckets] == [SHORT, LONG]
    assert d.size is not None
    assert d.size.input_tokens == pytest.approx(0.75 * 400 + 0.25 * 8000)


def test_more_long_prompts_count_at_once_fewer_only_as_the_mean_follows() -> None:
    mix = BucketMix()
    for t in range(20):
        mix.update(reading(60.0 * t, 0.1))
    mix.update(reading(1200.0, 0.5))  # a minute of many long prompts
    up = mix.split(Demand("m", "r", 10.0))
    assert up.rps * up.buckets[1].share == pytest.approx(5.0)  # its larger share, at once
    w = 1 - 0.5 ** (60.0 / mix.half_life_s)  # one minute's weight in the mean
    # The short ones at their mean share, which the minute moved only by its weight.
    assert up.rps * up.buckets[0].share == pytest.approx(10.0 * (0.9 + w * (0.5 - 0.9)))
    mix.update(reading(1260.0, 0.1))  # back to the usual mix: the mean still remembers
    back = mix.split(Demand("m", "r", 10.0))
    assert 1.0 < back.rps * back.buckets[1].share < 5.0


def test_readings_the_mix_cannot_take_keep_the_mean() -> None:
    mix = BucketMix()
    mix.update(reading(0.0, 0.25))
    bad = (SizeBucket(0.0, 1024.0, math.nan, SHORT),)
    mix.update(DemandSample(60.0, {KEY: 10.0}, buckets={KEY: bad}))
    assert [b.share for b in mix.split(Demand("m", "r", 10.0)).buckets] == pytest.approx(
        [0.75, 0.25]
    )


def test_trace_steps_split_as_the_planner_splits() -> None:
    rng = np.random.default_rng(3)
    inp = rng.integers(1, 9000, 300).astype(float)
    out = rng.integers(1, 500, 300).astype(float)
    step = np.repeat([0, 1, 2], 100)
    steps = BucketSteps.of_requests(np.zeros(300, int), step, inp, out, (1, 3))
    for t in range(3):
        got = steps.at(0, t)
        want = split_by_prompt(inp[step == t], out[step == t])
        assert [(b.min_input_tokens, b.max_input_tokens) for b in got] == [
            (b.min_input_tokens, b.max_input_tokens) for b in want
        ]
        assert [b.share for b in got] == pytest.approx([b.share for b in want])
        assert [b.size.input_tokens for b in got] == pytest.approx(
            [b.size.input_tokens for b in want]
        )


def test_series_summed_into_one_key_weigh_by_their_rates() -> None:
    # Series 0 all short, series 1 all long, at 3 and 1 rps: the key is 75 % short.
    steps = BucketSteps.of_requests([0, 1], [0, 0], [100.0, 9000.0], [10.0, 10.0], (2, 1))
    merged = steps.merged([0, 0], 1, np.array([[3.0], [1.0]]))
    assert [b.share for b in merged.at(0, 0)] == pytest.approx([0.75, 0.25])


def group(nodes: int, serves: tuple[bool, bool], short_rps: float, long_rps: float) -> NodeGroup:
    figs = (NodeService(short_rps, 1.0, 4), NodeService(long_rps, 4.0, 4))
    return NodeGroup(0, nodes, serves, figs)


def test_a_bucket_goes_only_to_nodes_routed_to_it() -> None:
    demand = np.array([[4.0], [2.0]])  # (buckets, regions): short, long
    reach = np.ones((1, 1), dtype=bool)
    short_only = group(2, (True, False), 10.0, 1.0)
    got = serve_buckets(demand, [short_only], reach)
    assert got.flows[:, 0] == pytest.approx([4.0, 0.0])
    both = group(1, (False, True), 10.0, 1.0)  # one node: 1 long request/s
    got = serve_buckets(demand, [short_only, both], reach)
    assert got.flows[:, 0] == pytest.approx([4.0, 1.0])


def test_node_time_is_shared_between_buckets() -> None:
    # One node, 10 short or 1 long per second: 5 short take half its time, so 0.5 long fit.
    got = serve_buckets(
        np.array([[5.0], [3.0]]), [group(1, (True, True), 10.0, 1.0)], np.ones((1, 1), bool)
    )
    assert got.flows.sum() == pytest.approx(5.5)


def test_load_is_spread_over_the_groups_a_bucket_may_use() -> None:
    # Two equal groups both routed the short prompts: neither is filled while the other idles.
    groups = [group(1, (True, False), 10.0, 1.0), group(1, (True, False), 10.0, 1.0)]
    got = serve_buckets(np.array([[10.0], [0.0]]), groups, np.ones((1, 1), bool))
    assert got.flows[0, 0] == pytest.approx(10.0)
    assert got.capacity_rps[0] == pytest.approx(20.0)
