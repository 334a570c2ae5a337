"""``streamkit run job.py``: run a user's streaming job with progress output.

The job file convention and the shared machinery (load, start, follow, stop) live in
:mod:`streamkit.cli.job_runner`; ``streamkit worker`` uses the same. The job runs until it
stops by itself (``--available-now``), until the input has been idle for ``--until-idle``
seconds after catching up, until ``--timeout``, or until Ctrl-C / SIGTERM; then the query
is stopped after its batch in flight commits (leases released). ``--workers N`` starts a
local fleet of N ``streamkit worker`` processes instead (:mod:`streamkit.cli.local_fleet`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamkit.cli._common import EXIT_USAGE, CliError, cli_errors, console
from streamkit.cli.job_options import (
    AvailableNow,
    JobFile,
    Timeout,
    UiHost,
    UiPort,
    UntilIdle,
    check_stop_options,
)
from streamkit.cli.job_runner import (
    CONVENTION,
    QueryHandle,
    ReportsProgress,
    follow,
    load_job,
    progress_line,
    run_job,
    stall_line,
    start,
)

__all__ = [
    "CONVENTION",
    "QueryHandle",
    "ReportsProgress",
    "follow",
    "load_job",
    "progress_line",
    "run_cmd",
    "run_job",
    "serve_ui",
    "stall_line",
    "start",
]


@cli_errors
def run_cmd(  # noqa: PLR0917 (typer reads the options from the signature)
    job_file: JobFile,
    available_now: AvailableNow = False,
    until_idle: UntilIdle = None,
    timeout: Timeout = None,
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
    ui_port: UiPort = None,
    ui_host: UiHost = "127.0.0.1",
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            max=64,
            help="Start a local fleet: this many `streamkit worker` processes of the job "
            "(output prefixed [worker-k]; Ctrl-C stops them all).",
        ),
    ] = 1,
) -> None:
    """Run a streaming job file with progress output.

    Convention: the file defines `def job():` (no arguments) returning either a writer
    ready to start, e.g. `return counts.write_stream.output_mode("update")
    .checkpoint("ck/").parquet("out/")` (no .start()), or a started StreamingQuery.
    --available-now needs the writer form. Without --available-now, --until-idle or
    --timeout the job runs until Ctrl-C; the query always stops after its in-flight
    batch commits, releasing its leases (SIGTERM too: exit 143).

    --workers N (N > 1) runs the job as a local fleet: N `streamkit worker` processes,
    each with its own worker id, their output interleaved line by line; Ctrl-C or SIGTERM
    is passed to every worker; the exit code is the first failing worker's (0 if none).
    """
    check_stop_options(available_now, until_idle)
    if workers > 1:
        if plot is not None or ui_port is not None:
            raise CliError("--plot and --ui-port need a single process, not --workers",
                           "drop --workers, or drop --plot / --ui-port", EXIT_USAGE)  # fmt: skip
        from streamkit.cli.local_fleet import run_fleet, worker_options

        options = worker_options(available_now, until_idle, timeout, force)
        raise typer.Exit(run_fleet(job_file, workers, options))
    if plot is not None:
        from streamkit._deps import require

        require("matplotlib", "plot")  # fail before the query runs, not after
    if ui_port is not None:
        serve_ui(ui_port, ui_host)
    query = run_job(job_file, available_now, until_idle, timeout, force)
    if plot is not None:
        from streamkit.cli.plot import plot_window_counts, query_result
        from streamkit.streaming.query import StreamingQuery

        if not isinstance(query, StreamingQuery):
            raise CliError("--plot needs a single-process query", "drop --plot in fleet mode")
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
