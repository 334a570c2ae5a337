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

A mutant counts as killed when a test failed, timed out or crashed on it. Every survivor
is printed with its diff; one whose diff is listed in ``tests/mutation/equivalent.md`` is
marked accepted (reason given there). Exit status 1 when a module scores under
:data:`TARGET` or a survivor is neither killed nor accepted.
"""

from __future__ import annotations

import argparse
import io
import json
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
MUTMUT = Path(sys.executable).parent / "mutmut"
TARGET = 0.85
PRELOAD = ("polars", "pyarrow", "pytest", "hypothesis", "streamkit.testing.fixtures")
"""Imported once by mutmut's fork server (imports only: no polars query runs there)."""
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
"""mutmut exit codes of a mutant stopped by its time limit. Not counted as killed: mutmut's
fork server never cancels the timer of a finished child, so on a busy machine a reused pid
can be stopped by a stale timer; such mutants are listed for a re-run (``--mutant``)."""


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
    """Mutants stopped by the time limit (see :data:`TIMEOUT`): in the total, not killed."""
    unchecked: list[str] = field(default_factory=list)
    """Mutants not tested yet (an interrupted run): they count in no score."""
    accepted: dict[str, Equivalent] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """All mutants of the module that were tested."""
        return len(self.killed) + len(self.survived) + len(self.timeout)

    @property
    def ratio(self) -> float:
        """Killed / total (accepted equivalents count as not killed)."""
        return len(self.killed) / self.total if self.total else 1.0


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


def prepare(group: Group, modules: list[Module], rev: str, overlay: list[str], reuse: bool) -> Path:
    """Export the group into its scratch folder and write mutmut's setup.cfg there."""
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
        # Polars' thread pool does not survive fork(): a child forked after a parallel
        # query hangs. The fork server imports libraries only, and runs no query.
        f"do_not_mutate_patterns ={_lines(NOT_MUTATED)}\n"
        "process_isolation = forkserver\n"
        "forkserver_warmup = import\n"
        "preload_modules_file = preload.txt\n"
        # Wall limit per mutant (est + 30 s) * 5: generous on two busy cores, so a
        # timeout means a hang, not load.
        "timeout_constant = 30\n"
        "timeout_multiplier = 5\n" + (f"also_copy ={_lines(also)}\n" if also else "")
    )


def run_mutmut(scratch: Path, max_children: int, mutants: list[str]) -> int:
    """One niced mutmut run in ``scratch`` (only ``mutants``, globs, when given: those are
    tested again even if a verdict is cached); returns its exit status."""
    command = ["nice", "-n", "10", str(MUTMUT), "run", "--max-children", str(max_children)]
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
            elif code in UNCOLLECTED:
                result.killed.append(name)
                result.uncollected.append(name)
            else:
                (result.killed if code in KILLED else result.survived).append(name)
    return result


def diff_of(scratch: Path, mutant: str) -> str:
    """mutmut's diff of one mutant."""
    shown = subprocess.run(
        [str(MUTMUT), "show", mutant], cwd=scratch, capture_output=True, text=True, check=False
    )
    return shown.stdout


def judge(scratch: Path, result: Score, equivalents: list[Equivalent]) -> dict[str, str]:
    """Match survivors against the accepted equivalents; returns each survivor's diff."""
    diffs: dict[str, str] = {}
    for mutant in result.survived:
        diffs[mutant] = diff_of(scratch, mutant)
        function = mutant.partition("__mutmut_")[0]
        lines = changed_lines(diffs[mutant])
        for eq in equivalents:
            if eq.function == function and eq.lines == lines:
                result.accepted[mutant] = eq
    return diffs


def report(results: list[tuple[Score, dict[str, str]]]) -> bool:
    """Print scores and survivors; True when every module meets the target."""
    ok = True
    print(
        f"\n{'module':<14}{'killed':>8}{'total':>8}{'score':>9}{'accepted':>10}{'open':>6}", end=""
    )
    print(f"{'timeout':>9}{'unchecked':>11}{'uncollected':>13}")
    for result, _ in results:
        open_ = len(result.survived) - len(result.accepted)
        print(
            f"{result.module:<14}{len(result.killed):>8}{result.total:>8}"
            f"{result.ratio:>8.1%}{len(result.accepted):>10}{open_:>6}"
            f"{len(result.timeout):>9}{len(result.unchecked):>11}{len(result.uncollected):>13}"
        )
        ok = (
            ok
            and result.ratio >= TARGET
            and open_ == 0
            and not (result.unchecked or result.timeout)
        )
    for result, diffs in results:
        for mutant in result.uncollected:
            print(f"\n--- {mutant} (killed: a test module did not import under it)")
        for mutant in result.timeout:
            print(f"\n--- {mutant} (TIMEOUT: not counted as killed; re-run with --mutant)")
        for mutant in result.survived:
            eq = result.accepted.get(mutant)
            status = f"accepted as equivalent: {eq.reason}" if eq else "SURVIVED"
            print(f"\n--- {mutant} ({status})\n{diffs[mutant].strip()}")
    print(f"\ntarget: >= {TARGET:.0%} killed per module, every survivor accepted")
    return ok


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
        "--report-only", action="store_true", help="score the last run's copy, run nothing"
    )
    args = parser.parse_args(argv)
    equivalents = load_equivalents(REPO / "tests" / "mutation" / "equivalent.md")
    results: list[tuple[Score, dict[str, str]]] = []
    started = time.monotonic()
    for group in GROUPS:
        modules = [m for m in group.modules if not args.module or m.name in args.module]
        if not modules:
            continue
        scratch = scratch_of(group, modules)
        if not args.report_only:
            scratch = prepare(group, modules, args.rev, args.overlay, args.reuse)
            status = run_mutmut(scratch, args.max_children, args.mutant)
            if status != 0:
                print(f"mutmut failed in {scratch} (exit {status})")
                return status
        modules = [
            m for m in modules if (scratch / "mutants").exists() and _module_files(scratch, m)
        ]
        for module in modules:
            result = score(scratch, module)
            results.append((result, judge(scratch, result, equivalents)))
    ok = report(results)
    print(f"elapsed: {time.monotonic() - started:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
