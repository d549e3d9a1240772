"""Which commitment should I buy: replay one trace once per committed count (or savings
plan amount) and compare total cost (commitment fee + on-demand + spot),
docs/commitments.md.

    capsched simulate [--config F] [--trace F] [--scenario F] [--fleet-gpus N]
                      --commitment-sweep aws/us-east-1/g6e.xlarge:0,2,4,8
                      [--policy capsched] [--workers N] [--out DIR]
    capsched simulate [...] --commitment-sweep savings:aws/us-east-2/g6e:0,2.5,5,10
    capsched simulate [...] --commitment-sweep savings:aws/us-east-2/*:0,2.5,5,10

`POOL` is `cloud/region-or-zone/instance_type`: the commitment's pool (on-demand). A
count of 0 is the replay without it. When the config already has a `[[commitments]]`
entry on that pool, the sweep varies its count and keeps its kind and price; otherwise
the entry is added with the catalog's reserved price (`scheduler.fleet.commitments`).
`savings:CLOUD/REGION/FAMILY:AMOUNTS` sweeps a savings plan's USD per hour committed in
that region, of that instance family (`*`: every family); a savings plan of the config
with the same cloud, region and family has its amount varied and keeps its name. Every
run bills every commitment by the same rule (`simulations.commitment_bill`), so the
policies are compared on equal terms.

`sweep` returns one row per (level, policy), a level being a count or an amount;
`chosen` is the level of the cheapest total cost per policy (the smaller on a tie).
`write_outputs` writes `DIR/commitment_sweep.json` and the cost curve
`DIR/commitment_sweep.png`.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import math
import multiprocessing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheduler.config import CommitmentKind, CommitmentSection, Config
from scheduler.domain import Cloud, Market, Pool
from scheduler.fleet.catalog import Catalog
from scheduler.fleet.commitments import commitment_problems, covers
from simulations.commitment_bill import COMMITMENT_MARKET
from simulations.engine import RunResult, World, run_policy

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class SweepSpecError(ValueError):
    """A `--commitment-sweep` argument that names no pool or no counts."""


@dataclass(frozen=True, slots=True)
class SweepSpec:
    """What to sweep: one commitment's count (or a savings plan's amount) over `levels`."""

    section: CommitmentSection  # the commitment (its count or amount is replaced per run)
    # Committed counts, or USD per hour of a savings plan, to replay; ascending; 0 = none.
    levels: tuple[float, ...]

    @property
    def pool(self) -> str:
        """The commitment's label (cloud/region-or-zone/type unless the config names it)."""
        return self.section.label

    @property
    def unit(self) -> str:
        """What a level counts, for tables and plots."""
        return "USD/h committed" if self.section.is_spend else "committed nodes"

    def level_text(self, level: float) -> str:
        """A level as the user typed it: a whole count, or an amount."""
        return f"{level:g}" if self.section.is_spend else f"{int(level)}"


@dataclass(frozen=True, slots=True)
class SweepRow:
    """One replay of the sweep."""

    level: float  # committed nodes, or USD per hour of the swept savings plan
    policy: str  # policy replayed
    cost_usd: float  # total: commitment fee + on-demand + spot
    commitment_usd: float  # the commitments' fee (all of the config's, this one included)
    on_demand_usd: float  # on-demand nodes not covered by a commitment
    spot_usd: float  # spot nodes
    # Of the swept commitment's paid node-hours, or the share of a savings plan's amount
    # that paid for usage (1.0 at level 0).
    utilisation: float
    slo_attainment: float  # share of requests answered within the SLO


# The pool: where the first policy runs the most on-demand node-hours (`busiest_pool`).
AUTO = "auto"


@dataclass(frozen=True, slots=True)
class AutoSweep:
    """`auto:COUNTS` or `savings:auto:AMOUNTS`: the levels, the commitment found by a first
    replay (`busiest_pool`; for a savings plan, every family in that pool's region)."""

    levels: tuple[float, ...]  # ascending, 0 included
    savings: bool  # a savings plan's amount, not a count of nodes


# `savings:CLOUD/REGION/FAMILY:AMOUNTS`: a savings plan's amount; FAMILY `*`: every family.
SAVINGS = "savings:"
EVERY_FAMILY = "*"


