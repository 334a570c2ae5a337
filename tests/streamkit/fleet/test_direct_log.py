"""The fenced log of a stateless source task (streamkit.fleet.direct_log) on a local folder:
a zombie owner's commit is refused once another owner claimed, a committed batch whose lease
checkpoint was not written is re-read exactly and written to the sink again, and a log from
before fencing resumes as it did."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamkit.fleet.direct_log import DirectTaskLog, Resume
from streamkit.fleet.fence import FENCE_FILE, FenceRecord, TaskFencedError
from streamkit.streaming.checkpoint import CheckpointLog
from streamkit.streaming.checkpoint_store import LocalCheckpointStore


def _fence(root: Path) -> FenceRecord:
    return FenceRecord.from_bytes((root / FENCE_FILE).read_bytes(), "t")


def test_a_fresh_task_starts_at_batch_0(tmp_path: Path) -> None:
    task = DirectTaskLog(str(tmp_path), "a", "s")
    assert task.claim(2, None) == Resume(0, None)
    task.commit(0, None, "100")
    task.published(0)
    assert (_fence(tmp_path).batch, _fence(tmp_path).offset) == (0, "100")


def test_a_zombie_owners_commit_is_refused_after_a_later_claim(tmp_path: Path) -> None:
    zombie = DirectTaskLog(str(tmp_path), "zombie", "s")
    zombie.claim(3, None)
    zombie.commit(0, None, "100")
    zombie.published(0)  # lease checkpoint 100; then it pauses before committing batch 1
    heir = DirectTaskLog(str(tmp_path), "heir", "s")
    assert heir.claim(7, "100") == Resume(1, 100)  # batch 0 is in the sink: nothing to redo
    with pytest.raises(TaskFencedError, match="epoch 7"):
        zombie.commit(1, "100", "200")  # the zombie's batch 1 never reaches the sink
    heir.commit(1, "100", "350")
    now = _fence(tmp_path)
    assert (now.epoch, now.owner, now.batch, now.offset) == (7, "heir", 1, "350")
    with pytest.raises(TaskFencedError):  # nor any later batch of it
        zombie.commit(2, "200", "300")


def test_a_committed_batch_without_its_lease_checkpoint_is_written_again(tmp_path: Path) -> None:
    old = DirectTaskLog(str(tmp_path), "old", "s")
    old.claim(1, None)
    old.commit(0, None, "100")
    old.published(0)
    old.commit(1, "100", "200")  # committed; died before its sink files and checkpoint
    heir = DirectTaskLog(str(tmp_path), "heir", "s")
    assert heir.claim(4, "100") == Resume(2, 100, "200", 1, republish=True)
    again = DirectTaskLog(str(tmp_path), "again", "s")  # the checkpoint made it: nothing to redo
    assert again.claim(5, "200") == Resume(2, 200)


def test_the_first_batch_committed_without_a_checkpoint_is_read_from_the_start(
    tmp_path: Path,
) -> None:
    old = DirectTaskLog(str(tmp_path), "old", "s")
    old.claim(1, None)
    old.commit(0, None, "100")
    heir = DirectTaskLog(str(tmp_path), "heir", "s")
    assert heir.claim(2, None) == Resume(1, None, "100", 0, republish=True)


def test_a_batch_logged_before_fencing_and_never_committed_is_rerun_exactly(
    tmp_path: Path,
) -> None:
    """The unfenced order was offsets, sink, commit: a logged batch may have sink files, so
    it is re-run with exactly its records (its files are written over)."""
    legacy = CheckpointLog(LocalCheckpointStore(tmp_path))
    legacy.write_offsets(0, {"s": "250"})  # logged, sink maybe written, never committed
    task = DirectTaskLog(str(tmp_path), "a", "s")
    assert task.claim(3, None) == Resume(0, None, "250", 0)
    task.commit(0, None, "250")
    task.published(0)
    assert DirectTaskLog(str(tmp_path), "b", "s").claim(4, "250") == Resume(1, 250)
