"""Decoders: JSON (declared and inferred schemas, bad records isolated), raw, user hook."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, time
from decimal import Decimal

import pyarrow as pa
import pytest

from streamkit.errors import ConfigError, SchemaError, StreamkitError
from streamkit.streaming.decode import (
    DEAD_LETTER_SCHEMA,
    NO_FIELDS,
    BadRecordError,
    FunctionDecoder,
    JsonDecoder,
    Positions,
    RawDecoder,
    RawRecords,
)
from streamkit.streaming.sources import MemoryStream

SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("action", pa.string()),
        pa.field("value", pa.float64()),
        pa.field("event_time", pa.timestamp("ms", tz="UTC")),
    ]
)


def records(payloads: list[bytes], partition: str = "shard-0") -> RawRecords:
    return RawRecords.from_partition(payloads, partition, Positions(range(len(payloads))))


def event(i: int, **extra: object) -> bytes:
    body = {"id": i, "action": "click", "value": i / 2, "event_time": "2024-01-01T00:00:00Z"}
    return json.dumps({**body, **extra}).encode()


def reasons(dead: pa.Table) -> dict[str, str]:
    return dict(
        zip(dead.column("position").to_pylist(), dead.column("reason").to_pylist(), strict=True)
    )


def test_good_batch_decodes_to_the_declared_schema_in_order() -> None:
    rows, dead = JsonDecoder(SCHEMA).decode(records([event(i) for i in range(1000)]))
    assert rows.schema == SCHEMA
    assert rows.column("id").to_pylist() == list(range(1000))
    assert rows.column("event_time")[0].as_py() == datetime(2024, 1, 1, tzinfo=UTC)
    assert dead.num_rows == 0
    assert dead.schema == DEAD_LETTER_SCHEMA


def test_unknown_fields_are_ignored_and_absent_nullable_fields_are_null() -> None:
    rows, dead = JsonDecoder(SCHEMA).decode(records([b'{"id": 1, "extra": [1, 2]}']))
    assert rows.to_pylist() == [{"id": 1, "action": None, "value": None, "event_time": None}]
    assert dead.num_rows == 0


def test_malformed_json_in_the_middle_keeps_every_good_row() -> None:
    payloads = [event(i) for i in range(5000)]
    bad = {17: b'{"id": 17, "action": ', 2500: b"not json", 4999: b'{"id": 4999,,}'}
    for i, payload in bad.items():
        payloads[i] = payload
    rows, dead = JsonDecoder(SCHEMA).decode(records(payloads))
    assert rows.column("id").to_pylist() == [i for i in range(5000) if i not in bad]
    assert dead.column("raw").to_pylist() == list(bad.values())
    assert dead.column("position").to_pylist() == [str(i) for i in bad]
    assert set(dead.column("partition").to_pylist()) == {"shard-0"}
    assert all(r.startswith("malformed JSON") for r in dead.column("reason").to_pylist())


def test_truncated_record_does_not_swallow_the_next_one() -> None:
    payloads = [b'{"id": 1, "action": {', b'{"id": 2}', b'{"pad":', b'{"id": 3}']
    rows, dead = JsonDecoder(SCHEMA).decode(records(payloads))
    assert rows.column("id").to_pylist() == [2, 3]
    assert dead.column("position").to_pylist() == ["0", "2"]


def test_missing_and_null_required_fields_name_the_field() -> None:
    payloads = [event(0), b'{"action": "x"}', b'{"id": null}', event(3)]
    rows, dead = JsonDecoder(SCHEMA).decode(records(payloads))
    assert rows.column("id").to_pylist() == [0, 3]
    assert reasons(dead) == {
        "1": "missing required field 'id' (absent or null)",
        "2": "missing required field 'id' (absent or null)",
    }


def test_mistyped_fields_name_the_field_and_both_types() -> None:
    payloads = [event(0), b'{"id": "seven"}', b'{"id": 2, "value": "high"}', b'{"id": 3.5}']
    payloads += [b'{"id": 4, "action": {"nested": 1}}', b'{"id": 5, "event_time": "yesterday"}']
    rows, dead = JsonDecoder(SCHEMA).decode(records(payloads))
    assert rows.column("id").to_pylist() == [0]
    got = reasons(dead)
    assert got["1"] == "field 'id': expected int64, got JSON string"
    assert got["2"] == "field 'value': expected double, got JSON string"
    assert got["3"] == "field 'id': cannot convert '3.5' to int64"
    assert got["4"] == "field 'action': expected string, got JSON object"
    assert got["5"].startswith("field 'event_time': cannot convert 'yesterday' to timestamp[ms")


def test_non_objects_empty_and_multi_value_records_are_rejected() -> None:
    payloads = [b"[1, 2]", b"42", b'"text"', b"", b"   ", b'{"id": 1}{"id": 2}', event(6)]
    rows, dead = JsonDecoder(SCHEMA).decode(records(payloads))
    assert rows.column("id").to_pylist() == [6]
    assert reasons(dead) == {
        "0": "not a JSON object (got array)",
        "1": "not a JSON object (got number)",
        "2": "not a JSON object (got string)",
        "3": "empty record",
        "4": "empty record (only whitespace)",
        "5": "malformed JSON: Missing a comma or '}' after an object member",
    }


def test_split_and_doubled_records_cannot_balance_each_other_out() -> None:
    # Record counts alone would match here (2 + 0 rows; 1 + 2 rows); the framing must not.
    payloads = [b"   ", b'{"id": 1}{"id": 2}', b'{"id":', b"3}", b'{"id": 5}{"id": 6}', event(9)]
    rows, dead = JsonDecoder(SCHEMA).decode(records(payloads))
    assert rows.column("id").to_pylist() == [9]
    assert dead.column("position").to_pylist() == ["0", "1", "2", "3", "4"]


def test_oversize_records_are_rejected_before_parsing() -> None:
    big = event(1, pad="x" * 500)
    rows, dead = JsonDecoder(SCHEMA, max_record_bytes=200).decode(records([event(0), big]))
    assert rows.column("id").to_pylist() == [0]
    assert reasons(dead) == {"1": f"oversize: {len(big)} bytes > 200"}
    assert dead.column("raw").to_pylist() == [big]


def test_raw_newlines_are_whitespace_outside_strings_and_invalid_inside() -> None:
    payloads = [b'{"id": 1,\n "action": "pretty"}', b'{"id": 2, "action": "a\nb"}', event(3)]
    rows, dead = JsonDecoder(SCHEMA).decode(records(payloads))
    assert rows.column("id").to_pylist() == [1, 3]
    assert rows.column("action").to_pylist() == ["pretty", "click"]
    assert dead.column("raw").to_pylist() == [payloads[1]]


def test_timestamps_accept_iso_strings_and_integer_epochs_in_the_field_unit() -> None:
    payloads = [
        b'{"id": 0, "event_time": "2024-01-01T00:00:00Z"}',
        b'{"id": 1, "event_time": "2024-01-01T01:00:00+01:00"}',
        b'{"id": 2, "event_time": "2024-01-01 00:00:00.250"}',
        b'{"id": 3, "event_time": 1704067200000}',
        b'{"id": 4, "event_time": "2024-01-01"}',
        b'{"id": 5, "event_time": true}',
    ]
    decoder = JsonDecoder(SCHEMA)
    rows, dead = decoder.decode(records(payloads))
    midnight = datetime(2024, 1, 1, tzinfo=UTC)
    got = rows.column("event_time").to_pylist()
    assert got == [midnight, midnight, midnight.replace(microsecond=250_000), midnight, midnight]
    assert "got JSON boolean" in reasons(dead)["5"]
    epochs = [b'{"id": %d, "event_time": %d}' % (i, 1704067200000 + i) for i in range(100)]
    rows, dead = decoder.decode(records(epochs))
    assert dead.num_rows == 0
    assert rows.column("event_time")[99].as_py() == midnight.replace(microsecond=99_000)


@pytest.mark.parametrize("unit", ["s", "ms"])
@pytest.mark.parametrize("whole_file", [False, True])
def test_iso_fractions_with_more_digits_than_the_unit_are_kept_only_when_exact(
    unit: str, whole_file: bool
) -> None:
    # Python's isoformat writes 6 fraction digits ("...00.123000"); whether a value fits the
    # field's unit is decided here from the datetime itself, not by the decoder.
    rng = random.Random(11)
    step = {"s": 1_000_000, "ms": 1_000}[unit]
    stamps = []
    for _ in range(400):
        micros = rng.choice([0, step * rng.randrange(1_000_000 // step), rng.randrange(10**6)])
        base = datetime(2024, 1, 1, tzinfo=UTC).timestamp() + rng.randrange(10**8)
        stamps.append(datetime.fromtimestamp(base, UTC).replace(microsecond=micros))
    texts = [t.isoformat() if i % 2 else t.isoformat(timespec="microseconds")
             for i, t in enumerate(stamps)]  # fmt: skip
    schema = pa.schema([pa.field("id", pa.int64()), pa.field("t", pa.timestamp(unit, "UTC"))])
    payloads = [json.dumps({"id": i, "t": x}).encode() for i, x in enumerate(texts)]
    decoder = JsonDecoder(schema)
    if whole_file:
        rows, dead = decoder.decode_lines(b"\n".join(payloads) + b"\n", "files", "f.json")
    else:
        rows, dead = decoder.decode(records(payloads))
    exact = [i for i, t in enumerate(stamps) if t.microsecond % step == 0]
    assert 0 < len(exact) < len(stamps)
    assert rows.column("id").to_pylist() == exact
    assert rows.column("t").to_pylist() == [stamps[i] for i in exact]
    lost = sorted(set(range(len(stamps))) - set(exact))
    where = [int(p.rsplit(":", 1)[-1]) - whole_file for p in dead.column("position").to_pylist()]
    assert where == lost
    assert set(dead.column("reason").to_pylist()) == {
        f"field 't': cannot convert to timestamp[{unit}, tz=UTC] without losing precision: "
        f"a fraction of a second finer than {unit} (timestamps are never truncated)"
    }


def test_fail_mode_raises_a_typed_error_naming_where_and_how_to_continue() -> None:
    decoder = JsonDecoder(SCHEMA, on_bad_record="fail")
    assert decoder.decode(records([event(0)])).rows.num_rows == 1
    with pytest.raises(BadRecordError) as err:
        decoder.decode(records([event(0), b'{"id": "x"}', b"junk"], partition="shard-7"))
    assert isinstance(err.value, StreamkitError)
    assert (err.value.partition, err.value.position) == ("shard-7", "1")
    message = str(err.value)
    assert "'shard-7'" in message
    assert "field 'id'" in message
    assert "on_bad_record='dead_letter'" in message


def test_invalid_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        JsonDecoder(SCHEMA, on_bad_record="skip")  # type: ignore[arg-type]


def test_schema_is_inferred_from_the_first_batch_then_enforced() -> None:
    decoder = JsonDecoder()
    assert decoder.schema is None
    first = [
        b'{"user": "a", "n": 1, "t": "2024-01-01T00:00:00.123Z", "meta": null}',
        b"{broken",
        b'{"user": "b", "n": 2, "score": 0.5}',
    ]
    rows, dead = decoder.decode(records(first))
    assert decoder.schema == pa.schema(
        [
            ("user", pa.string()),
            ("n", pa.int64()),
            ("t", pa.timestamp("us")),
            ("meta", pa.string()),
            ("score", pa.float64()),
        ]
    )
    assert rows.column("user").to_pylist() == ["a", "b"]
    assert dead.column("position").to_pylist() == ["1"]
    later = [b'{"user": "c", "n": "three"}', b'{"n": 4, "new_field": 1}']
    rows, dead = decoder.decode(records(later))
    assert rows.schema == decoder.schema
    assert rows.to_pylist() == [{"user": None, "n": 4, "t": None, "meta": None, "score": None}]
    assert reasons(dead) == {"0": "field 'n': expected int64, got JSON string"}


def test_a_batch_without_any_valid_record_does_not_fix_the_schema() -> None:
    decoder = JsonDecoder()
    rows, dead = decoder.decode(records([b"nope", b"[]"]))
    assert (rows.num_rows, dead.num_rows, decoder.schema) == (0, 2, None)
    rows, _ = decoder.decode(records([b'{"a": 1}']))
    assert decoder.schema == pa.schema([("a", pa.int64())])


def test_random_bad_records_are_isolated_exactly() -> None:
    rng = random.Random(7)
    payloads = [event(i) for i in range(3000)]
    bad = set(rng.sample(range(3000), 150))
    junk = [b"{", b'{"id": "x"}', b"[]", b'{"id": 1.5}', b'{"value": 1}']
    for i in bad:
        payloads[i] = rng.choice(junk)
    rows, dead = JsonDecoder(SCHEMA).decode(records(payloads))
    assert rows.column("id").to_pylist() == sorted(set(range(3000)) - bad)
    assert dead.column("position").to_pylist() == [str(i) for i in sorted(bad)]


def test_decode_lines_skips_empty_lines_and_reports_file_line_positions() -> None:
    data = b'{"id": 1}\n\n{"id": 2}\r\n{"id": oops}\n{"id": 4}'
    rows, dead = JsonDecoder(SCHEMA).decode_lines(data, "files", "day1/a.json")
    assert rows.column("id").to_pylist() == [1, 2, 4]
    assert dead.to_pylist() == [
        {
            "raw": b'{"id": oops}',
            "partition": "files",
            "position": "day1/a.json:4",
            "reason": "malformed JSON: Invalid value",
        }
    ]
    good = b"".join(event(i) + b"\n" for i in range(10))
    rows, dead = JsonDecoder(SCHEMA).decode_lines(pa.py_buffer(good), "files", "b.json")
    assert (rows.num_rows, dead.num_rows) == (10, 0)


def test_raw_decoder_passes_bytes_through() -> None:
    rows, dead = RawDecoder().decode(records([b"\x00\xff", b"", b"{}"]))
    assert rows.schema == pa.schema([("data", pa.binary())])
    assert rows.column("data").to_pylist() == [b"\x00\xff", b"", b"{}"]
    assert dead.num_rows == 0


def _csv_pairs(payloads: list[bytes]) -> pa.Table:
    keys, values = zip(*(p.decode().split(",") for p in payloads), strict=True)
    return pa.table({"key": list(keys), "n": [int(v) for v in values]})


def test_function_decoder_isolates_records_it_fails_on() -> None:
    schema = pa.schema([("key", pa.string()), ("n", pa.int32())])
    decoder = FunctionDecoder(_csv_pairs, schema)
    rows, dead = decoder.decode(records([b"a,1", b"b,2", b"broken", b"c,3"]))
    assert rows.schema == schema
    assert rows.column("key").to_pylist() == ["a", "b", "c"]
    assert dead.column("position").to_pylist() == ["2"]
    assert dead.column("reason")[0].as_py().startswith("decoder raised ValueError")
    with pytest.raises(BadRecordError):
        FunctionDecoder(_csv_pairs, schema, on_bad_record="fail").decode(records([b"x"]))


def test_function_decoder_output_that_breaks_the_schema_is_a_schema_error() -> None:
    decoder = FunctionDecoder(lambda p: pa.table({"other": [1] * len(p)}), SCHEMA)
    with pytest.raises(SchemaError, match="'id'"):
        decoder.decode(records([b"x"]))


def test_raw_records_need_parallel_sequences() -> None:
    with pytest.raises(ValueError, match="parallel"):
        RawRecords([b"a", b"b"], ["p"], ["1", "2"])


def test_decode_lines_cannot_be_fooled_by_lines_that_balance_out() -> None:
    # Parsed as one document these give 3 rows for 3 lines; each line must stand alone.
    data = b'{"id":\n1}\n{"id": 5}{"id": 6}\n   \n{"id": 9}\n'
    rows, dead = JsonDecoder(SCHEMA).decode_lines(data, "files", "f.json")
    assert rows.column("id").to_pylist() == [9]
    assert dead.column("position").to_pylist() == ["f.json:1", "f.json:2", "f.json:3", "f.json:4"]


def test_decode_lines_matches_decode_record_by_record() -> None:
    rng = random.Random(3)
    lines = [event(i) for i in range(2000)]
    for i in rng.sample(range(2000), 40):
        lines[i] = rng.choice([b'{"id": "x"}', b"{", b'{"action": "no id"}', b"[]"])
    document = b"\n".join(lines) + b"\n"
    by_lines = JsonDecoder(SCHEMA).decode_lines(document, "files", "f")
    by_records = JsonDecoder(SCHEMA).decode(
        RawRecords.from_partition(lines, "files", Positions(range(1, 2001), prefix="f:"))
    )
    assert by_lines.rows.equals(by_records.rows)
    assert by_lines.dead_letters.equals(by_records.dead_letters)
    clean = b"".join(event(i) + b"\r\n" for i in range(500))
    rows, dead = JsonDecoder(SCHEMA).decode_lines(clean, "files", "g")
    assert rows.column("id").to_pylist() == list(range(500))
    assert dead.num_rows == 0


def test_after_a_failed_one_document_parse_the_attempt_backs_off() -> None:
    """A batch with a record of the wrong type fails the one-document parse and is parsed
    again record by record; the attempt is then skipped for 1, 2, 4, ... batches and is
    back on every batch after a success. Rows and dead letters are those of each batch
    whichever path runs. Tried, by hand: B0 fails (skip 1), B1 skipped, B2 fails (skip
    2), B3 and B4 skipped, B5 succeeds, B6 fails (skip 1), B7 skipped, B8 and B9
    succeed."""
    bad_batches = {0, 1, 2, 3, 6}
    decoder = JsonDecoder(SCHEMA)
    tried: list[int] = []
    in_place = decoder._in_place

    def spy(*args: object) -> object:
        tried.append(batch)
        return in_place(*args)  # type: ignore[arg-type]

    decoder._in_place = spy  # type: ignore[method-assign, assignment]
    for batch in range(10):
        payloads = [event(100 * batch + i) for i in range(20)]
        if batch in bad_batches:
            payloads[7] = event(100 * batch + 7, value="not a number")
        rows, dead = decoder.decode(records(payloads))
        good = [100 * batch + i for i in range(20) if not (batch in bad_batches and i == 7)]
        assert rows.column("id").to_pylist() == good, batch
        assert dead.column("position").to_pylist() == (["7"] if batch in bad_batches else [])
    assert tried == [0, 2, 5, 6, 8, 9]


@pytest.mark.parametrize(
    "dtype",
    [
        pa.map_(pa.string(), pa.int64()),
        pa.dictionary(pa.int32(), pa.string()),
        pa.duration("s"),
        pa.large_list(pa.int64()),
        pa.float16(),
        pa.binary(3),  # fixed-size bytes
        pa.list_(pa.float16()),
        pa.struct([("inner", pa.duration("ms"))]),
    ],
    ids=str,
)
def test_a_field_json_cannot_produce_is_refused_when_the_decoder_is_built(
    dtype: pa.DataType,
) -> None:
    """Misconfiguration fails at start with the field named, not on the first batch."""
    schema = pa.schema([("id", pa.int64()), ("odd", dtype)])
    with pytest.raises(ConfigError, match=r"'odd' \(.*declare them as string"):
        JsonDecoder(schema)


@pytest.mark.parametrize(
    ("dtype", "text", "value"),
    [
        (pa.list_(pa.int64()), "[1, 2]", [1, 2]),
        (pa.struct([("a", pa.int64())]), '{"a": 3}', {"a": 3}),
        (pa.uint8(), "7", 7),
        (pa.large_string(), '"x"', "x"),
    ],
    ids=str,
)
def test_types_json_can_produce_are_accepted_and_decoded(
    dtype: pa.DataType, text: str, value: object
) -> None:
    schema = pa.schema([("id", pa.int64()), ("f", dtype)])
    rows, dead = JsonDecoder(schema).decode(records([f'{{"id": 1, "f": {text}}}'.encode()]))
    assert dead.num_rows == 0
    assert rows.column("f").to_pylist() == [value]


def test_empty_objects_before_any_field_are_dead_letters_not_lost() -> None:
    """Schema to infer and only ``{}`` seen: each record is a dead letter with its
    position (none vanishes); the first batch with a field fixes the schema, and a ``{}``
    after that is a row of nulls."""
    decoder = JsonDecoder()
    rows, dead = decoder.decode(records([b"{}", b"  {}", b"not json"]))
    assert rows.num_rows == 0
    assert dead.column("position").to_pylist() == ["0", "1", "2"]
    reasons = dead.column("reason").to_pylist()
    assert reasons[:2] == [NO_FIELDS, NO_FIELDS]
    assert reasons[2] != NO_FIELDS
    assert decoder.schema is None
    rows, dead = decoder.decode(records([b"{}", b'{"n": 5}']))
    assert dead.num_rows == 0
    assert rows.to_pylist() == [{"n": None}, {"n": 5}]


DAY = date(2024, 1, 2)
DAYS = (DAY - date(1970, 1, 1)).days


@pytest.mark.parametrize("dtype", [pa.date32(), pa.date64()], ids=str)
def test_date_fields_take_iso_dates_and_integers_batch_by_batch(dtype: pa.DataType) -> None:
    """ISO dates, then integers in the field's unit (days, or ms for date64), then ISO
    again: each batch decodes whole, without dead letters."""
    decoder = JsonDecoder(pa.schema([("id", pa.int64()), ("d", dtype)]))
    unit = DAYS if dtype == pa.date32() else DAYS * 86_400_000
    batches = [
        [b'{"id": 1, "d": "2024-01-02"}', b'{"id": 2, "d": null}'],
        [b'{"id": 3, "d": %d}' % unit, b'{"id": 4}'],
        [b'{"id": 5, "d": "2024-01-02"}'],
    ]
    got = []
    for batch in batches:
        rows, dead = decoder.decode(records(batch))
        assert dead.num_rows == 0, dead.column("reason").to_pylist()
        got += rows.to_pylist()
    assert got == [
        {"id": 1, "d": DAY},
        {"id": 2, "d": None},
        {"id": 3, "d": DAY},
        {"id": 4, "d": None},
        {"id": 5, "d": DAY},
    ]


def test_a_string_that_is_not_an_iso_date_is_a_dead_letter_naming_the_field() -> None:
    decoder = JsonDecoder(pa.schema([("id", pa.int64()), ("d", pa.date32())]))
    batch = [b'{"id": 1, "d": "2024-01-02"}', b'{"id": 2, "d": "2 Jan 2024"}', b'{"id": 3}']
    rows, dead = decoder.decode(records(batch))
    assert rows.to_pylist() == [{"id": 1, "d": DAY}, {"id": 3, "d": None}]
    assert dead.column("position").to_pylist() == ["1"]
    assert dead.column("reason").to_pylist()[0].startswith("field 'd': expected an ISO date")


def test_a_file_of_iso_dates_is_parsed_in_place() -> None:
    """``decode_lines``' one-document parse casts the dates as the framed path does."""
    decoder = JsonDecoder(pa.schema([("d", pa.date32())]))
    rows, dead = decoder.decode_lines(b'{"d": "2024-01-02"}\n{"d": "1970-01-01"}\n', "p", "f")
    assert dead.num_rows == 0
    assert rows.column("d").to_pylist() == [DAY, date(1970, 1, 1)]


