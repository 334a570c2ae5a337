"""Without ``streamkit[metrics]``: the engine imports and runs queries, listeners work, and
asking for the endpoint names the install command (``prometheus_client`` hidden for real)."""

from __future__ import annotations

from pathlib import Path

from tests.streamkit.test_packaging import engine_site, run_engine_only

__all__ = ["engine_site"]


def test_serving_without_the_extra_names_the_install_command(engine_site: Path) -> None:
    out = run_engine_only(engine_site, """
import importlib.util
import pyarrow as pa
import streamkit as sk
from streamkit.errors import MissingDependencyError
out["visible"] = importlib.util.find_spec("prometheus_client") is not None
schema = pa.schema([("v", pa.int64())])
df = sk.read_stream.memory(schema)
q = df.write_stream.memory("no_extra").start()
df.stream.add_rows(pa.table({"v": [1, 2]}))
q.process_all_available()
q.stop()
out["rows"] = sk.memory_table("no_extra").num_rows
for name, fn in (("serve", lambda: sk.metrics.serve(0)),
                 ("start", lambda: df.write_stream.memory("x").start(metrics_port=1))):
    try:
        fn()
    except MissingDependencyError as e:
        out[name] = str(e)
""")
    assert out["visible"] is False
    assert out["rows"] == 2
    assert "pip install 'streamkit[metrics]'" in str(out["serve"])
    assert "pip install 'streamkit[metrics]'" in str(out["start"])
