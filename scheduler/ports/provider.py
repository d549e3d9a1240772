"""The cloud provider interface: what the scheduler may ask of a cloud, and its contract.

Contract (every provider, fake or real, passes the same contract tests):

* **Eventually consistent.** `list_instances` may lag a `launch` or `terminate` by a
  few calls; callers reconcile by `node_id`, never by counting.
* **Idempotent per request id.** `launch` with a `node_id` that already has an instance
  returns that instance instead of creating a second one (clouds' own idempotency
  tokens are time-limited, so providers also look the tag up themselves).
* **Terminate is final and safe to repeat.** Terminating an instance that is already
  gone is not an error.
* **Typed errors.** Every failure is one of `InsufficientCapacity`, `QuotaExceeded`,
  `NotFound` or `Transient`; the scheduler reacts to the type, never to a message.
* **Ours only.** `list_instances` returns only instances tagged/labelled as capsched's.
* **Reachable.** A running instance carries its `address` (private IP preferred), which
  the HTTP drainer needs to reach the node's metrics.

Time never comes from the wall clock inside a provider used by the simulator: the
simulated cloud is advanced explicitly (`adapters.sim`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from scheduler.domain import Offering, Pool


class ProviderError(Exception):
    """A provider call failed; the subclass says how to react."""

    def __init__(self, message: str, *, pool: Pool | None = None) -> None:
        super().__init__(message)
        self.pool = pool  # the pool concerned, when the error is about one


class InsufficientCapacity(ProviderError):
    """The pool has no capacity now (stock-out, spot pool empty): try another pool."""


class QuotaExceeded(ProviderError):
    """An account limit blocks the launch: do not retry in this quota group soon."""


class NotFound(ProviderError):
    """The instance or resource does not exist."""


class Transient(ProviderError):
    """Throttling, timeouts, 5xx: retry with backoff."""


class InstanceState(enum.StrEnum):
    """What the cloud says about an instance."""

    PENDING = "pending"  # accepted, booting or loading the model; not serving yet
    RUNNING = "running"  # up and serving
    TERMINATING = "terminating"  # shutting down on our request
    TERMINATED = "terminated"  # gone on our request
    PREEMPTED = "preempted"  # reclaimed by the cloud (spot)


@dataclass(frozen=True, slots=True)
class LaunchRequest:
    """Ask for one node."""

    node_id: str  # our id; the idempotency token and the capsched-node tag
    model: str  # model the node will serve (tag)
    pool: Pool  # where to launch it


@dataclass(frozen=True, slots=True)
class Instance:
    """One of our instances as the cloud reports it."""

    node_id: str  # our id, read back from the instance's tag
    cloud_instance_id: str  # the cloud's id
    model: str  # model tag
    pool: Pool  # pool it runs in
    state: InstanceState  # current state
    launched_at_s: float  # when the cloud accepted the launch
    # Host or IP the node is reachable at (private IP preferred), for draining over HTTP;
    # None while the cloud has not assigned one.
    address: str | None = None


@dataclass(frozen=True, slots=True)
class InterruptionNotice:
    """The cloud will reclaim a spot instance at `deadline_s`."""

    node_id: str  # our id of the instance
    cloud_instance_id: str  # the cloud's id
    pool: Pool  # its pool
    deadline_s: float  # when it will be gone (AWS: 120 s after the notice, GCP: 30 s)


class Provider(Protocol):
    """A cloud (or the simulated one). All calls may raise `ProviderError` subclasses."""

    async def launch(self, request: LaunchRequest) -> Instance:
        """Start one instance; idempotent per `request.node_id`."""
        ...

    async def terminate(self, node_id: str) -> None:
        """Terminate our instance `node_id`; a no-op when it is already gone."""
        ...

    async def list_instances(self) -> list[Instance]:
        """Our instances that are not terminated (eventually consistent)."""
        ...

    async def offerings(self) -> list[Offering]:
        """Current prices and availability of the pools this provider serves."""
        ...

    async def interruption_notices(self) -> list[InterruptionNotice]:
        """Notices received since the last call (each is returned once)."""
        ...
