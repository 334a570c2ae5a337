"""Errors of the consumer itself (Kinesis and lease errors keep their own types)."""

from __future__ import annotations

from streamkit.errors import StreamkitError


class ConsumerError(StreamkitError):
    """The consumer cannot start or keep running; the message says what to do."""


class ConsumerStateError(ConsumerError, RuntimeError):
    """A method was called in the wrong state (e.g. ``start()`` twice, iterating a consumer
    started with a processor factory)."""


class ShardGoneError(ConsumerError):
    """A shard is no longer in the stream (trimmed after retention, or never existed).

    The consumer treats it as that shard's end (as KCL does with ResourceNotFound); it
    never stops the worker.
    """

    def __init__(self, stream: str, shard_id: str) -> None:
        self.stream = stream
        self.shard_id = shard_id
        super().__init__(f"shard {shard_id} is no longer in stream {stream!r}")
