"""The ``streamkit`` command line: ``demo``, ``stream``, ``produce``, ``leases``, ``run``.

Installed as the ``streamkit`` script with ``pip install 'streamkit[cli]'``; without that
extra the script says which command installs it instead of failing on an import.
"""

from __future__ import annotations

import signal
import sys


def claim_sigint() -> None:
    """Make an inherited *ignored* SIGINT raise ``KeyboardInterrupt`` again, so that every
    command stops on Ctrl-C / ``kill -INT`` however it was started (a background job of a
    non-interactive shell starts with SIGINT ignored); any other handler is kept."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main() -> None:
    """Entry point of the ``streamkit`` script (see :mod:`streamkit.cli.main`); Ctrl-C
    while it imports exits 130 without a trace."""
    claim_sigint()
    try:
        from streamkit._deps import require
        from streamkit.errors import MissingDependencyError

        try:
            for module in ("typer", "rich", "streamkit_kinesis"):
                require(module, "cli")
        except MissingDependencyError as e:
            print(f"streamkit: {e}", file=sys.stderr)
            raise SystemExit(1) from None
        from streamkit.cli.main import main as run
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    run()
