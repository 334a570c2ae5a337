"""Stream administration: create, describe, list shards, reshard, delete.

Every mutating call waits for the stream to be ACTIVE again (or gone) unless
``wait=False``. Control-plane throttling (``LimitExceededException``) and "stream busy"
(``ResourceInUseException`` while UPDATING) are retried with jittered backoff, bounded by
``timeout``.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from .client import KinesisApi, call, endpoint_url, kinesis_client
from .errors import StreamNotFoundError, ThrottledError, error_code
from .retry import Backoff, Retrier, Rng, Sleep, is_throttling
from .shards import are_adjacent, list_shards_blocking, split_point

if TYPE_CHECKING:
    from collections.abc import Callable

    from streamkit.config import AwsEndpoint

    from .types import ShardInfo

T = TypeVar("T")


@dataclass(frozen=True)
class StreamDescription:
    """A stream as DescribeStreamSummary reports it."""

    name: str
    """Stream name."""
    arn: str
    """Stream ARN."""
    status: str
    """CREATING, ACTIVE, UPDATING or DELETING."""
    open_shard_count: int
    """Shards currently accepting writes."""
    retention_hours: int
    """Retention period in hours."""
    mode: str
    """PROVISIONED or ON_DEMAND."""


class StreamAdmin:
    """Async stream administration on one endpoint (used by tests and the CLI)."""

    def __init__(
        self,
        endpoint: AwsEndpoint,
        *,
        client: KinesisApi | None = None,
        poll_interval: float = 0.2,
        timeout: float = 120.0,
        sleep: Sleep = asyncio.sleep,
        rng: Rng = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client if client is not None else kinesis_client(endpoint)
        self._url = endpoint.url or endpoint_url(self._client)
        self._poll = poll_interval
        self._timeout = timeout
        self._sleep = sleep
        self._clock = clock
        self._retrier = Retrier(Backoff(base=0.2, cap=2.0, max_attempts=None), sleep, rng)

    @property
    def client(self) -> KinesisApi:
        """The underlying (blocking) Kinesis client."""
        return self._client

    async def _call(self, stream: str, fn: Callable[[], T], *, busy_ok: bool = False) -> T:
        """``fn`` with throttling (and, if ``busy_ok``, stream-busy) retried until timeout."""
        deadline = self._clock() + self._timeout
        attempt = 0
        while True:
            try:
                return await call(fn, stream=stream, url=self._url)
            except Exception as exc:
                code = error_code(exc)
                retry = is_throttling(code) or (busy_ok and code == "ResourceInUseException")
                if not retry:
                    raise
                if self._clock() >= deadline:
                    raise ThrottledError("Kinesis admin call", attempt + 1, code or "?") from exc
                await self._retrier.wait(attempt)
                attempt += 1

    async def describe(self, name: str) -> StreamDescription:
        """Status, open shard count, retention and mode of ``name``."""
        out = await self._call(name, lambda: self._client.describe_stream_summary(StreamName=name))
        s = out["StreamDescriptionSummary"]
        return StreamDescription(
            name=s["StreamName"],
            arn=s["StreamARN"],
            status=s["StreamStatus"],
            open_shard_count=s["OpenShardCount"],
            retention_hours=s["RetentionPeriodHours"],
            mode=s.get("StreamModeDetails", {}).get("StreamMode", "PROVISIONED"),
        )

    async def wait_active(self, name: str, timeout: float | None = None) -> StreamDescription:
        """Poll until ``name`` is ACTIVE; raise TimeoutError after ``timeout`` seconds."""
        deadline = self._clock() + (self._timeout if timeout is None else timeout)
        while True:
            desc = await self.describe(name)
            if desc.status == "ACTIVE":
                return desc
            if self._clock() >= deadline:
                raise TimeoutError(f"stream {name!r} still {desc.status} after waiting")
            await self._sleep(self._poll)

    async def create_stream(self, name: str, shards: int = 1, *, wait: bool = True) -> None:
        """Create ``name`` with ``shards`` shards (PROVISIONED) and wait until ACTIVE.

        Idempotent: if the stream exists already it is only waited for (its shard count is
        left as it is).
        """
        try:
            await self._call(
                name, lambda: self._client.create_stream(StreamName=name, ShardCount=shards)
            )
        except Exception as exc:
            if error_code(exc) != "ResourceInUseException":
                raise
        if wait:
            await self.wait_active(name)

    async def delete_stream(self, name: str, *, wait: bool = True) -> None:
        """Delete ``name`` and wait until it is gone; a missing stream is not an error."""
        try:
            await self._call(
                name,
                lambda: self._client.delete_stream(StreamName=name, EnforceConsumerDeletion=True),
                busy_ok=True,
            )
        except StreamNotFoundError:
            return
        if not wait:
            return
        deadline = self._clock() + self._timeout
        while True:
            try:
                await self.describe(name)
            except StreamNotFoundError:
                return
            if self._clock() >= deadline:
                raise TimeoutError(f"stream {name!r} still exists after delete")
            await self._sleep(self._poll)

    async def list_shards(
        self,
        name: str,
        *,
        open_only: bool = False,
        after_shard_id: str | None = None,
        page_size: int | None = None,
    ) -> list[ShardInfo]:
        """All shards of ``name`` sorted by id, every ``NextToken`` page followed.

        ``open_only`` / ``after_shard_id`` are sent to the server as ``ShardFilter`` /
        ``ExclusiveStartShardId`` and applied again locally, so the result does not depend
        on the server honouring them. ``page_size`` sets ``MaxResults`` per call.
        """
        return await self._call(
            name,
            lambda: list_shards_blocking(
                self._client,
                name,
                open_only=open_only,
                after_shard_id=after_shard_id,
                page_size=page_size,
            ),
        )

    async def shard(self, name: str, shard_id: str) -> ShardInfo:
        """One shard of ``name`` by id."""
        for info in await self.list_shards(name):
            if info.shard_id == shard_id:
                return info
        raise StreamNotFoundError(name, f"shard {shard_id} does not exist")

    async def split_shard(
        self,
        name: str,
        shard_id: str,
        new_starting_hash_key: int | None = None,
        *,
        wait: bool = True,
    ) -> tuple[ShardInfo, ...]:
        """Split ``shard_id`` at ``new_starting_hash_key`` (default: the middle of its range).

        Returns the child shards (once ACTIVE when ``wait``; empty when not waiting).
        """
        parent = await self.shard(name, shard_id)
        key = split_point(parent) if new_starting_hash_key is None else new_starting_hash_key
        await self._call(
            name,
            lambda: self._client.split_shard(
                StreamName=name, ShardToSplit=shard_id, NewStartingHashKey=str(key)
            ),
            busy_ok=True,
        )
        return await self._children(name, (shard_id,), wait)

    async def merge_shards(
        self, name: str, shard_id: str, adjacent_shard_id: str, *, wait: bool = True
    ) -> tuple[ShardInfo, ...]:
        """Merge two shards with adjacent hash ranges; returns the child (when ``wait``)."""
        shards = {s.shard_id: s for s in await self.list_shards(name)}
        a, b = shards.get(shard_id), shards.get(adjacent_shard_id)
        if a is None or b is None:
            missing = shard_id if a is None else adjacent_shard_id
            raise StreamNotFoundError(name, f"shard {missing} does not exist")
        if not are_adjacent(a, b):
            raise ValueError(f"shards {shard_id} and {adjacent_shard_id} are not adjacent")
        await self._call(
            name,
            lambda: self._client.merge_shards(
                StreamName=name, ShardToMerge=shard_id, AdjacentShardToMerge=adjacent_shard_id
            ),
            busy_ok=True,
        )
        return await self._children(name, (shard_id, adjacent_shard_id), wait)

    async def update_shard_count(
        self, name: str, target: int, *, wait: bool = True
    ) -> StreamDescription:
        """Reshard to ``target`` open shards with UNIFORM_SCALING; returns the description."""
        await self._call(
            name,
            lambda: self._client.update_shard_count(
                StreamName=name, TargetShardCount=target, ScalingType="UNIFORM_SCALING"
            ),
            busy_ok=True,
        )
        return await (self.wait_active(name) if wait else self.describe(name))

    async def _children(
        self, name: str, parents: tuple[str, ...], wait: bool
    ) -> tuple[ShardInfo, ...]:
        if not wait:
            return ()
        await self.wait_active(name)
        wanted = set(parents)
        return tuple(
            s for s in await self.list_shards(name) if wanted.intersection(s.parent_shard_ids)
        )

    def close(self) -> None:
        """Close the underlying HTTP connections (if the client supports it)."""
        closer = getattr(self._client, "close", None)
        if callable(closer):
            closer()

    async def __aenter__(self) -> StreamAdmin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
