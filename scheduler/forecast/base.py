"""The forecaster interface, the forecast type, and the machinery every method shares.

A forecaster keeps one row per demand series (a ``model/region`` key) in numpy
arrays and advances all rows together once per step: `update` takes the request
rates observed at ``now_s``, `predict` returns per-step quantile paths over the
horizon. Nothing here reads the clock; ``now_s`` is always passed in.

Shared rules (docs/forecasting.md):
- Time is cut in steps of ``config.step_s``; an update at a step already seen is
  ignored (logged), steps with no update at all are gaps: every series is missing.
- A missing key, NaN, ±inf or a negative rate (a counter reset seen through a
  rate) is a missing observation: the model holds its last good level and the
  forecast is widened as if it were made from the last good step.
- Quantiles come from `ConformalCalibrator` on the model's own recent errors.
"""

from __future__ import annotations

import json
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt

from scheduler.forecast.calibration import ConformalCalibrator
from scheduler.forecast.codec import decode_array, encode_array
from scheduler.forecast.config import ForecastConfig, ForecastSettings

log = logging.getLogger(__name__)

SeriesKey = str  # one demand series, by convention "model/region" (see `demand_key`)
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
STATE_VERSION = 5  # 5: the ensemble scores three median candidates (December 7, second session)
# Forecast rates below this are zero (about one request in 12 days): the numerical noise
# of a model of a series with no load. The planner compares each planned rate with the one
# its last search was for, relatively: noise of 1e-9 rps moving by half re-searched a model
# with no traffic on every tick.
MIN_RATE_RPS = 1e-6
# Every forecast is at most BOUND_FACTOR × the largest rate seen lately (a maximum that
# forgets by a factor e per BOUND_MEMORY_S): a last safety net behind models that are
# bounded by construction, so that no input can make a plan ask for absurd capacity.
BOUND_FACTOR = 4.0
BOUND_MEMORY_S = 7 * 24 * 3600.0


def pinball(q: float, diff: npt.ArrayLike) -> FloatArray:
    """The pinball (quantile) loss at level `q` of each error ``diff = actual - forecast``:
    ``q·diff`` when the forecast is short, ``(q - 1)·diff`` when it is over."""
    d = np.asarray(diff, dtype=np.float64)
    return np.asarray(np.maximum(q * d, (q - 1.0) * d), dtype=np.float64)


def demand_key(model: str, region: str) -> SeriesKey:
    """The series key of a (model, source region) pair."""
    return f"{model}/{region}"


@dataclass(frozen=True, eq=False)
class QuantileForecast:
    """Demand of one series over the horizon, at several quantiles."""

    origin_s: float  # time the forecast was asked for; step 1 starts here
    step_s: float  # length of one step of the paths, seconds
    quantiles: tuple[float, ...]  # quantile levels, ascending
    paths_rps: FloatArray  # shape (len(quantiles), horizon steps): rps per step, ≥ 0, monotone in q
    stale_s: float  # age of the newest good observation behind the forecast
    warm: bool  # False while the series has less than one season of history (fallback model)

    @property
    def horizon_steps(self) -> int:
        """Number of steps in the paths."""
        return int(self.paths_rps.shape[1])

    def path(self, q: float) -> FloatArray:
        """Per-step rps at quantile `q` (must be one of `quantiles`)."""
        return np.asarray(self.paths_rps[self.quantiles.index(q)], dtype=np.float64)

    def peak_rps(self, q: float) -> float:
        """Highest per-step `q` quantile over the horizon: the load to provision for.

        This is the max over steps of per-step quantiles, not the quantile of the
        max; see docs/forecasting.md.
        """
        return float(self.path(q).max())

    @property
    def horizon_max_rps(self) -> dict[float, float]:
        """`peak_rps` for every quantile level."""
        return {q: float(row.max()) for q, row in zip(self.quantiles, self.paths_rps, strict=True)}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (for the state store and the control API)."""
        return {
            "origin_s": self.origin_s,
            "step_s": self.step_s,
            "stale_s": self.stale_s,
            "warm": self.warm,
            "paths_rps": {
                str(q): row.tolist() for q, row in zip(self.quantiles, self.paths_rps, strict=True)
            },
            "horizon_max_rps": {str(q): v for q, v in self.horizon_max_rps.items()},
        }


@runtime_checkable
class Forecaster(Protocol):
    """What the planner needs from a forecaster."""

    method: ClassVar[str]

    def update(self, now_s: float, observations: Mapping[SeriesKey, float]) -> None:
        """Feed the rates (rps) observed for the step containing `now_s`."""
        ...

    def predict(
        self, now_s: float, horizon_min: int | None = None
    ) -> dict[SeriesKey, QuantileForecast]:
        """Quantile paths for every known series over the next `horizon_min` minutes."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The whole state as a JSON-able dict (`from_state` rebuilds it)."""
        ...


