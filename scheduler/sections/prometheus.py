"""Configuration of the Prometheus load signal (`adapters.prometheus.PrometheusSource`).

`PrometheusConfig` is meant to be mounted as the `[prometheus]` table of the config
file. Two queries: `query` gives the request rate per (model, region); `freshness_query`
gives, for the same series, the time of the newest raw sample, so a series whose
exporter stopped (or whose scrapes fail) reads as missing long before the rate
window empties. See the module docstring of `adapters.prometheus`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_QUERY = "sum by (model, region) (rate(vllm:request_success_total[5m]))"
DEFAULT_PEAK_QUERY = (
    "max by (model, region) (max_over_time(sum by (model, region)"
    " (rate(vllm:request_success_total[1m]))[5m:1m]))"
)
DEFAULT_QUEUE_QUERY = "sum by (model, region) (vllm:num_requests_waiting)"
DEFAULT_FRESHNESS_QUERY = "max by (model, region) (timestamp(vllm:request_success_total))"


class PrometheusConfig(BaseModel):
    """Where the request rate comes from and when a reading is too old to trust."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = "http://127.0.0.1:9090"  # Prometheus base URL; userinfo becomes basic auth
    query: str = Field(default=DEFAULT_QUERY, min_length=1)  # PromQL: rps per (model, region)
    freshness_query: str = DEFAULT_FRESHNESS_QUERY  # PromQL: newest sample time; "" to skip
    peak_query: str = DEFAULT_PEAK_QUERY  # PromQL: highest 1-min rate in the tick; "" to skip
    queue_query: str = DEFAULT_QUEUE_QUERY  # PromQL: requests queued at the servers; "" to skip
    model_label: str = Field(default="model", min_length=1)  # label holding the model name
    region_label: str = Field(default="region", min_length=1)  # label holding the source region
    max_staleness_s: float = Field(default=120.0, gt=0)  # older samples read as missing (NaN)
    timeout_s: float = Field(default=10.0, gt=0, le=300)  # per attempt; also sent to Prometheus
    retries: int = Field(default=2, ge=0, le=10)  # attempts after the first, on 5xx/network errors
    backoff_s: float = Field(default=0.5, ge=0, le=60)  # first retry delay, doubles each time

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        # Checked here so a typo fails the config load, not every tick.
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")
