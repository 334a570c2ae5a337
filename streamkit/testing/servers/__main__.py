"""Command line: ``python -m streamkit.testing.servers install|run NAME [--cache DIR]``.

``install`` installs servers into the cache (what CI runs before the tests); ``run`` starts
one server in the foreground, prints its address, and stops it on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import (
    RunningServer,
    default_cache_dir,
    install_kafka,
    install_kinesalite,
    install_localstack,
    install_tansu,
    start_kafka,
    start_kinesalite,
    start_localstack,
    start_tansu,
)

if TYPE_CHECKING:
    from contextlib import AbstractContextManager
    from types import FrameType

NAMES = ("localstack", "kinesalite", "tansu", "kafka")
PEERS = ("kcl", "kpl")
"""Installed (built) like the servers, but started by the tests, not by ``run``."""


def _install(name: str, cache: Path) -> None:
    if name in ("all", "kinesalite"):
        install_kinesalite(cache)
    if name in ("all", "tansu"):
        install_tansu(cache)
    if name in ("all", "localstack"):
        install_localstack(cache)
    if name in ("all", "kafka"):
        install_kafka(cache)
    if name in ("all", "kcl"):
        from streamkit.testing.peers.kcl import install_kcl

        install_kcl(cache)
    if name in ("all", "kpl"):
        from streamkit.testing.peers.kpl import install_kpl

        install_kpl(cache)


def _starter(name: str, cache: Path) -> AbstractContextManager[RunningServer]:
    if name == "localstack":
        return start_localstack(cache)
    if name == "kinesalite":
        return start_kinesalite(cache)
    if name == "kafka":
        return start_kafka(cache)
    return start_tansu(cache)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m streamkit.testing.servers")
    parser.add_argument("--cache", type=Path, default=None, help="cache folder")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install").add_argument(
        "name", nargs="?", default="all", choices=[*NAMES, *PEERS, "all"]
    )
    sub.add_parser("run").add_argument("name", choices=NAMES)
    args = parser.parse_args(argv)
    cache = (args.cache or default_cache_dir()).resolve()
    if args.command == "install":
        _install(args.name, cache)
        print(f"servers installed in {cache}", file=sys.stderr)
        return 0
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with _starter(args.name, cache) as server:
            print(f"{server.name} pid {server.pid} at {server.url}", flush=True)
            signal.pause()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
