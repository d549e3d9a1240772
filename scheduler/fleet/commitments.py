"""Commitments: capacity already paid for (`[[commitments]]`, docs/commitments.md).

A commitment is `count` nodes of one instance type, on-demand, in one region (or zone),
billed every hour whether used or not. This module is the one place that says which
pools a commitment covers, what one committed node-hour costs, and how many running
nodes it covers: the planner (`scheduler.decide.planner`) gives the solver that many nodes at
no marginal cost, and the simulator bills it (`simulations.commitment_bill`).

Coverage rule, the same for every policy: at any moment a commitment covers
`min(count, live on-demand nodes in its pools)` nodes, whoever launched them; a live
node is one the cloud bills (booting or running). A covered node pays nothing beyond
the commitment's fee; the rest pay their on-demand price. This is how AWS applies
reserved instances and GCP committed-use discounts to matching usage each hour.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from scheduler.config import CommitmentKind, CommitmentSection, Config
from scheduler.domain import Cloud, Market, Pool
from scheduler.fleet.catalog import Catalog


@dataclass(frozen=True, slots=True)
class Commitment:
    """A `[[commitments]]` entry resolved against the catalog."""

    label: str  # name shown in plans and reports
    kind: CommitmentKind  # what was bought
    pools: tuple[Pool, ...]  # on-demand pools of the catalog it covers (sorted)
    count: int  # nodes paid for
    gpus: int  # accelerators per node of its instance type
    usd_per_hour: float  # price of one committed node-hour
    on_demand_usd_per_hour: float  # list price of one node-hour in its pools (the cheapest)

    @property
    def fee_usd_per_hour(self) -> float:
        """What the commitment bills every hour, used or not."""
        return self.count * self.usd_per_hour


def covers(section: CommitmentSection, pool: Pool) -> bool:
    """Whether `section` covers nodes in `pool`: on-demand, its cloud, region and
    instance type, and its zone when it names one."""
    return (
        pool.market is Market.ON_DEMAND
        and pool.cloud is section.cloud
        and pool.region == section.region
        and pool.instance_type == section.instance_type
        and (section.zone is None or pool.zone == section.zone)
    )


@dataclass(frozen=True, slots=True)
class _Unplaced:
    """Why a commitment cannot be placed: the key at fault and the reason."""

    key: str  # "instance_type", "region" or "zone"
    reason: str  # one clause


def _resolve_one(section: CommitmentSection, catalog: Catalog) -> Commitment | _Unplaced:
    """The commitment, or why it cannot be resolved."""
    if (section.cloud, section.instance_type) not in catalog.instance_types:
        return _Unplaced(
            "instance_type", f"unknown {section.cloud} instance type {section.instance_type!r}"
        )
    offered = [o for o in catalog.offerings if covers(section, o.pool)]
    if not offered and section.zone:
        hint = " (AWS pools are regional: leave zone unset)" if section.cloud is Cloud.AWS else ""
        return _Unplaced(
            "zone",
            f"the catalog sells no on-demand {section.instance_type} in zone {section.zone!r}"
            + hint,
        )
    if not offered:
        return _Unplaced(
            "region",
            f"the catalog sells no on-demand {section.instance_type} in region {section.region!r}",
        )
    list_price = min(o.usd_per_hour for o in offered)
    price = section.usd_per_hour
    if price is None:
        key = (section.cloud, section.region, section.instance_type)
        price = catalog.reserved_usd_per_hour.get(key, list_price)
    return Commitment(
        label=section.label,
        kind=section.kind,
        pools=tuple(sorted(o.pool for o in offered)),
        count=section.count,
        gpus=catalog.instance_types[(section.cloud, section.instance_type)].gpu_count,
        usd_per_hour=price,
        on_demand_usd_per_hour=list_price,
    )


def commitment_problems(
    config: Config, catalog: Catalog, usable: Callable[[Pool], bool] | None = None
) -> list[str]:
    """One line per `[[commitments]]` entry the catalog cannot place, naming its key;
    with `usable` (whether the config lets nodes run in a pool), also those whose every
    pool the config forbids: a commitment there would be paid for and never used."""
    problems: list[str] = []
    for i, section in enumerate(config.commitments):
        found = _resolve_one(section, catalog)
        if isinstance(found, _Unplaced):
            problems.append(f"commitments[{i}].{found.key}: {found.reason}")
        elif usable is not None and not any(usable(p) for p in found.pools):
            problems.append(
                f"commitments[{i}].region: the config's [clouds] allow no on-demand"
                f" {section.instance_type} in {section.zone or section.region}: it would be"
                " paid for and never used"
            )
    return problems


class CommitmentError(ValueError):
    """A `[[commitments]]` entry the catalog cannot place (validate-config names it)."""


def resolve_commitments(config: Config, catalog: Catalog) -> tuple[Commitment, ...]:
    """The config's commitments against `catalog` (CommitmentError naming the first
    that names a type or place the catalog does not sell)."""
    out: list[Commitment] = []
    for i, section in enumerate(config.commitments):
        found = _resolve_one(section, catalog)
        if isinstance(found, _Unplaced):
            raise CommitmentError(f"commitments[{i}].{found.key}: {found.reason}")
        out.append(found)
    return tuple(out)


def split_covered(
    commitments: Sequence[Commitment], live_by_pool: Mapping[Pool, int]
) -> tuple[dict[tuple[int, Pool], int], dict[Pool, int]]:
    """Live nodes per pool split between commitments (in config order, each filling its
    count from its pools in order) and the rest: ({(commitment index, pool): covered},
    {pool: not covered})."""
    left = dict(live_by_pool)
    covered: dict[tuple[int, Pool], int] = {}
    for c, commitment in enumerate(commitments):
        room = commitment.count
        for pool in commitment.pools:
            take = min(room, left.get(pool, 0))
            if take > 0:
                covered[c, pool] = take
                left[pool] -= take
                room -= take
    return covered, {p: n for p, n in left.items() if n > 0}
