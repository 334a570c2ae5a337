"""Parser of ``tests/mutation/equivalent.md``: the surviving mutants accepted, with reasons.

An entry is a level-3 heading naming the mutated function as mutmut does (the mutant name
without its ``__mutmut_N`` suffix), a ``diff`` code block with the changed lines, and the
reason as the following paragraph. Matching is on the function and the changed lines
(stripped), not on mutmut's number, so an entry survives renumbering by unrelated edits and
stops matching when the code it judged changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_ENTRY = re.compile(r"^### `([^`]+)`\n+```diff\n(.*?)```\n+(.*?)(?=^#|\Z)", re.M | re.S)


@dataclass(frozen=True)
class Equivalent:
    """One accepted survivor: where, what changed, and why it cannot be observed."""

    function: str
    lines: tuple[str, ...]
    reason: str


def changed_lines(diff: str) -> tuple[str, ...]:
    """The removed and added lines of a unified diff, stripped, in order."""
    return tuple(
        line[0] + line[1:].strip()
        for line in diff.splitlines()
        if line[:1] in {"-", "+"} and not line.startswith(("---", "+++"))
    )


def load_equivalents(path: Path) -> list[Equivalent]:
    """All entries of ``path`` (none when it does not exist)."""
    if not path.exists():
        return []
    return [
        Equivalent(function, changed_lines(diff), " ".join(reason.split()))
        for function, diff, reason in _ENTRY.findall(path.read_text())
    ]
