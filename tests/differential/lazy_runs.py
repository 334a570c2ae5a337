"""Spark results computed when a test first asks for them, a few at a time.

A module fixture that runs every case's Spark query in its setup puts all of them inside
the first test's time limit (pytest-timeout covers setup); on a loaded CI machine twenty
queries do not fit in it, and every test of the module then errors. Here the first test to
ask for a case runs the chunk of ``size`` cases holding it (concurrently, sharing the
machine's idle time between micro-batches), so a test's setup and call carry at most one
chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

V = TypeVar("V")


class LazyRuns(Mapping[str, V]):
    """``names`` -> results of ``run_chunk(chunk)``, one chunk of ``size`` names at a time."""

    def __init__(
        self, names: list[str], run_chunk: Callable[[list[str]], dict[str, V]], size: int
    ) -> None:
        self._names, self._run, self._size = list(names), run_chunk, max(1, size)
        self._done: dict[str, V] = {}

    def __getitem__(self, name: str) -> V:
        if name not in self._done:
            start = self._names.index(name) // self._size * self._size  # KeyError: ValueError
            todo = [n for n in self._names[start : start + self._size] if n not in self._done]
            self._done |= self._run(todo)
        return self._done[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)
