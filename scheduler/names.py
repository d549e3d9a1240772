"""What a name in a config or input file may hold: the one check for the names of
models, regions, zones, instance types, accelerators and trace series.

A name is compared character for character with names in other files and is shown in
tables, logs and the TUI, so characters a person cannot see, or that end a line, are
refused: control characters (NUL, newline, escape), format characters (zero-width
space and joiners, the byte-order mark, bidirectional overrides), line and paragraph
separators, surrogate, private-use and unassigned code points, spaces other than the
plain space, characters that render as nothing (Hangul fillers, the braille blank,
variation selectors, the combining grapheme joiner), and leading or trailing spaces.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator

# Unicode general categories of characters that are invisible or break a line.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Letters and marks that render as blank although their category is a visible one.
_BLANK = frozenset(
    "\u034f\u115f\u1160\u17b4\u17b5\u180e\u2800\u3164\uffa0"
    + "".join(chr(c) for c in range(0xFE00, 0xFE10))  # variation selectors 1-16
    + "".join(chr(c) for c in range(0xE0100, 0xE01F0))  # variation selectors 17-256
)


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a name (one short clause), or None when it can."""
    for i, ch in enumerate(name):
        category = unicodedata.category(ch)
        if category in _REFUSED_CATEGORIES or ch in _BLANK or (category == "Zs" and ch != " "):
            label = unicodedata.name(ch, "") or {"Cc": "a control character"}.get(
                category, f"category {category}"
            )
            return (
                f"character {i + 1} is U+{ord(ch):04X} ({label}), which is invisible"
                " or ends a line; names take visible characters only"
            )
    if name != name.strip(" "):
        return "leading or trailing space"
    return None


def check_name(name: str) -> str:
    """`name` itself, or ValueError saying which character it cannot hold."""
    problem = name_problem(name)
    if problem is not None:
        raise ValueError(problem)
    return name


# A string field holding a name: pydantic runs `check_name` after its own checks.
Name = Annotated[str, AfterValidator(check_name)]
