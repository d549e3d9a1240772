"""Spot losses, measured: which pools lose capacity together, and which late minutes of a
replay follow a loss.

Two questions the spot-loss cover (docs/solver.md, "Spot-loss cover when a loss and a
demand rise coincide") rests on:

* **Correlated loss.** The cover assumes one failure domain loses its spot capacity at
  a time. `coincidence` counts, over SkyPilot spot traces that ran side by side (one
  experiment's folder: same start, same tick), how often a trace's loss (a tick whose
  count is below the previous one) comes in the same tick as a loss of a related trace
  (another zone of its region, another region, another instance type of its zone),
  against what independent traces with the same loss rates would give.
* **Late minutes after a loss.** `late_steps` lists the steps of a replay where some
  demand was not served within the SLO, each with the spot notices of its model in the
  window before it, so a replay's SLO miss splits into what followed a loss and what
  did not.

Pure functions on arrays and typed records: `benchmarks/bench_spot_losses.py` reads the
traces and runs the replays.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


def loss_ticks(counts: Sequence[int] | NDArray[np.int64]) -> frozenset[int]:
    """Ticks whose count is below the previous tick's, from the first tick after the
    first non-zero count (the leading zeros are the experiment starting up)."""
    c = np.asarray(counts, dtype=np.int64)
    nonzero = np.flatnonzero(c > 0)
    if nonzero.size == 0:
        return frozenset()
    first = int(nonzero[0])
    drops = np.flatnonzero(c[first + 1 :] < c[first:-1]) + first + 1
    return frozenset(int(i) for i in drops)


@dataclass(frozen=True, slots=True)
class Coincidence:
    """How often losses of traces come with a loss of a related trace in the same tick."""

    losses: int  # loss ticks over every trace that has a related trace
    together: int  # of them, with a related trace losing in the same tick
    independent: float  # expected `together` if the traces lost independently

    @property
    def share(self) -> float:
        """Share of losses that came with a related loss (0 without losses)."""
        return self.together / self.losses if self.losses else 0.0

    @property
    def independent_share(self) -> float:
        """The share independent traces with the same loss rates would give."""
        return self.independent / self.losses if self.losses else 0.0


def coincidence(
    traces: Mapping[str, Sequence[int] | NDArray[np.int64]],
    related: Callable[[str, str], bool],
) -> Coincidence:
    """Losses of `traces` (name -> counts, one tick for all) in a tick where a trace
    `related(name, other)` also lost. Ticks past the shorter trace's end are not
    compared; the independent expectation is 1 - prod(1 - rate of each related trace)
    per loss, a trace's rate being its losses per tick."""
    ticks = {name: loss_ticks(c) for name, c in traces.items()}
    sizes = {name: len(c) for name, c in traces.items()}
    losses = together = 0
    expected = 0.0
    for name, mine in ticks.items():
        others = [o for o in traces if o != name and related(name, o)]
        if not others:
            continue
        for t in mine:
            live = [o for o in others if t < sizes[o]]
            losses += 1
            together += any(t in ticks[o] for o in live)
            none = 1.0
            for o in live:
                none *= 1.0 - len(ticks[o]) / max(1, sizes[o])
            expected += 1.0 - none
    return Coincidence(losses, together, expected)


@dataclass(frozen=True, slots=True)
class LateStep:
    """A step of a replay where part of a model's demand missed the SLO."""

    model: str  # the model
    at_s: float  # start of the step
    demand_rps: float  # requests/s asked for
    capacity_rps: float  # ready capacity at the SLO
    planned_rps: float  # what the policy planned for (NaN if it does not say)
    late_rps: float  # demand not served within the SLO
    since_notice_s: tuple[float, ...]  # time since each of the model's notices in the window


def late_steps(
    models: Sequence[str],
    times_s: NDArray[np.float64],
    demand_rps: NDArray[np.float64],
    within_slo_rps: NDArray[np.float64],
    capacity_rps: NDArray[np.float64],
    planned_rps: NDArray[np.float64],
    notices_s: Mapping[str, Sequence[float]],
    window_s: float,
) -> list[LateStep]:
    """Every (model, step) with demand not served within the SLO (the arrays are a
    replay's `RunResult` series, models x steps), with the model's spot notices at most
    `window_s` before the step's start (a boot: the replacements of a node noticed
    earlier serve by then)."""
    out: list[LateStep] = []
    for i, m in enumerate(models):
        notices = sorted(notices_s.get(m, ()))
        for k, t in enumerate(times_s):
            d, ok = float(demand_rps[i, k]), float(within_slo_rps[i, k])
            if d - ok <= 1e-6 * max(1.0, d):
                continue
            since = tuple(float(t) - n for n in notices if 0.0 <= float(t) - n <= window_s)
            out.append(
                LateStep(
                    m,
                    float(t),
                    d,
                    float(capacity_rps[i, k]),
                    float(planned_rps[k]),
                    d - ok,
                    since,
                )
            )
    return out
