"""Reading demand and fleet JSON files for `capsched plan`.

Errors name the file and the entry (`demand[3].rps`), never a traceback. A file is
read only up to `MAX_FILE_BYTES` and `MAX_ENTRIES` entries: a demand file holds one
rate per configured (model, region) and a fleet file one line per pool, so even a
config with every catalog region stays far below both (100,000 demand entries, 6 MB,
read in about 0.5 s). Entries repeating a (model, region) are summed
(`merge_demand`), so a long file costs the solver no more than the pairs it names.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from scheduler.domain import (
    MAX_NODES_PER_POOL,
    REFERENCE_SIZE,
    Cloud,
    Demand,
    Market,
    Placement,
    Pool,
    RequestSize,
    SizeBucket,
)
from scheduler.errors import problem_lines
from scheduler.fleet.capacity import demand_size
from scheduler.forecast.buckets import bucketed_demand, merge_buckets
from scheduler.names import Name

_T = TypeVar("_T", bound=BaseModel)

MAX_FILE_BYTES = 16 * 2**20  # a demand or fleet file larger than this is refused
MAX_ENTRIES = 200_000  # entries of its one list; more is refused
# Mean tokens per request a demand entry may give: the longest context windows served
# today are ~1-2 M tokens; more is a unit mistake.
MAX_TOKENS = 10_000_000


class InputError(ValueError):
    """A demand or fleet file that cannot be used; one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BucketEntry(_Entry):
    """One size bucket of a demand entry: the requests whose prompts are shorter than
    `max_input_tokens` and at least the previous bucket's (0 for the first)."""

    rps: float = Field(ge=0)  # requests per second of the bucket
    input_tokens: float = Field(gt=0, le=MAX_TOKENS)  # their mean prompt tokens
    output_tokens: float = Field(gt=0, le=MAX_TOKENS)  # their mean output tokens
    # Upper end of the prompt range (exclusive); absent or null: no end (last bucket only).
    max_input_tokens: float | None = Field(default=None, gt=0)

    @field_validator("rps", "input_tokens", "output_tokens", "max_input_tokens")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


class DemandEntry(_Entry):
    """One line of a demand file."""

    model: Name = Field(min_length=1)  # model name from the config
    region: Name = Field(min_length=1)  # source region name from the config
    rps: float = Field(ge=0)  # requests per second
    # Mean tokens per request; absent: the reference request's (763 prompt / 232 output).
    input_tokens: float | None = Field(default=None, gt=0, le=MAX_TOKENS)
    output_tokens: float | None = Field(default=None, gt=0, le=MAX_TOKENS)
    # The rate split by prompt length (docs/profiles.md "Placement by size"), in
    # increasing `max_input_tokens`; their rps sum to `rps`. Absent: one bucket.
    buckets: list[BucketEntry] | None = Field(default=None, min_length=1, max_length=64)

    @field_validator("rps", "input_tokens", "output_tokens")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @model_validator(mode="after")
    def _buckets_fit(self) -> DemandEntry:
        if self.buckets is None:
            return self
        if self.input_tokens is not None or self.output_tokens is not None:
            raise ValueError("give either buckets or input_tokens/output_tokens, not both")
        lo = 0.0
        for i, b in enumerate(self.buckets):
            hi = math.inf if b.max_input_tokens is None else b.max_input_tokens
            if hi == math.inf and i < len(self.buckets) - 1:
                raise ValueError(f"buckets[{i}]: only the last bucket may have no max_input_tokens")
            if hi <= lo:
                raise ValueError(f"buckets[{i}]: max_input_tokens must increase ({hi:g} <= {lo:g})")
            if not lo <= b.input_tokens < hi:
                raise ValueError(
                    f"buckets[{i}]: input_tokens {b.input_tokens:g} is outside its range"
                    f" [{lo:g}, {hi:g})"
                )
            lo = hi
        total = math.fsum(b.rps for b in self.buckets)
        if not math.isclose(total, self.rps, rel_tol=1e-6, abs_tol=1e-9):
            raise ValueError(f"buckets' rps sum to {total:g}, not the entry's rps {self.rps:g}")
        return self

    def size_buckets(self) -> tuple[SizeBucket, ...]:
        """The entry's buckets as shares of its rate; () without buckets."""
        if not self.buckets:
            return ()
        total = math.fsum(b.rps for b in self.buckets)
        out: list[SizeBucket] = []
        lo = 0.0
        for b in self.buckets:
            hi = math.inf if b.max_input_tokens is None else b.max_input_tokens
            share = b.rps / total if total > 0 else 1.0 / len(self.buckets)
            out.append(SizeBucket(lo, hi, share, RequestSize(b.input_tokens, b.output_tokens)))
            lo = hi
        return tuple(out)

    def demand(self) -> Demand:
        """The entry as a domain demand (with its buckets, its size is their mean)."""
        if self.buckets:
            return bucketed_demand(self.model, self.region, self.rps, self.size_buckets())
        return Demand(self.model, self.region, self.rps, self.size())

    def size(self) -> RequestSize | None:
        """The entry's mean request size; None when it gives neither token count."""
        if self.input_tokens is None and self.output_tokens is None:
            return None
        return RequestSize(
            self.input_tokens or REFERENCE_SIZE.input_tokens,
            self.output_tokens or REFERENCE_SIZE.output_tokens,
        )


