"""How a plan is shown: JSON for programs, an aligned table for people. Both say what
the plan was made for (the demand) next to what it is (nodes, cost, unmet demand)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from capsched.inputs import merge_demand
from scheduler.config import Config
from scheduler.decide.size_classes import SizeClass, size_classes
from scheduler.domain import (
    REFERENCE_SIZE,
    CapacityProfile,
    Demand,
    Placement,
    Plan,
    RequestSize,
)
from scheduler.fleet.capacity import demand_size, node_rps
from scheduler.fleet.catalog import Catalog


def demand_totals(demand: Sequence[Demand]) -> list[Demand]:
    """The demand the solver serves: one entry per (model, region), in the order first
    given, repeated entries summed (`capsched.inputs.merge_demand`)."""
    return list(merge_demand(demand).demand)


@dataclass(frozen=True, slots=True)
class PlacementCost:
    """What one placement's tokens cost when its nodes carry the load the plan counts
    them on for (target utilisation) at the model's mean request size."""

    placement: Placement  # the nodes
    usd_per_hour: float  # price of one node (catalog)
    rps: float  # requests/s one node is planned to carry at that size
    usd_per_million_tokens: float  # price / (rps x tokens per request), per 1e6 tokens


def placement_costs(
    config: Config,
    catalog: Catalog,
    profiles: Sequence[CapacityProfile],
    plan: Plan,
    demand: Sequence[Demand],
) -> tuple[PlacementCost, ...]:
    """Cost per million (prompt + output) tokens of each placement of `plan` made for
    `demand`; a placement whose node carries nothing or whose pool the catalog does not
    price is left out."""
    prices = {o.pool: o.usd_per_hour for o in catalog.offerings}
    classes = size_classes(demand)
    out: list[PlacementCost] = []
    for pl in plan.placements:
        price = prices.get(pl.pool)
        if price is None:
            continue
        size = _routed_size(pl, classes.get(pl.model, ())) or demand_size(demand, pl.model)
        rps = node_rps(config, profiles, pl.model, catalog.instance_type(pl.pool), size=size)
        if rps <= 0:
            continue
        tokens_per_h = rps * 3600.0 * (size or REFERENCE_SIZE).tokens
        out.append(PlacementCost(pl, price, rps, price / tokens_per_h * 1e6))
    return tuple(out)


def _routed_size(pl: Placement, classes: Sequence[SizeClass]) -> RequestSize | None:
    """The mean size of what a placement placed by size serves: its routes' classes'
    sizes weighted by routed rate; None for a placement that serves the model's mix."""
    sizes = {c.range: c.size for c in classes}
    routes = [(r.rps, sizes[r.min_input_tokens, r.max_input_tokens]) for r in pl.routes]
    rate = sum(rps for rps, _ in routes)
    if rate <= 0:
        return None
    return RequestSize(
        sum(rps * s.input_tokens for rps, s in routes) / rate,
        sum(rps * s.output_tokens for rps, s in routes) / rate,
    )


def _finite_or_none(value: float) -> float | None:
    return None if math.isinf(value) else value


def _size_keys(d: Demand) -> dict[str, Any]:
    if d.buckets:  # the keys of a demand file's buckets, so the file can be fed back
        return {
            "buckets": [
                {
                    "rps": round(d.rps * b.share, 4),
                    "input_tokens": round(b.size.input_tokens, 2),
                    "output_tokens": round(b.size.output_tokens, 2),
                    "max_input_tokens": _finite_or_none(b.max_input_tokens),
                }
                for b in d.buckets
            ]
        }
    if d.size is None:
        return {}
    return {
        "input_tokens": round(d.size.input_tokens, 2),
        "output_tokens": round(d.size.output_tokens, 2),
    }


def plan_json(
    plan: Plan, demand: Sequence[Demand], costs: Sequence[PlacementCost] = ()
) -> dict[str, Any]:
    """The plan as the JSON document `capsched plan --json` prints.

    `demand` is what the plan was made for, with the keys of a demand file; `nodes` uses
    the keys of a fleet file. So either can be fed back (`--demand`, `--fleet`).
    `token_costs` lists `costs` (see `placement_costs`), one per placement, in the order
    of `nodes`.
    """
    return {
        "status": plan.status.value,
        "usd_per_hour": round(plan.usd_per_hour, 4),
        "objective_usd_per_hour": round(plan.objective, 4),
        "gap": round(plan.gap, 6),
        "solve_time_s": round(plan.solve_time_s, 4),
        "nodes": [pl.to_json() for pl in plan.placements],
        "unmet": [{**u.to_json(), "rps": round(u.rps, 4)} for u in plan.unmet],
        "relaxed": [r.value for r in plan.relaxed],
        # The models "on_demand_share" in `relaxed` is for, highest priority first.
        "on_demand_share_relaxed": list(plan.share_relaxed),
        # Capacity already paid for and how much of it the plan uses (docs/commitments.md).
        "commitments": [
            {
                "name": c.label,
                "kind": c.kind,
                "pools": [p.key for p in c.pools],
                "count": c.count,
                "used": c.used,
                "usd_per_hour_each": round(c.usd_per_hour, 5),
                "fee_usd_per_hour": round(c.fee_usd_per_hour, 4),
                "on_demand_usd_per_hour_each": round(c.on_demand_usd_per_hour, 5),
            }
            for c in plan.commitments
        ],
        # Savings plans: an amount per hour and what the plan's nodes draw from it.
        "savings_plans": [
            {
                "name": sp.label,
                "pools": [p.key for p in sp.pools],
                "usd_per_hour_committed": round(sp.usd_per_hour_committed, 4),
                "usd_per_hour_used": round(sp.usd_per_hour_used, 4),
                "nodes": sp.nodes,
                "on_demand_usd_per_hour": round(sp.on_demand_usd_per_hour, 4),
            }
            for sp in plan.savings_plans
        ],
        "notes": list(plan.notes),
        "demand": [
            {"model": d.model, "region": d.region, "rps": round(d.rps, 4), **_size_keys(d)}
            for d in demand_totals(demand)
        ],
        "token_costs": [
            {
                "model": c.placement.model,
                "pool": c.placement.pool.key,
                "count": c.placement.count,
                "usd_per_hour_each": round(c.usd_per_hour, 4),
                "rps_each": round(c.rps, 4),
                "usd_per_million_tokens": round(c.usd_per_million_tokens, 4),
            }
            for c in costs
        ],
    }