NOON_ISH = time(12, 34, 56)
NOON_ISH_SECONDS = 12 * 3600 + 34 * 60 + 56
PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
TIMES = [pa.time32("s"), pa.time32("ms"), pa.time64("us"), pa.time64("ns")]


def decode_one_bad(schema: pa.Schema, good: bytes, bad: bytes) -> tuple[list[object], str]:
    """Records ``{"id": 1, "f": good}``, ``{"id": 2, "f": bad}``, ``{"id": 3}``: the
    ``id`` of the rows, and the reason of the one dead letter (position 1)."""
    batch = [b'{"id": 1, "f": %s}' % good, b'{"id": 2, "f": %s}' % bad, b'{"id": 3}']
    rows, dead = JsonDecoder(schema).decode(records(batch))
    assert dead.column("position").to_pylist() == ["1"], rows.to_pylist()
    return rows.column("id").to_pylist(), dead.column("reason")[0].as_py()


@pytest.mark.parametrize("dtype", TIMES, ids=str)
def test_time_fields_take_iso_times_and_integers_batch_by_batch(dtype: pa.DataType) -> None:
    """ISO times, then integers in the field's unit since midnight, then ISO again."""
    decoder = JsonDecoder(pa.schema([("id", pa.int64()), ("t", dtype)]))
    ticks = NOON_ISH_SECONDS * PER_SECOND[dtype.unit]
    batches = [
        [b'{"id": 1, "t": "12:34:56"}', b'{"id": 2, "t": null}', b'{"id": 3, "t": "23:59"}'],
        [b'{"id": 4, "t": %d}' % ticks, b'{"id": 5}', b'{"id": 6, "t": 0}'],
        [b'{"id": 7, "t": "00:00:00"}', b'{"id": 8, "t": null}'],
    ]
    got = []
    for batch in batches:
        rows, dead = decoder.decode(records(batch))
        assert dead.num_rows == 0, dead.column("reason").to_pylist()
        got += rows.column("t").to_pylist()
    assert got == [NOON_ISH, None, time(23, 59), NOON_ISH, None, time(0), time(0), None]


