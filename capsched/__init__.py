"""The composition root: the `capsched` command line and the daemon's wiring.

This is the one package that imports everything: it picks the concrete cloud adapter
(AWS, GCP or the simulated cloud), the load signal (Prometheus or a trace replay), the
drainer, the subcommands of `simulations` and `tui`, and hands them to the scheduler
core through its ports (`scheduler.ports.provider`, `scheduler.ports.metrics`). The layers below it
never import it, nor one another upwards (docs/architecture.md; `lint-imports` in CI).
"""
