"""The ``streamkit`` command line: ``demo``, ``stream``, ``produce``, ``leases``, ``run``.

Installed as the ``streamkit`` script with ``pip install 'streamkit[cli]'``; without that
extra the script says which command installs it instead of failing on an import.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Entry point of the ``streamkit`` script (see :mod:`streamkit.cli.main`)."""
    from streamkit._deps import require
    from streamkit.errors import MissingDependencyError

    try:
        for module in ("typer", "rich", "streamkit_kinesis"):
            require(module, "cli")
    except MissingDependencyError as e:
        print(f"streamkit: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    from streamkit.cli.main import main as run

    run()
