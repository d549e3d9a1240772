"""Boot time of a node: the one place that says how long a node of a model on an
instance type takes from launch to serving.

    boot = instance start (per cloud and type) + image pull
           + weight load (model size / load bandwidth) + engine start

The figures are in `scheduler/data/boot.json` (docs/profiles.md, "Boot time", gives
each one's source, and says which are assumptions). `planning.default_boot_time_s` is
only the fallback, for a model whose size or an instance type whose network bandwidth
the data does not know. The planner's churn and spot-risk terms, the policy's lead
window and return-to-pool estimate, and the simulated cloud's boot delay all call
`node_boot_s`.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler.config import Config
from scheduler.domain import InstanceType, Model
from scheduler.fleet.profiles import load_models

DEFAULT_BOOT_PATH = Path(__file__).parents[1] / "data" / "boot.json"


class BootDataError(ValueError):
    """A boot-time data file that is malformed."""


@dataclass(frozen=True)
class BootFigures:
    """The parts of a node's boot time (see the module doc)."""

    # Seconds from the launch call to a booted host with its GPUs and container runtime,
    # per cloud, by the longest matching prefix of the instance type name ("" = default).
    instance_start_s: Mapping[str, Mapping[str, float]]
    image_pull_s: float  # pull and unpack the model server's image
    engine_start_s: float  # model server start after the weights are read (compile, graphs)
    bytes_per_param: float  # bytes of one weight as served (bf16: 2)
    load_share_of_network: float  # share of the network bandwidth a weight download gets
    load_cap_gb_per_s: float  # the fastest weight download, GB/s, whatever the network
    network_gbps: Mapping[str, float]  # "cloud:type" -> network bandwidth, Gbit/s

    def start_s(self, itype: InstanceType) -> float | None:
        """Instance start of `itype` (None when its cloud has no figure)."""
        table = self.instance_start_s.get(str(itype.cloud))
        if not table:
            return None
        best = max((p for p in table if itype.name.startswith(p)), key=len, default=None)
        return None if best is None else table[best]

    def load_gb_per_s(self, itype: InstanceType) -> float | None:
        """Weight download rate of `itype`, GB/s (None when its network is unknown)."""
        gbps = self.network_gbps.get(f"{itype.cloud}:{itype.name}")
        if gbps is None or gbps <= 0:
            return None
        return min(gbps / 8.0 * self.load_share_of_network, self.load_cap_gb_per_s)


def _num(doc: Mapping[str, Any], key: str, origin: str) -> float:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BootDataError(f"{origin}: {key}: expected a finite number, got {value!r}")
    if value < 0:
        raise BootDataError(f"{origin}: {key}: must be >= 0, got {value!r}")
    return float(value)


def _table(value: Any, what: str) -> dict[str, float]:
    if not isinstance(value, dict):
        raise BootDataError(f"{what}: expected a table")
    return {str(k): _num(value, k, what) for k in value}


def parse_boot(doc: Mapping[str, Any], origin: str = "boot") -> BootFigures:
    """The figures of a decoded boot-time document; `origin` names it in errors."""
    starts = doc.get("instance_start_s")
    if not isinstance(starts, dict):
        raise BootDataError(f"{origin}: instance_start_s: expected a table per cloud")
    figures = BootFigures(
        instance_start_s={
            str(c): _table(t, f"{origin}: instance_start_s.{c}") for c, t in starts.items()
        },
        image_pull_s=_num(doc, "image_pull_s", origin),
        engine_start_s=_num(doc, "engine_start_s", origin),
        bytes_per_param=_num(doc, "bytes_per_param", origin),
        load_share_of_network=_num(doc, "load_share_of_network", origin),
        load_cap_gb_per_s=_num(doc, "load_cap_gb_per_s", origin),
        network_gbps=_table(doc.get("network_gbps"), f"{origin}: network_gbps"),
    )
    if figures.load_cap_gb_per_s <= 0 or figures.load_share_of_network <= 0:
        raise BootDataError(f"{origin}: load_cap_gb_per_s and load_share_of_network must be > 0")
    return figures


@functools.cache
def _default() -> BootFigures:
    with DEFAULT_BOOT_PATH.open(encoding="utf-8") as f:
        return parse_boot(json.load(f), str(DEFAULT_BOOT_PATH))


def load_boot(path: Path | None = None) -> BootFigures:
    """The boot-time figures of `path` (default: the bundled file)."""
    if path is None:
        return _default()
    with path.open(encoding="utf-8") as f:
        return parse_boot(json.load(f), str(path))


def node_boot_s(
    config: Config,
    model: str,
    itype: InstanceType,
    figures: BootFigures | None = None,
    models: Sequence[Model] | None = None,
) -> float:
    """Seconds from launch to serving for a node of the configured `model` on `itype`:
    instance start + image pull + weights (params x bytes per param) / load rate +
    engine start, rounded to whole seconds. `planning.default_boot_time_s` where the
    data lacks the model's size (`models`: default the bundled profiles' models), the
    type's network or its cloud's instance start; the model's `boot_time_s` where the
    config sets one. KeyError for a model the config does not have."""
    section = config.model(model)
    if section.boot_time_s is not None:
        return section.boot_time_s
    fig = figures if figures is not None else load_boot()
    sizes = {m.name: m.params_b for m in (models if models is not None else load_models())}
    params_b = sizes.get(section.profile or section.name)
    start = fig.start_s(itype)
    rate = fig.load_gb_per_s(itype)
    if params_b is None or start is None or rate is None:
        return config.planning.default_boot_time_s
    weights_gb = params_b * fig.bytes_per_param
    # Whole seconds: the figures are estimates, and replay times stay on whole seconds.
    return float(round(start + fig.image_pull_s + weights_gb / rate + fig.engine_start_s))
