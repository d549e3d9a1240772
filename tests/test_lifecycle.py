"""The node lifecycle table: legal moves only, "observed gone" from every live state."""

from __future__ import annotations

import itertools

import pytest

from scheduler.domain import NodeState as S
from scheduler.domain.lifecycle import (
    LIVE,
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    check_transition,
)


@pytest.mark.parametrize("state", sorted(LIVE))
def test_observed_gone_is_allowed_from_every_live_state(state: S) -> None:
    check_transition(state, S.GONE)


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_terminal_states_have_no_way_out(state: S) -> None:
    for new in S:
        with pytest.raises(IllegalTransition):
            check_transition(state, new)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (S.READY, S.BOOTING),  # a serving node does not boot again
        (S.TERMINATING, S.READY),  # termination is final
        (S.INTERRUPTED, S.READY),  # a reclaimed node does not come back
        (S.REQUESTED, S.DRAINING),  # nothing to drain before it serves
        (S.BOOTING, S.DRAINING),
        (S.GONE, S.READY),
    ],
)
def test_illegal_moves_are_rejected(old: S, new: S) -> None:
    with pytest.raises(IllegalTransition):
        check_transition(old, new)


def test_the_happy_path_is_legal() -> None:
    path = [S.REQUESTED, S.BOOTING, S.READY, S.DRAINING, S.TERMINATING, S.GONE]
    for old, new in itertools.pairwise(path):
        check_transition(old, new)


def test_every_state_has_a_row() -> None:
    assert set(TRANSITIONS) == set(S)
