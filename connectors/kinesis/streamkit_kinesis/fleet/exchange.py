"""The exchange stream ``<app_name>-exchange`` and its partition -> shard layout.

Partition ``p`` of ``n`` goes to the shard whose hash-key range holds
``ExplicitHashKey = p * 2**128 // n`` (a fresh stream of ``n`` shards splits the key
space evenly, so partition ``p`` is its ``p``-th shard). The ranges are looked up once,
when a worker starts; records are then routed by shard id and explicit hash key, never by
hashing a partition key.

The stream's shard count is fixed for the query's life: a stream found with another open
shard count, or resharded (closed shards), is refused at start with the fix.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from streamkit.errors import ConfigError
from streamkit_kinesis.client import KinesisApi, call, endpoint_url
from streamkit_kinesis.errors import ThrottledError, error_code
from streamkit_kinesis.retry import Backoff, Retrier, Rng, Sleep, is_throttling, is_transient
from streamkit_kinesis.shards import list_shards_blocking

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from streamkit_kinesis.types import ShardInfo

T = TypeVar("T")

HASH_SPACE = 2**128
"""Kinesis hash keys are integers in ``[0, 2**128)``."""
DEFAULT_EXCHANGE_SHARDS = 4
"""Shards (= partitions) of the exchange stream unless the fleet says otherwise."""


def exchange_stream_name(app_name: str) -> str:
    """The exchange stream of an application: ``<app_name>-exchange``."""
    return f"{app_name}-exchange"


def partition_hash_key(partition: int, partitions: int) -> int:
    """The explicit hash key of ``partition`` out of ``partitions``: ``p * 2**128 // n``."""
    if not 0 <= partition < partitions:
        raise ValueError(f"partition {partition} is outside [0, {partitions})")
    return partition * HASH_SPACE // partitions


class ExchangeMismatchError(ConfigError):
    """The exchange stream exists with a layout the fleet cannot use (refused at start)."""


@dataclass(frozen=True)
class ExchangeLayout:
    """Where each exchange partition goes: ``shard_ids[p]`` is partition ``p``'s shard."""

    stream: str
    """The exchange stream's name."""
    shard_ids: tuple[str, ...]
    """Shard id per partition (index = partition)."""

    @property
    def partitions(self) -> int:
        """Number of exchange partitions (= shards of the exchange stream)."""
        return len(self.shard_ids)

    def shard_for(self, partition: int) -> str:
        """The exchange shard that partition ``partition`` is written to."""
        return self.shard_ids[partition]

    def explicit_hash_key(self, partition: int) -> str:
        """The ``ExplicitHashKey`` (decimal) of partition ``partition``'s records."""
        return str(partition_hash_key(partition, self.partitions))

    def partition_of(self, shard_id: str) -> int:
        """The partition written to ``shard_id`` (ValueError if none is)."""
        try:
            return self.shard_ids.index(shard_id)
        except ValueError:
            raise ValueError(f"{shard_id} is not a shard of exchange {self.stream}") from None

    @classmethod
    def from_shards(
        cls, stream: str, shards: Sequence[ShardInfo], partitions: int
    ) -> ExchangeLayout:
        """The layout of ``partitions`` partitions over ``shards`` (ListShards of the stream).

        Raises :class:`ExchangeMismatchError` when the open shard count is not
        ``partitions`` or the stream was resharded (closed shards exist).
        """
        open_shards = [s for s in shards if not s.is_closed]
        closed = [s.shard_id for s in shards if s.is_closed]
        if closed or len(open_shards) != partitions:
            found = f"{len(open_shards)} open shard(s)"
            if closed:
                found += f" and {len(closed)} closed one(s) (it was resharded)"
            raise ExchangeMismatchError(
                f"exchange stream {stream!r} has {found}, but this fleet uses "
                f"exchange_shards={partitions}; the exchange layout is fixed for the query's "
                f"life: start every worker with .fleet(exchange_shards={len(open_shards)}) if "
                f"that stream is this query's, or to start over delete the stream, the "
                f"'<app_name>-exchange' lease table and the checkpoint root"
            )
        ids: list[str] = []
        for p in range(partitions):
            key = partition_hash_key(p, partitions)
            owner = [
                s.shard_id
                for s in open_shards
                if s.hash_key_range.starting_hash_key <= key <= s.hash_key_range.ending_hash_key
            ]
            if len(owner) != 1:
                raise ExchangeMismatchError(
                    f"exchange stream {stream!r}: {len(owner)} open shards hold hash key {key} "
                    f"(partition {p}); the stream's hash ranges are broken: delete and recreate it"
                )
            ids.append(owner[0])
        return cls(stream, tuple(ids))


async def ensure_exchange(
    client: KinesisApi,
    app_name: str,
    shards: int = DEFAULT_EXCHANGE_SHARDS,
    *,
    timeout: float = 120.0,
    poll_interval: float = 0.2,
    sleep: Sleep = asyncio.sleep,
    rng: Rng = random.random,
    clock: Callable[[], float] = time.monotonic,
) -> ExchangeLayout:
    """Create ``<app_name>-exchange`` with ``shards`` shards if missing, wait until it is
    ACTIVE, and return its layout.

    Several workers may call this at once: ``ResourceInUseException`` means another one
    created it (it is then waited for and checked). An unreachable endpoint fails fast
    (:class:`~streamkit_kinesis.errors.EndpointUnreachableError` after about a second, as
    every start of the connector); throttling and transient server errors are retried
    with backoff until ``timeout`` (then
    :class:`~streamkit_kinesis.errors.ThrottledError`). A stream with another shard count
    raises :class:`ExchangeMismatchError` naming the fix.
    """
    if not isinstance(shards, int) or isinstance(shards, bool) or shards < 1:
        raise ConfigError(f"exchange_shards must be a positive integer, got {shards!r}")
    stream = exchange_stream_name(app_name)
    url = endpoint_url(client)
    deadline = clock() + timeout
    retrier = Retrier(Backoff(base=0.2, cap=2.0, max_attempts=None), sleep, rng)

    async def patient(fn: Callable[[], T], tolerate: str | None = None) -> T | None:
        attempt = 0
        while True:
            try:
                return await call(fn, stream=stream, url=url)
            except Exception as exc:
                code = error_code(exc)
                if tolerate is not None and code == tolerate:
                    return None
                if not (is_throttling(code) or is_transient(code)):
                    raise
                if clock() >= deadline:
                    raise ThrottledError(
                        f"exchange setup of {stream}", attempt + 1, code or "?"
                    ) from exc
                await retrier.wait(attempt)
                attempt += 1

    await patient(
        lambda: client.create_stream(StreamName=stream, ShardCount=shards),
        tolerate="ResourceInUseException",
    )
    while True:
        summary = await patient(lambda: client.describe_stream_summary(StreamName=stream))
        assert summary is not None
        status = summary["StreamDescriptionSummary"]["StreamStatus"]
        if status == "ACTIVE":
            break
        if status == "DELETING" or clock() >= deadline:
            raise ExchangeMismatchError(
                f"exchange stream {stream!r} is {status}, not ACTIVE, after waiting; "
                "wait for the delete (or update) to finish and start the worker again"
            )
        await sleep(poll_interval)
    listed = await patient(lambda: list_shards_blocking(client, stream))
    assert listed is not None
    return ExchangeLayout.from_shards(stream, listed, shards)
