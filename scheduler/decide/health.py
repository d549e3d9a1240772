"""Node health: ready means serving, sick nodes are replaced (issue 21, docs/health.md).

A `HealthProbe` (the HTTP one in `adapters.http_health`, the simulated cloud's in
`adapters.sim`) answers, for one node, whether its model server serves. The reconciler
asks it for its booting, ready and unhealthy nodes every `[health].interval_s` (on each
tick, and between ticks from the daemon and the replay engine), keeps each node's
streak of passes and fails in a `HealthMonitor`, and applies what `judge` decides:

* booting -> ready after `success_threshold` passes in a row;
* booting -> failed when the node is not ready by its boot deadline (boot time plus
  `boot_margin_s`, counted from when it started booting): terminated, replaced, and a
  strike on its pool;
* ready -> unhealthy after `failure_threshold` fails in a row: it no longer counts as
  capacity, so the plan's diff launches its replacement; once the model's ready
  capacity covers the plan again it is drained and terminated (make before break), and
  its pool gets a strike;
* unhealthy -> ready after `success_threshold` passes in a row before it was let go.

At most `max_replacements` nodes turn unhealthy per `replacement_window_s`, and none
while more than `max_unhealthy_fraction` of the ready nodes fail at once (a broken
endpoint, not sick nodes): the rest stay in service, held as `HoldKind.REPAIR_LIMIT`.
A pool with `quarantine_strikes` strikes within `quarantine_window_s` is quarantined
through the reconciler's pool cooldown (scheduler.decide.cooldown).

`judge` is pure: the nodes, the streaks and the settings in, a `HealthVerdict` out.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from scheduler.decide.guards import Held
from scheduler.domain import HoldKind, Node, NodeState, Pool

if TYPE_CHECKING:
    from scheduler.config import HealthSection

# States whose nodes are checked: booting ones wait for a pass, ready ones may fail,
# unhealthy ones may recover.
CHECKED: frozenset[NodeState] = frozenset({NodeState.BOOTING, NodeState.READY, NodeState.UNHEALTHY})


class HealthProbe(Protocol):
    """Asks one node's model server whether it serves."""

    async def check(self, node: Node) -> bool | None:
        """True when the node answered as healthy, False when it failed the check (no
        answer, wrong status, timeout), None when it cannot be checked yet (no address
        known): neither a pass nor a fail."""
        ...


@dataclass(slots=True)
class Streak:
    """One node's recent checks."""

    passes: int = 0  # passes in a row (0 after a fail)
    fails: int = 0  # fails in a row (0 after a pass)
    checked_at_s: float = -math.inf  # time of the last check that answered


@dataclass(frozen=True, slots=True)
class HealthVerdict:
    """What the streaks say about the checked nodes, as transitions to make."""

    ready: tuple[Node, ...] = ()  # booting nodes that passed: booting -> ready
    boot_failed: tuple[Node, ...] = ()  # booting past their deadline: -> failed
    unhealthy: tuple[Node, ...] = ()  # ready nodes that keep failing: -> unhealthy
    recovered: tuple[Node, ...] = ()  # unhealthy nodes that pass again: -> ready
    held: tuple[Held, ...] = ()  # sick nodes kept in service by the replacement limit

    @property
    def wakes(self) -> bool:
        """Whether the fleet lost capacity: a tick should replace it now."""
        return bool(self.boot_failed or self.unhealthy)


@dataclass
class HealthMonitor:
    """The reconciler's health state: streaks per node, replacements in the window, and
    counts per pool since start (telemetry reads them)."""

    streaks: dict[str, Streak] = field(default_factory=dict)  # by node id
    replaced_at_s: list[float] = field(default_factory=list)  # ready -> unhealthy times
    boot_failures: Counter[Pool] = field(default_factory=Counter)  # since start, per pool
    replacements: Counter[Pool] = field(default_factory=Counter)  # since start, per pool
    held_now: tuple[Held, ...] = ()  # the last verdict's holds (the tick reports them)

    def due(self, node_id: str, now_s: float, interval_s: float) -> bool:
        """Whether `node_id` is due a check at `now_s`."""
        streak = self.streaks.get(node_id)
        return streak is None or now_s - streak.checked_at_s >= interval_s - 1e-9

    def record(self, node_id: str, healthy: bool, now_s: float) -> None:
        """Count one answered check."""
        s = self.streaks.setdefault(node_id, Streak())
        if healthy:
            s.passes, s.fails = s.passes + 1, 0
        else:
            s.passes, s.fails = 0, s.fails + 1
        s.checked_at_s = now_s

    def forget_except(self, live: Iterable[str]) -> None:
        """Drop the streaks of nodes no longer checked."""
        keep = set(live)
        self.streaks = {k: v for k, v in self.streaks.items() if k in keep}

    def recent_replacements(self, now_s: float, window_s: float) -> int:
        """Nodes declared unhealthy within the window before `now_s`."""
        self.replaced_at_s = [t for t in self.replaced_at_s if t > now_s - window_s]
        return len(self.replaced_at_s)


