"""The three distributions build as separate wheels with the right contents and metadata.

``streamkit`` (the engine) ships no connector; ``streamkit-kinesis`` and ``streamkit-kafka``
ship their package (not their tests) and register with the engine through the
``streamkit.connectors`` entry point; the engine's extras pull them in.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTIONS = {
    "streamkit": (ROOT, "streamkit"),
    "streamkit_kinesis": (ROOT / "connectors" / "kinesis", "streamkit_kinesis"),
    "streamkit_kafka": (ROOT / "connectors" / "kafka", "streamkit_kafka"),
}

pytestmark = [pytest.mark.slow, pytest.mark.integration]  # builds with pip: needs PyPI


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, zipfile.ZipFile]:
    out = tmp_path_factory.mktemp("wheels")
    built: dict[str, zipfile.ZipFile] = {}
    for name, (source, _) in DISTRIBUTIONS.items():
        # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
        copy = tmp_path_factory.mktemp("src") / name
        skip = shutil.ignore_patterns(".*", "__pycache__", "*.egg-info", "build", "tests", "bench")
        shutil.copytree(source, copy, ignore=skip)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(copy)],
            check=True, capture_output=True, timeout=600,
        )  # fmt: skip
        (wheel,) = out.glob(f"{name}-*.whl")
        built[name] = zipfile.ZipFile(wheel)
    return built


def top_level(wheel: zipfile.ZipFile) -> set[str]:
    return {n.split("/")[0] for n in wheel.namelist() if not n.split("/")[0].endswith(".dist-info")}


def metadata(wheel: zipfile.ZipFile) -> tuple[dict[str, list[str]], str]:
    meta_name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    msg = Parser().parsestr(wheel.read(meta_name).decode())
    eps = next((n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")), None)
    fields = {k: msg.get_all(k) or [] for k in ("Requires-Dist", "Provides-Extra")}
    return fields, wheel.read(eps).decode() if eps else ""


def test_each_wheel_ships_only_its_own_package(wheels: dict[str, zipfile.ZipFile]) -> None:
    for name, (_, package) in DISTRIBUTIONS.items():
        assert top_level(wheels[name]) == {package}, name
        names = wheels[name].namelist()
        assert f"{package}/py.typed" in names
        assert not any("_tests/" in n or n.startswith("tests/") for n in names)


def test_engine_requires_no_client_library_without_extras(
    wheels: dict[str, zipfile.ZipFile],
) -> None:
    fields, _ = metadata(wheels["streamkit"])
    plain = [r for r in fields["Requires-Dist"] if "extra ==" not in r]
    assert sorted(r.split(">")[0].split("=")[0] for r in plain) == ["pandas", "polars", "pyarrow"]
    assert {"kinesis", "kafka", "s3", "cli", "demo", "plot", "all"} <= set(fields["Provides-Extra"])
    extras = {r.split(";")[0].strip(): r for r in fields["Requires-Dist"]}
    assert 'extra == "kinesis"' in extras["streamkit-kinesis==0.1.0"]
    assert 'extra == "kafka"' in extras["streamkit-kafka==0.1.0"]


def test_connectors_register_through_entry_points(wheels: dict[str, zipfile.ZipFile]) -> None:
    for name, client in (("streamkit_kinesis", "boto3"), ("streamkit_kafka", "aiokafka")):
        fields, entry_points = metadata(wheels[name])
        assert "[streamkit.connectors]" in entry_points
        assert f"{name}.plugin:register" in entry_points
        requires = " ".join(fields["Requires-Dist"])
        assert "streamkit==0.1.0" in requires
        assert client in requires
