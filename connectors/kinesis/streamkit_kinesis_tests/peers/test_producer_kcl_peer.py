"""streamkit's producer aggregates; the Java KCL (2.6.1, see streamkit.testing.peers.kcl)
de-aggregates and must yield exactly the user records put.

The KCL drops an aggregated record when one of its user records hashes outside the shard
it was read from, so a wrong grouping shows up here as missing records; a wrong MD5 as
records delivered whole (undecoded). Deadlines are generous (2-core CI machines).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.producer.producer import KinesisProducer
from streamkit_kinesis.testing.streams import fresh_stream, unique

from streamkit.testing.peers.kcl import install_kcl, start_kcl_worker
from streamkit_kinesis_tests.consumer.consumer_support import drop_table, wait_until

if TYPE_CHECKING:
    from pathlib import Path

    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.slow]

KCL_START = 300.0
"""Deadline for the JVM to start, take the leases and read every shard."""


@pytest.fixture(scope="module", autouse=True)
def kcl_built(servers_cache_dir: Path) -> None:
    """Build the KCL peer before the test (first run only), outside its deadline."""
    install_kcl(servers_cache_dir)


async def test_the_java_kcl_reads_exactly_the_user_records_streamkit_aggregated(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    put = [
        (f"k{i % 9}:{i}:".ljust(60, "."), f"k{i % 9}", str(i % 9 * 2**124) if i % 9 > 6 else None)
        for i in range(900)
    ]
    app = unique("kclagg")
    async with fresh_stream(ep, 3, "kclagg") as (stream, _):
        async with KinesisProducer(ep, stream, linger_ms=20, aggregate=True) as producer:
            for data, pk, ehk in put:
                await producer.put(data.encode(), pk, ehk)
        assert producer.metrics().kinesis_records < len(put) // 10
        try:
            with start_kcl_worker(ep, stream, app, "kcl-A", tmp_path / "kcl",
                                  failover_time=10.0) as kcl:  # fmt: skip
                await wait_until(lambda: len(kcl.records()) >= len(put), KCL_START,
                                 "the KCL worker reading every user record")  # fmt: skip
                got = kcl.records()
        finally:
            await drop_table(ep, app)
    assert sorted((r["data"], r["pk"]) for r in got) == sorted((d, pk) for d, pk, _ in put)
    assert max(int(r["sub"]) for r in got) > 0, "the KCL saw no aggregated record"
    order: dict[str, list[str]] = defaultdict(list)
    for r in got:  # one shard per key: the log is in each shard's order
        order[r["pk"]].append(r["data"])
    expected: dict[str, list[str]] = defaultdict(list)
    for data, pk, _ in put:
        expected[pk].append(data)
    assert order == expected
