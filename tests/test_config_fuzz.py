"""Bad input: fuzzed config files never give a traceback (only ConfigError lines naming
the file and a key path, and exit code 2 from the CLI), and a load signal that returns
NaN, nothing, negative numbers or garbage never scales the fleet down."""

from __future__ import annotations

import contextlib
import io
import json
import math
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from fakes import no_sleep
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.sim import SimCloud
from capsched.cli import main as cli_main
from scheduler.config import Config, ConfigError, load_config
from scheduler.domain.actions import Drain, Terminate
from scheduler.fleet.catalog import load_catalog
from scheduler.loop.factory import build_scheduler
from scheduler.loop.store import StateStore
from scheduler.ports.metrics import DemandSample

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config.example.toml"
EXAMPLE_DOC: dict[str, Any] = tomllib.loads(EXAMPLE.read_text())
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# -- a small TOML writer (inline tables only, so any nesting is one line) ------------------


def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return (
            "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
        )
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string (or fails to parse)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def toml_doc(doc: dict[str, Any]) -> str:
    return "\n".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in doc.items()) + "\n"


keys = st.one_of(
    st.sampled_from(
        ["scheduler", "models", "regions", "name", "tick_interval_s", "seed", "daemon", "x"]
    ),
    st.text(min_size=1, max_size=8),
)
scalars = st.one_of(  # no None: TOML has no null
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
junk = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)


def deep(depth: int) -> object:
    v: object = 1
    for i in range(depth):
        v = [v] if i % 2 else {"k": v}
    return v


# -- mutations of the example config --------------------------------------------------------


def paths(doc: object, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths(v, (*prefix, i))
    return out


EXAMPLE_PATHS = paths(EXAMPLE_DOC)


@st.composite
def mutated_example(draw: st.DrawFn) -> dict[str, Any]:
    doc = json.loads(json.dumps(EXAMPLE_DOC))  # a deep copy
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(EXAMPLE_PATHS))
        parent: Any = doc
        try:
            for part in path[:-1]:
                parent = parent[part]
            last = path[-1]
            parent[last]
        except (KeyError, IndexError, TypeError):
            continue
        what = draw(
            st.sampled_from(["junk", "delete", "unknown", "huge", "negative", "nan", "deep"])
        )
        if what == "delete":
            del parent[last]
        elif what == "unknown" and isinstance(parent, dict):
            parent[draw(keys)] = draw(junk)
        elif what == "huge":
            parent[last] = draw(st.sampled_from([2**63, 2**64 + 1, 10**30, 1e308, -1e308]))
        elif what == "negative":
            parent[last] = draw(st.sampled_from([-1, -0.5, -(2**63)]))
        elif what == "nan":
            parent[last] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        elif what == "deep":
            parent[last] = deep(draw(st.integers(10, 200)))
        else:
            parent[last] = draw(junk)
    return doc


# pydantic's own wording, which a person editing a TOML file should never have to read.
PYDANTIC_WORDS = (
    "instance of",
    "Value error, ",
    "Field required",
    "Extra inputs",
    "valid dictionary",
    "valid tuple",
    "valid list",
    "after validation",
)


def check_problems(exc: ConfigError, path: Path) -> None:
    assert exc.problems
    for line in exc.problems:
        assert line.startswith(f"{path}: "), line
        rest = line[len(str(path)) + 2 :]
        # "key.path: reason", or a reason about the whole file (not TOML, not UTF-8,
        # cannot read, a rule across tables): one line either way.
        assert rest.strip() and "\n" not in line, line
        assert not any(w in rest for w in PYDANTIC_WORDS), line
        assert "Traceback" not in line


def load_or_error(text: bytes, tmp_path: Path) -> tuple[Path, Config | ConfigError]:
    path = tmp_path / "fuzz.toml"
    path.write_bytes(text)
    try:
        return path, load_config(path)
    except ConfigError as exc:
        check_problems(exc, path)
        return path, exc


