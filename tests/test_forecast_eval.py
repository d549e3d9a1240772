"""`forecast-eval` end to end, through its argparse entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from scheduler.forecast.config import ForecastSettings
from scheduler.forecast.lead_peak import LeadWindow
from simulations import forecast_eval


def minute_csv(tmp_path: Path, steps: int = 400) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(steps)
    y = np.round(600 + 300 * np.sin(2 * np.pi * t / 60) + rng.normal(0, 30, steps))
    p = tmp_path / "m.csv"
    p.write_text("minute,count\n" + "".join(f"{i},{v:.0f}\n" for i, v in zip(t, y, strict=True)))
    return p


def test_json_output_has_every_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = minute_csv(tmp_path)
    code = forecast_eval.main(
        ["--series", str(p), "--format", "minute-csv", "--horizon-min", "10", "--json"]
    )
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    anchors = {"last_value", "mean_10min", "seasonal_naive_1d"}
    assert set(doc["methods"]) == {"seasonal_naive", "holt_winters", "ensemble"} | anchors
    assert set(doc["anchors"]) == anchors
    for name, m in doc["methods"].items():
        if name in anchors:
            assert m["anchor"] and m["pinball"] == {}
            continue
        assert set(m["pinball"]) == {"0.5", "0.9", "0.95", "0.99"}
        assert 0.0 <= m["coverage_0.95"] <= 1.0
        assert m["mase"] > 0 and m["step_ms"] > 0
    hw = doc["methods"]["holt_winters"]
    assert "mase_ratio_to_baseline" in hw
    # 400 minutes: no day of history, so the day-ago anchor has no score.
    assert doc["methods"]["seasonal_naive_1d"]["mase"] is None
    best = min(doc["methods"][a]["mase"] for a in ("last_value", "mean_10min"))
    assert hw["mase_ratio_to_best_anchor"] == pytest.approx(hw["mase"] / best)
    peak = doc["lead_peak"]
    assert peak["quantile"] == 0.95 and (peak["boot_steps"], peak["tick_steps"]) == (10, 5)
    # The default method's median feeds the lead-window peak planner.
    assert set(peak["planners"]) == {ForecastSettings().method, "c_x_mean_10min"}
    for p in peak["planners"].values():
        assert 0.0 <= p["coverage"] <= 1.0 and p["over_provision"] > 0 and p["windows"] > 0
        assert p["over_provision_total"] > 0


def test_over_provision_is_reported_per_window_and_in_total() -> None:
    # Two series' windows: the mean of ratios counts an idle window's 100x as much as a
    # busy window's 1.1x; the total weighs them by load. A window without load counts in
    # coverage only.
    tally = forecast_eval._PeakTally(1)
    for planned, truth in ((110.0, 100.0), (10.0, 0.1), (5.0, 0.0), (80.0, 100.0)):
        tally.add(np.array([planned]), np.array([truth]))
    ev = forecast_eval.Evaluation({}, {"p": tally.result("p")}, 0.95, LeadWindow(10, 5), "ensemble")
    p = forecast_eval.summarize(ev)["lead_peak"]["planners"]["p"]
    assert p["windows"] == 4 and p["windows_with_load"] == 3
    assert p["coverage"] == pytest.approx(3 / 4)
    assert p["over_provision"] == pytest.approx((1.1 + 100.0 + 0.8) / 3)
    assert p["over_provision_total"] == pytest.approx(200.0 / 200.1)
    assert p["ratio_planner_share"] == 0.0  # no planner said it used the ratio


def test_a_timer_function_is_planned_by_the_ratio_planner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # One invocation every 5 minutes for 8 hours (a timer trigger): every lead window
    # holds one, and the report says which planner planned it.
    steps = 480
    p = tmp_path / "timer.csv"
    p.write_text("minute,count\n" + "".join(f"{t},{int(t % 5 == 0)}\n" for t in range(steps)))
    code = forecast_eval.main(
        ["--series", str(p), "--format", "minute-csv", "--horizon-min", "30", "--json"]
    )
    assert code == 0
    planners = json.loads(capsys.readouterr().out)["lead_peak"]["planners"]
    ours = planners[ForecastSettings().method]
    assert ours["ratio_planner_share"] > 0.5
    assert ours["coverage"] >= 0.93 and ours["over_provision"] <= 1.1
    assert planners["c_x_mean_10min"]["ratio_planner_share"] == 0.0


def test_table_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = minute_csv(tmp_path)
    assert (
        forecast_eval.main(["--series", str(p), "--format", "minute-csv", "--horizon-min", "5"])
        == 0
    )
    out = capsys.readouterr().out
    assert "seasonal_naive" in out and "holt_winters" in out and "MASE" in out


def test_malformed_file_is_an_error_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("minute,count\n0,1\n1,one\n")
    assert forecast_eval.main(["--series", str(p), "--format", "minute-csv"]) == 2
    assert f"{p}:3:" in capsys.readouterr().err


def test_too_short_series_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = minute_csv(tmp_path, steps=20)
    assert (
        forecast_eval.main(["--series", str(p), "--format", "minute-csv", "--horizon-min", "30"])
        == 2
    )
    assert "too short" in capsys.readouterr().err


def test_evaluate_scores_a_repeating_signal_as_nearly_perfect() -> None:
    from scheduler.forecast import ForecastSettings

    cfg = ForecastSettings(horizon_min=5, seasonal_periods_min=(60,), seasonal_knot_min=(5,))
    y = 10.0 + 5.0 * np.sin(2 * np.pi * np.arange(400) / 60)
    scores = forecast_eval.evaluate(y[None, :], cfg, ["seasonal_naive"], warmup_steps=120).methods
    # Only the calibrated median's small adjustments remain.
    assert scores["seasonal_naive"].mase[0] < 0.05


def _anchor_mase(y: np.ndarray, H: int, origins: range, pred) -> float:
    """MASE of a point forecast `pred(t, h)` computed the slow, obvious way."""
    scale = np.mean(np.abs(np.diff(y)))
    errs = [np.mean([abs(y[t + h] - pred(t, h)) for t in origins]) for h in range(1, H + 1)]
    return float(np.mean(errs) / scale)


def test_anchors_are_scored_like_their_definitions() -> None:
    from scheduler.forecast import ForecastSettings

    rng = np.random.default_rng(2)
    steps, H, warm = 1440 + 200, 5, 1450
    y = 5.0 + 3.0 * np.sin(2 * np.pi * np.arange(steps) / 1440) + rng.normal(0, 1, steps)
    cfg = ForecastSettings(horizon_min=H)
    ev = forecast_eval.evaluate(y[None, :], cfg, ["seasonal_naive"], warmup_steps=warm)
    last = ev.methods["last_value"].mase[0]
    mean10 = ev.methods["mean_10min"].mase[0]
    day = ev.methods["seasonal_naive_1d"].mase[0]
    # The evaluation's last origin leaves room for the lead window (15 steps) too.
    origins = range(warm, steps - 15)
    assert last == pytest.approx(_anchor_mase(y, H, origins, lambda t, h: y[t]), rel=1e-9)
    assert mean10 == pytest.approx(
        _anchor_mase(y, H, origins, lambda t, h: y[t - 9 : t + 1].mean()), rel=1e-9
    )
    assert day == pytest.approx(_anchor_mase(y, H, origins, lambda t, h: y[t + h - 1440]), rel=1e-9)


def coarse_csv(tmp_path: Path, step_min: int, steps: int) -> Path:
    rng = np.random.default_rng(4)
    t = np.arange(steps)
    y = np.round(600 + 300 * np.sin(2 * np.pi * t * step_min / 1440) + rng.normal(0, 30, steps))
    p = tmp_path / f"every{step_min}.csv"
    rows = "".join(f"{int(i * step_min * 60)},{v:.0f}\n" for i, v in zip(t, y, strict=True))
    p.write_text("time,count\n" + rows)
    return p


@pytest.mark.parametrize(("step_min", "horizon_steps"), [(10, 3), (60, 1)])
def test_coarser_series_are_scored_at_their_own_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], step_min: int, horizon_steps: int
) -> None:
    # A row every 10 minutes (or hour) used to land on a minute grid with NaN between
    # rows: no two neighbouring steps were known, so MASE had no scale and was missing.
    p = coarse_csv(tmp_path, step_min, steps=3 * 1440 // step_min)
    code = forecast_eval.main(
        ["--series", str(p), "--format", "minute-csv", "--time-unit", "s", "--json"]
    )
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    for name in ("holt_winters", "seasonal_naive", "last_value", "mean_10min"):
        assert doc["methods"][name]["mase"] is not None and doc["methods"][name]["mase"] > 0
    # Scored at a day ago too: the series holds three days.
    assert doc["methods"]["seasonal_naive_1d"]["mase"] is not None
    assert doc["lead_peak"]["tick_steps"] == 1


def test_native_step_keeps_counts_per_row_as_rates() -> None:
    from simulations.traces import TraceSeries

    values = np.full((1, 60), np.nan)
    values[0, ::10] = 600.0  # 600 requests every 10 minutes = 1 rps
    trace = TraceSeries("x.csv", "minute-csv", ("x",), 0.0, 60.0, values, "requests/min")
    native = forecast_eval.at_native_step(trace)
    assert native.step_s == 600.0 and native.n_steps == 6
    np.testing.assert_allclose(forecast_eval.series_rates(native), 1.0)
    cfg = forecast_eval.settings_for(native, 30)
    assert cfg.horizon_steps == 3 and cfg.seasonal_knot_min == (
        10,
        90,
    )  # whole steps, dividing the period


def test_bad_lead_window_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = minute_csv(tmp_path)
    assert forecast_eval.main(["--series", str(p), "--format", "minute-csv", "--tick-s", "0"]) == 2
    assert "tick_s" in capsys.readouterr().err
