"""Whole nodes from the oracle's relaxed schedule (docs/baselines.md).

`Rounding.round` turns a relaxation's fractional nodes per (model, pool) and block into
whole nodes per step that obey what capsched obeys: the load the relaxation served,
within each source region's reach, min_on_demand_share, min_replicas, quotas and the
spot room. Per model, block after block:

1. the spot pools keep the whole nodes the relaxation had;
2. the relaxation's on-demand capacity, summed over the locations that share source
   regions (a reach group), becomes whole nodes of one on-demand pool per group, the
   same in every block, so no on-demand node moves between pools when the relaxation
   only shifts its fractions (each move launches a node, pays its boot, and the replay's
   look-ahead then keeps old and new fleets together);
3. what is still short is covered with whole nodes: the load the relaxation served, each
   source region within its reach (Hall's condition over sets of regions), and the
   capacity the relaxation held in each reach group (it keeps nodes through dips of the
   load rather than boot them again, and that headroom is what the engine's queues need
   at peaks). Each time the pool that covers it for the least per covered rps is taken,
   a node the pool did not hold in the previous block paying its boot too, so nodes stay
   where they ran while that still covers;
4. the share and min_replicas are restored with nodes of the group's on-demand pool (of
   another on-demand pool where a quota stops it), and the nodes left surplus removed,
   those just started first, then dearest per rps.

The on-demand pool of each group is the one for which the model's rounded schedule
costs least (boots included).

A node's rate is per key and block: with `Rounding.rates` (a model under a per-token SLO,
docs/profiles.md) the least rate over the block's steps' request sizes, as the schedule's
program counts it; without, the planned rate at the reference size in every block.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from scheduler.config import Config, ModelSection, QuotaSection
from scheduler.domain import Market, Pool
from scheduler.fleet.capacity import NodeCapacity
from simulations.baselines.common import StepRates
from simulations.baselines.oracle_program import EPS, ProgramResult, split_blocks


@dataclass(frozen=True)
class Rounding:
    """What rounding one relaxed schedule needs."""

    config: Config
    capacity: NodeCapacity  # planned rps per node
    prices: Mapping[Pool, float]  # USD/h per pool
    spot_limit: Callable[[Pool], Sequence[float] | None]  # the schedule's room per step
    spot_pools: Iterable[Pool]  # the traced spot pools
    steps: int  # foresight steps the blocks cover
    step_h: float  # hours per foresight step
    boot_h: float  # hours from launch to ready, billed for a node started after step 0
    reach: Mapping[str, frozenset[str]]  # source region -> locations within its limit
    rates: StepRates | None = None  # rates at the steps' sizes (None: `capacity` throughout)

    def block_rates(self, m: str, pool: Pool, lengths: Sequence[int]) -> np.ndarray:
        """Planned rps of one node of `m` in `pool` per block of `lengths` steps: the
        least over the block's steps' sizes, as the schedule's program counts it."""
        if self.rates is None:
            return np.full(len(lengths), self.capacity.rps(m, pool), dtype=np.float64)
        firsts = itertools.accumulate([0, *lengths[:-1]])
        return np.array(
            [
                self.rates.over(m, pool, f, n, most=False)
                for f, n in zip(firsts, lengths, strict=True)
            ],
            dtype=np.float64,
        )

    def serves(self, m: str, pool: Pool) -> bool:
        """Whether a node of `m` in `pool` carries load at some step's size."""
        if self.rates is None:
            return self.capacity.rps(m, pool) > 0
        return max(self.rates.distinct(m, pool)) > 0

    def round(self, r: ProgramResult, block: int) -> dict[tuple[str, Pool], list[int]]:
        """An integer schedule per (model, pool) and foresight step from a relaxed one on
        blocks of `block` steps (see the module docstring)."""
        lengths = split_blocks(self.steps, block)
        n_blocks = len(lengths)
        room: dict[Pool, np.ndarray] = {}
        for pool in self.spot_pools:
            cap = self.spot_limit(pool)
            assert cap is not None
            room[pool] = np.array(
                [float(min(cap[t * block : (t + 1) * block], default=0)) for t in range(n_blocks)]
            )
        # The relaxation's whole spot nodes are kept: reserve their room for every model
        # before any model covers its fractions.
        floors: dict[tuple[str, Pool], np.ndarray] = {}
        for k, vs in r.x.items():
            if k[1] in room:
                floors[k] = np.floor(np.asarray(vs[:n_blocks], dtype=np.float64) + EPS)
                room[k[1]] -= floors[k]
        quotas = _Quotas.of(self.config, self.capacity, n_blocks)
        for k, f in floors.items():
            quotas.take(k[1], f)
        counts: dict[tuple[str, Pool], np.ndarray] = {
            k: np.zeros(n_blocks, dtype=np.int64) for k in r.x
        }
        for section in self.config.models:
            keys = [k for k in r.x if k[0] == section.name and self.serves(k[0], k[1])]
            if not keys:
                continue
            model = _ModelRounding(self, r, section, keys, lengths, floors, quotas)
            out = model.best(room, quotas)
            for i, k in enumerate(keys):
                counts[k] = out[i]
                if k in floors:
                    room[k[1]] -= out[i] - floors[k]
                    quotas.take(k[1], out[i] - floors[k])
                else:
                    quotas.take(k[1], out[i])
        return {k: np.repeat(vs, lengths).tolist() for k, vs in counts.items()}


