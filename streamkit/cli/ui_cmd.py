"""``streamkit ui job.py``: run a job with the live web UI, and keep serving the page
after the job ended (until Ctrl-C), so its last figures can still be read.

``streamkit ui --app APP --checkpoint ROOT``: run no job; serve the fleet page of the
Kinesis fleet ``APP`` (every worker from its lease tables and the endpoints advertised
under ``ROOT``, each one's figures fetched from its own endpoint) until Ctrl-C."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from streamkit.cli._common import EXIT_USAGE, CliError, EndpointOpt, cli_errors, console
from streamkit.cli.job_options import AvailableNow, Timeout, UntilIdle, check_stop_options
from streamkit.cli.run_cmd import run_job, serve_ui


@cli_errors
def ui_cmd(  # noqa: PLR0917 (typer reads the options from the signature)
    job_file: Annotated[
        Path | None, typer.Argument(help="Python file defining job() (omit with --app).")
    ] = None,
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
    app: Annotated[
        str | None,
        typer.Option("--app", help="Run no job: serve the fleet page of this application."),
    ] = None,
    checkpoint: Annotated[
        str | None,
        typer.Option(
            "--checkpoint",
            help="With --app: the fleet's checkpoint root (a "
            "folder or s3://...), where the workers advertise their endpoints.",
        ),
    ] = None,
    endpoint: EndpointOpt = None,
) -> None:
    """Run a job file (as `streamkit run`) with its live web UI at http://HOST:PORT/.

    One page per query: input vs processing rate, batch duration by phase, watermark vs
    newest event time, per-shard lag and owner (Kinesis: every worker in the lease
    table), dead letters with reasons and a sample, late rows, checkpoint and commit
    positions. The page polls the process once a second.

    With --app APP --checkpoint ROOT (no job file) it runs nothing and serves the fleet
    page of APP at /fleet: every worker, its tasks, rates, lag and watermark, fetched
    from each worker's own endpoint (`streamkit worker --ui-port`).
    """
    if app is not None or job_file is None:
        if job_file is not None or app is None or checkpoint is None:
            raise CliError("pass a job file, or --app APP --checkpoint ROOT (not both)",
                           "streamkit ui job.py  |  streamkit ui --app APP --checkpoint ck/",
                           EXIT_USAGE)  # fmt: skip
        serve_fleet(app, checkpoint, endpoint, port, host)
        return
    check_stop_options(available_now, until_idle)
    url = serve_ui(port, host)
    run_job(job_file, available_now, until_idle, timeout, force)
    if keep_serving:
        console.print(f"job ended; the UI still serves its figures at {url} (Ctrl-C stops)")
        while True:
            time.sleep(3600)


def serve_fleet(app: str, root: str, endpoint: str | None, port: int, host: str) -> None:
    """Serve the fleet page of ``app`` (workers advertised under ``root``) until Ctrl-C."""
    from streamkit_kinesis.fleet.fleet_view import FleetPanel

    from streamkit.cli._common import endpoint_of
    from streamkit.streaming.checkpoint_store import open_checkpoint_store
    from streamkit.ui.fleet import set_fleet

    set_fleet(FleetPanel(endpoint_of(endpoint), app, open_checkpoint_store(root)))
    url = serve_ui(port, host)
    console.print(f"fleet of {app}: {url}fleet (Ctrl-C stops)", soft_wrap=True)
    while True:
        time.sleep(3600)
