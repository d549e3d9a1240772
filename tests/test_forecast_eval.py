"""`forecast-eval` end to end, through its argparse entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

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
    assert set(doc["methods"]) == {"seasonal_naive", "holt_winters"}
    for m in doc["methods"].values():
        assert set(m["pinball"]) == {"0.5", "0.9", "0.95", "0.99"}
        assert 0.0 <= m["coverage_0.95"] <= 1.0
        assert m["mase"] > 0 and m["step_ms"] > 0
    assert "mase_ratio_to_baseline" in doc["methods"]["holt_winters"]


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
    scores = forecast_eval.evaluate(y[None, :], cfg, ["seasonal_naive"], warmup_steps=120)
    # Only the calibrated median's small adjustments remain.
    assert scores["seasonal_naive"].mase[0] < 0.05
