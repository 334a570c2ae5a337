"""examples/fleet_window_counts.py (the job docker/compose.yml's workers run) is a valid job
file: run in one process with ``streamkit run --available-now`` on LocalStack, every window
it writes holds the count a plain-Python oracle computes from the events put, and it writes
only windows the watermark (newest event - 1 minute) closed (append mode)."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
import pytest

from .conftest import Cli, unique

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack]

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "fleet_window_counts.py"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
ACTIONS = ("view", "click", "add_to_cart", "purchase")


def test_fleet_example_counts_closed_windows(
    localstack_endpoint: AwsEndpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(14)
    stamps = [(T0 + timedelta(seconds=i / 2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
              for i in range(600)]  # fmt: skip (00:00:00 to 00:04:59.5)
    events: list[dict[str, Any]] = [
        {"event_time": t, "action": rng.choice(ACTIONS), "user_id": rng.randrange(40),
         "value": 1.0} for t in stamps]  # fmt: skip
    ndjson = tmp_path / "events.ndjson"
    ndjson.write_text("".join(json.dumps(e) + "\n" for e in events))
    truth = Counter((int(e["event_time"][14:16]), e["action"]) for e in events)  # (minute, action)
    cli = Cli(localstack_endpoint)
    stream, app, out = unique("fleet-ex"), unique("fleet-ex-app"), tmp_path / "fleet"
    assert cli("stream", "create", stream, "--shards", "2").exit_code == 0
    put = cli("produce", stream, "--file", str(ndjson), "--key-field", "user_id")
    assert put.exit_code == 0, put.output
    for name, value in {"FLEET_STREAM": stream, "FLEET_APP": app, "FLEET_OUT": str(out)}.items():
        monkeypatch.setenv(name, value)
    ran = cli("run", str(EXAMPLE), "--available-now")
    assert ran.exit_code == 0, ran.output
    assert "600 input row(s)" in ran.output
    rows = pq.read_table(out / "counts").to_pylist()
    got = {(r["window"]["start"].minute, r["action"]): r["events"] for r in rows}
    assert len(got) == len(rows)  # each (window, action) once
    # watermark 00:03:59.5: the windows starting at minutes 0, 1, 2 are closed (all
    # written, once), those at 3 and 4 still open (none written)
    assert set(got) == {key for key in truth if key[0] <= 2}, ran.output
    for key, n in got.items():
        assert n == truth[key], key
