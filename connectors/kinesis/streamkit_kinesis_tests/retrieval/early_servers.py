"""Real Kinesis clients that answer like a server reading from too early a position.

Every call goes to the real server (LocalStack); only the position asked for changes, so
the records in the answers are the server's own. They model what kinesis-mock 0.4.13
(LocalStack 4.9) does when a shard's first record is numbered like the shard's start (both
in the same second): ``AT_SEQUENCE_NUMBER`` of the second record starts at the first one,
and the iterator after the first record answers that record again for ever. A reader
must neither skip records, nor repeat them, nor take such answers for the tip.
"""

from __future__ import annotations

import json
from typing import Any

RAW_BODY = "StreamkitRawBody"
"""Where the columnar hook puts a GetRecords answer's raw JSON body."""


class EarlyAt:
    """``AT_SEQUENCE_NUMBER`` of a key of ``earlier`` is asked AT its value instead."""

    def __init__(self, inner: Any, earlier: dict[str, str]) -> None:
        self._inner, self._earlier = inner, earlier
        self.rewritten = 0
        """GetShardIterator calls sent to an earlier position."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def get_shard_iterator(self, **kwargs: Any) -> Any:
        seq = kwargs.get("StartingSequenceNumber")
        if kwargs.get("ShardIteratorType") == "AT_SEQUENCE_NUMBER" and seq in self._earlier:
            kwargs = {**kwargs, "StartingSequenceNumber": self._earlier[seq]}
            self.rewritten += 1
        return self._inner.get_shard_iterator(**kwargs)


class Repeating(EarlyAt):
    """Also: an answer that ends at record ``stuck`` of ``shard`` continues AT ``stuck``
    (so that record comes again, for ever), as kinesis-mock's iterator after a shard's
    first record does."""

    def __init__(
        self, inner: Any, earlier: dict[str, str], stream: str, shard: str, stuck: str
    ) -> None:
        super().__init__(inner, earlier)
        self._where = {"StreamName": stream, "ShardId": shard}
        self._stuck = stuck
        self.repeats = 0
        """Answers whose next iterator was sent back to ``stuck``."""

    def get_records(self, **kwargs: Any) -> Any:
        out = self._inner.get_records(**kwargs)
        raw = out.get(RAW_BODY)  # the columnar hook's body (the parsed answer is then empty)
        body = json.loads(raw) if raw is not None else out
        records = body.get("Records") or []
        if not records or records[-1]["SequenceNumber"] != self._stuck:
            return out
        self.repeats += 1
        again = self._inner.get_shard_iterator(
            **self._where, ShardIteratorType="AT_SEQUENCE_NUMBER",
            StartingSequenceNumber=self._stuck,
        )["ShardIterator"]  # fmt: skip
        if raw is None:
            return {**out, "NextShardIterator": again}
        return {**out, RAW_BODY: json.dumps({**body, "NextShardIterator": again}).encode()}


class ResubscribesAt:
    """SubscribeToShard AFTER a record starts AT it (the record comes again), as LocalStack
    does after a shard's first record numbered like the shard's start."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.rewritten = 0
        """Subscriptions started AT the record instead of after it."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def subscribe_to_shard(self, **kwargs: Any) -> Any:
        position = kwargs["StartingPosition"]
        if position.get("Type") == "AFTER_SEQUENCE_NUMBER":
            kwargs = {**kwargs, "StartingPosition": {**position, "Type": "AT_SEQUENCE_NUMBER"}}
            self.rewritten += 1
        return self._inner.subscribe_to_shard(**kwargs)
