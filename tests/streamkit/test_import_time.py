"""``import streamkit`` stays cheap: the heavy optional modules load only when used.

``pyarrow.dataset`` imports pandas (about a third of the import time): neither loads on
import, nor when a Parquet file is read (files are read with ``pyarrow.parquet``); the
streaming package (asyncio, pyarrow.compute) waits until a streaming name is used, and the
other engines (DuckDB, Polars' rivals in the benchmark) and the AWS SDK are never imported by
``import streamkit``; numpy and pyarrow wait until a query runs. Checked in a fresh
interpreter, since this test process has them loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

HEAVY = ("pandas", "pyarrow.dataset", "streamkit.streaming", "duckdb", "boto3", "botocore")
RUNTIME = ("numpy", "pyarrow")
"""Needed to run a query, not to build one: loaded on first use (streamkit._lazy)."""

_PROBE = """
import json, sys
{statement}
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def _loaded_after(statement: str, modules: tuple[str, ...] = HEAVY) -> list[str]:
    code = _PROBE.format(statement=statement, heavy=modules)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    loaded: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


def test_import_streamkit_loads_neither_pandas_nor_pyarrow_dataset_nor_streaming() -> None:
    assert _loaded_after("import streamkit", (*HEAVY, *RUNTIME)) == []


def test_building_a_plan_loads_neither_numpy_nor_pyarrow() -> None:
    statement = (
        "import streamkit as sk\n"
        "sk.window('t', '1 hour'), sk.approx_count_distinct('u'), (sk.col('x') + 1).alias('y')"
    )
    assert _loaded_after(statement, RUNTIME) == []
    run = "import streamkit as sk\nsk.from_arrow(__import__('pyarrow').table({'a': [1]})).count()"
    assert _loaded_after(run, RUNTIME) == ["numpy", "pyarrow"]  # the probe sees them


@pytest.mark.parametrize("statement", ["import streamkit as sk; sk.read, sk.from_arrow"])
def test_touching_the_readers_does_not_load_them_either(statement: str) -> None:
    assert _loaded_after(statement) == []


def test_streaming_names_load_on_first_use() -> None:
    statement = (
        "import streamkit as sk\n"
        "from streamkit.streaming.trigger import Trigger\n"
        "assert sk.Trigger is Trigger and callable(sk.memory_table)\n"
        "assert sk.read_stream is not None and sk.streams is not None"
    )
    assert _loaded_after(statement) == ["streamkit.streaming"]


def test_unknown_attribute_still_raises() -> None:
    import streamkit

    with pytest.raises(AttributeError, match="no_such_name"):
        _ = streamkit.no_such_name


def test_reading_parquet_loads_pyarrow_parquet_but_not_pandas(tmp_path: Path) -> None:
    """The probe can see the modules (reading loads pyarrow.parquet), and a first query
    over a Parquet file does not pay for pandas through pyarrow.dataset."""
    path = str(tmp_path / "t.parquet")
    pq.write_table(pa.table({"a": [1, 2, 3], "k": ["x", "y", "x"]}), path)  # here: loads pandas
    statement = (
        "import streamkit as sk\n"
        f"assert sk.read.parquet({path!r}).to_arrow().column('a').to_pylist() == [1, 2, 3]\n"
        f"out = sk.read.parquet({path!r}).group_by('k').agg(sk.count()).to_arrow()\n"
        "assert sorted(out.column('count').to_pylist()) == [1, 2]"
    )
    assert _loaded_after(statement, (*HEAVY, "pyarrow.parquet")) == ["pyarrow.parquet"]
