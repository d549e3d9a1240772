"""Reading demand and fleet JSON files for `capsched plan`.

Errors name the file and the entry (`demand[3].rps`), never a traceback.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from scheduler.domain import Cloud, Demand, Market, Placement, Pool
from scheduler.errors import problem_lines

_T = TypeVar("_T", bound=BaseModel)


class InputError(ValueError):
    """A demand or fleet file that cannot be used; one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DemandEntry(_Entry):
    """One line of a demand file."""

    model: str = Field(min_length=1)  # model name from the config
    region: str = Field(min_length=1)  # source region name from the config
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

    model: str = Field(min_length=1)
    cloud: Cloud
    region: str = Field(min_length=1)
    zone: str = ""  # "" where the cloud picks the zone
    instance_type: str = Field(min_length=1)
    market: Market
    count: int = Field(ge=0)

    def placement(self) -> Placement:
        """As a domain placement."""
        pool = Pool(self.cloud, self.region, self.zone, self.instance_type, self.market)
        return Placement(self.model, pool, self.count)


class FleetFile(_Entry):
    nodes: list[NodeEntry]


def _read(path: Path, schema: type[_T]) -> _T:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except json.JSONDecodeError as exc:
        raise InputError([f"{path}: line {exc.lineno} column {exc.colno}: {exc.msg}"]) from None
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        raise InputError(problem_lines(exc, path, schema, syntax="json")) from None


def read_demand(path: Path) -> list[Demand]:
    """Demand entries of a `{"demand": [...]}` file."""
    return [Demand(e.model, e.region, e.rps) for e in _read(path, DemandFile).demand]


def read_fleet(path: Path) -> list[Placement]:
    """Placements of a `{"nodes": [...]}` file."""
    return [n.placement() for n in _read(path, FleetFile).nodes]