def run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli_main(argv)
    return code, err.getvalue()


# -- the config fuzz ---------------------------------------------------------------------------


@FUZZ
@given(doc=st.dictionaries(keys, junk, max_size=6))
def test_random_documents_never_crash_the_loader(tmp_path: Path, doc: dict[str, Any]) -> None:
    load_or_error(toml_doc(doc).encode(), tmp_path)


@FUZZ
@given(doc=mutated_example())
def test_mutated_example_gives_config_errors_or_a_config(
    tmp_path: Path, doc: dict[str, Any]
) -> None:
    path, result = load_or_error(toml_doc(doc).encode(), tmp_path)
    code, err = run_cli(["validate-config", str(path)])
    assert "Traceback" not in err
    if isinstance(result, ConfigError):
        assert code == 2
        assert [
            ln.removeprefix("error: ") for ln in err.rstrip("\n").split("\n")
        ] == result.problems
    else:
        assert code in (0, 2)  # 2: a name the catalog or profiles do not know


@FUZZ
@given(
    data=st.data(),
    inserted=st.binary(min_size=1, max_size=8),
)
def test_byte_level_damage_never_crashes(
    tmp_path: Path, data: st.DataObject, inserted: bytes
) -> None:
    raw = EXAMPLE.read_bytes()
    at = data.draw(st.integers(0, len(raw)))
    cut = data.draw(st.integers(0, 16))
    load_or_error(raw[:at] + inserted + raw[at + cut :], tmp_path)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (b'[scheduler]\ntick_interval_s = "5m"\n', "scheduler.tick_interval_s"),
        (b"[scheduler]\ntick_interval_s = 7\n", "scheduler.tick_interval_s"),  # not whole steps
        (b"[scheduler]\ntick_interval_s = 7200\n", "scheduler.tick_interval_s"),
        (b"[solver]\nseed = 99999999999999999999\n", "solver.seed"),
        (b"[daemon]\ntick_timeout_s = inf\n", "daemon.tick_timeout_s"),
        (b"[guards]\nmin_node_age_s = nan\n", "guards.min_node_age_s"),
        (b"[planning]\nbudget_usd_per_hour = -5\n", "planning.budget_usd_per_hour"),
        (b"[bogus]\nx = 1\n", "bogus"),
        (b"[[models]]\nname = 5\n", "models[0].name"),
        (b'x = "\xff\xfe"\n', "not UTF-8"),
        (b"a = " + b"[" * 3000 + b"]" * 3000 + b"\n", "nested too deeply"),
        (b"a = " + b"{b=" * 800 + b"1" + b"}" * 800 + b"\n", "nested too deeply"),
    ],
    ids=[
        "string-for-float",
        "tick-not-whole-steps",
        "tick-over-an-hour",
        "seed-over-int32",
        "inf",
        "nan",
        "negative-budget",
        "unknown-table",
        "int-for-name",
        "not-utf8",
        "deep-arrays",
        "deep-tables",
    ],
)
def test_known_bad_files_name_the_key(tmp_path: Path, text: bytes, key: str) -> None:
    base = b'[[models]]\nname = "llama-3.1-8b"\n[[regions]]\nname = "us-east"\n'
    base += b'location = "us-east-1"\n'
    path, result = load_or_error(
        text + b"\n" + base if text.startswith(b"[") else text + base, tmp_path
    )
    assert isinstance(result, ConfigError)
    assert any(key in line for line in result.problems), result.problems
    code, err = run_cli(["daemon", "--config", str(path)])
    assert code == 2 and "Traceback" not in err and key in err


def test_daemon_refuses_what_validate_config_refuses(tmp_path: Path) -> None:
    # Well formed, but the model has no capacity profile: every tick would fail on it.
    path = tmp_path / "c.toml"
    path.write_text(
        '[[models]]\nname = "nosuch"\n[[regions]]\nname = "us-east"\nlocation = "us-east-1"\n'
    )
    code, err = run_cli(["daemon", "--config", str(path)])
    assert code == 2 and "models[0].name" in err and "Traceback" not in err


