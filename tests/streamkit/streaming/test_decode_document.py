"""A whole NDJSON file parsed in place equals the same file decoded line by line.

``JsonDecoder.decode_lines`` parses a document in one ``pyarrow.json`` call when its line
scan and pre-checks allow, and otherwise hands each line to ``decode`` as a record (the
careful path that isolates bad records). These differential tests feed the same bytes,
generated good and adversarial with fixed seeds, to both and require identical rows and
dead letters; the lines are split here in plain Python, from the documented contract
(non-empty lines, one trailing ``\\r`` stripped, numbered from 1).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from streamkit.streaming import _lines
from streamkit.streaming.decode import Decoded, JsonDecoder, Positions, RawRecords

SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("event_time", pa.timestamp("us", tz="UTC")),
        pa.field("action", pa.string()),
        pa.field("value", pa.float64()),
    ]
)
MAX_DEPTH = 4
"""Small, so that generated records reach the bound and pass it by one level."""
W3_COLUMNS = ("event_time", "action", "value")
SETTINGS = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)

texts = st.text(alphabet=st.sampled_from('ab{[]}"\\ \té€😀\u2028'), max_size=6)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    texts,
    st.floats(allow_nan=False, allow_infinity=False),
)


def nest(value: object, depth: int, as_list: bool) -> object:
    """``value`` inside ``depth`` levels of lists or objects."""
    for _ in range(depth):
        value = [value] if as_list else {"k": value}
    return value


@st.composite
def good_record(draw: st.DrawFn, flat: bool = False) -> dict[str, object]:
    """A record that fits ``SCHEMA``; ``flat``: ASCII, no bracket but its own braces."""
    micros = draw(st.integers(0, 10**12))
    stamp = EPOCH + timedelta(microseconds=micros)
    record: dict[str, object] = {
        "id": draw(st.integers(-(2**62), 2**62)),
        "event_time": stamp.strftime(
            draw(st.sampled_from(["%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"]))
        ),
        "action": draw(st.text(alphabet="ab ", max_size=4) if flat else texts),
        "value": draw(st.none() | st.integers(-(10**6), 10**6) | st.floats(-1e6, 1e6)),
    }
    for name in draw(st.lists(st.sampled_from(["action", "value", "event_time"]), max_size=2)):
        record.pop(name, None)
    if not flat and draw(st.booleans()):  # ignored, nested up to MAX_DEPTH - 1 levels below
        depth = draw(st.integers(0, MAX_DEPTH - 1))
        record["extra"] = nest(draw(scalars), depth, draw(st.booleans()))
    return record


def dumps(draw: st.DrawFn, record: dict[str, object]) -> bytes:
    ascii_only = draw(st.booleans())
    spaced = draw(st.booleans())
    separators = (", ", ": ") if spaced else (",", ":")
    return json.dumps(record, ensure_ascii=ascii_only, separators=separators).encode()


MUTATIONS = (
    "wrong type",
    "missing id",
    "null id",
    "epoch time",
    "bad time",
    "truncated",
    "trailing garbage",
    "non-object",
    "whitespace around",
    "whitespace only",
    "blank",
    "two on a line",
    "split over lines",
    "duplicate key",
    "invalid utf-8",
    "lone surrogate",
    "too deep",
    "at the depth bound",
    "carriage return inside",
    "brackets in a string",
)


def mutate(draw: st.DrawFn, record: dict[str, object], kind: str) -> bytes:
    """One line (or, for some kinds, two) that is bad or unusual in the way named."""
    typed = retyped(draw, record, kind)
    return typed if typed is not None else reshaped(draw, record, kind)


def retyped(draw: st.DrawFn, record: dict[str, object], kind: str) -> bytes | None:
    """A well-formed line whose values break (or test) the schema; None for other kinds."""
    if kind == "wrong type":
        field, value = draw(
            st.sampled_from(
                [("value", "x"), ("id", "1"), ("id", 1.5), ("action", 3), ("event_time", [1])]
            )
        )
        return dumps(draw, {**record, field: value})
    if kind in ("missing id", "null id"):
        rest = {k: v for k, v in record.items() if k != "id"}
        return dumps(draw, rest | ({"id": None} if kind == "null id" else {}))
    if kind == "epoch time":
        return dumps(draw, {**record, "event_time": draw(st.integers(0, 2**40))})
    if kind == "bad time":
        bad = draw(st.sampled_from(["yesterday", "2024-13-01T00:00:00Z", ""]))
        return dumps(draw, {**record, "event_time": bad})
    if kind in ("too deep", "at the depth bound"):
        depth = MAX_DEPTH if kind == "too deep" else MAX_DEPTH - 1
        return dumps(draw, {**record, "extra": nest(1, depth, draw(st.booleans()))})
    if kind == "brackets in a string":
        return dumps(draw, {**record, "action": "[{" * (MAX_DEPTH + 2)})
    return None


def reshaped(draw: st.DrawFn, record: dict[str, object], kind: str) -> bytes:
    """A line whose bytes or framing are bad or unusual."""
    line = dumps(draw, record)
    if kind == "truncated":
        return line[: draw(st.integers(1, len(line) - 1))]
    if kind == "trailing garbage":
        return line + draw(st.sampled_from([b"x", b",", b"]", b"}", b" 1"]))
    if kind == "non-object":
        return draw(st.sampled_from([b"[1]", b"3", b"null", b'"s"', b"true", b"[]", b"{}"]))
    if kind == "whitespace around":
        return (
            draw(st.sampled_from([b" ", b"\t", b""]))
            + line
            + draw(st.sampled_from([b" ", b"\t", b"\r \r", b""]))
        )
    if kind == "whitespace only":
        return draw(st.sampled_from([b" ", b"\t", b"  \t ", b"\r\r"]))
    if kind == "blank":
        return b""
    if kind == "two on a line":
        return line + draw(st.sampled_from([b"", b" "])) + dumps(draw, record)
    if kind == "split over lines":  # after a key, or after a nested object's "}"
        cut = line.index(b"}") + 1 if line.count(b"}") > 1 else line.index(b":") + 1
        return line[:cut] + b"\n" + line[cut:]
    if kind == "duplicate key":
        return b'{"id":1,' + line[1:]
    if kind == "invalid utf-8":
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xe2\x82"]))
        return dumps(draw, {**record, "action": "ab"}).replace(b'"ab"', b'"a' + bad + b'b"')
    if kind == "lone surrogate":
        return dumps(draw, {**record, "action": "ab"}).replace(b'"ab"', b'"a\\ud800b"')
    assert kind == "carriage return inside"
    return line.replace(b",", b",\r", 1)


@st.composite
def documents(draw: st.DrawFn, bad: bool = True) -> bytes:
    """An NDJSON document: good records, and with ``bad`` a few mutated lines."""
    lines = []
    flat = draw(st.booleans())  # then a single deep line meets the quick depth bound exactly
    for _ in range(draw(st.integers(1, 12))):
        record = draw(good_record(flat))
        kind = draw(st.sampled_from(MUTATIONS)) if bad and draw(st.integers(0, 3)) == 0 else None
        lines.append(dumps(draw, record) if kind is None else mutate(draw, record, kind))
    ending = b"\r\n" if bad and draw(st.integers(0, 5)) == 0 else b"\n"
    tail = draw(st.sampled_from([ending, b""])) if bad else b"\n"
    return ending.join(lines) + tail


def line_records(doc: bytes) -> RawRecords:
    """The contract's records of ``doc``, split here in plain Python."""
    payloads, numbers = [], []
    for number, piece in enumerate(doc.split(b"\n"), start=1):
        line = piece.removesuffix(b"\r")
        if line:
            payloads.append(line)
            numbers.append(number)
    return RawRecords.from_partition(payloads, "files", Positions(numbers, prefix="f:"))


