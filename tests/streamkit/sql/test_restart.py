"""A SQL stream restarted from its checkpoint resumes where it stopped: the second run
translates the same text again, restores the state and offsets the first run committed,
and the two runs together emit what one uninterrupted run emits (same micro-batches)."""

from __future__ import annotations

from pathlib import Path

import streamkit as sk
from streamkit.sql import Catalog
from tests.differential.inputs import SCHEMA, random_files, write_files

FILES = random_files(5, files=8)
QUERY = (
    "SELECT window(ts, '10 seconds') AS w, k, count(*) AS n, sum(v) * 2 AS s2 FROM events"
    " WHERE u IS NOT NULL GROUP BY 1, 2 HAVING count(*) >= 1"
)
Rows = list[dict[str, object]]


def run(directory: Path, checkpoint: Path | None) -> Rows:
    """Every row the query emits in append mode, one file per micro-batch (so both runs
    cut the same batches), reading what ``directory`` holds now."""
    source = sk.read_stream.files(
        str(directory), format="json", schema=SCHEMA, max_files_per_trigger=1
    )
    views = Catalog()
    views.register("events", source.with_watermark("ts", "10 seconds"))
    seen: Rows = []
    writer = sk.sql(QUERY, catalog=views).write_stream.output_mode("append")
    if checkpoint is not None:
        writer = writer.checkpoint(str(checkpoint))
    handle = (
        writer.trigger(available_now=True)
        .foreach_batch(lambda df, _: seen.extend(df.to_arrow().to_pylist()))
        .start()
    )
    assert handle.await_termination(timeout=300)
    assert handle.exception is None, repr(handle.exception)
    return seen


def test_a_restarted_sql_stream_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    whole = run(write_files(tmp_path / "all", FILES, "json"), None)
    assert whole
    directory, checkpoint = tmp_path / "in", tmp_path / "ck"
    write_files(directory, FILES[:4], "json")
    first = run(directory, checkpoint)
    more = write_files(tmp_path / "more", FILES, "json")
    for index in range(4, len(FILES)):
        (more / f"part-{index:04d}.json").rename(directory / f"part-{index:04d}.json")
    second = run(directory, checkpoint)
    assert first
    assert second
    key = str
    assert sorted(first + second, key=key) == sorted(whole, key=key)
