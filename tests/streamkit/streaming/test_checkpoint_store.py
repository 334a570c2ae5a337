"""Checkpoint stores: the contract (shared with the S3 tests) and local atomicity.

``check_*`` functions are the contract suite; tests/integration/test_stream_sinks_s3.py
runs them against S3 on LocalStack.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from streamkit.errors import ConfigError
from streamkit.streaming.checkpoint_store import (
    InvalidStorePathError,
    LocalCheckpointStore,
    open_checkpoint_store,
    parse_s3_url,
)
from streamkit.streaming.contracts import CheckpointStore

# --- the contract, for every implementation -------------------------------------------


def check_read_write_replace(store: CheckpointStore) -> None:
    assert store.read_bytes("offsets/0") is None
    store.write_bytes("offsets/0", b'{"shard-0": "1"}')
    assert store.read_bytes("offsets/0") == b'{"shard-0": "1"}'
    store.write_bytes("offsets/0", b"second")
    assert store.read_bytes("offsets/0") == b"second"
    store.write_bytes("metadata", b"")
    assert store.read_bytes("metadata") == b""


def check_list(store: CheckpointStore) -> None:
    assert store.list("commits") == []
    for name in ("10", "2", "1"):
        store.write_bytes(f"commits/{name}", name.encode())
    store.write_bytes("commits/nested/deeper", b"x")
    store.write_bytes("top", b"x")
    assert store.list("commits") == ["1", "10", "2"]
    assert store.list("commits/nested") == ["deeper"]
    assert "top" in store.list("")
    assert "1" not in store.list("")


def check_delete(store: CheckpointStore) -> None:
    store.write_bytes("state/5", b"snapshot")
    store.delete("state/5")
    assert store.read_bytes("state/5") is None
    assert store.list("state") == []
    store.delete("state/5")  # absent: no error
    store.delete("never/written")


def check_rejects_paths_outside(store: CheckpointStore) -> None:
    for bad in ("/etc/passwd", "../escape", "a/../../b", ""):
        with pytest.raises(InvalidStorePathError):
            store.write_bytes(bad, b"x")


CONTRACT = (check_read_write_replace, check_list, check_delete, check_rejects_paths_outside)


@pytest.mark.parametrize("check", CONTRACT, ids=lambda f: f.__name__)
def test_local_store_contract(tmp_path: Path, check: object) -> None:
    assert callable(check)
    check(LocalCheckpointStore(tmp_path / "ckpt"))


# --- local atomicity -------------------------------------------------------------------


def test_failed_write_keeps_old_content_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalCheckpointStore(tmp_path)
    store.write_bytes("offsets/3", b"old")

    def disk_error(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", disk_error)
    with pytest.raises(OSError, match="Input/output"):
        store.write_bytes("offsets/3", b"new")
    monkeypatch.undo()
    assert store.read_bytes("offsets/3") == b"old"
    assert sorted(p.name for p in (tmp_path / "offsets").iterdir()) == ["3"]


def test_temp_files_left_by_a_crash_are_not_listed(tmp_path: Path) -> None:
    store = LocalCheckpointStore(tmp_path)
    store.write_bytes("commits/0", b"{}")
    (tmp_path / "commits" / ".1.abc123").write_bytes(b"partial")
    assert store.list("commits") == ["0"]


def test_concurrent_reader_sees_whole_versions_only(tmp_path: Path) -> None:
    store = LocalCheckpointStore(tmp_path)
    versions = [bytes([65 + i]) * 200_000 for i in range(8)]
    store.write_bytes("state", versions[0])
    seen: list[bytes] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            data = store.read_bytes("state")
            assert data is not None
            seen.append(data)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(5):
            for v in versions:
                store.write_bytes("state", v)
    finally:
        done.set()
        reader.join()
    assert seen
    assert all(s in versions for s in seen)


_WRITER = """
import sys
from pathlib import Path
from streamkit.streaming.checkpoint_store import LocalCheckpointStore
store = LocalCheckpointStore(Path(sys.argv[1]))
i = 0
while True:
    store.write_bytes("offsets/latest", bytes([65 + i % 26]) * 500_000)
    if i == 0:
        print("ready", flush=True)
    i += 1
"""


def test_kill_9_during_writes_leaves_a_complete_version(tmp_path: Path) -> None:
    for attempt in range(3):
        root = tmp_path / str(attempt)
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(root)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(0.05 + 0.07 * attempt)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        data = LocalCheckpointStore(root).read_bytes("offsets/latest")
        assert data is not None
        assert len(data) == 500_000
        assert data == data[:1] * len(data)
        assert LocalCheckpointStore(root).list("offsets") == ["latest"]


# --- choosing a store ------------------------------------------------------------------


def test_open_local_creates_the_directory(tmp_path: Path) -> None:
    store = open_checkpoint_store(str(tmp_path / "a" / "b"))
    assert isinstance(store, LocalCheckpointStore)
    assert (tmp_path / "a" / "b").is_dir()
    store.write_bytes("x", b"1")
    assert open_checkpoint_store(f"file://{tmp_path}/a/b").read_bytes("x") == b"1"


def test_open_rejects_unknown_scheme() -> None:
    with pytest.raises(ConfigError, match="s3://bucket/prefix"):
        open_checkpoint_store("gs://bucket/ckpt")


def test_parse_s3_url() -> None:
    assert parse_s3_url("s3://b") == ("b", "")
    assert parse_s3_url("s3://b/") == ("b", "")
    assert parse_s3_url("s3://b/q/ckpt") == ("b", "q/ckpt/")
    assert parse_s3_url("s3://b/q/ckpt/") == ("b", "q/ckpt/")
    with pytest.raises(ConfigError, match="no bucket"):
        parse_s3_url("s3:///x")
