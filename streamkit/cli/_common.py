"""Shared CLI plumbing: endpoints, the embedded moto server, errors and exit codes.

Exit codes: 0 success, 1 a streamkit error (the message says what to do), 2 usage error
(click's), 3 stream or table not found, 4 endpoint unreachable or credentials rejected,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM: the job stopped as on Ctrl-C).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

import typer
from rich.console import Console

from streamkit.config import ENDPOINT_ENV, AwsEndpoint
from streamkit.errors import StreamkitError

P = ParamSpec("P")
R = TypeVar("R")

EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 1, 2, 3, 4, 130
EXIT_TERMINATED = 143

err_console = Console(stderr=True, highlight=False)
console = Console(highlight=False)


def check_endpoint(url: str | None) -> str | None:
    """An ``--endpoint`` value as given, if it is an http(s) URL with a host; otherwise a
    usage error (exit 2) saying what a valid one looks like."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise typer.BadParameter(
            f"{url!r} is not an endpoint URL; use http(s)://host[:port], e.g. "
            "http://localhost:4566 (LocalStack), or leave it out for real AWS"
        )
    return url


EndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--endpoint",
        envvar=ENDPOINT_ENV,
        callback=check_endpoint,
        help="AWS-compatible endpoint URL (LocalStack: http://localhost:4566); "
        "default: $STREAMKIT_AWS_ENDPOINT, else real AWS.",
        show_default=False,
    ),
]


@dataclass
class Settings:
    """Global options (set by the app callback)."""

    debug: bool = False


settings = Settings()


def endpoint_of(url: str | None) -> AwsEndpoint:
    """The endpoint for ``url`` (dummy keys for a local URL), else from the environment."""
    if url:
        return AwsEndpoint.local(url) if _is_local(url) else AwsEndpoint.from_env(url)
    return AwsEndpoint.from_env()


def _is_local(url: str) -> bool:
    return any(host in url for host in ("localhost", "127.0.0.1", "0.0.0.0", "[::1]"))


@contextmanager
def embedded_moto() -> Iterator[AwsEndpoint]:
    """moto's in-process server on a free loopback port (Kinesis, DynamoDB, S3); stopped on
    exit. Needs ``moto[server]`` (``pip install 'streamkit[demo]'``)."""
    from streamkit.testing.servers.moto import moto_installed, start_moto

    if not moto_installed():
        raise CliError(
            "the embedded endpoint needs moto's server",
            "pip install 'streamkit[demo]', or pass --endpoint http://localhost:4566 (LocalStack)",
        )
    with start_moto() as endpoint:
        yield endpoint


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM where a command stops gracefully on it (a
    ``BaseException``, so a job's ``except Exception`` does not swallow it)."""


class CliError(StreamkitError):
    """An error the CLI reports as one line plus a hint."""

    def __init__(self, message: str, hint: str = "", code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.hint, self.code = hint, code


def _exit_code(exc: BaseException) -> int:
    from streamkit_kinesis.errors import (
        CredentialsError,
        EndpointUnreachableError,
        StreamNotFoundError,
    )

    from streamkit.streaming.checkpoint_store import StoreUnreachableError

    if isinstance(exc, CliError):
        return exc.code
    if isinstance(exc, StreamNotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(exc, EndpointUnreachableError | CredentialsError | StoreUnreachableError):
        return EXIT_UNREACHABLE
    return EXIT_ERROR


def user_syntax_error(exc: SyntaxError) -> CliError:
    """A ``SyntaxError`` raised while importing the user's file, as the user's mistake."""
    where = f"{exc.filename}, line {exc.lineno}" if exc.lineno else str(exc.filename)
    text = (exc.text or "").strip()
    return CliError(
        f"syntax error in {where}: {exc.msg}" + (f": {text}" if text else ""),
        "fix that line of your file and run again",
    )


def report(exc: BaseException) -> int:
    """Print ``exc`` as one readable line (plus a hint) on stderr; return its exit code."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    hint = exc.hint if isinstance(exc, CliError) else ""
    if not isinstance(exc, StreamkitError):
        first = f"{type(exc).__name__}: {first}"
        hint = hint or "this looks like a bug or an endpoint problem; rerun with --debug"
    err_console.print(f"[bold red]error:[/] {first}", soft_wrap=True)
    hint = hint or "rerun with --debug for the full trace"
    err_console.print(f"[dim]hint: {hint}[/]", soft_wrap=True)
    return _exit_code(exc)


def cli_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn exceptions of a command into one line + hint and an exit code (trace with
    ``--debug``)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Terminated:
            err_console.print("terminated")
            raise typer.Exit(EXIT_TERMINATED) from None
        except Exception as exc:
            if settings.debug or os.environ.get("STREAMKIT_DEBUG"):
                raise
            raise typer.Exit(report(exc)) from None

    return wrapper


def run_async(coro: Any) -> Any:
    """Run a coroutine to completion on a fresh event loop."""
    import asyncio

    return asyncio.run(coro)


def is_tty() -> bool:
    """Whether stdout is an interactive terminal."""
    return sys.stdout.isatty()
