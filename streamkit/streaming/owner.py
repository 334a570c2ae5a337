"""Owner leases: one live copy of a query per checkpoint folder (and per source claim).

An owner lease is one small record (:class:`OwnerRecord`, JSON) in a :class:`RecordCell`
that supports compare-and-swap: the ``owner`` file of a checkpoint folder (local: swap
under an ``flock``; S3: ``PutObject`` with ``If-None-Match: *`` / ``If-Match``), or an item
a source keeps (the Kinesis source: one per app name and one per worker id, in DynamoDB).

Guarantees of :meth:`OwnerLease.acquire`:

- Two processes never both hold the lease: every write is a compare-and-swap against the
  record last read, so of two racing starters exactly one wins; the other re-reads.
- A live holder (its heartbeat counter moves) is never displaced without ``force``:
  the starter raises :class:`QueryAlreadyRunningError` naming it (host, pid, since when).
- A dead holder is displaced without ``force``: its counter did not move for
  ``lease_seconds`` on the starter's own monotonic clock (as KCL judges lease expiry; wall
  clocks of two machines are never compared), or, sooner, it ran on this machine (same
  host name and boot id) and its pid no longer exists (or is this process's, and the
  token is not held here). A released record (clean stop) is taken at once.

The holder renews (:meth:`OwnerLease.renew`, every ``lease_seconds / 3`` from an
:class:`OwnerHeartbeat`) and finds out there when another process forced it out
(:class:`OwnerLostError`); :meth:`OwnerLease.release` marks the record released.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from streamkit.errors import StreamkitError

log = logging.getLogger(__name__)

OWNER_LEASE_SECONDS = 10.0
"""Default lease duration: a holder silent this long (on the reader's clock) is dead."""

OWNER_FILE = "owner"
"""The owner record's name in a checkpoint folder."""

_HELD_HERE: set[str] = set()
"""Tokens held by owner leases of this process (a record with our pid is dead otherwise)."""


class QueryAlreadyRunningError(StreamkitError):
    """Another live process holds the owner lease; nothing was read or written."""


class OwnerLostError(StreamkitError):
    """Another process took this query's owner lease (``force``); the query must stop."""


def _boot_id() -> str:
    """This kernel's boot id and this process's pid namespace ("" when unknown): two
    records with equal host and boot id name pids of one namespace of one running machine
    (containers sharing a host name and kernel differ by their pid namespace)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""


@dataclass(frozen=True)
class OwnerRecord:
    """The content of an owner lease (JSON in the cell)."""

    query: str
    """Name of the query holding it (for messages)."""
    token: str
    """Unique per started query: what a compare-and-swap and a takeover check."""
    host: str
    """Host name of the holder."""
    pid: int
    """Process id of the holder."""
    started_at: str
    """When the holder took it (ISO 8601, UTC; for messages only, never for decisions)."""
    heartbeat: int = 0
    """Incremented by every renewal; readers watch it move."""
    lease_seconds: float = OWNER_LEASE_SECONDS
    """How long the holder may stay silent before readers judge it dead."""
    scope: str = ""
    """What the holder claims with it (a checkpoint location), for compatibility rules."""
    boot_id: str = ""
    """The holder's boot id and pid namespace: with host, where its pid means something."""
    released: bool = False
    """True after a clean stop: free to take at once."""

    @classmethod
    def mine(cls, query: str, token: str, scope: str, lease_seconds: float) -> OwnerRecord:
        """A fresh record for this process."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        return cls(
            query, token, socket.gethostname(), os.getpid(), now,
            lease_seconds=lease_seconds, scope=scope, boot_id=_boot_id(),
        )  # fmt: skip

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> OwnerRecord:
        fields = json.loads(data)
        return cls(**{k: v for k, v in fields.items() if k in cls.__dataclass_fields__})

    def describe(self) -> str:
        return f"query {self.query!r} (pid {self.pid} on host {self.host}, since {self.started_at})"

    def _here(self) -> bool:
        return self.host == socket.gethostname() and self.boot_id == _boot_id() != ""

    def held_by_this_process(self) -> bool:
        """True when an owner lease of this very process holds it (certainly live)."""
        return self._here() and self.pid == os.getpid() and self.token in _HELD_HERE

    def died_here(self) -> bool:
        """True when the holder ran on this machine and its process is gone."""
        if not self._here():
            return False
        if self.pid == os.getpid():
            return self.token not in _HELD_HERE
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False


@runtime_checkable
class RecordCell(Protocol):
    """One record with compare-and-swap (blocking calls)."""

    @property
    def where(self) -> str:
        """What the cell is, for messages (``checkpoint folder s3://b/ck``)."""
        ...

    def read(self) -> bytes | None:
        """The current content, or None when absent."""
        ...

    def swap(self, expected: bytes | None, data: bytes) -> bool:
        """Write ``data`` only if the content is ``expected`` (None: absent); True if written."""
        ...


class SwappingStore(Protocol):
    """A checkpoint store with a compare-and-swap write (both built-in stores)."""

    def read_bytes(self, relative_path: str) -> bytes | None: ...

    def swap_bytes(self, relative_path: str, expected: bytes | None, data: bytes) -> bool: ...


@dataclass(frozen=True)
class StoreCell:
    """The owner file of a checkpoint store as a :class:`RecordCell`."""

    store: SwappingStore
    where: str
    path: str = OWNER_FILE

    def read(self) -> bytes | None:
        return self.store.read_bytes(self.path)

    def swap(self, expected: bytes | None, data: bytes) -> bool:
        return self.store.swap_bytes(self.path, expected, data)


class OwnerLease:
    """An owner lease on one cell (see the module docstring for the guarantees)."""

    def __init__(
        self,
        cell: RecordCell,
        record: OwnerRecord,
        *,
        compatible: Callable[[OwnerRecord], bool] = lambda _: False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
        poll: float | None = None,
        error: type[QueryAlreadyRunningError] = QueryAlreadyRunningError,
        advice: str = "",
    ) -> None:
        self.cell, self.record = cell, record
        self._error, self._advice = error, advice
        self._compatible, self._clock, self._sleep = compatible, clock, sleep
        self._poll = poll if poll is not None else record.lease_seconds / 10
        self._raw: bytes | None = None
        self.displaced: OwnerRecord | None = None
        """The record this lease replaced (a dead, released or forced-out holder)."""

    @property
    def held(self) -> bool:
        return self._raw is not None

    def acquire(self, *, force: bool = False, dead: Iterable[str] = ()) -> None:
        """Take the lease, waiting at most ``lease_seconds`` to judge a silent holder dead.

        Raises :class:`QueryAlreadyRunningError` as soon as the holder's heartbeat moves
        (or its token changes to another live one). Holders whose token is in ``dead``
        (judged dead through another cell), ``compatible`` ones and, with ``force``, any
        holder are replaced at once.
        """
        raw = self.cell.read()
        seen, since, dead = raw, self._clock(), set(dead)
        while True:
            other = OwnerRecord.from_bytes(raw) if raw is not None else None
            if other is not None and not self._yields(other, force, dead):
                if raw != seen or other.held_by_this_process():  # live: its heartbeat moved
                    raise self._error(self._refusal(other))
                silent = self._clock() - since
                lease = max(other.lease_seconds, self.record.lease_seconds)
                free = other.died_here() or silent > lease
            else:
                free = True
            if free and self._write(raw, self.record):
                self.displaced = other
                return
            self._sleep(self._poll)
            raw = self.cell.read()

    def _yields(self, other: OwnerRecord, force: bool, dead: set[str]) -> bool:
        """True when ``other`` gives way at once, without watching its heartbeat."""
        return force or other.released or other.token in dead or self._compatible(other)

    def _write(self, expected: bytes | None, record: OwnerRecord) -> bool:
        data = record.to_bytes()
        if not self.cell.swap(expected, data):
            return False
        self._raw, self.record = data, record
        _HELD_HERE.add(record.token)
        return True

    def _refusal(self, other: OwnerRecord) -> str:
        lease = other.lease_seconds
        scope = f" with checkpoint {other.scope}" if other.scope else ""
        why = self._advice or "two live copies of one query lose and double-count records"
        return (
            f"{self.cell.where} is in use by {other.describe()}{scope}, whose heartbeat is "
            f"moving: {why}. Stop that "
            f"process; if it is dead, its lease expires {lease:g} s after its last heartbeat "
            f"(start again after {lease:g} s), or start with force=True "
            "(streamkit run --force) once you are sure it is dead"
        )

    def renew(self) -> None:
        """Increment the heartbeat (compare-and-swap on the record last written).

        Raises :class:`OwnerLostError` when the record now belongs to another process.
        Store errors propagate (the heartbeat retries them); a renewal that landed although
        its answer was lost (an outage mid-call) is recognised by the next one (the stored
        record is exactly the one it would write) and adopted, never taken for a loss."""
        if self._raw is None:
            raise OwnerLostError(f"{self.cell.where}: owner lease not held")
        nxt = replace(self.record, heartbeat=self.record.heartbeat + 1)
        if self._write(self._raw, nxt):
            return
        current = self.cell.read()
        if current == nxt.to_bytes():  # an earlier renewal landed, its answer was lost
            self._raw, self.record = current, nxt
            return
        other = OwnerRecord.from_bytes(current) if current is not None else None
        self._forget()
        who = other.describe() if other is not None else "nobody (the record was deleted)"
        raise OwnerLostError(
            f"{self.cell.where} was taken over by {who}; this copy of query "
            f"{self.record.query!r} stops without writing anything more"
        )

    def release(self) -> None:
        """Mark the record released (if still ours), so the next start takes it at once."""
        if self._raw is None:
            return
        with contextlib.suppress(StreamkitError):
            self._write(self._raw, replace(self.record, released=True))
        self._forget()

    def _forget(self) -> None:
        _HELD_HERE.discard(self.record.token)
        self._raw = None


def acquire_all(leases: Sequence[OwnerLease], *, force: bool = False) -> None:
    """Acquire ``leases`` in order (a holder displaced from one is dead for the next);
    on a refusal, release those already taken and re-raise."""
    dead: set[str] = set()
    try:
        for lease in leases:
            lease.acquire(force=force, dead=dead)
            if lease.displaced is not None:
                dead.add(lease.displaced.token)
    except BaseException:
        for lease in leases:
            lease.release()
        raise


class OwnerHeartbeat:
    """Renews leases every ``interval`` seconds in a daemon thread (its own, so a busy
    engine never delays a renewal); on :class:`OwnerLostError` calls ``on_lost`` once and
    stops. Store errors are logged and retried at the next beat. :meth:`stop` joins the
    thread and releases every lease."""

    def __init__(
        self,
        leases: Sequence[OwnerLease],
        on_lost: Callable[[OwnerLostError], None],
        interval: float | None = None,
    ) -> None:
        self.leases = list(leases)
        seconds = min((lease.record.lease_seconds for lease in leases), default=1.0)
        self.interval = interval if interval is not None else seconds / 3
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="owner-heartbeat", daemon=True)

    def start(self) -> OwnerHeartbeat:
        if self.leases:
            self._thread.start()
        return self

    def beat(self) -> bool:
        """Renew every lease once; False once one is lost (``on_lost`` was called)."""
        for lease in self.leases:
            try:
                lease.renew()
            except OwnerLostError as exc:
                self._on_lost(exc)
                return False
            except StreamkitError as exc:
                log.warning("owner lease of %s not renewed (will retry): %s", lease.cell.where, exc)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval) and self.beat():
            pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        for lease in self.leases:
            lease.release()


