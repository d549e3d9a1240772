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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from scheduler.domain import MAX_NODES_PER_POOL, Cloud, Demand, Market, Placement, Pool
from scheduler.errors import problem_lines
from scheduler.names import Name

_T = TypeVar("_T", bound=BaseModel)

MAX_FILE_BYTES = 16 * 2**20  # a demand or fleet file larger than this is refused
MAX_ENTRIES = 200_000  # entries of its one list; more is refused


class InputError(ValueError):
    """A demand or fleet file that cannot be used; one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DemandEntry(_Entry):
    """One line of a demand file."""

    model: Name = Field(min_length=1)  # model name from the config
    region: Name = Field(min_length=1)  # source region name from the config
    rps: float = Field(ge=0)  # requests per second

    @field_validator("rps")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


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
    return [Demand(e.model, e.region, e.rps) for e in _read(path, DemandFile, "demand").demand]


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
    """One `Demand` per (model, region) holding the sum of its entries' rates."""
    rates: dict[tuple[str, str], list[float]] = {}
    for d in demand:
        rates.setdefault((d.model, d.region), []).append(d.rps)
    merged = tuple(Demand(m, r, _sum(v)) for (m, r), v in rates.items())
    return MergedDemand(merged, len(demand) - len(merged))


def _sum(rates: list[float]) -> float:
    try:
        return math.fsum(rates)  # exact: the order of the entries does not change the sum
    except OverflowError:  # finite rates whose sum is not: the rate check refuses it
        return math.inf
