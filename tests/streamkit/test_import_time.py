"""``import streamkit`` stays cheap: the heavy optional modules load only when used.

``pyarrow.dataset`` imports pandas (about a third of the import time); both must wait until
a file is read, and the streaming package (asyncio, pyarrow.compute) until a streaming name
is used. Checked in a fresh interpreter, since this test process has them loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("pandas", "pyarrow.dataset", "streamkit.streaming")

_PROBE = """
import json, sys
{statement}
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def _loaded_after(statement: str) -> list[str]:
    code = _PROBE.format(statement=statement, heavy=HEAVY)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    loaded: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


def test_import_streamkit_loads_neither_pandas_nor_pyarrow_dataset_nor_streaming() -> None:
    assert _loaded_after("import streamkit") == []


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


def test_reading_a_file_still_works_and_loads_pyarrow_dataset(tmp_path: Path) -> None:
    """The probe can see the modules: reading Parquet loads pyarrow.dataset (so a
    'nothing loaded' answer above is not an artefact of the probe)."""
    path = f"{tmp_path}/t.parquet"
    statement = (
        "import pyarrow as pa, pyarrow.parquet as pq, streamkit as sk\n"
        f"pq.write_table(pa.table({{'a': [1, 2, 3]}}), {path!r})\n"
        f"assert sk.read.parquet({path!r}).to_arrow().column('a').to_pylist() == [1, 2, 3]"
    )
    assert "pyarrow.dataset" in _loaded_after(statement)
