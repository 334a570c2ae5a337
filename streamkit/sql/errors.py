"""Typed errors of ``sk.sql``. All are :class:`~streamkit.errors.PlanError`: raised when the
query is parsed and planned, before any row is read."""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamkit.errors import PlanError

if TYPE_CHECKING:
    from collections.abc import Iterable


class SqlError(PlanError):
    """A SQL query is invalid (a column neither grouped nor aggregated, a bad ordinal...)."""


class SqlSyntaxError(SqlError):
    """The text is not valid Spark SQL (sqlglot's parser message is included)."""


class UnsupportedSqlError(SqlError):
    """Valid Spark SQL that streamkit cannot run yet; ``construct`` names what was refused."""

    def __init__(self, construct: str, hint: str = "") -> None:
        self.construct = construct
        tail = f"; {hint}" if hint else ""
        super().__init__(f"{construct} is not supported in streamkit SQL yet{tail}")


class UnknownViewError(SqlError):
    """``FROM name`` names no registered view."""

    def __init__(self, name: str, available: Iterable[str]) -> None:
        self.name = name
        views = ", ".join(repr(v) for v in sorted(available)) or "(none)"
        super().__init__(
            f"no view named {name!r}; register one with df.create_or_replace_temp_view(name) "
            f"(views: {views})"
        )
