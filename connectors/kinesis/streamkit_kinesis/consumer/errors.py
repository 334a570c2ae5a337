"""Errors of the consumer itself (Kinesis and lease errors keep their own types)."""

from __future__ import annotations

from streamkit.errors import StreamkitError


class ConsumerError(StreamkitError):
    """The consumer cannot start or keep running; the message says what to do."""


class ConsumerStateError(ConsumerError, RuntimeError):
    """A method was called in the wrong state (e.g. ``start()`` twice, iterating a consumer
    started with a processor factory)."""
