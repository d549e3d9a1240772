"""`async with` support for objects that hold connections and have an async `close()`."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class AsyncResource:
    """Base for clients and providers: `async with x:` closes `x` on the way out."""

    async def close(self) -> None:
        """Release connections; subclasses override."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
