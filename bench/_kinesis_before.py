"""The Kinesis query path's code before session 22 (``main`` at ``705a5e3``), for the
in-process A/B of ``kinesis_cost.py --before`` (:func:`before` patches it in for the
duration of a block):

- the lease coordinator's ``create_table_if_not_exists`` makes its calls again after the
  source's (``CreateTable`` + ``DescribeTable``): the store forgets that it saw the table
  ACTIVE before each call, as it never remembered it up to that commit;
- a shard's first lease checkpoint is written at its first commit
  (``LeaseCheckpoints.started`` does nothing: the interval counts from ``-inf``);
- :class:`~streamkit.streaming.decode.JsonDecoder` frames every batch record by record
  (``{"v":P}`` lines): ``as_lines`` declines every batch, so ``decode`` takes the path
  it always took up to that commit.

Each patch restores the code of that commit exactly (the rest of it is unchanged since);
:func:`check_same_rows` checks that both decoder paths give the same rows on a real body.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pyarrow as pa
from streamkit_kinesis.leases import DynamoDBLeaseStore
from streamkit_kinesis.retrieval.columnar import parse_answer
from streamkit_kinesis.source.lease_checkpoints import LeaseCheckpoints

from streamkit.streaming import _ndjson
from streamkit.streaming.decode import BinaryColumn, JsonDecoder, RawRecords

_ensure = DynamoDBLeaseStore.create_table_if_not_exists


async def _ensure_every_time(self: DynamoDBLeaseStore, timeout: float = 60.0) -> bool:
    self._table.active = False
    return await _ensure(self, timeout)


def _declined(payloads: Any, max_bytes: int) -> None:
    return None


def _clock_from_minus_inf(self: LeaseCheckpoints, shard_id: str) -> None:
    return None


@contextmanager
def before() -> Iterator[None]:
    """Run the block with the code before session 22 patched in."""
    with (
        mock.patch.object(DynamoDBLeaseStore, "create_table_if_not_exists", _ensure_every_time),
        mock.patch.object(LeaseCheckpoints, "started", _clock_from_minus_inf),
        mock.patch.object(_ndjson, "as_lines", _declined),
    ):
        yield


def check_same_rows(body: bytes, schema: pa.Schema) -> None:
    """Raise unless both decoder paths give the same rows and no dead letter for the
    records of ``body`` (a GetRecords answer)."""
    data = parse_answer(body).data
    records = RawRecords.from_partition(BinaryColumn(data), "shard", [""] * len(data))
    now = JsonDecoder(schema).decode(records)
    with before():
        old = JsonDecoder(schema).decode(records)
    if now.dead_letters.num_rows or old.dead_letters.num_rows or not now.rows.equals(old.rows):
        raise RuntimeError("the decoder paths differ")
    if now.rows.num_rows != len(data):
        raise RuntimeError("rows missing")
