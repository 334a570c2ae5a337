"""What ``streamkit run`` and ``streamkit worker`` share: load a job file, start it, print
its progress until it ends, stop it (leases released), and SIGTERM as a graceful stop.

The job file convention: it defines ``job()``, taking no arguments and returning either

- a ``DataStreamWriter`` that is ready to start (``df.write_stream.output_mode(...)
  .checkpoint(...).parquet(...)``, not yet ``.start()``-ed): the CLI applies
  ``--available-now`` (or keeps the job's trigger) and starts it; or
- an already started query (a ``StreamingQuery``, or in fleet mode the member handle that
  ``DataStreamWriter.start()`` returns: anything with :class:`QueryHandle`'s members).
"""

from __future__ import annotations

import importlib.util
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from streamkit.cli._common import CliError, Terminated, console, user_syntax_error
from streamkit.streaming.api import DataStreamWriter

if TYPE_CHECKING:
    from streamkit.streaming.progress import QueryProgress

CONVENTION = (
    "define `def job():` in the file, returning df.write_stream...<sink>(...) (not started) "
    "or a started StreamingQuery"
)


@runtime_checkable
class QueryHandle(Protocol):
    """What the CLI needs of a started query: ``StreamingQuery`` and the fleet member
    handle both have it."""

    @property
    def name(self) -> str: ...
    @property
    def is_active(self) -> bool: ...
    def stop(self) -> None: ...
    def await_termination(self, timeout: float | None = None) -> bool: ...


@runtime_checkable
class ReportsProgress(Protocol):
    """A handle that also reports its micro-batches (``StreamingQuery`` does); without
    it the CLI prints only the start and the end, and refuses ``--until-idle``."""

    @property
    def recent_progress(self) -> Sequence[QueryProgress]: ...
    @property
    def last_progress(self) -> QueryProgress | None: ...
    def process_all_available(self, timeout: float = 60.0) -> None: ...


