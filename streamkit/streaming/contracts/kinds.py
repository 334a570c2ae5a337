"""Which kind a source is, and the errors that name the kind.

Like bytewax's ``FixedPartitionedSource`` (can seek: exactly-once) and ``DynamicSource``
(cannot: at-least-once), the kind is visible in the type: :data:`StreamSource` is either a
:class:`ReplayableSource` or an :class:`AcknowledgingSource`, and :func:`source_kind` tells
the engine which one it got.
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

from streamkit.errors import ConfigError
from streamkit.streaming.contracts.acknowledging import AcknowledgingSource
from streamkit.streaming.contracts.replayable import ReplayableSource

StreamSource: TypeAlias = ReplayableSource | AcknowledgingSource[Any]
"""Any source the engine reads: replayable (offsets; exactly-once restarts) or
acknowledging (``next_batch`` + ``ack``; at-least-once)."""

SourceKind = Literal["replayable", "acknowledging"]

REPLAYABLE_METHODS = ("open", "next_batch", "end_offsets", "reached", "commit", "close")
"""What a replayable source implements (besides ``schema``)."""
ACKNOWLEDGING_METHODS = ("open", "next_batch", "ack", "close")
"""What an acknowledging source implements (besides ``schema``)."""


class SourceKindError(ConfigError):
    """A source is of neither kind, or of the wrong kind for what was asked."""


class AvailableNowUnsupportedError(SourceKindError):
    """``available_now`` was asked of an acknowledging source, which has no end to read to."""

    def __init__(self, source_name: str) -> None:
        super().__init__(
            f"trigger(available_now=True) reads every source to the end it had at start, but "
            f"{source_name} is an acknowledging source (next_batch + ack, at-least-once): it "
            "has no offsets and no end_offsets to stop at. Use trigger(processing_time=...) "
            "to run continuously (query.process_all_available() waits until the source is "
            "drained), or trigger(once=True) for a single batch"
        )


def _missing(cls: type, methods: tuple[str, ...]) -> list[str]:
    return [m for m in methods if not callable(getattr(cls, m, None))]


def source_kind(source: object) -> SourceKind:
    """``"replayable"`` or ``"acknowledging"``, judged on the methods of ``source``'s class;
    :class:`SourceKindError` when it has both or neither, naming what is missing."""
    cls = type(source)
    replay, acks = _missing(cls, REPLAYABLE_METHODS), _missing(cls, ACKNOWLEDGING_METHODS)
    if not replay and not acks:
        raise SourceKindError(
            f"{cls.__name__} has both end_offsets/reached/commit (a replayable source) and "
            "ack (an acknowledging source); implement exactly one of the two contracts"
        )
    if not replay:
        return "replayable"
    if not acks:
        return "acknowledging"
    raise SourceKindError(
        f"{cls.__name__} is not a stream source: a replayable source (ReplayableSource) "
        f"lacks {', '.join(replay)}; an acknowledging source (AcknowledgingSource) lacks "
        f"{', '.join(acks)}"
    )
