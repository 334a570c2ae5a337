"""Checkpoint log: what `make mutation` found untested in checkpoint.py and _envelope.py.

Expected values follow the layout in the module docstring of
``streamkit.streaming.checkpoint`` (``offsets/N`` holds the batch id, its offsets and the
meta a re-run reuses; damage is reported naming the file), written out by hand here.
"""

from __future__ import annotations

import json
import re
import zlib
from typing import TYPE_CHECKING

import polars as pl
import pytest

from streamkit.streaming import _envelope as envelope
from streamkit.streaming.checkpoint import (
    CheckpointDamagedError,
    CheckpointDamagedWarning,
    CheckpointLog,
)
from streamkit.streaming.checkpoint_store import LocalCheckpointStore
from streamkit.streaming.state.changelog import DELETED

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.filterwarnings(
    "ignore::streamkit.streaming.checkpoint.CheckpointDamagedWarning"
)


def test_offsets_files_hold_the_batch_id_the_offsets_and_the_meta(tmp_path: Path) -> None:
    store = LocalCheckpointStore(tmp_path)
    log = CheckpointLog(store)
    log.write_offsets(3, {"0": "17", "1": "4"}, {"processing_time": 1.5})
    log.write_offsets(4, {"0": "18"})
    raw = store.read_bytes("offsets/000000000003")
    assert raw is not None
    body = json.loads(raw)
    body.pop("checksum")
    assert body == {"batch_id": 3, "offsets": {"0": "17", "1": "4"}, "processing_time": 1.5}
    assert log.offsets_meta(3) == {"processing_time": 1.5}
    assert log.offsets_meta(4) == {}
    assert log.offsets_meta(5) == {}  # never logged
    assert log.pending(2) == (3, {"0": "17", "1": "4"})


