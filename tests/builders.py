"""Builders with defaults for the records tests make again and again: a config, a node,
an offering, an observation. Each takes only what a test cares about."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scheduler.config import Config
from scheduler.decide.observation import Observation
from scheduler.domain import Cloud, Market, Node, NodeState, Offering, Pool
from scheduler.ports.metrics import DemandSample

MODEL = "llama-3.1-8b"  # the model the builders use unless told otherwise
REGION = "us-east"  # the source region the builders use unless told otherwise
POOL = Pool(Cloud.AWS, "us-east-1", "", "g6.xlarge", Market.SPOT)  # a default pool

# The smallest config: one model from one region; every other section at its defaults.
_MINIMAL: dict[str, Any] = {
    "models": [{"name": MODEL}],
    "regions": [{"name": REGION, "location": "us-east-1", "max_latency_ms": 40}],
}


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    # Dicts merge key by key (at any depth); anything else (lists too) replaces.
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            out[key] = _merge(old, value)
        else:
            out[key] = value
    return out


def config(**over: Any) -> Config:
    """A validated config: one model (`MODEL`) from one region (`REGION`, us-east-1,
    40 ms), with `over` merged in by section (`planning={"robustness_fraction": 0}`
    changes one key; `models=[...]` replaces the list)."""
    return Config.model_validate(_merge(_MINIMAL, over))


def node(
    node_id: str = "n1",
    *,
    model: str = MODEL,
    pool: Pool = POOL,
    state: NodeState = NodeState.READY,
    since_s: float = 0.0,
    launched_at_s: float | None = None,
) -> Node:
    """A node with a cloud instance id derived from its id, launched when its state began
    unless told otherwise."""
    return Node(
        node_id,
        model,
        pool,
        state,
        f"i-{node_id}",
        launched_at_s=since_s if launched_at_s is None else launched_at_s,
        state_since_s=since_s,
    )


def offering(
    pool: Pool = POOL,
    usd_per_hour: float = 1.0,
    *,
    available: bool = True,
    interruptions_per_hour: float = 0.0,
) -> Offering:
    """An offering of `pool` at `usd_per_hour`."""
    return Offering(pool, usd_per_hour, available, interruptions_per_hour)


def observation(
    now_s: float = 0.0,
    *,
    nodes: tuple[Node, ...] = (),
    offerings: tuple[Offering, ...] = (),
    rps: Mapping[tuple[str, str], float] | None = None,
    complete: bool = True,
) -> Observation:
    """An observation at `now_s`; demand defaults to 5 rps of `MODEL` from `REGION` (none
    when incomplete)."""
    if rps is None:
        rps = {(MODEL, REGION): 5.0} if complete else {}
    return Observation(now_s, DemandSample(now_s, dict(rps)), complete, nodes, offerings, ())