@dataclass
class _Quotas:
    """GPUs each quota still allows per block (shared by all models)."""

    capacity: NodeCapacity
    left: list[np.ndarray]  # per quota of the config, the GPUs it still allows per block
    quotas: tuple[QuotaSection, ...]
    hits: dict[Pool, tuple[int, tuple[int, ...]]]  # pool -> (GPUs per node, its quotas)

    @classmethod
    def of(cls, config: Config, capacity: NodeCapacity, n_blocks: int) -> _Quotas:
        left = [np.full(n_blocks, float(q.max_gpus)) for q in config.quotas]
        return cls(capacity, left, config.quotas, {})

    def copy(self) -> _Quotas:
        return _Quotas(self.capacity, [v.copy() for v in self.left], self.quotas, self.hits)

    def _of(self, p: Pool) -> tuple[int, tuple[int, ...]]:
        if p not in self.hits:
            itype = self.capacity.itype(p)
            self.hits[p] = (
                itype.gpu_count,
                tuple(
                    j
                    for j, q in enumerate(self.quotas)
                    if p.cloud is q.cloud
                    and (q.region is None or p.region == q.region)
                    and (q.market is None or p.market is q.market)
                    and (q.gpu_kind is None or itype.gpu_kind == q.gpu_kind)
                ),
            )
        return self.hits[p]

    def counts(self, pool: Pool) -> bool:
        """Whether some quota counts nodes of `pool`."""
        return bool(self._of(pool)[1])

    def allows(self, pool: Pool, t: int) -> int:
        """How many more nodes of `pool` every quota allows in block t."""
        gpus, hits = self._of(pool)
        n = 1 << 30
        for j in hits:
            n = min(n, math.floor(self.left[j][t] / max(gpus, 1) + EPS))
        return n

    def take(self, pool: Pool, nodes: np.ndarray | float, t: int | None = None) -> None:
        """Count `nodes` of `pool` (per block, or in block t only) against the quotas."""
        gpus, hits = self._of(pool)
        for j in hits:
            if t is None:
                self.left[j] -= np.asarray(nodes, dtype=np.float64) * gpus
            else:
                self.left[j][t] -= float(nodes) * gpus


