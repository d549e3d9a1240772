"""Deciding, with no I/O: the observation a tick starts from (`observation`), the policy
that forecasts and plans (`policy`, `planner`), the diff between fleet and plan (`diff`),
the guards (`guards`), approval (`approval`), pool cooldown and quarantine (`cooldown`),
what capsched learned about pools (`obtainability`), node health verdicts (`health`),
the typed `Decision` (`decision`) and the config checks that need the catalog
(`config_check`).
"""