@pytest.mark.parametrize(
    ("dtype", "text", "ticks"),
    [
        (pa.time32("ms"), b'"12:34:56.789"', NOON_ISH_SECONDS * 10**3 + 789),
        (pa.time64("us"), b'"12:34:56.000001"', NOON_ISH_SECONDS * 10**6 + 1),
        (pa.time64("ns"), b'"12:34:56.123456789"', NOON_ISH_SECONDS * 10**9 + 123_456_789),
        (pa.time64("ns"), b'"23:59:59.999999999"', 86_400 * 10**9 - 1),
    ],
    ids=str,
)
def test_iso_time_fractions_are_kept_to_the_field_unit(
    dtype: pa.DataType, text: bytes, ticks: int
) -> None:
    decoder = JsonDecoder(pa.schema([("t", dtype)]))
    rows, dead = decoder.decode(records([b'{"t": %s}' % text]))
    assert dead.num_rows == 0, dead.column("reason").to_pylist()
    width = pa.int32() if dtype.bit_width == 32 else pa.int64()
    assert rows.column("t").cast(width).to_pylist() == [ticks]


@pytest.mark.parametrize(
    ("dtype", "good", "bad"),
    [
        (pa.time32("s"), b'"01:00:00"', b'"25:00:00"'),
        (pa.time32("s"), b'"01:00:00"', b'"12:34:56.5"'),  # finer than seconds
        (pa.time32("ms"), b'"01:00:00"', b'"12:34:56.1234"'),  # finer than ms
        (pa.time32("s"), b'"01:00:00"', b'"noon"'),
        (pa.time32("s"), b'"01:00:00"', b'"12:34:56Z"'),
        (pa.time64("us"), b'"01:00:00"', b'"2024-01-02T12:34:56"'),
        (pa.time32("s"), b"3600", b"86400"),  # one past the last second of the day
        (pa.time32("ms"), b"3600000", b"-1"),
        (pa.time64("us"), b"3600000000", b"86400000000"),
        (pa.time64("ns"), b"3600000000000", b"-86400000000000"),
    ],
    ids=str,
)
def test_a_value_that_is_not_a_time_of_day_is_a_dead_letter_naming_the_field(
    dtype: pa.DataType, good: bytes, bad: bytes
) -> None:
    """Never a wrapped-around time (pyarrow alone stores 86400 s as a time of no day)."""
    schema = pa.schema([("id", pa.int64()), ("f", dtype)])
    ids, reason = decode_one_bad(schema, good, bad)
    assert ids == [1, 3]
    assert reason.startswith("field 'f': expected an ISO time"), reason


