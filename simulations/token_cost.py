"""Cost per million tokens of a replay, per model and per GPU kind: the one attribution
summary.json, `capsched simulate`'s tables and report.png read (docs/profiles.md, "Cost
per million tokens").

A replay's nodes fall in groups (`NodeGroup`: the model a node serves, the GPU kind of
its instance type). Per group:

* USD: what the simulated cloud billed for the group's nodes over the trace
  (`SimCloud.cost_by_model_pool`, at the trace's end less at its start, as the policy's
  total), booting, idle and draining nodes included: they bill and serve nothing, so
  they raise the group's USD per million tokens. A commitment's fee less the on-demand
  price it covered (`simulations.commitment_bill`) is split over the groups by what their
  nodes billed in its pools; a commitment none of whose pools ran a node is a group of
  its own (`UNUSED_COMMITMENT`, the GPU kind of its pools);
* tokens: a step's served tokens of a model (requests served x the step's prompt +
  output tokens per request) split over the model's ready GPU kinds in proportion to
  their ready capacity (the per-node requests/s the replay serves with), so the kinds of
  a model add up to the model, and the models to the policy.

Nothing here reads a clock or a cloud: the replay passes the billed amounts and the
per-step capacity in (`attribute_usd`, `attribute_tokens`), and `token_costs` sums them
per model and per GPU kind.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scheduler.domain import Market, Pool

# The model of the group that holds a commitment's fee when none of its pools ran a node.
UNUSED_COMMITMENT = "(unused commitment)"
# The GPU kind of served tokens no ready node can account for (not expected: a model
# serves only on ready capacity), and of a commitment over several GPU kinds.
UNKNOWN_KIND = "(unknown)"
SEVERAL_KINDS = "(several)"


@dataclass(frozen=True, slots=True, order=True)
class NodeGroup:
    """The nodes of one model on one GPU kind."""

    model: str  # the model the nodes serve
    gpu_kind: str  # normalised accelerator name of their instance type, e.g. "L4"


@dataclass(frozen=True, slots=True)
class CommitmentCharge:
    """What one commitment adds to a replay's bill, and where."""

    pools: frozenset[Pool]  # the on-demand pools it covers
    usd: float  # its fee less the on-demand price of the node-time it covered


@dataclass(frozen=True, slots=True)
class TokenCost:
    """USD and tokens of a set of nodes over a replay."""

    usd: float  # billed for the nodes
    tokens: float  # prompt + output tokens they served

    @property
    def usd_per_million_tokens(self) -> float | None:
        """USD per million tokens served; None when they served none."""
        return self.usd / self.tokens * 1e6 if self.tokens > 0 else None

    def as_json(self) -> dict[str, float | None]:
        """The entry of summary.json's `usd_per_million_tokens_by_*` objects."""
        per = self.usd_per_million_tokens
        return {
            "usd": round(self.usd, 4),
            "million_tokens": round(self.tokens / 1e6, 6),
            "usd_per_million_tokens": None if per is None else round(per, 4),
        }


@dataclass(frozen=True)
class TokenCosts:
    """A replay's cost per million tokens: in total, per model, per GPU kind."""

    total: TokenCost  # the policy's
    by_model: dict[str, TokenCost] = field(default_factory=dict)  # model -> its nodes'
    by_gpu_kind: dict[str, TokenCost] = field(default_factory=dict)  # GPU kind -> its nodes'


def attribute_usd(
    billed_end: Mapping[tuple[str, Pool], float],
    billed_start: Mapping[tuple[str, Pool], float],
    gpu_kind: Callable[[Pool], str],
    commitments: Sequence[CommitmentCharge] = (),
) -> dict[NodeGroup, float]:
    """USD per group over a replay: billed per (model, pool) at its end (`billed_end`)
    less at its start (`billed_start`), plus each commitment's charge split over the
    groups by their on-demand USD in its pools (see the module docstring)."""
    by_pool: dict[tuple[str, Pool], float] = {
        key: usd - billed_start.get(key, 0.0) for key, usd in billed_end.items()
    }
    out: dict[NodeGroup, float] = {}
    for (model, pool), usd in by_pool.items():
        group = NodeGroup(model, gpu_kind(pool))
        out[group] = out.get(group, 0.0) + usd
    for charge in commitments:
        there = {
            key: usd
            for key, usd in by_pool.items()
            if key[1] in charge.pools and key[1].market is Market.ON_DEMAND and usd > 0
        }
        total = sum(there.values())
        if total <= 0:
            group = NodeGroup(UNUSED_COMMITMENT, _kind_of(charge.pools, gpu_kind))
            out[group] = out.get(group, 0.0) + charge.usd
            continue
        for (model, pool), usd in there.items():
            group = NodeGroup(model, gpu_kind(pool))
            out[group] = out.get(group, 0.0) + charge.usd * usd / total
    return out


