"""The cut time of an ``end_offsets`` call (:mod:`.tip_watch`): a moment on the clock that
stamps ``ApproximateArrivalTimestamp`` that is at or after the server's time when the call
began, so a record that arrived after it was not acknowledged before the call.

It is read from the server, not from this machine: the ``Date`` header of a ListShards
answer to a request sent after the call began. ``Date`` has one-second resolution (it is
truncated), so the server's time at the answer is before ``Date + 1 s``; ``skew`` is added
for the gap between the front end that writes ``Date`` and the host that stamps arrivals
(0 on one machine; on AWS they are different hosts). Without a ``Date`` header this
machine's clock is used, plus ``skew``. A later cut only makes the run take a little more
(records up to ``skew + 1`` s after the call); an earlier one could miss records.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from streamkit_kinesis.client import call_until_done
from streamkit_kinesis.retry import RetryState

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from streamkit_kinesis.client import KinesisApi

SKEW = 1.0
"""Default clock-skew margin (seconds) added to the server's time."""
DATE_RESOLUTION = timedelta(seconds=1)
"""An HTTP ``Date`` header is truncated to the second."""


def cut_from(headers: Mapping[str, str], skew: float, wall: Callable[[], float]) -> datetime:
    """The cut for an answer with ``headers`` (pure but for ``wall``, this machine's clock,
    used when there is no parsable ``Date``)."""
    margin = timedelta(seconds=skew)
    try:
        date = parsedate_to_datetime(headers["date"])
    except (KeyError, TypeError, ValueError):
        return datetime.fromtimestamp(wall(), UTC) + margin
    return date.astimezone(UTC) + DATE_RESOLUTION + margin


async def server_cut(
    client: KinesisApi,
    stream: str,
    skew: float = SKEW,
    url: str | None = None,
    wall: Callable[[], float] = time.time,
) -> datetime:
    """The cut of a call that began before this one (one ListShards, retried through an
    outage like the target's own)."""

    def ask() -> Mapping[str, str]:
        out = client.list_shards(StreamName=stream, MaxResults=1)
        headers: Mapping[str, str] = out.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        return headers

    headers = await call_until_done(ask, RetryState(), stream=stream, url=url)
    return cut_from(headers, skew, wall)