def demand_table(plan: Plan, demand: Sequence[Demand], source: str) -> str:
    """What the plan was made for: requests/s per (model, region) from `source`, and how
    much of each the plan leaves unserved; with mean tokens per request when any entry
    gives a size."""
    unmet: dict[tuple[str, str], float] = {}
    for u in plan.unmet:
        unmet[u.model, u.region] = unmet.get((u.model, u.region), 0.0) + u.rps
    totals = demand_totals(demand)
    sized = any(d.size is not None for d in totals)  # token columns only when given
    head: tuple[str, ...] = ("model", "region", "rps", "unmet rps")
    rows: list[tuple[str, ...]] = [(*head, "in tok", "out tok") if sized else head]
    for d in totals:
        left = unmet.get((d.model, d.region), 0.0)
        row: tuple[str, ...] = (
            d.model,
            d.region,
            f"{d.rps:.2f}",
            f"{left:.2f}" if left > 0 else "-",
        )
        if sized:
            size = d.size or REFERENCE_SIZE
            row = (*row, f"{size.input_tokens:.0f}", f"{size.output_tokens:.0f}")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:  # names left, numbers right
        cells = zip(row, widths, strict=True)
        lines.append(
            "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(cells))
        )
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([f"planned for this demand ({source}):", *lines])


def plan_table(plan: Plan, catalog: Catalog) -> str:
    """The plan as a text table with prices, then totals and unmet demand."""
    prices = {o.pool: o for o in catalog.offerings}
    header: tuple[str, ...] = (
        "model", "cloud", "region/zone", "instance type", "market", "nodes", "USD/h each",
    )  # fmt: skip
    by_size = any(pl.routes for pl in plan.placements)
    if by_size:  # placement by size: which prompt lengths the nodes serve (rps)
        header = (*header, "prompt tokens: rps")
    rows: list[tuple[str, ...]] = [header]
    estimated = False
    for pl in plan.placements:
        offering = prices.get(pl.pool)
        price = f"{offering.usd_per_hour:.4f}" if offering else "?"
        if offering and offering.price_is_estimate:
            price += "*"
            estimated = True
        rows.append(
            (
                pl.model,
                pl.pool.cloud.value,
                pl.pool.zone or pl.pool.region,
                pl.pool.instance_type,
                pl.pool.market.value,
                str(pl.count),
                price,
                *(
                    (" ".join(f"{r.label}: {r.rps:.2f}" for r in pl.routes) or "-",)
                    if by_size
                    else ()
                ),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(
        f"status {plan.status.value}  cost {plan.usd_per_hour:.2f} USD/h  "
        f"gap {plan.gap:.2%}  solved in {plan.solve_time_s:.2f} s"
    )
    for c in plan.commitments:
        covered = c.used * c.on_demand_usd_per_hour
        lines.append(
            f"commitment {c.label} ({c.kind}): {c.used} of {c.count} nodes used, fee"
            f" {c.fee_usd_per_hour:.2f} USD/h, covers {covered:.2f} USD/h of the cost above"
        )
    for sp in plan.savings_plans:
        lines.append(
            f"savings plan {sp.label}: {sp.usd_per_hour_used:.2f} of"
            f" {sp.usd_per_hour_committed:.2f} USD/h used by {sp.nodes} nodes, covers"
            f" {sp.on_demand_usd_per_hour:.2f} USD/h of the cost above"
        )
    for u in sorted(plan.unmet, key=lambda u: (-u.priority, u.model, u.region)):
        why = ", ".join(r.value for r in u.reasons) or "not analysed"
        lines.append(
            f"unmet: {u.model} from {u.region}: {u.rps:.2f} rps (priority {u.priority}; {why})"
        )
    for note in plan.notes:
        lines.append(f"note: {note}")
    if estimated:
        lines.append("* AWS spot price estimated as on-demand x (1 - Spot Advisor savings)")
    return "\n".join(lines)
