"""The ``streamkit`` command (typer): ``demo``, ``stream ...``, ``produce``, ``leases``, ``run``,
``ui``, ``status``, ``worker``.

Exit codes: 0 success, 1 error, 2 usage error, 3 stream or table not found, 4 endpoint
unreachable or credentials rejected, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM, where
a running job stops gracefully on it: ``run``, ``worker``, ``demo``). Errors print one line
and a hint; ``--debug`` (or ``STREAMKIT_DEBUG=1``) shows the full trace instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamkit.cli._common import check_endpoint, cli_errors, console, err_console, settings
from streamkit.cli.leases_cmd import leases_cmd
from streamkit.cli.produce import produce_cmd
from streamkit.cli.run_cmd import run_cmd
from streamkit.cli.status_cmd import status_cmd
from streamkit.cli.stream_cmds import stream_app
from streamkit.cli.ui_cmd import ui_cmd
from streamkit.cli.worker_cmd import worker_cmd

app = typer.Typer(
    name="streamkit",
    help="streamkit: streaming queries over Kinesis, from the terminal.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(stream_app, name="stream")
app.command("produce")(produce_cmd)
app.command("leases")(leases_cmd)
app.command("run")(run_cmd)
app.command("ui")(ui_cmd)
app.command("status")(status_cmd)
app.command("worker")(worker_cmd)


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")
    ] = False,
) -> None:
    """streamkit: streaming queries over Kinesis, from the terminal."""
    settings.debug = debug


@app.command()
@cli_errors
def demo(
    duration: Annotated[
        float,
        typer.Option("--duration", "-d", min=1, help="Seconds to run (Ctrl-C stops earlier)."),
    ] = 60.0,
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            envvar="STREAMKIT_AWS_ENDPOINT",
            callback=check_endpoint,
            help="Run against this endpoint (e.g. LocalStack http://localhost:4566) instead "
            "of the embedded moto server.",
            show_default=False,
        ),
    ] = None,
    rate: Annotated[int, typer.Option("--rate", min=1, help="Events per second.")] = 200,
    shards: Annotated[int, typer.Option("--shards", min=1, help="Shards of the stream.")] = 4,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Directory for window_counts.parquet.")
    ] = Path("out/demo-results"),
) -> None:
    """Run the whole pipeline live: endpoint, stream, producer, streaming query, table.

    With no endpoint, moto's server starts in-process (nothing else to install). A
    clickstream producer writes to a fresh stream while a streaming query (KCL-style
    consumer with DynamoDB leases) counts events per action per 1-minute window; the
    table updates live. --duration, Ctrl-C or SIGTERM stops everything cleanly, prints a
    summary and writes the counts to Parquet (exit 130 after Ctrl-C, 143 after SIGTERM; a
    second Ctrl-C stops at once).
    """
    from streamkit.cli.stop_signals import stop_on_signals

    with stop_on_signals() as stop:
        from streamkit.cli.demo import DemoOptions, run_demo
        from streamkit.cli.demo_view import summary_lines

        summary = run_demo(DemoOptions(duration, endpoint, rate, shards, output), stop)
    if summary is None:
        console.print("stopped before any event was produced: no summary, nothing written")
    else:
        console.print("[bold]summary[/]")
        for line in summary_lines(summary):
            console.print(f"  {line}", soft_wrap=True)
    if stop.is_set():
        err_console.print(stop.word)
        raise typer.Exit(stop.exit_code)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
