"""``streamkit run job.py`` against moto's server: the job-file convention,
``--available-now`` and ``--until-idle`` (transient jobs that stop when drained), errors."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
import pytest

from .conftest import Cli, unique

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.integration, pytest.mark.moto]

WRITER_JOB = """
import streamkit as sk
from streamkit.cli.clickstream import SCHEMA

def job():
    df = sk.read_stream.kinesis({stream!r}, {app!r}, schema=SCHEMA,
                                consumer_options={{"idle_time": 0.1, "take_interval": 0.5}})
    return df.write_stream.checkpoint({ck!r}).parquet({out!r})
"""

QUERY_JOB = """
import streamkit as sk
from streamkit.cli.clickstream import SCHEMA

def job():
    df = sk.read_stream.kinesis({stream!r}, {app!r}, schema=SCHEMA,
                                consumer_options={{"idle_time": 0.1, "take_interval": 0.5}})
    counts = df.group_by("action").agg(sk.count().alias("n"))
    return (counts.write_stream.output_mode("complete").trigger(processing_time=0.2)
            .memory({table!r}).start())
"""


def stream_with(cli: Cli, n: int) -> str:
    name = unique("cli-run")
    assert cli("stream", "create", name, "--shards", "2").exit_code == 0
    assert cli("produce", name, "--count", str(n)).exit_code == 0
    return name


def test_available_now_processes_everything_then_exits_0(cli: Cli, tmp_path: Path) -> None:
    stream = stream_with(cli, 400)
    out, ck = tmp_path / "out", tmp_path / "ck"
    job = tmp_path / "job.py"
    job.write_text(WRITER_JOB.format(stream=stream, app=unique("app"), ck=str(ck), out=str(out)))
    result = cli("run", str(job), "--available-now")
    assert result.exit_code == 0, result.output
    assert re.search(r"^batch 0: \d+ rows", result.output, re.MULTILINE)
    assert re.search(r"stopped .*: \d+ batch\(es\), 400 input row\(s\)", result.output)
    assert pq.read_table(out).num_rows == 400
    # a second run resumes from the checkpoint: nothing new to read
    again = cli("run", str(job), "--available-now")
    assert again.exit_code == 0, again.output
    assert "0 input row(s)" in again.output
    assert pq.read_table(out).num_rows == 400


def test_until_idle_stops_a_started_query_once_drained(cli: Cli, tmp_path: Path) -> None:
    import streamkit as sk

    stream, table = stream_with(cli, 250), unique("run_mem")
    job = tmp_path / "job.py"
    job.write_text(QUERY_JOB.format(stream=stream, app=unique("app"), table=table))
    result = cli("run", str(job), "--until-idle", "1")
    assert result.exit_code == 0, result.output
    assert "250 input row(s)" in result.output
    assert sum(sk.memory_table(table)["n"].to_pylist()) == 250


def test_job_convention_errors(cli: Cli, tmp_path: Path) -> None:
    job = tmp_path / "nojob.py"
    job.write_text("x = 1\n")
    result = cli("run", str(job))
    assert result.exit_code == 1
    assert f"error: {job} has no job() function" in result.output
    assert "def job():" in result.output
    wrong = tmp_path / "wrong.py"
    wrong.write_text("def job():\n    return 42\n")
    assert "job() returned int" in cli("run", str(wrong)).output
    both = cli("run", str(job), "--available-now", "--until-idle", "2")
    assert both.exit_code == 2
    missing = cli("run", str(tmp_path / "missing.py"))
    assert missing.exit_code == 1
    assert "no such job file" in missing.output


def test_available_now_needs_the_writer_form(cli: Cli, tmp_path: Path) -> None:
    stream = stream_with(cli, 10)
    job = tmp_path / "job.py"
    job.write_text(QUERY_JOB.format(stream=stream, app=unique("app"), table=unique("t")))
    result = cli("run", str(job), "--available-now")
    assert result.exit_code == 1
    assert "--available-now needs job() to return the writer" in result.output