def load_job(path: Path) -> QueryHandle | DataStreamWriter:
    """Import ``path`` and call its ``job()``; a syntax error in it is reported as the
    user's (file, line), without the "bug" hint."""
    if not path.is_file():
        raise CliError(f"no such job file: {path}", CONVENTION)
    spec = importlib.util.spec_from_file_location(f"streamkit_job_{uuid.uuid4().hex}", path)
    if spec is None or spec.loader is None:
        raise CliError(f"cannot import {path} as Python", "the job file must be a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:  # the user's file (or one it imports), not streamkit
        raise user_syntax_error(exc) from None
    fn = getattr(module, "job", None)
    if not callable(fn):
        raise CliError(f"{path} has no job() function", CONVENTION)
    out: Any = fn()
    if not isinstance(out, DataStreamWriter | QueryHandle):
        raise CliError(f"job() returned {type(out).__name__}", CONVENTION)
    return out


def start(
    job: QueryHandle | DataStreamWriter, available_now: bool, force: bool = False
) -> QueryHandle:
    """Start the job (with the ``available_now`` trigger, and ``force``, if asked)."""
    if not isinstance(job, DataStreamWriter):
        if available_now or force:
            job.stop()
            flag = "--available-now" if available_now else "--force"
            raise CliError(
                f"{flag} needs job() to return the writer, not a started query",
                "return df.write_stream...parquet(...) without .start()",
            )
        return job
    if available_now:
        job.trigger(available_now=True)
    return job.start(force=force)


def progress_line(p: QueryProgress) -> str:
    """One line per micro-batch."""
    wm = p.watermark.strftime("%H:%M:%S") if p.watermark else "-"
    extra = f" late={p.late_rows}" if p.late_rows else ""
    extra += f" dead_letters={p.dead_letters}" if p.dead_letters else ""
    return (
        f"batch {p.batch_id}: {p.num_input_rows} rows ({p.input_rows_per_second:,.0f}/s) "
        f"-> {p.output_rows} out, state {p.state_rows}, watermark {wm}{extra}"
    )


def stall_line(p: QueryProgress) -> str | None:
    """``stalled: <partition> backing off (N errors in a row, last: ...)`` for partitions
    that cannot be read now (an outage the source retries for ever); None when none."""
    parts = [
        f"{x.partition} {x.state} ({x.consecutive_errors} error(s) in a row, last: {x.last_error})"
        for x in p.partitions
        if x.state != "reading"
    ]
    return "stalled, retrying: " + "; ".join(parts) if parts else None


def follow(
    query: QueryHandle, until_idle: float | None, timeout: float | None, prefix: str = ""
) -> tuple[int, int] | None:
    """Print progress (each line after ``prefix``) until the query ends, goes idle, or
    times out; returns (batches, rows).

    A stall (partitions backing off through an outage) is printed when it starts and when
    its partitions change, and "resumed" once a batch runs again. A handle that reports no
    progress is only watched until it ends or times out (None is returned)."""
    if not isinstance(query, ReportsProgress):
        _wait(query, timeout)
        return None
    started = time.monotonic()
    seen, rows, last_rows_at = -1, 0, time.monotonic()
    caught_up = until_idle is None
    stall: frozenset[str] = frozenset()

    def say(text: str) -> None:
        console.print(prefix + text, soft_wrap=True, markup=False)

    def report() -> None:
        nonlocal seen, rows, last_rows_at, stall
        for p in query.recent_progress:
            if p.batch_id > seen:
                seen, rows, last_rows_at = p.batch_id, rows + p.num_input_rows, time.monotonic()
                say(progress_line(p))
        last = query.last_progress
        line = stall_line(last) if last is not None else None
        now: frozenset[str] = frozenset()
        if line is not None and last is not None:
            now = frozenset(x.partition for x in last.partitions if x.state != "reading")
        if now and now != stall and line is not None:
            say(line)
        elif stall and not now:
            say("resumed: every partition is reading again")
        stall = now

    while query.is_active:
        report()
        if timeout is not None and time.monotonic() - started >= timeout:
            break
        if not caught_up:
            left = None if timeout is None else timeout - (time.monotonic() - started)
            try:
                query.process_all_available(timeout=600 if left is None else max(left, 0.1))
            except TimeoutError:
                continue  # --timeout reached while catching up: the check above stops
            caught_up, last_rows_at = True, max(last_rows_at, time.monotonic())
            continue
        if until_idle is not None and time.monotonic() - last_rows_at >= until_idle:
            break
        time.sleep(0.2)
    report()  # batches of a query that ended between two looks
    return seen + 1, rows


def _wait(query: QueryHandle, timeout: float | None) -> None:
    started = time.monotonic()
    while query.is_active and (timeout is None or time.monotonic() - started < timeout):
        time.sleep(0.2)


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def _claim_signals() -> None:
    """Ctrl-C raises KeyboardInterrupt (exit 130) and SIGTERM :class:`Terminated` (exit
    143) in the main thread, whatever handlers the job or its handle installed; either way
    the caller's ``finally`` stops the query gracefully."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_terminated)


@contextmanager
def cli_signals() -> Iterator[Callable[[], None]]:
    """While inside, the CLI owns SIGINT and SIGTERM (see :func:`_claim_signals`); yields
    the function that claims them again (after ``start()``: a handle may install its own).
    Outside the main thread (the CLI driven from a test thread) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    _claim_signals()
    try:
        yield _claim_signals
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run_job(
    job_file: Path, available_now: bool, until_idle: float | None, timeout: float | None,
    force: bool, *, prefix: str = "",
) -> QueryHandle:  # fmt: skip
    """Start the job, print its progress until it ends (see :func:`follow`), stop it.
    Ctrl-C and SIGTERM stop it gracefully too (exit 130 / 143, see :func:`cli_signals`)."""

    def say(text: str) -> None:
        console.print(prefix + text, soft_wrap=True, markup=False)

    with cli_signals() as claim:
        query = start(load_job(job_file), available_now, force)
        claim()
        try:
            if until_idle is not None and not isinstance(query, ReportsProgress):
                raise CliError(f"--until-idle needs a query that reports its batches; "
                               f"{type(query).__name__} does not",
                               "use --timeout, or stop it with Ctrl-C / SIGTERM")  # fmt: skip
            say(f"running {query.name} from {job_file}")
            counted = follow(query, until_idle, timeout, prefix)
        finally:
            query.stop()
        query.await_termination(5)  # re-raises the query's error (exit 1)
    if counted is None:
        say(f"stopped {query.name}")
    else:
        say(f"stopped {query.name}: {counted[0]} batch(es), {counted[1]} input row(s)")
    return query