@runtime_checkable
class ClaimingSource(Protocol):
    """A source that keeps its own owner leases (e.g. one per Kinesis app name)."""

    def owner_leases(self, query: QueryIdentity) -> list[OwnerLease]:
        """Leases to hold while ``query`` runs (acquired after the checkpoint's)."""
        ...


@dataclass(frozen=True)
class QueryIdentity:
    """Who a starting query is: what its owner records say."""

    name: str
    token: str
    checkpoint: str
    """The checkpoint location (``file://host/abs/path`` or ``s3://...``), or ``""``."""
    lease_seconds: float = OWNER_LEASE_SECONDS

    def record(self) -> OwnerRecord:
        return OwnerRecord.mine(self.name, self.token, self.checkpoint, self.lease_seconds)


def checkpoint_location(store: object | None) -> str:
    """A location that names the same folder from any machine (local paths get the host)."""
    if store is None:
        return ""
    url = getattr(store, "url", None)
    if isinstance(url, str):
        return url
    root = getattr(store, "root", None)
    if isinstance(root, Path):
        return f"file://{socket.gethostname()}{root.resolve()}"
    return repr(store)


def owner_leases_for(
    name: str, store: object | None, source: object, lease_seconds: float = OWNER_LEASE_SECONDS
) -> list[OwnerLease]:
    """The owner leases a query takes at start: its checkpoint folder's (when the store can
    swap), then the source's own (:class:`ClaimingSource`)."""
    where = checkpoint_location(store)
    identity = QueryIdentity(name, uuid.uuid4().hex, where, lease_seconds)
    leases = []
    if store is not None and callable(getattr(store, "swap_bytes", None)):
        cell = StoreCell(store, f"checkpoint folder {where}")  # type: ignore[arg-type]
        leases.append(OwnerLease(cell, identity.record()))
    if isinstance(source, ClaimingSource):
        leases += source.owner_leases(identity)
    return leases
