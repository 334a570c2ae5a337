"""``streamkit`` without extras: imports no AWS or Kafka code, and every feature that needs
an extra says which one to install.

The engine-only interpreter is real: a ``python -S`` whose path holds the standard library,
the ``streamkit`` source, and exactly the distributions that ``streamkit``'s metadata
requires without extras (resolved from the installed metadata, recursively). boto3,
aiokafka and the connectors are installed in the test's own environment but not visible in
that interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import Distribution, distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def engine_closure() -> dict[str, Distribution]:
    """The distributions ``streamkit`` needs without extras, by normalised name."""
    found: dict[str, Distribution] = {}
    todo = [Requirement("streamkit")]
    while todo:
        req = todo.pop()
        name = req.name.lower().replace("_", "-")
        if name in found or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        dist = distribution(req.name)
        found[name] = dist
        todo += [Requirement(r) for r in dist.requires or []]
    return found


def _link_distribution(dist: Distribution, site: Path) -> None:
    for top in {Path(str(f)).parts[0] for f in dist.files or []}:
        if top in {"..", "streamkit", "__pycache__"} or top.endswith(".pth"):
            continue
        source = Path(str(dist.locate_file(top)))
        if source.exists() and not (site / top).exists():
            (site / top).symlink_to(source)


@pytest.fixture(scope="module")
def engine_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("engine-only")
    for name, dist in engine_closure().items():
        if name != "streamkit":
            _link_distribution(dist, site)
    (site / "streamkit").symlink_to(ROOT / "streamkit")
    return site


def run_engine_only(site: Path, code: str) -> dict[str, object]:
    """Run ``code`` in the engine-only interpreter; it sets ``out`` (a JSON-able dict)."""
    prelude = f"import sys, json\nsys.path.insert(0, {str(site)!r})\nout = {{}}\n"
    script = prelude + code + "\nprint(json.dumps(out))\n"
    proc = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_closure_is_the_declared_engine() -> None:
    names = set(engine_closure())
    assert {"streamkit", "pyarrow", "polars", "pandas"} <= names
    assert names.isdisjoint({"boto3", "botocore", "aiokafka", "streamkit-kinesis", "moto"})


def test_import_streamkit_loads_no_aws_or_kafka_code(engine_site: Path) -> None:
    out = run_engine_only(engine_site, """
import importlib.util
out["boto3_visible"] = importlib.util.find_spec("boto3") is not None
import pyarrow as pa
import streamkit as sk
t = pa.table({"k": ["a", "b", "a"], "v": [1, 2, 3]})
res = sk.from_arrow(t).group_by("k").agg(sk.sum("v")).to_arrow().sort_by("k")
out["rows"] = res.to_pylist()
loaded = sorted(m.split(".")[0] for m in sys.modules)
out["loaded"] = [m for m in loaded if m in (
    "boto3", "botocore", "aiokafka", "streamkit_kinesis", "streamkit_kafka", "moto",
    "typer", "rich", "matplotlib", "localstack_client")]
""")
    assert out["boto3_visible"] is False, "the sandbox must hide what the engine lacks"
    assert out["rows"] == [{"k": "a", "sum(v)": 4}, {"k": "b", "sum(v)": 2}]
    assert out["loaded"] == []


def test_missing_extras_name_the_install_command(engine_site: Path) -> None:
    out = run_engine_only(engine_site, """
import pyarrow as pa
import streamkit as sk
from streamkit.errors import MissingDependencyError

def attempt(name, fn):
    try:
        fn()
    except MissingDependencyError as e:
        out[name] = str(e)
    else:
        out[name] = "no error"

schema = pa.schema([("v", pa.int64())])
mem = sk.read_stream.memory(schema)
attempt("kinesis", lambda: sk.read_stream.kinesis("s", "app", schema))
attempt("kafka", lambda: sk.read_stream.kafka("127.0.0.1:9", "t", "g", schema))
attempt("kafka_sink", lambda: mem.write_stream.kafka("127.0.0.1:9", "t"))
attempt("kinesis_sink", lambda: mem.write_stream.kinesis("s", "v"))
attempt("boto3", lambda: sk.AwsEndpoint.local("http://127.0.0.1:9").client("s3"))
attempt("localstack", lambda: sk.AwsEndpoint.localstack())
""")
    assert "pip install 'streamkit[kinesis]'" in str(out["kinesis"])
    assert "pip install 'streamkit[kafka]'" in str(out["kafka"])
    assert "pip install 'streamkit[kafka]'" in str(out["kafka_sink"])
    assert "pip install 'streamkit[kinesis]'" in str(out["kinesis_sink"])
    assert "pip install 'streamkit[s3]'" in str(out["boto3"])
    assert "pip install 'streamkit[kinesis]'" in str(out["localstack"])


def test_cli_without_its_extra_says_what_to_install(engine_site: Path) -> None:
    script = f"import sys\nsys.path.insert(0, {str(engine_site)!r})\nimport streamkit.cli\n" \
             "streamkit.cli.main()\n"  # fmt: skip
    proc = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 1
    assert "pip install 'streamkit[cli]'" in proc.stderr
    assert "Traceback" not in proc.stderr
