"""A streaming ``transform_with_state_in_pandas`` (value, list and map state per key and
an event-time timer that emits and clears it) killed with SIGKILL several times mid-run,
then run to the end, emits each key exactly once, with the count, first and last event
time and distinct values of all its rows: its state variables and its timers survive
every kill through the checkpoint.

The query (this file run as a script) reads NDJSON files, one file per batch; per key it
keeps the rows seen (value), their event times (list) and rows per value ``v`` (map), and
re-arms one timer at the last event time + 20 s; the timer emits the key in append mode
into a Parquet sink and clears it. The input is laid out so that the answer does not
depend on batch boundaries: a key's rows arrive over three consecutive files, never
behind the watermark and long before its timer can fire, and a last row far ahead (key
``end``) moves the watermark past every other timer. So the truth is one row per key
(except ``end``), computed here by DuckDB. A timer lost in a restart leaves its key
unemitted; state lost in a restart emits a key with too few rows.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import streamkit as sk
from streamkit.streaming.sinks import ParquetSink
from tests.streamkit.streaming.kill9 import Announcing, run_job
from tests.streamkit.streaming.test_stateful_kill9 import (
    DELAY_S,
    GAP_MS,
    SCHEMA,
    write_inputs,
)

SCRIPT = Path(__file__)
OUT = "k string, n bigint, first bigint, last bigint, distinct bigint"


class Keyed(sk.StatefulProcessor):
    """(rows, event times, rows per v) per key; the timer emits and clears them."""

    def init(self, handle: sk.StatefulProcessorHandle) -> None:
        self.handle = handle
        self.n = handle.get_value_state("n", "n bigint")
        self.times = handle.get_list_state("times", "t bigint")
        self.per_v = handle.get_map_state("per_v", "v bigint", "c bigint")

    def handle_input_rows(self, key: Any, rows: Any, timer_values: Any) -> Any:
        for pdf in rows:
            ms = (pd.to_datetime(pdf["ts"], utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(
                milliseconds=1
            )
            self.n.update(((self.n.get() or (0,))[0] + len(pdf),))
            self.times.append_list([(int(t),) for t in ms])
            for v, c in pdf["v"].value_counts().items():
                old = self.per_v.get_value((int(v),))
                self.per_v.update_value((int(v),), ((old or (0,))[0] + int(c),))
        for at in self.handle.list_timers():
            self.handle.delete_timer(at)
        self.handle.register_timer(max(t for (t,) in self.times.get()) + GAP_MS)
        return iter(())

    def handle_expired_timer(self, key: Any, timer_values: Any, info: Any) -> Any:
        times = [t for (t,) in self.times.get()]
        n, distinct = (self.n.get() or (0,))[0], len(list(self.per_v.keys()))
        yield pd.DataFrame({"k": [key[0]], "n": [n], "first": [min(times)], "last": [max(times)],
                            "distinct": [distinct]})  # fmt: skip
        self.n.clear()
        self.times.clear()
        self.per_v.clear()


def child(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    for name in ("input", "checkpoint", "out"):
        p.add_argument(f"--{name}", required=True)
    args = p.parse_args(argv)
    df = sk.read_stream.files(args.input, format="json", schema=SCHEMA, max_files_per_trigger=1)
    closed = (
        df.with_watermark("ts", f"{DELAY_S} seconds").group_by("k")
        .transform_with_state_in_pandas(Keyed(), OUT, "append", "EventTime")
    )  # fmt: skip
    writer = closed.write_stream.checkpoint(args.checkpoint).trigger(available_now=True)
    writer.to(Announcing(ParquetSink(args.out))).start().await_termination()
    print("done", flush=True)
    return 0


# --- the test ----------------------------------------------------------------------------


def truth(folder: Path) -> list[tuple[str, int, int, int, int]]:
    """Per key but ``end``: rows, first and last event time (epoch ms) and distinct v,
    by DuckDB."""
    import duckdb

    relation = duckdb.sql(
        "SELECT k, count(*), epoch_ms(min(CAST(ts AS TIMESTAMPTZ))), "
        "epoch_ms(max(CAST(ts AS TIMESTAMPTZ))), count(DISTINCT v) "
        f"FROM read_json_auto('{folder}/*.json') WHERE k <> 'end' GROUP BY k ORDER BY k"
    )
    assert relation is not None
    return [(str(k), int(n), int(a), int(b), int(d)) for k, n, a, b, d in relation.fetchall()]


@pytest.mark.slow
def test_killed_processor_query_emits_each_key_once(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_inputs(folder, seed=13)
    out = tmp_path / "out"
    args = ["--input", str(folder), "--checkpoint", str(tmp_path / "ck"), "--out", str(out)]
    log, rng = tmp_path / "job.log", random.Random(13)
    # timers fire from batch 13 on (W passes last + gap): kill before and after, spread
    # over the run (37 batches: one per file and the last no-data batch)
    for point in sorted(rng.sample(range(4, 34), 5)):
        assert run_job(SCRIPT, args, log, kill_after=point, pause=rng.random() / 5) is not None
    run_job(SCRIPT, args, log, kill_after=None, pause=0)
    got = sk.read.parquet(str(out)).to_arrow().to_pylist()
    emitted = sorted((r["k"], r["n"], r["first"], r["last"], r["distinct"]) for r in got)
    keys = [k for k, *_ in emitted]
    assert len(set(keys)) == len(keys), "a key was emitted twice"
    assert emitted == truth(folder)


if __name__ == "__main__":
    sys.exit(child(sys.argv[1:]))
