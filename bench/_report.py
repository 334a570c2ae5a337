"""Summaries and the markdown report of a benchmark run."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

from _engines import BASELINES

if TYPE_CHECKING:
    from _measure import Sample
    from _verify import Check

MB = 1_000_000
RATIO_TARGET = 1.5
MEMORY_TARGET = 3.0


@dataclass(frozen=True)
class DataInfo:
    """One generated input: its size on disk and as an in-memory Arrow table."""

    rows: int
    path: str
    parquet_bytes: int
    arrow_bytes: int


@dataclass(frozen=True)
class Run:
    """One repetition of one engine on one (workload, size)."""

    workload: str
    rows: int
    engine: str
    repetition: int
    sample: Sample
    check: Check | None
    loadavg_1m: float  # machine load just before the run (the machine is shared)


@dataclass(frozen=True)
class Cell:
    """All repetitions of one engine on one (workload, size)."""

    workload: str
    rows: int
    engine: str
    runs: tuple[Run, ...]

    @property
    def walls(self) -> list[float]:
        return [r.sample.wall_s for r in self.runs if r.sample.error is None]

    @property
    def median_cpu_s(self) -> float:
        cpu = [r.sample.cpu_s for r in self.runs if r.sample.error is None]
        return statistics.median(cpu) if cpu else float("nan")

    @property
    def median_s(self) -> float:
        return statistics.median(self.walls) if self.walls else float("nan")

    @property
    def min_s(self) -> float:
        return min(self.walls) if self.walls else float("nan")

    @property
    def peak_rss_bytes(self) -> int:
        return max((r.sample.peak_rss_bytes for r in self.runs), default=0)

    @property
    def failures(self) -> list[str]:
        """Errors and wrong results, one line each; empty when every run was right."""
        out = [f"rep {r.repetition}: {r.sample.error}" for r in self.runs if r.sample.error]
        out += [
            f"rep {r.repetition}: {problem}"
            for r in self.runs
            if r.check is not None
            for problem in r.check.problems
        ]
        return out

    @property
    def first_check(self) -> Check | None:
        return next((r.check for r in self.runs if r.check is not None), None)


def cells(runs: list[Run]) -> list[Cell]:
    """Group runs by (workload, rows, engine), keeping first-seen order."""
    grouped: dict[tuple[str, int, str], list[Run]] = {}
    for run in runs:
        grouped.setdefault((run.workload, run.rows, run.engine), []).append(run)
    return [Cell(w, n, e, tuple(rs)) for (w, n, e), rs in grouped.items()]


def best_baseline(group: list[Cell]) -> Cell | None:
    """The faster (by median) of the correct DuckDB and Polars cells of one (workload, size)."""
    usable = [c for c in group if c.engine in BASELINES and c.walls and not c.failures]
    return min(usable, key=lambda c: c.median_s, default=None)


def summary_records(all_cells: list[Cell], data: dict[int, DataInfo]) -> list[dict[str, object]]:
    """One JSON-ready record per (workload, size, engine)."""
    records: list[dict[str, object]] = []
    for cell in all_cells:
        group = [c for c in all_cells if (c.workload, c.rows) == (cell.workload, cell.rows)]
        best = best_baseline(group)
        record: dict[str, object] = {
            "workload": cell.workload,
            "rows": cell.rows,
            "engine": cell.engine,
            "median_s": cell.median_s,
            "min_s": cell.min_s,
            "median_cpu_s": cell.median_cpu_s,
            "walls_s": cell.walls,
            "peak_rss_mb": cell.peak_rss_bytes / MB,
            "peak_over_arrow": cell.peak_rss_bytes / data[cell.rows].arrow_bytes,
            "best_baseline": best.engine if best else None,
            "ratio_to_best_baseline": cell.median_s / best.median_s if best else None,
            "failures": cell.failures,
        }
        records.append(record)
    return records


def _rows(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n:,}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def results_table(all_cells: list[Cell], data: dict[int, DataInfo]) -> list[str]:
    rows = []
    for cell in all_cells:
        group = [c for c in all_cells if (c.workload, c.rows) == (cell.workload, cell.rows)]
        best = best_baseline(group)
        ratio = cell.median_s / best.median_s if best else float("nan")
        peak = cell.peak_rss_bytes
        rows.append(
            [
                cell.workload, _rows(cell.rows), cell.engine,
                f"{cell.median_s:.3f}", f"{cell.min_s:.3f}", f"{cell.median_cpu_s:.3f}",
                f"{peak / MB:,.0f}",
                f"{peak / data[cell.rows].arrow_bytes:.2f}", f"{ratio:.2f}",
                "ok" if not cell.failures else "**MISMATCH/ERROR**",
            ]
        )  # fmt: skip
    header = ["workload", "rows", "engine", "median s", "min s", "median CPU s", "peak RSS MB",
              "peak / Arrow", "x best baseline (median s)", "result"]  # fmt: skip
    return _table(header, rows)


def targets_table(all_cells: list[Cell], data: dict[int, DataInfo]) -> list[str]:
    rows = []
    for cell in (c for c in all_cells if c.engine == "streamkit"):
        group = [c for c in all_cells if (c.workload, c.rows) == (cell.workload, cell.rows)]
        best = best_baseline(group)
        if best is None:
            continue
        baselines = [c for c in group if c.engine in BASELINES and c.walls and not c.failures]
        ratio = cell.median_s / best.median_s
        by_min = cell.min_s / min(c.min_s for c in baselines)
        by_cpu = cell.median_cpu_s / min(c.median_cpu_s for c in baselines)
        memory = cell.peak_rss_bytes / data[cell.rows].arrow_bytes
        meets = ratio <= RATIO_TARGET and memory < MEMORY_TARGET and not cell.failures
        rows.append(
            [
                cell.workload, _rows(cell.rows), f"{best.engine} {best.median_s:.3f} s",
                f"{cell.median_s:.3f} s", f"{ratio:.2f}", f"{by_min:.2f}", f"{by_cpu:.2f}",
                f"{memory:.2f}", "meets" if meets else "**misses**",
            ]
        )  # fmt: skip
    header = ["workload", "rows", "best baseline (median)", "streamkit median",
              f"ratio (target <= {RATIO_TARGET})", "ratio of mins", "ratio of median CPU",
              f"peak / Arrow (target < {MEMORY_TARGET:g})", "verdict"]  # fmt: skip
    return _table(header, rows)


def approx_table(all_cells: list[Cell]) -> list[str]:
    rows = []
    for cell in all_cells:
        check = cell.first_check
        if check is None:
            continue
        rows.append(
            [
                cell.workload, _rows(cell.rows), cell.engine, f"{check.approx_bias:+.2%}",
                f"{check.approx_median_err:.2%}", f"{check.approx_p95_err:.2%}",
                f"{check.approx_max_err:.2%}", f"{check.approx_within_target:.0%}",
            ]
        )  # fmt: skip
    header = ["workload", "rows", "engine", "bias (sum)", "median |err|", "p95 |err|",
              "max |err|", "groups within 3%"]  # fmt: skip
    return _table(header, rows)


def markdown(
    runs: list[Run], data: dict[int, DataInfo], imports: dict[str, list[Sample]], meta: str
) -> str:
    """The whole report: results, streamkit vs targets, baselines, accuracy, failures."""
    all_cells = cells(runs)
    import_rows = [
        [engine, f"{statistics.median(s.peak_rss_bytes for s in samples) / MB:,.0f}"]
        for engine, samples in imports.items()
    ]
    data_rows = [
        [_rows(d.rows), f"{d.parquet_bytes / MB:,.0f}", f"{d.arrow_bytes / MB:,.0f}"]
        for d in data.values()
    ]
    lines = [meta, "", "### Wall time and peak memory (read + compute + to Arrow)", ""]
    lines += results_table(all_cells, data)
    if any(c.engine == "streamkit" for c in all_cells):
        lines += ["", "### streamkit against the targets", "", *targets_table(all_cells, data)]
    lines += ["", "### Interpreter + import baseline (peak RSS of a process that only imports)"]
    lines += ["", *_table(["engine", "RSS MB"], import_rows)]
    lines += ["", "### Input", "", *_table(["rows", "Parquet MB", "Arrow MB"], data_rows)]
    lines += ["", "### Approximate distinct users: error per group against the exact count", ""]
    lines += approx_table(all_cells)
    failures = [
        f"- {c.workload} {_rows(c.rows)} {c.engine}: {f}" for c in all_cells for f in c.failures
    ]
    if failures:
        lines += ["", "### MISMATCHES / ERRORS (these figures are not valid)", "", *failures]
    return "\n".join(lines) + "\n"
