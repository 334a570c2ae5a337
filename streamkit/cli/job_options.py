"""The options every job-running command (`run`, `worker`, `ui`) takes, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamkit.cli._common import EXIT_USAGE, CliError

JobFile = Annotated[Path, typer.Argument(help="Python file defining job().")]
AvailableNow = Annotated[
    bool, typer.Option("--available-now", help="Process what the input holds now, then stop.")
]
UntilIdle = Annotated[
    float | None,
    typer.Option(
        "--until-idle",
        min=0.1,
        help="Catch up, then stop once no input arrived for this many seconds.",
    ),
]
UiPort = Annotated[
    int | None,
    typer.Option(
        "--ui-port",
        min=0,
        max=65535,
        help="Serve the live web UI on this port (0: a free one) while the job runs; a fleet "
        "worker also serves the fleet page (/fleet) and its figures to the other workers.",
    ),
]
UiHost = Annotated[str, typer.Option("--ui-host", help="Interface of the UI (0.0.0.0: every one).")]
Timeout = Annotated[
    float | None, typer.Option("--timeout", min=0.1, help="Stop after this many seconds.")
]


def check_stop_options(available_now: bool, until_idle: float | None) -> None:
    """Refuse the two ways of stopping that exclude each other (exit 2)."""
    if available_now and until_idle is not None:
        raise CliError("choose one of --available-now and --until-idle", "see --help", EXIT_USAGE)
