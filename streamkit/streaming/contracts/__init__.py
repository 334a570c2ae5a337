"""The contracts between the micro-batch engine and its sources, sinks and checkpoint store.

One protocol per module: :mod:`.replayable` (offsets, replay: exactly-once restarts),
:mod:`.acknowledging` (``next_batch`` + ``ack``: at-least-once), :mod:`.sink`,
:mod:`.checkpoint_store`; the batch value types in :mod:`.batches`, and in :mod:`.kinds`
how the engine tells the two kinds of source apart.
"""

from streamkit.streaming.contracts.acknowledging import AcknowledgingSource
from streamkit.streaming.contracts.batches import (
    DEAD_LETTER_SCHEMA_FIELDS,
    AckBatch,
    Offsets,
    PartitionProgress,
    SourceBatch,
)
from streamkit.streaming.contracts.checkpoint_store import CheckpointStore
from streamkit.streaming.contracts.kinds import (
    AvailableNowUnsupportedError,
    SourceKind,
    SourceKindError,
    StreamSource,
    source_kind,
)
from streamkit.streaming.contracts.replayable import (
    BoundedSource,
    ProjectingSource,
    ReplayableSource,
)
from streamkit.streaming.contracts.sink import Guarantee, Sink

__all__ = [
    "DEAD_LETTER_SCHEMA_FIELDS",
    "AckBatch",
    "AcknowledgingSource",
    "AvailableNowUnsupportedError",
    "BoundedSource",
    "CheckpointStore",
    "Guarantee",
    "Offsets",
    "PartitionProgress",
    "ProjectingSource",
    "ReplayableSource",
    "Sink",
    "SourceBatch",
    "SourceKind",
    "SourceKindError",
    "StreamSource",
    "source_kind",
]
