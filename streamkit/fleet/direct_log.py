"""The fenced log of a source task without an exchange (a stateless plan: each source task
runs it whole and writes to the sink).

The task's folder (``<root>/source/<shard id>/``) is fenced as an aggregation task's is
(:mod:`streamkit.fleet.task_log`: a ``fence`` record changed only by compare-and-swap, one
log folder per owner epoch, the epoch being the source lease's counter at the claim). A
batch is a fixed range of the shard, the records after ``after`` up to and including
``last``, in this order:

1. ``offsets/N`` (``last``, and ``after`` in its meta) and ``commits/N`` in the owner's
   epoch folder; then the fence's compare-and-swap to batch N ending at ``last`` (the
   commit point: :class:`~streamkit.fleet.fence.TaskFencedError` once another owner
   claimed the task; nothing of the batch is then visible);
2. the sink files of batch N (a ``committed_only`` task sink: every writing of N has the
   same rows and file names), then :meth:`DirectTaskLog.published`;
3. the lease checkpoint ``last``.

The output rows are not staged (that would write the stream twice): a stateless plan's
output is a function of the batch's records, so a new owner that finds batch N committed
but the lease checkpoint before ``last`` (the previous owner may have died or paused
between 1 and 3) re-reads exactly ``(after, last]`` and writes batch N's files again,
without a new commit (:attr:`Resume.republish`). A paused owner that committed N before
the claim and writes N's files later writes the same rows; any later batch of it is
refused at its commit, before it writes anything to the sink.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamkit.streaming.checkpoint import CheckpointLog

from .fence import LEGACY_EPOCH
from .task_log import FencedTaskLog

AFTER = "after"
"""The key of ``offsets/N``'s meta naming where batch N starts (exclusive; None: the
shard's start)."""


@dataclass(frozen=True)
class Resume:
    """Where a claimed task resumes."""

    next_id: int
    """The id of the next new batch."""
    skip_to: int | None
    """Records at or before this sequence number are in committed batches: skipped."""
    replay_through: str | None = None
    """Before anything else, the records up to and including it (after :attr:`skip_to`)
    are read as one batch, :attr:`replay_id` (None: no replay)."""
    replay_id: int | None = None
    republish: bool = False
    """True: the replayed batch is committed already: its rows go to the sink, nothing is
    committed again. False: it was logged before fencing and never committed: it commits
    as a new batch (its files of the first attempt are written over)."""


def _seq(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


class DirectTaskLog:
    """The fenced log of one stateless source task, for one owner (module docstring)."""

    def __init__(self, location: str, owner: str, shard: str) -> None:
        self.shard = shard
        self.fenced = FencedTaskLog(location, owner, shard)

    def claim(self, epoch: int, checkpoint: str | None) -> Resume:
        """Take the task for ``epoch`` (the source lease's counter;
        :class:`~streamkit.fleet.fence.TaskFencedError` when a later owner has it), given
        the lease's ``checkpoint`` (a sequence number; None or a start sentinel: nothing
        checkpointed). Blocking."""
        fenced = self.fenced
        taken = fenced.claim(epoch)
        if taken.log in (None, LEGACY_EPOCH) or taken.batch is None or taken.offset is None:
            return self._legacy(taken.batch, taken.offset)  # nothing committed under a fence
        nxt, last = taken.batch + 1, taken.offset
        done = _seq(checkpoint)
        if done is not None and done >= int(last):  # N is in the sink: the lease says so
            return Resume(nxt, int(last))
        assert fenced.previous is not None
        after = fenced.previous.offsets_meta(taken.batch).get(AFTER)
        return Resume(nxt, _seq(after), last, taken.batch, republish=True)

    def _legacy(self, committed: int | None, last: str | None) -> Resume:
        """Nothing committed under a fence (a fresh task, or a log from before fencing,
        whose order was sink, then commit): a batch logged and never committed may have
        sink files; it is re-run with exactly its records (its files are written over)."""
        nxt = 0 if committed is None else committed + 1
        pending = CheckpointLog(self.fenced.root).pending(committed)
        through = pending[1].get(self.shard) if pending is not None else None
        if pending is None or through is None:
            return Resume(nxt, _seq(last))
        return Resume(nxt, _seq(last), through, pending[0])

    def commit(self, batch_id: int, after: str | None, last: str) -> None:
        """Log and commit batch ``batch_id`` = the records after ``after`` up to ``last``
        (step 1 of the module docstring). Blocking."""
        log = self.fenced.log
        assert log is not None, "claim the task first"
        offsets = {self.shard: last}
        log.write_offsets(batch_id, offsets, {AFTER: after})
        log.write_commit(batch_id, offsets, {})
        self.fenced.commit(batch_id, last)

    def published(self, batch_id: int) -> None:
        """Batch ``batch_id`` is in the sink (after the owner's first commit the earlier
        epochs' folders are deleted). Blocking."""
        self.fenced.published(batch_id, 0)
