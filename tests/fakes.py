"""Stand-ins for time that tests share: a clock they move by hand and a sleep that
returns at once (retries and backoff run without waiting)."""

from __future__ import annotations


class Clock:
    """Wall time as the test sets it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def no_sleep(_: float) -> None:
    """Backoff without the wait."""
    return None
