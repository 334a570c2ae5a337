"""The checkpoint layout: offsets log, commit log and state snapshots in a CheckpointStore.

Per batch N, in this order (the engine's commit protocol):

1. ``offsets/N`` — the source positions the batch ends at, written before it runs;
2. the sink receives batch N and acknowledges it;
3. the aggregation state after N: a snapshot ``state/N`` (Arrow IPC, the whole state) or a
   delta ``deltas/N`` (the groups N upserted or deleted; :mod:`~streamkit.streaming.state.
   changelog`). :meth:`CheckpointLog.write_changes` writes a snapshot every
   ``snapshot_every`` batches (and whenever the previous batch's state is not known to be
   on disk, e.g. the first batch after a start) and a delta otherwise, so the bytes per
   batch follow the groups the batch touched;
4. ``commits/N`` — written last: batch N is done.

The state after N is ``state/N`` if present, else the latest intact snapshot ``state/S``
(S < N) with ``deltas/S+1 .. N`` applied in order. Checkpoints written when every batch
had a ``state/N`` restore unchanged. Retention keeps the last ``keep`` batches
restorable: the latest snapshot at or before the oldest of them and every delta after it;
older snapshots and deltas are deleted, so the folder stays bounded.

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
On restart a damaged or missing ``commits/N``, ``state/N`` or ``deltas/N`` (or a damaged
snapshot or delta of its chain, when no older snapshot can stand in) of the latest batch is
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
import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import polars as pl

from streamkit.errors import StreamkitError
from streamkit.streaming import _envelope as envelope
from streamkit.streaming.contracts import CheckpointStore, Offsets
from streamkit.streaming.state.changelog import apply

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


class Changelogged(Protocol):
    """A state that can give the changes since its last checkpoint (a state store)."""

    def take_changes(self) -> pl.DataFrame | None:
        """The delta since the last call, or None when only a snapshot will do."""
        ...

    def rows(self) -> pl.DataFrame:
        """The whole state."""
        ...

    @property
    def change_keys(self) -> list[str]:
        """Columns identifying a row of a delta."""
        ...


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

    def __init__(self, store: CheckpointStore, keep: int = 20, snapshot_every: int = 10) -> None:
        if snapshot_every < 1:
            raise ValueError(f"snapshot_every must be at least 1, got {snapshot_every}")
        self.store, self.keep, self.snapshot_every = store, keep, snapshot_every
        self._chain_end: int | None = None
        """The last batch whose state is known to be on disk (written or restored)."""
        self.damaged: list[str] = []
        """Paths of the damaged files found by :meth:`latest` and :meth:`pending`."""

    def write_offsets(
        self, batch_id: int, offsets: Offsets, meta: dict[str, Any] | None = None
    ) -> None:
        """Step 1: record where batch ``batch_id`` ends, before running it, with ``meta``
        a re-run must reuse (e.g. the batch's processing time)."""
        body = {**(meta or {}), "batch_id": batch_id, "offsets": dict(offsets)}
        self.store.write_bytes(f"offsets/{_name(batch_id)}", envelope.seal_json(body))

    def offsets_meta(self, batch_id: int) -> dict[str, Any]:
        """The ``meta`` logged with batch ``batch_id``'s offsets ({} when absent or
        damaged: :meth:`pending` reports damage)."""
        path = f"offsets/{_name(batch_id)}"
        raw = self.store.read_bytes(path)
        try:
            body = self._json(path, raw) if raw is not None else {}
        except _Damaged:
            return {}
        return {k: v for k, v in body.items() if k not in ("batch_id", "offsets")}

    def write_state(self, batch_id: int, state: pl.DataFrame) -> None:
        """Step 3 as a snapshot: the whole state after batch ``batch_id``."""
        name = _name(batch_id)
        self.store.delete(f"deltas/{name}")  # left by a run of this batch that never committed
        self.store.write_bytes(f"state/{name}", envelope.seal(_ipc(state)))
        self._chain_end = batch_id

    def write_changes(self, batch_id: int, state: Changelogged) -> None:
        """Step 3 as a delta of ``state`` since the previous batch, or a snapshot (every
        ``snapshot_every`` batches, or when the previous batch's state is not known to be
        on disk, or when ``state`` cannot give a delta). Consumes ``state``'s changes."""
        delta = state.take_changes()
        due = batch_id % self.snapshot_every == 0 or self._chain_end != batch_id - 1
        if delta is None or due:
            self.write_state(batch_id, state.rows())
            return
        name = _name(batch_id)
        self.store.delete(f"state/{name}")  # left by a run of this batch that never committed
        header = json.dumps({"keys": state.change_keys}).encode() + b"\n"
        self.store.write_bytes(f"deltas/{name}", envelope.seal(header + _ipc(delta)))
        self._chain_end = batch_id

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
                last = self._committed(int(names[i]))
                self._chain_end = last.batch_id
                return last
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

    def state_at(self, batch_id: int) -> pl.DataFrame:
        """The state after batch ``batch_id`` (its snapshot, or the latest intact earlier
        snapshot with the deltas after it); :class:`CheckpointDamagedError` when it cannot
        be read back."""
        try:
            return self._state_at(batch_id)
        except _Damaged as exc:
            raise CheckpointDamagedError(location_of(self.store), [str(exc)]) from None

    def _committed(self, bid: int) -> Committed:
        path = f"commits/{_name(bid)}"
        body = self._json(path, self._read(path))
        try:
            offsets = dict(body["offsets"])
            if int(body["batch_id"]) != bid:
                raise ValueError(f"it names batch {body['batch_id']}")
        except (KeyError, TypeError, ValueError) as exc:
            raise _Damaged(f"{self._where(path)} is damaged ({exc})") from exc
        state = self._state_at(bid)
        return Committed(bid, offsets, body.get("watermark"), body.get("max_event"), state)

    def _state_at(self, bid: int) -> pl.DataFrame:
        """``state/bid``, or the latest intact earlier snapshot with the deltas after it."""
        name = _name(bid)
        snapshots = [n for n in self.store.list("state") if n.isdigit()]
        deltas = self.store.list("deltas")
        if name not in snapshots and name not in deltas:
            where = self._where(f"deltas/{name}")
            raise _Damaged(f"{self._where(f'state/{name}')} is missing (and so is {where})")
        if name in snapshots:
            return self._state(f"state/{name}")
        problems = []
        for base in reversed([int(n) for n in snapshots if int(n) < bid]):
            try:
                frame = self._state(f"state/{_name(base)}")
            except _Damaged as exc:
                problems.append(str(exc))
                continue
            for delta in range(base + 1, bid + 1):
                frame = self._apply(frame, f"deltas/{_name(delta)}")
            return frame
        found = "; ".join(problems) or "none is left"
        raise _Damaged(
            f"{self._where(f'deltas/{name}')} has no intact snapshot before it ({found})"
        )

    def _apply(self, state: pl.DataFrame, path: str) -> pl.DataFrame:
        blob = envelope.open_(self._read(path), self._where(path), _Damaged)
        header, _, body = blob.partition(b"\n")
        try:
            keys = list(json.loads(header)["keys"])
            return apply(state, pl.read_ipc(io.BytesIO(body)), keys)
        except Exception as exc:  # a bad header, IPC body or key list
            raise _Damaged(f"{self._where(path)} is damaged (unreadable delta: {exc})") from exc

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
        """Delete what no batch from ``batch_id - keep`` on needs (see the module doc)."""
        horizon = batch_id - self.keep
        if horizon < 0:
            return
        for folder in ("offsets", "commits"):
            self._drop(folder, lambda n: n < horizon)
        snapshots = [int(n) for n in self.store.list("state") if n.isdigit()]
        base = max((n for n in snapshots if n <= horizon), default=None)
        if base is not None:
            self._drop("state", lambda n: n < base)
            self._drop("deltas", lambda n: n <= base)

    def _drop(self, folder: str, old: Callable[[int], bool]) -> None:
        for name in self.store.list(folder):
            if name.isdigit() and old(int(name)):
                self.store.delete(f"{folder}/{name}")


def _ipc(frame: pl.DataFrame) -> bytes:
    """``frame`` as an Arrow IPC file, LZ4-compressed (what ``pl.read_ipc`` reads),
    written by Polars: nothing comes from Arrow's default memory pool (mimalloc). pyarrow's
    writer costs less CPU (0.31 vs 0.44 ms for a 3,000-row delta, 3.2 vs 6.1 ms for a
    50,000-row snapshot) but allocates its LZ4 buffers there, out of reach of a
    ``memory_pool`` argument, and mimalloc kept the pages: a checkpointed stream join's RSS
    grew 10-14 MB/min in its first minutes (1.5-2.9 with this writer) with Arrow's
    allocated bytes flat (issue 13, ``bench/soak_stream_join.py``)."""
    buf = io.BytesIO()
    frame.write_ipc(buf, compression="lz4")
    return buf.getvalue()


