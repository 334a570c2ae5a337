"""mutmut 3.8.1's command line with changes that make `make mutation` fit its time budget.

Run as ``python tests/mutation/mutmut_main.py run ...`` in a scratch folder (see
:mod:`tests.mutation.run`); everything else is mutmut's own code.

1. **Fast tests first.** mutmut passes a mutant's tests (those that executed the mutated
   function in its stats pass) to ``pytest -x`` in set order; here they are sorted by
   their clean duration, so a killed mutant stops at the quickest test that kills it.
2. **A CPU budget per test** (:class:`TestBudget`): before each test the soft
   ``RLIMIT_CPU`` of the child is lowered to its CPU time so far plus
   ``BUDGET_FACTOR * clean duration + BUDGET_CONSTANT`` seconds. A mutant that makes a
   test loop dies of SIGXCPU (a timeout in mutmut's table) after a few seconds of CPU
   instead of waiting out mutmut's limit for the whole selection. CPU time, not wall
   time: a busy machine slows a test's wall clock, not its CPU time.
3. **Wall timers by pidfd** (:func:`register_timeout`): mutmut's fork server signals a
   pid when its wall timer expires and never cancels the timer of a finished child, so a
   new child that reuses the pid can be stopped by an old timer. A pidfd refers to one
   process only. The wall limit is mutmut's CPU limit (not half of it): a hang without CPU
   use is still stopped, and load alone does not stop a child.
4. **Time per mutant** (:func:`_reap_children`): the fork server reaps children with
   ``wait4`` and appends each mutant's exit code, wall and CPU seconds to
   ``<scratch>/timings.jsonl``, from which the runner prints time per module.
5. **No second clean run after a full stats pass** (:func:`_run_stats_collection`): the
   stats pass runs the whole selection unmutated and stops mutmut when it fails, so the
   clean run that follows (the same tests again) is skipped in that case; after a partial
   stats pass (``--reuse``) it runs as usual.
6. **Accepted equivalents are not run** (:func:`_accepted`): a mutant whose function and
   changed lines match an entry of ``<scratch>/accepted.json`` (the runner's copy of
   ``equivalent.md``) exits with mutmut's "skipped" code without running a test; no test
   kills an equivalent mutant, and each would run its whole selection. It still counts as
   not detected. ``run.py --run-accepted`` runs them (to audit the list).

7. **A mutant runs its own module's tests only** (:func:`_submit`): mutmut hands a mutant
   every selected test that executed its function, and the selection is the union of the
   group's modules' lists (``targets.py``), so a state-store mutant also ran every
   aggregation and parity test that happens to call it. Here the tests are cut to the
   mutated file's module's list (``<scratch>/modules.json``, written by the runner), and
   mutmut's CPU limit is computed again from those tests' clean time. A mutant none of
   its module's tests reaches gets mutmut's "no tests" verdict (undetected).

``python tests/mutation/mutmut_main.py diffs`` prints the diffs of the mutants named on
stdin as JSON (one process for all, where ``mutmut show`` takes one per mutant).
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # run as a script: tests/mutation must not shadow anything

import mutmut.__main__ as mutmut_cli
from mutmut.__main__ import cli
from mutmut.configuration import config
from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.runners.harness import PytestRunner
from mutmut.state import state
from mutmut.workers import isolation
from mutmut.workers.isolation import ForkServerRunner, send_message

BUDGET_FACTOR = 3.0
"""CPU seconds allowed per second of a test's clean duration (its call phase, wall time,
from mutmut's stats pass): Polars may keep both cores busy, and the stats pass ran
the test warm."""
BUDGET_CONSTANT = 3.0
"""CPU seconds added to every test's budget: setup, teardown, and the lazy
initialisations (thread pools, DuckDB) that a fresh child pays in its first test."""
TIMINGS = os.path.abspath("timings.jsonl")
"""Started in the scratch folder: the log is ``<scratch>/timings.jsonl``."""
ACCEPTED = Path("accepted.json").resolve()
MODULES = Path("modules.json").resolve()
SKIPPED = 34
"""mutmut's exit code of a skipped mutant."""
_accepted_lines: list[dict[str, set[tuple[str, ...]]]] = []


