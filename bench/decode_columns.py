"""JsonDecoder CPU per record with the payloads as a list of ``bytes`` (what the Kinesis
source handed it before issue 15 item 1's last step: the Arrow column's ``to_pylist``
included) against the payloads as the Arrow binary column (:class:`BinaryColumn`), same
process, interleaved.

Usage:
    nice -n 10 .venv/bin/python bench/decode_columns.py [--records N] [--batch B] [--reps R]

The records are the ~85-byte JSON objects of ``bench/kinesis_cost.py`` (4 fields, the same
schema), as one two-chunk Arrow column, decoded ``--batch`` records per call; CPU is this
process's (all threads). Reported: median µs per record of each way, and their ratio.
Every decode must give every record as a row and no dead letter.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import pyarrow as pa

from streamkit.streaming.decode import BinaryColumn, JsonDecoder, Positions, RawRecords, Repeat

SCHEMA = pa.schema(
    [("id", pa.int64()), ("user", pa.string()), ("action", pa.string()), ("ts", pa.string())]
)


def payload(i: int) -> bytes:
    return json.dumps(
        {"id": i, "user": f"u{i % 997}", "action": "click", "ts": "2026-12-02T10:00:00.000000Z"}
    ).encode()


def run(column: pa.ChunkedArray, as_column: bool, batch: int) -> float:
    """CPU seconds to decode ``column`` in batches."""
    decoder = JsonDecoder(SCHEMA)
    cpu = time.process_time()
    for lo in range(0, len(column), batch):
        part = column.slice(lo, batch)
        n = len(part)
        payloads = BinaryColumn(part) if as_column else part.to_pylist()
        rows, dead = decoder.decode(RawRecords(payloads, Repeat("s", n), Positions(np.arange(n))))
        if rows.num_rows != n or dead.num_rows:
            raise RuntimeError(f"{rows.num_rows} rows, {dead.num_rows} dead letters of {n}")
    return time.process_time() - cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=10_000)
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    values = [payload(i) for i in range(args.records)]
    half = args.records // 2
    column = pa.chunked_array([pa.array(values[:half]), pa.array(values[half:])], pa.binary())
    times: dict[str, list[float]] = {"bytes": [], "column": []}
    run(column, True, args.batch)  # warm-up
    for rep in range(args.reps):
        for name in ["bytes", "column"] if rep % 2 == 0 else ["column", "bytes"]:
            times[name].append(run(column, name == "column", args.batch))
    us = {k: statistics.median(v) / args.records * 1e6 for k, v in times.items()}
    print(f"records {args.records}, batch {args.batch}, reps {args.reps}, load {os.getloadavg()}")
    print(f"list of bytes: {us['bytes']:.3f} µs/record; Arrow column: {us['column']:.3f} "
          f"µs/record; column/bytes {us['column'] / us['bytes']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