# --------------------------------------------------------------------------- base class


class VectorForecaster(ABC):
    """Series registry, step bookkeeping, calibration and state for array-based models.

    Subclasses keep per-series arrays (first axis = series row) registered with
    `_register_array` and implement `_model_step`, `_model_skip` and `_point`.
    Models work in their own space (`_to_work`/`_from_work`, identity by
    default; log-scaled for Holt-Winters); their point forecast is mapped back
    to rps and calibrated there, so a quantile's offset is additive in rps and
    a wide log-space band cannot blow up into an absurd upper quantile.
    """

    method: ClassVar[str] = ""

    def __init__(
        self, config: ForecastSettings | ForecastConfig | None = None, *, capacity: int = 16
    ) -> None:
        """Create an empty forecaster; series are added on first sight."""
        if config is None:
            config = ForecastSettings()
        elif isinstance(config, ForecastConfig):
            config = ForecastSettings.of(config)
        self.config: ForecastSettings = config
        self.quantiles = self.config.quantiles
        self.step_s = float(self.config.step_s)
        self.horizon_steps = self.config.horizon_steps
        self.keys: list[SeriesKey] = []
        self._index: dict[SeriesKey, int] = {}
        self._cap = max(1, capacity)
        self._tick: int | None = None  # last step that was processed
        self._arrays: dict[str, float] = {}  # registered per-series arrays and their fill value
        self.last_good = self._register_array("last_good", -1)  # last step with a good value
        self.n_good = self._register_array("n_good", 0)  # good observations seen
        self.recent_max = self._register_array("recent_max", 0.0)  # forgetting max rate seen
        self._max_keep = math.exp(-self.step_s / BOUND_MEMORY_S)  # its decay per step
        self.calibrator = ConformalCalibrator(
            self.quantiles, self.horizon_steps, self.config.calibration_memory, self._cap
        )

    # ---- registry

    @property
    def n(self) -> int:
        """Number of series."""
        return len(self.keys)

    def _register_array(
        self, name: str, fill: float, shape: tuple[int, ...] = (), dtype: Any = None
    ) -> Any:
        kind = dtype or (np.int64 if isinstance(fill, int) else np.float64)
        arr = np.full((self._cap, *shape), fill, dtype=kind)
        self._arrays[name] = fill
        return arr

    def add_series(self, keys: Iterable[SeriesKey]) -> None:
        """Register series (new ones start cold); unknown keys are otherwise added by `update`."""
        new = [k for k in keys if k not in self._index]
        if not new:
            return
        need = self.n + len(new)
        if need > self._cap:
            cap = max(need, 2 * self._cap)
            for name, fill in self._arrays.items():
                old = getattr(self, name)
                grown = np.full((cap, *old.shape[1:]), fill, dtype=old.dtype)
                grown[: self._cap] = old
                setattr(self, name, grown)
            self.calibrator.grow(cap)
            self._cap = cap
        for k in new:
            self._index[k] = len(self.keys)
            self.keys.append(k)
        log.info("forecast_series_added method=%s added=%d total=%d", self.method, len(new), self.n)

    # ---- time

    def tick_of(self, now_s: float) -> int:
        """The step index containing time `now_s`."""
        return math.floor(now_s / self.step_s + 1e-9)

    # ---- update

    def update(self, now_s: float, observations: Mapping[SeriesKey, float]) -> None:
        """Feed the rates observed in the step containing `now_s` (see module doc)."""
        self.add_series(observations.keys())
        y = np.full(self.n, np.nan)
        if observations:
            rows = np.fromiter(
                (self._index[k] for k in observations), dtype=np.int64, count=len(observations)
            )
            y[rows] = np.fromiter(observations.values(), dtype=np.float64, count=len(observations))
        self.update_array(now_s, y)

    def update_array(self, now_s: float, values: npt.ArrayLike) -> None:
        """Like `update`, with one value per series in `keys` order (NaN = missing)."""
        t = self.tick_of(now_s)
        y = np.array(values, dtype=np.float64, copy=True).reshape(-1)
        if y.shape[0] != self.n:
            raise ValueError(f"expected {self.n} values, got {y.shape[0]}")
        if self._tick is not None and t <= self._tick:
            log.warning("forecast_update_ignored method=%s now_s=%s reason=%s", self.method, now_s,
                        "repeat" if t == self._tick else "out_of_order")  # fmt: skip
            return
        bad = ~np.isfinite(y) | (y < 0)
        n_negative = int(np.count_nonzero(y < 0))
        if n_negative:
            log.warning(
                "forecast_negative_rate method=%s series=%d action=missing", self.method, n_negative
            )
        y[bad] = np.nan
        decay = self._max_keep ** (1 if self._tick is None else t - self._tick)
        rm = self.recent_max[: self.n]
        rm *= decay
        np.fmax(rm, np.where(bad, 0.0, y), out=rm)
        if self._tick is not None and t - self._tick > 1:
            gap = t - self._tick - 1
            log.info("forecast_gap method=%s steps=%d", self.method, gap)
            self._model_skip(self._tick + 1, gap)
            self.calibrator.skip(self._tick + 1, gap)
        good = ~bad
        work = self._to_work(y)
        # Score the forecasts that targeted this step before the model moves on.
        self.calibrator.observe(t, y, self.n)
        self._model_step(t, work, good)
        self.last_good[: self.n][good] = t
        self.n_good[: self.n][good] += 1
        self._tick = t
        point = self._from_work(self._point(t, self.calibrator.grid))
        point[bad] = np.nan  # forecasts made from stale data are not scored
        self.calibrator.record(t, point, self.n)

    # ---- predict

    def predict(
        self, now_s: float, horizon_min: int | None = None
    ) -> dict[SeriesKey, QuantileForecast]:
        """Quantile paths for every series: step 1 is the step after the one containing `now_s`."""
        h_steps = self._horizon(horizon_min)
        paths = self.predict_array(now_s, h_steps)
        t = self.tick_of(now_s)
        stale_s = (t - self.last_good[: self.n]) * self.step_s
        warm = self.warm()
        origin = t * self.step_s
        out: dict[SeriesKey, QuantileForecast] = {}
        for i, key in enumerate(self.keys):
            out[key] = QuantileForecast(
                origin, self.step_s, self.quantiles, paths[i],
                float(stale_s[i]) if self.last_good[i] >= 0 else math.inf, bool(warm[i]),
            )  # fmt: skip
        return out

    def _horizon(self, horizon_min: int | None) -> int:
        if horizon_min is None:
            return self.horizon_steps
        steps = horizon_min * 60 / self.step_s
        if steps < 1 or steps != int(steps):
            raise ValueError(f"horizon {horizon_min} min is not a whole number (≥ 1) of steps")
        return int(steps)

    def predict_array(self, now_s: float, horizon_steps: int) -> FloatArray:
        """Quantile paths as an array of shape (series, quantiles, horizon_steps), rps ≥ 0."""
        n = self.n
        if self._tick is None or n == 0:
            return np.zeros((n, len(self.quantiles), horizon_steps))
        t = self.tick_of(now_s)
        lag = max(0, t - self._tick)  # steps since the last update
        h = np.arange(lag + 1, lag + horizon_steps + 1, dtype=np.int64)
        point = self._point(self._tick, h)  # (n, H) in working space
        stale = lag + np.maximum(0, self._tick - self.last_good[:n])
        offsets = self.calibrator.offsets(h, stale, n)  # (n, Q, H)
        out = self._from_work(point)[:, None, :] + offsets
        no_data = self.last_good[:n] < 0
        out[no_data] = 0.0  # nothing ever seen: no demand known (the planner keeps its floor)
        out = np.nan_to_num(out, nan=0.0, posinf=np.finfo(np.float64).max)
        bound = BOUND_FACTOR * self.recent_max[:n] * self._max_keep**lag
        np.minimum(out, bound[:, None, None], out=out)
        out[out < MIN_RATE_RPS] = 0.0
        out.sort(axis=1)  # monotone in the quantile level
        return out

    def warm(self) -> npt.NDArray[np.bool_]:
        """Per series: has at least one season (the shortest period) of good observations."""
        periods = self.config.period_steps
        need = min(periods) if periods else 1
        return np.asarray(self.n_good[: self.n] >= need)

    # ---- model hooks

    def _to_work(self, y: FloatArray) -> FloatArray:
        """Map rps to the model's working space (identity unless overridden)."""
        return y

    def _from_work(self, z: FloatArray) -> FloatArray:
        """Inverse of `_to_work`, applied per series row (first axis)."""
        return z

    @abstractmethod
    def _model_step(self, t: int, z: FloatArray, good: npt.NDArray[np.bool_]) -> None:
        """Advance the model to step `t` with values `z` (NaN where not `good`)."""

    @abstractmethod
    def _model_skip(self, first: int, count: int) -> None:
        """Advance over `count` steps from `first` on which nothing was observed."""

    @abstractmethod
    def _point(self, origin: int, h: IntArray) -> FloatArray:
        """Point forecasts (n, len(h)) in working space for steps origin + h."""

    # ---- state

    def state_dict(self) -> dict[str, Any]:
        """The whole state as a JSON-able dict; `from_state` rebuilds an equal forecaster."""
        n = self.n
        return {
            "version": STATE_VERSION,
            "method": self.method,
            "config": self.config.model_dump(mode="json"),
            "keys": list(self.keys),
            "tick": self._tick,
            "arrays": {name: encode_array(getattr(self, name)[:n]) for name in self._arrays},
            "calibrator": self.calibrator.state_dict(n),
            "extra": self._extra_state(),
        }

    def state_bytes(self) -> bytes:
        """`state_dict` as UTF-8 JSON bytes."""
        return json.dumps(self.state_dict(), separators=(",", ":")).encode()

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, extra: Mapping[str, Any]) -> None:
        return None

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | bytes | str) -> Self:
        """Rebuild a forecaster from `state_dict()` output (or its JSON bytes/text)."""
        if isinstance(state, bytes | str):
            state = json.loads(state)
        assert isinstance(state, Mapping)
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported forecaster state version {state.get('version')!r}")
        if state.get("method") != cls.method:
            raise ValueError(f"state is for method {state.get('method')!r}, not {cls.method!r}")
        config = ForecastSettings.model_validate(state["config"])
        keys = list(state["keys"])
        obj = cls(config, capacity=max(16, len(keys)))
        obj.add_series(keys)
        obj._tick = state["tick"]
        n = len(keys)
        for name in obj._arrays:
            arr = decode_array(state["arrays"][name])
            getattr(obj, name)[:n] = arr
        obj.calibrator.load_state(state["calibrator"], n)
        obj._load_extra_state(state["extra"])
        return obj
