"""Exit codes and messages of the CLI's error paths (in-process, no server needed): an
unreachable endpoint is 4, a malformed ``--endpoint`` is a usage error (2), and a syntax
error in a job file is the user's (file, line), without the "bug" hint."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from streamkit.cli._common import EXIT_UNREACHABLE, EXIT_USAGE
from streamkit.cli.main import app

if TYPE_CHECKING:
    from pathlib import Path

    from typer.testing import Result


def invoke(*args: str) -> Result:
    env = {"STREAMKIT_AWS_ENDPOINT": "", "COLUMNS": "200"}
    return CliRunner().invoke(app, list(args), env=env)


def test_leases_on_an_unreachable_endpoint_exits_4() -> None:
    result = invoke("leases", "APP", "--endpoint", "http://127.0.0.1:1")
    assert result.exit_code == EXIT_UNREACHABLE, result.output
    assert "DynamoDB at http://127.0.0.1:1 did not answer" in result.output
    assert "retry on the next cycle" not in result.output
    assert "--endpoint" in result.output  # the hint says what to do


@pytest.mark.parametrize(
    "command", [["demo", "-d", "1"], ["leases", "APP"], ["stream", "describe", "s"]]
)
@pytest.mark.parametrize("url", ["notaurl", "localhost:4566", "ftp://host"])
def test_a_malformed_endpoint_is_a_usage_error(command: list[str], url: str) -> None:
    result = invoke(*command, "--endpoint", url)
    assert result.exit_code == EXIT_USAGE, result.output
    assert "is not an endpoint URL" in result.output
    assert "http://localhost:4566" in result.output
    assert "bug" not in result.output


def test_a_syntax_error_in_the_job_file_names_the_file_and_line(tmp_path: Path) -> None:
    job = tmp_path / "job.py"
    job.write_text("import streamkit as sk\n\ndef job(:\n    pass\n")
    result = invoke("run", str(job))
    assert result.exit_code == 1, result.output
    assert f"syntax error in {job}, line 3" in " ".join(result.output.split())
    assert "def job(:" in result.output
    assert "bug" not in result.output
