"""The load signal interface: request rate per (model, source region); and the per-node
health signals (GPU faults, a stalled model server) `[health]` may read.

A sample is either a finite rate or missing (NaN); a source never turns a missing or
stale reading into zero, because a zero would let the planner scale the fleet down.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from scheduler.domain import SizeBucket

if TYPE_CHECKING:
    from scheduler.domain import Node


@dataclass(frozen=True, slots=True)
class DemandSample:
    """Request rates at one moment."""

    at_s: float  # time the rates describe
    rps: Mapping[tuple[str, str], float] = field(default_factory=dict)  # (model, region) -> rps
    # Highest short-window rate (e.g. per minute) since the previous sample, where the source
    # knows it: capacity must cover the peaks inside a tick, not the average over it.
    peak_rps: Mapping[tuple[str, str], float] = field(default_factory=dict)
    # Requests waiting in the model servers' queues (e.g. vLLM's num_requests_waiting), where
    # the source knows it: a standing queue is load the rate alone does not show.
    waiting: Mapping[tuple[str, str], float] = field(default_factory=dict)
    # Mean prompt and output tokens per request where the source knows them (a trace with
    # token counts, the model servers' token counters); absent: unknown, which planning
    # takes as the reference request (docs/profiles.md "Request size").
    input_tokens: Mapping[tuple[str, str], float] = field(default_factory=dict)
    output_tokens: Mapping[tuple[str, str], float] = field(default_factory=dict)
    # The requests split by prompt length (shares summing to 1, in increasing range)
    # where the source knows the mix (the model servers' prompt-length histogram,
    # scheduler.forecast.buckets.from_histogram); absent: one mix at the mean size.
    # Never changes the rate: a series without buckets plans as before.
    buckets: Mapping[tuple[str, str], tuple[SizeBucket, ...]] = field(default_factory=dict)

    def complete(self, expected: set[tuple[str, str]]) -> bool:
        """Whether every expected series has a finite, non-negative rate (and peak, where
        one is given). Readings that are not numbers count as missing."""
        rps, peak = _rates(self.rps), _rates(self.peak_rps)
        for key in expected:
            v, p = rps.get(key, math.nan), peak.get(key, 0.0)
            if not (math.isfinite(v) and v >= 0 and math.isfinite(p) and p >= 0):
                return False
        return True

    def cleaned(self) -> DemandSample:
        """The same sample with every reading a float: anything that is not a real number
        (None, text, a list) reads as missing (NaN), never as zero."""
        return DemandSample(
            self.at_s,
            _rates(self.rps),
            _rates(self.peak_rps),
            _rates(self.waiting),
            _rates(self.input_tokens),
            _rates(self.output_tokens),
            _mixes(self.buckets),
        )


def _rate(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return math.nan
    try:
        return float(value)
    except OverflowError:  # an int too big for a float
        return math.inf


def _rates(readings: object) -> dict[tuple[str, str], float]:
    if not isinstance(readings, Mapping):
        return {}
    return {key: _rate(v) for key, v in readings.items()}


def _mixes(readings: object) -> dict[tuple[str, str], tuple[SizeBucket, ...]]:
    # A mix that is not a non-empty tuple of buckets with finite shares >= 0 summing to 1
    # is dropped: the series plans at its mean size, as without a histogram.
    if not isinstance(readings, Mapping):
        return {}
    out: dict[tuple[str, str], tuple[SizeBucket, ...]] = {}
    for key, mix in readings.items():
        if not isinstance(mix, tuple) or not mix:
            continue
        ok = (isinstance(b, SizeBucket) and math.isfinite(b.share) and b.share >= 0 for b in mix)
        if not all(ok):
            continue
        if abs(math.fsum(b.share for b in mix) - 1.0) <= 1e-6:
            out[key] = mix
    return out


class MetricsSource(Protocol):
    """Where demand comes from: Prometheus in the daemon, a trace in the simulator."""

    async def demand(self, now_s: float) -> DemandSample:
        """Current request rates; missing series are absent or NaN."""
        ...


@runtime_checkable
class DemandHistorySource(Protocol):
    """A metrics source that also keeps the past (Prometheus): a daemon started on an
    empty state store learns its forecast from it instead of starting cold
    (`Reconciler.backfill`). A trace replay has none: nothing came before it."""

    async def history(self, end_s: float, step_s: float, max_span_s: float) -> list[DemandSample]:
        """The source's configured span of request rates (at most `max_span_s`) before
        `end_s`, one sample per `step_s`, oldest first; a series missing at a step is
        absent from that sample. Empty when the span is 0 or the source fails (logged).
        Never raises (except on cancellation)."""
        ...


# -- per-node health signals (issue 21, docs/health.md "GPU faults") -------------------------


@dataclass(frozen=True, slots=True)
class SignalQuery:
    """Which series describe a node, and over what window (from `[health]`)."""

    node_label: str  # label naming the node in the GPU and model-server series
    # Its value for one node: a template with the drainer's placeholders ({host},
    # {node_id}, {cloud_instance_id}, {model}); a ":port" suffix on a series is ignored.
    node_value: str
    window_s: float  # window of the Xid, ECC and stall readings
    ready_metric: str = ""  # a metric > 0 once the model is loaded ("" = not read)


@dataclass(frozen=True, slots=True)
class NodeSignals:
    """What the metrics source says about one node's GPUs and model server over the
    window (NaN: not reported; a missing reading never reads as healthy or as sick)."""

    xid: float = math.nan  # highest DCGM_FI_DEV_XID_ERRORS in the window (the Xid code, 0 none)
    ecc_dbe_increase: float = math.nan  # rise of DCGM_FI_DEV_ECC_DBE_VOL_TOTAL in the window
    running_max: float = math.nan  # highest vllm:num_requests_running in the window
    waiting_growth: float = math.nan  # rise of vllm:num_requests_waiting over the window
    waiting: float = math.nan  # vllm:num_requests_waiting now
    loaded: float = math.nan  # the ready metric now (> 0: the model is loaded)


class NodeSignalSource(Protocol):
    """Where per-node GPU and model-server signals come from: Prometheus in the daemon
    (`adapters.prometheus.PrometheusSource`)."""

    async def node_signals(
        self, now_s: float, nodes: Sequence[Node], query: SignalQuery
    ) -> Mapping[str, NodeSignals]:
        """Signals by node id for those of `nodes` the source has series for. Never
        raises for a failed query: what it could not read is NaN or absent."""
        ...
