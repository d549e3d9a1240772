"""Shared test settings.

Property tests are derandomized by default so CI runs are repeatable: the same inputs on
every machine. Run `pytest --hypothesis-profile=explore` to search with fresh random
inputs (and commit any failure it finds as an explicit example or test).

Every test carries one or more layer marks, given here by file (one place, so a new file
is `unit` until it is listed): `pytest -m unit` runs the pure tests in a minute or so;
`integration` starts a server, a subprocess or a `Daemon` (moto, the fake GCE endpoint,
Prometheus, aiohttp model servers, the control API); `replay` runs the simulator over a
trace; `chaos` kills daemons at random moments. CI runs them all.
"""

import pytest
from hypothesis import settings

_LAYERS: dict[str, frozenset[str]] = {
    "integration": frozenset(
        {
            "test_api.py",
            "test_api_demand.py",
            "test_api_drain.py",
            "test_api_fuzz.py",
            "test_api_hardening.py",
            "test_api_sizes.py",
            "test_aws.py",
            "test_aws_daemon.py",
            "test_aws_support.py",
            "test_booting.py",
            "test_catalog.py",
            "test_cloud_faults.py",
            "test_config.py",
            "test_config_fuzz.py",
            "test_daemon.py",
            "test_daemon_restart.py",
            "test_drain_daemon.py",
            "test_fast_loop.py",
            "test_first_run.py",
            "test_gcp.py",
            "test_gcp_support.py",
            "test_health_clouds.py",
            "test_health_daemon.py",
            "test_http_drain.py",
            "test_launch_limits.py",
            "test_logs.py",
            "test_profiles.py",
            "test_prometheus_errors.py",
            "test_prometheus_signals.py",
            "test_prometheus_sizes.py",
            "test_prometheus_source.py",
            "test_provider_contract.py",
            "test_quota_guard.py",
            "test_signals.py",
            "test_state_db.py",
            "test_sweep_ray.py",
            "test_tui.py",
            "test_token_profiles.py",
            "test_latency_profiles.py",
            "test_tui_snapshots.py",
            "test_unmet_records.py",
        }
    ),
    "replay": frozenset(
        {
            "test_budget.py",
            "test_commitments.py",
            "test_embedded_spot_series.py",
            "test_errors.py",
            "test_fast_loop.py",
            "test_first_run.py",
            "test_forecast.py",
            "test_launch_limits.py",
            "test_logs.py",
            "test_market_prices.py",
            "test_market_return.py",
            "test_quota_guard.py",
            "test_report.py",
            "test_savings_plans.py",
            "test_signals.py",
            "test_sim_faults.py",
            "test_sim_by_size.py",
            "test_sim_inputs.py",
            "test_sim_warmup_oracle.py",
            "test_sim_tokens.py",
            "test_sim_token_cost.py",
            "test_storm.py",
            "test_deferrable.py",
            "test_simulate.py",
            "test_spot_trace_loop.py",
            "test_sweep_ray.py",
            "test_trace_limits.py",
        }
    ),
    "chaos": frozenset({"test_chaos.py", "test_chaos_aws.py"}),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its file's layers (`unit` when the file is in none)."""
    for item in items:
        layers = [layer for layer, files in _LAYERS.items() if item.path.name in files]
        for layer in layers or ["unit"]:
            item.add_marker(getattr(pytest.mark, layer))


# No per-example deadline: speed is measured in benchmarks/, not in tests, and a loaded
# 2-core CI machine must not fail a property for being slow.
settings.register_profile("default", derandomize=True, deadline=None)
settings.register_profile("explore", derandomize=False, deadline=None)
settings.load_profile("default")
