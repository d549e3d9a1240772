"""capsched's own policy: forecast the load over the lead time, then solve the placement.

Each tick the forecaster takes the observed rates (missing ones as NaN, which hold
the level rather than read as zero) and predicts quantiles over the horizon. The
planned rate of a series is, by default (`[forecast] plan_for = "horizon_peak"`), the
highest per-step `plan_quantile` over the horizon, or with `"lead_window_peak"` the
calibrated `plan_quantile` of its peak over the lead window (now + boot, now + boot +
tick] (`LeadPeakQuantile`, docs/forecasting.md); the planner provisions for the
larger of that and the rate seen now, so a forecast never plans below what is already
arriving. With `[forecast] band_feedback` (the default) the band above the median is
scaled per model by how the plans made a lead time earlier fared against the load
that then came (`scheduler.forecast.band_feedback`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter, defaultdict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from scheduler.config import Config
from scheduler.decide.observation import Observation
from scheduler.decide.planner import allowed, make_plan
from scheduler.domain import (
    CapacityProfile,
    Demand,
    NodeState,
    Offering,
    Placement,
    Plan,
    Pool,
    RequestSize,
)
from scheduler.fleet.boot import node_boot_s
from scheduler.fleet.capacity import demand_size, node_rps, token_load
from scheduler.fleet.catalog import Catalog
from scheduler.forecast import (
    ForecastSettings,
    LeadPeakQuantile,
    LeadWindow,
    QuantileForecast,
    VectorForecaster,
    build_forecaster,
    demand_key,
)
from scheduler.forecast.band_feedback import BandMemory, BandScale, scaled_peak
from scheduler.forecast.bucket_mix import BucketMix
from scheduler.forecast.sizes import SizeMix
from scheduler.ports.metrics import DemandSample

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Memory:
    """The state one `decide` changes besides the forecaster and the targets it found, as
    it was before it (`revise` puts it back, so a tick changes it once; the targets and
    the time of the last full search carry over to `revise`)."""

    planned: dict[tuple[str, str], float]  # last_forecast
    quantiles: dict[tuple[str, str], dict[float, float]]  # last_quantiles
    recent: deque[tuple[float, dict[tuple[str, str], float]]]  # _recent
    available_since: dict[Pool, float]  # _available_since
    losses: dict[Pool, deque[float]]  # _losses
    prices: dict[Pool, _PriceClock]  # _prices


@dataclass(frozen=True, slots=True)
class _PriceClock:
    """A pool's price as the planner uses it: a new price counts once it has held for
    `planning.return_stabilization_s` (see `CapschedPolicy._steady_prices`)."""

    settled_usd_per_hour: float  # the price plans are made with
    seen_usd_per_hour: float  # the price listed now
    seen_since_s: float  # since when the listed price has been `seen_usd_per_hour`


PRICE_EPSILON = 1e-9  # relative change below which a listed price has not moved
LOSS_MEMORY_S = 86400.0  # how long a pool's losses lengthen its return window
RETURN_BACKOFF_MAX = 16.0  # the longest return window, in return_stabilization_s
RATE_CACHE_MAX = 4096  # whole node rates remembered (per model, pool and request size)


class CapschedPolicy:
    """Forecast plus solver; the policy the daemon runs and the simulator compares."""

    name = "capsched"

    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        profiles: Sequence[CapacityProfile],
        forecaster: VectorForecaster | None = None,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.profiles = tuple(profiles)
        settings = ForecastSettings.of(config.forecast, step_s=config.scheduler.tick_interval_s)
        self.forecaster = forecaster or build_forecaster(settings)  # state survives via state_dict
        self.last_forecast: dict[tuple[str, str], float] = {}  # planned rps per series, for reports
        # Forecast peak over the horizon per quantile and series, for the history.
        self.last_quantiles: dict[tuple[str, str], dict[float, float]] = {}
        self._last_step: int | None = None  # forecaster step last fed
        # Planned rates of the recent ticks, for the scale-down delay: (time, rates).
        self._recent: deque[tuple[float, dict[tuple[str, str], float]]] = deque()
        # The last solve: its plan, the planned rps it was solved for, and the offerings.
        self._last: tuple[Plan, dict[tuple[str, str], float], dict[Pool, Offering]] | None = None
        # Since when each pool has been available without a break (for the return window).
        self._available_since: dict[Pool, float] = {}
        # When each pool became unavailable, over the last day (lengthens its return window).
        self._losses: dict[Pool, deque[float]] = {}
        self._last_full_s: float | None = None  # time of the last search of every model
        self._prices: dict[Pool, _PriceClock] = {}  # per pool: the price plans are made with
        self._rps_cache: dict[tuple[str, Pool], float] = {}  # planned rps of one node
        # Whole rate of one node per request size (`_node_rate`: every tick prices the plan
        # in force for the band feedback, and the short-model check reads it too).
        self._rate_cache: dict[tuple[str, Pool, RequestSize | None], float] = {}
        self._boot_cache: dict[str, float] = {}  # lead boot time per model (`lead_boot_s`)
        self._before: _Memory | None = None  # the state before this tick's first decide
        # Lead-window peak calibrators, one per distinct window, with their series, and
        # the settings they were built for (rebuilt when those change).
        self._lead: list[tuple[list[tuple[str, str]], LeadPeakQuantile]] = []
        self._lead_for: tuple[object, ...] | None = None
        self._lead_plan: dict[tuple[str, str], float] = {}  # last step's lead-peak plans
        self._lead_step: int | None = None  # forecaster step the calibrators last took
        self.sizes = SizeMix()  # recent mean request size per series (scheduler/forecast/sizes.py)
        # Recent prompt-length bucket mix per series, for `[planning] place_by_size`.
        self.bucket_mix = BucketMix()
        # Arrival rates of deferrable series over their deadline, one per forecaster step.
        self._arrivals: dict[tuple[str, str], deque[tuple[float, float]]] = {}
        # Per model, the factor on the forecast band (`[forecast] band_feedback`).
        self.band = BandScale(config.forecast.band_feedback_target)

    def _memory(self) -> _Memory:
        return _Memory(
            dict(self.last_forecast),
            dict(self.last_quantiles),
            deque(self._recent),
            dict(self._available_since),
            {pool: deque(times) for pool, times in self._losses.items()},
            dict(self._prices),
        )

    def revise(self, obs: Observation) -> Plan:
        """`decide` again on a newer observation of the same tick (a pool refused a
        launch), from the state before this tick's `decide`: the tick changes the
        policy's state once. The forecaster took this step's rates already and is
        not fed again.

        The targets this tick's `decide` found stay the last targets: a model it searched
        stands on what that search found (its demand is the same), unless a pool of that
        target became unavailable or dearer on the way, and then it is searched again;
        a periodic full search done by `decide` is not done twice. Before, every model
        `decide` had searched was searched again from the tick's old target: the same
        search again for each model the refusal did not touch (docs/solver.md, "A refused
        launch's second decision")."""
        if self._before is not None:
            m = self._before
            self.last_forecast, self.last_quantiles = dict(m.planned), dict(m.quantiles)
            self._recent = deque(m.recent)
            self._available_since = dict(m.available_since)
            self._losses = {pool: deque(times) for pool, times in m.losses.items()}
            self._prices = dict(m.prices)
        return self.decide(obs)

    def planned_rps(self) -> Mapping[tuple[str, str], float]:
        """Rates the last decision provisions for, per (model, region)."""
        return self.last_forecast

    def forecast_quantiles(self) -> Mapping[tuple[str, str], Mapping[float, float]]:
        """Forecast peak per quantile and (model, region), as the last decision saw it."""
        return self.last_quantiles

    def band_scales(self) -> Mapping[str, float]:
        """Per model, the factor on the forecast band its plans use (`[forecast]
        band_feedback`; all 1 without it)."""
        return {m.name: self._band_scale(m.name) for m in self.config.models}

    def reconfigure(self, config: Config) -> None:
        """Decide with `config` from the next tick on. A changed `[forecast]` table (or
        tick interval, the forecaster's step) starts a new forecaster: the learnt state
        of the old one does not fit the new settings."""
        old = ForecastSettings.of(
            self.config.forecast, step_s=self.config.scheduler.tick_interval_s
        )
        new = ForecastSettings.of(config.forecast, step_s=config.scheduler.tick_interval_s)
        if new != old:
            self.forecaster = build_forecaster(new)
            self._last_step = None
            log.info("forecaster_rebuilt method=%s step_s=%g", new.method, new.step_s)
        self.config = config
        self.band.target = config.forecast.band_feedback_target
        self._rps_cache.clear()
        self._rate_cache.clear()
        self._boot_cache.clear()

    def lower_bound(self) -> tuple[float, str] | None:
        """capsched knows no bound on its own cost."""
        return None

    def warm_start(self, history: Sequence[DemandSample]) -> int:
        """Feed the forecaster the rates observed before a restart (the store's demand
        history, oldest first), as `planned_demand` would have fed them tick by tick: each
        tick's peak short-window rate where the source knew it, else its rate; a missing
        reading stays missing. Ticks at or before the forecaster's last step are skipped.
        The band factors come back from their stored memory instead (`restore_band`); the
        request-size mixes are not replayed (they follow the load within a tick or two).
        Returns the ticks fed."""
        series = [(m.name, r.name) for m in self.config.models for r in self.config.regions]
        fed = 0
        for sample in history:
            step = self.forecaster.tick_of(sample.at_s)
            if self._last_step is not None and step <= self._last_step:
                continue
            rates = {**sample.rps, **sample.peak_rps}
            self.forecaster.update(
                sample.at_s,
                {demand_key(m, r): rates.get((m, r), math.nan) for m, r in series},
            )
            self._last_step = step
            fed += 1
        return fed

    def band_memory(self) -> BandMemory | None:
        """What the band feedback has learnt (None with `[forecast] band_feedback` off)."""
        return self.band.memory() if self.config.forecast.band_feedback else None

    def restore_band(self, memory: BandMemory) -> None:
        """Take up the band factors and recent plans stored before a restart, for the
        models still configured (nothing with `[forecast] band_feedback` off)."""
        if self.config.forecast.band_feedback:
            self.band.restore(memory, (m.name for m in self.config.models))

    def planned_demand(self, obs: Observation) -> list[Demand]:
        """Rates to provision for: max(forecast quantile peak over the horizon, rate now),
        where the rate of a tick is its peak short-window rate when the source knows it."""
        series = [(m.name, r.name) for m in self.config.models for r in self.config.regions]
        # Provision for the peaks inside a tick where the source reports them.
        rates = {**obs.demand.rps, **obs.demand.peak_rps}
        observed = {demand_key(m, r): rates.get((m, r), math.nan) for m, r in series}
        step = self.forecaster.tick_of(obs.now_s)
        new_step = self._last_step is None or step > self._last_step
        if new_step:
            # Extra ticks inside one step (on an interruption notice) reuse the forecast.
            self.forecaster.update(obs.now_s, observed)
            self.sizes.update(obs.demand)
            self._last_step = step
            if self.config.forecast.band_feedback:
                self._learn_band(step, series, rates)
        forecast = self.forecaster.predict(obs.now_s)
        q = self.config.forecast.plan_quantile
        lead = self.config.forecast.plan_for == "lead_window_peak"
        if lead and (self._lead_step is None or step > self._lead_step):
            self._lead_plan = self._plan_lead_peaks(step, series, observed, forecast)
            self._lead_step = step
        out: list[Demand] = []
        for m, r in series:
            now = observed[demand_key(m, r)]
            f = forecast.get(demand_key(m, r))
            peak = math.nan
            if f is not None:
                peak = scaled_peak(f.path(0.5), f.path(q), self._band_scale(m))
            if lead and f is not None:
                peak = self._lead_plan.get((m, r), peak)
            if f is not None:
                self.last_quantiles[m, r] = {qq: f.peak_rps(qq) for qq in f.quantiles}
            deadline_s = self.config.model(m).deferrable_deadline_s
            if deadline_s is not None:
                waiting = obs.demand.waiting.get((m, r), 0.0)
                mean_rate = obs.demand.rps.get((m, r), math.nan)  # not the tick's peak
                rps = self._deferrable_rps(
                    (m, r), obs.now_s, mean_rate, waiting, deadline_s, new_step
                )
                self.last_forecast[m, r] = rps
                out.append(Demand(m, r, rps))
                continue
            candidates = [v for v in (now, peak) if math.isfinite(v) and v >= 0]
            if not candidates:
                # Nothing known about this series yet: keep what the last tick planned.
                candidates = [self.last_forecast.get((m, r), 0.0)]
            rps = max(candidates)
            self.last_forecast[m, r] = rps
            out.append(Demand(m, r, rps, self.sizes.size((m, r))))
        return out

    def _band_scale(self, model: str) -> float:
        """The factor on `model`'s forecast band: learnt with `[forecast] band_feedback`,
        else 1 (the plain `plan_quantile`). Under a budget a model of a priority above the
        lowest keeps at least the plain band: narrowing it would free budget for a lower
        priority at the higher one's risk, and priorities are served strictly in turn."""
        if not self.config.forecast.band_feedback:
            return 1.0
        scale = self.band.scale(model)
        if scale < 1.0 and self.config.planning.budget_usd_per_hour is not None:
            priorities = [m.priority for m in self.config.models]
            if self.config.model(model).priority > min(priorities):
                return 1.0
        return scale

    def _learn_band(
        self,
        step: int,
        series: Sequence[tuple[str, str]],
        rates: Mapping[tuple[str, str], float],
    ) -> None:
        """Teach each model's band factor the tick's observed peak against the plan whose
        nodes served it (made a lead window earlier): `BandScale.observe`. A model with a
        missing or non-finite reading in any region learns nothing this tick, nor does a
        deferrable one (its peaks wait in a queue by design, and it plans no band)."""
        for model in dict.fromkeys(m for m, _ in series):
            if self.config.model(model).deferrable_deadline_s is not None:
                continue
            values = [rates.get((m, r), math.nan) for m, r in series if m == model]
            if not all(math.isfinite(v) and v >= 0 for v in values):
                continue
            lead = self.lead_window(model).last_step
            share = self.band.observe(model, step, lead, sum(values))
            if share is not None:
                log.debug(
                    "band_feedback model=%s step=%d overload_share=%.4f scale=%.3f",
                    model, step, share, self.band.scale(model),
                )  # fmt: skip

    def _record_band(self, plan: Plan) -> None:
        """Record, per model, the whole rate the plan in force places (what the band
        feedback judges it on when its lead window has been observed). A model the plan
        leaves short of its planned demand (budget, quota, no capacity) is not judged:
        its overload then is the limit's, and a wider band would not serve it."""
        if self._last_step is None or not self.config.forecast.band_feedback:
            return
        short = {u.model for u in plan.unmet if u.rps > 0}
        capacity: defaultdict[str, float] = defaultdict(float)
        sizes = {m.name: demand_size(plan.demand, m.name) for m in self.config.models}
        for pl in plan.placements:
            capacity[pl.model] += pl.count * self._node_rate(pl.model, pl.pool, sizes[pl.model])
        for m in self.config.models:
            judged = None if m.name in short else float(capacity[m.name])
            self.band.planned(m.name, self._last_step, judged)

    def _deferrable_rps(
        self,
        key: tuple[str, str],
        now_s: float,
        rate: float,
        waiting: float,
        deadline_s: float,
        new_step: bool,
    ) -> float:
        """The rate to provision for a deferrable (batch) series: its mean arrival rate
        over the last `deadline_s` (since the first seen, at first), plus what waits
        spread over half the deadline, so a backlog clears well before its requests
        expire. Peaks are not provisioned for: they wait, and are served in the troughs.
        A missing rate (NaN) adds nothing to the mean."""
        seen = self._arrivals.setdefault(key, deque())
        if new_step and math.isfinite(rate) and rate >= 0:
            seen.append((now_s, rate))
        while seen and seen[0][0] < now_s - deadline_s:
            seen.popleft()
        mean = sum(v for _, v in seen) / len(seen) if seen else 0.0
        backlog = waiting if math.isfinite(waiting) and waiting > 0 else 0.0
        return mean + backlog / (deadline_s / 2.0)

    def lead_boot_s(self, model: str) -> float:
        """The boot time a plan for `model` must look past: the longest `node_boot_s` over
        the instance types the config allows for it that can serve it (a plan must cover
        its window whichever pool the search picks); the configured fallback if none."""
        if model not in self._boot_cache:
            boots = [
                node_boot_s(self.config, model, itype)
                for o in self.catalog.offerings
                if self._node_rps(model, o.pool) > 0
                and allowed(self.config, o, itype := self.catalog.instance_type(o.pool))
            ]
            self._boot_cache[model] = max(boots, default=self.config.planning.default_boot_time_s)
        return self._boot_cache[model]

    def lead_window(self, model: str) -> LeadWindow:
        """The lead window of `model`'s plans in forecaster steps (one tick each): from its
        boot time (`lead_boot_s`) to one tick after it."""
        tick_s = self.config.scheduler.tick_interval_s
        return LeadWindow.of(self.lead_boot_s(model), tick_s, tick_s)

    def _plan_lead_peaks(
        self,
        step: int,
        series: Sequence[tuple[str, str]],
        observed: Mapping[str, float],
        forecast: Mapping[str, QuantileForecast],
    ) -> dict[tuple[str, str], float]:
        """One step of every series' lead-window peak calibrator: the planned rate per
        series (series without a forecast are left out). The calibrators are rebuilt, and
        start learning again, when the series, the quantile or a window changes."""
        q = self.config.forecast.plan_quantile
        windows = {m: self.lead_window(m) for m, _ in series}
        key = (tuple(series), q, tuple(sorted(windows.items())))
        if key != self._lead_for:
            groups: dict[LeadWindow, list[tuple[str, str]]] = {}
            for m, r in series:
                groups.setdefault(windows[m], []).append((m, r))
            self._lead = [(ss, LeadPeakQuantile(q, w, len(ss))) for w, ss in groups.items()]
            self._lead_for = key
        out: dict[tuple[str, str], float] = {}
        for ss, lp in self._lead:
            fcs = [forecast.get(demand_key(m, r)) for m, r in ss]
            width = max((f.horizon_steps for f in fcs if f is not None), default=1)
            median = np.zeros((len(ss), width))
            horizon_peak = np.zeros(len(ss))
            for i, f in enumerate(fcs):
                if f is not None:
                    median[i, : f.horizon_steps] = f.path(0.5)
                    horizon_peak[i] = f.peak_rps(q)
            y = [observed[demand_key(m, r)] for m, r in ss]
            planned = lp.plan(step, y, median, horizon_peak)
            for i, (m, r) in enumerate(ss):
                if fcs[i] is not None:
                    out[m, r] = float(planned[i])
        return out

    def decide(self, obs: Observation) -> Plan:
        """The plan of this tick (`_decide`), recorded for the band feedback."""
        plan = self._decide(obs)
        self._record_band(plan)
        return plan

    def _decide(self, obs: Observation) -> Plan:
        """Solve for the planned demand, starting from the fleet that serves now.

        Each model's last target either stands, is checked, or is searched again (see
        `_settled`): it stands while its planned rates stay within the re-plan
        tolerances of what its last search was for; after a larger rise it is checked
        (kept while it still serves the new demand on its own, searched otherwise); after
        a larger fall, or when a pool of the target became unavailable or dearer, it is
        searched. When every model stands the last plan stands without a solve. A
        search for a model that barely moved could only add churn for pennies, and
        skipping it keeps ticks cheap. Nodes still booting are kept by every plan:
        cancelling them for a marginally cheaper mix throws their boot away and delays
        the capacity.
        """
        self._before = self._memory()
        demand = self._held_up(obs.now_s, self.planned_demand(obs))
        if self.config.planning.place_by_size:
            # Split by prompt length after the hold-up (which keeps the mean size only).
            self.bucket_mix.update(obs.demand)  # idempotent within a tick: same reading time
            demand = [self.bucket_mix.split(d) for d in demand]
        offerings = self._steady_prices(obs.now_s, obs.offerings or self.catalog.offerings)
        self._track_availability(obs.now_s, offerings)
        stand, check = self._settled(demand, offerings)
        stand, check = stand - (lost := self._unreachable(obs, offerings)), check - lost
        # Launched and not serving yet: every plan keeps these, whichever way it is made.
        booting: Counter[tuple[str, Pool]] = Counter(
            (n.model, n.pool) for n in obs.serving() if n.state is not NodeState.READY
        )
        returned = self._returned(obs.now_s, offerings)
        stand, check = stand - returned, check - returned
        interval = self.config.planning.full_replan_interval_s
        if (
            interval > 0
            and self._last_full_s is not None
            and obs.now_s - self._last_full_s >= interval
        ):
            stand, check = set(), set()  # the periodic full search
        if self._last is not None and stand == {m.name for m in self.config.models}:
            last = self._last[0]
            targets = Counter({(pl.model, pl.pool): pl.count for pl in last.placements})
            if all(targets[key] >= count for key, count in booting.items()):
                return last
        settled = stand | check
        if not settled:
            self._last_full_s = obs.now_s
        # Settled models start from their last target (and any node booting beyond it),
        # the others from what serves now.
        fleet: Counter[tuple[str, Pool]] = Counter()
        for n in obs.serving():
            if n.model not in settled:
                fleet[n.model, n.pool] += 1
        if self._last is not None:
            for pl in self._last[0].placements:
                if pl.model in settled:
                    fleet[pl.model, pl.pool] += pl.count
        for (model, pool), count in booting.items():
            if model in settled:
                fleet[model, pool] = max(fleet[model, pool], count)
        placements = [Placement(m, p, c) for (m, p), c in sorted(fleet.items())]
        # Committed for settled models too: a target that no longer serves a rise is
        # searched again from the target, and that search must not drop a booting node
        # (it did: 8 of 53 launches of the embedded default were cancelled a tick later).
        committed = [Placement(m, p, c) for (m, p), c in sorted(booting.items())]
        catalog = dataclasses.replace(self.catalog, offerings=offerings)
        plan = make_plan(
            self.config,
            catalog,
            self.profiles,
            demand,
            placements,
            settled,
            committed,
            obs.short_models(self._node_rate),
        )
        plan = dataclasses.replace(plan, demand=tuple(demand))
        kept = set(plan.kept_models)
        solved_for = {
            (d.model, d.region): (
                self._last[1].get((d.model, d.region), token_load(d))
                if self._last is not None and d.model in kept
                else token_load(d)
            )
            for d in demand
        }
        self._last = (plan, solved_for, {o.pool: o for o in offerings})
        return plan

    def _node_rate(self, model: str, pool: Pool, size: RequestSize | None = None) -> float:
        """Requests/s one node of `model` in `pool` sustains at its SLO for requests of
        `size` (None: the reference request; the whole rate: a reading above it misses
        the SLO); 0.0 for a model or type this config or catalog does not know."""
        key = (model, pool, size)
        if key not in self._rate_cache:
            if len(self._rate_cache) >= RATE_CACHE_MAX:  # sizes drift: keep it bounded
                self._rate_cache.clear()
            try:
                itype = self.catalog.instance_type(pool)
                rate = node_rps(
                    self.config, self.profiles, model, itype, utilization=1.0, size=size
                )
            except KeyError:
                rate = 0.0
            self._rate_cache[key] = rate
        return self._rate_cache[key]

    def _steady_prices(self, now_s: float, offerings: Sequence[Offering]) -> tuple[Offering, ...]:
        """`offerings` at the prices plans are made with: a pool's new price counts once
        it has been listed for `planning.return_stabilization_s` without a change, so a
        price that moves for less than that window moves no plan (issue 18, item 3: a
        short drop would have searched, moved nodes to the pool, and moved them back when
        the price came back). A lasting drop then reaches `_returned` (a pool got cheaper)
        and a lasting rise `_settled` (a pool of the target got dearer) one window after it
        began. The first price seen counts at once. Spot prices change a few times a day on
        AWS, so the window delays a real move by minutes in hours."""
        window = self.config.planning.return_stabilization_s
        out: list[Offering] = []
        for o in offerings:
            price = o.usd_per_hour
            clock = self._prices.get(o.pool)
            if clock is None:
                clock = _PriceClock(price, price, now_s)
            elif abs(price - clock.seen_usd_per_hour) > PRICE_EPSILON * max(price, 1.0):
                clock = _PriceClock(clock.settled_usd_per_hour, price, now_s)
            if (
                clock.settled_usd_per_hour != clock.seen_usd_per_hour
                and now_s - clock.seen_since_s >= window
            ):
                log.info(
                    "price_settled pool=%s usd_per_hour=%.4f was=%.4f",
                    o.pool.key,
                    clock.seen_usd_per_hour,
                    clock.settled_usd_per_hour,
                )
                clock = _PriceClock(clock.seen_usd_per_hour, price, clock.seen_since_s)
            self._prices[o.pool] = clock
            if clock.settled_usd_per_hour != price:
                o = dataclasses.replace(o, usd_per_hour=clock.settled_usd_per_hour)
            out.append(o)
        return tuple(out)

    def _unreachable(self, obs: Observation, offerings: Sequence[Offering]) -> set[str]:
        """Models whose last target counts more nodes in an unavailable pool than serve
        there now: a node of it was reclaimed or never came up, and the pool refuses (or is
        cooling down after a refusal). Such a target cannot be reached, so it must not
        stand: it did, when the pool was already unavailable at the last search, and the
        diff relaunched into the stocked-out pool every tick (on the SpotHedge
        microbenchmark, 4-node day 8: 6.6 h of refused launches with a replica missing)."""
        if self._last is None:
            return set()
        down = {o.pool for o in offerings if not o.available}
        if not down:
            return set()
        serving = Counter((n.model, n.pool) for n in obs.serving() if n.pool in down)
        return {
            pl.model
            for pl in self._last[0].placements
            if pl.pool in down and pl.count > serving[pl.model, pl.pool]
        }

    def _track_availability(self, now_s: float, offerings: Sequence[Offering]) -> None:
        """Start each pool's availability clock when it becomes available; stop it when not."""
        available = {o.pool for o in offerings if o.available}
        for pool in list(self._available_since):
            if pool not in available:
                del self._available_since[pool]
                self._losses.setdefault(pool, deque()).append(now_s)
        for pool, losses in list(self._losses.items()):
            while losses and losses[0] < now_s - LOSS_MEMORY_S:
                losses.popleft()
            if not losses:
                del self._losses[pool]
        for pool in available:
            self._available_since.setdefault(pool, now_s)

    def _return_window_s(self, pool: Pool) -> float:
        """`planning.return_stabilization_s`, doubled for every further time the pool went
        away within the last day (at most `RETURN_BACKOFF_MAX` times the base): a pool whose
        launches keep failing (a stock-out hidden behind the pool's cooldown) is retried
        ever more rarely instead of every cooldown + window."""
        losses = len(self._losses.get(pool, ()))
        factor = min(2.0**losses, RETURN_BACKOFF_MAX)
        return self.config.planning.return_stabilization_s * factor

    def _node_rps(self, model: str, pool: Pool) -> float:
        """Planned rps of one node of `model` in `pool` (0 where it cannot serve)."""
        key = (model, pool)
        if key not in self._rps_cache:
            try:
                itype = self.catalog.instance_type(pool)
            except KeyError:
                self._rps_cache[key] = 0.0
            else:
                self._rps_cache[key] = node_rps(self.config, self.profiles, model, itype)
        return self._rps_cache[key]

    def _returned(self, now_s: float, offerings: Sequence[Offering]) -> set[str]:
        """Models to search again because a pool came back or got cheaper since their last
        search, has stayed available for `planning.return_stabilization_s`, and would pay
        for the move within `planning.return_payback_h`.

        `_settled` leaves such a pool out on purpose: re-targeting a pool the moment it
        reappears (or its cooldown ends) made a stocked-out pool flap in and out of every
        plan. The stabilisation window is that missing hysteresis; without it, flat
        demand never searched again and a fleet pushed onto on-demand by a spot outage
        stayed there for good (issue 18). The estimate is per node moved: the saving is
        the difference in price per planned rps between the dearest pool of the model's
        target and the returned pool, times that node's rps; the churn is the new node's
        boot time at its full price plus its expected interruptions over the payback
        horizon, each costing a boot and `solver.interruption_cost_usd`. The search itself
        then weighs the move with the solver's churn terms and may keep the fleet; the
        pool is then part of the last search's offerings and does not trigger again
        until it leaves and comes back (no flapping).
        """
        if self._last is None:
            return set()
        plan, _, before = self._last
        planning = self.config.planning
        payback_h = planning.return_payback_h
        now = {o.pool: o for o in offerings}
        # The cheap test first: most pools are as the last search saw them.
        fresh = [
            o
            for o in offerings
            if o.available
            and (
                (b := before.get(o.pool)) is None
                or not b.available
                or o.usd_per_hour < b.usd_per_hour * (1 - planning.replan_tolerance)
            )
            and now_s - self._available_since.get(o.pool, now_s) >= self._return_window_s(o.pool)
        ]
        if not fresh:
            return set()
        out: set[str] = set()
        for model in {pl.model for pl in plan.placements}:
            held = [
                (now[pl.pool].usd_per_hour / rps, rps)
                for pl in plan.placements
                if pl.model == model
                and pl.pool in now
                and (rps := self._node_rps(model, pl.pool)) > 0
            ]
            if not held:
                continue
            dearest, rps_held = max(held)
            for o in fresh:
                rps = self._node_rps(model, o.pool)
                itype = self.catalog.instance_type(o.pool)
                if rps <= 0 or not allowed(self.config, o, itype):
                    continue
                boot_h = node_boot_s(self.config, model, itype) / 3600.0
                saving_usd = (dearest - o.usd_per_hour / rps) * rps_held * payback_h
                risk = o.interruptions_per_hour * payback_h
                churn_usd = o.usd_per_hour * boot_h * (1 + risk) + (
                    risk * self.config.solver.interruption_cost_usd
                )
                if saving_usd > churn_usd:
                    out.add(model)
                    log.info(
                        "return_to_pool model=%s pool=%s saving_usd=%.2f churn_usd=%.2f",
                        model,
                        o.pool.key,
                        saving_usd,
                        churn_usd,
                    )
                    break
        return out

    def _held_up(self, now_s: float, demand: list[Demand]) -> list[Demand]:
        """Each series at the peak of its planned rate over `planning.scale_down_delay_s`:
        a rise counts at once, a fall once it has lasted the delay."""
        delay = self.config.planning.scale_down_delay_s
        self._recent.append((now_s, {(d.model, d.region): d.rps for d in demand}))
        while self._recent and self._recent[0][0] < now_s - delay:
            self._recent.popleft()
        return [
            Demand(
                d.model,
                d.region,
                max(rates.get((d.model, d.region), 0.0) for _, rates in self._recent),
                d.size,
            )
            for d in demand
        ]

    def _settled(
        self, demand: list[Demand], offerings: tuple[Offering, ...]
    ) -> tuple[set[str], set[str]]:
        """Models whose last target stands, and models whose last target is checked.

        A target stands while each of the model's planned rates is at most
        `planning.replan_tolerance` above and `planning.replan_fall_tolerance` below what
        its last search was for. After a larger rise it is checked, and kept if it still
        serves the demand on its own: the cheapest fleet for more demand costs at least
        as much as the cheapest for less, so a target that was the cheapest for the lower
        rate and still serves the higher one is still the cheapest, up to the search's
        gap and the churn terms. After a larger fall, or when a pool of the target became
        unavailable or dearer by more than `replan_tolerance` (a pool coming back or
        getting cheaper waits for the next search: re-targeting a pool the moment its
        cooldown ends made a stocked-out pool flap in and out of every plan), the model is
        searched. A fall needs the larger move because only a search sheds capacity, and
        shedding for a dip a few minutes long is churn (the Kubernetes HPA's tolerance is
        10%).

        Measured on one simulated day of each shared trace at 20 and 200 GPUs
        (`benchmarks/bench_simulate.py`), against searching on any move beyond 5%: 25%
        fewer searches for 0.6% more cost at the same mean SLO attainment; on the
        BurstGPT week, 815 solves instead of 1063. Also measured and not kept: a 20%
        fall tolerance (45% fewer searches, 1.5% dearer), and a rise checked against
        the target together with a 600 s scale-down delay (SLO attainment on the Azure
        conversation trace at 200 GPUs fell from 0.97 to 0.83).
        """
        if self._last is None:
            return set(), set()
        plan, solved_for, before = self._last
        rise_tol = self.config.planning.replan_tolerance
        fall_tol = self.config.planning.replan_fall_tolerance
        if rise_tol <= 0 and fall_tol <= 0:
            return set(), set()
        searched: set[str] = set()
        rose: set[str] = set()
        for d in demand:
            # Compared as token load: a change of size moves the need as a change of rate.
            old, load = solved_for.get((d.model, d.region)), token_load(d)
            if old is None or load < old * (1 - fall_tol) - 1e-9:
                searched.add(d.model)
            elif load > old * (1 + rise_tol) + 1e-9:
                rose.add(d.model)
        now = {o.pool: o for o in offerings}
        for pl in plan.placements:
            a, b = before.get(pl.pool), now.get(pl.pool)
            if (
                a is None
                or b is None
                or (a.available and not b.available)
                or b.usd_per_hour > a.usd_per_hour * (1 + rise_tol)
            ):
                searched.add(pl.model)
        names = {m.name for m in self.config.models}
        return names - searched - rose, rose - searched
