"""Configuration of the HTTP health check (`adapters.http_health.HttpHealthProbe`).

Kept apart from the probe so loading a config file does not import the HTTP client;
`scheduler.config` mounts it, with the reconciler's thresholds, as the optional
`[health]` table. The URL template takes the same placeholders as `[drain]`'s.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from scheduler.sections.drain import check_template


class HttpHealthConfig(BaseModel):
    """Where a node's model server answers whether it serves, and what a yes looks like."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    url: str = "http://{host}:8000/health"  # health endpoint template (vLLM serves /health)
    expected_status: int = Field(default=200, ge=100, le=599)  # the status that means healthy
    timeout_s: float = Field(default=5.0, gt=0, le=120)  # per check; a slower answer fails it

    @field_validator("url")
    @classmethod
    def _template(cls, v: str) -> str:
        # Checked at load so a typo in a placeholder fails the config, not every check.
        if not v:
            raise ValueError("must not be empty")
        return check_template(v)
