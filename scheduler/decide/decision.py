"""What one tick decided and what came of it, as typed records.

`Reconciler.decide` returns a `Decision` (the plan, the planned demand and forecast
quantiles it used, the guarded actions, what was held back and the approval verdict);
`Reconciler.tick` returns a `TickReport` with the decision, one `ActionOutcome` per
action attempted and the tick's `TickError`s. Telemetry, the daemon, the simulator,
the API and the TUI read these fields; the `text` of an error or a hold is for people
and is never parsed.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scheduler.decide.guards import Held, WaitingDrains
from scheduler.domain import Plan, Pool
from scheduler.domain.actions import Action

Series = tuple[str, str]  # (model, region)


class ErrorKind(enum.StrEnum):
    """Where a tick failed. The values are the `source` label of
    `capsched_tick_errors_total`, so they never change once published."""

    METRICS = "metrics"  # the load signal could not be read
    PROVIDER = "provider"  # the cloud listing could not be read (the tick was skipped)
    NODE = "node"  # one node could not be brought in line with the cloud listing
    ACTION = "action"  # one launch, drain or terminate failed


@dataclass(frozen=True, slots=True)
class TickError:
    """One failure of a tick (the tick still completed, or was skipped as a whole)."""

    kind: ErrorKind  # where it failed
    text: str  # the failure in words, for logs and people; never parsed
    node_id: str = ""  # the node it concerns ("" when none)
    pool: Pool | None = None  # the pool it concerns, when known

    def __str__(self) -> str:
        return self.text

    def to_json(self) -> dict[str, Any]:
        """The API's shape: {"kind", "node_id", "pool", "text"} ("pool" is `Pool.key`)."""
        pool = self.pool.key if self.pool is not None else None
        return {"kind": self.kind.value, "node_id": self.node_id, "pool": pool, "text": self.text}


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    """What became of one attempted action."""

    action: Action  # as attempted
    ok: bool  # whether the cloud or the drainer carried it out
    error: TickError | None = None  # why not, when it failed


class Approval(enum.StrEnum):
    """The approval verdict on a tick's plan (stored with the plan)."""

    AUTO = "auto"  # no approval needed: the fleet follows this plan
    APPROVED = "approved"  # a person approved these targets: the fleet follows them
    PENDING = "pending"  # waiting for a person: the fleet follows the last approved plan
    DRY_RUN = "dry-run"  # planned only, nothing acts
    PAUSED = "paused"  # the daemon is paused: planned only


@dataclass(frozen=True, slots=True)
class Decision:
    """Everything one decision step produced, with its diagnostics."""

    plan: Plan  # the policy's target fleet for this tick
    planned_rps: Mapping[Series, float]  # rates the policy provisions for, per series
    quantiles: Mapping[Series, Mapping[float, float]]  # forecast peak per quantile used
    actions: tuple[Action, ...]  # guarded actions toward the target the fleet follows
    held_back: tuple[Held, ...]  # what guards, limits and approval held back
    approval: Approval  # the verdict on `plan`
    target: Plan | None  # the plan the actions move toward (None: nothing approved yet)
    ask_approval: bool = False  # `plan` is new and must be stored as pending
    # Per model, the factor on the forecast band the plan used (`Policy.band_scales`).
    band_scales: Mapping[str, float] = field(default_factory=dict)
    # Drains make before break held, released by the fast check once replacements serve.
    waiting: WaitingDrains = field(default_factory=WaitingDrains)