def test_a_file_of_iso_times_is_parsed_in_place() -> None:
    decoder = JsonDecoder(pa.schema([("t", pa.time64("us"))]))
    rows, dead = decoder.decode_lines(b'{"t": "12:34:56"}\n{"t": "00:00"}\n', "p", "f")
    assert dead.num_rows == 0
    assert rows.column("t").to_pylist() == [NOON_ISH, time(0)]


PI_30 = "3.141592653589793238462643383279"
"""30 decimals: more digits than a float holds, so only an exact parse keeps them."""


def test_decimals_decode_exactly_from_json_numbers_and_strings() -> None:
    fields = [("p", pa.decimal128(10, 2)), ("q", pa.decimal256(40, 30))]
    schema = pa.schema([*fields, ("r", pa.decimal64(18, 17))])
    batch = [
        b'{"p": 12.34, "q": %s, "r": %s}' % (PI_30.encode(), PI_30[:19].encode()),
        b'{"p": "12.34", "q": "%s", "r": "%s"}' % (PI_30.encode(), PI_30[:19].encode()),
        b'{"p": -0.1, "q": 1e-30, "r": 0}',
        b'{"p": 1E+2, "q": null}',
    ]
    rows, dead = JsonDecoder(schema).decode(records(batch))
    assert dead.num_rows == 0, dead.column("reason").to_pylist()
    assert rows.column("p").to_pylist() == [
        Decimal("12.34"),
        Decimal("12.34"),
        Decimal("-0.1"),
        Decimal(100),
    ]
    assert rows.column("q").to_pylist() == [Decimal(PI_30), Decimal(PI_30), Decimal("1e-30"), None]
    pi_18 = Decimal(PI_30[:19])
    assert rows.column("r").to_pylist() == [pi_18, pi_18, Decimal(0), None]
    assert Decimal(float(PI_30)) != Decimal(PI_30)
    assert Decimal(repr(float(pi_18))) != pi_18


