"""Typed errors. Every message says what went wrong and what to do about it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable


class StreamkitError(Exception):
    """Base class of every error streamkit raises on purpose."""


class PlanError(StreamkitError):
    """A query plan is invalid; raised when the plan is built, never inside a kernel."""


class ColumnNotFoundError(PlanError):
    """A column name does not exist in the input schema."""

    def __init__(self, name: str, available: Iterable[str]) -> None:
        self.name = name
        self.available = list(available)
        cols = ", ".join(repr(c) for c in self.available) or "(none)"
        super().__init__(f"column {name!r} not found; available columns: {cols}")


class SchemaError(PlanError):
    """An expression or aggregate is applied to a column of the wrong type."""


class DurationError(StreamkitError, ValueError):
    """A duration string could not be parsed."""


class ConfigError(StreamkitError):
    """Configuration (endpoint, credentials, paths) is missing or invalid."""


class MissingDependencyError(StreamkitError, ImportError):
    """An optional dependency is not installed; the message gives the install command."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"{module!r} is required for this feature; install it with: "
            f"pip install 'streamkit[{extra}]'"
        )
