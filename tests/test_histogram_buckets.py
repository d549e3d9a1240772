"""A prompt-length histogram (Prometheus `le` buckets, as vLLM exports) mapped onto
capsched's size buckets (`scheduler.forecast.buckets.from_histogram`), and the bucket mix
a load signal hands over (`DemandSample.buckets`): what is unreadable gives no buckets,
so the series plans at its mean size as before."""

from __future__ import annotations

import math

import pytest

from scheduler.domain import RequestSize, SizeBucket
from scheduler.forecast.buckets import from_histogram, mean_size
from scheduler.ports.metrics import DemandSample

INF = math.inf
MEAN = RequestSize(1000.0, 150.0)


def shares(buckets: tuple[SizeBucket, ...]) -> dict[str, float]:
    return {b.label: round(b.share, 6) for b in buckets}


def test_ranges_that_straddle_an_edge_are_split_evenly() -> None:
    # 40 % of the requests in (500, 1000], 60 % in (1000, 2000]: the 24 tokens of the
    # second range below 1024 take 2.4 % of its requests.
    got = from_histogram({500: 0.0, 1000: 4.0, 2000: 10.0, INF: 10.0}, MEAN)
    assert shares(got) == {"0-1024": 0.4144, "1024-4096": 0.5856}
    assert got[0].size.input_tokens == pytest.approx((0.4 * 750 + 0.0144 * 1012) / 0.4144)
    assert got[1].size.input_tokens == pytest.approx(1512.0)
    assert all(b.size.output_tokens == 150.0 for b in got)


def test_the_open_last_range_takes_the_prompt_length_that_keeps_the_mean() -> None:
    # Half the requests above the last finite `le` (2000): where exactly, only the mean
    # says. The other half average 500 tokens, the mix 3000, so these average 5500.
    got = from_histogram({1000: 1.0, 2000: 1.0, INF: 2.0}, RequestSize(3000.0, 100.0))
    assert shares(got) == {"0-1024": 0.5, "4096+": 0.5}
    assert got[-1].size.input_tokens == pytest.approx(5500.0)
    assert mean_size(got).input_tokens == pytest.approx(3000.0)
    low_mean = from_histogram({1000: 1.0, 2000: 1.0, INF: 2.0}, RequestSize(600.0, 100.0))
    assert low_mean[-1].size.input_tokens == 2000.0  # never below the range it is in


@pytest.mark.parametrize(
    "le_rates",
    [
        pytest.param({1000: 1.0, INF: math.nan}, id="nan"),
        pytest.param({1000: 1.0, INF: INF}, id="infinite"),
        pytest.param({1000: -1.0, INF: 2.0}, id="negative"),
        pytest.param({1000: 1.0, 2000: 2.0}, id="no +Inf bucket"),
        pytest.param({1000: 0.0, INF: 0.0}, id="no requests in the window"),
        pytest.param({}, id="empty"),
    ],
)
def test_a_histogram_that_cannot_be_read_gives_no_buckets(le_rates: dict[float, float]) -> None:
    assert from_histogram(le_rates, MEAN) == ()


def test_no_mean_size_gives_no_buckets() -> None:
    assert from_histogram({1000: 1.0, INF: 1.0}, RequestSize(math.nan, 10.0)) == ()


def test_a_dip_in_the_cumulative_rates_is_lifted_not_negative() -> None:
    got = from_histogram({500: 3.0, 1000: 2.9, 5000: 4.0, INF: 4.0}, MEAN)
    assert all(b.share >= 0 for b in got)
    assert math.fsum(b.share for b in got) == pytest.approx(1.0)


def test_a_sample_keeps_only_mixes_it_can_trust() -> None:
    good = from_histogram({1000: 1.0, 5000: 2.0, INF: 2.0}, MEAN)
    half = (SizeBucket(0.0, 1024.0, 0.5, MEAN),)
    sample = DemandSample(
        0.0,
        {("m", "a"): 1.0, ("m", "b"): 1.0, ("m", "c"): 1.0},
        buckets={("m", "a"): good, ("m", "b"): half, ("m", "c"): "0-1024"},  # type: ignore[dict-item]
    )
    assert sample.cleaned().buckets == {("m", "a"): good}
