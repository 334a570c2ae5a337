"""KPL aggregation: user records out of aggregated Kinesis records, and a fetcher that
de-aggregates and resumes from sub-sequence checkpoints (see :mod:`.deaggregate`,
:mod:`.fetcher`)."""

from streamkit_kinesis.kpl.deaggregate import (
    MAGIC,
    DeaggregationStats,
    UserRecord,
    deaggregate,
    is_aggregated,
    position,
)
from streamkit_kinesis.kpl.fetcher import DeaggregatingFetcher, KplFetchers

__all__ = [
    "MAGIC",
    "DeaggregatingFetcher",
    "DeaggregationStats",
    "KplFetchers",
    "UserRecord",
    "deaggregate",
    "is_aggregated",
    "position",
]
