"""Quotas: `[[quotas]]` caps on the accelerators live in the pools they match.

The one place that says which pools a cap covers and how many of its accelerators a
fleet uses. The planner gives the solver one constraint per cap
(`scheduler.decide.planner`); the guards let a plan's launches through only while every
cap holds (`scheduler.decide.guards.within_limits`), and so does the fast loop between
ticks (`scheduler.loop.fast_loop`). A node counts against a cap from its launch request
until it is gone (a draining node still holds its accelerators), as a cloud counts it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from scheduler.config import QuotaSection
from scheduler.domain import Cloud, InstanceType, Pool


def covers(quota: QuotaSection, pool: Pool, gpu_kind: str | None) -> bool:
    """Whether `quota` counts the accelerators of nodes in `pool`, whose instance type
    has `gpu_kind` (None: a type the catalog does not know; it matches only a cap that
    names no kind)."""
    return (
        quota.cloud is pool.cloud
        and (quota.region is None or pool.region == quota.region)
        and (quota.market is None or pool.market is quota.market)
        and (quota.gpu_kind is None or gpu_kind == quota.gpu_kind)
    )


def describe(index: int, quota: QuotaSection) -> str:
    """A cap in words for logs and held-back reasons: `quotas[0] (aws us-east-1 H100
    spot, 32 GPUs)`."""
    scope = " ".join(
        x
        for x in (
            quota.cloud.value,
            quota.region or "",
            quota.gpu_kind or "",
            quota.market.value if quota.market else "",
        )
        if x
    )
    return f"quotas[{index}] ({scope}, {quota.max_gpus} GPUs)"


class QuotaUse:
    """Accelerators counted against each cap as nodes are added one at a time."""

    def __init__(
        self,
        quotas: Sequence[QuotaSection],
        instance_types: Mapping[tuple[Cloud, str], InstanceType],
        live: Iterable[Pool] = (),
    ) -> None:
        """Caps `quotas`, with the nodes of the pools in `live` (one entry per node)
        already counted. `instance_types` says how many accelerators of which kind a
        pool's node holds; a pool of a type not in it holds none."""
        self.quotas = tuple(quotas)
        self._types = instance_types
        self.gpus_used = [0] * len(self.quotas)  # per cap, in config order
        for pool in live:
            self.add(pool)

    def gpus(self, pool: Pool) -> int:
        """Accelerators one node in `pool` holds."""
        itype = self._types.get((pool.cloud, pool.instance_type))
        return itype.gpu_count if itype is not None else 0

    def members(self, pool: Pool) -> tuple[int, ...]:
        """Indices of the caps that count nodes in `pool`."""
        itype = self._types.get((pool.cloud, pool.instance_type))
        kind = itype.gpu_kind if itype is not None else None
        return tuple(i for i, q in enumerate(self.quotas) if covers(q, pool, kind))

    def broken_by(self, pool: Pool) -> tuple[int, ...]:
        """Indices of the caps one more node in `pool` would pass (empty: it fits)."""
        gpus = self.gpus(pool)
        return tuple(
            i
            for i in self.members(pool)
            if gpus and self.gpus_used[i] + gpus > self.quotas[i].max_gpus
        )

    def add(self, pool: Pool, sign: int = 1) -> None:
        """Count one more node in `pool` (`sign` -1: one node fewer)."""
        gpus = self.gpus(pool)
        for i in self.members(pool):
            self.gpus_used[i] += sign * gpus
