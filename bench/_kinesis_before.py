"""The Kinesis query path's code before session 21, for the in-process A/B of
``kinesis_cost.py --before`` (:func:`before` patches it in for the duration of a block):

- GetRecords bodies parsed by Arrow's JSON reader, the base64 payloads decoded by
  ``binascii`` over the whole character buffer (numpy for the padding), as
  ``streamkit_kinesis.retrieval.columnar.parse_answer`` did up to commit ``0a48209``;
- each botocore session registering botocore's built-in event handlers itself, as
  ``streamkit.aws_sessions.fresh_session`` did up to that commit.

Both give the same columns and clients as the code they stand in for (the first is checked
against it on every run of the bench by :func:`check_same_columns`).
"""

from __future__ import annotations

import binascii
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
from streamkit_kinesis.retrieval import columnar

from streamkit import aws_sessions

_RECORD = pa.struct(
    [("Data", pa.string()), ("PartitionKey", pa.string()), ("SequenceNumber", pa.string()),
     ("ApproximateArrivalTimestamp", pa.float64())]
)  # fmt: skip
_CHILD = pa.struct(
    [("ShardId", pa.string()), ("ParentShards", pa.list_(pa.string())),
     ("HashKeyRange", pa.struct([("StartingHashKey", pa.string()),
                                 ("EndingHashKey", pa.string())]))]
)  # fmt: skip
_ANSWER = pa.schema(
    [("Records", pa.list_(_RECORD)), ("NextShardIterator", pa.string()),
     ("MillisBehindLatest", pa.int64()), ("ChildShards", pa.list_(_CHILD))]
)  # fmt: skip


def arrow_parse_answer(body: bytes, *, event: bool = False) -> columnar.ColumnarRecords:
    """A GetRecords body as columns by Arrow's JSON reader (GetRecords answers only)."""
    assert not event, "the bench reads by GetRecords only"
    table = pj.read_json(
        pa.py_buffer(body),
        read_options=pj.ReadOptions(use_threads=False, block_size=len(body) + 64),
        parse_options=pj.ParseOptions(explicit_schema=_ANSWER, unexpected_field_behavior="ignore"),
    )
    records = table.column("Records").combine_chunks()
    rows = records.values if len(records) and not records.null_count else pa.array([], _RECORD)
    children = table.column("ChildShards").combine_chunks()
    entries = children.values.to_pylist() if len(children) else []
    micros = pc.cast(pc.round(pc.multiply(rows.field("ApproximateArrivalTimestamp"), 1e6)),
                     pa.int64())  # fmt: skip
    behind = table.column("MillisBehindLatest")[0].as_py() if table.num_rows else None
    nxt = table.column("NextShardIterator")[0].as_py() if table.num_rows else None
    return columnar.ColumnarRecords(
        data=_b64decode(rows.field("Data")),
        partition_keys=rows.field("PartitionKey"),
        sequence_numbers=rows.field("SequenceNumber"),
        arrival=micros.cast(pa.timestamp("us", "UTC")),
        next_iterator=nxt,
        millis_behind_latest=behind,
        child_shard_ids=tuple(str(c["ShardId"]) for c in entries),
        child_shards=columnar.child_shard_infos(entries),
    )


def _b64decode(encoded: pa.StringArray) -> pa.BinaryArray:
    """Padded base64 strings -> bytes: padding set to ``A``, the whole character buffer
    decoded at once, the padding's bytes dropped, offsets recomputed (no checks: the
    bench's payloads are well formed)."""
    offsets = np.frombuffer(encoded.buffers()[1], np.int32)[
        encoded.offset : encoded.offset + len(encoded) + 1
    ]
    start, stop = int(offsets[0]), int(offsets[-1])
    chars = np.frombuffer(encoded.buffers()[2] or b"", np.uint8)[start:stop].copy()
    rel = (offsets - start).astype(np.int64)
    pad = chars == ord("=")
    chars[pad] = ord("A")
    out = np.frombuffer(binascii.a2b_base64(chars.tobytes(), strict_mode=True), np.uint8)
    at = np.flatnonzero(pad)
    keep = np.ones(len(out), bool)
    keep[at // 4 * 3 + at % 4 - 1] = False  # char 2 of a quantum stands for byte 1, 3 for 2
    new_offsets = (rel // 4 * 3 - np.searchsorted(at, rel)).astype(np.int32)
    return pa.BinaryArray.from_buffers(
        pa.binary(), len(encoded), [None, pa.py_buffer(new_offsets), pa.py_buffer(out[keep])]
    )


_lock = threading.Lock()


@contextmanager
def registering_session() -> Iterator[Any]:
    """A new botocore session that registers the built-in handlers itself, on the
    process's loader (what :func:`streamkit.aws_sessions.fresh_session` was)."""
    import botocore.session

    shared = aws_sessions._SHARED
    with shared.lock:
        session = botocore.session.Session()
        if shared.loader is None:
            shared.loader = session.get_component("data_loader")
        else:
            session.register_component("data_loader", shared.loader)
        yield session


@contextmanager
def before() -> Iterator[None]:
    """Run the block with the code before session 21 patched in."""
    with (
        mock.patch.object(columnar, "parse_answer", arrow_parse_answer),
        mock.patch.object(aws_sessions, "fresh_session", registering_session),
    ):
        yield


def check_same_columns(body: bytes) -> None:
    """Raise unless the two parsers give the same columns and fields for ``body``."""
    old, new = arrow_parse_answer(body), columnar.parse_answer(body)
    for name in ("data", "partition_keys", "sequence_numbers", "arrival"):
        if not getattr(old, name).equals(getattr(new, name)):
            raise RuntimeError(f"the parsers differ in {name}")
    if (old.next_iterator, old.millis_behind_latest) != (new.next_iterator,
                                                         new.millis_behind_latest):  # fmt: skip
        raise RuntimeError("the parsers differ in the answer's fields")
