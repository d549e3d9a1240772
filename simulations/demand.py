"""From a trace file to the load the simulator replays: requests/s per (model, region).

`load_demand` reads a trace (any format of `simulations.traces`), converts it to
requests per second, assigns its series to the config's (model, region) pairs, and
optionally scales it so that its peak needs about `fleet_gpus` GPUs. Where the trace
gives request sizes (`TraceSeries.tokens`), each pair keeps its per-minute mean prompt
and output tokens (`DemandTrace.tokens`, rate-weighted over the series summed into it);
the simulator's node capacity counts with them (docs/profiles.md "Request size"). It refuses a
rate no plan could serve (`scheduler.decide.planner.servable_rps`), naming the file line
that holds it where one line does: such a rate is a unit or scale mistake, and
replaying it would only ask the simulated cloud for millions of nodes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scheduler.config import Config
from scheduler.decide.planner import allowed, servable_rps
from scheduler.domain import (
    MAX_NODES_PER_POOL,
    REFERENCE_SIZE,
    CapacityProfile,
    Market,
    RequestSize,
)
from scheduler.fleet.capacity import node_rps
from scheduler.fleet.catalog import Catalog
from simulations.bucket_steps import BucketSteps
from simulations.traces import TraceFormatError, TraceSeries, read_series

log = logging.getLogger(__name__)

# Token rates (BurstGPT) become requests with the capacity profiles' reference mix:
# 763 input + 232 output tokens per request (docs/profiles.md).
REFERENCE_TOKENS_PER_REQUEST = REFERENCE_SIZE.tokens
STEP_S = 60.0


@dataclass(frozen=True, eq=False)
class DemandTrace:
    """Requests/s per (model, region) per one-minute step."""

    source: str  # trace file
    format: str  # trace format it was read as
    start_s: float  # time of the first step
    step_s: float  # step length, seconds
    keys: tuple[tuple[str, str], ...]  # (model, region) per row, every configured pair
    rps: np.ndarray  # shape (len(keys), n_steps); NaN where the trace has no value
    scale: float  # factor applied to the trace's own rates
    notes: tuple[str, ...] = ()  # how the trace was mapped and scaled
    # Mean (input, output) tokens per request, shape (2, len(keys), n_steps); NaN where
    # unknown (the reference request). None: the trace gives no sizes.
    tokens: np.ndarray | None = None
    # Each pair's requests split by prompt length per step (rate-weighted over the series
    # summed into it); None: the trace gives no per-request sizes.
    buckets: BucketSteps | None = None

    @property
    def n_steps(self) -> int:
        """Number of steps."""
        return int(self.rps.shape[1])


def _rates(series: TraceSeries) -> np.ndarray:
    if series.unit == "tokens/s":
        return series.values / REFERENCE_TOKENS_PER_REQUEST
    return series.rates_per_s()


def assign_series(
    series: TraceSeries,
    config: Config,
    *,
    model: str | None = None,
    region: str | None = None,
    mapping: Mapping[str, str] | None = None,
) -> tuple[tuple[tuple[str, str], ...], np.ndarray, list[str]]:
    """Rows for every configured (model, region); trace series summed into their pair.

    A series named ``model/region`` (empty parts take the defaults) goes to that pair;
    `mapping` renames series to ``model/region`` first; every other series is summed
    into (`model`, `region`), by default the config's first model and region.
    """
    keys, rows = _routes(series, config, model=model, region=region, mapping=mapping)
    rates = _rates(series)
    out = np.zeros((len(keys), series.n_steps))
    notes: list[str] = []
    for name, rate, row in zip(series.names, rates, rows, strict=True):
        out[row] += rate
        if name != f"{keys[row][0]}/{keys[row][1]}":  # already named model/region: no news
            notes.append(f"series {name} -> {keys[row][0]}/{keys[row][1]}")
    return keys, out, notes


def assign_tokens(
    series: TraceSeries, n_keys: int, rows: Sequence[int], rates: np.ndarray
) -> np.ndarray | None:
    """Mean (input, output) tokens per request of each pair and step, shape (2, n_keys,
    n_steps): the series' sizes weighted by their rates (`rates`, one row per series,
    `rows` its pair). NaN where no series with a size has load. None without sizes."""
    if series.tokens is None:
        return None
    weight = np.zeros((n_keys, series.n_steps))
    sums = np.zeros((2, n_keys, series.n_steps))
    for s, row in enumerate(rows):
        known = np.isfinite(series.tokens[:, s]).all(axis=0) & np.isfinite(rates[s])
        w = np.where(known, rates[s], 0.0)
        weight[row] += w
        for k in range(2):
            sums[k, row] += w * np.where(known, series.tokens[k, s], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(weight > 0, sums / weight, np.nan)
    # Three significant digits: within 0.5 % of the mean, and the capacity caches of the
    # replay see repeated sizes instead of a new float every minute.
    with np.errstate(invalid="ignore", divide="ignore"):
        digits = 2 - np.floor(np.log10(np.abs(means)))
        scale = 10.0 ** np.nan_to_num(digits)
    return np.where(np.isfinite(means), np.round(means * scale) / scale, np.nan)


def mean_size(tokens: np.ndarray | None, rps: np.ndarray, row: int) -> RequestSize | None:
    """The rate-weighted mean size of pair `row` over the whole trace (None: no sizes,
    the reference request); steps without a size count as the reference request."""
    if tokens is None:
        return None
    rate = np.nan_to_num(rps[row])
    total = float(rate.sum())
    if total <= 0:
        return None
    ref = (REFERENCE_SIZE.input_tokens, REFERENCE_SIZE.output_tokens)
    inp, out = (
        float((rate * np.where(np.isfinite(tokens[k, row]), tokens[k, row], ref[k])).sum())
        for k in range(2)
    )
    return RequestSize(inp / total, out / total)


def _routes(
    series: TraceSeries,
    config: Config,
    *,
    model: str | None,
    region: str | None,
    mapping: Mapping[str, str] | None,
) -> tuple[tuple[tuple[str, str], ...], list[int]]:
    """Every configured (model, region), and the index among them of each series' pair
    (the rules of `assign_series`)."""
    models = [m.name for m in config.models]
    regions = [r.name for r in config.regions]
    default_model = model or models[0]
    default_region = region or regions[0]
    for what, name, known in (
        ("model", default_model, models),
        ("region", default_region, regions),
    ):
        if name not in known:
            raise ValueError(f"demand {what} {name!r} is not in the config ({', '.join(known)})")
    keys = tuple((m, r) for m in models for r in regions)
    index = {k: i for i, k in enumerate(keys)}
    rows: list[int] = []
    for name in series.names:
        label = (mapping or {}).get(name, name)
        if "/" in label:
            m, _, r = label.partition("/")
            key = (m or default_model, r or default_region)
        else:
            key = (default_model, default_region)
        if key not in index:
            raise ValueError(
                f"{series.source}: series {name!r} is for {key[0]}/{key[1]}, "
                "which is not a configured model/region"
            )
        rows.append(index[key])
    return keys, rows


def gpus_per_rps(
    config: Config,
    catalog: Catalog,
    profiles: Sequence[CapacityProfile],
    sizes: Mapping[str, RequestSize | None] | None = None,
) -> dict[str, float]:
    """GPUs one request/s of each model needs on its cheapest allowed on-demand type.

    The instance type with the lowest on-demand USD per planned rps (profile capacity
    x target utilisation, for requests of the model's size in `sizes`; absent: the
    reference request) is the one a static fleet would buy, so a trace scaled with
    this needs about the chosen number of GPUs at its peak.
    """
    out: dict[str, float] = {}
    for section in config.models:
        best: tuple[float, float] | None = None  # (usd per rps, gpus per rps)
        for o in catalog.offerings:
            if o.pool.market is not Market.ON_DEMAND:
                continue
            itype = catalog.instance_type(o.pool)
            if not allowed(config, o, itype):
                continue
            size = (sizes or {}).get(section.name)
            rps = node_rps(config, profiles, section.name, itype, size=size)
            if rps <= 0:
                continue
            cand = (o.usd_per_hour / rps, itype.gpu_count / rps)
            if best is None or cand < best:
                best = cand
        if best is None:
            raise ValueError(f"model {section.name!r}: no allowed on-demand pool can serve it")
        out[section.name] = best[1]
    return out


def fleet_scale(
    keys: Sequence[tuple[str, str]],
    rps: np.ndarray,
    fleet_gpus: float,
    per_rps: Mapping[str, float],
) -> float:
    """Factor that makes the peak of `rps` need about `fleet_gpus` GPUs."""
    weights = np.array([per_rps[m] for m, _ in keys])
    need = np.nansum(rps * weights[:, None], axis=0)
    peak = float(need.max(initial=0.0))
    if peak <= 0:
        raise ValueError("the trace has no load to scale")
    return fleet_gpus / peak


def _check_servable(
    series: TraceSeries,
    keys: Sequence[tuple[str, str]],
    rps: np.ndarray,
    rows: Sequence[int],
    factor: float,
    servable: Mapping[str, float],
) -> None:
    """TraceFormatError at the first (pair, step) whose rate is above its model's
    `servable` bound, naming the line of the series carrying most of it."""
    for k, (m, r) in enumerate(keys):
        with np.errstate(invalid="ignore"):  # NaN (no value) is never above the bound
            over = np.flatnonzero(rps[k] > servable[m])
        if not over.size:
            continue
        t = int(over[0])
        members = [s for s, row in enumerate(rows) if row == k]
        top = max(members, key=lambda s: np.nan_to_num(series.values[s, t]))
        scaled = f" (the trace scaled x{factor:.4g})" if factor != 1.0 else ""
        raise TraceFormatError(
            series.source,
            series.line_of(top, t),
            f"{rps[k, t]:.4g} requests/s of {m} from {r} in minute {t} of the trace"
            f"{scaled}, is more than"
            f" every pool the config allows could serve ({servable[m]:.4g} requests/s with"
            f" {MAX_NODES_PER_POOL:,} nodes in each)",
        )


def load_demand(
    path: Path | str,
    config: Config,
    catalog: Catalog,
    profiles: Sequence[CapacityProfile],
    *,
    fmt: str = "auto",
    fleet_gpus: float | None = None,
    scale: float = 1.0,
    model: str | None = None,
    region: str | None = None,
    mapping: Mapping[str, str] | None = None,
) -> DemandTrace:
    """Read a trace and turn it into the load of the configured models and regions.

    Raises `TraceFormatError` for a bad file (message names the line) and ValueError
    for a trace that does not fit the config.
    """
    series = read_series(path, fmt)
    if series.step_s != STEP_S:
        raise TraceFormatError(path, None, f"expected one-minute steps, got {series.step_s} s")
    keys, rps, notes = assign_series(series, config, model=model, region=region, mapping=mapping)
    rows = _routes(series, config, model=model, region=region, mapping=mapping)[1]
    tokens = assign_tokens(series, len(keys), rows, _rates(series))
    buckets = (
        None if series.buckets is None else series.buckets.merged(rows, len(keys), _rates(series))
    )
    factor = scale
    if fleet_gpus is not None:
        # Sized by each model's mean request size over the trace (the reference without).
        by_model: dict[str, list[int]] = {}
        for k, (m, _) in enumerate(keys):
            by_model.setdefault(m, []).append(k)
        sizes = {
            m: None if tokens is None else _pooled_size(tokens[:, ks], rps[ks])
            for m, ks in by_model.items()
        }
        factor *= fleet_scale(keys, rps, fleet_gpus, gpus_per_rps(config, catalog, profiles, sizes))
        notes.append(f"scaled x{factor:.4g} so the peak needs about {fleet_gpus:g} GPUs")
    elif scale != 1.0:
        notes.append(f"scaled x{scale:g}")
    with np.errstate(over="ignore"):  # an overflow is inf, which the check refuses
        scaled = rps * factor
    _check_servable(series, keys, scaled, rows, factor, servable_rps(config, catalog, profiles))
    log.info(
        "demand_loaded path=%s format=%s steps=%d factor=%.4g", path, series.format,
        series.n_steps, factor,
    )  # fmt: skip
    if tokens is not None:
        notes.append("request sizes per minute from the trace's token counts")
    return DemandTrace(
        str(path), series.format, series.start_s, STEP_S, keys, scaled, factor, tuple(notes),
        tokens, buckets,
    )  # fmt: skip


def _pooled_size(tokens: np.ndarray, rps: np.ndarray) -> RequestSize | None:
    """The rate-weighted mean size over several pairs' rows (`mean_size` of their sum)."""
    rate = np.nan_to_num(rps)
    total = rate.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = np.stack(
            [
                np.where(
                    total > 0,
                    (rate * np.where(np.isfinite(tokens[k]), tokens[k], ref)).sum(axis=0) / total,
                    np.nan,
                )
                for k, ref in enumerate((REFERENCE_SIZE.input_tokens, REFERENCE_SIZE.output_tokens))
            ]
        )
    return mean_size(pooled[:, None, :], total[None, :], 0)
