"""Typed sections of the config file that configure an edge of the system.

`[clouds.aws]` (`scheduler.sections.aws`), `[clouds.gcp]` (`.gcp`), `[drain]` (`.drain`),
`[health]` (`.health`) and `[metrics.prometheus]` (`.prometheus`) are pydantic models,
part of the one schema `scheduler.config.Config` validates, so `capsched validate-config`
names the file, the key and the reason for every section alike. The adapters read their
section from the validated config; the schema lives here, with the rest of the config,
so that the core never imports an adapter package to know its own configuration.
"""
