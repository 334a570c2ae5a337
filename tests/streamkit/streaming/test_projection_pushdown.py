"""Projection pushdown: ``scan_columns`` names what a plan reads; a query whose input table
has the default retention or keeps no rows decodes only those columns (an unread field is
not validated, as with Spark's JSON column pruning); with any other explicit retention
every column is decoded and checked. ``JsonDecoder.read_only`` directly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

import streamkit as sk
from streamkit.execute import scan_columns
from streamkit.streaming.decode import JsonDecoder, RawRecords
from streamkit.streaming.query import StreamingQuery
from streamkit.streaming.sources import FileStreamSource
from streamkit.streaming.table import DEFAULT_MAX_ROWS, Retention

WIDE = pa.schema(
    [
        ("user_id", pa.int64()),
        ("value", pa.float64()),
        ("action", pa.string()),
        ("note", pa.string()),
        ("event_time", pa.timestamp("us", "UTC")),
    ]
)
WIDE_JSON = pa.schema(
    [
        ("event_time", pa.timestamp("us", "UTC")),
        ("action", pa.string()),
        ("note", pa.string()),
        ("value", pa.float64()),
    ]
)
SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        ("action", pa.string()),
        ("value", pa.float64()),
        ("note", pa.string()),
    ]
)


# --- scan_columns --------------------------------------------------------------------


def wide() -> sk.DataFrame:
    return sk.read_stream.memory(WIDE)


def test_scan_columns_of_a_windowed_aggregate_include_the_watermark_in_scan_order() -> None:
    df = wide().with_watermark("event_time", "10 minutes")
    plan = df.group_by(sk.window("event_time", "1 hour"), "action").agg(
        sk.count().alias("n"), sk.sum("value").alias("s")
    )
    assert scan_columns(plan.plan) == ["value", "action", "event_time"]


def test_a_column_read_only_by_the_watermark_is_still_a_scan_column() -> None:
    plan = wide().with_watermark("event_time", "1 minute").group_by("action").agg(sk.count())
    assert scan_columns(plan.plan) == ["action", "event_time"]


def test_scan_columns_of_filters_and_projections() -> None:
    df = wide()
    assert scan_columns(df.filter(sk.col("value") > 1).select("note").plan) == ["value", "note"]
    doubled = df.select("action", (sk.col("user_id") * 2).alias("u2"))
    assert scan_columns(doubled.plan) == ["user_id", "action"]


def test_a_plan_reading_every_column_scans_them_all() -> None:
    assert scan_columns(wide().plan) == WIDE.names
    assert scan_columns(wide().select(*reversed(WIDE.names)).plan) == WIDE.names


# --- pushdown in queries -------------------------------------------------------------

RECORDS: list[tuple[str, dict[str, object]]] = [
    ("f0.json", {"id": 0, "action": "a", "value": 1.0, "note": "ok"}),
    ("f0.json", {"id": 1, "action": "b", "value": 2.0, "note": "ok"}),
    ("f1.json", {"id": 2, "action": "a", "value": 3.0, "note": 5}),  # unread field mistyped
    ("f1.json", {"id": 3, "action": "b", "value": "oops", "note": "ok"}),  # read field
    ("f2.json", {"id": "x", "action": "a", "value": 4.0, "note": "ok"}),  # unread mistyped
    ("f2.json", {"action": "b", "value": 5.0}),  # unread required field absent
]


def write_records(directory: Path) -> None:
    """RECORDS as three NDJSON files (two lines each), f0 oldest."""
    bodies: dict[str, bytes] = {}
    for name, record in RECORDS:
        bodies[name] = bodies.get(name, b"") + json.dumps(record).encode() + b"\n"
    for i, (name, body) in enumerate(bodies.items()):
        path = directory / name
        path.write_bytes(body)
        os.utime(path, (1000 + i, 1000 + i))


def sums(source: FileStreamSource, name: str, retention: Retention | None) -> StreamingQuery:
    """``sum(value), count() by action`` over ``source``, run to the end of the files."""
    df = sk.read_stream.source(source)
    writer = (
        df.group_by("action")
        .agg(sk.sum("value").alias("s"), sk.count().alias("n"))
        .write_stream.output_mode("complete")
        .trigger(available_now=True)
    )
    if retention is not None:
        writer = writer.retention(retention)
    q = writer.memory(name).start()
    assert q.await_termination(timeout=20)
    return q


def positions(q: StreamingQuery) -> list[str]:
    dead = q.dead_letters
    return [] if dead is None else dead.column("position").to_pylist()


def result(name: str) -> dict[str, tuple[float, int]]:
    return {r["action"]: (r["s"], r["n"]) for r in sk.memory_table(name).to_pylist()}


def test_a_query_keeping_no_input_rows_decodes_and_checks_only_what_it_reads(
    tmp_path: Path,
) -> None:
    write_records(tmp_path)
    source = FileStreamSource(str(tmp_path), schema=SCHEMA, decode_workers=2)
    q = sums(source, "pushed", Retention.rows(0))
    assert q.table.schema == pa.schema([("action", pa.string()), ("value", pa.float64())])
    assert q.table.num_rows == 0
    # Unread fields are not validated; the mistyped read field still is.
    assert positions(q) == ["f1.json:2"]
    assert result("pushed") == {"a": (8.0, 3), "b": (7.0, 2)}


def test_the_default_retention_decodes_and_keeps_only_what_the_query_reads(
    tmp_path: Path,
) -> None:
    write_records(tmp_path)
    q = sums(FileStreamSource(str(tmp_path), schema=SCHEMA), "default", None)
    assert q.table.schema == pa.schema([("action", pa.string()), ("value", pa.float64())])
    assert positions(q) == ["f1.json:2"]
    # No watermark: the table keeps the newest DEFAULT_MAX_ROWS rows, here all five decoded.
    assert q.table.to_pandas().to_dict("records") == [
        {"action": a, "value": v}
        for a, v in [("a", 1.0), ("b", 2.0), ("a", 3.0), ("a", 4.0), ("b", 5.0)]
    ]
    assert result("default") == {"a": (8.0, 3), "b": (7.0, 2)}


def test_an_explicit_retention_decodes_and_checks_every_column(tmp_path: Path) -> None:
    write_records(tmp_path)
    source = FileStreamSource(str(tmp_path), schema=SCHEMA)
    q = sums(source, "full", Retention.rows(DEFAULT_MAX_ROWS))
    assert q.table.schema == SCHEMA
    assert q.table.num_rows == 2
    assert positions(q) == ["f1.json:1", "f1.json:2", "f2.json:1", "f2.json:2"]
    assert result("full") == {"a": (1.0, 1), "b": (2.0, 1)}


def test_retention_keeping_rows_disables_pushdown(tmp_path: Path) -> None:
    write_records(tmp_path)
    q = sums(FileStreamSource(str(tmp_path), schema=SCHEMA), "kept", Retention.rows(5))
    assert q.table.schema == SCHEMA
    assert positions(q) == ["f1.json:1", "f1.json:2", "f2.json:1", "f2.json:2"]


def test_the_same_source_reused_with_a_retention_keeping_rows_decodes_every_column_again(
    tmp_path: Path,
) -> None:
    write_records(tmp_path)
    source = FileStreamSource(str(tmp_path), schema=SCHEMA, decode_workers=2)
    first = sums(source, "first", None)
    assert positions(first) == ["f1.json:2"]
    second = sums(source, "second", Retention.rows(10))
    assert second.table.schema == SCHEMA
    assert positions(second) == ["f1.json:1", "f1.json:2", "f2.json:1", "f2.json:2"]
    assert result("second") == {"a": (1.0, 1), "b": (2.0, 1)}
    third = sums(source, "third", Retention.rows(0))
    assert positions(third) == ["f1.json:2"]
    assert result("third") == result("first")


def test_rows_zero_with_a_plan_reading_every_column_checks_every_column(
    tmp_path: Path,
) -> None:
    write_records(tmp_path)
    source = FileStreamSource(str(tmp_path), schema=SCHEMA)
    q = (
        sk.read_stream.source(source)
        .select(*reversed(SCHEMA.names))
        .write_stream.retention(Retention.rows(0))
        .trigger(available_now=True)
        .memory("all_cols")
        .start()
    )
    assert q.await_termination(timeout=20)
    assert q.table.schema == SCHEMA
    assert positions(q) == ["f1.json:1", "f1.json:2", "f2.json:1", "f2.json:2"]
    assert sk.memory_table("all_cols").column("id").to_pylist() == [0, 1]


def test_the_watermark_column_is_decoded_when_only_the_watermark_reads_it(
    tmp_path: Path,
) -> None:
    rows = [
        {"event_time": "2024-01-01T00:00:00Z", "action": "a", "value": "not read"},
        {"event_time": "2024-01-01T02:00:00Z", "action": "b", "value": 1.0},
    ]
    (tmp_path / "e.json").write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows))
    schema = pa.schema(
        [
            ("value", pa.float64()),
            ("event_time", pa.timestamp("us", "UTC")),
            ("action", pa.string()),
        ]
    )
    df = sk.read_stream.source(FileStreamSource(str(tmp_path), schema=schema))
    q = (
        df.with_watermark("event_time", "10 minutes")
        .group_by("action")
        .agg(sk.count().alias("n"))
        .write_stream.output_mode("update")
        .retention(Retention.rows(0))
        .trigger(available_now=True)
        .memory("wm")
        .start()
    )
    assert q.await_termination(timeout=20)
    assert q.table.schema.names == ["event_time", "action"]
    assert q.dead_letters is None
    assert q.last_progress is not None
    assert q.last_progress.watermark is not None
    assert q.last_progress.watermark.isoformat() == "2024-01-01T01:50:00+00:00"


def test_the_default_retention_of_a_watermarked_query_is_bounded_and_pushed_down(
    tmp_path: Path,
) -> None:
    """Five files, 20 minutes of event time each; ``note`` (never read) is mistyped in
    every third record: nothing is dead-lettered, the table holds ``event_time`` and
    ``action`` of the rows at or after the final watermark (newest - 10 minutes)."""
    minutes = [(f, f * 20 + k) for f in range(5) for k in range(0, 20, 2)]
    for f in range(5):
        lines = [
            {"event_time": f"2024-01-01T{m // 60:02d}:{m % 60:02d}:00Z", "action": f"a{m % 2}",
             "note": m if m % 3 == 0 else "n", "value": 1.0}
            for g, m in minutes if g == f
        ]  # fmt: skip
        path = tmp_path / f"f{f}.json"
        path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in lines))
        os.utime(path, (1000 + f, 1000 + f))
    df = sk.read_stream.source(FileStreamSource(str(tmp_path), schema=WIDE_JSON))
    q = (
        df.with_watermark("event_time", "10 minutes")
        .group_by(sk.window("event_time", "5 minutes"), "action")
        .agg(sk.count().alias("n"))
        .write_stream.output_mode("update")
        .trigger(available_now=True)
        .memory("wm_default")
        .start()
    )
    assert q.await_termination(timeout=20)
    assert q.dead_letters is None
    assert q.table.schema.names == ["event_time", "action"]
    newest = max(m for _, m in minutes)  # 98: the watermark is 01:28
    held = [m for _, m in minutes if m >= newest - 10]
    times = q.table.snapshot().column("event_time").to_pylist()
    assert sorted((t.hour * 60 + t.minute) for t in times) == held
    assert sum(r["n"] for r in sk.memory_table("wm_default").to_pylist()) == len(minutes)


# --- the source and the decoder directly ---------------------------------------------


async def test_file_source_read_only_projects_json_parquet_and_csv(tmp_path: Path) -> None:
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "a.json").write_bytes(b'{"id": 1, "action": "a", "value": 1.5, "note": 7}\n')
    (tmp_path / "p").mkdir()
    table = pa.table({"id": [1], "action": ["a"], "value": [1.5], "note": ["n"]})
    pq.write_table(table, tmp_path / "p" / "a.parquet")
    (tmp_path / "c").mkdir()
    pacsv.write_csv(table, tmp_path / "c" / "a.csv")
    for sub, fmt in [("j", "json"), ("p", "parquet"), ("c", "csv")]:
        source = FileStreamSource(str(tmp_path / sub), format=fmt, schema=SCHEMA)
        source.read_only(["value", "action"])
        await source.open(None)
        batch = await source.next_batch(0)
        assert batch is not None
        assert batch.rows.to_pylist() == [{"action": "a", "value": 1.5}], fmt
        assert batch.dead_letters.num_rows == 0
        await source.close()


def decode(decoder: JsonDecoder, payloads: list[bytes]) -> tuple[pa.Table, dict[str, str]]:
    records = RawRecords.from_partition(payloads, "p", [str(i) for i in range(len(payloads))])
    rows, dead = decoder.decode(records)
    at = dead.column("position").to_pylist()
    reasons = dict(zip(at, dead.column("reason").to_pylist(), strict=True))
    return rows, reasons


def test_json_decoder_read_only_keeps_and_checks_only_the_named_fields() -> None:
    decoder = JsonDecoder(SCHEMA)
    decoder.read_only(["value", "id"])
    kept = pa.schema([SCHEMA.field("id"), SCHEMA.field("value")])
    assert decoder.schema == SCHEMA
    assert decoder.rows_schema == kept
    rows, reasons = decode(
        decoder,
        [
            b'{"id": 1, "value": 1.0, "action": 5, "note": [1]}',  # unread fields mistyped
            b'{"value": 2.0, "action": "a"}',  # kept required field absent
            b'{"id": 3, "value": "x"}',  # kept field mistyped
            b'{"id": 4, "value": 4.0',  # malformed JSON: still rejected
            b'{"id": 5}',
        ],
    )
    assert rows.schema == kept
    assert rows.to_pylist() == [{"id": 1, "value": 1.0}, {"id": 5, "value": None}]
    assert sorted(reasons) == ["1", "2", "3"]
    assert "'id'" in reasons["1"]
    assert "'value'" in reasons["2"]


def test_json_decoder_read_only_applies_to_whole_documents() -> None:
    decoder = JsonDecoder(SCHEMA)
    decoder.read_only(["action"])
    document = b'{"id": "x", "action": "a"}\n{"action": "b", "value": "y"}\n'
    rows, dead = decoder.decode_lines(document, "files", "d.json")
    assert rows.to_pylist() == [{"action": "a"}, {"action": "b"}]
    assert dead.num_rows == 0


def test_json_decoder_read_only_none_restores_full_decoding() -> None:
    decoder = JsonDecoder(SCHEMA)
    decoder.read_only(["action"])
    decoder.read_only(None)
    assert decoder.rows_schema == SCHEMA
    rows, reasons = decode(decoder, [b'{"id": 1, "action": "a", "note": 5}', b'{"id": 2}'])
    assert rows.schema == SCHEMA
    assert rows.column("id").to_pylist() == [2]
    assert list(reasons) == ["0"]
    assert "'note'" in reasons["0"]


def test_json_decoder_read_only_before_inference_keeps_the_named_fields() -> None:
    decoder = JsonDecoder()
    decoder.read_only(["b"])
    rows, reasons = decode(decoder, [b'{"a": 1, "b": "x"}', b'{"a": "two", "b": "y"}'])
    assert decoder.schema == pa.schema([("a", pa.int64()), ("b", pa.string())])
    assert decoder.rows_schema == pa.schema([("b", pa.string())])
    assert rows.to_pylist() == [{"b": "x"}, {"b": "y"}]
    assert reasons == {}


def test_single_threaded_parsing_decodes_the_same_rows() -> None:
    lines = [json.dumps({"id": i, "action": f"a{i % 7}", "value": i / 2}) for i in range(40_000)]
    document = "\n".join(lines).encode() + b"\n"
    assert len(document) > 1 << 20  # large enough for a threaded parse
    threaded = JsonDecoder(SCHEMA)
    single = JsonDecoder(SCHEMA, threads=False)
    assert threaded.threads
    assert not single.threads
    expected = threaded.decode_lines(document, "files", "big.json").rows
    assert single.decode_lines(document, "files", "big.json").rows.equals(expected)
    single.threads = True
    assert single.threads
    assert expected.num_rows == 40_000
