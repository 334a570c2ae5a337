"""``streamkit run job.py``: run a user's streaming job with progress output.

The job file convention: it defines ``job()``, taking no arguments and returning either

- a ``DataStreamWriter`` that is ready to start (``df.write_stream.output_mode(...)
  .checkpoint(...).parquet(...)``, not yet ``.start()``-ed): the CLI applies
  ``--available-now`` (or keeps the job's trigger) and starts it; or
- an already started ``StreamingQuery``.

The job runs until it stops by itself (``--available-now``), until the input has been idle
for ``--until-idle`` seconds after catching up, until ``--timeout``, or until Ctrl-C; then
the query is stopped after its batch in flight commits (leases released).
"""

from __future__ import annotations

import importlib.util
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from streamkit.cli._common import CliError, cli_errors, console, user_syntax_error
from streamkit.streaming.api import DataStreamWriter
from streamkit.streaming.query import StreamingQuery

if TYPE_CHECKING:
    from streamkit.streaming.progress import QueryProgress

CONVENTION = (
    "define `def job():` in the file, returning df.write_stream...<sink>(...) (not started) "
    "or a started StreamingQuery"
)


def load_job(path: Path) -> StreamingQuery | DataStreamWriter:
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
    out = fn()
    if not isinstance(out, StreamingQuery | DataStreamWriter):
        raise CliError(f"job() returned {type(out).__name__}", CONVENTION)
    return out


def start(
    job: StreamingQuery | DataStreamWriter, available_now: bool, force: bool = False
) -> StreamingQuery:
    """Start the job (with the ``available_now`` trigger, and ``force``, if asked)."""
    if isinstance(job, StreamingQuery):
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
    query: StreamingQuery, until_idle: float | None, timeout: float | None
) -> tuple[int, int]:
    """Print progress until the query ends, goes idle, or times out; returns (batches, rows).

    A stall (partitions backing off through an outage) is printed when it starts and when
    its partitions change, and "resumed" once a batch runs again."""
    started = time.monotonic()
    seen, rows, last_rows_at = -1, 0, time.monotonic()
    caught_up = until_idle is None
    stall: frozenset[str] = frozenset()

    def report() -> None:
        nonlocal seen, rows, last_rows_at, stall
        for p in query.recent_progress:
            if p.batch_id > seen:
                seen, rows, last_rows_at = p.batch_id, rows + p.num_input_rows, time.monotonic()
                console.print(progress_line(p), soft_wrap=True)
        last = query.last_progress
        line = stall_line(last) if last is not None else None
        now: frozenset[str] = frozenset()
        if line is not None and last is not None:
            now = frozenset(x.partition for x in last.partitions if x.state != "reading")
        if now and now != stall:
            console.print(line, soft_wrap=True)
        elif stall and not now:
            console.print("resumed: every partition is reading again", soft_wrap=True)
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


@cli_errors
def run_cmd(  # noqa: PLR0917 (typer reads the options from the signature)
    job_file: Annotated[Path, typer.Argument(help="Python file defining job().")],
    available_now: Annotated[
        bool,
        typer.Option("--available-now", help="Process what the input holds now, then stop."),
    ] = False,
    until_idle: Annotated[
        float | None,
        typer.Option(
            "--until-idle",
            min=0.1,
            help="Catch up, then stop once no input arrived for this many seconds.",
        ),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", min=0.1, help="Stop after this many seconds.")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Take the checkpoint folder (and Kinesis app) over from a copy of this "
            "job that is dead, without waiting for its owner lease to expire.",
        ),
    ] = False,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Then draw the windowed counts per key as a PNG here."),
    ] = None,
    ui_port: Annotated[
        int | None,
        typer.Option(
            "--ui-port", min=0, max=65535,
            help="Serve the live web UI on this port (0: a free one) while the job runs.",
        ),
    ] = None,
    ui_host: Annotated[
        str, typer.Option("--ui-host", help="Interface of the UI (0.0.0.0: every one).")
    ] = "127.0.0.1",
) -> None:
    """Run a streaming job file with progress output.

    Convention: the file defines `def job():` (no arguments) returning either a writer
    ready to start, e.g. `return counts.write_stream.output_mode("update")
    .checkpoint("ck/").parquet("out/")` (no .start()), or a started StreamingQuery.
    --available-now needs the writer form. Without --available-now, --until-idle or
    --timeout the job runs until Ctrl-C; the query always stops after its in-flight
    batch commits, releasing its leases.
    """
    if available_now and until_idle is not None:
        raise CliError("choose one of --available-now and --until-idle", "see --help", 2)
    if plot is not None:
        from streamkit._deps import require

        require("matplotlib", "plot")  # fail before the query runs, not after
    if ui_port is not None:
        serve_ui(ui_port, ui_host)
    query = run_job(job_file, available_now, until_idle, timeout, force)
    if plot is not None:
        from streamkit.cli.plot import plot_window_counts, query_result

        console.print(f"plot: {plot_window_counts(query_result(query), plot)}", soft_wrap=True)


def serve_ui(port: int, host: str) -> str:
    """Serve the web UI (refused at start, with the fix, when aiohttp or the port is
    missing); returns its URL, printed."""
    import streamkit as sk

    try:
        url = sk.ui.serve(port, host).url
    except OSError as exc:
        raise CliError(f"cannot serve the UI on {host}:{port}: {exc.strerror or exc}",
                       "choose another --ui-port (0 picks a free one)") from exc  # fmt: skip
    console.print(f"web UI: {url}", soft_wrap=True)
    return url


def run_job(
    job_file: Path, available_now: bool, until_idle: float | None, timeout: float | None,
    force: bool,
) -> StreamingQuery:  # fmt: skip
    """Start the job, print its progress until it ends (see :func:`follow`), stop it."""
    query = start(load_job(job_file), available_now, force)
    console.print(f"running {query.name} from {job_file}", soft_wrap=True)
    try:
        batches, rows = follow(query, until_idle, timeout)
    finally:
        query.stop()
    query.await_termination(5)  # re-raises the query's error (exit 1)
    console.print(f"stopped {query.name}: {batches} batch(es), {rows} input row(s)")
    return query
