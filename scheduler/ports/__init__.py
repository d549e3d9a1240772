"""The scheduler's ports: the interfaces through which the core reaches the outside world.

- `scheduler.ports.provider`: a cloud (`Provider`: offerings, launch, list, terminate,
  interruption notices) and its typed errors;
- `scheduler.ports.metrics`: the load signal (`MetricsSource`, `DemandSample`);
- `scheduler.ports.drain`: how traffic leaves a node (`Drainer`).

The core depends only on these; the concrete adapters in `adapters/` implement them and
the composition root (`capsched.service`) wires one of each in. Imports point one way:
`adapters` imports `scheduler`, never the reverse (docs/architecture.md).
"""
