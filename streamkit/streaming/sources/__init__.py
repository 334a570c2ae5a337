"""Stream sources: an in-memory stream for tests and examples, new files in a directory
or S3 prefix (both :class:`~streamkit.streaming.contracts.ReplayableSource`), and an
in-memory queue with visibility
(:class:`~streamkit.streaming.contracts.AcknowledgingSource`). :class:`SourceBase` holds
what they share: the bounded record of commits and failure propagation."""

from streamkit.streaming.sources.base import SourceBase, SourceFailedError
from streamkit.streaming.sources.files import FileStreamSource
from streamkit.streaming.sources.memory import MemoryStream
from streamkit.streaming.sources.queue import MemoryQueue, Receipt

__all__ = [
    "FileStreamSource",
    "MemoryQueue",
    "MemoryStream",
    "Receipt",
    "SourceBase",
    "SourceFailedError",
]
