"""Aggregate functions: one protocol (:class:`AggregateFunction`), one class per aggregate.

Adding an aggregate is one class here, one constructor in :mod:`streamkit.functions`, one
export in :mod:`streamkit`, and its oracle test; the executor, the batch kernel and the
streaming state handle it through the protocol.
"""

from streamkit.aggregates.approx_count_distinct import ApproxCountDistinct
from streamkit.aggregates.approx_percentile import ApproxPercentile
from streamkit.aggregates.avg import Avg
from streamkit.aggregates.base import AggregateFunction
from streamkit.aggregates.count import Count
from streamkit.aggregates.count_distinct import CountDistinct
from streamkit.aggregates.minmax import Max, Min
from streamkit.aggregates.sum import Sum

__all__ = [
    "AggregateFunction",
    "ApproxCountDistinct",
    "ApproxPercentile",
    "Avg",
    "Count",
    "CountDistinct",
    "Max",
    "Min",
    "Sum",
]