def parse_spec(text: str, config: Config, catalog: Catalog) -> SweepSpec | AutoSweep:
    """`cloud/region-or-zone/type:0,2,4` or `savings:cloud/region/family:0,2.5,5` against
    the config and catalog; for `auto:0,2,4` or `savings:auto:0,2.5` only the levels (the
    pool is found by a replay, `busiest_pool`, then `auto_spec`)."""
    if text.startswith(f"{SAVINGS}{AUTO}:"):
        amounts = _amounts(text, text.removeprefix(f"{SAVINGS}{AUTO}:"))
        return AutoSweep(tuple(sorted({0.0, *amounts})), savings=True)
    if text.startswith(SAVINGS):
        return _savings_spec(text, config, catalog)
    pool_text, sep, counts_text = text.rpartition(":")
    parts = pool_text.split("/")
    if not sep or (len(parts) != 3 and pool_text != AUTO):
        raise SweepSpecError(
            f"--commitment-sweep {text!r}: expected CLOUD/REGION-OR-ZONE/TYPE:COUNTS,"
            " auto:COUNTS or savings:CLOUD/REGION/FAMILY-OR-*:USD_PER_HOUR, e.g."
            " aws/us-east-1/g6e.xlarge:0,2,4,8"
        )
    try:
        counts = sorted({int(c) for c in counts_text.split(",") if c.strip()})
    except ValueError:
        raise SweepSpecError(
            f"--commitment-sweep {text!r}: counts must be whole numbers, e.g. 0,2,4,8"
        ) from None
    if not counts or counts[0] < 0:
        raise SweepSpecError(f"--commitment-sweep {text!r}: give counts >= 0, e.g. 0,2,4,8")
    if pool_text == AUTO:
        return AutoSweep(tuple(float(c) for c in sorted({0, *counts})), savings=False)
    return spec_of("/".join(parts), tuple(counts), config, catalog)


def _amounts(text: str, amounts_text: str) -> list[float]:
    """The amounts of a savings sweep, ascending (SweepSpecError naming `text`)."""
    try:
        amounts = sorted({float(a) for a in amounts_text.split(",") if a.strip()})
    except ValueError:
        raise SweepSpecError(
            f"--commitment-sweep {text!r}: amounts must be USD per hour, e.g. 0,2.5,5"
        ) from None
    if not amounts or amounts[0] < 0 or not all(math.isfinite(a) for a in amounts):
        raise SweepSpecError(f"--commitment-sweep {text!r}: give amounts >= 0, e.g. 0,2.5,5")
    return amounts


def auto_spec(auto: AutoSweep, pool_text: str, config: Config, catalog: Catalog) -> SweepSpec:
    """The sweep `auto` stands for once the busiest pool `cloud/region-or-zone/type` is
    known: that pool's count, or a savings plan over every family of its region."""
    if not auto.savings:
        return spec_of(pool_text, tuple(int(c) for c in auto.levels), config, catalog)
    cloud_text, where, _ = pool_text.split("/")
    region = next(
        (o.pool.region for o in catalog.offerings if where in (o.pool.region, o.pool.zone)),
        where,
    )
    amounts = ",".join(str(a) for a in auto.levels)  # every digit: parsed again
    return _savings_spec(
        f"{SAVINGS}{cloud_text}/{region}/{EVERY_FAMILY}:{amounts}", config, catalog
    )


def _savings_spec(text: str, config: Config, catalog: Catalog) -> SweepSpec:
    """`savings:cloud/region/family-or-*:amounts` as a sweep of a savings plan's amount."""
    where, sep, amounts_text = text.removeprefix(SAVINGS).rpartition(":")
    parts = where.split("/")
    if not sep or len(parts) != 3 or not all(parts):
        raise SweepSpecError(
            f"--commitment-sweep {text!r}: expected savings:CLOUD/REGION/FAMILY-OR-*:USD_PER_HOUR,"
            " e.g. savings:aws/us-east-2/g6e:0,2.5,5 or savings:aws/us-east-2/*:0,2.5,5"
        )
    amounts = _amounts(text, amounts_text)
    cloud_text, region, family_text = parts
    try:
        cloud = Cloud(cloud_text)
    except ValueError:
        raise SweepSpecError(f"--commitment-sweep {text!r}: unknown cloud {cloud_text!r}") from None
    family = None if family_text == EVERY_FAMILY else family_text
    for section in config.commitments:  # a savings plan of the config: vary its amount
        if section.is_spend and (section.cloud, section.region, section.instance_family) == (
            cloud,
            region,
            family,
        ):
            return SweepSpec(section, tuple(amounts))
    section = CommitmentSection(
        kind=CommitmentKind.SAVINGS_PLAN,
        cloud=cloud,
        region=region,
        instance_family=family,
        usd_per_hour_committed=max(amounts[-1], 0.01),
    )
    alone = config.model_copy(update={"commitments": (section,)})
    for problem in commitment_problems(alone, catalog):
        raise SweepSpecError(
            f"--commitment-sweep {text!r}: {problem.removeprefix('commitments[0].')}"
        )
    return SweepSpec(section, tuple(amounts))


