"""CPU per W3 file: streamkit's JSON file decode against the loop's ``pyarrow.json`` parse.

One process, one generated W3 file (``_stream_gen``, 100,000 rows, ~10.6 MB), the readers
alternated ``--repeat`` times; prints the median CPU ms (``time.process_time``) of each:

- ``loop``: ``pyarrow.json.read_json`` of the three columns W3 reads (``_stream_run``'s
  ``LOOP_PARSE``), what the hand-written loop does per file;
- ``decode_lines``: ``JsonDecoder.decode_lines`` of the same bytes, single-threaded and
  reading the same three columns, as the file source decodes a file;
- its parts: ``scan_lines`` (the line scan and byte survey) and ``parse_document`` (the
  in-place ``read_json``).

    .venv/bin/python bench/decode_document.py --repeat 11
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.json as pj
from _stream_gen import SCHEMA, file_table, to_ndjson
from _stream_run import LOOP_PARSE, QUERY_COLUMNS

from streamkit.streaming import _lines
from streamkit.streaming.decode import JsonDecoder


def readers(data: pa.Buffer) -> dict[str, Callable[[], object]]:
    """The timed callables, by name."""
    decoder = JsonDecoder(SCHEMA, threads=False)
    decoder.read_only(QUERY_COLUMNS)
    scan = _lines.scan_lines(data)
    parser = decoder._parser
    assert parser is not None
    assert decoder.decode_lines(data, "files", "f").rows.equals(
        pj.read_json(pa.BufferReader(data), parse_options=LOOP_PARSE)
    )
    block = max(1 << 20, scan.longest + 16)
    return {
        "loop": lambda: pj.read_json(pa.BufferReader(data), parse_options=LOOP_PARSE),
        "decode_lines": lambda: decoder.decode_lines(data, "files", "f"),
        "scan_lines": lambda: _lines.scan_lines(data),
        "parse_document": lambda: parser.parse_document(data, scan.count, block),
    }


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--repeat", type=int, default=11)
    cli.add_argument("--seed", type=int, default=42)
    args = cli.parse_args()
    data = pa.py_buffer(to_ndjson(file_table(args.seed, 5)))
    timed = readers(data)
    seconds: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(args.repeat):
        for name, fn in timed.items():
            t0 = time.process_time()
            fn()
            seconds[name].append(time.process_time() - t0)
    ms = {name: 1000 * statistics.median(v) for name, v in seconds.items()}
    print(f"{data.size:,} bytes, {args.repeat} rounds, median CPU ms:")
    for name, value in ms.items():
        spread = 1000 * float(np.ptp(seconds[name]))
        print(f"  {name:15s} {value:7.1f}  (range {spread:.1f})  {value / ms['loop']:.3f}x loop")


if __name__ == "__main__":
    main()
