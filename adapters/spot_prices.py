"""Spot price history for the simulated cloud: a price per pool that moves over time.

`SpotPriceSeries` is one pool's price as a step function of replay time: the price
of a record holds until the next record, before the first record the first price
holds, after the last the last. The simulated cloud lists the price in force in its
offerings and bills a spot instance by integrating the series over the instance's
life, as AWS bills spot (the price in force each second, not the price at launch).

`load_price_history` reads the format of `describe-spot-price-history` as archived by
ericpauley/aws-spot-price-history: tab-separated, no header, one record per line:
availability zone ID (``use1-az2``), instance type, product description
(``Linux/UNIX``), price in USD per hour, timestamp (ISO-8601 with offset).
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np

PRODUCT_LINUX = "Linux/UNIX"


class SpotPriceError(ValueError):
    """A price history file that cannot be used; the message names the file and line."""


@dataclass(frozen=True, eq=False)
class SpotPriceSeries:
    """One pool's spot price over replay time: `usd_per_hour[i]` from `times_s[i]` on."""

    source: str  # where the prices came from (file and series), for notes and reports
    times_s: np.ndarray  # float64, increasing: replay-relative start of each price
    usd_per_hour: np.ndarray  # float64, > 0: the price from the matching time on

    def __post_init__(self) -> None:
        if len(self.times_s) == 0 or len(self.times_s) != len(self.usd_per_hour):
            raise ValueError(f"{self.source}: times and prices must be equal, non-empty arrays")
        if np.any(np.diff(self.times_s) <= 0):
            raise ValueError(f"{self.source}: times must increase")

    def price_at(self, t_s: float) -> float:
        """USD per hour in force at replay-relative `t_s`."""
        i = int(np.searchsorted(self.times_s, t_s, side="right")) - 1
        return float(self.usd_per_hour[max(i, 0)])

    def cost_usd(self, start_s: float, end_s: float) -> float:
        """USD billed for one instance from `start_s` to `end_s` (replay-relative)."""
        if end_s <= start_s:
            return 0.0
        # Breakpoints strictly inside the interval cut it into constant-price pieces.
        inner = self.times_s[(self.times_s > start_s) & (self.times_s < end_s)]
        edges = np.concatenate(([start_s], inner, [end_s]))
        idx = np.maximum(np.searchsorted(self.times_s, edges[:-1], side="right") - 1, 0)
        return float(np.dot(np.diff(edges), self.usd_per_hour[idx])) / 3600.0

    def shifted(self, by_s: float) -> SpotPriceSeries:
        """The same prices `by_s` seconds later (the first price holds before them)."""
        return replace(self, times_s=self.times_s + by_s)

    def scaled(self, factor: float) -> SpotPriceSeries:
        """Every price multiplied by `factor`."""
        return replace(self, usd_per_hour=self.usd_per_hour * factor)


def mean_series(parts: list[SpotPriceSeries], source: str) -> SpotPriceSeries:
    """The mean of several series at every moment (a step function again): how a pool
    with no zone is priced from its zones, as `adapters.aws` prices one from live prices."""
    if len(parts) == 1:
        return replace(parts[0], source=source)
    times = np.unique(np.concatenate([s.times_s for s in parts]))
    prices = np.mean([[s.price_at(float(t)) for t in times] for s in parts], axis=0)
    return SpotPriceSeries(source, times, prices)


@dataclass(frozen=True)
class PriceHistory:
    """Every series of one price history file, on the file's own clock."""

    source: str  # the file
    start_epoch_s: float  # the earliest record of the file (its time 0)
    # (zone ID, instance type, product) -> (epoch seconds, USD per hour), by time
    series: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]]

    def zone_ids(self, pattern: str) -> list[str]:
        """Zone IDs of the file matching the glob `pattern`, sorted."""
        return sorted({z for z, _, _ in self.series if fnmatch.fnmatchcase(z, pattern)})

    def series_for(
        self, zone_id: str, instance_type: str, product: str, offset_s: float
    ) -> SpotPriceSeries | None:
        """The series of (zone ID, type, product) with replay time 0 at the file's
        `offset_s`, or None when the file has no such series."""
        found = self.series.get((zone_id, instance_type, product))
        if found is None:
            return None
        epochs, prices = found
        times = epochs - (self.start_epoch_s + offset_s)
        # Records before replay time 0 matter only for the price in force at 0.
        keep = max(int(np.searchsorted(times, 0.0, side="right")) - 1, 0)
        where = f"{self.source} {zone_id}/{instance_type}/{product}"
        return SpotPriceSeries(where, times[keep:], prices[keep:])


def load_price_history(path: Path | str) -> PriceHistory:
    """Read a `describe-spot-price-history` TSV (see the module docstring).

    Records with the same series and timestamp keep the last one; a blank line is
    skipped. Raises `SpotPriceError` naming the file and line of the first bad record.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpotPriceError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SpotPriceError(f"{p}: not UTF-8 text") from None
    raw: dict[tuple[str, str, str], dict[float, float]] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 5:
            raise SpotPriceError(
                f"{p}:{n}: expected 5 tab-separated columns (zone ID, instance type,"
                f" product, USD/hour, timestamp), got {len(cols)}"
            )
        zone, itype, product, price_s, at_s = (c.strip() for c in cols)
        try:
            price = float(price_s)
        except ValueError:
            price = math.nan
        if not (math.isfinite(price) and price > 0):
            raise SpotPriceError(f"{p}:{n}: price must be a positive number, got {price_s!r}")
        try:
            at = datetime.fromisoformat(at_s)
        except ValueError:
            raise SpotPriceError(f"{p}:{n}: timestamp is not ISO-8601: {at_s!r}") from None
        if at.tzinfo is None:
            raise SpotPriceError(f"{p}:{n}: timestamp has no UTC offset: {at_s!r}")
        raw.setdefault((zone, itype, product), {})[at.timestamp()] = price
    if not raw:
        raise SpotPriceError(f"{p}: no price records")
    series = {
        key: (
            np.array(sorted(points), dtype=np.float64),
            np.array([points[t] for t in sorted(points)], dtype=np.float64),
        )
        for key, points in raw.items()
    }
    start = min(float(t[0]) for t, _ in series.values())
    return PriceHistory(str(p), start, series)
