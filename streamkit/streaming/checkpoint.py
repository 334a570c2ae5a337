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

Every file is written atomically by the store (local: temp file, fsync, rename; S3: one
``PutObject``) and carries a checksum (:mod:`streamkit.streaming._envelope`: a key of the
JSON files, a header of the state files; files written before checksums are still read).
On restart a damaged or missing ``commits/N`` or ``state/N`` of the latest batch is
reported (a log record and a :class:`CheckpointDamagedWarning`, both naming the file) and
the previous committed batch is used instead: batch N then runs again from that batch's
offsets (exactly its records when ``offsets/N`` is intact and the source can re-read a
range), and idempotent sinks replace its first output. A damaged ``offsets/N`` of a batch
that never committed is reported and ignored (the source reads on from the committed
offsets). With no intact committed batch left, :meth:`CheckpointLog.latest` raises
:class:`CheckpointDamagedError`, naming the folder and what to do.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from typing import Any

import polars as pl

from streamkit.errors import StreamkitError
from streamkit.streaming import _envelope as envelope
from streamkit.streaming.contracts import CheckpointStore, Offsets

log = logging.getLogger(__name__)


class CheckpointDamagedWarning(UserWarning):
    """A checkpoint file was damaged or missing; the query used an earlier batch."""


class CheckpointDamagedError(StreamkitError):
    """No committed batch in the checkpoint can be read back intact."""

    def __init__(self, location: str, problems: list[str]) -> None:
        self.location = location
        self.problems = problems
        super().__init__(
            f"checkpoint {location} holds no intact committed batch ({'; '.join(problems)}), "
            "so the query cannot resume exactly. Restore that folder from a backup, or delete "
            "it (or pass another checkpoint location) to start over from the sources' "
            "initial positions."
        )


class _Damaged(Exception):
    """One checkpoint file is missing or does not verify (internal)."""


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


def location_of(store: CheckpointStore) -> str:
    """The folder or ``s3://`` prefix of ``store``, for messages."""
    for attribute in ("url", "root"):
        value = getattr(store, attribute, None)
        if value is not None:
            return str(value)
    return repr(store)


class CheckpointLog:
    """Reads and writes the offsets / state / commits logs of one query (see the module
    docstring for the order, the checksums and the fallback on damage)."""

    def __init__(self, store: CheckpointStore, keep: int = 20) -> None:
        self.store, self.keep = store, keep
        self.damaged: list[str] = []
        """Paths of the damaged files found by :meth:`latest` and :meth:`pending`."""

    def write_offsets(self, batch_id: int, offsets: Offsets) -> None:
        """Step 1: record where batch ``batch_id`` ends, before running it."""
        body = {"batch_id": batch_id, "offsets": dict(offsets)}
        self.store.write_bytes(f"offsets/{_name(batch_id)}", envelope.seal_json(body))

    def write_state(self, batch_id: int, state: pl.DataFrame) -> None:
        """Step 3: the state after batch ``batch_id``."""
        buf = io.BytesIO()
        state.write_ipc(buf)
        self.store.write_bytes(f"state/{_name(batch_id)}", envelope.seal(buf.getvalue()))

    def write_commit(self, batch_id: int, offsets: Offsets, meta: dict[str, Any]) -> None:
        """Step 4: batch ``batch_id`` is done (its output is durable in the sink)."""
        body = {"batch_id": batch_id, "offsets": dict(offsets), **meta}
        self.store.write_bytes(f"commits/{_name(batch_id)}", envelope.seal_json(body))
        self._purge(batch_id)

    def latest(self) -> Committed | None:
        """The highest committed batch whose commit and state files are intact, or None for
        a fresh query. Damaged newer batches are reported and skipped; raises
        :class:`CheckpointDamagedError` when commits exist but none is intact."""
        names = [n for n in self.store.list("commits") if n.isdigit()]
        problems: list[str] = []
        for i in reversed(range(len(names))):
            try:
                return self._committed(int(names[i]))
            except _Damaged as exc:
                problems.append(str(exc))
                older = f"batch {int(names[i - 1])} and replaying from its offsets" if i else None
                self._report(f"{exc}; falling back to {older or 'nothing: no batch is left'}")
        if problems:
            raise CheckpointDamagedError(location_of(self.store), problems)
        return None

    def pending(self, committed: int | None) -> tuple[int, Offsets] | None:
        """The batch after ``committed`` (None: a fresh query) whose offsets were logged but
        which never committed, with those offsets; None if there is none, or if its offsets
        file is damaged (reported; the source then reads on from the committed offsets)."""
        bid = 0 if committed is None else committed + 1
        path = f"offsets/{_name(bid)}"
        raw = self.store.read_bytes(path)
        if raw is None:
            return None
        try:
            body = self._json(path, raw)
            return bid, dict(body["offsets"])
        except (_Damaged, KeyError, TypeError, ValueError) as exc:
            self._report(f"{self._where(path)} is damaged ({exc}); ignoring it: batch {bid} "
                         "reads on from the committed offsets")  # fmt: skip
            return None

    def _committed(self, bid: int) -> Committed:
        path = f"commits/{_name(bid)}"
        body = self._json(path, self._read(path))
        try:
            offsets = dict(body["offsets"])
            if int(body["batch_id"]) != bid:
                raise ValueError(f"it names batch {body['batch_id']}")
        except (KeyError, TypeError, ValueError) as exc:
            raise _Damaged(f"{self._where(path)} is damaged ({exc})") from exc
        state = self._state(f"state/{_name(bid)}")
        return Committed(bid, offsets, body.get("watermark"), body.get("max_event"), state)

    def _state(self, path: str) -> pl.DataFrame:
        blob = envelope.open_(self._read(path), self._where(path), _Damaged)
        try:
            return pl.read_ipc(io.BytesIO(blob))
        except Exception as exc:  # polars raises several types on a bad IPC file
            raise _Damaged(f"{self._where(path)} is damaged (unreadable IPC: {exc})") from exc

    def _json(self, path: str, raw: bytes) -> dict[str, Any]:
        return envelope.open_json(raw, self._where(path), _Damaged)

    def _read(self, path: str) -> bytes:
        raw = self.store.read_bytes(path)
        if raw is None:
            raise _Damaged(f"{self._where(path)} is missing")
        return raw

    def _where(self, path: str) -> str:
        return f"{location_of(self.store).rstrip('/')}/{path}"

    def _report(self, message: str) -> None:
        self.damaged.append(message)
        log.warning("checkpoint: %s", message)
        warnings.warn(message, CheckpointDamagedWarning, stacklevel=3)

    def _purge(self, batch_id: int) -> None:
        horizon = batch_id - self.keep
        if horizon < 0:
            return
        for folder in ("offsets", "state", "commits"):
            for name in self.store.list(folder):
                if name.isdigit() and int(name) < horizon:
                    self.store.delete(f"{folder}/{name}")
