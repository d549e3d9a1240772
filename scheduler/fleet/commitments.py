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

A savings plan (`kind = "savings_plan"`, `SpendCommitment`) is an amount of USD per hour
instead: it pays for matching on-demand usage (its region, and its instance family when
it names one) at its rates, up to that amount, and bills the amount whether used or not.
Coverage rule (`split_spend`), after the count commitments have taken their nodes: each
savings plan in config order covers the live nodes left in its pools, those of the
highest discount first (then the pool key), whole nodes while its amount lasts and a share
of the next one with what is left; a covered node-hour draws its rate from the amount
and pays nothing more, the rest pay on-demand. AWS applies Savings Plans the same way:
after reserved instances, highest savings percentage first.
"""

from __future__ import annotations

import dataclasses
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
    """The commitment, or why it cannot be resolved (a count commitment)."""
    assert section.instance_type is not None and section.count is not None  # the count form
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
        found = (
            _resolve_spend(section, catalog) if section.is_spend else _resolve_one(section, catalog)
        )
        if isinstance(found, _Unplaced):
            problems.append(f"commitments[{i}].{found.key}: {found.reason}")
        elif usable is not None and not any(usable(p) for p in found.pools):
            what = section.instance_type or f"{section.instance_family or 'GPU'} instance"
            problems.append(
                f"commitments[{i}].region: the config's [clouds] allow no on-demand"
                f" {what} in {section.zone or section.region}: it would be"
                " paid for and never used"
            )
    return problems


class CommitmentError(ValueError):
    """A `[[commitments]]` entry the catalog cannot place (validate-config names it)."""


def resolve_commitments(config: Config, catalog: Catalog) -> tuple[Commitment, ...]:
    """The config's count commitments against `catalog` (CommitmentError naming the
    first that names a type or place the catalog does not sell); savings plans are
    `resolve_spend_commitments`'."""
    out: list[Commitment] = []
    for i, section in enumerate(config.commitments):
        if section.is_spend:
            continue  # resolve_spend_commitments
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


# -- savings plans: an amount of USD per hour ---------------------------------------------


def family_of(cloud: Cloud, instance_type: str) -> str:
    """The instance family of a type: "g6e" for AWS g6e.xlarge, "g2" for GCP g2-standard-4."""
    return instance_type.split("." if cloud is Cloud.AWS else "-", 1)[0]


@dataclass(frozen=True, slots=True)
class SpendCommitment:
    """A savings plan (`[[commitments]]` with `usd_per_hour_committed`) resolved against
    the catalog."""

    label: str  # name shown in plans and reports
    index: int  # its place in the config's [[commitments]] (for messages)
    pools: tuple[Pool, ...]  # on-demand pools of the catalog it covers, best discount first
    # Per pool of `pools`: USD per node-hour it draws from the amount (the plan's rate).
    rate_usd_per_hour: tuple[float, ...]
    # Per pool of `pools`: the on-demand list price of a node-hour there.
    on_demand_usd_per_hour: tuple[float, ...]
    usd_per_hour_committed: float  # the amount, billed every hour used or not

    @property
    def fee_usd_per_hour(self) -> float:
        """What the savings plan bills every hour, used or not."""
        return self.usd_per_hour_committed


def _resolve_spend(section: CommitmentSection, catalog: Catalog) -> SpendCommitment | _Unplaced:
    """The savings plan, or why it cannot be resolved."""
    assert section.usd_per_hour_committed is not None  # the spend form (config checks it)
    offered = [
        o
        for o in catalog.offerings
        if o.pool.market is Market.ON_DEMAND
        and o.pool.cloud is section.cloud
        and o.pool.region == section.region
        and (
            section.instance_family is None
            or family_of(o.pool.cloud, o.pool.instance_type) == section.instance_family
        )
    ]
    if not offered:
        if section.instance_family is not None and not any(
            family_of(c, t) == section.instance_family
            for c, t in catalog.instance_types
            if c is section.cloud
        ):
            return _Unplaced(
                "instance_family",
                f"unknown {section.cloud} instance family {section.instance_family!r}",
            )
        what = f" {section.instance_family}" if section.instance_family else ""
        return _Unplaced(
            "region",
            f"the catalog sells no on-demand{what} instance in region {section.region!r}",
        )
    rows = []
    for o in offered:
        key = (o.pool.cloud, o.pool.region, o.pool.instance_type)
        rate = min(catalog.reserved_usd_per_hour.get(key, o.usd_per_hour), o.usd_per_hour)
        discount = 1.0 - rate / o.usd_per_hour if o.usd_per_hour > 0 else 0.0
        rows.append((-discount, o.pool.key, o.pool, rate, o.usd_per_hour))
    rows.sort()
    return SpendCommitment(
        label=section.label,
        index=-1,
        pools=tuple(r[2] for r in rows),
        rate_usd_per_hour=tuple(r[3] for r in rows),
        on_demand_usd_per_hour=tuple(r[4] for r in rows),
        usd_per_hour_committed=section.usd_per_hour_committed,
    )


def resolve_spend_commitments(config: Config, catalog: Catalog) -> tuple[SpendCommitment, ...]:
    """The config's savings plans against `catalog`, in config order (CommitmentError
    naming the first whose family or region the catalog does not sell)."""
    out: list[SpendCommitment] = []
    for i, section in enumerate(config.commitments):
        if not section.is_spend:
            continue
        found = _resolve_spend(section, catalog)
        if isinstance(found, _Unplaced):
            raise CommitmentError(f"commitments[{i}].{found.key}: {found.reason}")
        out.append(dataclasses.replace(found, index=i))
    return tuple(out)


def split_spend(
    plans: Sequence[SpendCommitment], live_by_pool: Mapping[Pool, float]
) -> tuple[dict[tuple[int, Pool], float], dict[Pool, float]]:
    """Live nodes per pool (those the count commitments left) split between savings
    plans and the rest, by the coverage rule of the module docstring: ({(plan index,
    pool): nodes covered, a share of one node at most at the end}, {pool: not covered})."""
    left = {p: float(n) for p, n in live_by_pool.items()}
    covered: dict[tuple[int, Pool], float] = {}
    for s, plan in enumerate(plans):
        room = plan.usd_per_hour_committed
        for pool, rate in zip(plan.pools, plan.rate_usd_per_hour, strict=True):
            have = left.get(pool, 0.0)
            if have <= 0 or room <= 0:
                continue
            take = have if rate <= 0 else min(have, room / rate)
            if take > 0:
                covered[s, pool] = take
                left[pool] = have - take
                room -= take * rate
    return covered, {p: n for p, n in left.items() if n > 1e-12}
