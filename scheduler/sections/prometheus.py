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
# Token rates over the same window as the request rate: their ratio to it is the mean
# prompt / output tokens per request (docs/profiles.md "Request size").
DEFAULT_PROMPT_TOKENS_QUERY = "sum by (model, region) (rate(vllm:prompt_tokens_total[5m]))"
DEFAULT_OUTPUT_TOKENS_QUERY = "sum by (model, region) (rate(vllm:generation_tokens_total[5m]))"
# The prompt-length histogram over the same window, one series per `le`: the share of the
# requests in each prompt range (docs/forecasting.md "Request sizes"), and the time of its
# newest sample, so a histogram whose exporter went away gives no mix.
DEFAULT_PROMPT_HISTOGRAM_QUERY = (
    "sum by (model, region, le) (rate(vllm:request_prompt_tokens_bucket[5m]))"
)
DEFAULT_PROMPT_HISTOGRAM_FRESHNESS_QUERY = (
    "max by (model, region) (timestamp(vllm:request_prompt_tokens_count))"
)


class PrometheusConfig(BaseModel):
    """Where the request rate comes from and when a reading is too old to trust."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = "http://127.0.0.1:9090"  # Prometheus base URL; userinfo becomes basic auth
    query: str = Field(default=DEFAULT_QUERY, min_length=1)  # PromQL: rps per (model, region)
    freshness_query: str = DEFAULT_FRESHNESS_QUERY  # PromQL: newest sample time; "" to skip
    peak_query: str = DEFAULT_PEAK_QUERY  # PromQL: highest 1-min rate in the tick; "" to skip
    queue_query: str = DEFAULT_QUEUE_QUERY  # PromQL: requests queued at the servers; "" to skip
    # PromQL: prompt / generated tokens per second per (model, region), over the window of
    # `query`; mean tokens per request = token rate / request rate. "" to skip (both are
    # needed; without them every request counts as the reference request).
    prompt_tokens_query: str = DEFAULT_PROMPT_TOKENS_QUERY
    output_tokens_query: str = DEFAULT_OUTPUT_TOKENS_QUERY
    # PromQL: cumulative rate per (model, region, le) of a prompt-length histogram, over
    # the window of `query`: the requests' split by prompt length (size buckets). Needs the
    # token queries (a bucket's output size is the mean's). "" to skip: no buckets.
    prompt_histogram_query: str = DEFAULT_PROMPT_HISTOGRAM_QUERY
    # PromQL: newest sample time of the histogram per (model, region); older than
    # `max_staleness_s`, or absent, gives no buckets for the series. "" to skip the check.
    prompt_histogram_freshness_query: str = DEFAULT_PROMPT_HISTOGRAM_FRESHNESS_QUERY
    model_label: str = Field(default="model", min_length=1)  # label holding the model name
    region_label: str = Field(default="region", min_length=1)  # label holding the source region
    max_staleness_s: float = Field(default=120.0, gt=0)  # older samples read as missing (NaN)
    timeout_s: float = Field(default=10.0, gt=0, le=300)  # per attempt; also sent to Prometheus
    retries: int = Field(default=2, ge=0, le=10)  # attempts after the first, on 5xx/network errors
    backoff_s: float = Field(default=0.5, ge=0, le=60)  # first retry delay, doubles each time
    # Seconds of `query` history a daemon started on an empty state store learns its
    # forecast from (range queries at the tick interval; a week and a day by default, the
    # weekly season once); 0: start cold.
    history_s: float = Field(default=8 * 86400.0, ge=0, le=90 * 86400.0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        # Checked here so a typo fails the config load, not every tick.
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")
