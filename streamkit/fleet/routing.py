"""Routing partial-state rows to exchange partitions by a stable hash of the group key.

The partition of a row is ``xxh64(canonical(key), seed=0) % partitions`` where
``canonical(key)`` is the bytes of the row's group-key columns, in the aggregation's key
order, each column as:

- null: the byte ``0x00``; otherwise ``0x01`` followed by the value:
- integers (any width, signed or unsigned), dates, datetimes, durations, times: the
  physical value widened to 64 bits, little-endian (signed values as two's complement);
- floats (32 or 64 bits): the IEEE-754 binary64 bits, little-endian, with ``-0.0`` written
  as ``0.0`` and every NaN as ``0x7ff8000000000000`` (the values ``group_by`` puts in one
  group give one encoding);
- booleans: one byte, 0 or 1;
- strings, categoricals, enums, decimals (as their text): the UTF-8 length as 4 bytes
  little-endian, then the UTF-8 bytes; binary likewise with its bytes.

xxHash64 is the published algorithm (Yann Collet's XXH64 specification); the test suite
pins values computed by the reference C implementation (the ``xxhash`` package) over
hand-written encodings. The rows of the two sides of a join of two streams are routed by
their equality keys, in the order of the pairs; each pair's types must hash equal values
equally (:func:`check_join_routable`). The routing only reads the key columns, never the window, so
every window and session of one key lands in one partition. It is the same on every
machine, process and run (no seed, no library-version dependence), and vectorised: cost
O(bytes of the keys) in NumPy, plus one Python step per distinct encoded length.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import polars as pl

from streamkit.errors import PlanError

U64 = npt.NDArray[np.uint64]
U8 = npt.NDArray[np.uint8]

P1 = np.uint64(0x9E3779B185EBCA87)
P2 = np.uint64(0xC2B2AE3D27D4EB4F)
P3 = np.uint64(0x165667B19E3779F9)
P4 = np.uint64(0x85EBCA77C2B2AE63)
P5 = np.uint64(0x27D4EB2F165667C5)
_CANONICAL_NAN = np.uint64(0x7FF8000000000000)

_INT_TYPES = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64)
_TIME_TYPES = (pl.Date, pl.Datetime, pl.Duration, pl.Time)
_TEXT_TYPES = (pl.String, pl.Categorical, pl.Enum, pl.Decimal)


def routable(dtype: pl.DataType) -> bool:
    """Whether a group key of this type can be routed (see the module docstring)."""
    kinds = (*_INT_TYPES, *_TIME_TYPES, *_TEXT_TYPES, pl.Float32, pl.Float64, pl.Boolean)
    return isinstance(dtype, (*kinds, pl.Binary, pl.Null))


def check_routable(keys: pl.Schema) -> None:
    """Refuse group keys the routing cannot encode, naming the column and the fix."""
    for name, dtype in keys.items():
        if not routable(dtype):
            raise PlanError(
                f"not supported on a fleet yet: group key {name!r} of type {dtype}; group "
                "by plain columns (numbers, strings, booleans, timestamps), e.g. cast it "
                "with .with_column(name, ...) first"
            )


def _key_class(dtype: pl.DataType) -> object:
    """What the join compares a key of this type as: integers of any width and sign are
    one class, floats another (the canonical encoding widens both), any other type only
    meets itself."""
    if isinstance(dtype, _INT_TYPES):
        return "integer"
    if isinstance(dtype, pl.Float32 | pl.Float64):
        return "float"
    return dtype


def check_join_routable(
    pairs: Sequence[tuple[str, str]], left: pl.Schema, right: pl.Schema
) -> None:
    """Refuse, per side, an equality key of a join of two streams that the routing cannot
    encode, and a pair of keys whose equal values would not hash equally: each pair must
    be of one type, or both integers (any widths: Spark's coercion, the join's
    supertype), or both floats; the canonical encoding then gives equal values of the two
    sides one hash, so they land in one partition."""
    for a, b in pairs:
        for side, name, dtype in (("left", a, left[a]), ("right", b, right[b])):
            if not routable(dtype):
                raise PlanError(
                    f"not supported on a fleet yet: join key {name!r} of type {dtype} "
                    f"({side} side); join on plain columns (numbers, strings, booleans, "
                    "timestamps), e.g. cast it with .with_column(name, ...) first"
                )
        if _key_class(left[a]) != _key_class(right[b]):
            raise PlanError(
                f"not supported on a fleet yet: join key {a!r} ({left[a]}, left side) = "
                f"{b!r} ({right[b]}, right side): equal values of these types are not "
                "routed to one partition; cast one side's key to the other's type first "
                "(with_column(name, col(name).cast(...)))"
            )


def _rotl(x: U64, r: int) -> U64:
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


def _round(acc: U64, lane: U64) -> U64:
    acc = acc + lane * P2
    return _rotl(acc, 31) * P1


def _merge_round(acc: U64, val: U64) -> U64:
    acc = acc ^ _round(np.zeros_like(val), val)
    return acc * P1 + P4


def _lanes64(block: U8) -> U64:
    """Little-endian uint64 of each row of an (n, 8k) byte matrix -> (n, k)."""
    return np.ascontiguousarray(block).view("<u8").astype(np.uint64)


def xxh64_fixed(data: U8, seed: int = 0) -> U64:
    """XXH64 of every row of ``data`` (an ``(n, length)`` uint8 matrix: rows of equal
    length), vectorised over rows."""
    n, length = data.shape
    s = np.full(n, seed, np.uint64)
    with np.errstate(over="ignore"):
        pos = 0
        if length >= 32:
            v = [s + P1 + P2, s + P2, s.copy(), s - P1]
            while pos + 32 <= length:
                lanes = _lanes64(data[:, pos : pos + 32])
                v = [_round(v[i], lanes[:, i]) for i in range(4)]
                pos += 32
            h = _rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)
            for i in range(4):
                h = _merge_round(h, v[i])
        else:
            h = s + P5
        h = h + np.uint64(length)
        while pos + 8 <= length:
            k = _round(np.zeros(n, np.uint64), _lanes64(data[:, pos : pos + 8])[:, 0])
            h = _rotl(h ^ k, 27) * P1 + P4
            pos += 8
        if pos + 4 <= length:
            word = np.ascontiguousarray(data[:, pos : pos + 4]).view("<u4")[:, 0]
            h = _rotl(h ^ (word.astype(np.uint64) * P1), 23) * P2 + P3
            pos += 4
        while pos < length:
            h = _rotl(h ^ (data[:, pos].astype(np.uint64) * P5), 11) * P1
            pos += 1
        h = (h ^ (h >> np.uint64(33))) * P2
        h = (h ^ (h >> np.uint64(29))) * P3
        return h ^ (h >> np.uint64(32))


def xxh64_rows(buffer: U8, offsets: npt.NDArray[np.int64], seed: int = 0) -> U64:
    """XXH64 of each byte string ``buffer[offsets[i]:offsets[i + 1]]``."""
    lengths = np.diff(offsets)
    out = np.empty(lengths.size, np.uint64)
    for length in np.unique(lengths).tolist():
        rows = np.flatnonzero(lengths == length)
        index = offsets[rows][:, None] + np.arange(length, dtype=np.int64)[None, :]
        out[rows] = xxh64_fixed(buffer[index].reshape(rows.size, length), seed)
    return out


# -- canonical encoding ------------------------------------------------------------------
def _fixed_bytes(series: pl.Series) -> U8:
    """(n, 8) little-endian bytes of a numeric/temporal/boolean column (nulls: zeros)."""
    dtype = series.dtype
    if isinstance(dtype, pl.Boolean):
        return series.fill_null(False).cast(pl.UInt8).to_numpy().reshape(-1, 1)
    if isinstance(dtype, pl.Float32 | pl.Float64):
        values = series.cast(pl.Float64).fill_null(0.0).to_numpy().astype(np.float64)
        bits = (values + 0.0).view(np.uint64).copy()  # -0.0 + 0.0 == +0.0
        bits[np.isnan(values)] = _CANONICAL_NAN
    elif isinstance(dtype, _TIME_TYPES):
        bits = series.to_physical().cast(pl.Int64).fill_null(0).to_numpy().view(np.uint64)
    elif isinstance(dtype, pl.UInt64):
        bits = series.fill_null(0).to_numpy().astype(np.uint64)
    else:
        bits = series.cast(pl.Int64).fill_null(0).to_numpy().astype(np.int64).view(np.uint64)
    return np.ascontiguousarray(bits.astype("<u8")).view(np.uint8).reshape(-1, 8)


def _text(series: pl.Series) -> tuple[U8, npt.NDArray[np.int64]]:
    """(bytes, offsets) of a text or binary column (nulls empty)."""
    if not isinstance(series.dtype, pl.Binary):
        series = series.cast(pl.String).cast(pl.Binary)
    arrow = series.fill_null(b"").to_arrow().cast("large_binary")
    arrow = arrow.combine_chunks() if hasattr(arrow, "combine_chunks") else arrow
    _, offs, data = arrow.buffers()
    start = arrow.offset
    offsets = np.frombuffer(offs, np.int64)[start : start + len(arrow) + 1]
    raw = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    return raw, offsets.astype(np.int64)


class _Column:
    """One key column's canonical encoding: each row's segment length and, for rows whose
    segments have one length, their bytes as a matrix."""

    def __init__(self, series: pl.Series) -> None:
        n = series.len()
        self.present = series.is_not_null().to_numpy().astype(np.uint8)
        self.raw: U8 | None = None
        if isinstance(series.dtype, pl.Null):
            self.head = np.zeros((n, 1), np.uint8)
            self.lengths = np.ones(n, np.int64)
        elif isinstance(series.dtype, (*_TEXT_TYPES, pl.Binary)):
            self.raw, self.offsets = _text(series)
            size = np.diff(self.offsets)
            self.head = np.empty((n, 5), np.uint8)
            self.head[:, 0] = self.present
            self.head[:, 1:] = size.astype("<u4").view(np.uint8).reshape(-1, 4)
            self.lengths = np.where(self.present == 1, 5 + size, 1)
        else:
            self.head = np.concatenate([self.present[:, None], _fixed_bytes(series)], axis=1)
            self.lengths = np.where(self.present == 1, self.head.shape[1], 1)

    def matrix(self, rows: npt.NDArray[np.int64], length: int) -> U8:
        """The segments of ``rows``, all ``length`` bytes long, one row each."""
        head = self.head[rows, : min(length, self.head.shape[1])]
        if self.raw is None or length <= 5:
            return head
        index = self.offsets[rows][:, None] + np.arange(length - 5, dtype=np.int64)[None, :]
        return np.concatenate([head, self.raw[index]], axis=1)


def key_hash(keys: pl.DataFrame) -> U64:
    """``xxh64(canonical(row), seed=0)`` of each row of ``keys`` (the group-key columns):
    rows are grouped by the lengths of their segments, each group hashed as one matrix."""
    columns = [_Column(keys[c]) for c in keys.columns]
    out = np.empty(keys.height, np.uint64)
    if not keys.height:
        return out
    code = np.zeros(keys.height, np.int64)
    values = []
    for c in columns:  # the row's shape (segment length per column) as one small integer
        uniq, inverse = np.unique(c.lengths, return_inverse=True)
        code = code * uniq.size + inverse.reshape(-1)
        values.append(uniq)
    shapes, group = np.unique(code, return_inverse=True)
    group = group.reshape(-1).astype(np.uint16 if shapes.size < 2**16 else np.int64)
    order = np.argsort(group, kind="stable")  # radix sort for 16-bit groups
    bounds = np.searchsorted(group[order], np.arange(shapes.size + 1))
    for g, shape in enumerate(shapes.tolist()):
        widths, rest = [], shape
        for uniq in reversed(values):
            rest, at = divmod(rest, uniq.size)
            widths.append(int(uniq[at]))
        rows = order[bounds[g] : bounds[g + 1]]
        parts = [c.matrix(rows, w) for c, w in zip(columns, reversed(widths), strict=True)]
        out[rows] = xxh64_fixed(np.ascontiguousarray(np.concatenate(parts, axis=1)))
    return out


def partition_ids(
    rows: pl.DataFrame, keys: Sequence[str], partitions: int
) -> npt.NDArray[np.int64]:
    """The exchange partition of each row: ``key_hash(rows[keys]) % partitions``."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    if not rows.height:
        return np.zeros(0, np.int64)
    if not keys:  # one group key space: every row in the partition of the empty key
        empty = xxh64_fixed(np.zeros((1, 0), np.uint8))[0]
        return np.full(rows.height, int(empty % np.uint64(partitions)), np.int64)
    hashes = key_hash(rows.select(list(keys)))
    return (hashes % np.uint64(partitions)).astype(np.int64)


def split_by_partition(
    rows: pl.DataFrame, keys: Sequence[str], partitions: int
) -> list[pl.DataFrame]:
    """``rows`` split into ``partitions`` frames (index = partition; some may be empty),
    each keeping the input's row order."""
    ids = partition_ids(rows, keys, partitions)
    if partitions == 1:
        return [rows]
    tagged = rows.with_columns(pl.Series("__partition", ids))
    parts = tagged.partition_by("__partition", as_dict=True, maintain_order=True)
    empty = rows.head(0)
    out = []
    for p in range(partitions):
        frame = parts.get((p,))
        out.append(frame.drop("__partition") if frame is not None else empty)
    return out
