"""Which of a replay's requests are answered within the latency SLO, step by step.

`within_slo` scores one model's steps (one minute each) from what the replay recorded:
the requests that reach the model's queue (`arrivals`: the load of the regions with
capacity in reach), the capacity of that queue, its concurrent request slots, the service
time and the latency limit. Two regimes:

- **Below capacity, nothing waiting from before**: a stationary M/M/c queue
  (`within_slo_share`): c = slots servers, a wait is exponential once all are busy (Erlang
  C), and a request is within the SLO when its wait fits the slack (limit - service
  time).
- **At or above capacity, and the minutes after**: a stationary queue has no answer there
  (it never empties), and a minute at 1.1x capacity is not a minute in which every request
  is late. The excess waits: the backlog grows at arrivals - capacity, a request arriving
  behind a backlog B waits B / capacity (a fluid queue; the stochastic wait is small
  beside it), and it is within the SLO when that fits the slack. The backlog carries into
  the next step and drains at capacity - arrivals; once empty, the rest of the step is
  the stationary queue again. A request whose wait could not fit the slack is late and
  leaves the queue (a server sheds what can no longer meet its deadline, as a client
  times out), so the queue never holds more than slack x capacity requests: a long outage
  costs its own minutes, not every minute after it.

So a single minute 13% over capacity with 20 s of slack is served within the SLO (its
backlog is 8 s of work at the end of the minute), while a shortfall of 13% that lasts
five minutes makes every request after the backlog passes the slack late, as does any
step without capacity. Until December 7 2026 the replay scored every step with the
stationary queue alone, which counts every request of a step at or above capacity as
late (docs/baselines.md, "How a minute over capacity is scored").
"""

from __future__ import annotations

import numpy as np

from scheduler.fleet.queueing import erlang_c


def within_slo_share(
    served_rps: np.ndarray, capacity_rps: np.ndarray, slots: np.ndarray, service_s: np.ndarray,
    slo_s: float | np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Per step, the share of served requests answered within `slo_s` (one limit, or one
    per step), and the mean latency, in a stationary queue.

    M/M/c with c = `slots` servers of rate mu = capacity / c: the probability of waiting
    is Erlang C (`scheduler.fleet.queueing.erlang_c`, the planner's too), a wait is
    exponential with rate c*mu - lambda, and the response is the service time plus the
    wait. Vectorised over steps; a step at or above capacity gets 0 (`within_slo` scores
    those steps as a backlog).
    """
    lam = np.asarray(served_rps, dtype=np.float64)
    cap = np.asarray(capacity_rps, dtype=np.float64)
    c = np.asarray(slots, dtype=np.int64)
    share = np.ones_like(lam)
    mean_s = np.where(cap > 0, service_s, np.nan)
    busy = (lam > 0) & (cap > 0) & (c > 0)
    if not busy.any():
        return share, mean_s
    lam_b, cap_b, c_b, svc_b = lam[busy], cap[busy], c[busy], service_s[busy]
    mu = cap_b / c_b
    wait_prob = erlang_c(lam_b / mu, c_b)  # offered load in servers
    drain = np.maximum(cap_b - lam_b, 0.0)  # c*mu - lambda
    slack = (np.asarray(slo_s)[busy] if np.ndim(slo_s) else slo_s) - svc_b
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        tail = np.where(drain > 0, wait_prob * np.exp(-drain * np.maximum(slack, 0.0)), 1.0)
        wait = np.where(drain > 0, wait_prob / drain, np.inf)
    share[busy] = np.where(slack >= 0, 1.0 - tail, 0.0)
    mean_s[busy] = svc_b + wait
    return share, mean_s


def within_slo(
    arrivals_rps: np.ndarray,
    served_rps: np.ndarray,
    capacity_rps: np.ndarray,
    slots: np.ndarray,
    service_s: np.ndarray,
    slo_s: float | np.ndarray,
    step_s: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per step, the requests/s answered within `slo_s` and their mean latency (NaN
    without capacity): the stationary queue below capacity, the backlog at and after a
    step at or above it (module docstring). `arrivals_rps` >= `served_rps`: what reaches
    the queue, of which `served_rps` is what the step's capacity routes; the excess is
    what may wait. Steps without capacity answer nothing in time and hold no backlog."""
    arrivals = np.asarray(arrivals_rps, dtype=np.float64)
    served = np.asarray(served_rps, dtype=np.float64)
    cap = np.asarray(capacity_rps, dtype=np.float64)
    service = np.asarray(service_s, dtype=np.float64)
    limit = np.broadcast_to(np.asarray(slo_s, dtype=np.float64), served.shape)
    share, mean_s = within_slo_share(served, cap, slots, service, limit)
    within = served * share
    over = (arrivals > 0) & (cap > 0) & (arrivals >= cap)
    if not over.any():
        return within, mean_s
    backlog = 0.0  # requests waiting at the start of the step
    for t in range(int(np.argmax(over)), len(served)):
        if backlog <= 0.0 and not over[t]:
            continue
        lam, mu, slack = float(arrivals[t]), float(cap[t]), float(limit[t] - service[t])
        if mu <= 0.0 or not slack >= 0.0:
            within[t], backlog = 0.0, 0.0
            continue
        on_time, wait_s, backlog = _fluid_step(
            backlog, lam, mu, slack, step_s, float(share[t]), float(mean_s[t] - service[t])
        )
        within[t] = on_time / step_s
        mean_s[t] = service[t] + wait_s
    return within, mean_s


def _fluid_step(
    backlog: float, lam: float, mu: float, slack: float, step_s: float,
    calm_share: float, calm_wait_s: float,
) -> tuple[float, float, float]:  # fmt: skip
    """One step of the fluid queue: (requests within the SLO, mean wait in s, backlog at
    the end). `calm_share` / `calm_wait_s`: the stationary queue's share and mean wait,
    for the part of the step after the backlog has drained."""
    most = slack * mu  # the backlog whose last request still meets the SLO
    backlog = min(backlog, most)
    grow = lam - mu
    if grow >= 0.0:  # the backlog grows (or holds) all step
        t_ok = step_s if grow == 0.0 else min(step_s, (most - backlog) / grow)
        end = min(most, backlog + grow * step_s)
        waited = t_ok * (backlog + grow * t_ok / 2) / mu + (step_s - t_ok) * slack
        return lam * t_ok, waited / step_s, end
    t_empty = backlog / -grow  # it drains
    if t_empty >= step_s:
        end = backlog + grow * step_s
        return lam * step_s, (backlog + end) / 2 / mu, end
    calm = step_s - t_empty
    waited = t_empty * backlog / 2 / mu + calm * (calm_wait_s if np.isfinite(calm_wait_s) else 0)
    return lam * (t_empty + calm * calm_share), waited / step_s, 0.0
