"""Spark SQL for streamkit: ``sk.sql(text)`` over views registered with
``df.create_or_replace_temp_view(name)``, parsed by sqlglot (Spark dialect) into the plan
the DataFrame API builds.

Importing this package does not import sqlglot; the first ``sql()`` call does.
"""

from __future__ import annotations

from streamkit.sql.api import sql
from streamkit.sql.catalog import Catalog, default_catalog
from streamkit.sql.errors import SqlError, SqlSyntaxError, UnknownViewError, UnsupportedSqlError

__all__ = [
    "Catalog",
    "SqlError",
    "SqlSyntaxError",
    "UnknownViewError",
    "UnsupportedSqlError",
    "default_catalog",
    "sql",
]
