"""The long-running service around the loop: the asyncio `daemon` (ticks, signals,
reload, watchdog), `telemetry` (Prometheus metrics), the control `api` and its client
(`api_client`), and the `control` interface the API drives.
"""