class _ModelRounding:
    """One model's rounding, block after block, for a choice of on-demand pools."""

    def __init__(
        self,
        rounding: Rounding,
        r: ProgramResult,
        section: ModelSection,
        keys: list[tuple[str, Pool]],
        lengths: list[int],
        floors: Mapping[tuple[str, Pool], np.ndarray],
        quotas: _Quotas,
    ) -> None:
        m = section.name
        self.section = section
        self.keys = keys
        self.pools = [k[1] for k in keys]
        self.lengths = lengths
        n_blocks = len(lengths)
        self.price = np.array([rounding.prices.get(p, 0.0) for p in self.pools])
        # Per key and block, one node's rate (keys x blocks). Quantities per block (mass,
        # need, coverage, the share) use the block's own rate; orderings that need one
        # number per key (the on-demand pool tried first, the share's fallback pools, the
        # removal order) use the mean rate over the horizon's steps, so a key keeps its
        # place in every block and no node moves between pools only because one block's
        # sizes differ (the constant rate itself when the rate does not vary).
        self.rps = np.array(
            [rounding.block_rates(m, p, lengths) for p in self.pools], dtype=np.float64
        ).reshape(len(keys), n_blocks)
        weights = np.asarray(lengths, dtype=np.float64)
        flat = (self.rps == self.rps[:, :1]).all(axis=1)
        mean = np.where(flat, self.rps[:, 0], (self.rps * weights).sum(axis=1) / weights.sum())
        self.per_rps = np.divide(self.price, mean, out=np.full(len(keys), np.inf), where=mean > 0)
        self.od = np.array([p.market is Market.ON_DEMAND for p in self.pools])
        self.lp = np.array([r.x[k][:n_blocks] for k in keys], dtype=np.float64)
        self.floor = np.array(
            [floors[k] if k in floors else np.zeros(n_blocks) for k in keys], dtype=np.int64
        )
        firsts = np.cumsum([0, *lengths[:-1]])
        self.run_h = np.asarray(lengths, dtype=np.float64) * rounding.step_h  # per block
        self.boot_h = np.minimum(rounding.boot_h, firsts * rounding.step_h)  # a start's boot
        # Locations, and per source region with load the locations it may use.
        self.locations = sorted({p.location for p in self.pools})
        at = {loc: i for i, loc in enumerate(self.locations)}
        self.loc = np.array([at[p.location] for p in self.pools])
        regions = [
            (region, [at[loc] for loc in rounding.reach.get(region, ()) if loc in at], series)
            for (mm, region), series in sorted(r.served.items())
            if mm == m and max(series, default=0.0) > EPS
        ]
        # Hall's condition per subset S of those regions: its load less the capacity of the
        # locations S may use is short however the load is spread (the largest such gap is
        # exactly what cannot be served).
        self.subsets: list[tuple[np.ndarray, np.ndarray]] = []  # (load per block, loc mask)
        for size in range(1, len(regions) + 1):
            for group in itertools.combinations(regions, size):
                mask = np.zeros(len(self.locations), dtype=bool)
                for _, locs, _ in group:
                    mask[locs] = True
                load = np.sum([np.asarray(s[:n_blocks], dtype=np.float64) for *_, s in group], 0)
                self.subsets.append((load, mask))
        # Reach groups: locations joined by a source region that may use both.
        group_of = list(range(len(self.locations)))

        def find(i: int) -> int:
            while group_of[i] != i:
                i = group_of[i]
            return i

        for reachable in rounding.reach.values():
            idx = sorted(at[loc] for loc in reachable if loc in at)
            for a in idx[1:]:
                group_of[find(a)] = find(idx[0])
        self.group = np.array([find(int(i)) for i in self.loc])  # per key
        self.groups = sorted({int(g) for g in self.group[self.od]})
        # Nor less capacity in a reach group than the relaxation held there: it keeps
        # nodes through short dips of the load (a restart pays a boot), which the replay's
        # look-ahead holds anyway, and the headroom the engine's queues need at a peak.
        for g in sorted({int(g) for g in self.group}):
            here = self.group == g
            mask = np.zeros(len(self.locations), dtype=bool)
            mask[self.loc[here]] = True
            self.subsets.append(((self.lp[here] * self.rps[here]).sum(axis=0), mask))
        self.loads = np.array([load for load, _ in self.subsets]).reshape(-1, n_blocks)
        self.masks = np.array([mask for _, mask in self.subsets]).reshape(-1, len(self.locations))
        self.inside = self.masks[:, self.loc].T  # keys x rows: whether a key's node counts
        self.names = [str(p) for p in self.pools]  # ties go to the lower pool
        # Keys some quota counts (the rest need no quota look-up).
        self.quoted = np.array([quotas.counts(p) for p in self.pools], dtype=bool)
        # Removal order's fixed part: dearest per rps first.
        self.dear = sorted(range(len(keys)), key=lambda i: (-self.per_rps[i], i))
        self.dear_idx = np.array(self.dear, dtype=np.int64)  # the same, to index arrays with

    # -- the choice of on-demand pools -------------------------------------------------

    def best(self, room: Mapping[Pool, np.ndarray], quotas: _Quotas) -> np.ndarray:
        """Counts (keys x blocks) for the on-demand pool per reach group whose schedule
        costs least: from the pool holding the most of the relaxation's on-demand
        capacity, one pass over the groups, each trying every on-demand pool it has."""
        mass = (self.lp * self.rps).sum(axis=1)
        choice: dict[int, int] = {}
        for g in self.groups:
            ods = [i for i in range(len(self.keys)) if self.od[i] and self.group[i] == g]
            choice[g] = min(ods, key=lambda i: (-mass[i], self.per_rps[i], i))
        best = self.trial(choice, room, quotas)
        for g in self.groups:
            for i in range(len(self.keys)):
                if not self.od[i] or self.group[i] != g or i == choice[g]:
                    continue
                cand = self.trial({**choice, g: i}, room, quotas)
                if (cand[0], self.names[i]) < (best[0], self.names[choice[g]]):
                    best, choice = cand, {**choice, g: i}
        return best[1]

    def trial(
        self, choice: Mapping[int, int], room: Mapping[Pool, np.ndarray], quotas: _Quotas
    ) -> tuple[float, np.ndarray]:
        """(USD, counts keys x blocks) of the rounded schedule with `choice`'s on-demand
        pool per reach group; `room` and `quotas` are not changed."""
        # Spot room per key (a model holds one key per pool; inf: no limit).
        room_left = np.array(
            [room[p].copy() if p in room else np.full(self.lp.shape[1], np.inf) for p in self.pools]
        ).reshape(self.lp.shape)
        quota_left = quotas.copy()
        n_keys, n_blocks = self.lp.shape
        out = np.zeros((n_keys, n_blocks), dtype=np.int64)
        prev = np.zeros(n_keys, dtype=np.int64)
        # For the share and min_replicas: the chosen pools, then (where quotas stop them)
        # the other on-demand pools, cheapest per rps first.
        per_rps = self.per_rps
        chosen = sorted(choice.values(), key=lambda i: (per_rps[i], i))
        chosen += sorted(
            (i for i in range(n_keys) if self.od[i] and i not in chosen),
            key=lambda i: (per_rps[i], i),
        )
        for t in range(n_blocks):
            step = _Block(self, t, prev, room_left, quota_left)
            step.cur[:] = self.floor[:, t]
            for g, i in choice.items():
                here = self.od & (self.group == g)
                need = float((self.lp[here, t] * self.rps[here, t]).sum())
                if self.rps[i, t] > 0:  # else `cover` places it
                    step.add(i, math.ceil(need / self.rps[i, t] - EPS))
            step.cover()
            step.keep_rules(chosen)
            step.prune()
            out[:, t] = step.cur
            prev = step.cur
        starts = np.maximum(0, np.diff(out, axis=1, prepend=out[:, :1]))
        cost = (self.price[:, None] * (out * self.run_h + starts * self.boot_h)).sum()
        return float(cost), out


