"""Fencing of a fleet task's checkpoint log: a task that lost its lease cannot commit.

A task's log lives under one folder per owner **epoch**: ``<task>/epochs/<epoch>/`` (the
engine's :class:`~streamkit.streaming.checkpoint.CheckpointLog` layout, plus ``output/<N>``,
the batch's sink rows staged before its commit). The epoch is a number that grows with
every change of owner (for Kinesis tasks, the lease counter of the task's lease when the
owner claims: a later owner's take wrote a higher counter than any earlier owner saw).

One small record per task, ``<task>/fence`` (:class:`FenceRecord`), says who owns the task
and which batch is committed, in which epoch's folder. It is only ever changed by a
compare-and-swap against the record last read or written (:class:`~streamkit.streaming.
owner.RecordCell`: local ``flock`` swap; S3 ``If-None-Match: *`` / ``If-Match``), so:

- :meth:`TaskFence.claim` takes the task for ``epoch`` only if the record's epoch is
  lower (a stale owner claiming late is refused: :class:`TaskFencedError`);
- :meth:`TaskFence.commit` of batch N succeeds only if the record is still the one this
  owner wrote: after a later claim it is refused, whatever the old owner wrote before;
- a restore reads the record and uses exactly the committed batch in the folder it names:
  files a refused owner left in its own folder are never read, and no owner writes into
  another epoch's folder.

Cost per batch: one compare-and-swap of this record (S3: a GET and a conditional PUT).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

from streamkit.errors import StreamkitError
from streamkit.streaming.owner import StoreCell

if TYPE_CHECKING:
    from collections.abc import Callable

    from streamkit.streaming.contracts import CheckpointStore
    from streamkit.streaming.owner import RecordCell, SwappingStore

log = logging.getLogger(__name__)

FENCE_FILE = "fence"
"""The fence record's name in a task's folder."""
LEGACY_EPOCH = 0
"""The epoch of a log written before fencing, directly in the task's folder."""
LOG_FOLDERS = ("offsets", "commits", "state", "deltas", "fleet", "output")
"""The sub-folders of an epoch's log (what :func:`drop_epoch` deletes)."""


SWAPS_IN_FLIGHT: list[int] = [0]
"""Compare-and-swaps of fences running in this process (a test's stop hook waits for 0:
a process stopped inside a local swap holds its ``flock``)."""
_COUNT = threading.Lock()


def quiesced(then: Callable[[], None]) -> None:
    """Run ``then`` (a test's stop hook) while no fence swap of this process runs or can
    start: a process stopped inside a local swap would hold its ``flock``."""
    while True:
        with _COUNT:
            if not SWAPS_IN_FLIGHT[0]:
                then()
                return
        time.sleep(0.01)


class TaskFencedError(StreamkitError):
    """Another owner claimed the task: this one must not commit or write anything more."""


def epoch_folder(epoch: int) -> str:
    """The folder (relative to the task's) of ``epoch``'s log; ``""`` for the legacy log."""
    return "" if epoch == LEGACY_EPOCH else f"epochs/{epoch:020d}"


@dataclass(frozen=True)
class FenceRecord:
    """A task's owner and last committed batch (JSON in ``<task>/fence``)."""

    epoch: int
    """The owner's epoch: a later owner always has a higher one."""
    owner: str
    """The owner's worker id (for messages)."""
    batch: int | None = None
    """The last committed batch id (None: nothing committed yet)."""
    log: int | None = None
    """The epoch whose folder holds ``batch``'s log."""
    offset: str | None = None
    """The input position ``batch`` ends at (an exchange sequence number)."""
    stale: tuple[int, ...] = ()
    """Epoch folders no committed batch needs any more, to delete."""

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> FenceRecord:
        try:
            raw = json.loads(data)
            return cls(
                int(raw["epoch"]), str(raw["owner"]),
                None if raw.get("batch") is None else int(raw["batch"]),
                None if raw.get("log") is None else int(raw["log"]),
                None if raw.get("offset") is None else str(raw["offset"]),
                tuple(int(e) for e in raw.get("stale", ())),
            )  # fmt: skip
        except (ValueError, KeyError, TypeError) as exc:
            raise StreamkitError(
                f"{where} is damaged ({exc}); it names the task's owner and last commit: "
                "restore it from a backup, or delete the task's folder to start it over"
            ) from exc