def changed_lines(diff: str) -> tuple[str, ...]:
    """The removed and added lines of a unified diff, stripped (as in equivalents.py)."""
    return tuple(
        line[0] + line[1:].strip()
        for line in diff.splitlines()
        if line[:1] in {"-", "+"} and not line.startswith(("---", "+++"))
    )


def _accepted(mutant: str) -> bool:
    """Whether ``mutant`` is listed as equivalent in ``accepted.json``."""
    if not _accepted_lines:
        by_function: dict[str, set[tuple[str, ...]]] = {}
        entries = json.loads(ACCEPTED.read_text()) if ACCEPTED.exists() else []
        for entry in entries:
            by_function.setdefault(entry["function"], set()).add(tuple(entry["lines"]))
        _accepted_lines.append(by_function)
    listed = _accepted_lines[0].get(mutant.partition("__mutmut_")[0], set())
    return bool(listed) and changed_lines(get_diff_for_mutant(mutant)) in listed


def _duration(test: str) -> float:
    return float(state().duration_by_test.get(test, math.inf))


def _args_fast_first(self: PytestRunner, tests: Iterable[str]) -> list[str]:
    ordered = sorted(tests, key=lambda t: (_duration(t), t))
    args = ["-x", "-q", "-p", "no:randomly", "-p", "no:random-order"]
    return args + (ordered or list(self._pytest_add_cli_args_test_selection))


class TestBudget:
    """pytest plugin: the CPU budget of each test (see the module docstring)."""

    def __init__(self) -> None:
        self.limits = resource.getrlimit(resource.RLIMIT_CPU)
        """mutmut's limit for the whole mutant, which no test's budget exceeds."""

    def pytest_runtest_protocol(self, item: Any, nextitem: Any) -> None:
        soft, hard = self.limits
        duration = _duration(item.nodeid)
        if math.isinf(duration):
            resource.setrlimit(resource.RLIMIT_CPU, self.limits)
            return
        usage = resource.getrusage(resource.RUSAGE_SELF)
        spent = usage.ru_utime + usage.ru_stime
        limit = math.ceil(spent + BUDGET_FACTOR * duration + BUDGET_CONSTANT)
        if soft != resource.RLIM_INFINITY:
            limit = min(limit, soft)
        resource.setrlimit(resource.RLIMIT_CPU, (limit, hard))


def _run_tests(self: PytestRunner, *, mutant_name: str | None, tests: Iterable[str]) -> int:
    from mutmut.utils.file_utils import change_cwd

    if mutant_name and _accepted(mutant_name):
        return SKIPPED
    plugins = [TestBudget()] if mutant_name else []
    with change_cwd("mutants"):
        return int(self.execute_pytest(self._pytest_args_regular_run(tests), plugins=plugins))


_own_tests: list[dict[str, tuple[str, ...]]] = []
"""Once loaded from ``modules.json``: see :func:`tests_by_module`."""


def tests_by_module(modules: list[dict[str, list[str]]]) -> dict[str, tuple[str, ...]]:
    """Each mutated file's dotted module name -> its module's test paths, from the
    runner's ``modules.json`` (``[{"files": [...], "tests": [...]}, ...]``)."""
    by_dotted: dict[str, tuple[str, ...]] = {}
    for module in modules:
        for path in module["files"]:
            dotted = path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
            by_dotted[dotted] = tuple(module["tests"])
    return by_dotted


def own_tests(mutant: str, by_dotted: dict[str, tuple[str, ...]]) -> tuple[str, ...] | None:
    """The test paths (files or folders) of the module whose file ``mutant`` mutates (the
    longest dotted prefix of its name in ``by_dotted``); None when no module names that
    file (then every test mutmut chose runs)."""
    name = mutant.partition("__mutmut_")[0]
    while "." in name:
        name = name.rpartition(".")[0]
        if name in by_dotted:
            return by_dotted[name]
    return None


def in_paths(test: str, paths: tuple[str, ...]) -> bool:
    """Whether the pytest node id ``test`` lies in one of ``paths`` (files or folders)."""
    file = test.partition("::")[0]
    return any(file == p or file.startswith(p.rstrip("/") + "/") for p in paths)


