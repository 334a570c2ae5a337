"""Stream sources: an in-memory stream for tests and examples, and new files in a directory
or S3 prefix. Each implements :class:`streamkit.streaming.contracts.StreamSource`."""

from streamkit.streaming.sources.files import FileStreamSource
from streamkit.streaming.sources.memory import MemoryStream

__all__ = ["FileStreamSource", "MemoryStream"]
