"""Owner leases (one live copy per checkpoint folder), on an injected clock: take, renew,
refuse a live holder, take over a silent or dead one, force, clean release, racing starters;
the local store's compare-and-swap; and two queries on one checkpoint in one process."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.streaming.checkpoint_store import LocalCheckpointStore
from streamkit.streaming.owner import (
    OwnerHeartbeat,
    OwnerLease,
    OwnerLostError,
    OwnerRecord,
    QueryAlreadyRunningError,
    StoreCell,
    acquire_all,
)
from streamkit.streaming.query import StreamingQuery
from streamkit.streaming.sources.memory import MemoryStream

LEASE = 10.0


class Cell:
    """An in-memory cell; ``before_swap`` runs inside a swap (to inject a racing writer)."""

    where = "test cell"

    def __init__(self) -> None:
        self.data: bytes | None = None
        self.before_swap: list[bytes] = []

    def read(self) -> bytes | None:
        return self.data

    def swap(self, expected: bytes | None, data: bytes) -> bool:
        if self.before_swap:
            self.data = self.before_swap.pop()
        if self.data != expected:
            return False
        self.data = data
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.on_sleep: list[object] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        for hook in self.on_sleep:
            assert callable(hook)
            hook()


def record(query: str, host: str = "elsewhere", pid: int = 4242) -> OwnerRecord:
    return OwnerRecord(query, f"token-{query}", host, pid, "2025-01-01T00:00:00+00:00", 0, LEASE)


def lease(cell: Cell, clock: Clock, query: str, **kw: object) -> OwnerLease:
    return OwnerLease(cell, record(query, **kw), clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]


def holder(cell: Cell) -> OwnerRecord:
    assert cell.data is not None
    return OwnerRecord.from_bytes(cell.data)


def test_take_free_cell_then_renew_increments_heartbeat() -> None:
    cell, clock = Cell(), Clock()
    a = lease(cell, clock, "a")
    a.acquire()
    assert holder(cell).token == "token-a"
    assert holder(cell).heartbeat == 0
    a.renew()
    a.renew()
    assert holder(cell).heartbeat == 2
    assert clock.now == 0  # a free cell is taken without waiting


def test_live_holder_is_refused_naming_it_and_saying_how_to_take_over() -> None:
    cell, clock = Cell(), Clock()
    a = lease(cell, clock, "a")
    a.acquire()

    def heartbeat() -> None:  # a's own thread renews every LEASE / 3 seconds
        if clock.now % (LEASE / 3) < 1.0:
            a.renew()

    clock.on_sleep.append(heartbeat)
    with pytest.raises(QueryAlreadyRunningError) as err:
        lease(cell, clock, "b").acquire()
    text = str(err.value)
    assert "query 'a' (pid 4242 on host elsewhere, since 2025-01-01T00:00:00+00:00)" in text
    assert "force=True" in text
    assert "--force" in text
    assert "10 s" in text
    assert clock.now <= LEASE  # refused once the heartbeat moved, not after the lease
    assert holder(cell).token == "token-a"  # untouched


def test_silent_holder_is_taken_over_only_after_the_lease_duration() -> None:
    cell, clock = Cell(), Clock()
    lease(cell, clock, "a").acquire()  # never renewed: its process died elsewhere
    b = lease(cell, clock, "b")
    b.acquire()
    assert holder(cell).token == "token-b"
    assert LEASE < clock.now <= LEASE * 1.2  # judged on b's own clock, after a full lease
    assert b.displaced is not None
    assert b.displaced.token == "token-a"


def test_force_takes_a_live_holder_at_once_and_the_old_one_stops() -> None:
    cell, clock = Cell(), Clock()
    a = lease(cell, clock, "a")
    a.acquire()
    lease(cell, clock, "b").acquire(force=True)
    assert holder(cell).token == "token-b"
    assert clock.now == 0
    with pytest.raises(OwnerLostError, match="taken over by query 'b'"):
        a.renew()


def test_clean_release_lets_the_next_start_take_at_once() -> None:
    cell, clock = Cell(), Clock()
    a = lease(cell, clock, "a")
    a.acquire()
    a.release()
    assert holder(cell).released
    lease(cell, clock, "b").acquire()
    assert holder(cell).token == "token-b"
    assert clock.now == 0


def test_holder_whose_process_is_gone_from_this_machine_is_taken_at_once() -> None:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    dead = OwnerRecord.mine("a", "token-a", "", LEASE)
    cell, clock = Cell(), Clock()
    cell.data = replace(dead, pid=int(proc.stdout)).to_bytes()
    lease(cell, clock, "b").acquire()
    assert holder(cell).token == "token-b"
    assert clock.now == 0


def test_racing_starters_exactly_one_wins() -> None:
    cell, clock = Cell(), Clock()
    winner = record("w").to_bytes()
    cell.before_swap.append(winner)  # w's create lands between b's read and b's write
    clock.on_sleep.append(lambda: None)
    with pytest.raises(QueryAlreadyRunningError, match="query 'w'"):
        lease(cell, clock, "b").acquire()
    assert cell.data == winner


def test_acquire_all_releases_what_it_took_when_a_later_lease_is_refused() -> None:
    clock = Clock()
    first, second = Cell(), Cell()
    other = lease(second, clock, "other")
    other.acquire()
    clock.on_sleep.append(other.renew)
    mine = [lease(first, clock, "me"), lease(second, clock, "me")]
    with pytest.raises(QueryAlreadyRunningError):
        acquire_all(mine)
    assert holder(first).released


def test_heartbeat_reports_a_lost_lease_once() -> None:
    cell, clock = Cell(), Clock()
    a = lease(cell, clock, "a")
    a.acquire()
    lost: list[OwnerLostError] = []
    beat = OwnerHeartbeat([a], lost.append)
    assert beat.beat()
    lease(cell, clock, "b").acquire(force=True)
    assert not beat.beat()
    assert len(lost) == 1


def test_local_store_swap_is_compare_and_swap(tmp_path: Path) -> None:
    store = LocalCheckpointStore(tmp_path)
    assert store.swap_bytes("owner", None, b"1")
    assert not store.swap_bytes("owner", None, b"2")
    assert not store.swap_bytes("owner", b"x", b"2")
    assert store.swap_bytes("owner", b"1", b"2")
    assert store.read_bytes("owner") == b"2"
    assert store.list("") == ["owner"]  # the lock file is hidden
    cell = StoreCell(store, "folder")
    assert cell.read() == b"2"


def test_second_query_on_a_checkpoint_is_refused_until_the_first_stops(tmp_path: Path) -> None:
    schema = pa.schema([("k", pa.string())])
    ck = str(tmp_path / "ck")

    def start(name: str) -> StreamingQuery:
        df = sk.read_stream.source(MemoryStream(schema))
        return df.write_stream.output_mode("append").checkpoint(ck).memory(name).start()

    first = start("first")
    try:
        with pytest.raises(QueryAlreadyRunningError, match=r"in use by query 'first' \(pid"):
            start("second")  # same process: refused at once, nothing read
    finally:
        first.stop()
    second = start("second")  # released on stop: taken at once
    second.stop()
    assert second.exception is None
