"""New files under a local directory or an ``s3://`` prefix, read as a stream."""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable, Collection
from datetime import timedelta

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from streamkit.config import AwsEndpoint
from streamkit.errors import ConfigError, SchemaError
from streamkit.streaming.contracts import Offsets, PartitionProgress, SourceBatch
from streamkit.streaming.decode import (
    DEAD_LETTER_SCHEMA,
    BadRecordError,
    Decoded,
    JsonDecoder,
    OnBadRecord,
    conform,
    empty_dead_letters,
    keep_fields,
)
from streamkit.streaming.sources._readahead import Done, ReadAhead
from streamkit.streaming.sources.base import SourceBase
from streamkit.streaming.sources.file_position import ListedFile as _File
from streamkit.streaming.sources.file_position import SeenFiles, decode, max_age_ns

FORMATS = ("json", "parquet", "csv")
PARTITION = "files"
"""The one partition of a file stream (its offsets key, and dead letters' partition)."""


class FileStreamSource(SourceBase[dict[str, str]]):
    """Files that appear under ``path`` (a directory or ``s3://bucket/prefix``), read in
    arrival order: modification time, then name; at most ``max_files_per_trigger`` per batch.

    Files must appear whole: write them elsewhere (or under a name starting with ``.`` or
    ``_``, which is ignored) and rename/put them into place. S3 puts are atomic.

    Offsets: one partition ``"files"`` naming the files processed (relative names, sorted),
    not a (mtime, name) high-water mark: a file that shows up late with an older mtime (a
    slow upload, a copy keeping its mtime) is still read, exactly once. Replaying from
    offsets reads the listed files they do not cover, in arrival order.

    ``max_file_age`` (a duration such as ``"1 hour"``, a timedelta, or seconds; None, the
    default, keeps every name forever) bounds the offsets, like Spark's ``maxFileAge``:

    - The horizon is ``newest - max_file_age``, where ``newest`` is the greatest mtime of a
      file read so far (not merely listed: a backlog held back by ``max_files_per_trigger``
      is never skipped). It only moves forward; before the first file is read there is none,
      so a first start reads every file present.
    - A file whose mtime is before the horizon is ignored when it shows up, and a file read
      earlier is forgotten once the horizon passes its mtime. Nothing behind the horizon is
      ever read again, so forgetting it cannot cause a second read, and the offsets hold
      only the files from the last ``max_file_age``: ``{"files": {name: mtime_ns},
      "horizon": mtime_ns}`` (compact, sorted). Choose ``max_file_age`` longer than the
      longest delay with which a file can appear (upload time, clock skew).
    - ``end_offsets`` is the files read plus the ones listed now at or after the horizon;
      ``reached`` counts a target file as reached if it was read or is behind the horizon.

    Without ``max_file_age`` the position is a compact JSON list of every file read, which
    grows with the number of files. Both forms are read back. Loading the list form with
    ``max_file_age`` set, a name is forgotten once a listing has shown its mtime and the
    horizon passed it; names of files deleted since stay (a fixed, finite set).

    Formats: ``json`` (one object per line, through :class:`JsonDecoder`: a bad line is a
    dead letter at position ``"name:line"``), ``parquet`` and ``csv`` (pyarrow readers, cast
    to the schema; a file that cannot be read or cast is one dead letter at position
    ``"name"`` with empty ``raw``). With ``schema=None`` the schema comes from the first
    file in arrival order. :attr:`commits` holds the last 16 offsets mappings passed to
    :meth:`commit` (:class:`SourceBase`).
    """

    runs_empty_batches = True
    """Files without a record (an empty file) still make a micro-batch, as in Spark."""

    def __init__(
        self,
        path: str,
        format: str = "json",
        schema: pa.Schema | None = None,
        max_files_per_trigger: int | None = None,
        endpoint: AwsEndpoint | None = None,
        *,
        max_record_bytes: int = 1_048_576,
        on_bad_record: OnBadRecord = "dead_letter",
        poll_interval: float = 1.0,
        max_file_age: str | timedelta | float | None = None,
        decode_workers: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        if format not in FORMATS:
            raise ConfigError(f"format must be one of {FORMATS}, got {format!r}")
        if max_files_per_trigger is not None and max_files_per_trigger < 1:
            raise ConfigError("max_files_per_trigger must be positive (or None for no cap)")
        self.path = path
        self.format = format
        self._fs, self._root = _filesystem(path, endpoint)
        self._cap = max_files_per_trigger
        self._decoder = JsonDecoder(  # JSON only: Parquet and CSV columns may be any type
            schema if format == "json" else None,
            max_record_bytes=max_record_bytes,
            on_bad_record=on_bad_record,
        )
        self._schema = schema
        self._only: frozenset[str] | None = None
        self._mode: OnBadRecord = on_bad_record
        self._poll = poll_interval
        self._clock = clock
        self._wall_clock = wall_clock
        self._max_age = max_age_ns(max_file_age)
        self._seen = SeenFiles(self._max_age)
        if decode_workers is not None and decode_workers < 1:
            raise ConfigError(f"decode_workers must be >= 1, got {decode_workers}")
        self._workers = decode_workers or min(4, os.cpu_count() or 1)
        self._ahead: ReadAhead[JsonDecoder] | None = None
        self._backlog: deque[_File] = deque()

    @property
    def schema(self) -> pa.Schema:
        """The declared schema, else the one of the first file (read now if needed)."""
        if self._schema is None:
            self._schema = self._decoder.schema or self._infer()
        return self._schema

    def _infer(self) -> pa.Schema:
        files = self._list()
        if not files:
            raise SchemaError(
                f"no files under {self.path!r} to infer a schema from yet; pass schema=..."
            )
        data = self._read_bytes(files[0])
        if data is None:
            raise SchemaError(f"{files[0].name!r} vanished while inferring the schema; retry")
        if self.format == "parquet":
            schema: pa.Schema | None = pq.read_schema(pa.BufferReader(data))
        elif self.format == "csv":
            schema = pacsv.read_csv(pa.BufferReader(data)).schema
        else:
            lines = [line for line in data.to_pybytes().split(b"\n") if line.strip()]
            schema = self._decoder.infer_schema(lines)
        if schema is None:
            raise SchemaError(
                f"no valid JSON object with a field in {files[0].name!r}; pass schema=..."
            )
        return schema

    async def open(self, offsets: Offsets | None) -> None:
        """Read the files ``offsets`` do not cover (None: every file). One query at a time
        reads a source: a second ``open`` before ``close`` raises :class:`ConfigError`."""
        if self._ahead is not None:
            raise ConfigError(
                f"the file source {self.path!r} is read by a running query already; build "
                "one sk.read_stream.files(...) per query"
            )
        self._seen = SeenFiles(self._max_age, decode(offsets.get(PARTITION) if offsets else None))
        self._backlog.clear()
        self._ahead = ReadAhead([self._decoder], self._decode_one)
        self._grow()

    async def next_batch(self, max_wait: float) -> SourceBatch | None:
        """The next unread files in arrival order (at most ``max_files_per_trigger``),
        listing again every ``poll_interval`` s for up to ``max_wait`` s; None if none.

        Up to ``decode_workers`` later files are decoded meanwhile, each on its own thread,
        so the next batch is often ready when asked for; a file counts as read only once
        it is handed over in a batch.
        """
        self.raise_if_failed()
        ahead = self._need_open()
        deadline = self._clock() + max_wait
        while True:
            t0 = time.perf_counter()
            self._plan(await asyncio.to_thread(self._list))
            remaining = deadline - self._clock()
            if len(ahead) or remaining <= 0:
                break
            await asyncio.sleep(min(self._poll, remaining))
        if not len(ahead):
            return None
        listing = time.perf_counter() - t0
        done: list[Done] = []
        while len(ahead) and (self._cap is None or len(done) < self._cap):
            done.append(await ahead.take())
            self._plan(None)
        self._seen.add([d.file for d in done])
        oldest = ahead.first or (self._backlog[0] if self._backlog else None)
        lag = int((self._wall_clock() - oldest.mtime_ns / 1e9) * 1000) if oldest else 0
        rows = [d.decoded.rows for d in done if d.decoded.rows.num_rows]
        dead = [d.decoded.dead_letters for d in done if d.decoded.dead_letters.num_rows]
        records = sum(t.num_rows for t in rows + dead)
        return SourceBatch(
            rows=pa.concat_tables(rows) if rows else self._empty_rows(),
            dead_letters=pa.concat_tables(dead) if dead else empty_dead_letters(),
            end_offsets={PARTITION: self._seen.encode()},
            partitions=(PartitionProgress(PARTITION, records=records, lag_ms=lag),),
            fetch_seconds=listing + sum(d.read_seconds for d in done),
            decode_seconds=sum(d.decode_seconds for d in done),
        )

    def _need_open(self) -> ReadAhead[JsonDecoder]:
        if self._ahead is None:
            raise ConfigError("the file source is not open; call open() first")
        return self._ahead

    def _plan(self, listed: list[_File] | None) -> None:
        """Start decoding unread files in arrival order (``listed``: a fresh listing; None:
        the files left from the last one), keeping up to ``max_files_per_trigger`` plus
        ``decode_workers`` files in flight; one at a time until the schema is known."""
        ahead = self._need_open()
        if listed is not None:
            planned = ahead.names
            self._backlog = deque(f for f in self._seen.unread(listed) if f.name not in planned)
        self._grow()
        limit = (self._cap or 0) + self._workers if self._ready() else 1
        while self._backlog and len(ahead) < limit:
            ahead.start(self._backlog.popleft())

    def _ready(self) -> bool:
        """Whether the schema is known: until then the first file in arrival order fixes it
        (in every format), so files are decoded one at a time."""
        return self._schema is not None or self._decoder.schema is not None

    def _grow(self) -> None:
        """Once the schema is known, one decoder per worker (single-threaded parses when
        several files decode at once)."""
        ahead = self._ahead
        if ahead is None or not self._ready() or ahead.decoders >= self._workers:
            return
        self._decoder.threads = self._workers == 1
        while ahead.decoders < self._workers:
            extra = JsonDecoder(
                self._decoder.schema,
                max_record_bytes=self._decoder.max_record_bytes,
                on_bad_record=self._mode,
                threads=self._workers == 1,
            )
            extra.read_only(self._only)
            ahead.add(extra)

    def _decode_one(self, f: _File, decoder: JsonDecoder) -> tuple[Decoded, float]:
        """Read and decode one file (on a worker thread); also the seconds decoding."""
        data = self._read_bytes(f)
        t0 = time.perf_counter()
        return self._decode_file(f, data, decoder), time.perf_counter() - t0

    def read_only(self, columns: Collection[str] | None) -> bool:
        """Decode only ``columns`` from now on (None: all; projection pushdown, see
        :meth:`JsonDecoder.read_only`): rows hold just these columns, and only their values
        are checked. Parquet and CSV files are still read whole, then projected."""
        self._only = None if columns is None else frozenset(columns)
        self._decoder.read_only(columns)
        return True

    def _rows_schema(self) -> pa.Schema | None:
        schema = self._schema or self._decoder.schema
        return None if schema is None else keep_fields(schema, self._only)

    def _empty_rows(self) -> pa.Table:
        return (self._rows_schema() or pa.schema([])).empty_table()

    def _decode_file(self, f: _File, data: pa.Buffer | None, decoder: JsonDecoder) -> Decoded:
        if data is None:
            return self._bad_file(f, "the file vanished before it was read")
        if self.format == "json":
            decoded = decoder.decode_lines(data, PARTITION, f.name)
            self._schema = self._schema or decoder.schema
            return decoded
        try:
            if self.format == "parquet":
                table = pq.read_table(pa.BufferReader(data))
            else:
                table = pacsv.read_csv(pa.BufferReader(data), convert_options=self._csv_options())
            self._schema = self._schema or table.schema
            wanted = self._rows_schema()
            assert wanted is not None
            rows = conform(table, wanted, what=f"{self.format} file {f.name!r}")
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, SchemaError) as e:
            return self._bad_file(f, f"cannot read {self.format} file: {e}")
        return Decoded(rows, empty_dead_letters())

    def _csv_options(self) -> pacsv.ConvertOptions:
        wanted = self._rows_schema()
        if wanted is None:
            return pacsv.ConvertOptions()
        return pacsv.ConvertOptions(
            column_types={f.name: f.type for f in wanted},
            include_columns=wanted.names,
            include_missing_columns=True,
        )

    def _bad_file(self, f: _File, reason: str) -> Decoded:
        if self._mode == "fail":
            raise BadRecordError(PARTITION, f.name, reason)
        dead = pa.Table.from_pylist(
            [{"raw": b"", "partition": PARTITION, "position": f.name, "reason": reason}],
            schema=DEAD_LETTER_SCHEMA,
        )
        return Decoded(self._empty_rows(), dead)

    def _list(self) -> list[_File]:
        """Every visible file under the root, in arrival order."""
        selector = pafs.FileSelector(self._root, recursive=True, allow_not_found=True)
        files = []
        for info in self._fs.get_file_info(selector):
            if info.type != pafs.FileType.File:
                continue
            name = info.path[len(self._root) :].lstrip("/")
            if any(part.startswith((".", "_")) for part in name.split("/")):
                continue
            files.append(_File(info.mtime_ns or 0, name))
        return sorted(files)

    def _read_bytes(self, f: _File) -> pa.Buffer | None:
        """The whole file, or None if it no longer exists."""
        full = f"{self._root}/{f.name}"
        try:
            with self._fs.open_input_file(full) as stream:  # random-access: one read
                data: pa.Buffer = stream.read_buffer()
                return data
        except OSError:
            if self._fs.get_file_info(full).type == pafs.FileType.NotFound:
                return None
            raise

    async def end_offsets(self) -> Offsets:
        """The files read plus those listed now at or after the horizon (``available_now``)."""
        listed = await asyncio.to_thread(self._list)
        return {PARTITION: self._seen.encode(self._seen.unread(listed))}

    def reached(self, offsets: Offsets, target: Offsets) -> bool:
        """True when ``offsets`` cover every file of ``target``: read, or behind the horizon."""
        return decode(offsets.get(PARTITION)).covers_all(decode(target.get(PARTITION)))

    async def commit(self, offsets: Offsets) -> None:
        """Record ``offsets`` in :attr:`commits` (files need no acknowledgement)."""
        self.record_commit(dict(offsets))

    async def close(self) -> None:
        """Drop the files decoded ahead (they were never handed over)."""
        if self._ahead is not None:
            await self._ahead.close()
        self._ahead = None
        self._backlog.clear()


def _filesystem(path: str, endpoint: AwsEndpoint | None) -> tuple[pafs.FileSystem, str]:
    if path.startswith("s3://"):
        from streamkit.config import current_endpoint

        root = path[len("s3://") :].rstrip("/")
        if not root:
            raise ConfigError(f"{path!r} names no bucket; use s3://bucket/prefix")
        return (endpoint or current_endpoint()).s3_filesystem(), root
    if "://" in path:
        raise ConfigError(f"unsupported path scheme in {path!r}; use a local path or s3://")
    return pafs.LocalFileSystem(), os.path.abspath(path).replace(os.sep, "/")
