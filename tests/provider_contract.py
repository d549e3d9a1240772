"""The provider contract (`scheduler.ports.provider`) as reusable checks, for every cloud.

A provider under test comes wrapped in a `Subject` that says how to make a launch
the cloud accepts, one it refuses, how to count what the cloud really created (its
own ground truth, not the provider's listing) and how to let the cloud move on
between two listings. Each `check_*` function takes a fresh `Subject`;
`test_provider_contract.py` runs every check against every provider (the simulated
cloud, AWS on moto; GCP on its local endpoint once it exists).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from scheduler.ports.provider import (
    Instance,
    InstanceState,
    InsufficientCapacity,
    LaunchRequest,
    NotFound,
    Provider,
    ProviderError,
    QuotaExceeded,
    Transient,
)

TYPED = (InsufficientCapacity, QuotaExceeded, NotFound, Transient)
POLLS = 5  # listings tried before "eventually" is judged to have failed


async def _no_wait() -> None:
    return None


@dataclass
class Subject:
    """A provider and the handles the contract checks need on its cloud."""

    name: str  # shown in test ids
    provider: Provider  # the provider under test
    request: Callable[[str], LaunchRequest]  # a launch the cloud accepts, for a node id
    refused: Callable[[str], LaunchRequest]  # a launch the cloud refuses, for a node id
    created: Callable[[], Awaitable[int]]  # instances the cloud itself made so far (ground truth)
    fail_next_launch: Callable[[], None]  # the next launch raises Transient once
    settle: Callable[[], Awaitable[None]] = _no_wait  # let the cloud move on between listings


async def _eventually(subject: Subject, ok: Callable[[list[Instance]], bool]) -> list[Instance]:
    listed: list[Instance] = []
    for _ in range(POLLS):
        listed = await subject.provider.list_instances()
        if ok(listed):
            return listed
        await subject.settle()
    pytest.fail(f"{subject.name}: listing never converged: {listed}")


async def check_launch_is_idempotent_per_node_id(subject: Subject) -> None:
    """Two launches with one node id make one instance and return it both times."""
    before = await subject.created()
    request = subject.request("contract-idem")
    first = await subject.provider.launch(request)
    second = await subject.provider.launch(request)
    assert first.node_id == second.node_id == "contract-idem"
    assert first.cloud_instance_id == second.cloud_instance_id
    assert first.pool == request.pool and first.model == request.model
    assert await subject.created() - before == 1


async def check_failed_then_retried_launch_makes_one_instance(subject: Subject) -> None:
    """A launch that failed transiently (it may or may not have happened) is retried safely."""
    before = await subject.created()
    request = subject.request("contract-retry")
    subject.fail_next_launch()
    with pytest.raises(Transient):
        await subject.provider.launch(request)
    inst = await subject.provider.launch(request)
    again = await subject.provider.launch(request)
    assert inst.cloud_instance_id == again.cloud_instance_id
    assert await subject.created() - before == 1


async def check_list_is_eventually_consistent(subject: Subject) -> None:
    """A launched node gets listed; after terminate it leaves the listing or is shown ending."""
    request = subject.request("contract-list")
    inst = await subject.provider.launch(request)
    listed = await _eventually(subject, lambda xs: any(i.node_id == inst.node_id for i in xs))
    [mine] = [i for i in listed if i.node_id == inst.node_id]
    assert mine.cloud_instance_id == inst.cloud_instance_id
    assert (mine.pool, mine.model) == (request.pool, request.model)
    assert mine.state in (InstanceState.PENDING, InstanceState.RUNNING)
    await subject.provider.terminate(inst.node_id)
    ending = (InstanceState.TERMINATING, InstanceState.TERMINATED)
    await _eventually(
        subject, lambda xs: all(i.state in ending for i in xs if i.node_id == inst.node_id)
    )


async def check_terminate_of_a_gone_node_is_not_an_error(subject: Subject) -> None:
    """Terminating twice, or a node the cloud never had, succeeds quietly."""
    await subject.provider.terminate("contract-never-launched")
    inst = await subject.provider.launch(subject.request("contract-term"))
    await subject.provider.terminate(inst.node_id)
    await subject.provider.terminate(inst.node_id)


async def check_errors_come_out_typed(subject: Subject) -> None:
    """A refused launch raises one of the typed errors, carries its pool, creates nothing."""
    before = await subject.created()
    request = subject.refused("contract-refused")
    with pytest.raises(ProviderError) as exc:
        await subject.provider.launch(request)
    assert isinstance(exc.value, TYPED), type(exc.value)
    assert exc.value.pool == request.pool
    assert await subject.created() == before
    listed = await subject.provider.list_instances()
    assert all(i.node_id != "contract-refused" for i in listed)


async def check_running_instance_has_an_address(subject: Subject) -> None:
    """A running instance is listed with the address the HTTP drainer reaches it at."""
    inst = await subject.provider.launch(subject.request("contract-address"))
    listed = await _eventually(
        subject,
        lambda xs: any(i.node_id == inst.node_id and i.state is InstanceState.RUNNING for i in xs),
    )
    [mine] = [i for i in listed if i.node_id == inst.node_id]
    assert isinstance(mine.address, str) and mine.address.strip() == mine.address != ""
    await subject.provider.terminate(inst.node_id)


CHECKS: tuple[Callable[[Subject], Awaitable[None]], ...] = (
    check_launch_is_idempotent_per_node_id,
    check_failed_then_retried_launch_makes_one_instance,
    check_list_is_eventually_consistent,
    check_terminate_of_a_gone_node_is_not_an_error,
    check_errors_come_out_typed,
    check_running_instance_has_an_address,
)
