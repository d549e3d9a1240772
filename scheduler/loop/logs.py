"""How capsched's log lines look: `key=value` for journald and pipes, the same with the
time in front on a terminal, or one JSON object per line.

Every line is `level=... logger=... event key=value ...`. On a terminal (or with
`--log-format timed`) it starts with `time=` (ISO-8601, UTC) and, while a simulated
clock runs (the embedded default's simulated cloud, `capsched simulate`), `sim_time=`;
journald stamps its own time, so a service's lines stay plain there. `--log-format json`
writes `{"time", "sim_time"?, "level", "logger", "event", ...fields}` for lines logged
with `event()` (their fields as typed values) and `{"time", "level", "logger",
"message"}` for the others.

The simulated time comes from `set_virtual_clock`, which the composition roots call:
nothing in the scheduling core reads a clock for its logs.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from scheduler.decide.guards import Held

LogFormat = Literal["auto", "plain", "timed", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("auto", "plain", "timed", "json")

# The virtual clock of a simulated run, or None when time is the wall clock's.
_virtual_clock: Callable[[], float] | None = None


def set_virtual_clock(clock: Callable[[], float] | None) -> None:
    """Stamp log lines with `clock()` as `sim_time` (None: stop)."""
    global _virtual_clock
    _virtual_clock = clock


def iso_utc(t_s: float) -> str:
    """`t_s` (Unix seconds) as ISO-8601 UTC to the millisecond, e.g. 2023-11-16T18:23:01.250Z."""
    stamp = datetime.fromtimestamp(t_s, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def format_value(value: object) -> str:
    """One value of a `key=value` line: floats to two decimals (whole ones without),
    text with spaces or quotes quoted, None as `-`."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.0f}" if value.is_integer() else f"{value:.2f}"
    text = str(value)
    if not text or any(c in text for c in ' "=\n'):
        return json.dumps(text)
    return text


def event(logger: logging.Logger, level: int, name: str, **fields: object) -> None:
    """Log `name key=value ...`; the JSON format keeps `fields` as typed values."""
    if not logger.isEnabledFor(level):
        return
    text = " ".join([name, *(f"{k}={format_value(v)}" for k, v in fields.items())])
    logger.log(level, "%s", text, extra={"capsched_event": name, "capsched_fields": fields})


def held_events(logger: logging.Logger, name: str, now_s: float, held: Iterable[Held]) -> None:
    """One INFO `name` line per held-back item (kind, nodes, reason): the guards' and the
    fast loop's holds read alike."""
    for h in held:
        event(
            logger,
            logging.INFO,
            name,
            now_s=round(now_s),
            kind=h.kind.value,
            nodes=h.nodes,
            reason=h.text,
        )


def _sim_time() -> str | None:
    clock = _virtual_clock
    return iso_utc(clock()) if clock is not None else None


class KeyValueFormatter(logging.Formatter):
    """`[time=... [sim_time=...]] level=... logger=... message`."""

    def __init__(self, *, timed: bool) -> None:
        super().__init__()
        self.timed = timed  # prefix the wall time (and the simulated time, when one runs)

    def format(self, record: logging.LogRecord) -> str:
        """The record as one key=value line (plus a traceback when there is one)."""
        parts: list[str] = []
        if self.timed:
            parts.append(f"time={iso_utc(record.created)}")
            sim = _sim_time()
            if sim is not None:
                parts.append(f"sim_time={sim}")
        parts.append(f"level={record.levelname} logger={record.name} {record.getMessage()}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object; an `event()` line keeps its fields typed."""
        doc: dict[str, Any] = {"time": iso_utc(record.created)}
        sim = _sim_time()
        if sim is not None:
            doc["sim_time"] = sim
        doc["level"] = record.levelname
        doc["logger"] = record.name
        name = record.__dict__.get("capsched_event")
        fields: Mapping[str, object] | None = record.__dict__.get("capsched_fields")
        if name is not None and fields is not None:
            doc["event"] = name
            for key, value in fields.items():
                doc.setdefault(key, _json_value(value))
        else:
            doc["message"] = record.getMessage()
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, allow_nan=False)


def _json_value(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; null reads as "not known"
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def resolve_format(fmt: LogFormat, stream: TextIO) -> LogFormat:
    """`auto`: `timed` on a terminal, `plain` elsewhere (journald stamps its own time)."""
    if fmt != "auto":
        return fmt
    return "timed" if stream.isatty() else "plain"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time of each record (as logging's own
    last-resort handler does), so a test that swaps stderr never leaves it a closed one."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass  # always the current sys.stderr


_installed: logging.Handler | None = None  # the handler the last setup_logging added


def setup_logging(level: int, fmt: LogFormat = "auto", stream: TextIO | None = None) -> None:
    """Send log records at `level` and above to `stream` (default: stderr) in `fmt`,
    replacing what an earlier call installed (other handlers stay)."""
    global _installed
    chosen = resolve_format(fmt, stream if stream is not None else sys.stderr)
    handler: logging.Handler = (
        logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    )
    formatter: logging.Formatter = (
        JsonFormatter() if chosen == "json" else KeyValueFormatter(timed=chosen == "timed")
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    if _installed is not None:
        root.removeHandler(_installed)
    root.addHandler(handler)
    root.setLevel(level)
    _installed = handler
