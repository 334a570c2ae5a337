"""Correctness of benchmark results: an engine-independent numpy reference and checks.

The reference assigns windows by integer arithmetic on epoch microseconds (no
engine's time functions): a row at ``t`` is in the windows starting at
``floor(t / slide) * slide - k * slide`` for ``k = 0 .. size/slide - 1``, each
``[start, start + size)``. Counts are exact; sums use float64 (compared with a
relative tolerance); the distinct count is exact, so approximate distinct counts
are judged against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import ipc

if TYPE_CHECKING:
    from pathlib import Path

    from _engines import Workload

REL_TOL = 1e-9
APPROX_TARGET = 0.03  # per-group relative error the brief asks of approx distinct
APPROX_BIAS_LIMIT = 0.03  # |sum(approx)/sum(exact) - 1| beyond this is a bug, not noise
APPROX_GROUP_LIMIT = 0.5  # one group this far off is a bug in any sketch used here


def reference(table: pa.Table, workload: Workload) -> pa.Table:
    """Exact per-(window, action) results, sorted by (start, action)."""
    ts = table["event_time"].combine_chunks().cast(pa.int64()).to_numpy()
    encoded = pc.dictionary_encode(table["action"]).combine_chunks()
    codes = encoded.indices.to_numpy().astype(np.int64)
    n_actions = len(encoded.dictionary)
    _, users = np.unique(table["user_id"].to_numpy(), return_inverse=True)
    n_users = int(users.max()) + 1
    values = table["value"].to_numpy()
    k = workload.windows_per_row
    panes = np.concatenate([ts // workload.slide_us - j for j in range(k)])
    base = int(panes.min())
    key = (panes - base) * n_actions + np.tile(codes, k)
    n_keys = int(key.max()) + 1
    counts = np.bincount(key, minlength=n_keys)
    sums = np.bincount(key, weights=np.tile(values, k), minlength=n_keys)
    pairs = np.unique(key * n_users + np.tile(users, k))
    distinct = np.bincount(pairs // n_users, minlength=n_keys)
    present = np.flatnonzero(counts)
    starts = (present // n_actions + base) * workload.slide_us
    result = pa.table(
        {
            "start": pa.array(starts, pa.int64()),
            "end": pa.array(starts + workload.size_us, pa.int64()),
            "action": encoded.dictionary.take(pa.array(present % n_actions)).cast(pa.string()),
            "n": pa.array(counts[present], pa.int64()),
            "sum": pa.array(sums[present], pa.float64()),
            "avg": pa.array(sums[present] / counts[present], pa.float64()),
            "distinct": pa.array(distinct[present], pa.int64()),
        }
    )
    return result.sort_by([("start", "ascending"), ("action", "ascending")])


def cached_reference(path: Path, workload: Workload, table: pa.Table | None = None) -> pa.Table:
    """``reference`` for a Parquet file, cached next to it (Arrow IPC)."""
    cache = path.with_name(f"{path.stem}.ref_{workload.name}.arrow")
    if cache.exists():
        return read_ipc(cache)
    ref = reference(table if table is not None else pq.read_table(path), workload)
    tmp = cache.with_suffix(".tmp")
    write_ipc(ref, tmp)
    tmp.replace(cache)
    return ref


def brute_force_windows(ts_us: int, workload: Workload) -> list[tuple[int, int]]:
    """Windows containing ``ts_us`` by scanning all aligned starts (test oracle)."""
    first = (ts_us - workload.size_us) // workload.slide_us * workload.slide_us
    starts = range(first, ts_us + 1, workload.slide_us)
    return [(s, s + workload.size_us) for s in starts if s <= ts_us < s + workload.size_us]


def self_check(table: pa.Table, workload: Workload) -> None:
    """Recompute ``reference`` on ``table`` with a per-row Python loop; raise on mismatch."""
    groups: dict[tuple[int, int, str], list[tuple[int, float]]] = {}
    columns = zip(
        table["event_time"].cast(pa.int64()).to_pylist(),
        table["action"].to_pylist(),
        table["user_id"].to_pylist(),
        table["value"].to_pylist(),
        strict=True,
    )
    for ts, action, user, value in columns:
        for start, end in brute_force_windows(ts, workload):
            groups.setdefault((start, end, action), []).append((user, value))
    ref = reference(table, workload).to_pylist()
    expected = sorted(groups.items())
    if len(ref) != len(expected):
        raise AssertionError(f"reference has {len(ref)} groups, brute force {len(expected)}")
    for got, ((start, end, action), rows) in zip(ref, expected, strict=True):
        total = sum(v for _, v in rows)
        want = (start, end, action, len(rows), len({u for u, _ in rows}))
        have = (got["start"], got["end"], got["action"], got["n"], got["distinct"])
        if have != want or not np.isclose(got["sum"], total, rtol=REL_TOL):
            raise AssertionError(f"reference {got} != brute force {want}, sum {total}")


def normalise(result: pa.Table) -> pa.Table:
    """An engine's output (positional: window, action, n, sum, avg, approx) in reference form."""
    if result.num_columns != 6:
        raise ValueError(f"expected 6 columns, got {result.column_names}")
    window = result.column(0).combine_chunks()
    micros = [
        window.field(name).cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        for name in ("start", "end")
    ]
    table = pa.table(
        {
            "start": micros[0],
            "end": micros[1],
            "action": result.column(1).cast(pa.string()),
            "n": result.column(2).cast(pa.int64()),
            "sum": result.column(3).cast(pa.float64()),
            "avg": result.column(4).cast(pa.float64()),
            "approx": result.column(5).cast(pa.int64()),
        }
    )
    return table.sort_by([("start", "ascending"), ("action", "ascending")])


