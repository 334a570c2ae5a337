"""CPU seconds and resident memory of a process tree, read from /proc (Linux only).

Used by the peer benchmarks, whose measured systems are several processes (a JVM and its
Python children). No psutil: the project's virtualenv does not carry it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class TreeUsage:
    """One reading of a tree: ``cpu_s`` is user + system of every live process in it, since
    each started (its threads included); ``rss_bytes`` their summed resident sets now."""

    pids: tuple[int, ...]
    cpu_s: float
    rss_bytes: int


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on


def descendants(root: int) -> list[int]:
    """``root`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def usage(root: int) -> TreeUsage:
    """CPU and RSS of ``root`` and its descendants, now."""
    pids, cpu, rss = [], 0.0, 0
    for pid in descendants(root):
        fields = _stat(pid)
        if fields is None:
            continue
        pids.append(pid)
        cpu += (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
        rss += int(fields[21]) * PAGE
    return TreeUsage(tuple(pids), cpu, rss)
