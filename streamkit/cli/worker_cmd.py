"""``streamkit worker job.py``: run one member of a fleet (for ECS, Kubernetes, EMR steps,
``docker compose --scale``).

It sets ``STREAMKIT_FLEET=1`` and ``STREAMKIT_WORKER_ID`` (``--worker-id``, else
``$STREAMKIT_WORKER_ID``, else ``<hostname>-<pid>``) in this process's environment, then
runs the job exactly as ``streamkit run`` does (:mod:`streamkit.cli.job_runner`), each
output line prefixed ``[<worker id>]``. ``DataStreamWriter.start()`` sees the variables and
starts a fleet member instead of a single-process query; every process started with the
same job file (same ``app_name``) joins the same fleet.
"""

from __future__ import annotations

import os
import socket
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
from streamkit.cli.job_runner import run_job
from streamkit.metrics import PORT_VARIABLE

FLEET_ENV = "STREAMKIT_FLEET"
WORKER_ID_ENV = "STREAMKIT_WORKER_ID"


def default_worker_id() -> str:
    """``<hostname>-<pid>``: unique among live processes, as a lease owner must be."""
    return f"{socket.gethostname()}-{os.getpid()}"


def check_worker_id(value: str) -> str:
    """``value`` if usable as a lease owner and output prefix, else a usage error."""
    if not value or any(c.isspace() for c in value) or not value.isprintable():
        raise CliError(f"worker id {value!r} is empty or has blanks",
                       "pass --worker-id with printable characters and no spaces, e.g. "
                       "the pod or task name", EXIT_USAGE)  # fmt: skip
    return value


def enter_fleet_mode(worker_id: str) -> None:
    """Set the two variables ``DataStreamWriter.start()`` reads (see the module doc)."""
    os.environ[FLEET_ENV] = "1"
    os.environ[WORKER_ID_ENV] = worker_id


def serve_metrics(port: int) -> int:
    """Serve ``/metrics`` on every interface (refused, with the fix, when the port is
    taken); the bound port, printed and put in ``$STREAMKIT_METRICS_PORT`` so that the
    query's start serves no second endpoint."""
    from streamkit.metrics import serve

    try:
        bound = serve(port)
    except OSError as exc:
        raise CliError(f"cannot serve the metrics on port {port}: {exc.strerror or exc}",
                       "choose another --metrics-port (0 picks a free one)") from exc  # fmt: skip
    os.environ[PORT_VARIABLE] = str(bound)
    console.print(f"metrics: http://127.0.0.1:{bound}/metrics", soft_wrap=True)
    return bound


@cli_errors
def worker_cmd(  # noqa: PLR0917 (typer reads the options from the signature)
    job_file: JobFile,
    worker_id: Annotated[
        str | None,
        typer.Option(
            "--worker-id",
            envvar=WORKER_ID_ENV,
            show_default=False,
            help="This member's id (lease owner); default: `HOSTNAME-PID`.",
        ),
    ] = None,
    available_now: AvailableNow = False,
    until_idle: UntilIdle = None,
    timeout: Timeout = None,
    force: Annotated[bool, typer.Option("--force", help="As `streamkit run --force`.")] = False,
    ui_port: UiPort = None,
    ui_host: UiHost = "127.0.0.1",
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            envvar=PORT_VARIABLE,
            min=0,
            max=65535,
            help="Serve Prometheus metrics at /metrics on this port (all interfaces): this "
            "worker's leases, per-shard lag and backlog.",
        ),
    ] = None,
) -> None:
    """Run one fleet member of a job file (as `streamkit run`, in fleet mode).

    Start it on as many machines (or containers) as you like: processes running the
    same job file (same app_name) share the stream's shards and the aggregation tasks
    through their lease tables, and take over from each other. Ctrl-C or SIGTERM stops
    this member after its batch in flight commits, releasing its leases (exit 130 / 143);
    the others take its tasks over.

    --ui-port serves the fleet page (/fleet): every worker, its tasks, rates, lag and
    watermark, fetched from each worker's own endpoint. The endpoint is advertised under
    the checkpoint root (fleet/workers/); set STREAMKIT_UI_ADVERTISE_URL when the other
    workers reach this one by another address than --ui-host (e.g. with 0.0.0.0).

    --metrics-port serves this worker's Kinesis figures for Prometheus, label query =
    the lease table (APP for the source shards, APP-exchange for the aggregation tasks):
    streamkit_kinesis_worker_backlog_seconds (the signal to scale on), leases held,
    per-shard records and lag.
    """
    check_stop_options(available_now, until_idle)
    wid = check_worker_id(worker_id if worker_id is not None else default_worker_id())
    enter_fleet_mode(wid)
    if ui_port is not None:
        from streamkit.cli.run_cmd import serve_ui

        serve_ui(ui_port, ui_host)
    if metrics_port is not None:
        serve_metrics(metrics_port)
    run_job(job_file, available_now, until_idle, timeout, force, prefix=f"[{wid}] ")
