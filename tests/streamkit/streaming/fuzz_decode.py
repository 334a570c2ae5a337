"""Fuzz the JSON decoder and schema inference with hypothesis (run in a child process).

``test_hostile_records.py`` runs this file with ``python fuzz_decode.py``, so a crash of
the parser (SIGSEGV) fails that test instead of killing the test session. Exits 0 when
every property holds. Properties, for any batch of payloads: inference and decoding never
raise; every record becomes exactly one row or one dead letter (with a reason); rows hold
valid UTF-8 only.

Draws from seed ``$STREAMKIT_FUZZ_SEED`` (default 0, so the suite's run is repeatable);
set another to explore: ``STREAMKIT_FUZZ_SEED=$RANDOM python fuzz_decode.py 2000``.
"""

from __future__ import annotations

import os
import sys

import pyarrow as pa
from hypothesis import HealthCheck, example, given, seed, settings
from hypothesis import strategies as st

from streamkit.streaming.decode import JsonDecoder, Positions, RawRecords

DEEP_LIST = b"[" * 50_000 + b"]" * 50_000
DEEP_OBJECT = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
NOT_UTF8 = b'{"page": "vi\xff\xfeew"}'

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)


@st.composite
def nested(draw: st.DrawFn) -> bytes:
    """A value nested 0..100k levels deep, balanced or cut off."""
    depth = draw(st.integers(0, 100_000))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    tail = closer * depth if draw(st.booleans()) else b""
    return b'{"x":' + opener * depth + b"1" + tail + b"}"


@st.composite
def objects(draw: st.DrawFn) -> bytes:
    """A JSON object, possibly with some bytes replaced by arbitrary ones."""
    import json

    body = bytearray(json.dumps({"k": draw(json_values)}).encode())
    for _ in range(draw(st.integers(0, 2))):
        i = draw(st.integers(0, len(body) - 1))
        body[i] = draw(st.integers(0, 255))
    return bytes(body)


payload = st.one_of(objects(), nested(), st.binary(max_size=64))
batches = st.lists(payload, min_size=1, max_size=8)


def check(payloads: list[bytes], schema_first: bool) -> None:
    decoder = JsonDecoder()
    if schema_first:
        decoder.infer_schema(payloads)
    records = RawRecords.from_partition(payloads, "p", Positions(range(len(payloads))))
    rows, dead = decoder.decode(records)
    assert rows.num_rows + dead.num_rows == len(payloads), (rows.num_rows, dead.num_rows)
    assert all(dead.column("reason").to_pylist())
    rows.validate(full=True)
    for column in rows.columns:
        if pa.types.is_string(column.type):
            column.to_pylist()


@settings(
    max_examples=int(sys.argv[1]) if len(sys.argv) > 1 else 150,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
@seed(int(os.environ.get("STREAMKIT_FUZZ_SEED", "0")))
@given(batches, st.booleans())
@example([DEEP_LIST, b'{"a": 1}'], False)
@example([DEEP_OBJECT], True)
@example([NOT_UTF8], False)
@example([b"{}"], False)
@example([b"{}", b"[]"], True)
@example([NOT_UTF8], True)
@example([b'{"a": "ok"}', NOT_UTF8, DEEP_LIST, DEEP_OBJECT], False)
def fuzz(payloads: list[bytes], schema_first: bool) -> None:
    check(payloads, schema_first)


if __name__ == "__main__":
    fuzz()
    print("fuzz: ok")
