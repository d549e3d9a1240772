"""The actuator: carries out actions against a provider, journaled before and after.

Every action is written to the journal before its cloud call and closed after it, so
a crash between the two leaves a pending entry that recovery resolves by looking at
what the cloud lists (by our node id tag), never by guessing. Each action is handled
alone: one failure becomes a transition on that one node, never a failed batch.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from scheduler.domain import Node, NodeState, Pool
from scheduler.domain.actions import Action, Drain, Grounds, Launch, Terminate
from scheduler.domain.lifecycle import TERMINAL
from scheduler.loop.logs import event
from scheduler.loop.store import StateStore
from scheduler.ports.drain import Drainer
from scheduler.ports.provider import (
    Instance,
    InstanceState,
    InsufficientCapacity,
    LaunchRequest,
    Provider,
    ProviderError,
    QuotaExceeded,
    Transient,
)

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@dataclass
class ActResult:
    """What happened to a batch of actions."""

    done: list[Action] = field(default_factory=list)  # succeeded
    failed: list[tuple[Action, str]] = field(default_factory=list)  # with the error
    exhausted_pools: list[Pool] = field(default_factory=list)  # capacity/quota errors


class Actuator:
    """Executes launches, drains and terminations; retries transient errors with backoff."""

    def __init__(
        self,
        store: StateStore,
        provider: Provider,
        drainer: Drainer,
        *,
        retries: int = 3,
        backoff_s: float = 1.0,
        sleep: Sleep = asyncio.sleep,
        seed: int = 0,
    ) -> None:
        self.store = store
        self.provider = provider
        self.drainer = drainer
        self.retries = retries  # attempts after the first, for Transient errors only
        self.backoff_s = backoff_s  # first retry delay; doubles each time, with jitter
        self.sleep = sleep  # injected so simulations never wait for real
        self._rng = random.Random(seed)  # jitter, seeded for repeatable replays
        # A launch the cloud reports running at once is ready (no `[health]`), or booting
        # until its health check passes (set by the reconciler from its config).
        self.ready_when_running = True

    async def execute(self, actions: Sequence[Action], now_s: float) -> ActResult:
        """Carry out `actions` one by one; never raises for a single action's failure."""
        result = ActResult()
        for action in actions:
            try:
                if isinstance(action, Launch):
                    await self._launch(action, now_s)
                elif isinstance(action, Drain):
                    await self._drain(action, now_s)
                else:
                    await self._terminate(action, now_s)
                result.done.append(action)
            except (InsufficientCapacity, QuotaExceeded) as exc:
                result.failed.append((action, f"{type(exc).__name__}: {exc}"))
                if isinstance(action, Launch):
                    result.exhausted_pools.append(action.pool)
            except Exception as exc:  # one action's failure stays with that action
                log.exception(
                    "action_failed action=%s node_id=%s", type(action).__name__, action.node_id
                )
                result.failed.append((action, f"{type(exc).__name__}: {exc}"))
        return result

    async def _with_retries(self, call: Callable[[], Awaitable[object]]) -> object:
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return await call()
            except Transient:
                if attempt == self.retries:
                    raise
                await self.sleep(delay * (0.5 + self._rng.random()))
                delay *= 2
        raise AssertionError("unreachable")

    async def _launch(self, action: Launch, now_s: float) -> None:
        node = Node(
            action.node_id, action.model, action.pool, NodeState.REQUESTED, launched_at_s=now_s
        )
        with self.store.transaction():
            self.store.add_node(node, now_s, cause=action.reason)
            entry = self.store.journal_begin("launch", node.node_id, now_s, action.reason)
        request = LaunchRequest(node.node_id, node.model, node.pool)
        try:
            instance = await self._with_retries(lambda: self.provider.launch(request))
        except (InsufficientCapacity, QuotaExceeded) as exc:
            self.store.transition(node.node_id, NodeState.FAILED, now_s, f"launch refused: {exc}")
            self.store.journal_end(entry, "failed", now_s, f"{type(exc).__name__}: {exc}")
            raise
        except Transient as exc:
            # The launch may or may not exist: leave it requested, journal pending; the next
            # observation adopts it if the cloud lists it, or fails it after the grace time.
            log.warning("launch_uncertain node_id=%s error=%s", node.node_id, exc)
            raise
        assert isinstance(instance, Instance)
        running = instance.state is InstanceState.RUNNING
        state = NodeState.READY if running and self.ready_when_running else NodeState.BOOTING
        self.store.transition(
            node.node_id,
            state,
            now_s,
            "launch accepted",
            cloud_instance_id=instance.cloud_instance_id,
        )
        if instance.address:
            # Known at once on some clouds: health checks reach the node before the next
            # listing does.
            self.store.set_address(node.node_id, instance.address)
        self.store.journal_end(entry, "done", now_s, instance.cloud_instance_id)
        event(
            log,
            logging.INFO,
            "launched",
            node_id=node.node_id,
            model=node.model,
            pool=node.pool.key,
            reason=action.reason,
            **_grounds(action.grounds),
        )

    async def _drain(self, action: Drain, now_s: float) -> None:
        node = self.store.node(action.node_id)
        if node is None:
            raise KeyError(action.node_id)
        entry = self.store.journal_begin("drain", node.node_id, now_s, action.reason)
        self.store.transition(node.node_id, NodeState.DRAINING, now_s, action.reason)
        event(
            log,
            logging.INFO,
            "draining",
            node_id=node.node_id,
            model=node.model,
            pool=node.pool.key,
            reason=action.reason,
            **_grounds(action.grounds),
        )
        try:
            await self.drainer.begin(node)
        except Exception as exc:
            # The node drains all the same (the deadline bounds the wait); the entry is closed.
            self.store.journal_end(entry, "failed", now_s, f"{type(exc).__name__}: {exc}")
            raise
        self.store.journal_end(entry, "done", now_s, "out of rotation")

    async def _terminate(self, action: Terminate, now_s: float) -> None:
        node = self.store.node(action.node_id)
        if node is None:
            raise KeyError(action.node_id)
        entry = self.store.journal_begin("terminate", node.node_id, now_s, action.reason)
        try:
            await self._with_retries(lambda: self.provider.terminate(node.node_id))
        except ProviderError as exc:
            self.store.journal_end(entry, "failed", now_s, f"{type(exc).__name__}: {exc}")
            raise
        if node.state in TERMINAL:
            # An orphan: listed after we had failed or lost it. The instance is going;
            # the node's record stays where it is (terminal states have no way out).
            self.store.journal_end(entry, "done", now_s, f"terminate requested ({node.state})")
            return
        self.store.transition(node.node_id, NodeState.TERMINATING, now_s, action.reason)
        self.store.journal_end(entry, "done", now_s, "terminate requested")
        event(
            log,
            logging.INFO,
            "terminating",
            node_id=node.node_id,
            model=node.model,
            pool=node.pool.key,
            was=node.state.value,
            reason=action.reason,
            **_grounds(action.grounds),
        )


def _grounds(grounds: Grounds | None) -> dict[str, object]:
    """The plan's numbers behind an action, as log fields (none without a plan)."""
    if grounds is None:
        return {}
    return {
        "planned_rps": grounds.planned_rps,
        "capacity_rps": grounds.capacity_rps,
        "planned_capacity_rps": grounds.planned_capacity_rps,
        "pool_nodes": grounds.pool_nodes,
        "pool_planned": grounds.pool_planned,
    }
