"""A fleet query's static sides are one snapshot for the query's life, checked at every
worker start (server-free: real Parquet files, a local checkpoint root, the real
``start_member`` path; the connector is a memory stream offering ``fleet_worker``).

Why: a range re-read after a takeover is joined again by its new owner; joined against other
rows, the exchange partitions keep rows of both snapshots (counted twice, lost, or a part
count that changed: the aggregation task stuck), and a stateless sink keeps both attempts'
files. So a reloading static side is refused, the first start records the tables'
fingerprints under the checkpoint root, and a start on a changed table fails before reading.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import streamkit as sk
from streamkit.errors import PlanError
from streamkit.fleet import FleetPlan
from streamkit.fleet.member import FleetMember, FleetSpec, start_member
from streamkit.fleet.static_snapshot import STATIC_FILE, StaticSideChangedError, fingerprint
from streamkit.streaming.incremental import IncrementalQuery
from streamkit.streaming.sources.memory import MemoryStream

EVENTS = pa.schema([("k", pa.string()), ("v", pa.int64()), ("t", pa.timestamp("us", "UTC"))])


class _Started:
    """A connector's run that ends at once (what the member would run)."""

    async def run(self) -> None:
        return None

    def request_stop(self) -> None:
        return None


class FleetMemory(MemoryStream):
    """A memory stream a fleet member accepts; records the specs it was started with."""

    def fleet_worker(self, spec: FleetSpec) -> _Started:
        self.specs.append(spec)
        return _Started()

    @property
    def specs(self) -> list[FleetSpec]:
        got: list[FleetSpec] = self.__dict__.setdefault("_specs", [])
        return got


def _write(folder: Path, keys: list[str], regions: list[str], *, files: int = 1) -> None:
    """The static table: ``files`` Parquet files under ``folder`` (replacing what was)."""
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    table = pa.table({"k": keys, "region": regions})
    step = -(-len(keys) // files)
    for i in range(files):
        pq.write_table(table.slice(i * step, step), folder / f"part-{i}.parquet")


def _query(static: Any, stateless: bool = False) -> tuple[sk.DataFrame, FleetMemory]:
    stream = FleetMemory(schema=EVENTS)
    joined = sk.read_stream.source(stream).join(static, on="k")
    if stateless:
        return joined, stream
    return joined.group_by("region").agg(sk.count().alias("n")), stream


def _start(table: Path, root: Path, out: Path, stateless: bool = False) -> FleetMemory:
    """One worker's start (off the main thread: no signal handlers in pytest's process)."""
    df, stream = _query(sk.read.parquet(str(table)), stateless)
    writer = (
        df.write_stream.output_mode("append" if stateless else "complete")
        .checkpoint(str(root))
        .parquet(str(out))
    )

    def start() -> FleetMember:
        return start_member(writer)

    with ThreadPoolExecutor(1) as pool:
        member = pool.submit(start).result()
    member.await_termination(60)
    return stream


@pytest.mark.parametrize("stateless", [False, True])
def test_a_changed_static_table_fails_the_next_start(tmp_path: Path, stateless: bool) -> None:
    table, root, out = tmp_path / "dim", tmp_path / "ck", tmp_path / "out"
    _write(table, ["k0", "k1", "k2"], ["eu", "us", "eu"])
    first = _start(table, root, out, stateless)
    assert len(first.specs) == 1
    recorded = json.loads((root / STATIC_FILE).read_bytes())
    assert [(e["side"], e["rows"]) for e in recorded["sides"]] == [(f"Scan parquet {table}", 3)]
    same = _start(table, root, out, stateless)  # a restart, another worker: same rows
    assert len(same.specs) == 1
    _write(table, ["k0", "k1", "k2"], ["eu", "us", "us"])  # k2 moves: same count
    with pytest.raises(StaticSideChangedError, match=r"static side 0 \(Scan parquet .*dim\)") as e:
        _start(table, root, out, stateless)
    assert "new checkpoint root" in str(e.value)
    _write(table, ["k0", "k1"], ["eu", "us"])
    with pytest.raises(StaticSideChangedError, match="2 rows now, 3 then"):
        _start(table, root, out, stateless)
    assert json.loads((root / STATIC_FILE).read_bytes()) == recorded  # never overwritten
    _start(table, tmp_path / "ck2", out, stateless)  # a new checkpoint root takes it


def test_the_same_rows_in_other_files_and_order_pass(tmp_path: Path) -> None:
    table, root, out = tmp_path / "dim", tmp_path / "ck", tmp_path / "out"
    keys = [f"k{i}" for i in range(50)]
    regions = [f"r{i % 7}" for i in range(50)]
    _write(table, keys, regions)
    _start(table, root, out)
    _write(table, keys[::-1], regions[::-1], files=3)
    assert len(_start(table, root, out).specs) == 1


def test_the_fingerprint_is_of_the_rows() -> None:
    import polars as pl

    a = pl.DataFrame({"k": ["x" * 20, "y" * 30, None], "w": [1, 2, 3]})
    assert fingerprint(a) == fingerprint(a.reverse()) == fingerprint(pl.concat([a[:1], a[1:]]))
    assert fingerprint(a) != fingerprint(a.with_columns(w=pl.Series([1, 2, 4])))
    assert fingerprint(a) != fingerprint(a.rename({"w": "v"}))


def test_a_reloading_static_side_is_refused(tmp_path: Path) -> None:
    table = tmp_path / "dim"
    _write(table, ["k0"], ["eu"])
    df, _ = _query(sk.read.parquet(str(table), reload_every="5 minutes"))
    with pytest.raises(PlanError, match="reload_every") as e:
        FleetPlan.of(df.plan, "complete")
    message = str(e.value)
    assert "same rows" in message
    assert "new checkpoint root" in message
    assert "as one process" in message
    stateless, _ = _query(sk.read.parquet(str(table), reload_every="5 minutes"), True)
    with pytest.raises(PlanError, match="reload_every"):
        FleetPlan.of(stateless.plan, "append")
    IncrementalQuery(df.plan, "complete")  # one process reloads it: allowed
