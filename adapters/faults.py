"""Fault injection in front of any provider: a seeded share of calls fails.

`FaultyProvider(inner, faults, seed=...)` implements `scheduler.ports.provider.Provider` by
forwarding every call to `inner`, except that each call of a method listed in
`faults` fails with probability `Fault.rate`, raising one of that fault's error types
(throttling and timeouts as `Transient`, stock-outs as `InsufficientCapacity`, account
limits as `QuotaExceeded`).

A failure strikes either before the call reaches the cloud (the request was refused)
or, for a share `lost_reply_share` of the failures, after it: the cloud acted but the
answer was lost, which a client sees as a timeout (`Transient`). The second kind is
what tests idempotency: a launch that timed out after the cloud accepted it must
never become two instances.

Each method draws from its own generator seeded by (`seed`, method), so whether the
n-th launch fails does not depend on how many listings happened before it, and a run
repeats exactly. Used by tests/test_faults.py in front of the simulated cloud; the
same wrapper goes in front of the AWS and GCP adapters (issue 6).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from scheduler.domain import Offering, Pool
from scheduler.ports.provider import (
    Instance,
    InterruptionNotice,
    LaunchRequest,
    Provider,
    ProviderError,
    Transient,
)

T = TypeVar("T")

METHODS = ("launch", "terminate", "list_instances", "offerings", "interruption_notices")


@dataclass(frozen=True, slots=True)
class Fault:
    """How one provider method fails."""

    rate: float  # share of calls that fail, 0 to 1
    errors: tuple[type[ProviderError], ...] = (Transient,)  # drawn uniformly per failure
    lost_reply_share: float = 0.0  # of the failures, share raised after the inner call succeeded

    def __post_init__(self) -> None:
        if not (0.0 <= self.rate <= 1.0 and 0.0 <= self.lost_reply_share <= 1.0):
            raise ValueError("rate and lost_reply_share must be between 0 and 1")
        if not self.errors:
            raise ValueError("a fault needs at least one error type")


class FaultyProvider:
    """A `Provider` that forwards to `inner` and fails a seeded share of calls."""

    def __init__(self, inner: Provider, faults: Mapping[str, Fault], *, seed: int = 0) -> None:
        unknown = set(faults) - set(METHODS)
        if unknown:
            raise ValueError(f"no provider method {sorted(unknown)}")
        self.inner = inner  # the provider calls go to
        self.faults = dict(faults)  # per method; change or clear it to change the weather
        self._rng = {m: random.Random(f"{seed}:{m}") for m in METHODS}
        self.calls: Counter[str] = Counter()  # calls per method, failed ones included
        self.injected: Counter[tuple[str, str]] = Counter()  # (method, error or "lost reply")
        # node id -> cloud instance ids the inner provider returned for it (a lost reply
        # included): more than one id for a node would be a duplicate launch.
        self.launched: dict[str, set[str]] = {}

    def _draw(self, method: str, pool: Pool | None) -> tuple[ProviderError | None, bool]:
        """The error this call fails with (None: it succeeds), and whether it strikes
        after the inner call (a lost reply)."""
        self.calls[method] += 1
        fault = self.faults.get(method)
        rng = self._rng[method]
        # Always draw the same number of values, so one method's stream stays aligned
        # whatever the rates are.
        hit, kind, after = rng.random(), rng.random(), rng.random()
        if fault is None or hit >= fault.rate:
            return None, False
        if after < fault.lost_reply_share:
            self.injected[method, "lost reply"] += 1
            return Transient(f"injected fault: {method} timed out after the call", pool=pool), True
        error_type = fault.errors[min(int(kind * len(fault.errors)), len(fault.errors) - 1)]
        self.injected[method, error_type.__name__] += 1
        return error_type(f"injected fault: {method} {error_type.__name__}", pool=pool), False

    async def _call(
        self, method: str, call: Callable[[], Awaitable[T]], pool: Pool | None = None
    ) -> T:
        error, after = self._draw(method, pool)
        if error is not None and not after:
            raise error
        result = await call()
        if error is not None:
            raise error
        return result

    async def launch(self, request: LaunchRequest) -> Instance:
        """Forward a launch; a lost reply happens after the cloud created the instance."""

        async def call() -> Instance:
            instance = await self.inner.launch(request)
            self.launched.setdefault(request.node_id, set()).add(instance.cloud_instance_id)
            return instance

        return await self._call("launch", call, request.pool)

    async def terminate(self, node_id: str) -> None:
        """Forward a termination."""
        await self._call("terminate", lambda: self.inner.terminate(node_id))

    async def list_instances(self) -> list[Instance]:
        """Forward a listing."""
        return await self._call("list_instances", self.inner.list_instances)

    async def offerings(self) -> list[Offering]:
        """Forward a price and availability read."""
        return await self._call("offerings", self.inner.offerings)

    async def interruption_notices(self) -> list[InterruptionNotice]:
        """Forward a notice read. A lost reply here loses the notices it carried (each
        is returned once), so leave `lost_reply_share` at 0 unless that is the test."""
        return await self._call("interruption_notices", self.inner.interruption_notices)
