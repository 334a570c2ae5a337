"""The README's exit codes 130 (interrupted) and 4 (endpoint unreachable), measured on the
real ``streamkit`` executable as a subprocess: a real SIGINT, a real closed port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

STREAMKIT = Path(sys.executable).parent / "streamkit"
UNREACHABLE = "http://127.0.0.1:1"

JOB = textwrap.dedent(
    """
    import pyarrow as pa
    import streamkit as sk
    from streamkit.streaming.sources.memory import MemoryStream

    def job():
        stream = MemoryStream(pa.schema([("n", pa.int64())]))
        stream.add_rows(pa.table({"n": [1, 2, 3]}))
        return sk.read_stream.source(stream).write_stream.foreach_batch(lambda df, i: None)
    """
)


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "STREAMKIT_AWS_ENDPOINT"} | {
        "COLUMNS": "200"
    }


# Starts the command with SIGINT inherited as given (SIG_IGN: as a background job of a
# non-interactive shell starts), whatever the disposition pytest itself was started with.
LAUNCH = (
    "import os, signal, sys; signal.signal(signal.SIGINT, getattr(signal, sys.argv[1])); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


@pytest.mark.parametrize("inherited_sigint", ["SIG_DFL", "SIG_IGN"])
def test_ctrl_c_during_run_exits_130(tmp_path: Path, inherited_sigint: str) -> None:
    job = tmp_path / "job.py"
    job.write_text(JOB)
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, inherited_sigint, str(STREAMKIT), "run", str(job)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the query is running once the first batch is reported
            if line.startswith("batch 0:"):
                break
        else:
            pytest.fail(f"no progress line; stderr: {proc.stderr.read() if proc.stderr else ''}")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err
    assert "Traceback" not in out + err


@pytest.mark.parametrize(
    "command",
    [["stream", "describe", "s"], ["leases", "APP"], ["produce", "s", "--count", "1"]],
)
def test_an_unreachable_endpoint_exits_4(command: list[str]) -> None:
    proc = subprocess.run(
        [str(STREAMKIT), *command, "--endpoint", UNREACHABLE], check=False, capture_output=True,
        text=True, timeout=120, env=env(), stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "hint:" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
