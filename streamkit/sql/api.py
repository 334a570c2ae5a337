"""``sk.sql``: Spark SQL over temporary views, into the DataFrame API's plan."""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamkit._deps import require
from streamkit.sql.catalog import default_catalog

if TYPE_CHECKING:
    from streamkit.frame import DataFrame
    from streamkit.sql.catalog import Catalog


def sql(query: str, *, catalog: Catalog | None = None) -> DataFrame:
    """Run one Spark SQL ``SELECT`` over views registered with
    ``df.create_or_replace_temp_view(name)`` (or in ``catalog``).

    Returns the DataFrame the equivalent DataFrame-API code builds: a batch query runs with
    ``.to_arrow()``, a query over a streaming view with ``.write_stream``. The whole query
    is checked here: unsupported SQL raises :class:`UnsupportedSqlError` naming the
    construct, invalid SQL :class:`SqlSyntaxError` or :class:`SqlError`, before any row is
    read. Needs sqlglot (``pip install 'streamkit[sql]'``).
    """
    require("sqlglot", "sql")
    from streamkit.sql.translate import translate

    return translate(query, catalog if catalog is not None else default_catalog())