def decoder(columns: tuple[str, ...] | None) -> JsonDecoder:
    made = JsonDecoder(SCHEMA, max_depth=MAX_DEPTH)
    made.read_only(columns)
    return made


def in_place(doc: bytes, columns: tuple[str, ...] | None) -> Decoded | None:
    buf = pa.py_buffer(doc)
    return decoder(columns)._in_place(buf, _lines.scan_lines(buf))


def assert_same(got: Decoded, want: Decoded) -> None:
    assert got.rows.equals(want.rows, check_metadata=True), (got.rows, want.rows)
    assert got.dead_letters.to_pylist() == want.dead_letters.to_pylist()


@seed(20261206)
@SETTINGS
@given(doc=documents(), columns=st.sampled_from([None, W3_COLUMNS]))
def test_a_document_parsed_in_place_equals_the_same_lines_decoded_one_by_one(
    doc: bytes, columns: tuple[str, ...] | None
) -> None:
    careful = decoder(columns).decode(line_records(doc))
    fast = in_place(doc, columns)
    if fast is not None:
        assert careful.dead_letters.num_rows == 0
        assert_same(fast, careful)
    assert_same(decoder(columns).decode_lines(doc, "files", "f"), careful)


@st.composite
def depth_documents(draw: st.DrawFn) -> bytes:
    """Flat ASCII lines and a few nested or bracket-quoting ones, so that the decoder's
    quick depth bound (brackets beyond one per line < ``MAX_DEPTH``) is often met exactly."""
    lines = [dumps(draw, draw(good_record(flat=True))) for _ in range(draw(st.integers(1, 6)))]
    for _ in range(draw(st.integers(1, 2))):
        record = draw(good_record(flat=True))
        depth = draw(st.integers(MAX_DEPTH - 2, MAX_DEPTH + 1))
        if draw(st.booleans()):
            record["extra"] = nest(1, depth, draw(st.booleans()))
        else:
            record["action"] = "[" * depth
        lines.insert(draw(st.integers(0, len(lines))), dumps(draw, record))
    return b"\n".join(lines) + b"\n"


