"""What a worker knows about the stream's shards: descriptions, shard sync, parents.

:class:`StreamShards` is the :class:`~.shard_task.ShardHost` of every shard task: it
lists shards (and caches their descriptions for fetchers), runs shard syncs (new shards
become leases), answers "are this shard's parents done?", and, when a shard was read to
SHARD_END, creates its children's leases at once and releases the finished lease.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from streamkit_kinesis.client import call
from streamkit_kinesis.errors import StreamNotFoundError, ThrottledError
from streamkit_kinesis.leases import (
    LeaseStoreUnavailableError,
    parents_done,
    sync_shards,
)
from streamkit_kinesis.retry import is_throttling, is_transient
from streamkit_kinesis.shards import list_shards_blocking

from .events import ConsumerEventKind

if TYPE_CHECKING:
    from collections.abc import Callable

    from streamkit_kinesis.client import KinesisApi
    from streamkit_kinesis.leases import Lease, LeaseCoordinator
    from streamkit_kinesis.retrieval.fetcher import FetcherFactory
    from streamkit_kinesis.types import ExtendedSequenceNumber, ShardInfo

    from .config import ConsumerConfig


def retry_later(error: BaseException) -> bool:
    """Errors a background step retries on its next period (throttling, transient)."""
    return isinstance(error, LeaseStoreUnavailableError | ThrottledError) or (
        is_throttling(error) or is_transient(error)
    )


class StreamShards:
    """Shard descriptions, shard sync and the parent rule for one worker (a ShardHost)."""

    def __init__(
        self,
        config: ConsumerConfig,
        client: KinesisApi,
        coordinator: LeaseCoordinator,
        fetchers: FetcherFactory,
        *,
        url: str | None,
        emit: Callable[[ConsumerEventKind, str | None, str], None],
    ) -> None:
        self.config = config
        self.client = client
        self.fetchers = fetchers
        """Builds the fetcher of each shard task (see :mod:`~streamkit_kinesis.retrieval`)."""
        self.syncs = 0
        """Completed shard syncs."""
        self.wake_sync: Callable[[], None] = lambda: None
        """Asks the periodic sync to run now (set by the worker once its loop exists)."""
        self._coordinator = coordinator
        self._url = url
        self._emit = emit
        self._shards: dict[str, ShardInfo] = {}
        self._finished: set[str] = set()
        self._shard_end = asyncio.Event()

    async def list_shards(self) -> list[ShardInfo]:
        """ListShards (every page); refreshes the cached descriptions.

        Raises StreamNotFoundError / EndpointUnreachableError / CredentialsError (typed).
        """
        stream = self.config.stream
        shards = await call(
            lambda: list_shards_blocking(self.client, stream), stream=stream, url=self._url
        )
        self._shards.update((s.shard_id, s) for s in shards)
        return shards

    async def sync(self) -> None:
        """Create leases for new shards and record children on their parents (idempotent)."""
        shards = await self.list_shards()
        result = await sync_shards(
            self._coordinator.store, shards, self.config.initial_position.checkpoint
        )
        self.syncs += 1
        self._emit(ConsumerEventKind.SHARD_SYNCED, None, f"created={list(result.created)}")

    # -- ShardHost -------------------------------------------------------------------

    async def shard_info(self, shard_id: str) -> ShardInfo:
        """The shard's description; lists shards again if it is not known yet."""
        if shard_id not in self._shards:
            await self.list_shards()
        if shard_id not in self._shards:
            raise StreamNotFoundError(self.config.stream, f"shard {shard_id} is not listed")
        return self._shards[shard_id]

    async def parents_done(self, lease: Lease) -> bool:
        """True when every parent is at SHARD_END (or gone); a transient error means False.

        Parents finished here or seen finished by the last take cycle are not read again;
        the others are read from the lease table (SHARD_END is final, so this is safe).
        """
        snapshot = self._coordinator.table_snapshot()
        fetched: dict[str, Lease] = {}
        for parent in lease.parent_shard_ids:
            known = snapshot.get(parent)
            if parent in self._finished or (known is not None and known.is_finished):
                continue
            try:
                current = await self._coordinator.store.get_lease(parent)
            except LeaseStoreUnavailableError:
                return False
            if current is not None:
                fetched[parent] = current
        return parents_done(lease, fetched)

    async def wait_for_parent_progress(self, stop: asyncio.Event) -> None:
        """Sleep ``parent_poll_interval``, less if a shard ends here or ``stop`` is set."""
        ended = asyncio.ensure_future(self._shard_end.wait())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait(
                [ended, stopping], timeout=self.config.parent_poll_interval,
                return_when=asyncio.FIRST_COMPLETED,
            )  # fmt: skip
        finally:
            ended.cancel()
            stopping.cancel()

    def shard_started(self, shard_id: str, start: ExtendedSequenceNumber) -> None:
        """Tell listeners that ``shard_id`` is being read from ``start``."""
        self._emit(ConsumerEventKind.SHARD_STARTED, shard_id, start.sequence_number)

    async def shard_finished(self, shard_id: str, child_shard_ids: tuple[str, ...]) -> None:
        """Create the children's leases now, wake local children, release the lease."""
        self._finished.add(shard_id)
        self._shard_end.set()
        self._shard_end = asyncio.Event()
        self._emit(ConsumerEventKind.SHARD_ENDED, shard_id, f"children={list(child_shard_ids)}")
        try:
            await self.sync()
        except Exception as e:
            if not retry_later(e):
                raise
            self.wake_sync()  # the periodic sync retries soon
        await self._coordinator.release(shard_id)
