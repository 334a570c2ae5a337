"""`make mutation`: mutmut over the engine's core modules; prints a score per module.

Usage: ``python tests/mutation/run.py [--module NAME ...] [--reuse] [--max-children N]``.

Each group of :mod:`tests.mutation.targets` is exported from a commit (``--rev``, default
``HEAD``: package, tests, pyproject.toml) into ``.cache/mutation/<group>/`` (or
``<group>-<module>`` for a run of some of its modules) with a generated
``setup.cfg``, and mutmut runs there, niced: its ``mutants/`` copy never touches the working
tree, so tests run by others in the same tree are unaffected, and their uncommitted edits do
not leak into the run. ``--overlay PATH`` copies a file of the working tree over the export
(a new test being written). By default each run starts from a fresh copy (no cached verdicts);
``--reuse`` keeps the copy and mutmut's cached results (for iterating on one module).

mutmut runs through :mod:`tests.mutation.mutmut_main` (fast tests first, a CPU budget per
test, pidfd wall timers, time per mutant). A mutant counts as killed when a test failed or
crashed on it, and as a timeout when a test ran out of its CPU budget (``BUDGET_FACTOR``
times its clean duration plus ``BUDGET_CONSTANT`` seconds) or the child its wall limit.
Timeouts are detected mutants (the convention of mutmut and Stryker: the suite would hang
or fail in CI) and are shown in their own column. Score = (killed + timeout) / tested.
Every survivor is printed with its diff; one whose diff is listed in
``tests/mutation/equivalent.md`` is marked accepted (reason given there), and counts as
not detected. Exit status 1 when a module scores under :data:`TARGET`, a survivor is
neither killed nor accepted, or a mutant was left untested.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.mutation.equivalents import Equivalent, changed_lines, load_equivalents
from tests.mutation.targets import GROUPS, NOT_MUTATED, Group, Module

REPO = Path(__file__).resolve().parents[2]
SCRATCH = REPO / ".cache" / "mutation"
PATCHED = Path(__file__).resolve().with_name("mutmut_main.py")
"""mutmut's command line with the changes of :mod:`tests.mutation.mutmut_main`."""
TARGET = 0.85
PRELOAD = ("polars", "pyarrow", "pytest", "hypothesis", "streamkit.testing.fixtures")
"""Imported once by mutmut's fork server (imports only: no polars query runs there)."""
SKIPPED = 34
"""mutmut's "skipped": mutmut_main did not run a mutant listed as equivalent."""
KILLED = {1, 3, -11, 37}
"""mutmut exit codes of a killed mutant: a test failed, pytest failed, crash, type check."""
UNCOLLECTED = {255}
"""The fork server's child exits -1 (255) when the test run raised, in practice because
pytest answered 4 ("found no collectors"): a module of the selected tests failed to import
under the mutant (a ``window()`` in a parametrize list raising, say). The mutant breaks the
suite, so it counts as killed, listed apart. mutmut's table calls 255 a timeout, but its
fork server stops a child only by a signal (SIGXCPU, SIGKILL: negative codes). A run where
every mutant scores 255 points at the selection itself (a test id that no longer exists)."""
TIMEOUT = {24, -24, 152, 36, -9}
"""mutmut exit codes of a mutant stopped by a CPU budget or its wall limit: detected, in
their own column. The budgets are CPU time (load does not exhaust them) and the wall
timers go through pidfds (a stale timer cannot stop a new child that reused a pid)."""


