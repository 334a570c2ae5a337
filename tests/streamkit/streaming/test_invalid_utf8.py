"""Invalid UTF-8 in a string field is a bad record: a dead letter with its reason and
position, never a group of its own nor a value in a sink's output.

Every sink's output (memory, Parquet, JSON) is read back with DuckDB and pandas, which
both refuse a file holding invalid UTF-8 in a string column.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import duckdb
import pandas as pd
import pyarrow as pa

import streamkit as sk
from streamkit.streaming.decode import FunctionDecoder, Positions, RawRecords

if TYPE_CHECKING:
    from pathlib import Path

    from streamkit.streaming.query import StreamingQuery

BAD = b'{"page": "vi\xff\xfeew", "n": 2}'
LINES = [
    b'{"page": "home", "n": 1}',
    BAD,
    b'{"page": "home", "n": 3}',
    b'{"page": "about", "n": 4}',
]
SCHEMA = pa.schema([("page", pa.string()), ("n", pa.int64())])


def sql(query: str, **tables: pa.Table) -> list[tuple[object, ...]]:
    """Rows of a DuckDB query (``tables`` registered by name)."""
    con = duckdb.connect()
    for name, table in tables.items():
        con.register(name, table)
    return con.execute(query).fetchall()


def run(df: sk.DataFrame, checkpoint: Path, sink: str, target: str) -> StreamingQuery:
    writer = df.write_stream.trigger(available_now=True).checkpoint(str(checkpoint))
    if sink == "memory":
        writer = writer.output_mode("complete").memory(target)
    else:
        writer = writer.parquet(target) if sink == "parquet" else writer.json(target)
    query = writer.start()
    assert query.await_termination(timeout=60)
    return query


def assert_dead_letter(query: StreamingQuery) -> None:
    dead = query.dead_letters
    assert dead is not None
    assert dead.select(["raw", "partition", "position", "reason"]).to_pylist() == [
        {
            "raw": BAD,
            "partition": "files",
            "position": "a.json:2",
            "reason": "invalid UTF-8: byte 0xff at offset 12",
        }
    ]


def test_every_sink_output_reads_back_with_duckdb_and_pandas(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    (source / "a.json").write_bytes(b"\n".join(LINES) + b"\n")
    stream = sk.read_stream.files(str(source), schema=SCHEMA)

    counted = stream.group_by("page").agg(sk.count().alias("n"))
    assert_dead_letter(run(counted, tmp_path / "ck-m", "memory", "utf8_counts"))
    counts = sk.memory_table("utf8_counts")
    counts.validate(full=True)
    assert sorted(counts.to_pandas().itertuples(index=False)) == [("about", 1), ("home", 2)]
    assert sql("select page from counts order by page", counts=counts) == [
        ("about",),
        ("home",),
    ]

    parquet = tmp_path / "parquet"
    assert_dead_letter(run(stream, tmp_path / "ck-p", "parquet", str(parquet)))
    files = sorted(str(p) for p in parquet.rglob("*.parquet"))
    assert sorted(pd.concat(map(pd.read_parquet, files))["n"]) == [1, 3, 4]
    pages = sql(f"select page from read_parquet({files!r}) order by n")
    assert pages == [("home",), ("home",), ("about",)]

    out = tmp_path / "json"
    assert_dead_letter(run(stream, tmp_path / "ck-j", "json", str(out)))
    files = sorted(str(p) for p in out.rglob("*.json*") if p.is_file())
    assert sorted(pd.concat(pd.read_json(f, lines=True) for f in files)["n"]) == [1, 3, 4]
    got = sql(f"select page from read_json_auto({files!r}) order by n")
    assert got == [("home",), ("home",), ("about",)]


def test_a_decoder_hook_returning_invalid_utf8_makes_that_record_a_dead_letter() -> None:
    def hook(payloads: list[bytes]) -> pa.Table:
        # a hook that trusts its input: binary cast to string without validation
        pages = pa.array([json.loads(p.decode("latin-1"))["page"].encode("latin-1")
                          for p in payloads], pa.binary())  # fmt: skip
        return pa.table({"page": pages.view(pa.string())})

    decoder = FunctionDecoder(hook, pa.schema([("page", pa.string())]))
    records = RawRecords.from_partition(LINES, "p", Positions(range(len(LINES))))
    rows, dead = decoder.decode(records)
    assert rows.column("page").to_pylist() == ["home", "home", "about"]
    assert dead.column("position").to_pylist() == ["1"]
    assert "invalid UTF-8" in dead.column("reason")[0].as_py()
