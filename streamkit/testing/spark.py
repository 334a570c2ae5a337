"""A local PySpark session for the differential tests against Spark (``tests/differential``).

One JVM per test session, started lazily by the ``spark`` fixture of
:mod:`streamkit.testing.fixtures`: ``local[2]``, one shuffle partition (so a micro-batch
is one small task, not 200), UTC session time zone, a 4 GB driver heap, no UI, only the
JVM's quick (C1) JIT compiler, and generous network timeouts so a busy 2-core machine does
not time out the driver. None of these changes what a query computes.
Needs ``pyspark`` (``pip install 'streamkit[test]'``) and a Java 17 runtime.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from streamkit._deps import require

if TYPE_CHECKING:
    from collections.abc import Iterator

SPARK_CONF: dict[str, str] = {
    "spark.sql.shuffle.partitions": "1",
    "spark.default.parallelism": "1",
    "spark.sql.session.timeZone": "UTC",
    # 768 MB ran out ("Java heap space") in a full CI run. Measured on a fresh clone with
    # the callbacks released after each module (release_finished_callbacks): ~0.65 GB
    # live between modules, up to ~1.25 GB inside the largest module, where a 2 GB heap's
    # old generation (1.36 GB) ran full collections back to back; the machines have 24 GB
    "spark.driver.memory": "4g",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.adaptive.enabled": "false",
    "spark.network.timeout": "600s",
    "spark.executor.heartbeatInterval": "60s",
    # Python workers (``transformWithStateInPandas`` starts one per task and one on the
    # driver) must connect back within this; 15 s is not enough on a loaded 2-core machine
    "spark.python.authenticate.socketTimeout": "180s",
    "spark.sql.streaming.stateStore.maintenanceInterval": "10min",
    "spark.sql.streaming.noDataMicroBatches.enabled": "true",
    # C1 only: the suite's JVM runs hundreds of small, different plans, never long enough
    # for C2's compilations to pay off; measured on test_operators.py, 29% less JVM CPU.
    # C1 only also shrinks the default code cache to 48 MB, which the suite's thousands of
    # generated classes filled once ("Out of space in CodeCache for adapters" stopped the
    # SparkContext and every later Spark test failed): reserve 256 MB as tiered C2 would
    "spark.driver.extraJavaOptions": (
        "-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=256m "
        "-Duser.timezone=UTC"
    ),
}
"""The session's settings; the last two keep Spark's defaults explicit or cheap."""


def _finished(batch: Any, batch_id: int) -> None:
    raise RuntimeError(
        "foreachBatch of a query called after release_finished_callbacks: release only "
        "when every query of the session has stopped"
    )


def release_finished_callbacks(session: Any) -> int:
    """Cut each ``foreachBatch`` callback from the Python objects it closes over; returns
    how many were cut. Call it only when no query is running (between test modules).

    py4j keeps a Python callback alive until the JVM's proxy of it is collected, and the
    JVM keeps that proxy as long as its query object lives. A test object that holds the
    query's handle and is reachable from its own callback (``foreachBatch(self._collect)``)
    therefore ties the two runtimes' collectors in a cycle neither can see: every such
    query stayed alive to the end of the session, and a full CI run ran the 768 MB heap
    out. With the callback's function replaced, the Python side can be freed, which
    releases the handle, then the JVM's query. Refused (returns 0) while a query of
    ``session`` is active.
    """
    from pyspark.sql.utils import ForeachBatchFunction

    if session.streams.active:
        return 0
    server = session.sparkContext._gateway._callback_server
    if server is None:
        return 0
    cut = 0
    with server.pool.lock:
        for proxy in server.pool.dict.values():
            if isinstance(proxy, ForeachBatchFunction) and proxy.func is not _finished:
                proxy.func = _finished
                cut += 1
    return cut


@contextmanager
def spark_session(app_name: str = "streamkit-differential") -> Iterator[Any]:
    """Start a local SparkSession (see the module docstring), yield it, stop it."""
    require("pyspark", "test")
    from pyspark.sql import SparkSession

    # Python UDF workers (``applyInPandasWithState``) run this interpreter, with its pandas
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    builder = SparkSession.builder.master("local[2]").appName(app_name)
    for key, value in SPARK_CONF.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()
