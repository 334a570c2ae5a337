"""Schedules renewal and taking of leases for one worker (KCL's lease coordinator).

The coordinator owns no policy: :func:`~.taker.decide_takes` decides, the store's
conditional writes arbitrate, :class:`~.renewer.LeaseRenewer` renews. Consumers learn about
gained and lost leases through listeners (or :meth:`LeaseCoordinator.wait_for_change`) and
checkpoint through :meth:`LeaseCoordinator.checkpointer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import TYPE_CHECKING

from streamkit.errors import ConfigError, StreamkitError

from .checkpointer import Checkpointer
from .dynamodb import DynamoDBLeaseStore
from .errors import LeaseConflictError, LeaseLostError, LeaseStoreUnavailableError
from .held import HeldLeases, LeaseEvent, LeaseEventKind, LeaseListener
from .leader import LeaderDecider
from .metrics import CallTimings, LeaseMetrics
from .renewer import LeaseRenewer, RenewResult
from .schedule import run_every
from .taker import LeaseTracker, TakeDecision, decide_takes

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import TracebackType

    from .model import Lease
    from .store import LeaseStore

log = logging.getLogger(__name__)


class LeaseCoordinatorError(StreamkitError):
    """The coordinator's background loop failed; it no longer renews or takes leases."""


class LeaseCoordinator:
    """Holds, renews and takes leases for ``worker_id`` on a shared lease table.

    Defaults follow KCL: ``failover_time`` 10 s, renewal every third of it, a take cycle
    every ``2 * failover_time``, at most one steal per cycle. ``clock`` must be monotonic.
    Renewals run at a fixed rate through the store's renewal lane (a DynamoDB store gets
    its own thread pool and HTTP connections for them), and a held lease not confirmed
    for ``failover_time`` is dropped before anyone uses it (KCL's renewer rule). With
    ``elect_leader``, each take cycle also decides the leader from its own scan, with no
    write and no extra read (KCL 2.x's deterministic shuffle, see :mod:`.leader`):
    :attr:`is_leader` tells whether this worker should run the shard audit and lease
    cleanup.

    Errors in the background loops are never silent: a transient store error is counted
    and retried next cycle; any other error stops both loops, drops every held lease as
    LOST (nobody renews them any more) and is re-raised by the next call to
    :meth:`held_shard_ids`, :meth:`metrics`, :meth:`checkpointer` or
    :meth:`wait_for_change`.
    """

    def __init__(
        self,
        store: LeaseStore,
        worker_id: str,
        *,
        failover_time: float = 10.0,
        renew_interval: float | None = None,
        take_interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_steal: int = 1,
        max_leases: int | None = None,
        rng: random.Random | None = None,
        create_table: bool = True,
        elect_leader: bool = False,
        timings: CallTimings | None = None,
        announce: bool = False,
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self.failover_time = failover_time
        self.renew_interval = failover_time / 3 if renew_interval is None else renew_interval
        self.take_interval = 2 * failover_time if take_interval is None else take_interval
        if self.take_interval <= 0 or not 0 < self.renew_interval < failover_time:
            raise ConfigError(
                f"need take_interval ({self.take_interval}) > 0 and 0 < renew_interval "
                f"({self.renew_interval}) < failover_time ({failover_time}); otherwise held "
                "leases expire between renewals"
            )
        self.max_steal = max_steal
        self.max_leases = max_leases
        self.announce = announce
        """A worker holding nothing on a table with no share-out yet takes one lease and
        looks again soon (see :func:`~.taker.decide_takes`), for fleets that start
        together; False (default): KCL's take-all, no delay for a lone worker."""
        self.next_take_delay = self.take_interval
        """Seconds from the end of the last take cycle to the next one: ``take_interval``,
        or 0.25-0.3 of it after an announcing take (the take loop and a consumer's follow
        it)."""
        self._rng = rng or random.Random()
        self._create_table = create_table
        self.held = HeldLeases(clock, ttl=failover_time)
        """The shared view of held leases (renewer, checkpointers and taker all update it)."""
        self._tracker = LeaseTracker(clock)
        self._lane = store.renewal_lane() if isinstance(store, DynamoDBLeaseStore) else None
        self.timings = timings or CallTimings()
        """Per-call ``Time`` / ``Success`` of the KCL's lease operations (off until enabled)."""
        self._renewer = LeaseRenewer(
            self._lane or store, self.held, failover_time, clock, timings=self.timings,
            worker_id=worker_id,
        )  # fmt: skip
        self._leader = LeaderDecider(worker_id, failover_time) if elect_leader else None
        self._snapshot: dict[str, Lease] = {}
        self.snapshots = 0
        """Take-cycle scans so far (tells whether :meth:`table_snapshot` is a new one)."""
        self._left_unowned = 0
        self._warned_left_unowned = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._error: BaseException | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._counts = dict.fromkeys(
            ("takes", "steals", "losses", "releases", "renewals", "take_cycles",
             "renew_cycles", "transient_errors"), 0,
        )  # fmt: skip
        self.held.add_listener(self._on_event)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, *, background: bool = True) -> None:
        """Create the lease table if needed and start the loops.

        The take loop runs its first cycle at once; renewals follow every
        ``renew_interval``. With ``background=False`` no loop starts and the caller drives
        :meth:`take_once` and :meth:`renew_once` itself (deterministic tests).
        """
        if self._create_table:
            await self.store.create_table_if_not_exists()
        if background and not self._tasks:
            self._tasks = [
                asyncio.create_task(
                    run_every(lambda: self.next_take_delay, self.take_once, self._on_cycle_error),
                    name="take",
                ),
                asyncio.create_task(
                    run_every(
                        self.renew_interval, self.renew_once, self._on_cycle_error, fixed_rate=True
                    ),
                    name="renew",
                ),
            ]

    async def stop(self) -> None:
        """Stop the loops without releasing: held leases are dropped (LOST) and expire
        in the table after ``failover_time``, as after a crash. Prefer :meth:`release_all`."""
        await self._cancel_loops()
        if self._leader is not None:
            self._leader.forget()
        for shard_id in sorted(self.held.shard_ids()):
            self.held.lost(shard_id, f"lease coordinator of {self.worker_id} stopped")
        if self._lane is not None:
            self._lane.close()

    async def release_all(self) -> None:
        """Graceful hand-off: stop taking and renewing, then release every held lease.

        Checkpoint before calling this: a released lease can no longer be checkpointed.
        Each release clears the owner with a conditional write; another worker sees the
        lease unowned and takes it on its next take cycle, without waiting for expiry.
        A lease that cannot be released (already lost, or the store is unavailable) is
        reported LOST and will expire after ``failover_time``.
        """
        await self._cancel_loops()
        await asyncio.gather(*(self._release(k) for k in sorted(self.held.shard_ids())))
        if self._leader is not None:
            self._leader.forget()

    async def release(self, shard_id: str) -> bool:
        """Release one held lease (e.g. after checkpointing SHARD_END); True if released.

        Same guarantees as :meth:`release_all` for that one lease; the loops keep running.
        A finished (SHARD_END) lease is never taken again; any other released lease is
        taken by some worker on its next take cycle.
        """
        self._raise_if_failed()
        await self._release(shard_id)
        return shard_id not in self.held

    async def __aenter__(self) -> LeaseCoordinator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release_all()
        await self.stop()

    # -- queries ---------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """True if this worker should run the shard audit and lease cleanup now: the last
        take cycle's scan elected it (``elect_leader=True``; also when no live lease has
        an owner yet), or no election runs (every worker does)."""
        return self._leader is None or self._leader.is_leader

    def held_shard_ids(self) -> frozenset[str]:
        """Shards whose lease this worker holds right now."""
        self._raise_if_failed()
        return self.held.shard_ids()

    def held_lease(self, shard_id: str) -> Lease | None:
        """The latest known lease for a held shard, or None."""
        return self.held.get(shard_id)

    def table_snapshot(self) -> dict[str, Lease]:
        """Every lease as of the last take cycle, by key (stale by up to ``take_interval``).

        Enough for :func:`~.sync.parents_done`: SHARD_END is final, so a stale view can only
        delay a child, never start it early. Read the store for a fresher answer.
        """
        return dict(self._snapshot)

    def counter_changes(self) -> Mapping[str, float]:
        """Lease key -> clock reading when this worker's take cycles last saw its counter
        change (a live owner renews it; one unchanged for ``failover_time`` is expired)."""
        return self._tracker.last_changes()

    def checkpointer(self, shard_id: str) -> Checkpointer:
        """A checkpointer for ``shard_id`` sharing this coordinator's view of the lease."""
        self._raise_if_failed()
        return Checkpointer(self.store, self.held, shard_id, self.timings)

    def add_listener(self, listener: LeaseListener) -> None:
        """Call ``listener`` on every GAINED / LOST / RELEASED event (in the event loop)."""
        self.held.add_listener(listener)

    def remove_listener(self, listener: LeaseListener) -> None:
        """Stop calling ``listener``."""
        self.held.remove_listener(listener)

    async def wait_for_change(self, timeout: float | None = None) -> bool:
        """Wait until a lease is gained, lost or released; False on timeout."""
        self._raise_if_failed()
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def metrics(self) -> LeaseMetrics:
        """A snapshot of this coordinator's counters and its store's call counts."""
        self._raise_if_failed()
        calls = self.store.call_counts()
        return LeaseMetrics(
            worker_id=self.worker_id,
            held=len(self.held),
            store_calls=sum(calls.values()),
            store_calls_by_operation=calls,
            left_unowned=self._left_unowned,
            is_leader=self.is_leader,
            **self._counts,
        )

    # -- cycles ----------------------------------------------------------------------

    async def take_once(self) -> TakeDecision:
        """One take cycle: snapshot the table, decide the leader (if elected) and the
        takes, take (conditional writes).

        Each take that loses a race is skipped; the decision returned is what was attempted.
        """
        with self.timings.timed("TakeLeases", "", self.worker_id):
            return await self._take_cycle()

    async def _take_cycle(self) -> TakeDecision:
        with self.timings.timed("TakeLeases", "ListLeases", self.worker_id):
            leases = await self.store.list_leases()
        self._snapshot = {lease.lease_key: lease for lease in leases}
        self.snapshots += 1
        now = self._tracker.observe(leases)
        if self._leader is not None:
            self._leader.observe(leases, self._tracker.last_changes(), now)
        decision = decide_takes(
            leases,
            self.worker_id,
            self._tracker.last_changes(),
            now,
            self.failover_time,
            max_steal=self.max_steal,
            max_leases=self.max_leases,
            rng=self._rng,
            reserve=1.5 * self.take_interval,
            announce=self.announce,
        )
        self._note_left_unowned(decision)
        for lease in decision.to_take:
            # announcing: stop at the first lease won, or at a store error (no call storm)
            if await self._take(lease, "takes") is not False and decision.announce:
                break
        for lease in decision.to_steal:
            await self._take(lease, "steals")
        self._counts["take_cycles"] += 1
        self.next_take_delay = self.take_interval
        if decision.announce:
            self.next_take_delay *= 0.25 + 0.05 * self._rng.random()
        return decision

    def _note_left_unowned(self, decision: TakeDecision) -> None:
        """Keep the ``left_unowned`` metric; warn whenever it becomes non-zero or changes."""
        left, self._left_unowned = decision.left_unowned, decision.left_unowned
        if left and left != self._warned_left_unowned:
            log.warning(
                "max_leases=%s leaves %d lease(s) unowned (%d live worker(s) x %s < %d active "
                "leases): those shards are not read; raise max_leases or add workers",
                self.max_leases, left, decision.live_workers, self.max_leases,
                left + decision.live_workers * (self.max_leases or 0),
            )  # fmt: skip
        self._warned_left_unowned = left

    async def renew_once(self) -> RenewResult:
        """One renewal cycle over every held lease."""
        result = await self._renewer.renew_all()
        self._counts["renewals"] += len(result.renewed)
        self._counts["transient_errors"] += result.transient_errors
        self._counts["renew_cycles"] += 1
        return result

    # -- internals -------------------------------------------------------------------

    async def _take(self, lease: Lease, counter: str) -> bool | None:
        """Take ``lease``; True if taken, False if not (lost the race, or ours already),
        None if the store failed (counted as a transient error)."""
        if lease.lease_key in self.held:
            return False  # ours already: the renewer keeps it or reports it lost
        async with self.held.lock(lease.lease_key):
            sent_at = self.held.now()
            try:
                with self.timings.timed("TakeLeases", "TakeLease", self.worker_id):
                    taken = await self.store.take_lease(lease, self.worker_id)
            except LeaseConflictError as e:
                if e.current is not None:
                    self._tracker.observe_one(e.current)
                return False
            except LeaseStoreUnavailableError:
                self._counts["transient_errors"] += 1
                return None
        self._tracker.observe_one(taken)
        self._counts[counter] += 1
        if not self.held.gained(taken, sent_at):
            log.warning(
                "take of lease %s by %s was answered after the failover time (%.1fs); not "
                "using it: it expires and is taken again", lease.lease_key, self.worker_id,
                self.failover_time,
            )  # fmt: skip
            return False
        return True

    async def _release(self, shard_id: str) -> None:
        async with self.held.lock(shard_id):
            lease = self.held.get(shard_id)
            if lease is None:
                return
            try:
                await self._release_write(lease)
            except LeaseLostError as e:
                self.held.lost(shard_id, str(e))
            except LeaseStoreUnavailableError as e:
                self.held.lost(shard_id, f"could not release (it will expire instead): {e}")
            else:
                self.held.released(shard_id)

    async def _release_write(self, lease: Lease, attempts: int = 3) -> None:
        """Release ``lease``; if the counter moved while the table still names this worker
        the owner, release at the stored counter.

        Only this worker's own writes move the counter of a lease it owns, so a mismatch
        with the owner unchanged is one of its own renewals that landed but was cancelled
        before its result was recorded (``release_all`` cancels the loops). Any other
        change (another owner, no owner, deleted) is a real loss and re-raised.
        """
        for attempt in range(attempts):
            try:
                await self.store.release_lease(lease)
                return
            except LeaseLostError:
                current = await self.store.get_lease(lease.lease_key)
                if (
                    attempt + 1 == attempts
                    or current is None
                    or current.lease_owner != self.worker_id
                ):
                    raise
                lease = current

    def _on_cycle_error(self, error: Exception) -> bool:
        """A transient store error is counted and retried next cycle; any other fails all."""
        if isinstance(error, LeaseStoreUnavailableError):
            self._counts["transient_errors"] += 1
            log.warning("lease cycle of %s failed transiently: %s", self.worker_id, error)
            return True
        self._fail(error)
        return False

    def _fail(self, error: Exception) -> None:
        log.error("lease coordinator of %s failed: %r", self.worker_id, error)
        self._error = error
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        for shard_id in sorted(self.held.shard_ids()):
            self.held.lost(shard_id, f"lease coordinator of {self.worker_id} failed: {error}")
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(self._wrapped_error())

    def _wrapped_error(self) -> LeaseCoordinatorError:
        err = LeaseCoordinatorError(
            f"lease coordinator of {self.worker_id} stopped after an error: {self._error!r}; "
            "its leases are no longer renewed"
        )
        err.__cause__ = self._error
        return err

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._wrapped_error()

    async def _cancel_loops(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _on_event(self, event: LeaseEvent) -> None:
        if event.kind is LeaseEventKind.LOST:
            self._counts["losses"] += 1
        elif event.kind is LeaseEventKind.RELEASED:
            self._counts["releases"] += 1
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