@dataclass
class Score:
    """Verdicts of one module's mutants."""

    module: str
    killed: list[str] = field(default_factory=list)
    survived: list[str] = field(default_factory=list)
    """Mutants no test killed, including those no test reaches ("no tests")."""
    uncollected: list[str] = field(default_factory=list)
    """Killed mutants whose tests did not collect (see :data:`UNCOLLECTED`), also in ``killed``."""
    timeout: list[str] = field(default_factory=list)
    """Mutants stopped by a time limit (see :data:`TIMEOUT`): detected, not in ``killed``."""
    unchecked: list[str] = field(default_factory=list)
    """Mutants not tested yet (an interrupted run): they count in no score."""
    accepted: dict[str, Equivalent] = field(default_factory=dict)
    not_run: list[str] = field(default_factory=list)
    """Survivors skipped as listed equivalents (see mutmut_main), also in ``survived``."""
    cpu: float = 0.0
    """CPU seconds of this run's children that tested the module's mutants."""
    wall: float = 0.0
    """Wall seconds of those children, summed (they run ``--max-children`` at a time)."""

    @property
    def total(self) -> int:
        """All mutants of the module that were tested."""
        return len(self.killed) + len(self.survived) + len(self.timeout)

    @property
    def ratio(self) -> float:
        """(Killed + timeout) / total (accepted equivalents count as not detected)."""
        detected = len(self.killed) + len(self.timeout)
        return detected / self.total if self.total else 1.0


def _sync(source: Path, target: Path) -> None:
    """Make ``target`` a copy of ``source``, keeping the times of unchanged files (so that
    mutmut, under ``--reuse``, keeps its verdicts on functions that did not change)."""
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.rglob("*")):
        copy = target / path.relative_to(source)
        if path.is_dir():
            copy.mkdir(parents=True, exist_ok=True)
        elif not copy.exists() or copy.read_bytes() != path.read_bytes():
            shutil.copyfile(path, copy)
    for path in sorted(target.rglob("*"), reverse=True):
        if not (source / path.relative_to(target)).exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def _existing(root: Path, paths: tuple[str, ...]) -> list[str]:
    return [p for p in paths if (root / p).exists()]


def _module_files(scratch: Path, module: Module) -> list[str]:
    """The module's source files (relative to the package root) present in the copy."""
    found = [p for pattern in module.files for p in sorted(scratch.glob(pattern))]
    return [str(p.relative_to(scratch)) for p in found if p.suffix == ".py"]


