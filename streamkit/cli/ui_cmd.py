"""``streamkit ui job.py``: run a job with the live web UI, and keep serving the page
after the job ended (until Ctrl-C), so its last figures can still be read."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from streamkit.cli._common import cli_errors, console
from streamkit.cli.job_options import AvailableNow, JobFile, Timeout, UntilIdle, check_stop_options
from streamkit.cli.run_cmd import run_job, serve_ui


@cli_errors
def ui_cmd(  # noqa: PLR0917 (typer reads the options from the signature)
    job_file: JobFile,
    port: Annotated[
        int, typer.Option("--port", "-p", min=0, max=65535, help="Port of the UI (0: free).")
    ] = 8080,
    host: Annotated[
        str, typer.Option("--host", help="Interface to serve on (0.0.0.0: every one).")
    ] = "127.0.0.1",
    available_now: AvailableNow = False,
    until_idle: UntilIdle = None,
    timeout: Timeout = None,
    keep_serving: Annotated[
        bool,
        typer.Option("--keep-serving/--exit", help="After the job ended, serve until Ctrl-C."),
    ] = True,
    force: Annotated[
        bool, typer.Option("--force", help="Take over from a dead copy of this job.")
    ] = False,
) -> None:
    """Run a job file (as `streamkit run`) with its live web UI at http://HOST:PORT/.

    One page per query: input vs processing rate, batch duration by phase, watermark vs
    newest event time, per-shard lag and owner (Kinesis: every worker in the lease
    table), dead letters with reasons and a sample, late rows, checkpoint and commit
    positions. The page polls the process once a second.
    """
    check_stop_options(available_now, until_idle)
    url = serve_ui(port, host)
    run_job(job_file, available_now, until_idle, timeout, force)
    if keep_serving:
        console.print(f"job ended; the UI still serves its figures at {url} (Ctrl-C stops)")
        while True:
            time.sleep(3600)
