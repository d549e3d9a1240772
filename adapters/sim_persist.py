"""The simulated cloud kept on disk, so it outlives the daemon process.

Crash tests kill the daemon with SIGKILL at random moments and restart it; the cloud
must remember what it was asked to do, as a real one does. Every call that changes
the cloud (launch, terminate, advancing time, handing out notices) writes its whole
state to a file atomically (write a temporary file, fsync, rename), so a kill leaves
either the state before the call or the state after it.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

from adapters.sim import SimCloud
from scheduler.domain import Offering
from scheduler.ports.provider import Instance, InterruptionNotice, LaunchRequest


class PersistentSimCloud:
    """A `SimCloud` saved to `path` after every change; implements `Provider`."""

    def __init__(self, path: Path | str, make: SimCloud | None = None) -> None:
        self.path = Path(path)
        if self.path.exists():
            with self.path.open("rb") as f:
                loaded = pickle.load(f)  # our own file, written by save()
            if not isinstance(loaded, SimCloud):
                raise ValueError(f"{self.path}: not a simulated cloud state file")
            self.cloud = loaded
        elif make is not None:
            self.cloud = make
            self.save()
        else:
            raise FileNotFoundError(self.path)

    def save(self) -> None:
        """Write the state atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump(self.cloud, f, protocol=pickle.HIGHEST_PROTOCOL)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @property
    def now_s(self) -> float:
        """The cloud's virtual time."""
        return self.cloud.now_s

    @property
    def unread_notices(self) -> int:
        """Interruption notices not yet fetched."""
        return self.cloud.unread_notices

    def advance_to(self, t_s: float) -> None:
        """Move virtual time forward and persist."""
        self.cloud.advance_to(t_s)
        self.save()

    async def launch(self, request: LaunchRequest) -> Instance:
        """Launch (idempotent per node id) and persist."""
        try:
            return await self.cloud.launch(request)
        finally:
            self.save()

    async def terminate(self, node_id: str) -> None:
        """Terminate and persist."""
        try:
            await self.cloud.terminate(node_id)
        finally:
            self.save()

    async def list_instances(self) -> list[Instance]:
        """Our instances."""
        return await self.cloud.list_instances()

    async def offerings(self) -> list[Offering]:
        """Current offerings."""
        return await self.cloud.offerings()

    async def interruption_notices(self) -> list[InterruptionNotice]:
        """Notices since the last call; handing them out changes the state, so persist."""
        notices = await self.cloud.interruption_notices()
        if notices:
            self.save()
        return notices
