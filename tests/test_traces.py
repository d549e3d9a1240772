"""Trace readers: every format, on small files and on the shared data when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulations.traces import (
    FORMATS,
    TraceFormatError,
    read_azure_functions,
    read_azure_llm,
    read_burstgpt,
    read_minute_csv,
    read_mooncake,
    read_requests,
    read_series,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_minute_csv_default_columns_and_gaps(tmp_path: Path) -> None:
    p = write(tmp_path, "minute,count\n0,5\n1,7\n3,2\n")
    s = read_minute_csv(p)
    assert s.n_series == 1
    np.testing.assert_array_equal(s.values[0, [0, 1, 3]], [5, 7, 2])
    assert np.isnan(s.values[0, 2])  # absent minute is missing, not zero
    assert s.unit == "requests/min"
    np.testing.assert_allclose(s.rates_per_s()[0, 0], 5 / 60)
    z = read_minute_csv(p, missing="zero")
    assert z.values[0, 2] == 0.0


def test_minute_csv_named_columns_iso_and_seconds(tmp_path: Path) -> None:
    iso = write(
        tmp_path, "x,when,n\na,2024-01-01T00:00:00Z,1\nb,2024-01-01T00:01:00Z,2\n", "iso.csv"
    )
    s = read_minute_csv(iso, time_column="when", count_column="n")
    assert s.start_s == pytest.approx(1704067200.0)
    np.testing.assert_array_equal(s.values[0], [1, 2])
    secs = write(tmp_path, "t,c\n1700000040,4\n1700000100,6\n", "s.csv")
    s = read_minute_csv(secs)
    assert s.start_s == pytest.approx(1700000040.0 // 60 * 60)
    np.testing.assert_array_equal(s.values[0], [4, 6])


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("t,c\n0,1\n1,x\n", 3, "not a number"),
        ("t,c\n0,1\n1,-2\n", 3, "negative"),
        ("t,c\n0,1\n0,2\n", 3, "twice"),
        ("t,c\n0,1\n1\n", 3, "fields"),
        ("t,c\n0,1\nnoon,3\n", 3, "ISO-8601"),
    ],
)
def test_malformed_minute_csv_names_the_line(
    tmp_path: Path, text: str, line: int, what: str
) -> None:
    p = write(tmp_path, text)
    with pytest.raises(TraceFormatError, match=what) as info:
        read_minute_csv(p)
    assert info.value.line == line
    assert str(info.value).startswith(f"{p}:{line}:")


def test_missing_column_and_empty_file(tmp_path: Path) -> None:
    p = write(tmp_path, "t,c\n0,1\n")
    with pytest.raises(TraceFormatError, match="no column 'rps'"):
        read_minute_csv(p, count_column="rps")
    with pytest.raises(TraceFormatError, match="empty"):
        read_minute_csv(write(tmp_path, "", "e.csv"))
    with pytest.raises(TraceFormatError, match="cannot read"):
        read_minute_csv(tmp_path / "absent.csv")


def test_requests_in_seconds_and_iso(tmp_path: Path) -> None:
    p = write(tmp_path, "ts,other\n0.5,a\n59.9,b\n61,c\n200,d\n")
    s = read_requests(p)
    np.testing.assert_array_equal(s.values[0], [2, 1, 0, 1])  # minutes 0..3
    iso = write(
        tmp_path, "when\n2023-11-16 18:17:03.9799600\n2023-11-16 18:17:59\n2023-11-16 18:19:00\n"
    )
    s = read_requests(iso)
    np.testing.assert_array_equal(s.values[0], [2, 0, 1])
    bad = write(tmp_path, "ts\n1\n2\nsoon\n", "bad.csv")
    with pytest.raises(TraceFormatError, match=r":4:"):
        read_requests(bad)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(min_value=0, max_value=36_000, allow_nan=False), min_size=1, max_size=200)
)
def test_requests_are_all_counted(times: list[float]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "r.csv"
        p.write_text("ts\n" + "".join(f"{t!r}\n" for t in times))
        s = read_requests(p)
    assert s.values.sum() == len(times)
    assert s.start_s == pytest.approx(min(times) // 60 * 60)


def test_burstgpt_missing_minutes_are_zero(tmp_path: Path) -> None:
    p = write(tmp_path, "minute_index,total_tokens_per_s,tps_norm_p995\n0,1.5,0.1\n3,2.0,0.2\n")
    s = read_burstgpt(p)
    np.testing.assert_array_equal(s.values[0], [1.5, 0, 0, 2.0])
    assert s.unit == "tokens/s"
    bad = write(tmp_path, "minute_index,total_tokens_per_s\n3,1\n2,1\n", "b.csv")
    with pytest.raises(TraceFormatError, match=r":3: minute_index not increasing"):
        read_burstgpt(bad)


def test_azure_functions_many_series(tmp_path: Path) -> None:
    text = (
        "HashOwner,HashApp,HashFunction,Trigger,480,481,482\n"
        "o,a,aaaaaaaaaaaaaaaa,http,1,0,2\n"
        "o,a,bbbbbbbbbbbbbbbb,timer,0,1,0\n"
    )
    s = read_azure_functions(write(tmp_path, text))
    assert s.names == ("http:aaaaaaaaaaaa", "timer:bbbbbbbbbbbb")
    assert s.values.shape == (2, 3)
    assert s.start_s == 479 * 60.0
    bad = text + "o,a,c,http,1,x,2\n"
    with pytest.raises(TraceFormatError, match=r":4: count 'x'"):
        read_azure_functions(write(tmp_path, bad, "bad.csv"))


def test_azure_llm(tmp_path: Path) -> None:
    text = (
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:17:03.9799600,10,2\n"
        "2023-11-16 18:18:01.0,5,1\n"
    )
    s = read_azure_llm(write(tmp_path, text))
    np.testing.assert_array_equal(s.values[0], [1, 1])
    with pytest.raises(TraceFormatError, match=r":4: time 'yesterday'"):
        read_azure_llm(write(tmp_path, text + "yesterday,1,1\n", "bad.csv"))


def test_mooncake_json_lines(tmp_path: Path) -> None:
    # Mooncake's traces: milliseconds from the start, prompt and output tokens, and the
    # prompt's cache blocks (ignored).
    text = (
        '{"timestamp": 0, "input_length": 12000, "output_length": 300, "hash_ids": [1, 2]}\n'
        '{"timestamp": 59999, "input_length": 2000, "output_length": 100, "hash_ids": []}\n'
        "\n"
        '{"timestamp": 120500, "input_length": 500, "output_length": 50, "hash_ids": [3]}\n'
    )
    p = write(tmp_path, text, "conversation_trace.jsonl")
    s = read_series(p, "auto")
    assert s.format == "mooncake" and s.names == ("conversation_trace",)
    np.testing.assert_array_equal(s.values[0], [2, 0, 1])  # requests in minutes 0, 1, 2
    assert s.mean_tokens == pytest.approx((14500 / 3, 450 / 3))
    assert s.tokens is not None
    np.testing.assert_allclose(s.tokens[:, 0, 0], [7000, 200])  # minute 0's mean sizes
    assert np.isnan(s.tokens[:, 0, 1]).all()  # no request in minute 1
    assert s.buckets is not None  # split by prompt length, as any trace with sizes


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ('{"timestamp": 5, "input_length": 10', "not valid JSON"),
        ("[1, 2, 3]", "expected a JSON object"),
        ('{"timestamp": 5, "input_length": 10}', "no 'output_length' field"),
        ('{"timestamp": 5, "input_length": "ten", "output_length": 1}', "is not a number"),
        ('{"timestamp": -5, "input_length": 10, "output_length": 1}', "finite number >= 0"),
        ('{"timestamp": 5, "input_length": 10, "output_length": true}', "is not a number"),
    ],
)
def test_malformed_mooncake_line_is_named(tmp_path: Path, line: str, why: str) -> None:
    good = '{"timestamp": 0, "input_length": 1, "output_length": 1}\n'
    p = write(tmp_path, good + good + line + "\n", "t.jsonl")
    with pytest.raises(TraceFormatError, match=rf"t\.jsonl:3: .*{why}"):
        read_mooncake(p)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 7_200_000), st.integers(0, 200_000), st.integers(0, 4_000)),
        min_size=1,
        max_size=100,
    )
)
def test_mooncake_reads_as_the_same_requests_csv(rows: list[tuple[int, int, int]]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        j = Path(d) / "r.jsonl"
        j.write_text(
            "".join(
                f'{{"timestamp": {t}, "input_length": {i}, "output_length": {o}}}\n'
                for t, i, o in rows
            )
        )
        c = Path(d) / "r.csv"
        c.write_text(
            "timestamp,input_tokens,output_tokens\n"
            + "".join(f"{t / 1000!r},{i},{o}\n" for t, i, o in rows)
        )
        a, b = read_mooncake(j), read_requests(c)
    assert a.start_s == b.start_s and a.values.sum() == len(rows)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_allclose(a.tokens, b.tokens, equal_nan=True)  # type: ignore[arg-type]


def test_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown trace format"):
        read_series(write(tmp_path, "a,b\n"), "parquet")


SHARED_FILES = [
    (
        "burstgpt_derived_aggregates/burstgpt1_first_week_per_minute_tokens.csv",
        "burstgpt",
        1,
        10080,
    ),
    (
        "azure_functions_2019_samples_invitro/sample_100/invocations.csv",
        "azure-functions",
        100,
        480,
    ),
    ("azure_functions_2019_samples_invitro/example/invocations.csv", "azure-functions", 4, 1440),
    ("azure_llm_inference_2023/AzureLLMInferenceTrace_code.csv", "azure-llm", 1, 58),
]


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared data not present")
@pytest.mark.parametrize(("rel", "fmt", "n", "steps"), SHARED_FILES)
def test_shared_traces(rel: str, fmt: str, n: int, steps: int) -> None:
    assert fmt in FORMATS
    s = read_series(SHARED / rel, fmt)
    assert s.values.shape == (n, steps)
    assert np.all(s.values >= 0)
