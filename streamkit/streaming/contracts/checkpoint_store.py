"""The checkpoint store contract: atomic small files under a checkpoint location."""

from __future__ import annotations

from typing import Protocol


class CheckpointStore(Protocol):
    """Atomic small-file storage under a checkpoint location (local dir or s3:// prefix)."""

    def write_bytes(self, relative_path: str, data: bytes) -> None:
        """Write ``data`` atomically: readers see the old content or the new, never a mix."""
        ...

    def read_bytes(self, relative_path: str) -> bytes | None:
        """The content, or None when absent."""
        ...

    def list(self, relative_dir: str) -> list[str]:
        """Names (not paths) of the files directly under ``relative_dir``, sorted."""
        ...

    def delete(self, relative_path: str) -> None:
        """Remove a file if present."""
        ...
