"""Temporary views for ``sk.sql``: names bound to DataFrames, as Spark's session catalog.

A view holds the DataFrame's plan as it was registered (a watermark declared with
``df.with_watermark`` before registering is part of it, as in Spark). Names are
case-insensitive, as Spark's. One catalog serves the process; pass your own
:class:`Catalog` to ``sk.sql(..., catalog=...)`` to keep views apart (tests, libraries).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from streamkit.sql.errors import SqlError, UnknownViewError

if TYPE_CHECKING:
    from streamkit.frame import DataFrame


class Catalog:
    """Views by case-insensitive name; safe to use from several threads."""

    def __init__(self) -> None:
        self._views: dict[str, tuple[str, DataFrame]] = {}
        self._lock = threading.Lock()

    def register(self, name: str, frame: DataFrame) -> None:
        """Bind ``name`` to ``frame``, replacing any view of that name."""
        if not isinstance(name, str) or not name.strip():
            raise SqlError(f"a view name must be a non-empty string, got {name!r}")
        with self._lock:
            self._views[name.lower()] = (name, frame)

    def lookup(self, name: str) -> DataFrame:
        """The DataFrame of view ``name``; raises :class:`UnknownViewError` listing views."""
        with self._lock:
            found = self._views.get(name.lower())
            if found is None:
                raise UnknownViewError(name, (n for n, _ in self._views.values()))
            return found[1]

    def drop(self, name: str) -> bool:
        """Forget view ``name``; False when there was none (Spark's ``dropTempView``)."""
        with self._lock:
            return self._views.pop(name.lower(), None) is not None

    def names(self) -> list[str]:
        """Registered view names as they were given, sorted."""
        with self._lock:
            return sorted(n for n, _ in self._views.values())


_DEFAULT = Catalog()


def default_catalog() -> Catalog:
    """The process-wide catalog that ``df.create_or_replace_temp_view`` registers into."""
    return _DEFAULT