class DemandFile(_Entry):
    demand: list[DemandEntry]  # every (model, region) rate


class NodeEntry(_Entry):
    """One line of a fleet file: `count` nodes of a model in one pool."""

    model: Name = Field(min_length=1)
    cloud: Cloud
    region: Name = Field(min_length=1)
    zone: Name = ""  # "" where the cloud picks the zone
    instance_type: Name = Field(min_length=1)
    market: Market
    count: int = Field(ge=0, le=MAX_NODES_PER_POOL)
    # What a plan routes to the nodes (`capsched plan --json`); read back as a fleet
    # file, the nodes are what counts and this is ignored.
    buckets: list[dict[str, float | str | None]] | None = None

    def placement(self) -> Placement:
        """As a domain placement."""
        pool = Pool(self.cloud, self.region, self.zone, self.instance_type, self.market)
        return Placement(self.model, pool, self.count)


class FleetFile(_Entry):
    nodes: list[NodeEntry]


def _read(path: Path, schema: type[_T], key: str) -> _T:
    """`path` as `schema`, a JSON object whose list of entries is `key`."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)  # a FIFO or /dev/zero has no size
    except OSError as exc:
        raise InputError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    if len(data) > MAX_FILE_BYTES:
        raise InputError([f"{path}: larger than {MAX_FILE_BYTES // 2**20} MiB; refused"])
    try:
        raw = json.loads(data.decode("utf-8-sig"))  # "-sig": skip a byte-order mark
    except UnicodeDecodeError as exc:
        raise InputError([f"{path}: not UTF-8 text: byte {exc.start}: {exc.reason}"]) from None
    except json.JSONDecodeError as exc:
        raise InputError([f"{path}: line {exc.lineno} column {exc.colno}: {exc.msg}"]) from None
    except RecursionError:
        raise InputError([f"{path}: not valid JSON: nested too deeply"]) from None
    except ValueError as exc:  # an integer of more than 4,300 digits; Python's advice dropped
        raise InputError([f"{path}: not valid JSON: {str(exc).split(':')[0]}"]) from None
    entries = raw.get(key) if isinstance(raw, dict) else None
    if isinstance(entries, list) and len(entries) > MAX_ENTRIES:
        raise InputError([f"{path}: {key}: {len(entries)} entries, more than {MAX_ENTRIES}"])
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        raise InputError(problem_lines(exc, path, schema, syntax="json")) from None


def read_demand(path: Path) -> list[Demand]:
    """Demand entries of a `{"demand": [...]}` file, as listed (see `merge_demand`)."""
    return [e.demand() for e in _read(path, DemandFile, "demand").demand]


def read_fleet(path: Path) -> list[Placement]:
    """Placements of a `{"nodes": [...]}` file."""
    return [n.placement() for n in _read(path, FleetFile, "nodes").nodes]


@dataclass(frozen=True, slots=True)
class MergedDemand:
    """Demand with one entry per (model, region), and what merging did."""

    demand: tuple[Demand, ...]  # one per pair, in the order pairs first appear
    repeated: int  # entries that repeated an earlier pair and were added to it

    def note(self, source: str) -> str | None:
        """A line for the plan's notes when entries were summed, else None."""
        if not self.repeated:
            return None
        return (
            f"{source}: {self.repeated} entries repeat a (model, region) pair;"
            f" their rps are summed into {len(self.demand)} rates"
        )


def merge_demand(demand: Sequence[Demand]) -> MergedDemand:
    """One `Demand` per (model, region) holding the sum of its entries' rates and their
    rate-weighted mean size (`scheduler.fleet.capacity.demand_size`; no size when no entry
    gives one)."""
    groups: dict[tuple[str, str], list[Demand]] = {}
    for d in demand:
        groups.setdefault((d.model, d.region), []).append(d)
    merged = tuple(_merged(ds) for ds in groups.values())
    return MergedDemand(merged, len(demand) - len(merged))


def _merged(demand: Sequence[Demand]) -> Demand:
    """Entries of one (model, region) as one demand: rates summed, size and buckets
    merged (`merge_buckets`: per prompt range, rates added)."""
    first = demand[0]
    if len(demand) == 1:
        return first
    rps = _sum([d.rps for d in demand])
    buckets = merge_buckets(demand)
    if buckets:
        return bucketed_demand(first.model, first.region, rps, buckets)
    return Demand(first.model, first.region, rps, demand_size(demand, first.model))


def _sum(rates: list[float]) -> float:
    try:
        return math.fsum(rates)  # exact: the order of the entries does not change the sum
    except OverflowError:  # finite rates whose sum is not: the rate check refuses it
        return math.inf