def export(rev: str, paths: list[str], target: Path) -> None:
    """Extract ``paths`` as they are at commit ``rev`` into ``target``."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev, "--", *paths],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")


def scratch_of(group: Group, modules: list[Module]) -> Path:
    """The copy of one run: ``<group>`` for the whole group, ``<group>-<module>...`` for a
    part, so that scored runs of different modules keep their verdicts side by side."""
    if len(modules) == len(group.modules):
        return SCRATCH / group.name
    return SCRATCH / "-".join([group.name, *(m.name for m in modules)])


def prepare(  # noqa: PLR0917
    group: Group,
    modules: list[Module],
    rev: str,
    overlay: list[str],
    reuse: bool,
    accepted: list[Equivalent],
) -> Path:
    """Export the group into its scratch folder and write mutmut's setup.cfg there,
    ``accepted.json`` (the equivalents that mutmut_main skips; none: run them all) and
    ``modules.json`` (each module's files and tests: a mutant runs only its module's)."""
    scratch = scratch_of(group, modules)
    if scratch.exists() and not reuse:
        shutil.rmtree(scratch)
    source = scratch.with_name(f"{scratch.name}.src")
    shutil.rmtree(source, ignore_errors=True)
    folders = [f"{group.root}/{f}".removeprefix("./") for f in (group.package, group.tests_dir)]
    export(rev, [*folders, "pyproject.toml"], source)
    for path in overlay:
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / path, source / path)
    scratch.mkdir(parents=True, exist_ok=True)
    for folder, exported in zip((group.package, group.tests_dir), folders, strict=True):
        _sync(source / exported, scratch / folder)
    shutil.copy2(source / "pyproject.toml", scratch / "pyproject.toml")
    shutil.rmtree(source)
    files = [f for m in modules for f in _module_files(scratch, m)]
    tests = _existing(scratch, tuple(dict.fromkeys(t for m in modules for t in m.tests)))
    (scratch / "setup.cfg").write_text(_setup_cfg(group, files, tests))
    (scratch / "preload.txt").write_text("".join(f"{m}\n" for m in (*PRELOAD, group.package)))
    listed = [{"function": eq.function, "lines": eq.lines} for eq in accepted]
    (scratch / "accepted.json").write_text(json.dumps(listed))
    own = [
        {"files": _module_files(scratch, m), "tests": _existing(scratch, m.tests)} for m in modules
    ]
    (scratch / "modules.json").write_text(json.dumps(own))
    return scratch


def _lines(values: list[str] | tuple[str, ...]) -> str:
    return "".join(f"\n    {v}" for v in values)


def _setup_cfg(group: Group, files: list[str], tests: list[str]) -> str:
    also = [group.tests_dir] if group.tests_dir != "tests" else []
    return (
        "[mutmut]\n"
        f"source_paths = {group.package}\n"
        f"only_mutate ={_lines(files)}\n"
        f"pytest_add_cli_args ={_lines(group.pytest_args)}\n"
        f"pytest_add_cli_args_test_selection ={_lines(tests)}\n"
        f"do_not_mutate_patterns ={_lines(NOT_MUTATED)}\n"
        # The fork server collects the selection once (imports every test module), so a
        # child only runs its tests. Polars' thread pool does not survive fork() (a child
        # forked after a parallel query hangs): collecting runs no query, and
        # test_collection_starts_no_polars_pool checks that it stays so.
        "process_isolation = forkserver\n"
        "forkserver_warmup = collect\n"
        "preload_modules_file = preload.txt\n"
        # Limit per mutant: (est + 10 s) * 3 * 2 CPU seconds and as many wall seconds
        # (mutmut_main), est = the clean time of the mutant's tests; each test has its
        # own, tighter CPU budget (mutmut_main.TestBudget).
        "timeout_constant = 10\n"
        "timeout_multiplier = 3\n" + (f"also_copy ={_lines(also)}\n" if also else "")
    )


def run_mutmut(scratch: Path, max_children: int, mutants: list[str]) -> int:
    """One niced mutmut run in ``scratch`` (only ``mutants``, globs, when given: those are
    tested again even if a verdict is cached); returns its exit status."""
    (scratch / "timings.jsonl").unlink(missing_ok=True)
    command = ["nice", "-n", "10", sys.executable, str(PATCHED), "run"]
    command += ["--max-children", str(max_children)]
    command += mutants
    return subprocess.run(command, cwd=scratch, check=False).returncode


def score(scratch: Path, module: Module) -> Score:
    """Read mutmut's verdicts of ``module`` from the meta files in ``scratch/mutants``."""
    result = Score(module.name)
    for path in _module_files(scratch, module):
        meta = scratch / "mutants" / f"{path}.meta"
        codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
        for name, code in sorted(codes.items()):
            if code is None:
                result.unchecked.append(name)
            elif code in TIMEOUT:
                result.timeout.append(name)
            elif code == SKIPPED:
                result.survived.append(name)
                result.not_run.append(name)
            elif code in UNCOLLECTED:
                result.killed.append(name)
                result.uncollected.append(name)
            else:
                (result.killed if code in KILLED else result.survived).append(name)
    timings = scratch / "timings.jsonl"
    mine = set(result.killed + result.survived + result.timeout)
    for line in timings.read_text().splitlines() if timings.exists() else []:
        record = json.loads(line)
        if record["mutant"] in mine:
            result.cpu += record["cpu"]
            result.wall += record["wall"]
    return result


def diffs_of(scratch: Path, mutants: list[str]) -> dict[str, str]:
    """mutmut's diffs of ``mutants`` (one process for all)."""
    if not mutants:
        return {}
    shown = subprocess.run(
        [sys.executable, str(PATCHED), "diffs"],
        cwd=scratch,
        input="\n".join(mutants),
        capture_output=True,
        text=True,
        check=True,
    )
    diffs: dict[str, str] = json.loads(shown.stdout)
    return diffs


def judge(scratch: Path, result: Score, equivalents: list[Equivalent]) -> dict[str, str]:
    """Match survivors against the accepted equivalents; returns each survivor's diff."""
    diffs = diffs_of(scratch, result.survived)
    for mutant in result.survived:
        function = mutant.partition("__mutmut_")[0]
        lines = changed_lines(diffs[mutant])
        for eq in equivalents:
            if eq.function == function and eq.lines == lines:
                result.accepted[mutant] = eq
    return diffs


