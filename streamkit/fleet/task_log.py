"""A fleet task's checkpoint log under a fence (:mod:`streamkit.fleet.fence`).

One owner of a task, from its claim to its loss, drives it (blocking calls):

1. :meth:`FencedTaskLog.claim` with the owner's epoch: takes the fence, opens this
   epoch's log folder and, when a batch was committed, the folder that holds it
   (:attr:`previous`, to restore from) and its staged output (:meth:`staged_output`),
   which the caller writes to the sink again before anything else: the previous owner
   may have committed it without writing it;
2. per batch N: the caller writes ``offsets/N`` and the state into :attr:`log`,
   :meth:`stage` the batch's output rows, ``commits/N``, then :meth:`commit` (the fence's
   compare-and-swap: the commit point; :class:`~streamkit.fleet.fence.TaskFencedError`
   once another owner claimed the task), then writes the rows to the sink and calls
   :meth:`published`.

So the sink only ever receives the rows of committed batches, each batch with one content
(whoever writes it, and however often), and every batch before the last committed one was
written to the sink before the next was committed. Folders of earlier epochs are deleted
after the owner's first commit (a stale owner may still add a file to its own folder
afterwards: never read, left behind).
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, cast

from streamkit.fleet.fence import (
    FENCE_FILE,
    LEGACY_EPOCH,
    FenceRecord,
    TaskFence,
    drop_epoch,
    epoch_folder,
)
from streamkit.streaming import _envelope as envelope
from streamkit.streaming.checkpoint import CheckpointLog
from streamkit.streaming.checkpoint_store import open_checkpoint_store

if TYPE_CHECKING:
    import pyarrow as pa

    from streamkit.streaming.contracts import CheckpointStore
    from streamkit.streaming.owner import SwappingStore

log = logging.getLogger(__name__)


def _name(batch_id: int) -> str:
    return f"output/{batch_id:012d}"


def _ipc(table: pa.Table) -> bytes:
    """``table`` as an LZ4-compressed Arrow IPC file (the format pyarrow's writer staged
    before: ``pyarrow.ipc.open_file`` reads both), written by Polars. pyarrow's writer took
    its LZ4 buffers from Arrow's default memory pool (mimalloc), which kept the pages, so RSS
    grew with every staged batch, as it did for the checkpoint's state files
    (:func:`streamkit.streaming.checkpoint._ipc`). Here the pool gives only the schema handed
    to Polars (~1.3 KB per column, whatever the rows: 180 KB for 25 tables of 5 columns
    where pyarrow's writer took 5.7 MB). Polars' oldest compatibility level: a table of
    Polars' ``to_arrow()`` (an aggregation task's output) reads back with its own schema
    (large strings, not string views); a ``string`` column of another table reads back as
    ``large_string``."""
    import polars as pl

    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    buf = io.BytesIO()
    frame.write_ipc(buf, compression="lz4", compat_level=pl.CompatLevel.oldest())
    return buf.getvalue()


class FencedTaskLog:
    """The log of one task folder, for one owner (see the module docstring)."""

    def __init__(self, location: str, owner: str, offset_key: str) -> None:
        self.location = location.rstrip("/")
        self.root: CheckpointStore = open_checkpoint_store(self.location)
        self.fence = TaskFence(
            cast("SwappingStore", self.root), f"task folder {self.location}", owner
        )
        self._offset_key = offset_key
        self.log: CheckpointLog | None = None
        """This epoch's log (after :meth:`claim`)."""
        self.previous: CheckpointLog | None = None
        """The log holding the last committed batch, when there is one."""
        self.taken: FenceRecord | None = None
        """The fence record taken over by :meth:`claim`."""
        self._staged: int | None = None
        self._drop: tuple[int, ...] = ()
        """Epoch folders to delete (listed in the fence until they are gone)."""
        self._dropping = False

    def _open(self, epoch: int) -> CheckpointLog:
        folder = epoch_folder(epoch)
        return CheckpointLog(open_checkpoint_store(f"{self.location}/{folder}".rstrip("/")))

    def claim(self, epoch: int) -> FenceRecord:
        """Take the task for ``epoch`` (:class:`~streamkit.fleet.fence.TaskFencedError`
        when a later owner has it); returns the record taken over: its ``batch`` (None:
        none committed) is the batch to resume after, its ``offset`` where it ended."""
        legacy = None
        if self.root.read_bytes(FENCE_FILE) is None:
            last = CheckpointLog(self.root).latest()  # a log written before fencing
            if last is not None:
                offset = last.offsets.get(self._offset_key)
                legacy = FenceRecord(LEGACY_EPOCH, "", last.batch_id, LEGACY_EPOCH, offset)
        taken = self.taken = self.fence.claim(epoch, legacy)
        self.log = self._open(epoch)
        if taken.batch is not None and taken.log is not None:
            self.previous = self._open(taken.log)
        mine = self.fence.record
        assert mine is not None
        old = () if taken.log is None else (taken.log,)
        self._drop = tuple(sorted(set(mine.stale + old) - {epoch}))
        return taken

    def staged_output(self) -> pa.Table | None:
        """The output rows the taken-over commit staged (None: none, or no rows)."""
        taken, previous = self.taken, self.previous
        if taken is None or taken.batch is None or previous is None:
            return None
        raw = previous.store.read_bytes(_name(taken.batch))
        if raw is None:
            return None
        from pyarrow import ipc

        where = f"{self.location}/{epoch_folder(taken.log or 0)}/{_name(taken.batch)}"
        body = envelope.open_(raw, where, ValueError)
        return ipc.open_file(io.BytesIO(body)).read_all()

    def stage(self, batch_id: int, table: pa.Table) -> None:
        """Stage batch ``batch_id``'s output rows in this epoch's folder (before commit)."""
        if table.num_rows == 0:
            return
        assert self.log is not None
        self.log.store.write_bytes(_name(batch_id), envelope.seal(_ipc(table)))

    def commit(self, batch_id: int, offset: str | None) -> None:
        """The commit point of batch ``batch_id`` (after ``commits/N``); raises
        :class:`~streamkit.fleet.fence.TaskFencedError` once another owner claimed."""
        self.fence.commit(batch_id, offset, self._drop)
        self._dropping = bool(self._drop)

    def published(self, batch_id: int, rows: int) -> None:
        """Batch ``batch_id`` (``rows`` output rows) is in the sink: the staged output
        before it is no longer needed; after the first commit, earlier epochs' folders go."""
        assert self.log is not None
        if self._staged is not None and self._staged != batch_id:
            self.log.store.delete(_name(self._staged))
        self._staged = batch_id if rows else None
        if not self._dropping:
            return
        self._dropping = False
        for epoch in self._drop:
            try:
                drop_epoch(self.root, epoch)
            except Exception as exc:  # still listed: deleted after the next commit
                log.warning("%s: deleting epoch %d's folder failed: %r", self.location, epoch, exc)
                return
        self._drop = ()  # the next commit's fence no longer lists them
