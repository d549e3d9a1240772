"""Trace readers: turn demand traces into per-minute series.

Every reader returns a `TraceSeries`: one or more series on a common grid of
`step_s`-second steps (60 s here), so the forecaster evaluation and, later, the
simulator replay the same data the same way. Supported formats (`FORMATS`):

- ``minute-csv``: a per-minute count CSV: a time column and a count column, by
  name or, by default, the first two columns. Time is a minute index, epoch
  seconds, or ISO-8601 (``time_unit``). Minutes absent from the file are missing
  (NaN) unless ``missing="zero"``.
- ``requests``: one row per request with a timestamp (seconds or ISO-8601),
  aggregated to requests per minute (an absent minute had no request: 0).
- ``burstgpt``: the BurstGPT first-week per-minute aggregates
  (``minute_index, total_tokens_per_s, ...``); absent minutes had no request (0).
- ``azure-functions``: Azure Functions 2019 ``invocations.csv`` (one row per
  function, one column per minute of the day): many series at once.
- ``azure-llm``: the Azure LLM inference trace 2023 (``TIMESTAMP`` per request),
  aggregated to requests per minute.
- ``mooncake``: Mooncake's JSON lines request traces (``timestamp`` in milliseconds,
  ``input_length``, ``output_length``), aggregated to requests per minute with their sizes.

A malformed file raises `TraceFormatError`, whose message starts with
``path:line:`` so the bad row can be found: a negative numeric time (minute indexes
and epoch seconds start at 0) and a model or region holding a character that cannot
be seen (`scheduler.names`) are malformed too. Where one line holds a value, the
series remember that line (`TraceSeries.line_of`), so a check on the values made
later can name it. See docs/forecasting.md.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np

from scheduler.names import name_problem
from simulations.bucket_steps import BucketSteps

log = logging.getLogger(__name__)

FORMATS = ("minute-csv", "requests", "burstgpt", "azure-functions", "azure-llm", "mooncake")
MOONCAKE_FIELDS = ("timestamp", "input_length", "output_length")  # ms, prompt and output tokens
TimeUnit = Literal["auto", "min", "s", "iso"]
MINUTE_S = 60.0
# A trace longer than this many minutes (a year) is almost surely a unit mistake
# (milliseconds read as seconds); refuse rather than allocate gigabytes.
MAX_MINUTES = 366 * 24 * 60


class TraceFormatError(ValueError):
    """A trace file that cannot be read; the message names the file and line."""

    def __init__(self, path: Path | str, line: int | None, reason: str) -> None:
        self.path = Path(path)  # file that failed
        self.line = line  # 1-based line number in the file, None for whole-file problems
        self.reason = reason  # what is wrong
        where = f"{self.path}:{line}" if line is not None else f"{self.path}"
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True, eq=False)
class TraceSeries:
    """Per-step values of one or more series on a shared time grid."""

    source: str  # file the series came from
    format: str  # reader format name (one of FORMATS)
    names: tuple[str, ...]  # one name per series (row of `values`)
    start_s: float  # time of the first step: epoch seconds, or trace-relative seconds
    step_s: float  # grid spacing, seconds
    values: np.ndarray  # shape (n_series, n_steps), float64; NaN = missing
    unit: str  # unit of `values`, e.g. "requests/min" or "tokens/s"
    mean_tokens: tuple[float, float] | None = None  # mean (input, output) tokens per request
    # File line of each value, shape of `values`; 0 where no one line holds it (a gap, or
    # a count of many request rows). None: no value comes from one line.
    lines: np.ndarray | None = None
    # Mean (input, output) tokens per request of each step: shape (2, n_series, n_steps),
    # NaN where the step had no request. None: the trace gives no per-request sizes.
    tokens: np.ndarray | None = None
    # Each step's requests split by prompt length (scheduler.forecast.buckets); None: the
    # trace gives no per-request sizes.
    buckets: BucketSteps | None = None

    @property
    def n_series(self) -> int:
        """Number of series."""
        return int(self.values.shape[0])

    @property
    def n_steps(self) -> int:
        """Number of steps in the grid."""
        return int(self.values.shape[1])

    def line_of(self, series: int, step: int) -> int | None:
        """The file line holding the value of `series` at `step`, None if no one line does."""
        if self.lines is None:
            return None
        line = int(self.lines[series, step])
        return line if line > 0 else None

    def times_s(self) -> np.ndarray:
        """Start time of every step, seconds."""
        return self.start_s + self.step_s * np.arange(self.n_steps, dtype=np.float64)

    def rates_per_s(self) -> np.ndarray:
        """Values as a rate per second (counts per step are divided by the step length)."""
        if self.unit.endswith("/s"):
            return self.values.copy()
        if self.unit.endswith("/min"):
            return self.values / MINUTE_S
        raise ValueError(f"cannot convert unit {self.unit!r} to a rate per second")

    def select(self, names: Sequence[str]) -> TraceSeries:
        """A copy holding only the named series, in the order given."""
        index = {n: i for i, n in enumerate(self.names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise KeyError(f"no series named {missing[0]!r} in {self.source}")
        rows = [index[n] for n in names]
        return TraceSeries(
            self.source, self.format, tuple(names), self.start_s, self.step_s,
            self.values[rows].copy(), self.unit, self.mean_tokens,
            None if self.lines is None else self.lines[rows].copy(),
            None if self.tokens is None else self.tokens[:, rows].copy(),
            None if self.buckets is None else self.buckets.select(rows),
        )  # fmt: skip


# --------------------------------------------------------------------------- helpers


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) for each non-empty CSV row, header included."""
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise TraceFormatError(path, None, f"cannot read: {exc.strerror or exc}") from None
    with handle:
        reader = csv.reader(handle)
        try:
            for fields in reader:
                if not fields or all(not f.strip() for f in fields):
                    continue
                yield reader.line_num, fields
        except (csv.Error, UnicodeDecodeError) as exc:
            raise TraceFormatError(path, reader.line_num + 1, f"not valid CSV: {exc}") from None


