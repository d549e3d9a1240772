"""The policies capsched is compared with, each faithful to what it copies.

* `static-peak` (`static_peak.StaticPeak`): on-demand, sized once for the trace's peak.
* `reactive` (`reactive.Reactive`): Ray Serve's target-utilisation autoscaler, on-demand.
* `spothedge` (`spothedge.SpotHedge`): SkyServe's SpotHedge, spot with on-demand fallback.
* `oracle` (`oracle.Oracle`): the offline optimum with perfect foresight; a cost lower bound.

Each implements `scheduler.decide.observation.Policy`; state is explicit and moves only with
`Observation.now_s`. Shared pieces are in `common`.
"""

from simulations.baselines.common import Foresight
from simulations.baselines.oracle import Oracle
from simulations.baselines.reactive import Reactive
from simulations.baselines.spothedge import SpotHedge
from simulations.baselines.static_peak import StaticPeak

__all__ = ["Foresight", "Oracle", "Reactive", "SpotHedge", "StaticPeak"]