class TaskFence:
    """The fence of one task, held by one owner (see the module docstring)."""

    def __init__(self, store: SwappingStore, where: str, owner: str) -> None:
        self.cell: RecordCell = StoreCell(store, where, FENCE_FILE)
        self.owner = owner
        self.record: FenceRecord | None = None
        """The record this owner last wrote (None before :meth:`claim`)."""
        self._raw: bytes | None = None

    def claim(self, epoch: int, legacy: FenceRecord | None = None) -> FenceRecord:
        """Take the task for ``epoch``; returns the record taken over (``legacy`` when
        there was none: a log from before fencing, else an empty record). Raises
        :class:`TaskFencedError` when the record's epoch is ``epoch`` or higher."""
        if epoch <= LEGACY_EPOCH:
            raise ValueError(f"an epoch is a positive integer, got {epoch}")
        while True:
            raw = self.cell.read()
            if raw is not None:
                before = FenceRecord.from_bytes(raw, self.cell.where)
            else:
                before = legacy or FenceRecord(LEGACY_EPOCH, "")
            if before.epoch >= epoch:
                raise self._refused(
                    f"{self.cell.where}: epoch {before.epoch} (worker {before.owner!r}) took "
                    f"this task over; this owner (epoch {epoch}) writes nothing more. If no "
                    "other worker holds this lease, the lease table was recreated while the "
                    "checkpoint root was kept: restore the table, or delete the checkpoint "
                    "root to start the query over"
                )
            # a claimant that never committed may have left files in its folder
            uncommitted = before.epoch not in (before.log, LEGACY_EPOCH)
            stale = before.stale + ((before.epoch,) if uncommitted else ())
            mine = replace(before, epoch=epoch, owner=self.owner, stale=stale)
            data = mine.to_bytes()
            if self._swap(raw, data):
                self.record, self._raw = mine, data
                return before

    def commit(self, batch: int, offset: str | None, stale: tuple[int, ...] = ()) -> None:
        """Commit ``batch`` (ending at ``offset``) in this owner's folder, with ``stale``
        the epoch folders still to delete. Raises :class:`TaskFencedError` (nothing
        written) when another owner claimed the task since this one's last write."""
        mine, raw = self.record, self._raw
        if mine is None or raw is None:
            raise TaskFencedError(f"{self.cell.where}: the task was not claimed here")
        nxt = replace(mine, batch=batch, log=mine.epoch, offset=offset, stale=stale)
        data = nxt.to_bytes()
        if self._swap(raw, data):
            self.record, self._raw = nxt, data
            return
        current = self.cell.read()
        now = FenceRecord.from_bytes(current, self.cell.where) if current else None
        who = f"epoch {now.epoch} (worker {now.owner!r})" if now else "nobody (deleted)"
        self.record = self._raw = None
        raise self._refused(
            f"{self.cell.where}: batch {batch} of epoch {mine.epoch} not committed: {who} "
            "took this task over; what this owner wrote for it is ignored"
        )

    def _swap(self, expected: bytes | None, data: bytes) -> bool:  # counted: see quiesced
        with _COUNT:
            SWAPS_IN_FLIGHT[0] += 1
        try:
            return self.cell.swap(expected, data)
        finally:
            with _COUNT:
                SWAPS_IN_FLIGHT[0] -= 1

    @staticmethod
    def _refused(message: str) -> TaskFencedError:
        """The refusal, logged where it happens (the caller may be cancelled meanwhile)."""
        log.warning("fenced: %s", message)
        return TaskFencedError(message)


def drop_epoch(store: CheckpointStore, epoch: int) -> None:
    """Delete the log files of ``epoch``'s folder (``store``: the task's folder)."""
    prefix = epoch_folder(epoch)
    for sub in LOG_FOLDERS:
        folder = f"{prefix}/{sub}" if prefix else sub
        for name in store.list(folder):
            store.delete(f"{folder}/{name}")
