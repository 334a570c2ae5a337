"""Examples are executed by the test suite: they must run and print what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_batch_windowed_counts_example_runs() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "batch_windowed_counts.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "Aggregate by [window(col('event_time'), 1 hour), col('action')]" in out
    lines = [line for line in out.splitlines() if line.startswith("0")]
    # 6 hours x 5 actions of synthetic data: one row per (window, action)
    assert len(lines) == 30
    assert "purchase" in out