def spec_of(pool_text: str, counts: tuple[int, ...], config: Config, catalog: Catalog) -> SweepSpec:
    """The sweep of `counts` nodes on the on-demand pool `cloud/region-or-zone/type`."""
    text = f"{pool_text}:{','.join(map(str, counts))}"
    cloud_text, where, itype = pool_text.split("/")
    try:
        cloud = Cloud(cloud_text)
    except ValueError:
        raise SweepSpecError(f"--commitment-sweep {text!r}: unknown cloud {cloud_text!r}") from None
    on_demand = [
        o.pool
        for o in catalog.offerings
        if o.pool.cloud is cloud
        and o.pool.market is Market.ON_DEMAND
        and o.pool.instance_type == itype
        and where in (o.pool.region, o.pool.zone)
    ]
    if not on_demand:
        raise SweepSpecError(
            f"--commitment-sweep {text!r}: the catalog sells no on-demand {itype} in {where}"
        )
    zone = where if any(p.zone == where for p in on_demand) else None
    region = on_demand[0].region
    for section in config.commitments:  # an existing commitment on the pool: vary it
        if (section.cloud, section.region, section.zone, section.instance_type) == (
            cloud,
            region,
            zone,
            itype,
        ):
            return SweepSpec(section, tuple(map(float, counts)))
    section = CommitmentSection(
        cloud=cloud, region=region, zone=zone, instance_type=itype, count=max(1, counts[-1])
    )
    if not any(covers(section, p) for p in on_demand):  # pragma: no cover - by construction
        raise SweepSpecError(f"--commitment-sweep {text!r}: no pool matches")
    return SweepSpec(section, tuple(map(float, counts)))


def busiest_pool(result: RunResult, config: Config, catalog: Catalog) -> str | None:
    """`cloud/region-or-zone/type` of the on-demand pool where `result` billed the most
    node-hours (the first in key order on a tie), among the pools a commitment could make
    cheaper: with a reserved price in the catalog, or covered by a commitment of the config
    (which has its own price). None when it ran no such node. (GCP has no committed-use
    prices in the data: a GCP commitment would default to the on-demand price.)"""

    def priced(pool: Pool) -> bool:
        key = (pool.cloud, pool.region, pool.instance_type)
        return key in catalog.reserved_usd_per_hour or any(
            covers(c, pool) for c in config.commitments
        )

    by_key = sorted(
        ((p, h) for p, h in result.on_demand_node_hours.items() if priced(p)),
        key=lambda kv: kv[0].key,
    )
    if not by_key:
        return None
    pool = max(by_key, key=lambda kv: kv[1])[0]  # max keeps the first of equals
    return f"{pool.cloud}/{pool.zone or pool.region}/{pool.instance_type}"


def unchanged(world: World, spec: SweepSpec) -> bool:
    """Whether `world` is already the sweep's world without the commitment (count 0):
    its config has no commitment on the swept pool."""
    return spec.section not in world.config.commitments


def world_with(world: World, spec: SweepSpec, level: float) -> World:
    """`world` with the swept commitment at `level` nodes or USD per hour (0: without
    it), the config's other commitments unchanged."""
    others = tuple(c for c in world.config.commitments if c != spec.section)
    if level > 0:
        key = "usd_per_hour_committed" if spec.section.is_spend else "count"
        value = float(level) if spec.section.is_spend else int(level)
        others = (*others, spec.section.model_copy(update={key: value}))
    return replace(world, config=world.config.model_copy(update={"commitments": others}))


def row_of(level: float, result: RunResult, spec: SweepSpec) -> SweepRow:
    """The sweep's row for one replay."""
    costs = {k: float(v[-1]) if len(v) else 0.0 for k, v in result.cost_by_market.items()}
    swept = [c for c in result.commitments if c.label == spec.pool]
    summary = result.summary(None)
    return SweepRow(
        level=level,
        policy=result.policy,
        cost_usd=result.cost_usd,
        commitment_usd=costs.get(COMMITMENT_MARKET, 0.0),
        on_demand_usd=costs.get(Market.ON_DEMAND.value, 0.0),
        spot_usd=costs.get(Market.SPOT.value, 0.0),
        utilisation=swept[0].utilisation if swept else 1.0,
        slo_attainment=float(summary["slo_attainment"]),
    )


def _one(world: World, policy: str, db: Path) -> RunResult:
    return run_policy(world, policy, db)


