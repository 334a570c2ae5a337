"""Fixtures the differential tests share."""

from __future__ import annotations

from typing import Any

import pytest

ROCKSDB = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
"""Spark's RocksDB state store provider."""


@pytest.fixture(scope="module")
def rocksdb(spark: Any) -> Any:
    """A session of the shared SparkContext with the RocksDB state store, which
    ``transformWithStateInPandas`` requires (other tests keep the default store)."""
    session = spark.newSession()
    session.conf.set("spark.sql.streaming.stateStore.providerClass", ROCKSDB)
    return session
