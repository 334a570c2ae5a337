"""streamkit: Spark Structured Streaming semantics and a KCL-style consumer, on Arrow.

import streamkit as sk
df = sk.read.parquet("events/")
counts = df.group_by(sk.window("event_time", "1 hour"), "action").agg(sk.count())
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from streamkit import metrics, ui
from streamkit.config import AwsEndpoint, configure
from streamkit.errors import (
    ColumnNotFoundError,
    DurationError,
    PlanError,
    SchemaError,
    StreamkitError,
)
from streamkit.expr import Expr
from streamkit.frame import DataFrame, GroupedData
from streamkit.functions import (
    approx_count_distinct,
    approx_percentile,
    avg,
    coalesce,
    col,
    count,
    count_distinct,
    from_epoch,
    lit,
    max,
    mean,
    min,
    sum,
    to_timestamp,
    when,
    window_time,
)
from streamkit.group_state import GroupState, GroupStateTimeout
from streamkit.io import from_arrow, from_pandas, read
from streamkit.sql import sql  # binds ``sk.sql`` to the function, not the package (no sqlglot)
from streamkit.stateful_processor import (
    ExpiredTimerInfo,
    StatefulProcessor,
    StatefulProcessorHandle,
    TimeMode,
    TimerValues,
)
from streamkit.windows import session_window, window

if TYPE_CHECKING:
    from streamkit.streaming.listeners import streams
    from streamkit.streaming.reader import read_stream
    from streamkit.streaming.sinks import memory_table
    from streamkit.streaming.trigger import Trigger

_STREAMING = {
    "read_stream": "streamkit.streaming.reader",
    "streams": "streamkit.streaming.listeners",
    "memory_table": "streamkit.streaming.sinks",
    "Trigger": "streamkit.streaming.trigger",
}
"""Names served by the streaming package, imported on first use (keeps ``import
streamkit`` cheap for batch work)."""


def __getattr__(name: str) -> Any:
    module = _STREAMING.get(name)
    if module is None:
        raise AttributeError(f"module 'streamkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "AwsEndpoint",
    "ColumnNotFoundError",
    "DataFrame",
    "DurationError",
    "ExpiredTimerInfo",
    "Expr",
    "GroupState",
    "GroupStateTimeout",
    "GroupedData",
    "PlanError",
    "SchemaError",
    "StatefulProcessor",
    "StatefulProcessorHandle",
    "StreamkitError",
    "TimeMode",
    "TimerValues",
    "Trigger",
    "approx_count_distinct",
    "approx_percentile",
    "avg",
    "coalesce",
    "col",
    "configure",
    "count",
    "count_distinct",
    "from_arrow",
    "from_epoch",
    "from_pandas",
    "lit",
    "max",
    "mean",
    "memory_table",
    "metrics",
    "min",
    "read",
    "read_stream",
    "session_window",
    "sql",
    "streams",
    "sum",
    "to_timestamp",
    "ui",
    "when",
    "window",
    "window_time",
]
