"""How wide a model's forecast band is planned: learnt from how its past plans fared.

A fixed `plan_quantile` buys different SLO on different load. On smooth load the
planning utilisation's headroom and the node granularity already absorb what the
forecast misses: on the Azure Functions day a 0.95 plan buys SLO attainment 1.000 at
11-17% more cost than a 0.8 plan, which reaches 1.000 too. On bursty load (BurstGPT) the
same 0.95 plan lets bursts through (0.994-0.996), and a 0.8 plan more (0.990-0.994)
(docs/forecasting.md, "The band fitted to the SLO").

`BandScale` keeps, per model, a factor ``m`` on the band above the median: the
planned rate of a series is ``max over the horizon of median + m·(q - median)`` (the
``q`` = `plan_quantile` path; ``m = 1`` is the plain quantile). After every plan tick it
compares what the plan made a lead time earlier provided with what then arrived: the
overload share ``u = max(0, peak - capacity) / peak``, ``peak`` the model's observed
short-window peak rate of the tick and ``capacity`` the whole rate of the nodes that
plan placed for the model (its rounding, its spot-loss cover and its on-demand share
included; not the fleet that was really there, so a spot loss or a slow boot, which
the band cannot help, does not widen it). Then ``m += gain · (u - target)``, clipped to
[`SCALE_MIN`, `SCALE_MAX`]: in the long run the mean overload share is ``target``
(``1 - `` the SLO attainment aimed at), whatever the load's shape. A tick without a
reading (missing or non-finite rates) or without load teaches nothing, so missing
metrics never narrow a band.

Nothing here reads the clock; steps are passed in. `CapschedPolicy` owns one per
policy (`[forecast] band_feedback`); the factors start at 1. What it has learnt is a
`BandMemory` (`BandScale.memory`): the reconciler stores it every tick and a restart
restores it (`BandScale.restore`), so a restarted daemon plans the band it had learnt
instead of the plain quantile for the hours the ticks would take to teach it again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, FiniteFloat

SCALE_MIN = 0.5  # narrowest band, in bands of plan_quantile (about a 0.8 quantile at 0.95)
SCALE_MAX = 3.0  # widest band (about a 0.999 quantile of a normal at 0.95)
GAIN = 1.0  # change of the factor per unit of overload share above the target
HISTORY = 8  # plans remembered per model: more than any lead time in ticks


class BandMemory(BaseModel):
    """What a `BandScale` has learnt: per model its factor, and the whole rate each of its
    recent plans placed by the forecaster step the plan was made at (None: a plan not to
    be judged). Steps count from the epoch (`Forecaster.tick_of`), so a memory stays
    meaningful across a restart. `model_validate` reads `model_dump(mode="json")` back and
    raises a `ValueError` (pydantic's `ValidationError`) naming what is malformed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scales: dict[str, FiniteFloat]
    planned: dict[str, dict[int, FiniteFloat | None]]


def scaled_peak(median: npt.ArrayLike, upper: npt.ArrayLike, scale: float) -> float:
    """The highest ``median + scale·(upper - median)`` over the horizon (per-step paths);
    exactly the highest `upper` at ``scale == 1``. Never below the highest median."""
    up = np.asarray(upper, dtype=np.float64)
    if scale == 1.0:
        return float(up.max())
    med = np.asarray(median, dtype=np.float64)
    return float(max(np.max(med + scale * np.maximum(up - med, 0.0)), med.max()))


def overload_share(peak_rps: float, capacity_rps: float) -> float | None:
    """Share of a peak rate above the capacity that served it; None without load or
    without a finite reading (nothing to learn from)."""
    if not (math.isfinite(peak_rps) and math.isfinite(capacity_rps)) or peak_rps <= 0:
        return None
    return max(0.0, peak_rps - max(capacity_rps, 0.0)) / peak_rps


class BandScale:
    """Per model, the factor on the forecast band (see the module doc)."""

    def __init__(self, target: float, gain: float = GAIN) -> None:
        """Aim at a mean overload share of `target` (in [0, 1))."""
        if not 0.0 <= target < 1.0:
            raise ValueError("target must be in [0, 1)")
        if not gain > 0.0:
            raise ValueError("gain must be > 0")
        self.target = target
        self.gain = gain
        self._scale: dict[str, float] = {}
        # Per model: the whole rate its plans provided, by the step they were made at
        # (None: a plan not to be judged).
        self._planned: dict[str, dict[int, float | None]] = {}

    def scale(self, model: str) -> float:
        """The band factor of `model` (1 until it has learnt)."""
        return self._scale.get(model, 1.0)

    def scales(self) -> Mapping[str, float]:
        """Every model's learnt factor (models never updated are absent: 1)."""
        return dict(self._scale)

    def memory(self) -> BandMemory:
        """What has been learnt, to keep across a restart (`restore`)."""
        return BandMemory(
            scales=dict(self._scale),
            planned={m: dict(p) for m, p in self._planned.items() if p},
        )

    def restore(self, memory: BandMemory, models: Iterable[str] | None = None) -> None:
        """Take up what an earlier `BandScale` had learnt (a restart): each factor, clipped
        to [`SCALE_MIN`, `SCALE_MAX`], and the recent plans to judge against what arrives.
        With `models`, the models no longer configured are left out."""
        keep = None if models is None else set(models)
        for model, value in memory.scales.items():
            if keep is None or model in keep:
                self._scale[model] = min(max(float(value), SCALE_MIN), SCALE_MAX)
        for model, plans in memory.planned.items():
            if keep is None or model in keep:
                mine = self._planned.setdefault(model, {})
                for step, capacity in plans.items():
                    mine.setdefault(step, capacity)
                for old in sorted(mine)[:-HISTORY]:
                    del mine[old]

    def planned(self, model: str, step: int, capacity_rps: float | None) -> None:
        """Record the whole rate the plan made at `step` placed for `model` (a later call
        for the same step replaces it: the last plan of a tick is the one in force); None
        for a plan that is not the band's to answer for (it left the model's own planned
        demand unmet: the budget, a quota or no capacity held it, not the forecast)."""
        plans = self._planned.setdefault(model, {})
        plans[step] = capacity_rps
        for old in sorted(plans)[:-HISTORY]:
            del plans[old]

    def observe(self, model: str, step: int, lead_steps: int, peak_rps: float) -> float | None:
        """Learn from the peak rate observed at `step` against the plan made `lead_steps`
        earlier (the plan whose nodes serve that tick); returns the overload share
        learnt from, or None when there was nothing to learn (no such plan, no load, no
        finite reading)."""
        capacity = self._planned.get(model, {}).get(step - lead_steps)
        if capacity is None:
            return None
        share = overload_share(peak_rps, capacity)
        if share is None:
            return None
        m = self.scale(model) + self.gain * (share - self.target)
        self._scale[model] = min(max(m, SCALE_MIN), SCALE_MAX)
        return share