def report(results: list[tuple[Score, dict[str, str]]], runs: list[str]) -> bool:
    """Print survivors, then scores and times; True when every module meets the target."""
    ok = True
    for result, diffs in results:
        for mutant in result.uncollected:
            print(f"\n--- {mutant} (killed: a test module did not import under it)")
        for mutant in result.timeout:
            print(f"\n--- {mutant} (timeout: detected, a CPU budget or the wall limit ran out)")
        for mutant in result.survived:
            eq = result.accepted.get(mutant)
            status = f"accepted as equivalent: {eq.reason}" if eq else "SURVIVED"
            if mutant in result.not_run:
                status = ("not run, " if eq else "SKIPPED, NOT LISTED: ") + status
            print(f"\n--- {mutant} ({status})\n{diffs[mutant].strip()}")
    head = ("module", "killed", "timeout", "accepted", "open", "total", "score")
    print(f"\n{head[0]:<14}" + "".join(f"{h:>9}" for h in head[1:]), end="")
    print(f"{'unchecked':>11}{'child cpu':>11}{'child wall':>12}")
    for result, _ in results:
        open_ = len(result.survived) - len(result.accepted)
        counts = (result.killed, result.timeout, result.accepted, range(open_))
        print(f"{result.module:<14}" + "".join(f"{len(c):>9}" for c in counts), end="")
        print(f"{result.total:>9}{result.ratio:>9.1%}{len(result.unchecked):>11}", end="")
        print(f"{result.cpu:>10.0f}s{result.wall:>11.0f}s")
        ok = ok and result.ratio >= TARGET and open_ == 0 and not result.unchecked
    print("\nscore = (killed + timeout) / total; accepted = survivors listed as equivalent")
    print("(not run: skipped by mutmut_main unless --run-accepted; they count as undetected);")
    print("open = survivors neither killed nor accepted; child cpu/wall = the forked test runs")
    print("of the module's mutants (summed over --max-children concurrent children).")
    for line in runs:
        print(line)
    print(f"target: >= {TARGET:.0%} detected per module, every survivor accepted")
    return ok


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    """Run the selected modules (all by default); see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", action="append", default=[], help="module name (repeat)")
    parser.add_argument("--reuse", action="store_true", help="keep the copy and verdicts")
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--rev", default="HEAD", help="commit to test (default HEAD)")
    parser.add_argument("--overlay", action="append", default=[], help="working-tree file")
    parser.add_argument("--mutant", action="append", default=[], help="mutant name or glob")
    parser.add_argument(
        "--run-accepted", action="store_true", help="test listed equivalents too (audit)"
    )
    parser.add_argument(
        "--report-only", action="store_true", help="score the last run's copy, run nothing"
    )
    args = parser.parse_args(argv)
    equivalents = load_equivalents(REPO / "tests" / "mutation" / "equivalent.md")
    results: list[tuple[Score, dict[str, str]]] = []
    runs: list[str] = []
    started, cpu_started = time.monotonic(), _cpu_of_children()
    for group in GROUPS:
        modules = [m for m in group.modules if not args.module or m.name in args.module]
        if not modules:
            continue
        scratch = scratch_of(group, modules)
        if not args.report_only:
            skip = [] if args.run_accepted else equivalents
            scratch = prepare(group, modules, args.rev, args.overlay, args.reuse, skip)
            wall, cpu = time.monotonic(), _cpu_of_children()
            status = run_mutmut(scratch, args.max_children, args.mutant)
            wall, cpu = time.monotonic() - wall, _cpu_of_children() - cpu
            runs.append(f"mutmut run {scratch.name}: {wall:.0f} s wall, {cpu:.0f} s CPU")
            if status != 0:
                print(f"mutmut failed in {scratch} (exit {status})")
                return status
        modules = [
            m for m in modules if (scratch / "mutants").exists() and _module_files(scratch, m)
        ]
        for module in modules:
            result = score(scratch, module)
            results.append((result, judge(scratch, result, equivalents)))
    ok = report(results, runs)
    wall, cpu = time.monotonic() - started, _cpu_of_children() - cpu_started
    print(f"elapsed: {wall:.0f} s wall, {cpu:.0f} s CPU; load average {os.getloadavg()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
