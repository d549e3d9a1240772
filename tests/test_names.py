"""Names of models, regions and the like: one check (`scheduler.names`) refuses
characters a person cannot see in every config and input file; a config may start
with a byte-order mark."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsched.cli import main
from scheduler.config import ConfigError, load_config
from scheduler.names import name_problem

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config.example.toml"

INVISIBLE = [
    "\u0000",  # NUL
    "\u0007",  # bell
    "\u001b",  # escape: starts a terminal control sequence
    "\u007f",  # delete
    "\u0085",  # next line
    "\u00a0",  # no-break space
    "\u00ad",  # soft hyphen
    "\u115f",  # Hangul choseong filler
    "\u180e",  # Mongolian vowel separator
    "\u200b",  # zero-width space
    "\u200d",  # zero-width joiner
    "\u2028",  # line separator
    "\u202e",  # right-to-left override
    "\u2060",  # word joiner
    "\u2800",  # braille blank
    "\u3000",  # ideographic space
    "\u3164",  # Hangul filler
    "\ufe0f",  # variation selector 16
    "\ufeff",  # byte-order mark
    "\ue000",  # private use
    "\U000e0041",  # tag latin capital A
]


@pytest.mark.parametrize("ch", INVISIBLE, ids=[f"U+{ord(c):04X}" for c in INVISIBLE])
def test_invisible_characters_anywhere_in_a_name_are_refused(ch: str) -> None:
    for name in (f"{ch}llama", f"lla{ch}ma", f"llama{ch}"):
        problem = name_problem(name)
        assert problem is not None and f"U+{ord(ch):04X}" in problem


@pytest.mark.parametrize("name", ["llama-3.1-8b", "us-east", "europe-west4-a", "Llama 3 70B"])
def test_ordinary_names_pass(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize("name", [" us-east", "us-east "])
def test_leading_or_trailing_spaces_are_refused(name: str) -> None:
    assert name_problem(name) == "leading or trailing space"


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=12))
def test_an_accepted_name_shows_every_character_and_stays_one_line(name: str) -> None:
    if name_problem(name) is not None:
        return
    assert name == name.strip()
    assert len(name.splitlines()) <= 1
    for ch in name:
        assert ch == " " or (ch.isprintable() and unicodedata.category(ch)[0] not in "CZ")


def config_text(model: str, region: str) -> str:
    return f'[[models]]\nname = "{model}"\n[[regions]]\nname = "{region}"\nlocation = "us-east-1"\n'


@pytest.mark.parametrize(
    ("model", "region", "key"),
    [
        ("llama-3.1-8b\\u0000", "us-east", "models[0].name"),
        ("llama-3.1-8b", "us\\u200beast", "regions[0].name"),
        ("llama-3.1-8b", "us-east\\u00a0", "regions[0].name"),
    ],
)
def test_a_config_refuses_invisible_names(
    tmp_path: Path, model: str, region: str, key: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(config_text(model, region), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}: {key}:") and "U+" in problem


def test_a_config_refuses_invisible_names_in_lists_and_quotas(tmp_path: Path) -> None:
    text = (
        config_text("llama-3.1-8b", "us-east")
        + '[clouds.aws]\nregions = ["us-east-1\\u200b"]\ngpu_kinds = ["H100\\u0000"]\n'
        + '[[quotas]]\ncloud = "aws"\nregion = "\\u2060us-east-1"\nmax_gpus = 4\n'
    )
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    keys = [p.split(": ")[1] for p in info.value.problems]
    assert keys == ["clouds.aws.regions[0]", "clouds.aws.gpu_kinds[0]", "quotas[0].region"]


def test_a_config_starting_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    # Before: "not valid TOML: Invalid statement (at line 1, column 1)".
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + EXAMPLE.read_bytes())
    assert load_config(path) == load_config(EXAMPLE)


def test_validate_config_accepts_a_byte_order_mark(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + EXAMPLE.read_bytes())
    assert main(["validate-config", str(path)]) == 0
    assert "ok" in capsys.readouterr().out


def test_a_byte_order_mark_inside_a_name_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(config_text("\\ufeffllama-3.1-8b", "us-east"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"models\[0\]\.name"):
        load_config(path)
