"""Spark's ``LIKE`` patterns as regular expressions (:class:`~streamkit.expr.Match`): the
regex matches exactly the strings the pattern matches, a malformed escape raises
:class:`~streamkit.errors.SchemaError` when the plan is built."""

from __future__ import annotations

import re

from streamkit.errors import SchemaError


def like_regex(pattern: str, escape: str = "\\") -> str:
    """Spark's ``LIKE`` pattern as an anchored regular expression: ``%`` any characters,
    ``_`` one character, ``escape`` + ``%``/``_``/``escape`` that character itself."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == escape:
            if i + 1 >= len(pattern) or pattern[i + 1] not in ("%", "_", escape):
                raise SchemaError(
                    f"LIKE pattern {pattern!r}: the escape character {escape!r} must be "
                    "followed by %, _ or itself"
                )
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return "(?s)^" + "".join(out) + "$"
