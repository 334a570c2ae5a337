"""HyperLogLog sketches as dense register matrices, built and merged with numpy kernels.

A sketch for one group is ``m = 2**p`` uint8 registers; a frame column holds them as a
Polars ``Array(UInt8, m)``. Merging two sketches takes the register-wise maximum, so partial
sketches from micro-batches merge to exactly the sketch of all rows together.

Hashes use Polars' 64-bit hash with a fixed seed: sketches are stable within one Polars
version (a checkpoint written by another version merges, with a small loss of accuracy).
"""

from __future__ import annotations

import math
import sys
from functools import cache
from typing import TYPE_CHECKING

import polars as pl

from streamkit._lazy import lazy_module
from streamkit.groupids import GroupCoder, group_ids, numpy_pieces

if TYPE_CHECKING:
    import numpy as np

    from streamkit.aggregates.slots import Slots
else:
    np = lazy_module("numpy")

SEED = 0x5EED
MAX_DENSE_BYTES = 1 << 28
"""Largest dense register buffer built in one go (256 MiB); beyond it a sparse path runs."""


def precision_for(rsd: float) -> int:
    """The register exponent ``p`` giving at most ``rsd`` relative standard error."""
    if not 0.0 < rsd < 1.0:
        raise ValueError(f"rsd must be between 0 and 1, got {rsd}")
    return max(4, min(16, math.ceil(2 * math.log2(1.04 / rsd))))


def hash_rho(values: pl.Expr, p: int) -> tuple[pl.Expr, pl.Expr]:
    """Per value: its 64-bit hash (whose top ``p`` bits are the register index, see
    :func:`registers_of`) and rank (:func:`rank`). Null values get rank 0, which leaves
    every register unchanged."""
    h = values.hash(SEED)
    return h, pl.when(values.is_not_null()).then(rank(h, p)).otherwise(0)


def rank(h: pl.Expr, p: int) -> pl.Expr:
    """Leading zeros + 1 of the bits of 64-bit hashes below the top ``p`` (UInt8, at most
    ``64 - p + 1``)."""
    # those bits shifted to the top, with a sentinel bit just below them: at most 64 - p
    # leading zeros, so the cap needs no clip (one pass fewer per row)
    rest = (h * (1 << p)) | (1 << (p - 1))
    return rest.bitwise_leading_zeros().cast(pl.UInt8) + 1


def registers_of(hashes: pl.Series, p: int) -> np.ndarray:
    """The register index (top ``p`` bits) of each UInt64 hash, as uint32: one shift in
    numpy, chunk by chunk into one buffer, then a view of the low halves (Polars has no
    shift; its division and cast cost two passes over the rows)."""
    top = np.empty(hashes.len(), dtype=np.uint64)
    for start, values in numpy_pieces(hashes):
        np.right_shift(values, np.uint64(64 - p), out=top[start : start + values.size])
    return _low_halves(top)


def _low_halves(values: np.ndarray) -> np.ndarray:
    """A uint32 view of the low halves of uint64 ``values`` (below ``2**32``: no copy)."""
    low: np.ndarray = values.view(np.uint32)[0 if sys.byteorder == "little" else 1 :: 2]
    return low


def build(
    data: pl.DataFrame, groups: pl.DataFrame, *, keys: list[str], hashes: str, rho: str, p: int
) -> np.ndarray:
    """Sketches (one row of ``2**p`` registers per row of ``groups``) of the values in
    ``data`` whose ``hashes``/``rho`` come from :func:`hash_rho`.

    ``groups`` holds the distinct ``keys`` of ``data`` (e.g. its group-by result). A group
    whose values are all null gets all-zero registers (estimate 0).
    """
    m = 1 << p
    reg_idx = registers_of(data[hashes], p)
    coder = GroupCoder.fit(groups, keys)  # the distinct keys have the data's ranges
    if coder is not None and coder.slots * m <= MAX_DENSE_BYTES:
        # one index array (uint32: the buffer is at most 2**28), computed in place
        cells = coder.cells(data, m, reg_idx)
        dense = _max_registers(cells, data[rho], coder.slots, m)
        registers: np.ndarray = dense[coder.ids(groups)]
        return registers
    rhos = data[rho].to_numpy()
    both = pl.concat([groups.select(keys), data.select(keys)], how="vertical_relaxed")
    gid = group_ids(both, keys)
    group_gid, data_gid = gid[: groups.height], gid[groups.height :]
    long = pl.DataFrame({"g": data_gid, "r": reg_idx, "v": rhos})
    long = long.lazy().group_by("g", "r").agg(pl.col("v").max()).collect()
    slot = np.full(int(gid.max()) + 1 if gid.size else 1, -1, dtype=np.int64)
    slot[group_gid] = np.arange(groups.height)
    registers = np.zeros((groups.height, m), dtype=np.uint8)
    registers[slot[long["g"].to_numpy()], long["r"].to_numpy()] = long["v"].to_numpy()
    return registers


