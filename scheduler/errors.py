"""Validation errors as a person reads them: one line per problem, naming the file and
the key, in the words of the file's own format rather than pydantic's.

Every file capsched reads through a pydantic schema (config, demand and fleet files,
scenarios, sweeps) reports its problems through `problem_lines`, so the same mistake
reads the same everywhere:

* a value of the wrong shape says what was expected and what was found
  (`expected an object {"demand": [...]}, got a list`), never a class name;
* an unknown key says so, and names the closest known key when there is one
  (`unknown key; did you mean 'seed'?`, by `difflib.get_close_matches`);
* a missing key, a list that is too short and a validator's own reason are said
  plainly (no "Field required", "Value error, ").

Other messages (bounds, allowed values) are pydantic's, which already name the limit.
"""

from __future__ import annotations

import difflib
import json
import re
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

Syntax = Literal["json", "toml"]  # the file's format: it decides "object" or "table"
Loc = tuple[int | str, ...]  # a key path as pydantic gives it

# Error types that mean "this value has the wrong shape", and what was expected.
_EXPECTED: dict[str, str] = {
    "list_type": "a list",
    "tuple_type": "a list",
    "set_type": "a list",
    "frozen_set_type": "a list",
    "string_type": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
}
_OBJECT_TYPES = ("model_type", "model_attributes_type", "dict_type")
_VALIDATOR_PREFIXES = ("Value error, ", "Assertion failed, ")


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")  # a key shown as it is in a key path
_MEMBER = re.compile(r"^[a-z][a-z0-9-]*\[.+\]$")  # pydantic's name of a union/validator member


def problem_lines(
    exc: ValidationError,
    path: Path | str,
    schema: type[BaseModel],
    *,
    syntax: Syntax,
    prefix: Loc = (),
) -> list[str]:
    """One `FILE: key.path: reason` line per problem of `exc`, raised by validating a
    document against `schema`. `prefix` is where that document sits in the file (a
    scenario's `config` table, a sweep's `scenarios[2]`); it is shown, not looked up."""
    errors = exc.errors()
    # pydantic appends the failing union/validator member names to loc (`function-after[
    # _check(), Config]`, `tagged-union[...]`); keep the key path, including a user's key
    # that merely contains a bracket.
    locs: list[Loc] = [
        tuple(p for p in e["loc"] if not (isinstance(p, str) and _MEMBER.match(p))) for e in errors
    ]
    lines = []
    for err, loc in zip(errors, locs, strict=True):
        # A list whose only item failed also reads as "too short": say it once.
        if err["type"] == "too_short" and any(
            len(o) > len(loc) and o[: len(loc)] == loc for o in locs
        ):
            continue
        where = key_path((*prefix, *loc))
        reason = _reason(err, loc, schema, syntax)
        lines.append(f"{path}: {where}: {reason}" if where else f"{path}: {reason}")
    return lines


def key_path(loc: Loc) -> str:
    """`models[0].name` for ("models", 0, "name"); "" for the whole document."""
    out = ""
    for part in loc:
        if isinstance(part, str) and not _PLAIN_KEY.match(part):
            # Quoted as TOML writes it: a key with a newline must not split the problem
            # line, and `[` or `.` in a key must not read as a path.
            part = json.dumps(part)
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def did_you_mean(word: str, known: Sequence[str]) -> str | None:
    """The known name closest to `word` (case-insensitive), if one is close enough."""
    lowered = {k.lower(): k for k in known}
    match = difflib.get_close_matches(word.lower(), list(lowered), n=1)
    return lowered[match[0]] if match else None


def _reason(err: Any, loc: Loc, schema: type[BaseModel], syntax: Syntax) -> str:
    kind: str = err["type"]
    got = _kind_of(err.get("input"), syntax)
    if kind in _OBJECT_TYPES:
        model = _model_at(schema, loc)
        shape = f" {_shape(model)}" if model is not None and syntax == "json" else ""
        return f"expected {_object(syntax)}{shape}, got {got}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {got}"
    if kind == "extra_forbidden" and loc:
        parent = _model_at(schema, loc[:-1])
        known = list(parent.model_fields) if parent is not None else []
        close = did_you_mean(str(loc[-1]), known) if known else None
        if close is not None:
            return f"unknown key; did you mean {close!r}?"
        return f"unknown key (known: {', '.join(known)})" if known else "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "too_short":
        ctx = err.get("ctx", {})
        n = ctx.get("min_length", 1)
        return f"needs at least {n} item{'s' if n != 1 else ''}, got {ctx.get('actual_length', 0)}"
    msg: str = err["msg"]
    for head in _VALIDATOR_PREFIXES:
        msg = msg.removeprefix(head)
    return msg


def _object(syntax: Syntax) -> str:
    return "an object" if syntax == "json" else "a table"


def _kind_of(value: object, syntax: Syntax) -> str:
    """What a parsed value is, in the file's own words."""
    if isinstance(value, dict):
        return _object(syntax)
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {json.dumps(shown)}"
    if value is None:
        return "null"
    return type(value).__name__


def _shape(model: type[BaseModel]) -> str:
    """A JSON sketch of what `model` wants: its required keys, with their kind of value."""
    fields = [(n, f) for n, f in model.model_fields.items() if f.is_required()]
    if not fields:
        fields = list(model.model_fields.items())
    parts = [f"{json.dumps(name)}: {_placeholder(f.annotation)}" for name, f in fields]
    return "{" + ", ".join(parts) + "}"


def _placeholder(annotation: Any) -> str:
    t = _unwrap(annotation)
    origin = get_origin(t)
    if origin in (list, tuple, set, frozenset) or (origin is None and t in (list, tuple)):
        return "[...]"
    if origin is dict or _is_model(t):
        return "{...}"
    return '"..."' if t is str else "..."


def _is_model(t: object) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def _unwrap(t: Any) -> Any:
    """`X | None` and `Optional[X]` as X (the only member that is not None)."""
    if get_origin(t) in (Union, types.UnionType):
        members = [a for a in get_args(t) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return t


def _model_at(schema: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The schema model that validates the value at `loc`, if it is a model."""
    t: Any = schema
    for part in loc:
        t = _unwrap(t)
        origin = get_origin(t)
        if isinstance(part, str):
            if _is_model(t) and part in t.model_fields:
                t = t.model_fields[part].annotation
            elif origin is dict:
                t = get_args(t)[1]
            else:
                return None
        elif origin in (list, tuple, set, frozenset):
            t = get_args(t)[0]
        else:
            return None
    t = _unwrap(t)
    return t if _is_model(t) else None
