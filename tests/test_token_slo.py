"""Latency SLOs stated as time to first token and time per output token (TTFT/TPOT):
checked at the demand's request size, in the planner's capacity and the replay's
latency accounting alike (docs/profiles.md "Latency SLOs")."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scheduler.config import Config
from scheduler.domain import REFERENCE_SIZE, Cloud, InstanceType, RequestSize, TokenSlo
from scheduler.fleet.capacity import node_rps
from scheduler.fleet.catalog import load_catalog
from scheduler.fleet.profiles import (
    best_profile,
    instance_rps,
    latency_limit_ms,
    load_profiles,
    meets_slo,
    model_info,
    size_factor,
    ttft_ms,
)
from simulations.engine import node_service
from simulations.latency import within_slo_share

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


def batches(itype: InstanceType, size: RequestSize, slo: TokenSlo) -> list[int]:
    """The batch sizes of the 8B's profile rows on `itype`'s GPU kind within `slo`."""
    return [
        p.batch_size
        for p in load_profiles()
        if (p.model, p.gpu_kind) == (MODEL, itype.gpu_kind)
        and p.gpu_count <= itype.gpu_count
        and meets_slo(p, size, math.inf, slo)
    ]


def test_long_prompts_must_fit_the_first_token_budget() -> None:
    # A 6,000-token prompt of the 8B is prefilled in well under a second on an L40S: it
    # fits 2 s to the first token at small batches (a batch's prefills share the GPU), not
    # at the largest, so a node carries it at a smaller batch than the reference request.
    itype = g6e()
    long = RequestSize(6_000, 40)
    fits = batches(itype, long, SAME)
    assert fits and 1 in fits
    assert max(fits) < max(batches(itype, REFERENCE_SIZE, SAME))
    assert instance_rps(load_profiles(), MODEL, itype, size=long, token_slo=SAME) > 0


def test_a_prompt_too_long_for_a_gpu_fits_no_batch_however_long_the_answer() -> None:
    # 30,000 prompt tokens take over 10 s to prefill on an L4 at any batch; 2,000 output
    # tokens would leave the end-to-end sum (2 s + 99 ms x 2,000) plenty of room, but the
    # first token is checked on its own. An H100 prefills it within 2 s.
    catalog, profiles = load_catalog(), load_profiles()
    huge = RequestSize(30_000, 2_000)
    l4 = catalog.instance_types[(Cloud.AWS, "g6.xlarge")]
    p5 = catalog.instance_types[(Cloud.AWS, "p5.48xlarge")]
    assert batches(l4, huge, SAME) == []
    assert instance_rps(profiles, MODEL, l4, size=huge, token_slo=SAME) == 0.0
    assert instance_rps(profiles, MODEL, p5, size=huge, token_slo=SAME) > 0


def test_decode_heavy_requests_get_smaller_batches_under_a_tight_tpot() -> None:
    # 20 ms per token: a bigger batch makes each decode step slower, and a long answer's
    # context makes it slower still, so 2,000-token answers run at a smaller batch than
    # short chat turns on the same GPU.
    tight = TokenSlo(2_000.0, 20.0)
    itype = g6e()
    chat, essay = RequestSize(450, 120), RequestSize(500, 2_000)
    assert batches(itype, essay, tight)
    assert max(batches(itype, essay, tight)) < max(batches(itype, chat, tight))
    per_token = {
        s: best_profile(load_profiles(), MODEL, itype, math.inf, None, s, tight)
        for s in (chat, essay)
    }
    assert all(b is not None for b in per_token.values())
    assert per_token[essay][0].batch_size < per_token[chat][0].batch_size  # type: ignore[index]


@pytest.mark.parametrize(
    "size", [None, REFERENCE_SIZE, RequestSize(6_000, 40), RequestSize(500, 2_000)]
)
def test_plans_under_an_end_to_end_slo_are_unchanged(size: RequestSize | None) -> None:
    # Under an end-to-end SLO the check is the profile's own latency against the SLO, as
    # before the per-token model: the capacity of every instance type is the best
    # qualifying row's rate x size factor.
    catalog, profiles = load_catalog(), load_profiles()
    for itype in catalog.instance_types.values():
        for model, slo_ms in (("llama-3.1-8b", E2E_MS), ("llama-3.1-70b", 32_000.0)):
            rows = [
                (itype.gpu_count // p.gpu_count)
                * p.rps
                * size_factor(model, p.gpu_kind, p.gpu_count, size)
                for p in profiles
                if p.model == model
                and p.gpu_kind == itype.gpu_kind
                and itype.gpu_count % p.gpu_count == 0
                and p.latency_ms <= slo_ms
                and p.gpu_count * itype.gpu_memory_gb >= model_info(model).gpu_memory_gb
            ]
            got = instance_rps(profiles, model, itype, slo_ms, size=size)
            assert got == pytest.approx(max(rows, default=0.0))


def one_model(**slo: float) -> Config:
    """The 8B alone at the default target utilisation, with the SLO `slo`."""
    return Config.model_validate(
        {
            "models": [{"name": MODEL, **slo}],
            "regions": [{"name": "us-east", "location": "us-east-1", "max_latency_ms": 40}],
        }
    )


SIZES = [None, RequestSize(449, 124), RequestSize(1_868, 197), RequestSize(8_000, 200)]


@pytest.mark.parametrize("size", SIZES)
def test_nodes_under_an_end_to_end_slo_are_planned_at_the_target_utilisation(
    size: RequestSize | None,
) -> None:
    # The queueing rule of per-token SLOs leaves end-to-end plans alone: every node is
    # counted on for the target utilisation of its best row's rate, as before.
    config, profiles = one_model(latency_slo_ms=E2E_MS), load_profiles()
    target = config.planning.target_utilization
    for itype in load_catalog().instance_types.values():
        want = target * instance_rps(profiles, MODEL, itype, E2E_MS, size=size)
        assert node_rps(config, profiles, MODEL, itype, size=size) == pytest.approx(want)


@pytest.mark.parametrize("size", SIZES)
def test_a_node_planned_under_a_per_token_slo_keeps_99_percent_of_first_tokens_in_budget(
    size: RequestSize | None,
) -> None:
    # 2 s to the first token, 99 ms per output token: a node loaded to what the planner
    # counts it on for waits for a slot so seldom that 99 % of its requests still get
    # their first token within 2 s, in the replay's own queue model (M/M/c at the node's
    # slots). The fastest batch within 2 s left no time to wait (8,000-token prompts on
    # 8 x H100 at batch 8: 81 % at the target utilisation).
    slo = {"ttft_slo_ms": 2_000.0, "tpot_slo_ms": 99.1379}
    config, profiles = one_model(**slo), load_profiles()
    token = TokenSlo(slo["ttft_slo_ms"], slo["tpot_slo_ms"])
    target = config.planning.target_utilization
    planned_any = False
    for name in ("g6e.xlarge", "g6e.48xlarge", "p5.48xlarge", "p4d.24xlarge"):
        itype = load_catalog().instance_types[(Cloud.AWS, name)]
        load = node_rps(config, profiles, MODEL, itype, size=size)
        svc = node_service(profiles, MODEL, itype, math.inf, None, size, token, target)
        if load == 0:
            assert svc.rps == 0
            continue
        planned_any = True
        assert load <= target * svc.rps + 1e-9
        share, _ = within_slo_share(
            np.array([load]),
            np.array([svc.rps]),
            np.array([svc.slots]),
            np.array([svc.latency_s]),
            svc.latency_s + svc.wait_s,
        )
        assert share[0] >= 0.99 - 1e-3
    assert planned_any


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


def test_a_wait_for_a_slot_is_charged_to_the_first_token_budget() -> None:
    # A long prompt with a short answer: its decode leaves most of 2 s + 99 ms x 40 unused,
    # but a request that waits for a slot gets its first token that much later, so the
    # replay lets it wait only the first-token budget less its time to first token.
    itype, long = g6e(), RequestSize(6_000, 40)
    svc = node_service(load_profiles(), MODEL, itype, math.inf, None, long, SAME)
    best = best_profile(load_profiles(), MODEL, itype, math.inf, None, long, SAME)
    assert best is not None and svc.rps > 0
    first = ttft_ms(best[0], long)
    assert first is not None
    assert svc.wait_s == pytest.approx((SAME.ttft_ms - first) / 1000.0)
    assert svc.wait_s < latency_limit_ms(math.inf, SAME, long) / 1000.0 - svc.latency_s
    # End to end, the whole limit less the latency is the wait budget, as before.
    e2e = node_service(load_profiles(), MODEL, itype, E2E_MS, None, long)
    assert e2e.wait_s == pytest.approx(E2E_MS / 1000.0 - e2e.latency_s)
