"""Whole nodes from the oracle's relaxed schedule (docs/baselines.md).

`Rounding.round` turns a relaxation's fractional nodes per (model, pool) and block into
whole nodes per step: every pool keeps the whole nodes it had, the capacity the
fractions carried is made up with the cheapest whole nodes within the spot room, and
each model's `min_on_demand_share` that this diluted is restored with whole on-demand
nodes that replace spot ones, so the replayed oracle obeys the config as capsched must.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from scheduler.config import Config
from scheduler.domain import Market, Pool
from scheduler.fleet.capacity import NodeCapacity
from simulations.baselines.common import StepRates
from simulations.baselines.oracle_program import EPS, ProgramResult


@dataclass(frozen=True)
class Rounding:
    """What rounding one relaxed schedule needs."""

    config: Config
    capacity: NodeCapacity  # planned rps per node
    prices: Mapping[Pool, float]  # USD/h per pool
    spot_limit: Callable[[Pool], Sequence[float] | None]  # the schedule's room per step
    spot_pools: Iterable[Pool]  # the traced spot pools
    steps: int  # foresight steps the blocks cover
    rates: StepRates | None = None  # rates at the steps' sizes (None: `capacity` throughout)

    def _rps(self, m: str, pool: Pool, t: int, block: int) -> float:
        """Planned rps of one node of `m` in `pool` through block `t` (the least over its
        steps' sizes, as the schedule's program counts it)."""
        if self.rates is None:
            return self.capacity.rps(m, pool)
        n = max(1, min(block, self.steps - t * block))
        return self.rates.over(m, pool, t * block, n, most=False)

    def round(self, r: ProgramResult, block: int) -> dict[tuple[str, Pool], list[int]]:
        """An integer schedule from a relaxed one, per model, location and block: every
        pool keeps the whole nodes it had, then the capacity the fractions carried is
        made up with whole nodes, at each step the pool that covers the rest (or as much
        as its room allows) for the least per covered rps.
        Blocks are then spread back over the foresight's steps."""
        steps = self.steps
        n_blocks = len(next(iter(r.x.values()), []))
        counts: dict[tuple[str, Pool], list[int]] = {
            k: [math.floor(v + EPS) for v in vs] for k, vs in r.x.items()
        }
        room: dict[Pool, list[float]] = {}
        for pool in self.spot_pools:
            cap = self.spot_limit(pool)
            assert cap is not None
            room[pool] = [
                float(min(cap[t * block : (t + 1) * block], default=0)) for t in range(n_blocks)
            ]
        for (_, pool), vs in counts.items():
            if pool in room:
                for t, v in enumerate(vs):
                    room[pool][t] -= v
        groups: dict[tuple[str, str], list[tuple[str, Pool]]] = defaultdict(list)
        for key in r.x:
            groups[key[0], key[1].location].append(key)
        for (m, _), keys in groups.items():
            for t in range(n_blocks):
                short = sum((r.x[k][t] - counts[k][t]) * self._rps(m, k[1], t, block) for k in keys)
                while short > EPS:
                    # The cheapest way to cover what is left: whole nodes of one pool.
                    best: tuple[float, tuple[str, Pool], int] | None = None
                    for k in keys:
                        per = self._rps(m, k[1], t, block)
                        if per <= 0:
                            continue
                        n = math.ceil(short / per - EPS)
                        if k[1] in room:
                            n = min(n, math.floor(room[k[1]][t] + EPS))
                        if n <= 0:
                            continue
                        cand = (self.prices.get(k[1], 0.0) * n / min(1.0, n * per / short), k, n)
                        if best is None or cand[:2] < best[:2]:
                            best = cand
                    if best is None:
                        break  # nowhere left with room: the LP's fractions cannot be covered
                    _, k, n = best
                    counts[k][t] += n
                    short -= n * self._rps(m, k[1], t, block)
                    if k[1] in room:
                        room[k[1]][t] -= n
        self._keep_share(r, counts, room, n_blocks)
        return {k: np.repeat(vs, block)[:steps].tolist() for k, vs in counts.items()}

    def _keep_share(
        self,
        r: ProgramResult,
        counts: dict[tuple[str, Pool], list[int]],
        room: dict[Pool, list[float]],
        n_blocks: int,
    ) -> None:
        """Restore each model's `min_on_demand_share` that rounding diluted, in place.

        Rounding covers the relaxation's fractions with the cheapest whole nodes, mostly
        spot, so the on-demand share of capacity the relaxation kept can fall below the
        config's minimum, a rule capsched obeys at every plan. Per model, whole on-demand
        nodes are added one at a time in every block where the share fails, to one
        on-demand pool (the same in every block, so no node flips between pools block to
        block), each followed by the removal of the spot nodes it made surplus in that
        pool's location (which keeps at least the relaxation's capacity there), dearest
        per rps first. The pool is the one for which the model's schedule then costs
        least (docs/baselines.md)."""
        for section in self.config.models:
            m, share = section.name, section.min_on_demand_share
            keys = [k for k in r.x if k[0] == m and self.capacity.rps(m, k[1]) > 0]
            od_keys = [k for k in keys if k[1].market is Market.ON_DEMAND]
            if share <= 0 or not od_keys:
                continue
            rps = np.array([self.capacity.rps(m, k[1]) for k in keys])
            now = np.array([counts[k] for k in keys], dtype=np.int64)  # keys x blocks
            od_row = np.array([k[1].market is Market.ON_DEMAND for k in keys])
            od = (now[od_row] * rps[od_row, None]).sum(axis=0)
            total = (now * rps[:, None]).sum(axis=0)
            if (od >= np.minimum(share * total, total) - EPS).all():
                continue  # rounding kept it
            lp = np.array([r.x[k] for k in keys])
            price = np.array([self.prices.get(k[1], 0.0) for k in keys])
            best: tuple[float, float, str, np.ndarray] | None = None
            for i, k in enumerate(keys):
                if not od_row[i]:
                    continue
                trial = self._share_kept(keys, i, now, od, total, lp, rps, price, share)
                cand = (float((trial * price[:, None]).sum()), -float(lp[i].sum()), str(k[1]))
                if best is None or cand < best[:3]:
                    best = (*cand, trial)
            assert best is not None
            for j, k in enumerate(keys):
                if k[1] in room:
                    for t in range(n_blocks):
                        room[k[1]][t] += int(now[j, t] - best[3][j, t])
                counts[k] = [int(v) for v in best[3][j]]

    @staticmethod
    def _share_kept(
        keys: list[tuple[str, Pool]],
        target: int,
        now: np.ndarray,
        od: np.ndarray,
        total: np.ndarray,
        lp: np.ndarray,
        rps: np.ndarray,
        price: np.ndarray,
        share: float,
    ) -> np.ndarray:
        """One model's node counts (keys x blocks; `now` is not changed) with the share
        kept by whole nodes of `keys[target]`'s on-demand pool (see `_keep_share`). `od`
        and `total` are the on-demand and total capacity per block of `now`, `lp` the
        relaxation's nodes, `rps` and `price` per key."""
        out = now.copy()
        loc = keys[target][1].location
        here = [j for j, k in enumerate(keys) if k[1].location == loc]
        spot_here = sorted(
            (j for j in here if keys[j][1].market is Market.SPOT),
            key=lambda j: (-price[j] / rps[j], str(keys[j][1])),
        )
        per = float(rps[target])
        for t in range(out.shape[1]):
            o, tot = float(od[t]), float(total[t])
            need = float((lp[here, t] * rps[here]).sum())
            have = float((out[here, t] * rps[here]).sum())
            # One node at a time, each followed by the spot it makes surplus: the share is
            # read on the fleet that remains, not on the one before the removals.
            while o < min(share * tot, tot) - EPS:
                out[target, t] += 1
                o, tot, have = o + per, tot + per, have + per
                for j in spot_here:
                    while out[j, t] > 0 and have - rps[j] >= need - EPS:
                        out[j, t] -= 1
                        have -= rps[j]
                        tot -= rps[j]
                if share >= 1.0 and not any(out[j, t] for j in spot_here):
                    break  # all on demand: spot elsewhere cannot be replaced from here
        return out
