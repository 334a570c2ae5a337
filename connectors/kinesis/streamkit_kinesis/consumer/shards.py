"""What a worker knows about the stream's shards: descriptions, shard sync, parents, ends.

:class:`StreamShards` is the :class:`~.shard_task.ShardHost` of every shard task: it
lists shards (and caches their descriptions for fetchers), runs shard syncs (new lineages
become leases) and, on the leader, the periodic lease-table audit that decides whether a
sync is needed at all (:mod:`streamkit_kinesis.leases.audit`: at steady state no
ListShards), answers "are this shard's parents done?", creates a shard's child leases
when it reaches SHARD_END (before the SHARD_END checkpoint, as KCL does; from the
``ChildShards`` of the last read, so without ListShards where the server reports them),
decides whether a shard that answers ResourceNotFound is gone (then it is ended like any
other), and runs lease cleanup (:mod:`streamkit_kinesis.leases.cleanup`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from streamkit_kinesis.client import call, call_until_done
from streamkit_kinesis.errors import StreamNotFoundError, ThrottledError, error_code
from streamkit_kinesis.leases import (
    LeaseStoreUnavailableError,
    parents_done,
    sync_shards,
)
from streamkit_kinesis.leases.audit import HoleTracker, find_hole
from streamkit_kinesis.leases.cleanup import LeaseCleaner
from streamkit_kinesis.leases.sync import create_child_leases
from streamkit_kinesis.retry import RetryState, is_retryable, is_throttling, is_transient
from streamkit_kinesis.shards import list_shards_blocking

from .errors import ShardGoneError
from .events import ConsumerEventKind

if TYPE_CHECKING:
    from collections.abc import Callable

    from streamkit_kinesis.client import KinesisApi
    from streamkit_kinesis.leases import Lease, LeaseCoordinator
    from streamkit_kinesis.retrieval.fetcher import FetcherFactory
    from streamkit_kinesis.types import ExtendedSequenceNumber, ShardInfo

    from .config import ConsumerConfig

log = logging.getLogger(__name__)


def retry_later(error: BaseException) -> bool:
    """Errors a background step retries on its next period (throttling, transient, an
    endpoint outage: :func:`~streamkit_kinesis.retry.is_retryable`)."""
    return isinstance(error, LeaseStoreUnavailableError | ThrottledError) or (
        is_throttling(error) or is_transient(error) or is_retryable(error)
    )


def is_not_found(error: BaseException) -> bool:
    """True when ``error`` is a ResourceNotFound answer (typed or raw, shard or stream)."""
    for exc in (error, error.__cause__):
        if exc is None:
            continue
        names = {cls.__name__ for cls in type(exc).__mro__}
        if isinstance(exc, StreamNotFoundError | ShardGoneError) or "ShardNotFoundError" in names:
            return True
        if error_code(exc) == "ResourceNotFoundException":
            return True
    return False


class StreamShards:
    """Shard descriptions, shard sync, the parent rule, shard ends and cleanup (a ShardHost)."""

    def __init__(
        self,
        config: ConsumerConfig,
        client: KinesisApi,
        coordinator: LeaseCoordinator,
        fetchers: FetcherFactory,
        *,
        url: str | None,
        emit: Callable[[ConsumerEventKind, str | None, str], None],
        cleaner: LeaseCleaner,
    ) -> None:
        self.config = config
        self.client = client
        self.fetchers = fetchers
        """Builds the fetcher of each shard task (see :mod:`~streamkit_kinesis.retrieval`)."""
        self.syncs = 0
        """Completed shard syncs."""
        self.audits = 0
        """Completed lease-table audits."""
        self.cleaner = cleaner
        """Deletes finished and vanished leases (see :meth:`cleanup`)."""
        self.wake_sync: Callable[[], None] = lambda: None
        """Asks the periodic sync to run now (set by the worker once its loop exists)."""
        self._coordinator = coordinator
        self._url = url
        self._emit = emit
        self._shards: dict[str, ShardInfo] = {}
        self._listed: dict[str, ShardInfo] | None = None
        self._learned: dict[str, ShardInfo] = {}
        """Children described by ``ChildShards`` since the last ListShards."""
        self._holes = HoleTracker(config.audit_confidence)
        self._audited_scan = -1
        self._sync_requested = False
        self._finished: set[str] = set()
        self._shard_end = asyncio.Event()

    async def list_shards(self) -> list[ShardInfo]:
        """ListShards (every page); refreshes the cached descriptions and the listing.

        Raises StreamNotFoundError / EndpointUnreachableError / CredentialsError (typed).
        """
        stream = self.config.stream
        shards = await call(
            lambda: list_shards_blocking(self.client, stream), stream=stream, url=self._url
        )
        self._remember(shards)
        return shards

    def _remember(self, shards: list[ShardInfo]) -> None:
        self._shards.update((s.shard_id, s) for s in shards)
        self._listed = {s.shard_id: s for s in shards}
        self._learned = {}

    def _known(self) -> dict[str, ShardInfo]:
        """The stream's shards as last listed, plus children learned since."""
        return {**self._learned, **(self._listed or {})}

    async def sync(self, listed: list[ShardInfo] | None = None) -> None:
        """Lease new lineages, and children of finished parents (see :mod:`.leases.sync`),
        from ``listed`` (what :meth:`list_shards` returned just before) or a new listing."""
        shards = listed if listed is not None else await self.list_shards()
        result = await sync_shards(
            self._coordinator.store, shards, self.config.initial_position.checkpoint
        )
        self.syncs += 1
        self._emit(ConsumerEventKind.SHARD_SYNCED, None, f"created={list(result.created)}")

    async def periodic_sync(self) -> None:
        """The periodic step: a :meth:`sync` asked for by :meth:`request_sync` (on any
        worker), else, on the leader only, an :meth:`audit`."""
        if self._sync_requested:
            self._sync_requested = False
            await self.sync()
        elif self._coordinator.is_leader:
            await self.audit()

    def request_sync(self) -> None:
        """Run a full shard sync at the next periodic step, now (a repair)."""
        self._sync_requested = True
        self.wake_sync()

    async def audit(self) -> None:
        """Check the last take cycle's scan for a hash-range hole; sync once the same hole
        was seen ``audit_confidence`` audits in a row, or at once when the table is empty.

        Costs no call unless a lease has no hash range and its shard is not described yet
        (one ListShards) or a sync is due. An audit on the same scan as the previous one
        is skipped (a stale view must not count twice).
        """
        if self._coordinator.snapshots == self._audited_scan:
            return
        self._audited_scan = self._coordinator.snapshots
        table = self._coordinator.table_snapshot()
        if not table:
            self._emit(ConsumerEventKind.LEASES_AUDITED, None, "empty table: syncing")
            await self.sync()
            return
        if any(
            lease.hash_key_range is None and not lease.is_finished and key not in self._shards
            for key, lease in table.items()
        ):
            await self.list_shards()
        known = {key: info.hash_key_range for key, info in self._shards.items()}
        hole = find_hole(table.values(), known)
        due = self._holes.observe(hole)
        self.audits += 1
        seen = self._holes.confidence if due else self._holes.seen
        detail = "complete" if hole is None else f"{hole.describe()} (seen {seen}x)"
        self._emit(ConsumerEventKind.LEASES_AUDITED, None, detail)
        if due:
            log.warning("lease table of %s: %s; running a shard sync", self.config.app_name, detail)
            await self.sync()

    async def cleanup(self) -> None:
        """Delete finished parents whose children started, and leases of vanished shards.

        Runs on the leader only (every worker when no election runs; deletes are
        idempotent). Uses the last take cycle's table snapshot and the last shard list;
        lists shards again only when a lease names a shard that list does not have.
        """
        if not self._coordinator.is_leader:
            return
        table = self._coordinator.table_snapshot()
        listed = self._known()
        if self._listed is None or any(key not in listed for key in table):
            await self.list_shards()
            listed = self._known()
        plan = await self.cleaner.run(table.values(), listed.values())
        if plan.to_delete:
            detail = f"finished={list(plan.finished)} garbage={list(plan.garbage)}"
            self._emit(ConsumerEventKind.LEASES_CLEANED, None, detail)

    # -- ShardHost -------------------------------------------------------------------

    async def shard_info(self, shard_id: str) -> ShardInfo:
        """The shard's description; lists shards again if it is not known yet.

        Raises :class:`ShardGoneError` when the stream exists but does not list the shard.
        A Kinesis outage (unreachable endpoint, 5xx, throttling) is retried until it ends,
        so a lease taken during one waits for Kinesis rather than failing its shard task.
        """
        if shard_id not in self._shards:
            stream = self.config.stream
            shards = await call_until_done(
                lambda: list_shards_blocking(self.client, stream), RetryState(),
                stream=stream, url=self._url,
            )  # fmt: skip
            self._remember(shards)
        if shard_id not in self._shards:
            raise ShardGoneError(self.config.stream, shard_id)
        return self._shards[shard_id]

    async def shard_vanished(self, shard_id: str, error: BaseException) -> bool:
        """True when ``error`` (from reading ``shard_id``) means the shard is gone while the
        stream exists: ResourceNotFound, and ListShards no longer lists the shard open.

        Raises StreamNotFoundError when the stream itself is gone (that stops the worker).
        """
        if not is_not_found(error):
            return False
        shards = {s.shard_id: s for s in await self.list_shards()}
        info = shards.get(shard_id)
        if info is not None and not info.is_closed:
            return False  # listed and open: not a vanished shard; let the error stand
        log.warning("shard %s is no longer readable (%s); treating it as ended", shard_id, error)
        return True

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

    async def shard_ending(
        self,
        shard_id: str,
        child_shard_ids: tuple[str, ...],
        child_shards: tuple[ShardInfo, ...] = (),
    ) -> None:
        """Before the SHARD_END checkpoint: create the children's leases (from ``ChildShards``,
        else from ListShards). A transient failure asks for a shard sync (it creates the
        children of a finished parent) at the next periodic step of this worker."""
        for child in child_shards:
            if child.shard_id not in self._shards:
                self._shards[child.shard_id] = self._learned[child.shard_id] = child
        try:
            created = await self._create_children(shard_id, child_shard_ids)
        except Exception as e:
            if not retry_later(e):
                raise
            log.warning("shard %s: child leases not created yet (%s); next sync will", shard_id, e)
            self.request_sync()
            return
        self._emit(ConsumerEventKind.CHILDREN_CREATED, shard_id, f"created={list(created)}")

    async def _create_children(self, shard_id: str, child_ids: tuple[str, ...]) -> tuple[str, ...]:
        def children() -> list[ShardInfo]:
            if child_ids:
                return [self._shards[c] for c in child_ids if c in self._shards]
            return [s for s in self._shards.values() if shard_id in s.parent_shard_ids]

        found = children()
        if not child_ids or len(found) < len(child_ids):
            await self.list_shards()
            found = children()
        listed = set(self._known())
        return await create_child_leases(
            self._coordinator.store,
            shard_id,
            found,
            listed,
            self.config.initial_position.checkpoint,
        )

    async def shard_finished(self, shard_id: str, child_shard_ids: tuple[str, ...]) -> None:
        """The shard is checkpointed at SHARD_END: wake local children, release the lease."""
        self._finished.add(shard_id)
        self._shard_end.set()
        self._shard_end = asyncio.Event()
        self._emit(ConsumerEventKind.SHARD_ENDED, shard_id, f"children={list(child_shard_ids)}")
        await self._coordinator.release(shard_id)