def test_a_damaged_offsets_file_gives_no_meta_and_is_reported_by_pending(
    tmp_path: Path,
) -> None:
    store = LocalCheckpointStore(tmp_path)
    log = CheckpointLog(store)
    log.write_offsets(0, {"0": "5"}, {"processing_time": 2.0})
    raw = store.read_bytes("offsets/000000000000")
    assert raw is not None
    store.write_bytes("offsets/000000000000", raw[: len(raw) // 2])
    assert log.offsets_meta(0) == {}
    path = str(tmp_path / "offsets" / "000000000000")
    expected = f"{path} is damaged"
    with pytest.warns(CheckpointDamagedWarning, match=re.escape(expected)) as caught:
        assert log.pending(None) is None
    message = str(caught[0].message)
    named = re.escape(path)
    assert re.fullmatch(
        rf"{named} is damaged \({named} is damaged \(not JSON: .*\)\); "
        "ignoring it: batch 0 reads on from the committed offsets",
        message,
    ), message
    assert log.damaged == [message]


def test_state_at_reads_the_state_after_the_batch_asked_for(tmp_path: Path) -> None:
    log = CheckpointLog(LocalCheckpointStore(tmp_path))
    for batch in range(3):
        log.write_state(batch, pl.DataFrame({"k": [batch], "n": [batch * 10]}))
    assert log.state_at(1).to_dicts() == [{"k": 1, "n": 10}]
    assert log.state_at(2).to_dicts() == [{"k": 2, "n": 20}]


def test_with_no_intact_batch_the_error_lists_each_problem(tmp_path: Path) -> None:
    store = LocalCheckpointStore(tmp_path)
    log = CheckpointLog(store)
    for batch in range(2):
        log.write_offsets(batch, {"0": str(batch)})
        log.write_state(batch, pl.DataFrame({"k": [batch]}))
        log.write_commit(batch, {"0": str(batch)}, {})
    for batch in range(2):
        store.delete(f"state/{batch:012d}")
    with pytest.raises(CheckpointDamagedError) as refused:
        CheckpointLog(store).latest()
    assert refused.value.location == str(tmp_path)
    assert len(refused.value.problems) == 2
    for problem, batch in zip(refused.value.problems, (1, 0), strict=True):
        assert problem.startswith(f"{tmp_path}/state/{batch:012d} is missing")


class Damaged(Exception):
    """The error type handed to the envelope functions."""


def test_a_header_byte_garbled_into_a_space_is_damage() -> None:
    """``SKCK1 <crc32 hex> <length>``: the header is exact. With the leading ``0`` of the
    checksum turned into a space the number it spells is unchanged, but the header is not
    the one written, so the file is refused rather than read."""
    body = next(b for b in (bytes([i]) * 40 for i in range(256)) if zlib.crc32(b) < 1 << 28)
    crc = zlib.crc32(body)  # 8 hex digits, the first 0
    header = b"SKCK1  %07x %d\n" % (crc, len(body))
    assert envelope.open_(b"SKCK1 %08x %d\n" % (crc, len(body)) + body, "f", Damaged) == body
    with pytest.raises(Damaged, match=r"^f is damaged \(bad checksum header\)$"):
        envelope.open_(header + body, "f", Damaged)


def test_a_cut_or_extended_body_is_named_so() -> None:
    sealed = envelope.seal(b"0123456789")
    for changed, length in ((sealed[:-3], 7), (sealed + b"abc", 13)):
        with pytest.raises(Damaged, match=rf"^f is damaged \(cut or extended: {length} bytes"):
            envelope.open_(changed, "f", Damaged)


def test_the_commit_gives_back_the_watermark_and_largest_event_time(tmp_path: Path) -> None:
    log = CheckpointLog(LocalCheckpointStore(tmp_path))
    log.write_offsets(0, {"0": "3"})
    log.write_state(0, pl.DataFrame({"k": [1]}))
    log.write_commit(0, {"0": "3"}, {"watermark": 5_000, "max_event": 9_000})
    latest = CheckpointLog(LocalCheckpointStore(tmp_path)).latest()
    assert latest is not None
    assert (latest.batch_id, latest.offsets) == (0, {"0": "3"})
    assert (latest.watermark, latest.max_event) == (5_000, 9_000)


class Upserts:
    """A state of one row per key ``k`` whose change since the last checkpoint is known
    (what :meth:`CheckpointLog.write_changes` takes from a state store)."""

    change_keys = ["k"]  # noqa: RUF012 (the protocol's attribute)

    def __init__(self) -> None:
        self.state: dict[int, int] = {}
        self.changed: dict[int, int] = {}

    def put(self, k: int, n: int) -> None:
        self.state[k] = self.changed[k] = n

    def take_changes(self) -> pl.DataFrame:
        changed, self.changed = self.changed, {}
        keys = list(changed)
        return pl.DataFrame({"k": keys, "n": [changed[k] for k in keys], DELETED: False})

    def rows(self) -> pl.DataFrame:
        keys = sorted(self.state)
        return pl.DataFrame({"k": keys, "n": [self.state[k] for k in keys]})


def four_batches(tmp_path: Path) -> tuple[LocalCheckpointStore, dict[int, int]]:
    """Snapshot 0 then deltas 1..3 (batch b sets key b to 10 * b); the state after 3."""
    store = LocalCheckpointStore(tmp_path)
    log = CheckpointLog(store, snapshot_every=100)
    state = Upserts()
    for batch in range(4):
        state.put(batch, 10 * batch)
        log.write_changes(batch, state)
    assert store.list("state") == ["000000000000"]
    assert store.list("deltas") == ["000000000001", "000000000002", "000000000003"]
    return store, dict(state.state)


def garble(store: LocalCheckpointStore, path: str) -> None:
    raw = store.read_bytes(path)
    assert raw is not None
    store.write_bytes(path, raw[:-1] + bytes([raw[-1] ^ 0xFF]))


def test_a_damaged_snapshot_gives_way_to_an_older_intact_one(tmp_path: Path) -> None:
    """The state after N is the latest *intact* snapshot before N with the deltas after
    it: a damaged ``state/2`` next to ``deltas/2`` leaves ``state/0`` + deltas 1..3."""
    store, expected = four_batches(tmp_path)
    delta_2 = store.read_bytes("deltas/000000000002")
    assert delta_2 is not None
    store.write_bytes("state/000000000002", envelope.seal(b"not arrow"))
    store.write_bytes("deltas/000000000002", delta_2)
    got = CheckpointLog(store).state_at(3).sort("k")
    assert dict(zip(got["k"].to_list(), got["n"].to_list(), strict=True)) == expected


def test_a_delta_without_an_intact_snapshot_names_the_damaged_one(tmp_path: Path) -> None:
    store, _ = four_batches(tmp_path)
    garble(store, "state/000000000000")
    snapshot = re.escape(f"{tmp_path}/state/000000000000 is damaged (checksum mismatch)")
    with pytest.raises(
        CheckpointDamagedError, match=rf"has no intact snapshot before it \({snapshot}\)"
    ):
        CheckpointLog(store).state_at(3)


def test_with_no_snapshot_before_a_delta_each_damaged_one_is_named(tmp_path: Path) -> None:
    store, _ = four_batches(tmp_path)
    store.delete("state/000000000000")
    with pytest.raises(CheckpointDamagedError, match=r"before it \(none is left\)"):
        CheckpointLog(store).state_at(3)
    store.write_bytes("state/000000000000", envelope.seal(b"not arrow"))
    store.write_bytes("state/000000000002", envelope.seal(b"not arrow either"))
    with pytest.raises(CheckpointDamagedError) as refused:
        CheckpointLog(store).state_at(3)
    problems = re.search(r"before it \((.*)\)\), so", str(refused.value))
    assert problems is not None
    named = [p.split(" is damaged")[0] for p in problems[1].split("; ")]
    assert named == [f"{tmp_path}/state/000000000002", f"{tmp_path}/state/000000000000"]


class DictStore:
    """A checkpoint store in a dict (any object with the four methods is one)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return "DictStore()"

    def write_bytes(self, relative_path: str, data: bytes) -> None:
        self.files[relative_path] = data

    def read_bytes(self, relative_path: str) -> bytes | None:
        return self.files.get(relative_path)

    def list(self, relative_dir: str) -> list[str]:
        prefix = relative_dir.rstrip("/") + "/"
        return sorted(p.removeprefix(prefix) for p in self.files if p.startswith(prefix))

    def delete(self, relative_path: str) -> None:
        self.files.pop(relative_path, None)


class UrlStore(DictStore):
    """A store with an ``s3://`` address, as :class:`S3CheckpointStore` has."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url


@pytest.mark.parametrize(
    ("store", "where"),
    [
        (UrlStore("s3://bucket/ck"), "s3://bucket/ck"),
        (UrlStore("s3://bucket/ck/"), "s3://bucket/ck/"),
        (UrlStore("s3://bucket/BOX/"), "s3://bucket/BOX/"),  # only slashes are trimmed
        (DictStore(), "DictStore()"),
    ],
)
def test_messages_name_a_stores_url_or_else_the_store(store: DictStore, where: str) -> None:
    log = CheckpointLog(store)
    log.write_offsets(0, {"0": "1"})
    log.write_state(0, pl.DataFrame({"k": [1]}))
    log.write_commit(0, {"0": "1"}, {})
    store.delete("state/000000000000")
    with pytest.raises(CheckpointDamagedError) as refused:
        CheckpointLog(store).latest()
    assert refused.value.location == where
    file = f"{where.rstrip('/')}/state/000000000000"  # one slash before the file
    assert refused.value.problems[0].startswith(f"{file} is missing")


def test_json_checksums_are_crc32_of_the_sorted_compact_form() -> None:
    """The documented checksum: crc32 over the object without the key, keys sorted, no
    spaces; so a file sealed by another writer verifies whatever its key order."""
    canonical = b'{"a":[1,2],"b":{"c":"x y","d":null}}'
    checksum = f"crc32:{zlib.crc32(canonical):08x}"
    sealed = json.loads(envelope.seal_json({"b": {"d": None, "c": "x y"}, "a": [1, 2]}))
    assert sealed["checksum"] == checksum
    other_writer = json.dumps({"checksum": checksum, "b": {"c": "x y", "d": None}, "a": [1, 2]})
    got = envelope.open_json(other_writer.encode(), "f", Damaged)
    assert got == {"a": [1, 2], "b": {"c": "x y", "d": None}}


@pytest.mark.parametrize(("keep", "every"), [(3, 2), (4, 3), (2, 1)])
def test_retention_keeps_the_last_batches_restorable_and_deletes_the_rest(
    tmp_path: Path, keep: int, every: int
) -> None:
    """After committing batch b, batches b - keep .. b stay restorable from the latest
    snapshot at or before b - keep and the deltas after it; older files are deleted."""
    store = LocalCheckpointStore(tmp_path)
    log = CheckpointLog(store, keep=keep, snapshot_every=every)
    state = Upserts()
    after: dict[int, dict[int, int]] = {}
    snapshots: list[int] = []
    for b in range(12):
        state.put(b % 5, b)
        log.write_offsets(b, {"0": str(b)})
        log.write_changes(b, state)
        log.write_commit(b, {"0": str(b)}, {})
        after[b] = dict(state.state)
        if b == 0 or b % every == 0:
            snapshots.append(b)
        horizon = b - keep
        old = max((s for s in snapshots if s <= horizon), default=None)
        first = max(horizon, 0)
        kept_snapshots = [s for s in snapshots if old is None or s >= old]
        delta_from = 0 if old is None else old
        expected = {
            "offsets": list(range(first, b + 1)),
            "commits": list(range(first, b + 1)),
            "state": kept_snapshots,
            "deltas": [n for n in range(delta_from + 1, b + 1) if n not in snapshots],
        }
        listed = {folder: [int(n) for n in store.list(folder)] for folder in expected}
        assert listed == expected, b
        for n in range(first, b + 1):
            got = CheckpointLog(store).state_at(n).sort("k")
            assert dict(zip(got["k"].to_list(), got["n"].to_list(), strict=True)) == after[n]


def test_a_restart_with_a_longer_retention_deletes_nothing_it_would_need(
    tmp_path: Path,
) -> None:
    """Retention raised from 2 to 20 batches between runs: the oldest snapshot left is
    newer than the new horizon, so commits go on and no file is deleted."""
    store = LocalCheckpointStore(tmp_path)
    log = CheckpointLog(store, keep=2, snapshot_every=3)
    state = Upserts()
    for b in range(10):
        state.put(b, b)
        log.write_offsets(b, {"0": str(b)})
        log.write_changes(b, state)
        log.write_commit(b, {"0": str(b)}, {})
    before = {folder: store.list(folder) for folder in ("offsets", "commits", "state", "deltas")}
    assert before["state"] == ["000000000006", "000000000009"]
    longer = CheckpointLog(store, keep=20, snapshot_every=3)
    latest = longer.latest()
    assert latest is not None
    for b in range(10, 22):  # from batch 20 on the horizon (b - 20) is older than them all
        state.put(b, b)
        longer.write_offsets(b, {"0": str(b)})
        longer.write_changes(b, state)
        longer.write_commit(b, {"0": str(b)}, {})
    for folder, names in before.items():
        assert set(names) <= set(store.list(folder)), folder
    got = CheckpointLog(store).state_at(21).sort("k")
    assert got["k"].to_list() == list(range(22))


def test_each_fallback_report_names_the_batch_used_instead(tmp_path: Path) -> None:
    store = LocalCheckpointStore(tmp_path)
    log = CheckpointLog(store)
    for b in range(3):
        log.write_offsets(b, {"0": str(b)})
        log.write_state(b, pl.DataFrame({"k": [b]}))
        log.write_commit(b, {"0": str(b)}, {})
    store.delete("state/000000000002")
    with pytest.warns(CheckpointDamagedWarning) as caught:
        latest = CheckpointLog(store).latest()
    assert latest is not None
    assert latest.batch_id == 1
    assert [str(w.message).split("; ")[-1] for w in caught] == [
        "falling back to batch 1 and replaying from its offsets"
    ]
    store.delete("state/000000000001")
    store.delete("state/000000000000")
    with pytest.warns(CheckpointDamagedWarning) as caught, pytest.raises(CheckpointDamagedError):
        CheckpointLog(store).latest()
    assert [str(w.message).split("; ")[-1] for w in caught] == [
        "falling back to batch 1 and replaying from its offsets",
        "falling back to batch 0 and replaying from its offsets",
        "falling back to nothing: no batch is left",
    ]


def test_by_default_a_snapshot_every_10_batches_and_20_batches_kept(tmp_path: Path) -> None:
    store = LocalCheckpointStore(tmp_path)
    log = CheckpointLog(store)
    state = Upserts()
    for b in range(25):
        state.put(b, b)
        log.write_offsets(b, {"0": str(b)})
        log.write_changes(b, state)
        log.write_commit(b, {"0": str(b)}, {})
    assert [int(n) for n in store.list("commits")] == list(range(4, 25))
    assert [int(n) for n in store.list("state")] == [0, 10, 20]
    deltas = [n for n in range(1, 25) if n % 10]
    assert [int(n) for n in store.list("deltas")] == deltas