def sweep(
    world: World,
    spec: SweepSpec,
    policies: Sequence[str],
    out: Path,
    *,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
    done: Mapping[tuple[float, str], RunResult] | None = None,
) -> list[SweepRow]:
    """Replay `world` once per (level, policy); state databases under `out`. With
    `workers > 1` the replays run in that many processes (progress then moves per
    finished replay, by its steps). `done`: replays already run, by (level, policy)."""
    jobs = [(level, policy) for level in spec.levels for policy in policies]
    results: dict[tuple[float, str], RunResult] = dict(done or {})
    todo = [job for job in jobs if job not in results]

    def db(level: float, policy: str) -> Path:
        return out / f"state-{policy}-commit{spec.level_text(level)}.db"

    if workers <= 1:
        for level, policy in todo:
            w = world_with(world, spec, level)
            results[level, policy] = run_policy(w, policy, db(level, policy), progress)
    else:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process with solver threads
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {
                pool.submit(_one, world_with(world, spec, c), p, db(c, p)): (c, p) for c, p in todo
            }
            for fut in cf.as_completed(futures):
                results[futures[fut]] = fut.result()
                if progress is not None:
                    progress(world.info.n_steps)
    return [row_of(c, results[c, p], spec) for c, p in jobs]


def chosen(rows: Sequence[SweepRow]) -> dict[str, SweepRow]:
    """Per policy, the row of least total cost (the smaller level on a tie)."""
    best: dict[str, SweepRow] = {}
    for row in sorted(rows, key=lambda r: r.level):
        if row.policy not in best or row.cost_usd < best[row.policy].cost_usd - 1e-9:
            best[row.policy] = row
    return best


def table(rows: Sequence[SweepRow], spec: SweepSpec) -> str:
    """The sweep as a text table, the chosen level per policy marked with *."""
    best = {(r.policy, r.level) for r in chosen(rows).values()}
    level = "USD/h" if spec.section.is_spend else "count"
    head: tuple[str, ...] = ("policy", level, "total USD", "commit USD", "on-demand USD")
    head += ("spot USD", "commit util", "SLO att.")
    lines: list[tuple[str, ...]] = [head]
    order = {p: i for i, p in enumerate(dict.fromkeys(r.policy for r in rows))}
    for r in sorted(rows, key=lambda r: (order[r.policy], r.level)):
        mark = "*" if (r.policy, r.level) in best else ""
        lines.append(
            (
                r.policy,
                f"{spec.level_text(r.level)}{mark}",
                f"{r.cost_usd:.2f}",
                f"{r.commitment_usd:.2f}",
                f"{r.on_demand_usd:.2f}",
                f"{r.spot_usd:.2f}",
                f"{r.utilisation:.3f}",
                f"{r.slo_attainment:.4f}",
            )
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    text = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in lines
    ]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def figure(rows: Sequence[SweepRow], spec: SweepSpec, title: str = "") -> Figure:
    """The cost curve: total cost per committed count (or amount), per policy, with its
    parts; the chosen level circled."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    best = chosen(rows)
    for policy in dict.fromkeys(r.policy for r in rows):
        mine = [r for r in rows if r.policy == policy]
        xs = [r.level for r in mine]
        (line,) = ax.plot(xs, [r.cost_usd for r in mine], marker="o", label=f"{policy} total")
        colour = line.get_color()
        ax.plot(
            xs,
            [r.commitment_usd for r in mine],
            ls=":",
            color=colour,
            label=f"{policy} commitment fee",
        )
        ax.plot(
            xs,
            [r.on_demand_usd + r.spot_usd for r in mine],
            ls="--",
            color=colour,
            label=f"{policy} on-demand + spot",
        )
        b = best[policy]
        ax.scatter([b.level], [b.cost_usd], s=160, facecolors="none", edgecolors=colour)
    if not spec.section.is_spend:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(f"{spec.unit} of {spec.pool}")
    ax.set_ylabel("USD over the replay")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def write_outputs(out: Path, rows: Sequence[SweepRow], spec: SweepSpec, title: str = "") -> None:
    """DIR/commitment_sweep.json and DIR/commitment_sweep.png."""
    key = "usd_per_hour_committed" if spec.section.is_spend else "count"

    def level(value: float) -> float | int:
        return round(value, 6) if spec.section.is_spend else int(value)

    doc: dict[str, Any] = {
        "pool": spec.pool,
        "kind": spec.section.kind.value,
        "usd_per_hour": spec.section.usd_per_hour,  # None: the catalog's reserved price
        "instance_family": spec.section.instance_family,  # savings plans; None: every family
        "rows": [
            {
                key: level(r.level),
                "policy": r.policy,
                "cost_usd": round(r.cost_usd, 4),
                "commitment_usd": round(r.commitment_usd, 4),
                "on_demand_usd": round(r.on_demand_usd, 4),
                "spot_usd": round(r.spot_usd, 4),
                "commitment_utilisation": round(r.utilisation, 6),
                "slo_attainment": round(r.slo_attainment, 6),
            }
            for r in rows
        ],
        "chosen": {p: level(r.level) for p, r in chosen(rows).items()},
    }
    (out / "commitment_sweep.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    figure(rows, spec, title).savefig(out / "commitment_sweep.png", dpi=100, bbox_inches="tight")