@pytest.mark.parametrize(
    "dtype", [pa.decimal32(9, 2), pa.decimal64(9, 2), pa.decimal128(9, 2), pa.decimal256(9, 2)]
)
@pytest.mark.parametrize(
    ("bad", "detail"),
    [
        (b"12.345", "requires scale 3"),  # would need rounding
        (b'"12.345"', "requires scale 3"),
        (b"12345678.5", "requires precision"),
        (b'"abc"', "not a valid decimal"),
        (b'"NaN"', "not a valid decimal"),
        (b'""', "Empty string"),
    ],
    ids=str,
)
def test_a_decimal_that_does_not_fit_is_a_dead_letter_naming_the_field(
    dtype: pa.DataType, bad: bytes, detail: str
) -> None:
    schema = pa.schema([("id", pa.int64()), ("f", dtype)])
    ids, reason = decode_one_bad(schema, b"1.5", bad)
    assert ids == [1, 3]
    assert reason.startswith(f"field 'f': cannot convert to {dtype}: "), reason
    assert detail in reason


@pytest.mark.parametrize(
    "dtype",
    [
        pa.decimal128(5, -2),
        pa.decimal128(3, 5),
        pa.list_(pa.decimal128(3, 5)),
        pa.struct([("x", pa.decimal256(10, -1))]),
    ],
    ids=str,
)
def test_decimals_pyarrow_reads_wrongly_are_refused_for_json_and_kept_as_rows(
    dtype: pa.DataType,
) -> None:
    """pyarrow's JSON reader checks the digits as written for a negative scale or one
    above the precision (9999900 refused for decimal(5, -2), 0.5 read into decimal(3, 5)
    as 0.50000): refused for JSON, naming the field (before: an ArrowInvalid from the
    decoder's range check, or wrong values); a memory stream still holds such rows."""
    schema = pa.schema([("id", pa.int64()), ("f", dtype)])
    with pytest.raises(ConfigError, match=r"decimal field\(s\) 'f' .*0 <= s <= p"):
        JsonDecoder(schema)
    table = pa.table({"id": [1], "f": pa.array([None], dtype)}, schema=schema)
    stream = MemoryStream(schema=schema)
    stream.add_rows(table)
    with pytest.raises(ConfigError, match="'f'"):
        stream.add_records([b'{"id": 2}'])


