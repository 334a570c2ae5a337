"""``streamkit run --force``: a job whose checkpoint folder another live copy holds is
refused (exit 1, naming it and the way to take over); ``--force`` takes it over."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
from typer.testing import CliRunner

import streamkit as sk
from streamkit.cli.main import app
from streamkit.streaming.sources.memory import MemoryStream

if TYPE_CHECKING:
    from pathlib import Path

JOB = """
import pyarrow as pa
import streamkit as sk
from streamkit.streaming.sources.memory import MemoryStream

def job():
    df = sk.read_stream.source(MemoryStream(pa.schema([("k", pa.string())])))
    return df.write_stream.output_mode("append").checkpoint({ck!r}).memory("forced")
"""


def test_run_refuses_a_held_checkpoint_and_force_takes_it_over(tmp_path: Path) -> None:
    ck = str(tmp_path / "ck")
    job = tmp_path / "job.py"
    job.write_text(JOB.format(ck=ck))
    df = sk.read_stream.source(MemoryStream(pa.schema([("k", pa.string())])))
    holder = df.write_stream.output_mode("append").checkpoint(ck).memory("holder").start()
    try:
        refused = CliRunner().invoke(app, ["run", str(job), "--timeout", "0.5"])
        assert refused.exit_code == 1
        assert "is in use by query" in refused.output
        assert "--force" in refused.output
        forced = CliRunner().invoke(app, ["run", str(job), "--timeout", "0.5", "--force"])
        assert forced.exit_code == 0, forced.output
        assert "stopped" in forced.output
    finally:
        holder.stop()
