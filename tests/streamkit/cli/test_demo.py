"""``streamkit demo`` end to end as a subprocess without a terminal (as CI runs it)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.moto, pytest.mark.slow]

STREAMKIT = Path(sys.executable).parent / "streamkit"


def _field(out: str, label: str) -> str:
    match = re.search(rf"^\s*{label}: (.+)$", out, re.MULTILINE)
    assert match, f"no {label!r} line in:\n{out}"
    return match.group(1)


def test_demo_runs_on_embedded_moto_and_writes_consistent_results(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "STREAMKIT_AWS_ENDPOINT"}
    out_dir = tmp_path / "results"
    proc = subprocess.run(
        [str(STREAMKIT), "demo", "--duration", "12", "--rate", "150", "--output", str(out_dir)],
        check=False, capture_output=True, text=True, timeout=120, env=env,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    # "produced" is what Kinesis acknowledged to the producer: independent of the query.
    produced = int(_field(out, "events produced"))
    counted = int(_field(out, "events counted"))
    assert "stopping: producer, then query (catching up)" in out
    assert produced >= 150 * 6  # about 12 s at 150/s, with room for a slow machine
    assert counted == produced  # caught up: every acknowledged event counted, once
    assert _field(out, "late rows") == "0, dead letters: 0"
    assert _field(out, "leases released") == "4/4"
    # no terminal: plain progress lines, no live-table box drawing
    assert re.search(r"^\[\s*\d+\.\ds\] produced=\d+ counted=\d+", out, re.MULTILINE)
    assert "┏" not in out
    table = pq.read_table(out_dir / "window_counts.parquet")
    assert table.column_names == ["window_start", "window_end", "action", "events", "value"]
    assert pc.sum(table["events"]).as_py() == produced
    rows = table.select(["window_start", "action"]).to_pylist()
    assert len({(r["window_start"], r["action"]) for r in rows}) == len(rows)  # one per group
    assert set(table["action"].to_pylist()) <= {
        "view", "click", "add_to_cart", "purchase", "share", "search",
    }  # fmt: skip
    windows = int(_field(out, "windows").split()[0])
    assert windows == len(pc.unique(table["window_start"]))


def test_ctrl_c_stops_the_demo_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "STREAMKIT_AWS_ENDPOINT"}
    args = [str(STREAMKIT), "demo", "--duration", "120", "--output", str(tmp_path / "r")]
    args += ["--rate", "100"]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # wait until the query has counted something
            match = re.search(r"counted=(\d+)", line)
            if match and int(match.group(1)) > 0:
                break
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest + err
    assert "interrupted: stopped cleanly" in rest
    assert _field(rest, "leases released") == "4/4"
    counted, produced = int(_field(rest, "events counted")), int(_field(rest, "events produced"))
    assert produced > 0
    assert counted == produced  # the query caught up with the flushed producer before stopping
    table = pq.read_table(tmp_path / "r" / "window_counts.parquet")
    assert pc.sum(table["events"]).as_py() == produced
