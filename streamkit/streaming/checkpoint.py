"""The checkpoint layout: offsets log, commit log and state snapshots in a CheckpointStore.

Per batch N, in this order (the engine's commit protocol):

1. ``offsets/N`` — the source positions the batch ends at, written before it runs;
2. the sink receives batch N and acknowledges it;
3. ``state/N`` — the aggregation state after N (Arrow IPC);
4. ``commits/N`` — written last: batch N is done.

A restart loads the highest committed N and its state and resumes the source after
``offsets/N``; batch ids continue at N + 1. A batch N + 1 that ran but did not commit
(``offsets/N+1`` written, no ``commits/N+1``) is run again under the same id, and, as in
Spark, with exactly the records it had when its source can re-read a range
(:class:`~streamkit.streaming.contracts.BoundedSource`): a sink that skips a batch id it
already committed (the transactional Kafka sink) then loses nothing. Other sources re-read
from the committed offsets, so the re-run may hold more records than the first run; an
idempotent sink replaces the first run's output.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import polars as pl

from streamkit.streaming.contracts import CheckpointStore, Offsets


@dataclass(frozen=True)
class Committed:
    """The last committed batch, as read back on restart."""

    batch_id: int
    offsets: Offsets
    watermark: int | None
    max_event: int | None
    state: pl.DataFrame | None


def _name(batch_id: int) -> str:
    return f"{batch_id:012d}"


class CheckpointLog:
    """Reads and writes the offsets / state / commits logs of one query."""

    def __init__(self, store: CheckpointStore, keep: int = 20) -> None:
        self.store, self.keep = store, keep

    def write_offsets(self, batch_id: int, offsets: Offsets) -> None:
        """Step 1: record where batch ``batch_id`` ends, before running it."""
        body = {"batch_id": batch_id, "offsets": dict(offsets)}
        self.store.write_bytes(f"offsets/{_name(batch_id)}", json.dumps(body).encode())

    def write_state(self, batch_id: int, state: pl.DataFrame) -> None:
        """Step 3: the state after batch ``batch_id``."""
        buf = io.BytesIO()
        state.write_ipc(buf)
        self.store.write_bytes(f"state/{_name(batch_id)}", buf.getvalue())

    def write_commit(self, batch_id: int, offsets: Offsets, meta: dict[str, Any]) -> None:
        """Step 4: batch ``batch_id`` is done (its output is durable in the sink)."""
        body = {"batch_id": batch_id, "offsets": dict(offsets), **meta}
        self.store.write_bytes(f"commits/{_name(batch_id)}", json.dumps(body).encode())
        self._purge(batch_id)

    def latest(self) -> Committed | None:
        """The highest committed batch with its state, or None for a fresh query."""
        names = self.store.list("commits")
        if not names:
            return None
        raw = self.store.read_bytes(f"commits/{names[-1]}")
        assert raw is not None
        body = json.loads(raw)
        bid = int(body["batch_id"])
        blob = self.store.read_bytes(f"state/{_name(bid)}")
        state = pl.read_ipc(io.BytesIO(blob)) if blob else None
        return Committed(bid, body["offsets"], body.get("watermark"), body.get("max_event"), state)

    def pending(self, committed: int | None) -> tuple[int, Offsets] | None:
        """The batch after ``committed`` (None: a fresh query) whose offsets were logged but
        which never committed, with those offsets; None if there is none."""
        bid = 0 if committed is None else committed + 1
        raw = self.store.read_bytes(f"offsets/{_name(bid)}")
        if raw is None:
            return None
        return bid, dict(json.loads(raw)["offsets"])

    def _purge(self, batch_id: int) -> None:
        horizon = batch_id - self.keep
        if horizon < 0:
            return
        for folder in ("offsets", "state", "commits"):
            for name in self.store.list(folder):
                if name.isdigit() and int(name) < horizon:
                    self.store.delete(f"{folder}/{name}")