@seed(20261209)
@SETTINGS
@given(doc=depth_documents(), columns=st.sampled_from([None, W3_COLUMNS]))
def test_nesting_near_the_bound_is_judged_the_same_in_place_and_line_by_line(
    doc: bytes, columns: tuple[str, ...] | None
) -> None:
    careful = decoder(columns).decode(line_records(doc))
    fast = in_place(doc, columns)
    if fast is not None:
        assert_same(fast, careful)
    assert_same(decoder(columns).decode_lines(doc, "files", "f"), careful)


@seed(20261207)
@SETTINGS
@given(doc=documents(bad=False), columns=st.sampled_from([None, W3_COLUMNS]))
def test_a_document_of_good_lines_is_parsed_in_place(
    doc: bytes, columns: tuple[str, ...] | None
) -> None:
    fast = in_place(doc, columns)
    assert fast is not None
    assert_same(fast, decoder(columns).decode(line_records(doc)))


@st.composite
def near_plain_documents(draw: st.DrawFn) -> bytes:
    """Documents one line away from the plain shape (every line ``{...}``, ``\\n`` endings)."""
    forms = st.sampled_from(
        [b"%s", b" %s", b"\t%s", b"}", b',"y":2}', b"", b"%s\r", b"%s ", b"%s%s", b"{}"]
    )
    lines = []
    for _ in range(draw(st.integers(1, 5))):
        line = dumps(draw, draw(good_record(flat=True)))
        form = draw(forms) if draw(st.integers(0, 2)) == 0 else b"%s"
        lines.append(form.replace(b"%s", line))
    return b"\n".join(lines) + draw(st.sampled_from([b"\n", b""]))


@seed(20261208)
@SETTINGS
@given(doc=st.one_of(documents(), near_plain_documents()))
def test_the_quick_line_scan_equals_the_general_one_whenever_it_applies(doc: bytes) -> None:
    arr = np.frombuffer(doc, dtype=np.uint8)
    newlines = np.flatnonzero(arr == 10)
    quick = _lines._plain(arr, newlines)
    if quick is not None:
        general = _lines._general(arr, newlines)
        assert quick == general
        assert quick.bounds.tolist() == general.bounds.tolist()


def test_the_chunked_survey_equals_whole_buffer_numpy() -> None:
    rng = np.random.default_rng(11)
    alphabet = np.frombuffer(b'{}[]\n\r "a\x80\xff', dtype=np.uint8)
    for size in (1, 7, _lines._CHUNK - 1, _lines._CHUNK, _lines._CHUNK + 1, 3 * _lines._CHUNK + 5):
        arr = rng.choice(alphabet, size=size)
        newlines, top, opens = _lines._survey(arr)
        assert newlines.tolist() == np.flatnonzero(arr == 10).tolist()
        assert top == int(arr.max())
        assert opens == int(np.count_nonzero(arr == ord("{")) + np.count_nonzero(arr == ord("[")))


def test_one_line_one_level_too_deep_among_flat_lines_is_a_dead_letter() -> None:
    flat = [json.dumps({"id": i, "action": "a"}).encode() for i in range(5)]
    for nested in ([[[[1]]]], {"k": {"k": {"k": {"k": 1}}}}):
        deep = json.dumps({"id": 9, "extra": nested}).encode()
        doc = b"\n".join([*flat[:2], deep, *flat[2:]]) + b"\n"
        rows, dead = decoder(W3_COLUMNS).decode_lines(doc, "files", "f")
        assert rows.num_rows == 5
        assert dead.to_pylist() == [
            {
                "raw": deep,
                "partition": "files",
                "position": "f:3",
                "reason": f"nested deeper than {MAX_DEPTH} levels",
            }
        ]
