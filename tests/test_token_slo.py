"""Latency SLOs stated as time to first token and time per output token (TTFT/TPOT):
checked at the demand's request size, in the planner's capacity and the replay's
latency accounting alike (docs/profiles.md "Latency SLOs")."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scheduler.domain import REFERENCE_SIZE, Cloud, InstanceType, RequestSize, TokenSlo
from scheduler.fleet.catalog import load_catalog
from scheduler.fleet.profiles import instance_rps, latency_limit_ms, load_profiles
from simulations.engine import node_service, within_slo_share

MODEL = "llama-3.1-8b"
E2E_MS = 25_000.0  # the model's default end-to-end SLO for the reference request
# The same target at the reference request: 2 s to the first token, the rest per token.
SAME = TokenSlo(2_000.0, (E2E_MS - 2_000.0) / REFERENCE_SIZE.output_tokens)


def g6e() -> InstanceType:
    return load_catalog().instance_types[(Cloud.AWS, "g6e.xlarge")]


def test_the_limit_grows_with_output_tokens_and_not_with_prompts() -> None:
    assert latency_limit_ms(E2E_MS, None, RequestSize(10_000, 2_000)) == E2E_MS
    assert latency_limit_ms(math.inf, SAME, None) == pytest.approx(E2E_MS)
    assert latency_limit_ms(math.inf, SAME, RequestSize(10_000, 232)) == pytest.approx(E2E_MS)
    long_out = latency_limit_ms(math.inf, SAME, RequestSize(763, 2_000))
    assert long_out == pytest.approx(2_000 + SAME.tpot_ms * 2_000)
    # A stated end-to-end SLO still caps it.
    assert latency_limit_ms(30_000.0, SAME, RequestSize(763, 2_000)) == 30_000.0


def test_at_the_reference_request_the_per_token_slo_plans_as_the_end_to_end_one() -> None:
    profiles, itype = load_profiles(), g6e()
    e2e = instance_rps(profiles, MODEL, itype, E2E_MS)
    assert e2e > 0
    assert instance_rps(profiles, MODEL, itype, token_slo=SAME) == pytest.approx(e2e)
    assert instance_rps(profiles, MODEL, itype, size=REFERENCE_SIZE, token_slo=SAME) == (
        pytest.approx(e2e)
    )


def test_long_prompts_must_fit_the_first_token_budget() -> None:
    # Under an end-to-end SLO the profile's latency is the reference request's whatever
    # the size; under TTFT/TPOT a 10,000-token prompt takes several times as long in the
    # same batch, so only a smaller batch qualifies and a node carries fewer of them.
    profiles, itype = load_profiles(), g6e()
    long = RequestSize(4_000, 232)
    e2e = instance_rps(profiles, MODEL, itype, E2E_MS, size=long)
    per_token = instance_rps(profiles, MODEL, itype, size=long, token_slo=SAME)
    assert 0 < per_token < e2e
    # 10,000-token prompts: no batch of an L40S is fast enough, an 8 x H100 node is.
    longer = RequestSize(10_000, 232)
    p5 = load_catalog().instance_types[(Cloud.AWS, "p5.48xlarge")]
    assert instance_rps(profiles, MODEL, itype, size=longer, token_slo=SAME) == 0.0
    assert instance_rps(profiles, MODEL, p5, size=longer, token_slo=SAME) > 0


def test_long_outputs_get_the_time_their_tokens_take() -> None:
    # 4,000 output tokens: far past an end-to-end 25 s at any batch on this GPU, within
    # 2 s + 99 ms per token.
    profiles, itype = load_profiles(), g6e()
    long_out = RequestSize(763, 4_000)
    svc_e2e = node_service(profiles, MODEL, itype, E2E_MS, None, long_out)
    svc_tok = node_service(profiles, MODEL, itype, math.inf, None, long_out, SAME)
    assert svc_tok.rps > 0
    assert svc_tok.latency_s * 1000 <= latency_limit_ms(math.inf, SAME, long_out)
    assert svc_tok.latency_s > svc_e2e.latency_s  # the request's own work, not the reference's


def test_the_replay_counts_each_step_against_its_own_limit() -> None:
    # Two steps at the same load and service time, one with a limit the service time fits
    # and one it does not: only the first counts its requests within the SLO.
    served = np.array([1.0, 1.0])
    cap = np.array([10.0, 10.0])
    slots = np.array([4, 4])
    service = np.array([5.0, 5.0])
    share, _ = within_slo_share(served, cap, slots, service, np.array([20.0, 4.0]))
    assert share[0] > 0.99
    assert share[1] == 0.0
    same, _ = within_slo_share(served, cap, slots, service, 20.0)
    assert same[0] == pytest.approx(share[0])
