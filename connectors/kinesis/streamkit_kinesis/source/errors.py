"""Errors of the Kinesis stream source."""

from __future__ import annotations

from streamkit.errors import StreamkitError


class KinesisSourceError(StreamkitError):
    """The Kinesis stream source cannot continue (its consumer failed, or the lease table
    disagrees with the query's checkpoint in a way it cannot repair)."""
