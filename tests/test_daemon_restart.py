"""A restarted demo continues: the embedded default daemon keeps its simulated cloud in
`capsched.sim` next to `capsched.db`, so a restart picks up its nodes and its simulated
clock where it stopped, instead of going back to the trace's start with a fleet the
database remembers and the cloud has forgotten (issue 16)."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from daemon_proc import start_daemon

from scheduler.config import DEFAULT_CONFIG_PATH
from scheduler.domain import NodeState
from scheduler.loop.store import StateStore

SERVING = {NodeState.REQUESTED.value, NodeState.BOOTING.value, NodeState.READY.value}


def embedded_default(tmp_path: Path) -> Path:
    """The embedded default as a file: only the port (any free one) and the replay speed
    (ticks 0.5 s apart) differ; state, token and simulated cloud go to the working folder."""
    text = DEFAULT_CONFIG_PATH.read_text()
    for old, new in (("api_port = 9464", "api_port = 0"), ("speedup = 60.0", "speedup = 600.0")):
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "capsched.toml"
    path.write_text(text)
    return path


def run_ticks(config: Path, cwd: Path, n: int) -> list[dict[str, object]]:
    """Start the daemon, let it tick `n` times, SIGTERM it; its tick log records."""
    ticks: list[dict[str, object]] = []
    with start_daemon(config, cwd, args=["--log-format", "json"]) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            doc = json.loads(line)
            if doc.get("event") == "tick":
                ticks.append(doc)
                if len(ticks) == n:
                    break
        proc.send_signal(signal.SIGTERM)
        proc.stderr.read()
        try:
            assert proc.wait(timeout=60) == 0
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert len(ticks) == n
    return ticks


def test_a_restarted_demo_continues_its_clock_and_its_fleet(tmp_path: Path) -> None:
    config = embedded_default(tmp_path)
    first = run_ticks(config, tmp_path, 4)
    assert (tmp_path / "capsched.sim").exists()
    store = StateStore(tmp_path / "capsched.db")
    kept = {n.node_id for n in store.live_nodes() if n.state.value in SERVING}
    events_before = len(store.events())
    store.close()
    assert kept

    second = run_ticks(config, tmp_path, 2)
    stopped_at = float(first[-1]["now_s"])  # type: ignore[arg-type]
    resumed_at = float(second[0]["now_s"])  # type: ignore[arg-type]
    assert float(first[0]["now_s"]) < stopped_at <= resumed_at  # type: ignore[arg-type]
    assert resumed_at - stopped_at < 600  # from where it stopped, not the trace's start
    assert int(second[0]["nodes"]) >= len(kept)  # type: ignore[call-overload]

    store = StateStore(tmp_path / "capsched.db")
    after = store.events()[events_before:]
    times = [row[0] for row in store.db.execute("select at_s from demand order by rowid")]
    store.close()
    # The cloud still has the nodes the database remembers: none vanished on restart.
    vanished = [e for e in after if e["old"] in SERVING and e["new"] == NodeState.GONE.value]
    assert vanished == []
    assert times == sorted(times)  # one demand history, forward in time
