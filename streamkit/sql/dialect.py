"""sqlglot's Spark dialect with one fix: ``GROUP BY window(...)`` parses as a call.

sqlglot stops a GROUP BY list at a ``WINDOW`` token (the named-window clause), so
Spark's ``GROUP BY window(ts, '1 hour')`` fails to parse; here the list goes on, and a
``WINDOW name AS (...)`` clause after it still parses (and is refused as such).
"""

from __future__ import annotations

from typing import ClassVar

from sqlglot.dialects.spark import Spark
from sqlglot.parsers.spark import SparkParser
from sqlglot.tokenizer_core import TokenType


class StreamkitParser(SparkParser):
    """Spark's parser, with ``WINDOW`` no longer ending a GROUP BY list."""

    QUERY_MODIFIER_TOKENS: ClassVar = SparkParser.QUERY_MODIFIER_TOKENS - {TokenType.WINDOW}


class StreamkitSpark(Spark):
    """Spark SQL as sqlglot reads it, with ``GROUP BY window(...)`` parsed."""

    Parser = StreamkitParser