def _max_registers(cells: np.ndarray, ranks: pl.Series, slots: int, m: int) -> np.ndarray:
    """``(slots, m)`` registers: the largest rank of each cell (``slot * m + register``)."""
    dense = np.zeros(slots * m, dtype=np.uint8)
    for start, rhos in numpy_pieces(ranks):  # no copy of a chunked column
        np.maximum.at(dense, cells[start : start + rhos.size], rhos)
    return dense.reshape(slots, m)


def build_slots(slots: Slots, hashes: pl.Series, ranks: pl.Series, p: int) -> np.ndarray:
    """Sketches (a row of ``2**p`` registers per occupied slot of ``slots``) of the rows'
    ``hashes``/``ranks`` from :func:`hash_rho`: the same registers as :func:`build` gives
    the groups, from the slot ids already computed (no second pass over the keys). Needs
    ``slots.size * 2**p <= MAX_DENSE_BYTES``."""
    m = 1 << p
    ids = slots.ids
    cells = np.multiply(ids, ids.dtype.type(m))
    for start, values in numpy_pieces(hashes):  # piece by piece: small temporaries
        part = cells[start : start + values.size]
        top = np.right_shift(values, np.uint64(64 - p))
        np.add(part, _low_halves(top), out=part, casting="unsafe")
    registers: np.ndarray = _max_registers(cells, ranks, slots.size, m)[slots.occupied]
    return registers


def merge(frame: pl.DataFrame, keys: list[str], sketch: str) -> pl.DataFrame:
    """One row per distinct ``keys``, with the register-wise maximum of its sketches."""
    gid = group_ids(frame, keys)
    if gid.size == 0:
        return frame.select([*keys, sketch])
    order = np.argsort(gid, kind="stable")
    sorted_gid = gid[order]
    starts = np.flatnonzero(np.r_[True, sorted_gid[1:] != sorted_gid[:-1]])
    lengths = np.diff(np.r_[starts, gid.size])
    regs = frame[sketch].to_numpy()
    out = regs[order[starts]]
    # Segments are short (chunks x windows per bucket): one vectorised pass per position.
    for j in range(1, int(lengths.max())):
        live = np.flatnonzero(lengths > j)
        out[live] = np.maximum(out[live], regs[order[starts[live] + j]])
    result = frame.select(keys)[order[starts]]
    return result.with_columns(pl.Series(sketch, out, dtype=frame.schema[sketch]))


@cache
def _pow() -> np.ndarray:
    """``2**-k`` for every possible register value ``k``."""
    return np.ldexp(1.0, -np.arange(70)).astype(np.float64)


def estimate(sketches: pl.Series) -> pl.Series:
    """HyperLogLog cardinality estimates (Int64) with the small-range correction."""
    regs = sketches.to_numpy()
    if regs.ndim != 2 or regs.shape[0] == 0:
        return pl.Series(sketches.name, [], dtype=pl.Int64)
    m = regs.shape[1]
    alpha = 0.7213 / (1 + 1.079 / m)
    raw = alpha * m * m / _harmonic_sums(regs)
    zeros = (regs == 0).sum(axis=1)
    small = (raw <= 2.5 * m) & (zeros > 0)
    with np.errstate(divide="ignore"):
        linear = m * np.log(m / np.maximum(zeros, 1))
    est = np.where(small, linear, raw)
    return pl.Series(sketches.name, np.rint(est).astype(np.int64))


_BLOCK = 8
"""Sketches per step of :func:`_harmonic_sums` (8 x 4096 float64: stays in cache)."""


def _harmonic_sums(regs: np.ndarray) -> np.ndarray:
    """``sum(2**-r)`` over each row of registers, the same floats as
    ``_pow()[regs].sum(axis=1)`` (each row is summed alone) at a fraction of the memory
    traffic: a few rows at a time, gathered into one reused buffer."""
    table = _pow()
    out = np.empty(regs.shape[0], dtype=np.float64)
    buf = np.empty((_BLOCK, regs.shape[1]), dtype=np.float64)
    for start in range(0, regs.shape[0], _BLOCK):
        block = regs[start : start + _BLOCK]
        part = buf[: block.shape[0]]
        np.take(table, block, out=part)
        part.sum(axis=1, out=out[start : start + block.shape[0]])
    return out
