"""`capsched plan` on hostile demand and fleet files: repeated pairs are summed (and the
plan says so), oversized, nested, binary and unservable files are refused in one line
with exit code 2, and the names in them hold only visible characters."""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsched.cli import main
from capsched.inputs import MAX_ENTRIES, MAX_FILE_BYTES, merge_demand
from scheduler.domain import Demand

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config.example.toml"
PAIRS = [
    ("llama-3.1-8b", "us-east"),
    ("llama-3.1-8b", "eu-west"),
    ("llama-3.1-70b", "us-east"),
    ("llama-3.1-70b", "eu-west"),
]


def run_plan(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["plan", "--config", str(CONFIG), *args])
    out, err = capsys.readouterr()
    return code, out, err


def plan_doc(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code, out, err = run_plan(capsys, "--json", *args)
    assert code == 0, err
    doc: dict[str, Any] = json.loads(out)
    return doc


def demand_file(path: Path, entries: list[tuple[str, str, float]]) -> Path:
    doc = {"demand": [{"model": m, "region": r, "rps": rps} for m, r, rps in entries]}
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def one_bad_line(code: int, err: str, path: Path) -> str:
    """The single error line of a refused file (exit 2, names it, no traceback)."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], err
    assert "Traceback" not in err
    return lines[0]


def test_100k_repeated_entries_plan_like_their_sums(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Before: 10k such rows came back infeasible with everything unmet, 100k never ended.
    rates = {pair: 0.0 for pair in PAIRS}
    rows: list[tuple[str, str, float]] = []
    for i in range(100_000):
        pair = PAIRS[i % 4]
        rps = (i % 7) * 0.25  # exact binary fractions: the sum does not depend on order
        rates[pair] += rps
        rows.append((*pair, rps))
    long = plan_doc(capsys, "--demand", str(demand_file(tmp_path / "long.json", rows)))
    short_rows = [(m, r, rps) for (m, r), rps in rates.items()]
    short = plan_doc(capsys, "--demand", str(demand_file(tmp_path / "short.json", short_rows)))

    for key in ("status", "usd_per_hour", "nodes", "unmet"):
        assert long[key] == short[key], key
    assert short["status"] in ("optimal", "feasible")
    # The only notes of the summed file: on-demand shares and spot-loss cover the budget
    # cannot pay for (docs/solver.md, "Cover under a binding budget").
    assert all(
        "min_on_demand_share" in n or "without spot-loss cover: budget" in n for n in short["notes"]
    )
    (note,) = [n for n in long["notes"] if n not in short["notes"]]
    assert "long.json" in note and "99996 entries repeat" in note and "summed into 4" in note


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.sampled_from(["x", "y"]),
            st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False),
        ),
        max_size=60,
    )
)
def test_merge_keeps_one_rate_per_pair_with_the_exact_sum(
    rows: list[tuple[str, str, float]],
) -> None:
    merged = merge_demand([Demand(m, r, rps) for m, r, rps in rows])
    pairs = [(d.model, d.region) for d in merged.demand]
    assert pairs == list(dict.fromkeys((m, r) for m, r, _ in rows))  # first-seen order
    for d in merged.demand:
        assert d.rps == math.fsum(rps for m, r, rps in rows if (m, r) == (d.model, d.region))
    assert merged.repeated == len(rows) - len(pairs)
    assert (merged.note("d.json") is None) == (merged.repeated == 0)


def test_an_unknown_name_is_named_by_its_place_in_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Merging must not renumber the entries an error names.
    rows = [("llama-3.1-8b", "us-east", 1.0)] * 5 + [("gpt-17", "us-east", 1.0)]
    path = demand_file(tmp_path / "d.json", rows)
    line = one_bad_line(*run_plan(capsys, "--demand", str(path))[::2], path)
    assert "demand[5]: unknown model 'gpt-17'" in line


@pytest.mark.parametrize(
    ("rows", "what"),
    [
        ([("llama-3.1-8b", "us-east", 1e300)], "1e+300 rps"),
        ([("llama-3.1-70b", "eu-west", float(10**28))], "1e+28 rps"),
        # Each finite and within bounds, but their sum is not: no overflow, one line.
        ([("llama-3.1-8b", "us-east", 1.7e308)] * 2, "inf rps"),
        ([("llama-3.1-8b", "us-east", 1e8)] * 3, "3e+08 rps"),
    ],
)
def test_rates_no_pool_could_serve_are_refused(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    rows: list[tuple[str, str, float]],
    what: str,
) -> None:
    # Before: 1e300 gave "infeasible: hard constraints conflict" and no node at all.
    path = demand_file(tmp_path / "d.json", rows)
    line = one_bad_line(*run_plan(capsys, "--demand", str(path))[::2], path)
    assert what in line and "more than every pool the config allows could serve" in line


@pytest.mark.parametrize("option", ["--demand", "--fleet"])
@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b'{"demand": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (bytes(range(256)) * 4, "not UTF-8 text: byte 128"),
        (b'{"demand": [{"rps": ' + b"9" * 5000 + b"}]}", "not valid JSON: Exceeds the limit"),
        (b"\0" * (MAX_FILE_BYTES + 1), "larger than 16 MiB"),
    ],
    ids=["nested", "binary", "5000-digit-number", "oversized"],
)
def test_unreadable_files_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, option: str, content: bytes, what: str
) -> None:
    # Before: RecursionError, UnicodeDecodeError and ValueError tracebacks (exit 1).
    path = tmp_path / "in.json"
    path.write_bytes(content)
    line = one_bad_line(*run_plan(capsys, option, str(path))[::2], path)
    assert what in line


def test_too_many_entries_are_refused_before_validation(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "d.json"
    path.write_text('{"demand": [' + ",".join(["{}"] * (MAX_ENTRIES + 1)) + "]}")
    line = one_bad_line(*run_plan(capsys, "--demand", str(path))[::2], path)
    assert f"{MAX_ENTRIES + 1} entries, more than {MAX_ENTRIES}" in line


def test_a_byte_order_mark_is_skipped(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    doc = {"demand": [{"model": "llama-3.1-8b", "region": "us-east", "rps": 3}]}
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(doc).encode())
    assert plan_doc(capsys, "--demand", str(path))["unmet"] == []


def test_a_fleet_count_beyond_a_pool_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    node = {
        "model": "llama-3.1-8b",
        "cloud": "aws",
        "region": "us-east-1",
        "instance_type": "g6.xlarge",
        "market": "spot",
        "count": 10**29,
    }
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps({"nodes": [node]}))
    line = one_bad_line(*run_plan(capsys, "--fleet", str(path))[::2], path)
    assert "nodes[0].count" in line


@pytest.mark.parametrize(
    ("field", "value", "code_point"),
    [
        ("model", "llama-3.1-8b\u0000", "U+0000"),
        ("model", "llama-3.1-8b\u200b", "U+200B"),
        ("region", "us\u2060east", "U+2060"),
        ("region", "us-east\n", "U+000A"),
        ("region", "\u202eus-east", "U+202E"),
    ],
)
def test_names_with_invisible_characters_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, field: str, value: str, code_point: str
) -> None:
    entry = {"model": "llama-3.1-8b", "region": "us-east", "rps": 1.0, field: value}
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"demand": [entry]}))
    line = one_bad_line(*run_plan(capsys, "--demand", str(path))[::2], path)
    assert f"demand[0].{field}" in line and code_point in line


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
)
names = st.one_of(
    st.sampled_from(["llama-3.1-8b", "llama-3.1-70b", "us-east", "eu-west"]), st.text()
)
entries = st.fixed_dictionaries(
    {
        "model": st.one_of(st.sampled_from(["llama-3.1-8b", "llama-3.1-70b"]), names, json_scalars),
        "region": st.one_of(st.sampled_from(["us-east", "eu-west"]), names, json_scalars),
        "rps": st.one_of(st.floats(min_value=0, max_value=50), json_scalars),
    },
    optional={"extra": json_scalars},
)
documents = st.one_of(
    st.fixed_dictionaries({"demand": st.lists(entries, max_size=8)}),
    st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=6),
)


@settings(max_examples=60, deadline=None)
@given(documents)
def test_any_demand_document_plans_or_is_refused_in_lines_naming_the_file(doc: object) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "demand.json"
        path.write_text(json.dumps(doc), encoding="utf-8")
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["plan", "--config", str(CONFIG), "--json", "--demand", str(path)])
    assert code in (0, 2), err.getvalue()
    if code == 2:
        lines = err.getvalue().splitlines()
        assert lines and all(line.startswith(f"error: {path}: ") for line in lines)
        return
    assert isinstance(doc, dict)
    pairs = [(e["model"], e["region"]) for e in doc["demand"]]
    notes = json.loads(out.getvalue())["notes"]
    assert any("summed" in n for n in notes) == (len(set(pairs)) < len(pairs))