def boot_deadline_s(node: Node, boot_s: float, margin_s: float) -> float:
    """When a booting `node` must be ready: boot time plus margin after it started
    booting (an adopted node's clock starts at its adoption)."""
    since = node.state_since_s if node.state_since_s is not None else node.launched_at_s
    return (since if since is not None else -math.inf) + boot_s + margin_s


def judge(
    nodes: Sequence[Node],
    streaks: dict[str, Streak],
    settings: HealthSection,
    now_s: float,
    *,
    boot_s: Callable[[Node], float],
    recent_replacements: int,
) -> HealthVerdict:
    """The transitions the streaks call for (pure).

    `boot_s(node)` is the node's boot time; `recent_replacements` how many nodes turned
    unhealthy within the replacement window before now."""
    none = Streak()
    ready: list[Node] = []
    boot_failed: list[Node] = []
    failing: list[Node] = []
    recovered: list[Node] = []
    for node in sorted(nodes, key=lambda n: n.node_id):
        s = streaks.get(node.node_id, none)
        if node.state is NodeState.BOOTING:
            if s.passes >= settings.success_threshold:
                ready.append(node)
            elif now_s >= boot_deadline_s(node, boot_s(node), settings.boot_margin_s):
                boot_failed.append(node)
        elif node.state is NodeState.READY:
            if s.fails >= settings.failure_threshold:
                failing.append(node)
        elif node.state is NodeState.UNHEALTHY and s.passes >= settings.success_threshold:
            recovered.append(node)
    held: list[Held] = []
    unhealthy: list[Node] = []
    if failing:
        n_ready = sum(1 for n in nodes if n.state is NodeState.READY)
        tolerated = max(1, math.floor(settings.max_unhealthy_fraction * n_ready))
        room = max(0, settings.max_replacements - recent_replacements)
        if len(failing) > tolerated:
            held.append(
                Held(
                    HoldKind.REPAIR_LIMIT,
                    len(failing),
                    f"{len(failing)} of {n_ready} ready nodes fail their health checks at once"
                    f" (more than {settings.max_unhealthy_fraction:.0%}): none replaced, a"
                    " broken health endpoint is more likely than that many sick nodes",
                )
            )
        else:
            # Longest-failing first, so a flapping node does not crowd out a dead one.
            order = sorted(failing, key=lambda n: (-streaks[n.node_id].fails, n.node_id))
            unhealthy = order[:room]
            if len(failing) > room:
                kept = len(failing) - room
                held.append(
                    Held(
                        HoldKind.REPAIR_LIMIT,
                        kept,
                        f"{kept} sick nodes kept in service: {settings.max_replacements}"
                        f" replacements per {settings.replacement_window_s:.0f} s reached",
                    )
                )
    return HealthVerdict(
        tuple(ready), tuple(boot_failed), tuple(unhealthy), tuple(recovered), tuple(held)
    )


def unhealthy_drains(
    nodes: Sequence[Node],
    serving: Sequence[Node],
    wanted_rps: dict[str, float],
    capacity_of: Callable[[str, Pool], float],
    now_s: float,
    give_up_s: float,
) -> list[Node]:
    """Unhealthy nodes that may be drained now: their model's ready capacity covers what
    the plan wants ready (their replacements serve: make before break), or they have been
    unhealthy for `give_up_s` (the replacement never came; a sick node is not kept
    forever)."""
    ready: dict[str, float] = {}
    for n in serving:
        if n.state is NodeState.READY:
            ready[n.model] = ready.get(n.model, 0.0) + capacity_of(n.model, n.pool)
    out: list[Node] = []
    for node in sorted(nodes, key=lambda n: n.node_id):
        if node.state is not NodeState.UNHEALTHY:
            continue
        since = node.state_since_s if node.state_since_s is not None else now_s
        if ready.get(node.model, 0.0) >= wanted_rps.get(node.model, 0.0) - 1e-9 or (
            now_s - since >= give_up_s
        ):
            out.append(node)
    return out