def _submit(
    self: ForkServerRunner, mutant_name: str, tests: list[str], cpu_time_limit: int,
    estimated_time: float,
) -> None:  # fmt: skip
    if not _own_tests:
        listed = json.loads(MODULES.read_text()) if MODULES.exists() else []
        _own_tests.append(tests_by_module(listed))
    paths = own_tests(mutant_name, _own_tests[0])
    if paths is not None:
        tests = [t for t in tests if in_paths(t, paths)]
        estimated_time = sum(state().duration_by_test.get(t, 0.0) for t in tests)
        cfg = config()
        cpu_time_limit = math.ceil(
            (estimated_time + cfg.timeout_constant) * cfg.timeout_multiplier * 2
        )
    _submit_all(self, mutant_name, tests, cpu_time_limit, estimated_time)


_heap: list[tuple[float, int, int]] = []
_heap_lock = threading.Condition()
_timer_thread: list[threading.Thread] = []


def register_timeout(pid: int, timeout_s: float) -> None:
    """SIGXCPU to ``pid`` after ``2 * timeout_s`` seconds (mutmut passes half its CPU
    limit), unless that process has ended: the signal goes through a pidfd."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    with _heap_lock:
        if not _timer_thread:
            _timer_thread.append(threading.Thread(target=_timer, daemon=True))
            _timer_thread[0].start()
        heapq.heappush(_heap, (time.time() + 2 * timeout_s, fd, pid))
        _heap_lock.notify()


def _timer() -> None:
    with _heap_lock:
        while True:
            while not _heap:
                _heap_lock.wait()
            now = time.time()
            while _heap and _heap[0][0] <= now:
                _, fd, _pid = heapq.heappop(_heap)
                try:
                    signal.pidfd_send_signal(fd, signal.SIGXCPU)
                except ProcessLookupError:
                    pass
                finally:
                    os.close(fd)
            if _heap:
                _heap_lock.wait(timeout=max(0.0, _heap[0][0] - now))


def _reap_children(  # noqa: PLR0917 (mutmut's signature)
    self: ForkServerRunner,
    running: dict[int, Any],
    result_fd: int,
    forkserver_logger: logging.Logger,
    sigchld_pipe_r: int,
    block: bool,
    timeout: float | None = None,
) -> None:
    """mutmut's reaper, with ``wait4`` to log each child's CPU time."""
    if block and not self._wait_for_child_event(sigchld_pipe_r, timeout):
        return
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid not in running:
            continue
        child = running.pop(pid)
        exit_code = os.waitstatus_to_exitcode(status)
        record = {
            "mutant": child.mutant_name,
            "exit": exit_code,
            "wall": round(time.time() - child.start_time, 3),
            "cpu": round(usage.ru_utime + usage.ru_stime, 3),
        }
        with open(TIMINGS, "a") as log:
            log.write(json.dumps(record) + "\n")
        send_message(result_fd, (child.mutant_name, exit_code))


_full_stats: list[bool] = []
_stats_collection = mutmut_cli.run_stats_collection


def _run_stats_collection(runner: Any, tests: Iterable[str] | None = None) -> None:
    _stats_collection(runner, tests)
    if not tests:
        _full_stats.append(True)


def _run_clean_tests(self: ForkServerRunner, tests: Iterable[str]) -> int:
    if _full_stats:
        return 0
    return _clean_tests(self, tests)


_submit_all = ForkServerRunner.submit
ForkServerRunner.submit = _submit  # type: ignore[method-assign]
_clean_tests = ForkServerRunner.run_clean_tests
ForkServerRunner.run_clean_tests = _run_clean_tests  # type: ignore[method-assign]
setattr(mutmut_cli, "run_stats_collection", _run_stats_collection)  # noqa: B010
PytestRunner._pytest_args_regular_run = _args_fast_first  # type: ignore[method-assign]
PytestRunner.run_tests = _run_tests  # type: ignore[method-assign]
ForkServerRunner._reap_children = _reap_children  # type: ignore[method-assign]
setattr(isolation, "register_timeout", register_timeout)  # noqa: B010 (not exported)

if __name__ == "__main__":
    if sys.argv[1:] == ["diffs"]:
        names = sys.stdin.read().split()
        json.dump({name: get_diff_for_mutant(name) for name in names}, sys.stdout)
        sys.exit(0)
    sys.exit(cli())
