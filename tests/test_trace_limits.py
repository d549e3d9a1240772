"""Hostile traces for `capsched simulate`: rates no plan could serve are refused naming
the file and line, negative times and invisible names are malformed rows, and a plan
asking for absurd node counts never becomes a list of that length."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsched.cli import main
from scheduler.config import load_config
from scheduler.decide.diff import propose
from scheduler.decide.guards import apply_guards
from scheduler.decide.observation import Observation
from scheduler.decide.planner import servable_rps
from scheduler.domain import (
    MAX_NODES_PER_POOL,
    Cloud,
    HoldKind,
    Market,
    Placement,
    Plan,
    PlanStatus,
    Pool,
)
from scheduler.fleet.catalog import load_catalog
from scheduler.fleet.profiles import load_profiles
from scheduler.ports.metrics import DemandSample
from simulations.demand import DemandTrace, load_demand
from simulations.traces import TraceFormatError, read_minute_csv, read_requests

CONFIG = load_config()
CATALOG = load_catalog()
PROFILES = load_profiles()
SERVABLE = servable_rps(CONFIG, CATALOG, PROFILES)
HEADER = "minute,requests,model,region\n"


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def load(path: Path, scale: float = 1.0, fleet_gpus: float | None = None) -> DemandTrace:
    return load_demand(path, CONFIG, CATALOG, PROFILES, scale=scale, fleet_gpus=fleet_gpus)


def test_the_bound_is_generous_and_finite() -> None:
    # Every pool the default config allows at the planner's per-pool limit: far above
    # anything the bundled trace or the README's runs ask for, far below 1e12 req/min.
    assert set(SERVABLE) == {"llama-3.1-8b", "llama-3.1-70b"}
    for bound in SERVABLE.values():
        assert 1e5 < bound < 1e12 / 60


@pytest.mark.parametrize(
    "count", ["1e300", "1" + "0" * 28, "1e15", "1e12"], ids=["1e300", "29-digits", "1e15", "1e12"]
)
def test_a_count_no_plan_could_serve_names_the_file_and_line(tmp_path: Path, count: str) -> None:
    # Before: OverflowError in diff.py (1e300, 29 digits), MemoryError (1e15), 83 s (1e12).
    p = write(
        tmp_path,
        HEADER + "0,5,llama-3.1-8b,us-east\n1,5,llama-3.1-70b,eu-west\n"
        f"1,{count},llama-3.1-8b,us-east\n2,5,llama-3.1-8b,us-east\n",
    )
    with pytest.raises(TraceFormatError) as info:
        load(p)
    assert info.value.line == 4
    assert str(info.value).startswith(f"{p}:4: ")
    assert "llama-3.1-8b from us-east in minute 1" in str(info.value)
    assert "more than every pool the config allows could serve" in str(info.value)


def test_the_bound_applies_after_scaling(tmp_path: Path) -> None:
    p = write(tmp_path, HEADER + "0,5,llama-3.1-8b,us-east\n1,6,llama-3.1-8b,us-east\n")
    load(p, scale=1e6)  # 1e5 requests/s: a large what-if, still servable
    with pytest.raises(TraceFormatError, match=r"scaled x1e\+300") as info:
        load(p, scale=1e300)
    assert info.value.line == 2  # the first row above the bound


def test_a_per_request_trace_names_the_file(tmp_path: Path) -> None:
    # Its minutes count many rows, so no one line holds the rate: the file is named.
    p = write(tmp_path, "timestamp\n0\n30\n90\n")
    with pytest.raises(TraceFormatError) as info:
        load(p, fleet_gpus=1e300)
    assert info.value.line is None and str(info.value).startswith(f"{p}: ")


def test_burstgpt_and_azure_functions_rows_are_named(tmp_path: Path) -> None:
    burst = write(tmp_path, "minute_index,total_tokens_per_s\n0,10\n1,1e300\n2,10\n", "burst.csv")
    with pytest.raises(TraceFormatError) as info:
        load(burst)
    assert info.value.line == 3
    functions = write(
        tmp_path,
        "HashOwner,HashApp,HashFunction,Trigger,1,2\no,a,f1,http,1,2\no,a,f2,http,3,1e20\n",
        "functions.csv",
    )
    with pytest.raises(TraceFormatError) as info:
        load(functions)
    assert info.value.line == 3


trace_rows = st.lists(
    st.tuples(
        st.sampled_from(["llama-3.1-8b", "llama-3.1-70b"]),
        st.sampled_from(["us-east", "eu-west"]),
        st.one_of(
            st.floats(min_value=0, max_value=1e300, allow_nan=False),
            st.integers(min_value=0, max_value=10**30),
        ),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(trace_rows)
def test_any_trace_loads_within_the_bound_or_names_a_row_above_it(
    rows: list[tuple[str, str, float | int]],
) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "t.csv"
        p.write_text(
            HEADER + "".join(f"{i},{c},{m},{r}\n" for i, (m, r, c) in enumerate(rows)),
            encoding="utf-8",
        )
        over = [i for i, (m, _, c) in enumerate(rows) if float(c) / 60 > SERVABLE[m]]
        try:
            demand = load(p)
        except TraceFormatError as exc:
            assert over, str(exc)
            assert exc.line is not None and exc.line - 2 in over  # line 2 holds row 0
            return
    assert not over
    for (m, _), row in zip(demand.keys, demand.rps, strict=True):
        assert not (row > SERVABLE[m]).any()  # NaN: a minute the trace does not list


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a/x", "b/y"]), st.integers(0, 50), st.integers(0, 9)),
        min_size=1,
        max_size=40,
        unique_by=lambda t: (t[0], t[1]),
    )
)
def test_every_value_remembers_its_line(rows: list[tuple[str, int, int]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "t.csv"
        p.write_text(
            HEADER + "".join(f"{t},{c},{n.replace('/', ',')}\n" for n, t, c in rows),
            encoding="utf-8",
        )
        s = read_minute_csv(p)
    start = int(s.start_s // 60)
    held = {(s.names[k], start + t) for k in range(s.n_series) for t in range(s.n_steps)}
    for i, (name, t, count) in enumerate(rows):
        k = s.names.index(name)
        assert s.values[k, t - start] == count
        assert s.line_of(k, t - start) == i + 2
    for name, t in held - {(n, t) for n, t, _ in rows}:
        assert s.line_of(s.names.index(name), t - start) is None  # a gap has no line


@pytest.mark.parametrize(
    ("text", "unit"),
    [
        ("minute,requests\n0,5\n-1,5\n", "min"),
        ("minute,requests\n0,5\n-1,5\n", "auto"),
        ("t,requests\n120,5\n-60,5\n", "s"),
    ],
)
def test_a_negative_time_names_the_line(tmp_path: Path, text: str, unit: str) -> None:
    # Before: accepted, the series started at minute -1.
    p = write(tmp_path, text)
    with pytest.raises(TraceFormatError, match="negative") as info:
        read_minute_csv(p, time_unit=unit)  # type: ignore[arg-type]
    assert info.value.line == 3


def test_a_negative_request_timestamp_names_the_line(tmp_path: Path) -> None:
    p = write(tmp_path, "timestamp\n5\n-5\n")
    with pytest.raises(TraceFormatError, match="negative") as info:
        read_requests(p)
    assert info.value.line == 3


@pytest.mark.parametrize(
    "text",
    [
        HEADER + "0,5,llama-3.1-8b\u200b,us-east\n",
        HEADER + "0,5,llama-3.1-8b,us-\u2060east\n",
        HEADER + "0,5,llama-3.1-8b,us-east\u00a0x\n",
    ],
)
def test_invisible_characters_in_trace_names_are_refused(tmp_path: Path, text: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(TraceFormatError, match=r"U\+") as info:
        read_minute_csv(p)
    assert info.value.line == 2
    r = write(tmp_path, "timestamp,model\n0,llama\u200b\n", "r.csv")
    with pytest.raises(TraceFormatError, match=r"U\+200B") as info:
        read_requests(r)
    assert info.value.line == 2


def test_simulate_refuses_a_huge_count_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = write(tmp_path, HEADER + "0,5,llama-3.1-8b,us-east\n1,1e300,llama-3.1-8b,us-east\n")
    code = main(["simulate", "--trace", str(p), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: {p}:3: ") and "Traceback" not in err


A = Pool(Cloud.AWS, "us-east-1", "", "g6.xlarge", Market.SPOT)
B = Pool(Cloud.AWS, "us-east-1", "", "g6e.xlarge", Market.ON_DEMAND)


@pytest.mark.parametrize("count", [10**300, 10**15, MAX_NODES_PER_POOL + 1])
def test_a_plan_past_the_pool_limit_launches_at_most_the_limit(count: int) -> None:
    # Before: `[key] * count` raised OverflowError (10**300) or MemoryError (10**15).
    model = "llama-3.1-8b"
    obs = Observation(10_000.0, DemandSample(10_000.0, {}), True, (), (), ())
    plan = Plan(
        PlanStatus.FEASIBLE, (Placement(model, A, count), Placement(model, B, 3)), 1, 1, 0, 0
    )
    proposal = propose(obs, plan)
    assert proposal.launches.count((model, A)) == MAX_NODES_PER_POOL
    assert proposal.launches.count((model, B)) == 3
    assert proposal.over_limit == ((model, A, count - MAX_NODES_PER_POOL),)
    ids = (f"n{i}" for i in itertools.count())
    guarded = apply_guards(
        obs,
        plan,
        proposal,
        CONFIG,
        lambda m, p: 1.0,
        lambda: next(ids),
        instance_types=load_catalog().instance_types,
    )
    assert len(guarded.actions) == MAX_NODES_PER_POOL + 3
    (held,) = guarded.held_back
    assert held.kind is HoldKind.POOL_LIMIT
    assert held.nodes == count - MAX_NODES_PER_POOL
    assert held.text.startswith(f"{count - MAX_NODES_PER_POOL} launches held: {model} in {A.key}")
