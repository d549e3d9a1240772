"""The loop: observe, decide, act. `reconciler` runs one tick and returns a typed report;
`actuator` carries out actions through a journal that survives a crash; `store` is the
SQLite state (the only module that knows the schema); `fast_loop` checks load between
ticks; `factory` wires a reconciler from its parts; `state_lock` keeps one daemon per
database; `logs` formats structured log lines.
"""
