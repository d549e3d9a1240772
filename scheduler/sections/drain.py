"""Configuration of the HTTP drainer (`adapters.http_drain.HttpDrainer`).

Kept apart from the drainer so loading a config file does not import the HTTP client;
`scheduler.config` mounts it as the `[drain]` table (with a `kind` key that picks it).
"""

from __future__ import annotations

import string
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

TEMPLATE_FIELDS = frozenset({"node_id", "host", "model", "cloud_instance_id"})


def check_template(v: str) -> str:
    """`v` if it is empty or an http(s) URL template using only `TEMPLATE_FIELDS`."""
    if not v:
        return v
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(v) if name is not None}
    except ValueError as exc:
        raise ValueError(f"bad template: {exc}") from None
    unknown = names - TEMPLATE_FIELDS
    if unknown:
        raise ValueError(
            f"unknown placeholder(s) {sorted(unknown)}; allowed: {sorted(TEMPLATE_FIELDS)}"
        )
    if not v.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return v


class HttpDrainConfig(BaseModel):
    """How to take a node out of rotation and how to count what it still serves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hook_method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"  # hook HTTP method
    hook_url: str = ""  # deregistration URL template; "" means no hook (no-op)
    metrics_url: str = "http://{host}:8000/metrics"  # node's Prometheus endpoint template
    in_flight_metrics: tuple[str, ...] = Field(
        default=("vllm:num_requests_running", "vllm:num_requests_waiting"), min_length=1
    )  # gauges summed (over all label sets) into the in-flight count
    timeout_s: float = Field(default=5.0, gt=0, le=120)  # per HTTP attempt
    hook_retries: int = Field(default=2, ge=0, le=10)  # hook attempts after the first
    backoff_s: float = Field(default=0.5, ge=0, le=60)  # first hook retry delay, doubles

    @field_validator("hook_url", "metrics_url")
    @classmethod
    def _templates(cls, v: str) -> str:
        # Checked at load so a typo in a placeholder fails the config, not a drain.
        return check_template(v)
