"""Shared test settings.

Property tests are derandomized by default so CI runs are repeatable: the same inputs on
every machine. Run `pytest --hypothesis-profile=explore` to search with fresh random
inputs (and commit any failure it finds as an explicit example or test).
"""

from hypothesis import settings

settings.register_profile("default", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("default")
