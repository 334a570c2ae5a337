"""Payloads handed to decoders as one Arrow binary column (:class:`BinaryColumn`, issue 15
item 1): the JSON decoder frames the column by Arrow kernels, the raw decoder passes it on,
a user hook reads it as ``bytes``; rows and dead letters are those of the payloads as
plain ``bytes``. Expected values come from ``json.loads`` of the payloads and from which
payloads the test made bad, never from the decoder."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from streamkit.streaming.decode import (
    BinaryColumn,
    FunctionDecoder,
    JsonDecoder,
    Positions,
    RawDecoder,
    RawRecords,
)

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("action", pa.string())])

GOOD_WITH_NEWLINES = b'{"id": 3,\n "action":\n"b"}'
"""Valid JSON whose whitespace holds raw newlines (framed as tabs: still one record)."""
BAD = {
    5: b'{"id": 5, "action": "a\nb"}',  # a raw newline inside a string
    8: b'{"id": 8, "action": ',  # truncated
    11: b"",  # empty
    14: b'{"id": 14, "action": "' + b"x" * 300 + b'"}',  # oversize (max_record_bytes=200)
    17: b'{"id": 17, "action": "\xff"}',  # invalid UTF-8
    20: b'{"id": 20, "action": ' + b"[" * 80 + b"]" * 80 + b"}",  # deeper than 64
    23: b'{"id": "x", "action": "c"}',  # wrong type
}


def payloads() -> list[bytes]:
    out = [json.dumps({"id": i, "action": f"a{i % 3}"}).encode() for i in range(30)]
    out[3] = GOOD_WITH_NEWLINES
    for i, bad in BAD.items():
        out[i] = bad
    return out


def columns(values: list[bytes]) -> dict[str, pa.ChunkedArray]:
    """The payloads as several column layouts: chunks, a slice (non-zero offset), large."""
    padded = pa.array([b"pad", *values, b"pad"], pa.binary()).slice(1, len(values))
    return {
        "two chunks": pa.chunked_array(
            [pa.array(values[:10], pa.binary()), pa.array(values[10:], pa.binary())]
        ),
        "sliced": pa.chunked_array([padded]),
        "large_binary": pa.chunked_array([pa.array(values, pa.large_binary())]),
    }


def raw(column: pa.ChunkedArray | list[bytes]) -> RawRecords:
    body = BinaryColumn(column) if isinstance(column, pa.ChunkedArray) else column
    return RawRecords.from_partition(body, "shard-0", Positions(range(len(body))))


@pytest.mark.parametrize("layout", ["two chunks", "sliced", "large_binary"])
def test_json_decoder_reads_the_column_as_it_reads_bytes(layout: str) -> None:
    values = payloads()
    rows, dead = JsonDecoder(SCHEMA, max_record_bytes=200).decode(raw(columns(values)[layout]))
    good = [json.loads(v) for i, v in enumerate(values) if i not in BAD]
    assert rows.to_pylist() == good
    assert dead.column("position").to_pylist() == [str(i) for i in sorted(BAD)]
    assert dead.column("raw").to_pylist() == [BAD[i] for i in sorted(BAD)]
    assert dead.column("partition").to_pylist() == ["shard-0"] * len(BAD)
    positions, why = dead.column("position").to_pylist(), dead.column("reason").to_pylist()
    by_position = dict(zip(positions, why, strict=True))
    assert by_position["11"] == "empty record"
    assert by_position["14"].startswith("oversize")
    assert by_position["17"].startswith("invalid UTF-8")
    assert by_position["20"].startswith("nested deeper")
    assert "'id'" in by_position["23"]
    from_bytes = JsonDecoder(SCHEMA, max_record_bytes=200).decode(raw(values))
    assert rows.equals(from_bytes.rows)
    assert dead.equals(from_bytes.dead_letters)


def test_an_all_good_column_and_an_empty_one() -> None:
    values = [json.dumps({"id": i, "action": None}).encode() for i in range(1000)]
    rows, dead = JsonDecoder(SCHEMA).decode(raw(pa.chunked_array([pa.array(values)])))
    assert rows.column("id").to_pylist() == list(range(1000))
    assert dead.num_rows == 0
    empty = JsonDecoder(SCHEMA).decode(raw(pa.chunked_array([], pa.binary())))
    assert empty.rows.num_rows == 0
    assert empty.dead_letters.num_rows == 0


def test_raw_decoder_and_a_user_hook_see_the_payloads() -> None:
    values = payloads()
    column = columns(values)["sliced"]
    rows, dead = RawDecoder().decode(raw(column))
    assert rows.column("data").to_pylist() == values
    assert dead.num_rows == 0
    seen: list[list[bytes]] = []

    def hook(batch: list[bytes]) -> pa.Table:
        seen.append(batch)
        return pa.table({"n": [len(p) for p in batch]})

    out = FunctionDecoder(hook, pa.schema([("n", pa.int64())])).decode(raw(column))
    assert seen == [values]
    assert out.rows.column("n").to_pylist() == [len(v) for v in values]


def test_binary_column_is_a_sequence_of_bytes() -> None:
    values = payloads()
    seq = BinaryColumn(columns(values)["two chunks"])
    assert len(seq) == len(values)
    assert list(seq) == values
    assert [seq[0], seq[-1], seq[12]] == [values[0], values[-1], values[12]]
    assert seq[8:14] == values[8:14]
    assert seq[::7] == values[::7]
    for cut in (slice(None, None, -1), slice(14, 3, -1), slice(None, None, -2), slice(3, 14, -1)):
        assert seq[cut] == values[cut]
    with pytest.raises(IndexError):
        seq[len(values)]
    with pytest.raises(TypeError):
        BinaryColumn(pa.chunked_array([pa.array(["text"])]))


@pytest.mark.parametrize("layout", ["two chunks", "sliced", "large_binary"])
def test_the_column_is_framed_one_line_per_record(layout: str) -> None:
    """Each record that passes the pre-check becomes the line ``{"v":P}`` with its raw
    newlines as tabs, so a parse in several blocks (a large batch) cannot split it."""
    from streamkit.streaming import _ndjson as nd

    values = payloads()
    frame, rejects = nd.frame_payloads(BinaryColumn(columns(values)[layout]), 200)
    screened = {11, 14, 17, 20}  # no parse needed to reject these
    kept = [i for i in range(len(values)) if i not in screened]
    lines = [b'{"v":' + values[i].replace(b"\n", b"\t") + b"}\n" for i in kept]
    assert frame.data.to_pybytes() == b"".join(lines)
    assert frame.index.tolist() == kept
    assert frame.bounds.tolist() == [sum(map(len, lines[:k])) for k in range(len(lines) + 1)]
    assert sorted(i for i, _ in rejects) == sorted(screened)


def python_truth(values: list[bytes], max_bytes: int) -> tuple[list[dict[str, object]], list[str]]:
    """(rows, dead-letter positions) by ``json.loads`` of each payload on its own."""
    rows, dead = [], []
    for i, value in enumerate(values):
        try:
            obj = json.loads(value) if len(value) <= max_bytes else None
        except ValueError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("id"), int):
            rows.append({"id": obj["id"], "action": obj.get("action")})
        else:
            dead.append(str(i))
    return rows, dead


@pytest.mark.parametrize(
    ("values", "max_bytes"),
    [
        # a newline inside a record, and a record that is a bare "\r" (a blank line): as
        # one line per record the line count would still match the records
        ([b'{"id": 1}\n{"id": 2}', b"\r", b'{"id": 3, "action": "c"}'], 100),
        # a bare "\r" after a good record: one line, one row, but two records
        ([b'{"id": 1, "action": "a"}', b"\r"], 100),
        # "\r" ends the line, so the line is within the limit; the record is not
        ([b'{"id": 1}\r', b'{"id": 2}'], 9),
    ],
)
def test_a_batch_read_as_one_document_gives_the_record_by_record_result(
    values: list[bytes], max_bytes: int
) -> None:
    """An all-good batch of one-line records is parsed as an NDJSON document (no wrapper
    per record); these batches must not be: their lines are not their records."""
    want_rows, want_dead = python_truth(values, max_bytes)
    assert want_dead  # each batch holds a bad record
    for body in (values, pa.chunked_array([pa.array(values, pa.binary())])):
        rows, dead = JsonDecoder(SCHEMA, max_record_bytes=max_bytes).decode(raw(body))
        assert rows.to_pylist() == want_rows
        assert dead.column("position").to_pylist() == want_dead


def test_an_all_good_batch_is_read_as_one_document() -> None:
    """Every record one good line: the rows are those of ``json.loads``, with no dead
    letter, whether the records hold raw newlines (framed) or not (one document)."""
    values = [json.dumps({"action": f"a{i % 3}", "id": i}).encode() for i in range(500)]
    values[7] = b'{"id": 7}\r'  # a "\r" is whitespace after the object
    values[9] = GOOD_WITH_NEWLINES
    want_rows, want_dead = python_truth(values, 1 << 20)
    assert not want_dead
    for body in (values, values[:9], pa.chunked_array([pa.array(values, pa.binary())])):
        rows, dead = JsonDecoder(SCHEMA).decode(raw(body))
        assert rows.to_pylist() == want_rows[: len(body)]
        assert dead.num_rows == 0