@dataclass(frozen=True)
class Check:
    """Verdict on one result. ``problems`` non-empty means the result is wrong."""

    problems: tuple[str, ...]
    approx_bias: float  # sum(approx) / sum(exact) - 1
    approx_median_err: float  # median over groups of |approx / exact - 1|
    approx_p95_err: float
    approx_max_err: float
    approx_within_target: float  # share of groups within APPROX_TARGET

    @property
    def ok(self) -> bool:
        return not self.problems


def check(result: pa.Table, ref: pa.Table) -> Check:
    """Compare a normalised result with the reference (see module docstring)."""
    got = normalise(result)
    if got.num_rows != ref.num_rows:
        nan = float("nan")
        return Check((f"{got.num_rows} groups, expected {ref.num_rows}",), nan, nan, nan, nan, nan)
    problems = [
        f"column {name}: {_count_diff(got[name], ref[name])} groups differ"
        for name in ("start", "end", "action", "n")
        if not got[name].equals(ref[name])
    ]
    for name in ("sum", "avg"):
        close = np.isclose(got[name].to_numpy(), ref[name].to_numpy(), rtol=REL_TOL, atol=1e-9)
        if not close.all():
            problems.append(f"column {name}: {int((~close).sum())} groups beyond rtol {REL_TOL}")
    approx = got["approx"].to_numpy().astype(np.float64)
    exact = ref["distinct"].to_numpy().astype(np.float64)
    err = np.abs(approx / exact - 1)
    bias = float(approx.sum() / exact.sum() - 1)
    if abs(bias) > APPROX_BIAS_LIMIT:
        problems.append(f"approx distinct biased by {bias:+.1%} overall")
    if err.max() > APPROX_GROUP_LIMIT:
        problems.append(f"approx distinct off by {err.max():.0%} in some group")
    return Check(
        tuple(problems),
        bias,
        float(np.median(err)),
        float(np.quantile(err, 0.95)),
        float(err.max()),
        float((err <= APPROX_TARGET).mean()),
    )


def _count_diff(a: pa.ChunkedArray, b: pa.ChunkedArray) -> int:
    return int(pc.sum(pc.invert(pc.equal(a, b))).as_py() or 0)


def write_ipc(table: pa.Table, path: Path) -> None:
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def read_ipc(path: Path) -> pa.Table:
    with pa.OSFile(str(path), "rb") as source:
        return ipc.open_file(source).read_all()
