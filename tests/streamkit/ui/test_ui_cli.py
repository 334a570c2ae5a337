"""``streamkit ui job.py`` and ``streamkit run --ui-port``: the command prints the UI's URL
and serves the job's query there (read back over HTTP as the page does)."""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from pathlib import Path

from typer.testing import CliRunner

import streamkit as sk
from streamkit.cli.main import app

JOB = """
import pyarrow as pa
import streamkit as sk

def job():
    schema = pa.schema([("action", pa.string())])
    df = sk.read_stream.files({src!r}, format="json", schema=schema, max_files_per_trigger=1)
    return (df.group_by("action").agg(sk.count()).write_stream.output_mode("complete")
              .query_name({name!r}).checkpoint({ck!r}).memory({name!r}))
"""


def write_job(tmp_path: Path, name: str, files: int) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    for k in range(files):
        (src / f"f{k}.json").write_text('{"action": "view"}\n{"action": "click"}\n')
    job = tmp_path / "job.py"
    job.write_text(JOB.format(src=str(src), name=name, ck=str(tmp_path / "ck")))
    return job


def get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=30) as reply:
        return json.loads(reply.read())


def test_ui_command_serves_the_job_query(tmp_path: Path) -> None:
    job = write_job(tmp_path, "ui_cli_job", 3)
    try:
        result = CliRunner().invoke(app, ["ui", str(job), "--port", "0", "--available-now",
                                          "--exit"])  # fmt: skip
        assert result.exit_code == 0, result.output
        url = re.search(r"web UI: (http://\S+)", result.output)
        assert url is not None, result.output
        listed = get(url.group(1) + "api/queries")
        assert isinstance(listed, list)
        mine = [q for q in listed if q["name"] == "ui_cli_job"]
        assert len(mine) == 1
        assert mine[0]["status"] == "stopped"
        assert mine[0]["input_rows"] == 6  # 3 files x 2 rows
        page = get(url.group(1) + "api/queries/" + mine[0]["id"])
        assert isinstance(page, dict)
        assert page["last_progress"]["batch_id"] == mine[0]["last_batch"] == 2
    finally:
        sk.ui.stop_serving()


def test_run_refuses_a_port_in_use(tmp_path: Path) -> None:
    job = write_job(tmp_path, "ui_cli_busy", 1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["run", str(job), "--available-now",
                                          "--ui-port", str(port)])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert f"cannot serve the UI on 127.0.0.1:{port}" in result.output
    assert "--ui-port" in result.output
