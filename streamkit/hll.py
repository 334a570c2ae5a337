"""HyperLogLog sketches as dense register matrices, built and merged with numpy kernels.

A sketch for one group is ``m = 2**p`` uint8 registers; a frame column holds them as a
Polars ``Array(UInt8, m)``. Merging two sketches takes the register-wise maximum, so partial
sketches from micro-batches merge to exactly the sketch of all rows together.

Hashes use Polars' 64-bit hash with a fixed seed: sketches are stable within one Polars
version (a checkpoint written by another version merges, with a small loss of accuracy).
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from streamkit.groupids import group_ids

SEED = 0x5EED
MAX_DENSE_BYTES = 1 << 28
"""Largest dense register buffer built in one go (256 MiB); beyond it a sparse path runs."""


def precision_for(rsd: float) -> int:
    """The register exponent ``p`` giving at most ``rsd`` relative standard error."""
    if not 0.0 < rsd < 1.0:
        raise ValueError(f"rsd must be between 0 and 1, got {rsd}")
    return max(4, min(16, math.ceil(2 * math.log2(1.04 / rsd))))


def _reg_rho(values: pl.Expr, p: int) -> tuple[pl.Expr, pl.Expr]:
    h = values.hash(SEED)
    reg = (h // (1 << (64 - p))).cast(pl.Int64)
    rho = ((h * (1 << p)).bitwise_leading_zeros() + 1).clip(upper_bound=64 - p + 1)
    return reg.alias("__reg"), rho.cast(pl.UInt8).alias("__rho")


def build(frame: pl.DataFrame, keys: list[str], value: str, p: int) -> pl.DataFrame:
    """One row per distinct ``keys`` combination present, with its sketch of ``value``.

    Groups whose values are all null get an all-zero sketch (estimate 0).
    """
    m = 1 << p
    gid, slots, first = group_ids(frame, keys)
    reg, rho = _reg_rho(pl.col(value), p)
    rr = frame.select(reg, rho)
    regs_idx, rhos, gid_ok = rr["__reg"].to_numpy(), rr["__rho"].to_numpy(), gid
    if frame[value].null_count():
        ok = frame[value].is_not_null().to_numpy()
        regs_idx, rhos, gid_ok = regs_idx[ok], rhos[ok], gid[ok]
    if slots * m <= MAX_DENSE_BYTES:
        dense = np.zeros(slots * m, dtype=np.uint8)
        np.maximum.at(dense, gid_ok * m + regs_idx, rhos)
        present = np.flatnonzero(first >= 0)
        registers = dense.reshape(slots, m)[present]
    else:
        present = np.flatnonzero(first >= 0)
        compact = np.full(slots, -1, dtype=np.int64)
        compact[present] = np.arange(present.size)
        long = pl.DataFrame({"g": compact[gid_ok], "r": regs_idx, "v": rhos})
        long = long.group_by("g", "r").agg(pl.col("v").max())
        registers = np.zeros((present.size, m), dtype=np.uint8)
        registers[long["g"].to_numpy(), long["r"].to_numpy()] = long["v"].to_numpy()
    out = frame.select(keys)[first[present]]
    return out.with_columns(pl.Series(value, registers, dtype=pl.Array(pl.UInt8, m)))


def merge(frame: pl.DataFrame, keys: list[str], sketch: str) -> pl.DataFrame:
    """One row per distinct ``keys``, with the register-wise maximum of its sketches."""
    gid, _, _ = group_ids(frame, keys)
    order = np.argsort(gid, kind="stable")
    sorted_gid = gid[order]
    starts = np.flatnonzero(np.r_[True, sorted_gid[1:] != sorted_gid[:-1]]) if gid.size else gid
    regs = frame[sketch].to_numpy()
    out_regs = np.maximum.reduceat(regs[order], starts, axis=0) if gid.size else regs
    first = order[starts]
    out = frame.select(keys)[first]
    dtype = frame.schema[sketch]
    return out.with_columns(pl.Series(sketch, out_regs, dtype=dtype))


_POW = np.ldexp(1.0, -np.arange(70)).astype(np.float64)


def estimate(sketches: pl.Series) -> pl.Series:
    """HyperLogLog cardinality estimates (Int64) with the small-range correction."""
    regs = sketches.to_numpy()
    if regs.ndim != 2 or regs.shape[0] == 0:
        return pl.Series(sketches.name, [], dtype=pl.Int64)
    m = regs.shape[1]
    alpha = 0.7213 / (1 + 1.079 / m)
    raw = alpha * m * m / _POW[regs].sum(axis=1)
    zeros = (regs == 0).sum(axis=1)
    small = (raw <= 2.5 * m) & (zeros > 0)
    with np.errstate(divide="ignore"):
        linear = m * np.log(m / np.maximum(zeros, 1))
    est = np.where(small, linear, raw)
    return pl.Series(sketches.name, np.rint(est).astype(np.int64))