def test_daemon_with_a_bad_config_exits_2_in_a_subprocess(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(
        EXAMPLE.read_bytes().replace(b"tick_interval_s = 300", b"tick_interval_s = -1")
    )
    proc = subprocess.run(
        [sys.executable, "-m", "capsched.cli", "daemon", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{path}: scheduler.tick_interval_s:" in proc.stderr


# -- a broken load signal never scales down -----------------------------------------------------

MODEL, REGION = "llama-3.1-8b", "us-east"
KEY = (MODEL, REGION)

bad_readings = st.one_of(
    st.just(math.nan),
    st.floats(max_value=-1e-9, allow_nan=False),  # negative, -inf included
    st.none(),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.just(10**400),
    st.just(math.inf),
)
bad_samples = st.one_of(
    st.none(),  # the source returns nothing at all
    st.just("garbage"),
    st.builds(DemandSample, st.just(0.0)),  # an empty sample
    st.builds(DemandSample, st.just(0.0), st.fixed_dictionaries({KEY: bad_readings})),
    st.builds(  # a good rate with a bad peak
        DemandSample,
        st.just(0.0),
        st.just({KEY: 1.0}),
        st.fixed_dictionaries({KEY: bad_readings}),
    ),
    st.builds(DemandSample, st.just(0.0), st.just([1, 2])),  # not even a mapping
    st.builds(DemandSample, st.just(0.0), st.just({("other", REGION): 0.0})),  # wrong series
)


class Scripted:
    def __init__(self) -> None:
        self.sample: object = None

    async def demand(self, now_s: float) -> DemandSample:
        return self.sample  # type: ignore[return-value] - garbage on purpose


@settings(FUZZ, max_examples=40)  # each example scales a fleet up first
@given(bad=st.lists(bad_samples, min_size=1, max_size=4))
async def test_bad_load_signal_never_scales_down(tmp_path: Path, bad: list[object]) -> None:
    config = Config.model_validate(
        {
            "models": [{"name": MODEL}],
            "regions": [{"name": REGION, "location": "us-east-1", "max_latency_ms": 40}],
            "clouds": {"aws": {"regions": ["us-east-1"]}, "gcp": {"enabled": False}},
            "planning": {"budget_usd_per_hour": None},
            "guards": {"min_node_age_s": 0, "max_scale_down_fraction": 1.0},
        }
    )
    catalog = load_catalog()
    cloud = SimCloud(catalog.offerings, catalog.instance_types, boot_time_s=0)
    metrics = Scripted()
    store = StateStore(":memory:")
    rec = build_scheduler(config, provider=cloud, metrics=metrics, store=store, sleep=no_sleep)
    metrics.sample = DemandSample(0.0, {KEY: 60.0})
    for t in (0.0, 300.0):
        await rec.tick(t)
    before = {n.node_id for n in store.live_nodes()}
    assert len(before) > 1
    now = 300.0
    for sample in bad:
        now += 300.0
        cloud.advance_to(now)
        metrics.sample = sample
        report = await rec.tick(now)
        assert not report.demand_complete
        assert not any(isinstance(a, Drain | Terminate) for a in report.actions), report
    assert before <= {n.node_id for n in store.live_nodes()}
    store.close()


def test_a_huge_seasonal_period_is_a_config_error_not_a_hang(tmp_path: Path) -> None:
    # 2**61 - 1 is prime: finding a knot width by trial division would never end.
    text = EXAMPLE.read_text().replace(
        "seasonal_periods_min = [1440, 10080]", f"seasonal_periods_min = [{2**61 - 1}]"
    )
    _, result = load_or_error(text.encode(), tmp_path)
    assert isinstance(result, ConfigError)
    assert any(
        "forecast.seasonal_periods_min" in p or "seasonal periods" in p for p in result.problems
    )