@pytest.mark.parametrize(
    ("dtype", "good", "bad"),
    [
        (pa.uint8(), b"255", b"256"),
        (pa.uint8(), b"0", b"-1"),
        (pa.uint8(), b"7", b"7.0"),
        (pa.uint16(), b"65535", b"65536"),
        (pa.uint32(), b"4294967295", b"-5"),
        (pa.uint64(), b"18446744073709551615", b"18446744073709551616"),
        (pa.int8(), b"-128", b"128"),
    ],
    ids=str,
)
def test_an_integer_out_of_the_field_range_is_a_dead_letter_naming_the_field(
    dtype: pa.DataType, good: bytes, bad: bytes
) -> None:
    schema = pa.schema([("id", pa.int64()), ("f", dtype)])
    ids, reason = decode_one_bad(schema, good, bad)
    assert ids == [1, 3]
    assert reason == f"field 'f': cannot convert {bad.decode()!r} to {dtype}"


def test_a_number_beyond_float32_is_a_dead_letter_not_infinity() -> None:
    schema = pa.schema([("id", pa.int64()), ("f", pa.float32())])
    ids, reason = decode_one_bad(schema, b"3e38", b"-1e39")
    assert ids == [1, 3]
    assert reason == "field 'f': number out of float32 range (magnitude above 3.4e38)"


@pytest.mark.parametrize("text", [b'"true"', b'"false"', b"1", b"0"], ids=str)
def test_a_boolean_field_takes_only_json_true_and_false(text: bytes) -> None:
    schema = pa.schema([("id", pa.int64()), ("f", pa.bool_())])
    ids, reason = decode_one_bad(schema, b"true", text)
    assert ids == [1, 3]
    kind = "string" if text.startswith(b'"') else "number"
    assert reason == f"field 'f': expected bool, got JSON {kind}"


@pytest.mark.parametrize("dtype", [pa.binary(), pa.large_binary(), pa.binary_view()], ids=str)
def test_a_binary_field_holds_the_utf8_bytes_of_the_string_as_written(
    dtype: pa.DataType,
) -> None:
    """JSON has no bytes: the text's bytes after JSON unescaping; base64 is not decoded."""
    batch = [b'{"f": "caf\\u00e9"}', b'{"f": "aGk="}', b'{"f": null}']
    rows, dead = JsonDecoder(pa.schema([("f", dtype)])).decode(records(batch))
    assert dead.num_rows == 0
    assert rows.column("f").to_pylist() == ["café".encode(), b"aGk=", None]
