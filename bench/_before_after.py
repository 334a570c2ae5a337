"""The A/B of a ``before`` / ``after`` benchmark in one process: its options, the rounds
(both modes each round, the order alternating, after one unmeasured warm-up round over
the first two batches) and the report: per mode the median CPU seconds
(``time.process_time``, all threads) and wall seconds of a round and a count of the last
round, the ratio ``after / before`` (ratio of the medians, median of per-round ratios)
and the 1-minute load average before and after."""

from __future__ import annotations

import argparse
import os
import statistics
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

Batch = TypeVar("Batch")


def options() -> argparse.ArgumentParser:
    """The options every such benchmark takes: ``--rows``, ``--batches``, ``--repeat``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=7)
    return parser


def before_after(
    one_round: Callable[[str, list[Batch]], tuple[float, float, int]],
    data: list[Batch],
    repeat: int,
    counted: str,
) -> None:
    """Run ``repeat`` rounds of each mode over ``data`` and print the report; ``one_round``
    gives CPU seconds, wall seconds and the count printed as ``counted``."""
    modes = ("before", "after")
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    wall: dict[str, list[float]] = {m: [] for m in modes}
    count: dict[str, int] = {}
    load_before = os.getloadavg()[0]
    one_round("after", data[:2])  # warm-up (imports, compilation caches)
    for r in range(repeat):
        for mode in modes if r % 2 == 0 else modes[::-1]:
            c, w, n = one_round(mode, data)
            cpu[mode].append(c)
            wall[mode].append(w)
            count[mode] = n
    load_after = os.getloadavg()[0]
    for mode in modes:
        print(f"{mode:7s} CPU {statistics.median(cpu[mode]):.3f} s  "
              f"wall {statistics.median(wall[mode]):.3f} s  {counted} {count[mode]}")  # fmt: skip
    medians = statistics.median(cpu["after"]) / statistics.median(cpu["before"])
    paired = statistics.median(a / b for a, b in zip(cpu["after"], cpu["before"], strict=True))
    wall_ratio = statistics.median(wall["after"]) / statistics.median(wall["before"])
    print(f"after / before CPU: {medians:.3f} (ratio of medians), {paired:.3f} (per round); "
          f"wall {wall_ratio:.3f}")  # fmt: skip
    print(f"load average (1 min): {load_before:.1f} before, {load_after:.1f} after")
