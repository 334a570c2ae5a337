"""The live web UI in a real headless Chromium: a files query runs batch after batch while
the page is open; the charts fill as batches run, and when the query stops the numbers on
the page equal ``last_progress``. Late rows and dead letters are planted (one late row and
one bad line per file after the first), so their counts are known without the engine.

Set ``STREAMKIT_UI_SCREENSHOT=path.png`` to keep the page's screenshot (the README's)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import streamkit as sk

from .browser import chromium_page, field, number, points, table, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.timeout(300)]

SCHEMA = pa.schema([("event_time", pa.timestamp("us", "UTC")), ("action", pa.string()),
                    ("value", pa.int64())])  # fmt: skip
FILES = 6
ROWS = 40
BASE = datetime(2026, 1, 1, tzinfo=UTC)


def write_file(folder: Path, k: int, trailing: bool = False) -> None:
    """File k: ROWS rows at BASE + k minutes (+ i s); from k=1 also one row an hour before
    BASE (behind the 1-minute watermark: late) and one line that is not JSON. ``trailing``:
    ROWS rows at file k-1's times (neither late nor moving the watermark, so the query's
    last batch is this one, with data, not a no-data batch)."""
    minute = k - 1 if trailing else k
    lines = [
        json.dumps({"event_time": (BASE + timedelta(minutes=minute, seconds=i)).isoformat(),
                    "action": ("view", "click")[i % 2], "value": i})
        for i in range(ROWS)
    ]
    if k and not trailing:
        late = BASE - timedelta(hours=1)
        lines.append(json.dumps({"event_time": late.isoformat(), "action": "late", "value": 0}))
        lines.append("{not json")
    tmp = folder / f".part-{k:03d}"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.rename(folder / f"part-{k:03d}.json")  # appears whole


def check_tiles_equal_last_progress(page: object, p: object) -> None:
    from streamkit.streaming.progress import QueryProgress

    assert isinstance(p, QueryProgress)
    assert number(field(page, "batch_id")) == p.batch_id
    assert number(field(page, "num_input_rows")) == p.num_input_rows
    assert number(field(page, "output_rows")) == p.output_rows
    assert number(field(page, "state_rows")) == p.state_rows
    assert number(field(page, "late_rows")) == p.late_rows
    assert number(field(page, "dead_letters")) == p.dead_letters
    assert number(field(page, "input_rows_per_second")) == round(p.input_rows_per_second, 1)
    assert number(field(page, "processed_rows_per_second")) == pytest.approx(
        round(p.processed_rows_per_second, 1), abs=0.051
    )
    assert number(field(page, "duration_total_ms")) == pytest.approx(
        round(p.durations.total * 1000, 1), abs=0.051
    )
    assert p.watermark is not None
    shown = p.watermark.isoformat().replace("T", " ").replace("+00:00", "Z")
    assert field(page, "watermark") == shown


def check_rejects_and_checkpoint(page: Any, q: Any, ck: Path) -> None:
    """The planted late rows and dead letters, and the committed positions, on the page."""
    assert number(field(page, "total_late_rows")) == FILES - 1
    assert number(field(page, "total_dead_letters")) == FILES - 1
    reasons = table(page, "dead-reasons")
    assert sum(number(n) for _, n in reasons) == FILES - 1
    sample = table(page, "dead-sample")
    assert len(sample) == 5
    assert all(row[4] == "{not json" for row in sample)
    late = table(page, "late-sample")
    assert len(late) == 5
    assert all("late" in row for row in late)
    assert field(page, "checkpoint_location") == str(ck)
    assert number(field(page, "committed_batch")) == q.last_progress.batch_id
    offsets = {r[0]: r[1] for r in table(page, "offsets")}
    assert offsets == q.committed[1]
    assert set(json.loads(offsets["files"])) == {f"part-{k:03d}.json" for k in range(FILES + 1)}


def test_page_follows_a_running_query(tmp_path: Path) -> None:
    src, ck = tmp_path / "in", tmp_path / "ck"
    src.mkdir()
    name = f"ui_{uuid.uuid4().hex[:8]}"
    server = sk.ui.serve(0)
    df = sk.read_stream.files(str(src), format="json", schema=SCHEMA, max_files_per_trigger=1)
    by_minute = df.with_watermark("event_time", "1 minute").group_by(
        sk.window("event_time", "1 minute"), "action"
    )
    counts = by_minute.agg(sk.count())
    q = (counts.write_stream.output_mode("update").trigger(processing_time="0.3 seconds")
               .checkpoint(str(ck)).query_name(name).memory(name).start())  # fmt: skip
    try:
        with chromium_page() as page:
            page.goto(f"{server.url}query/{q.id}")
            wait_for("the page's first poll", lambda: page.locator("body[data-polls]").count())
            for k in range(FILES):
                write_file(src, k)
                q.process_all_available(60)
                if k == 2:  # the charts fill while batches run
                    wait_for("three points per rate series", lambda: all(
                        n >= 3 for n in points(page, "chart-rates").values()))  # fmt: skip
            wait_for("the no-data batch after the last file", lambda: (
                q.last_progress is not None and q.last_progress.num_input_rows == 0))
            write_file(src, FILES, trailing=True)
            q.process_all_available(60)
            q.stop()
            q.await_termination(30)
            last = q.last_progress
            assert last is not None
            assert last.num_input_rows == ROWS  # a batch with data: every rate is non-zero
            wait_for("the stopped query's last batch on the page",
                     lambda: field(page, "status") == "stopped"
                     and field(page, "batch_id") == f"{last.batch_id:,}")  # fmt: skip
            check_tiles_equal_last_progress(page, last)
            batches = len(q.recent_progress)
            assert points(page, "chart-rates") == {
                "input rows/s": batches, "processed rows/s": batches}
            assert points(page, "chart-phases") == dict.fromkeys(
                ("fetch", "decode", "execute", "state", "sink", "commit"), batches)
            assert points(page, "chart-event-time") == {
                "newest event time": batches, "watermark": batches}
            check_rejects_and_checkpoint(page, q, ck)
            shot = tmp_path / "ui.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if keep := os.environ.get("STREAMKIT_UI_SCREENSHOT"):
                shutil.copyfile(shot, keep)
    finally:
        q.stop()
        server.stop()
        sk.ui.stop_serving()


def test_index_lists_the_query_and_links_to_its_page(tmp_path: Path) -> None:
    name = f"ui_idx_{uuid.uuid4().hex[:8]}"
    server = sk.ui.serve(0)
    df = sk.read_stream.memory(pa.schema([("v", pa.int64())]))
    q = df.write_stream.query_name(name).memory(name).start()
    try:
        df.stream.add_rows(pa.table({"v": [1, 2, 3]}))
        q.process_all_available(30)
        with chromium_page() as page:
            page.goto(server.url)
            wait_for("the query in the list", lambda: page.get_by_role("link", name=name).count())
            page.get_by_role("link", name=name).click()
            wait_for("its page", lambda: page.locator("#name").inner_text() == name)
            wait_for("its rows", lambda: field(page, "total_input_rows") == "3")
    finally:
        q.stop()
        server.stop()
        sk.ui.stop_serving()