@dataclass(frozen=True)
class _Saved:
    """A block's state to try a count of nodes from, and come back to."""

    cur: np.ndarray  # nodes per key
    room: np.ndarray  # spot room per key left in the block
    quota_left: list[float]  # per quota, the GPUs it still allows in the block


class _Block:
    """One block's whole nodes of one model, built from the previous block's."""

    def __init__(
        self,
        model: _ModelRounding,
        t: int,
        prev: np.ndarray,
        room: np.ndarray,
        quotas: _Quotas,
    ) -> None:
        self.m = model
        self.t = t
        self.prev = prev
        self.room = room
        self.quotas = quotas
        self.cur = np.zeros_like(prev)

    def free(self, idx: np.ndarray) -> np.ndarray:
        """How many more nodes of keys `idx` the spot room and quotas allow."""
        n = np.floor(np.minimum(self.room[idx, self.t], 1 << 30) + EPS)
        for j, i in enumerate(idx):
            if self.m.quoted[i]:
                n[j] = min(n[j], self.quotas.allows(self.m.pools[i], self.t))
        return np.asarray(np.maximum(n, 0), dtype=np.float64)

    def add(self, i: int, n: int) -> int:
        """Add up to n nodes of key i (as room and quotas allow); returns how many."""
        n = min(n, int(self.free(np.array([i]))[0]))
        if n > 0:
            self.cur[i] += n
            self.room[i, self.t] -= n
            self.quotas.take(self.m.pools[i], n, self.t)
        return max(n, 0)

    def remove(self, i: int, n: int = 1) -> None:
        """Remove n nodes of key i (giving their spot room and quota back)."""
        self.cur[i] -= n
        self.room[i, self.t] += n
        self.quotas.take(self.m.pools[i], -n, self.t)

    def gaps(self) -> np.ndarray:
        """Per row (a Hall subset or a reach group), its load less the capacity it may
        use."""
        cap = np.bincount(self.m.loc, self.cur * self.m.rps[:, self.t], len(self.m.locations))
        return np.asarray(self.m.loads[:, self.t] - self.m.masks @ cap)

    def short(self) -> float:
        """The load (rps) that the block's nodes cannot serve within reach."""
        return max(0.0, float(self.gaps().max(initial=0.0)))

    def cover(self) -> None:
        """Cover the load still short, each time with the nodes of one pool that cover
        it for the least per covered rps (boots of nodes not held before included)."""
        m, t = self.m, self.t
        allowed = m.od | (m.section.min_on_demand_share < 1.0)  # all on demand: no spot
        allowed &= m.inside.any(axis=1)
        allowed &= m.rps[:, t] > 0  # a node that carries nothing at this block's sizes
        rps = m.rps[:, t]
        while True:
            gaps = self.gaps()
            short = max(0.0, float(gaps.max(initial=0.0)))
            if short <= EPS:
                return
            # Per key: the largest gap its nodes close (top), and what remains whatever
            # it adds (floor: the rows it cannot reach).
            top = np.where(m.inside, gaps[None, :], -np.inf).max(axis=1)
            floor = np.maximum(0.0, np.where(m.inside, -np.inf, gaps[None, :]).max(axis=1))
            useful = allowed & (top > floor + EPS)
            idx = np.nonzero(useful)[0]
            if idx.size == 0:
                return
            n = np.ceil((top[idx] - floor[idx]) / rps[idx] - EPS)
            n = np.minimum(n, self.free(idx))
            ok = n > 0
            idx, n = idx[ok], n[ok]
            if idx.size == 0:
                return  # nowhere left with room: the relaxation's load cannot be covered
            cur, prev = self.cur[idx], self.prev[idx]
            started = np.maximum(0, cur + n - prev) - np.maximum(0, cur - prev)
            usd = m.price[idx] * (n * m.run_h[t] + started * m.boot_h[t])
            covered = short - np.maximum(floor[idx], top[idx] - n * rps[idx])
            score = usd / covered
            low = score.min()
            pick = min(
                (int(i) for i, v in zip(range(idx.size), score, strict=True) if v <= low + 1e-12),
                key=lambda j: m.names[idx[j]],
            )
            self.add(int(idx[pick]), int(n[pick]))

    def share_ok(self) -> bool:
        share = self.m.section.min_on_demand_share
        cap = self.cur * self.m.rps[:, self.t]
        total = float(cap.sum())
        return float(cap[self.m.od].sum()) >= min(share * total, total) - EPS

    def rules_ok(self) -> bool:
        """Whether the block keeps min_replicas and min_on_demand_share."""
        return int(self.cur.sum()) >= self.m.section.min_replicas and self.share_ok()

    def keep_rules(self, chosen: Sequence[int]) -> None:
        """min_replicas and min_on_demand_share with on-demand nodes of the first of
        `chosen` that quotas allow (then the next), followed by the removal of what they
        made surplus: the fewest nodes after which, pruned, the rules hold.

        That count is found by doubling, then bisecting, each count tried from the same
        start and pruned once: log2 of the count in prunes where adding one node and
        pruning after each took one per node (hundreds of nodes a block on long prompts,
        issue #20; docs/profiles.md). Where quotas stop the on-demand nodes first, all
        they allow are kept, pruned."""
        if self.rules_ok():
            return
        start = self.save()
        lo, n = 0, 1  # the rules fail with lo nodes added; n: the count to try
        while True:
            added = self.add_on_demand(chosen, n)
            if added < n:  # quotas allow no more: at most `added`
                self.prune()
                if not self.rules_ok():
                    return  # all the quotas allow, pruned
                hi = added
                break
            if self.rules_ok():  # before pruning: a prune keeps them
                hi = n
                break
            self.prune()
            if self.rules_ok():
                hi = n
                break
            self.restore(start)
            lo, n = n, 2 * n
        # The rules fail with lo and hold with hi nodes added (and pruned).
        while hi - lo > 1:
            mid = (lo + hi) // 2
            self.restore(start)
            self.add_on_demand(chosen, mid)
            self.prune()
            if self.rules_ok():
                hi = mid
            else:
                lo = mid
        self.restore(start)
        self.add_on_demand(chosen, hi)
        self.prune()

    def add_on_demand(self, chosen: Sequence[int], n: int) -> int:
        """Add n nodes to the first of `chosen` that quotas allow, then the next; returns
        how many were added."""
        added = 0
        for i in chosen:
            if added == n:
                break
            added += self.add(i, n - added)
        return added

    def save(self) -> _Saved:
        """The block's nodes and what they take of its spot room and quotas."""
        t = self.t
        return _Saved(
            self.cur.copy(), self.room[:, t].copy(), [float(v[t]) for v in self.quotas.left]
        )

    def restore(self, saved: _Saved) -> None:
        """Back to `saved` (of this block)."""
        t = self.t
        self.cur[:] = saved.cur
        self.room[:, t] = saved.room
        for v, left in zip(self.quotas.left, saved.quota_left, strict=True):
            v[t] = left

    def prune(self) -> None:
        """Remove nodes while the load stays covered, the share and min_replicas kept:
        nodes not held in the previous block first, then the dearest per rps. Each key's
        nodes go one at a time until the first whose removal breaks a rule; as a removal
        only ever adds to a gap, and moves the share one way, that count is found by
        galloping and bisecting over it (`removable`)."""
        m = self.m
        cur, prev = self.cur[m.dear_idx], self.prev[m.dear_idx]
        started = m.dear_idx[cur > prev]
        held = m.dear_idx[(cur > 0) & (cur <= prev)]
        for i in (int(i) for i in np.concatenate([started, held])):
            most = min(int(self.cur[i]), int(self.cur.sum()) - m.section.min_replicas)
            n = self.removable(i, most)
            if n > 0:
                self.remove(i, n)

    def removable(self, i: int, most: int) -> int:
        """How many of key i's nodes (up to `most`) go before the first whose removal
        leaves load short or the share unkept."""
        if most <= 0 or not self.ok_without(i, 1):
            return 0
        good, bad = 1, most + 1  # the rules hold without `good` nodes; `bad`: not tried
        n = 2
        while n <= most:
            if not self.ok_without(i, n):
                bad = n
                break
            good, n = n, 2 * n
        while bad - good > 1:
            mid = (good + bad) // 2
            if self.ok_without(i, mid):
                good = mid
            else:
                bad = mid
        return good

    def ok_without(self, i: int, n: int) -> bool:
        """Whether the load stays covered and the share kept without n nodes of key i.

        A spot node's removal only raises the on-demand share, so it may go while the
        share is still short: otherwise `keep_rules` had to add on-demand nodes until the
        share held beside every spot node the relaxation had, before any spot went
        (19 on-demand and 1 spot where 10 and 10 keep a 0.5 share)."""
        self.remove(i, n)
        ok = self.short() <= EPS and (self.share_ok() or not bool(self.m.od[i]))
        self.remove(i, -n)  # back as they were, even where room or quotas are overdrawn
        return ok