def _header(path: Path, rows: Iterator[tuple[int, list[str]]]) -> tuple[int, list[str]]:
    try:
        line, header = next(rows)
    except StopIteration:
        raise TraceFormatError(path, None, "empty file (no header row)") from None
    return line, [h.strip() for h in header]


def _column(path: Path, line: int, header: list[str], name: str | None, default: int) -> int:
    """Index of column `name`, or of column number `default` when no name is given."""
    if name is None:
        if default >= len(header):
            raise TraceFormatError(path, line, f"need at least {default + 1} columns")
        return default
    if name in header:
        return header.index(name)
    raise TraceFormatError(path, line, f"no column {name!r} in header {header}")


def _float(path: Path, line: int, text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceFormatError(path, line, f"{what} {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise TraceFormatError(path, line, f"{what} {text.strip()!r} is not finite")
    return value


def _parse_time(path: Path, line: int, text: str, unit: TimeUnit) -> float:
    """A timestamp in seconds (ISO-8601 → epoch seconds, naive read as UTC) or minutes."""
    text = text.strip()
    if unit in ("s", "min"):
        return _not_negative_time(path, line, text, _float(path, line, text, "time"))
    if unit == "auto":
        try:
            value = float(text)
        except ValueError:
            pass
        else:
            if not math.isfinite(value):
                raise TraceFormatError(path, line, f"time {text!r} is not finite")
            return _not_negative_time(path, line, text, value)
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise TraceFormatError(
            path, line, f"time {text!r} is neither a number nor ISO-8601"
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def _not_negative_time(path: Path, line: int, text: str, value: float) -> float:
    if value < 0:
        raise TraceFormatError(
            path, line, f"time {text!r} is negative (minute indexes and epoch seconds start at 0)"
        )
    return value


def _is_iso(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return True
    return False


def _bin_minutes(
    path: Path, minutes: np.ndarray, weights: np.ndarray | None, first_line: int
) -> tuple[float, np.ndarray]:
    """Sum weights (or count events) per whole minute; returns (start minute, sums)."""
    if minutes.size == 0:
        raise TraceFormatError(path, None, "no data rows")
    index = np.floor(minutes).astype(np.int64)
    lo, hi = int(index.min()), int(index.max())
    if hi - lo + 1 > MAX_MINUTES:
        raise TraceFormatError(
            path, first_line, f"span of {hi - lo + 1} minutes is longer than a year (wrong unit?)"
        )
    sums = np.bincount(index - lo, weights=weights, minlength=hi - lo + 1).astype(np.float64)
    return float(lo), sums


def _step_means(
    row_series: np.ndarray, index: np.ndarray, sizes: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """Mean (input, output) tokens per request per (series, step) of request rows:
    `row_series` and `index` (step) per row, `sizes` shape (rows, 2); NaN where a step
    has no request."""
    counts = np.zeros(shape)
    np.add.at(counts, (row_series, index), 1.0)
    out = np.zeros((2, *shape))
    for k in range(2):
        np.add.at(out[k], (row_series, index), sizes[:, k])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, out / counts, np.nan)


def _step_buckets(
    row_series: np.ndarray,
    index: np.ndarray,
    sizes: Sequence[tuple[float, float]],
    shape: tuple[int, int],
) -> BucketSteps:
    """Each (series, step)'s requests split by prompt length at the planner's edges."""
    arr = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    return BucketSteps.of_requests(row_series, index, arr[:, 0], arr[:, 1], shape)


def _make(
    path: Path,
    fmt: str,
    names: Sequence[str],
    start_min: float,
    values: np.ndarray,
    unit: str,
    lines: np.ndarray | None = None,
) -> TraceSeries:
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    if lines is not None:
        lines = np.broadcast_to(np.atleast_2d(lines), values.shape).astype(np.int64)
    log.info("trace_loaded path=%s format=%s series=%d minutes=%d", path, fmt, *values.shape)
    return TraceSeries(
        str(path), fmt, tuple(names), start_min * MINUTE_S, MINUTE_S, values, unit, None, lines
    )


# --------------------------------------------------------------------------- readers


def _group_columns(header: list[str]) -> tuple[int | None, int | None]:
    """Indexes of the optional ``model`` and ``region`` columns."""
    lower = [h.lower() for h in header]
    model = lower.index("model") if "model" in lower else None
    region = lower.index("region") if "region" in lower else None
    return model, region


def _group_name(
    path: Path, line: int, fields: list[str], model_col: int | None, region_col: int | None
) -> str:
    """Series name of a row: ``model/region`` when the file has those columns."""
    model = fields[model_col].strip() if model_col is not None else ""
    region = fields[region_col].strip() if region_col is not None else ""
    if not model and not region:
        raise TraceFormatError(path, line, "empty model and region")
    for what, name in (("model", model), ("region", region)):
        problem = name_problem(name)
        if problem is not None:
            raise TraceFormatError(path, line, f"{what} {name!r}: {problem}")
    return f"{model}/{region}"


def read_minute_csv(
    path: Path | str,
    *,
    time_column: str | None = None,
    count_column: str | None = None,
    time_unit: TimeUnit = "auto",
    missing: Literal["nan", "zero"] = "nan",
    name: str | None = None,
) -> TraceSeries:
    """Read a per-minute count CSV (header row, then one row per minute).

    `time_column`/`count_column` name the columns (default: ``minute`` and
    ``requests`` when the header has them, else the first and second).
    `time_unit`: "min" (minute index), "s" (seconds), "iso" (ISO-8601) or "auto"
    (ISO-8601 if not numeric; numeric values whose smallest step is ≥ 60 are
    seconds, otherwise minutes). Minutes absent from the file are NaN, or 0 with
    `missing="zero"`. A minute listed twice, a negative count or an unreadable
    field is an error naming its line.

    Optional ``model`` and ``region`` columns split the file into one series per
    (model, region), named ``model/region`` (a part is empty when its column is
    absent); each series has its own minutes, on a grid shared by all.
    """
    p = Path(path)
    rows = _rows(p)
    header_line, header = _header(p, rows)
    lower = [h.lower() for h in header]
    if time_column is None and "minute" in lower:
        time_column = header[lower.index("minute")]
    if count_column is None and "requests" in lower:
        count_column = header[lower.index("requests")]
    t_col = _column(p, header_line, header, time_column, 0)
    c_col = _column(p, header_line, header, count_column, 1)
    model_col, region_col = _group_columns(header)
    grouped = model_col is not None or region_col is not None
    need = max(t_col, c_col, model_col or 0, region_col or 0)
    raw_times: list[str] = []
    lines: list[int] = []
    counts: list[float] = []
    groups: list[str] = []
    for line, fields in rows:
        if len(fields) <= need:
            raise TraceFormatError(p, line, f"expected {len(header)} fields, got {len(fields)}")
        raw_times.append(fields[t_col])
        lines.append(line)
        count = _float(p, line, fields[c_col], "count")
        if count < 0:
            raise TraceFormatError(p, line, f"count {count:g} is negative")
        counts.append(count)
        if grouped:
            groups.append(_group_name(p, line, fields, model_col, region_col))
    if not counts:
        raise TraceFormatError(p, None, "no data rows")
    unit = time_unit
    if unit == "auto" and _is_iso(raw_times[0].strip()):
        unit = "iso"
    times = np.array([_parse_time(p, ln, t, unit) for ln, t in zip(lines, raw_times, strict=True)])
    if unit == "iso":
        unit = "s"
    elif unit == "auto":
        steps = np.diff(np.unique(times))
        unit = "s" if steps.size and float(steps.min()) >= MINUTE_S else "min"
    minutes = times / MINUTE_S if unit == "s" else times
    index = np.floor(minutes).astype(np.int64)
    names = sorted(set(groups)) if grouped else [""]
    row_group = (
        np.array([names.index(g) for g in groups], dtype=np.int64)
        if grouped
        else np.zeros(len(index), dtype=np.int64)
    )
    # A minute may appear once per series: check duplicates on (series, minute).
    order = np.lexsort((index, row_group))
    same = (np.diff(index[order]) == 0) & (np.diff(row_group[order]) == 0)
    dup = np.nonzero(same)[0]
    if dup.size:
        raise TraceFormatError(p, lines[int(order[dup[0] + 1])], "minute listed twice")
    lo, hi = int(index.min()), int(index.max())
    if hi - lo + 1 > MAX_MINUTES:
        raise TraceFormatError(p, lines[0], f"span of {hi - lo + 1} minutes is longer than a year")
    values = np.full((len(names), hi - lo + 1), 0.0 if missing == "zero" else np.nan)
    values[row_group, index - lo] = counts
    line_of = np.zeros(values.shape, dtype=np.int64)
    line_of[row_group, index - lo] = lines
    if not grouped:
        label = name or (count_column if count_column is not None else header[c_col]) or p.stem
        names = [label]
    return _make(p, "minute-csv", names, float(lo), values, "requests/min", line_of)


# Token count columns of a per-request trace, first match wins: ours, BurstGPT's raw
# release (`Request tokens`, `Response tokens`) and the OpenAI usage names.
INPUT_TOKEN_COLUMNS = ("input_tokens", "request tokens", "prompt_tokens")
OUTPUT_TOKEN_COLUMNS = ("output_tokens", "response tokens", "completion_tokens")


def read_requests(
    path: Path | str,
    *,
    time_column: str | None = None,
    time_unit: TimeUnit = "auto",
    name: str | None = None,
) -> TraceSeries:
    """Read a per-request trace (one row per request) as requests per minute.

    `time_column` names the timestamp column (default: ``timestamp`` when the header
    has it, else the first); timestamps are seconds ("s"), ISO-8601 ("iso"), or
    detected ("auto"). Rows need not be sorted. Optional ``model`` and ``region``
    columns give one series per (model, region), named ``model/region``; optional
    ``input_tokens`` and ``output_tokens`` columns (or BurstGPT's ``Request tokens`` and
    ``Response tokens``, `INPUT_TOKEN_COLUMNS`) must hold counts ≥ 0, and their
    means are kept in `TraceSeries.mean_tokens` and per minute in `TraceSeries.tokens`
    (when both columns are there).
    """
    p = Path(path)
    rows = _rows(p)
    header_line, header = _header(p, rows)
    lower = [h.lower() for h in header]
    if time_column is None and "timestamp" in lower:
        time_column = header[lower.index("timestamp")]
    t_col = _column(p, header_line, header, time_column, 0)
    model_col, region_col = _group_columns(header)
    grouped = model_col is not None or region_col is not None
    token_cols = [
        next((lower.index(c) for c in names if c in lower), None)
        for names in (INPUT_TOKEN_COLUMNS, OUTPUT_TOKEN_COLUMNS)
    ]
    need = max([t_col, model_col or 0, region_col or 0, *(c or 0 for c in token_cols)])
    unit: TimeUnit = "s" if time_unit in ("auto", "s") else time_unit
    times: list[float] = []
    groups: list[str] = []
    sizes: list[tuple[float, float]] = []  # per row, when both token columns are there
    both = all(c is not None for c in token_cols)
    first_line = header_line + 1
    for line, fields in rows:
        if len(fields) <= need:
            raise TraceFormatError(p, line, f"expected {len(header)} fields, got {len(fields)}")
        if time_unit == "auto" and not times:
            unit = "iso" if _is_iso(fields[t_col].strip()) else "s"
            first_line = line
        times.append(_parse_time(p, line, fields[t_col], unit))
        counts = []
        for col in token_cols:
            if col is not None:
                n = _float(p, line, fields[col], header[col])
                if n < 0:
                    raise TraceFormatError(p, line, f"{header[col]} {n:g} is negative")
                counts.append(n)
        if both:
            sizes.append((counts[0], counts[1]))
        if grouped:
            groups.append(_group_name(p, line, fields, model_col, region_col))
    minutes = np.asarray(times, dtype=np.float64)
    if unit == "s" or unit == "iso":
        minutes = minutes / MINUTE_S
    return _requests_series(
        p, "requests", minutes, groups if grouped else None, sizes if both else None,
        first_line, name or p.stem,
    )  # fmt: skip


def _requests_series(
    p: Path,
    fmt: str,
    minutes: np.ndarray,
    groups: Sequence[str] | None,
    sizes: Sequence[tuple[float, float]] | None,
    first_line: int,
    name: str,
) -> TraceSeries:
    """Requests per minute from one arrival time (minutes) per request: one series
    (`name`), or one per group name; with `sizes` ((input, output) tokens per request)
    their mean, each minute's means and its prompt-length buckets as well."""
    mean_tokens = None
    if sizes:
        n = len(sizes)
        mean_tokens = (sum(i for i, _ in sizes) / n, sum(o for _, o in sizes) / n)
    if groups is None:
        start, counts = _bin_minutes(p, minutes, None, first_line)
        series = _make(p, fmt, [name], start, counts, "requests/min")
        row_group = np.zeros(len(minutes), dtype=np.int64)
    else:
        names = sorted(set(groups))
        start, _ = _bin_minutes(p, minutes, None, first_line)
        row_group = np.array([names.index(g) for g in groups], dtype=np.int64)
        values = np.zeros((len(names), int(np.floor(minutes).max() - start) + 1))
        np.add.at(values, (row_group, np.floor(minutes).astype(np.int64) - int(start)), 1.0)
        series = _make(p, fmt, names, start, values, "requests/min")
    if sizes is None:
        return series
    index = np.floor(minutes).astype(np.int64) - int(start)
    per_step = _step_means(row_group, index, np.asarray(sizes), series.values.shape)
    split = _step_buckets(row_group, index, sizes, series.values.shape)
    return replace(series, mean_tokens=mean_tokens, tokens=per_step, buckets=split)


def read_mooncake(path: Path | str) -> TraceSeries:
    """Read one of Mooncake's request traces (FAST '25: the conversation, tool-agent and
    synthetic traces) as requests per minute, with each request's sizes.

    JSON lines, one request each: ``timestamp`` (milliseconds from the trace's start),
    ``input_length`` and ``output_length`` (prompt and output tokens); other fields
    (``hash_ids``, the prompt's KV-cache blocks) are ignored. Times are trace-relative, as
    in a ``requests`` file with seconds. A line that is not a JSON object with those three
    numbers (finite, >= 0) is malformed, and the error names it.
    """
    p = Path(path)
    try:
        handle = p.open(encoding="utf-8")
    except OSError as exc:
        raise TraceFormatError(p, None, f"cannot read: {exc.strerror or exc}") from None
    times: list[float] = []
    sizes: list[tuple[float, float]] = []
    first_line = 1
    with handle:
        try:
            for line, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                if not times:
                    first_line = line
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise TraceFormatError(p, line, f"not valid JSON: {exc.msg}") from None
                if not isinstance(row, dict):
                    raise TraceFormatError(p, line, "expected a JSON object per line")
                ms, i, o = (_json_count(p, line, row, k) for k in MOONCAKE_FIELDS)
                times.append(ms / 1000.0 / MINUTE_S)
                sizes.append((i, o))
        except UnicodeDecodeError as exc:
            raise TraceFormatError(p, None, f"not UTF-8 text: {exc.reason}") from None
    return _requests_series(
        p, "mooncake", np.asarray(times, dtype=np.float64), None, sizes, first_line, p.stem
    )


def _json_count(path: Path, line: int, row: dict[str, object], key: str) -> float:
    """Field `key` of a JSON lines row as a finite number >= 0 (TraceFormatError if not)."""
    if key not in row:
        raise TraceFormatError(path, line, f"no {key!r} field")
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TraceFormatError(path, line, f"{key} {value!r} is not a number")
    if not math.isfinite(value) or value < 0:
        raise TraceFormatError(path, line, f"{key} {value!r} must be a finite number >= 0")
    return float(value)


def read_burstgpt(path: Path | str, *, value_column: str = "total_tokens_per_s") -> TraceSeries:
    """Read BurstGPT per-minute aggregates; minutes absent from the file had no request.

    The file covers minutes 0..last listed; values are tokens per second averaged
    over the minute (see the data's PROVENANCE.md).
    """
    p = Path(path)
    rows = _rows(p)
    header_line, header = _header(p, rows)
    t_col = _column(p, header_line, header, "minute_index", 0)
    v_col = _column(p, header_line, header, value_column, 1)
    index: list[int] = []
    vals: list[float] = []
    lines: list[int] = []
    for line, fields in rows:
        if len(fields) <= max(t_col, v_col):
            raise TraceFormatError(p, line, f"expected {len(header)} fields, got {len(fields)}")
        minute = _float(p, line, fields[t_col], "minute_index")
        if minute < 0 or minute != int(minute):
            raise TraceFormatError(p, line, f"minute_index {fields[t_col]!r} is not a minute")
        if index and int(minute) <= index[-1]:
            raise TraceFormatError(p, line, "minute_index not increasing")
        value = _float(p, line, fields[v_col], value_column)
        if value < 0:
            raise TraceFormatError(p, line, f"{value_column} {value:g} is negative")
        index.append(int(minute))
        vals.append(value)
        lines.append(line)
    if not index:
        raise TraceFormatError(p, None, "no data rows")
    if index[-1] + 1 > MAX_MINUTES:
        raise TraceFormatError(p, None, "more than a year of minutes")
    values = np.zeros(index[-1] + 1)
    values[index] = vals
    line_of = np.zeros(index[-1] + 1, dtype=np.int64)
    line_of[index] = lines
    unit = "tokens/s" if value_column.endswith("_per_s") else "1"
    return _make(p, "burstgpt", ["burstgpt"], 0.0, values, unit, line_of)


def read_azure_functions(path: Path | str) -> TraceSeries:
    """Read an Azure Functions 2019 `invocations.csv`: one series per function.

    Columns: HashOwner, HashApp, HashFunction, Trigger, then one column per
    minute of the day (e.g. ``480``…``959``). Series are named
    ``<trigger>:<first 12 hex of HashFunction>`` (with a suffix if that repeats).
    """
    p = Path(path)
    rows = _rows(p)
    header_line, header = _header(p, rows)
    fixed = ("HashOwner", "HashApp", "HashFunction", "Trigger")
    if tuple(header[:4]) != fixed:
        raise TraceFormatError(p, header_line, f"expected header to start with {list(fixed)}")
    try:
        minute_cols = [int(h) for h in header[4:]]
    except ValueError:
        raise TraceFormatError(p, header_line, "minute columns must be integers") from None
    if not minute_cols or minute_cols != list(
        range(minute_cols[0], minute_cols[0] + len(minute_cols))
    ):
        raise TraceFormatError(p, header_line, "minute columns must be consecutive integers")
    names: list[str] = []
    seen: dict[str, int] = {}
    data: list[np.ndarray] = []
    lines: list[int] = []
    for line, fields in rows:
        if len(fields) != len(header):
            raise TraceFormatError(p, line, f"expected {len(header)} fields, got {len(fields)}")
        try:
            counts = np.array([float(v) for v in fields[4:]])
        except ValueError:
            bad = next(v for v in fields[4:] if not _is_float(v))
            raise TraceFormatError(p, line, f"count {bad.strip()!r} is not a number") from None
        if not np.all(np.isfinite(counts)) or np.any(counts < 0):
            raise TraceFormatError(p, line, "counts must be finite and non-negative")
        base = f"{fields[3].strip()}:{fields[2].strip()[:12]}"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
        data.append(counts)
        lines.append(line)
    if not data:
        raise TraceFormatError(p, None, "no data rows")
    # Minute columns are 1-based minutes of the day in the 2019 trace ("1".."1440").
    return _make(
        p, "azure-functions", names, float(minute_cols[0] - 1), np.vstack(data),
        "invocations/min", np.asarray(lines)[:, None],
    )  # fmt: skip


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_azure_llm(path: Path | str) -> TraceSeries:
    """Read an Azure LLM inference trace (``TIMESTAMP,ContextTokens,GeneratedTokens``).

    Requests are counted per minute of their arrival timestamp (naive, read as UTC).
    With ``ContextTokens`` and ``GeneratedTokens`` columns (the published traces have
    both), each minute's mean sizes go into `TraceSeries.tokens`.
    """
    p = Path(path)
    rows = _rows(p)
    header_line, header = _header(p, rows)
    if not header or header[0] != "TIMESTAMP":
        raise TraceFormatError(p, header_line, "expected a TIMESTAMP column first")
    cols = [header.index(c) if c in header else None for c in ("ContextTokens", "GeneratedTokens")]
    times: list[float] = []
    sizes: list[tuple[float, float]] = []
    first_line = header_line + 1
    for line, fields in rows:
        if len(fields) != len(header):
            raise TraceFormatError(p, line, f"expected {len(header)} fields, got {len(fields)}")
        if not times:
            first_line = line
        times.append(_parse_time(p, line, fields[0], "iso"))
        if cols[0] is not None and cols[1] is not None:
            i, o = (_float(p, line, fields[c], header[c]) for c in (cols[0], cols[1]))
            if i < 0 or o < 0:
                raise TraceFormatError(p, line, "token counts must be >= 0")
            sizes.append((i, o))
    minutes = np.asarray(times) / MINUTE_S
    start, counts = _bin_minutes(p, minutes, None, first_line)
    series = _make(p, "azure-llm", [p.stem], start, counts, "requests/min")
    if not sizes:
        return series
    index = np.floor(minutes).astype(np.int64) - int(start)
    per_step = _step_means(
        np.zeros(len(times), dtype=np.int64), index, np.asarray(sizes), series.values.shape
    )
    mean = np.asarray(sizes).mean(axis=0)
    split = _step_buckets(np.zeros(len(times), dtype=np.int64), index, sizes, series.values.shape)
    return replace(
        series, mean_tokens=(float(mean[0]), float(mean[1])), tokens=per_step, buckets=split
    )


def detect_format(path: Path | str) -> str:
    """The format of a trace file, guessed from its header row (TraceFormatError if none fits)."""
    p = Path(path)
    if _first_text(p).startswith("{"):
        return "mooncake"  # JSON lines (read_mooncake names a line without its fields)
    rows = _rows(p)
    header_line, header = _header(p, rows)
    lower = [h.lower() for h in header]
    if header and header[0] == "TIMESTAMP" and "ContextTokens" in header:
        return "azure-llm"
    if lower and lower[0] == "minute_index":
        return "burstgpt"
    if tuple(header[:4]) == ("HashOwner", "HashApp", "HashFunction", "Trigger"):
        return "azure-functions"
    if "requests" in lower or "minute" in lower:
        return "minute-csv"
    if "timestamp" in lower or "input_tokens" in lower:
        return "requests"
    raise TraceFormatError(
        p, header_line, f"cannot tell the trace format from header {header}; pass a format"
    )


def _first_text(path: Path) -> str:
    """The first non-blank line of a text file, stripped ("" when none or unreadable: the
    CSV reader then reports why)."""
    try:
        with path.open(encoding="utf-8") as handle:
            for text in handle:
                if text.strip():
                    return text.strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return ""


def read_series(
    path: Path | str,
    fmt: str,
    *,
    time_column: str | None = None,
    count_column: str | None = None,
    time_unit: TimeUnit = "auto",
) -> TraceSeries:
    """Read `path` in format `fmt` (one of FORMATS, or "auto" to detect it from the header);
    options apply to the CSV formats."""
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "minute-csv":
        return read_minute_csv(
            path, time_column=time_column, count_column=count_column, time_unit=time_unit
        )
    if fmt == "requests":
        return read_requests(path, time_column=time_column, time_unit=time_unit)
    if fmt == "burstgpt":
        if count_column is not None:
            return read_burstgpt(path, value_column=count_column)
        return read_burstgpt(path)
    if fmt == "azure-functions":
        return read_azure_functions(path)
    if fmt == "azure-llm":
        return read_azure_llm(path)
    if fmt == "mooncake":
        return read_mooncake(path)
    raise ValueError(f"unknown trace format {fmt!r}; expected one of {', '.join(FORMATS)}")
