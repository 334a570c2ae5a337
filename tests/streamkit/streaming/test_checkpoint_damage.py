"""Damaged checkpoint files (cut in half, deleted, garbled) of each kind: the damage is
reported with the file's path, the query falls back to the previous committed batch and
replays from its offsets, and the result is still exact; with no intact batch left the
start is refused with a typed error naming the folder and what to do."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.streaming.checkpoint import (
    CheckpointDamagedError,
    CheckpointDamagedWarning,
    CheckpointLog,
)
from streamkit.streaming.checkpoint_store import LocalCheckpointStore, S3CheckpointStore
from streamkit.streaming.query import StreamingQueryError
from streamkit.streaming.sources.memory import MemoryStream

if TYPE_CHECKING:
    from pathlib import Path

    from streamkit.config import AwsEndpoint
    from streamkit.streaming.contracts import CheckpointStore

pytestmark = pytest.mark.filterwarnings(
    "ignore::streamkit.streaming.checkpoint.CheckpointDamagedWarning"
)
SCHEMA = pa.schema([("k", pa.int64()), ("v", pa.int64())])
LAST = "000000000002"


def feed(stream: MemoryStream, round_: int) -> None:
    for i in range(5):
        stream.add_rows([{"k": i % 3, "v": round_ * 5 + i}], partition=i % 2)


def run(stream: MemoryStream, checkpoint: str) -> list[dict[str, int]]:
    """One query run (as one process would); the complete result of its last batch."""
    name = f"ck_{uuid.uuid4().hex[:8]}"
    df = sk.read_stream.source(stream).group_by("k").agg(sk.count().alias("n"))
    q = df.write_stream.output_mode("complete").checkpoint(checkpoint).memory(name).start()
    try:
        q.process_all_available(timeout=30)
    finally:
        q.stop()
    return sorted(sk.memory_table(name).to_pylist(), key=lambda r: r["k"])


def truth(rounds: int) -> list[dict[str, int]]:
    n = [sum(1 for i in range(5) if i % 3 == k) * rounds for k in range(3)]
    return [{"k": k, "n": n[k]} for k in range(3)]


def three_batches(checkpoint: str) -> MemoryStream:
    stream = MemoryStream(SCHEMA, partitions=2)
    for r in range(3):
        feed(stream, r)
        run(stream, checkpoint)
    return stream


def damage(store: CheckpointStore, path: str, how: str) -> None:
    raw = store.read_bytes(path)
    assert raw is not None
    if how == "delete":
        store.delete(path)
    elif how == "truncate":
        store.write_bytes(path, raw[: len(raw) // 2])
    elif path.startswith(("state/", "deltas/")):
        middle = len(raw) // 2
        store.write_bytes(path, raw[:middle] + bytes([raw[middle] ^ 0xFF]) + raw[middle + 1 :])
    else:  # one digit of an offset changes: still valid JSON, wrong position
        store.write_bytes(
            path, re.sub(rb'"0": "(\d)', lambda m: b'"0": "%d' % (int(m[1]) - 1), raw)
        )


HOW = ["truncate", "delete", "garble"]


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("kind", ["commits", "deltas"])  # batch 2's state is a delta
def test_a_damaged_latest_batch_falls_back_to_the_previous_one(
    tmp_path: Path, kind: str, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    ck = tmp_path / "ck"
    stream = three_batches(str(ck))
    store = LocalCheckpointStore(ck)
    damage(store, f"{kind}/{LAST}", how)
    if (kind, how) == ("commits", "delete"):  # no commit: batch 2 simply never committed
        assert CheckpointLog(store).latest().batch_id == 1  # type: ignore[union-attr]
    else:
        with pytest.warns(CheckpointDamagedWarning, match=re.escape(str(ck / kind / LAST))):
            latest = CheckpointLog(store).latest()
        assert latest is not None
        assert latest.batch_id == 1
    feed(stream, 3)
    with caplog.at_level(logging.WARNING, logger="streamkit.streaming.checkpoint"):
        assert run(stream, str(ck)) == truth(4)
    if (kind, how) != ("commits", "delete"):
        assert str(ck / kind / LAST) in caplog.text
    assert CheckpointLog(store).latest().batch_id >= 3  # type: ignore[union-attr]


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("pending", [True, False], ids=["pending", "committed"])
def test_a_damaged_offsets_file_is_ignored(tmp_path: Path, how: str, pending: bool) -> None:
    """Pending: batch 2 ran but never committed and its offsets file is damaged: it is
    reported and the source reads on from batch 1's offsets. Committed: the commit file
    holds the offsets, so the damaged offsets file is not needed."""
    ck = tmp_path / "ck"
    stream = three_batches(str(ck))
    store = LocalCheckpointStore(ck)
    if pending:
        store.delete(f"commits/{LAST}")
        store.delete(f"deltas/{LAST}")
    damage(store, f"offsets/{LAST}", how)
    log = CheckpointLog(store)
    latest = log.latest()
    assert latest is not None
    if pending and how != "delete":
        with pytest.warns(CheckpointDamagedWarning, match=re.escape(str(ck / "offsets" / LAST))):
            assert log.pending(latest.batch_id) is None
    feed(stream, 3)
    assert run(stream, str(ck)) == truth(4)


@pytest.mark.parametrize("how", HOW)
def test_with_no_intact_batch_left_the_start_is_refused(tmp_path: Path, how: str) -> None:
    ck = tmp_path / "ck"
    stream = MemoryStream(SCHEMA, partitions=2)
    feed(stream, 0)
    run(stream, str(ck))
    store = LocalCheckpointStore(ck)
    damage(store, "state/000000000000", how)
    with pytest.raises(StreamingQueryError) as failed, pytest.warns(CheckpointDamagedWarning):
        run(stream, str(ck))
    cause = failed.value.__cause__
    assert isinstance(cause, CheckpointDamagedError)
    assert cause.location == str(ck)
    message = str(cause)
    assert str(ck / "state" / "000000000000") in message
    assert "delete it" in message
    assert "backup" in message


def test_files_written_before_checksums_are_still_read(tmp_path: Path) -> None:
    store = LocalCheckpointStore(tmp_path)
    body = {"batch_id": 4, "offsets": {"0": "7"}, "watermark": 5, "max_event": 9}
    store.write_bytes("commits/000000000004", json.dumps(body).encode())
    store.write_bytes("offsets/000000000005", json.dumps({"offsets": {"0": "9"}}).encode())
    state = io.BytesIO()
    pl.DataFrame({"k": [1]}).write_ipc(state)
    store.write_bytes("state/000000000004", state.getvalue())
    log = CheckpointLog(store)
    latest = log.latest()
    assert latest is not None
    assert (latest.batch_id, latest.offsets, latest.watermark) == (4, {"0": "7"}, 5)
    assert latest.state is not None
    assert latest.state.to_dicts() == [{"k": 1}]
    assert log.pending(4) == (5, {"0": "9"})


@pytest.mark.integration
@pytest.mark.localstack
def test_a_garbled_state_on_s3_falls_back_to_the_previous_batch(
    configured: AwsEndpoint, bucket: str
) -> None:
    ck = f"s3://{bucket}/ck"
    stream = three_batches(ck)
    store = S3CheckpointStore(ck, configured)
    damage(store, f"deltas/{LAST}", "garble")
    with pytest.warns(CheckpointDamagedWarning, match=re.escape(f"{ck}/deltas/{LAST}")):
        assert CheckpointLog(store).latest().batch_id == 1  # type: ignore[union-attr]
    feed(stream, 3)
    assert run(stream, ck) == truth(4)