def _kind_of(pools: Collection[Pool], gpu_kind: Callable[[Pool], str]) -> str:
    kinds = {gpu_kind(p) for p in pools}
    return next(iter(kinds)) if len(kinds) == 1 else SEVERAL_KINDS


def attribute_tokens(
    models: Sequence[str],
    served_rps: np.ndarray,
    tokens_per_request: np.ndarray,
    capacity_by_kind: Mapping[str, np.ndarray],
    step_s: float,
) -> dict[NodeGroup, float]:
    """Tokens served per group: per model (row of `served_rps`, `tokens_per_request`,
    (models, steps)) and step, its served tokens split over the GPU kinds by their ready
    capacity (`capacity_by_kind`: kind -> (models, steps) requests/s)."""
    tokens = np.asarray(served_rps, dtype=np.float64) * tokens_per_request * step_s
    kinds = sorted(capacity_by_kind)
    out: dict[NodeGroup, float] = {}
    if not kinds:
        caps = np.zeros((0, *tokens.shape))
    else:
        caps = np.stack([np.asarray(capacity_by_kind[k], dtype=np.float64) for k in kinds])
    total = caps.sum(axis=0) if kinds else np.zeros_like(tokens)
    for m, model in enumerate(models):
        has = total[m] > 0
        for k, kind in enumerate(kinds):
            share = np.divide(caps[k, m], total[m], out=np.zeros_like(total[m]), where=has)
            got = float((tokens[m] * share).sum())
            if got > 0:
                out[NodeGroup(model, kind)] = got
        lost = float(tokens[m][~has].sum())
        if lost > 0:
            out[NodeGroup(model, UNKNOWN_KIND)] = lost
    return out


def token_costs(
    total: TokenCost,
    usd_by_group: Mapping[NodeGroup, float],
    tokens_by_group: Mapping[NodeGroup, float],
) -> TokenCosts:
    """The policy's `total` with its groups summed per model and per GPU kind (each
    name sorted)."""
    by_model: dict[str, list[float]] = {}
    by_kind: dict[str, list[float]] = {}
    for group in sorted(set(usd_by_group) | set(tokens_by_group)):
        usd, tokens = usd_by_group.get(group, 0.0), tokens_by_group.get(group, 0.0)
        for book, name in ((by_model, group.model), (by_kind, group.gpu_kind)):
            entry = book.setdefault(name, [0.0, 0.0])
            entry[0] += usd
            entry[1] += tokens
    return TokenCosts(
        total=total,
        by_model={name: TokenCost(u, t) for name, (u, t) in sorted(by_model.items())},
        by_gpu_kind={name: TokenCost(u, t) for name, (u, t) in sorted(by_kind.items())},
    )


def summary_keys(costs: TokenCosts) -> dict[str, Any]:
    """summary.json's cost per million tokens keys of one policy."""
    per = costs.total.usd_per_million_tokens
    return {
        # Cost per million prompt + output tokens served (None: nothing served).
        "usd_per_million_tokens": None if per is None else round(per, 4),
        # The same per model and per GPU kind of the nodes: name -> {usd, million_tokens,
        # usd_per_million_tokens}; the entries add up to the policy's cost and tokens.
        "usd_per_million_tokens_by_model": {k: v.as_json() for k, v in costs.by_model.items()},
        "usd_per_million_tokens_by_gpu_kind": {
            k: v.as_json() for k, v in costs.by_gpu_kind.items()
        },
    }
