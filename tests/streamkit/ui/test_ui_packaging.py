"""The UI's page, script and style ship in the wheel (package data), and without
``streamkit[ui]`` asking for the UI names the install command (aiohttp hidden for real)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

from tests.streamkit.test_packaging import engine_site, run_engine_only

__all__ = ["engine_site"]

ROOT = Path(__file__).resolve().parents[3]


def test_every_static_file_is_declared_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    globs = config["package-data"]["streamkit"]
    static = sorted((ROOT / "streamkit" / "ui" / "static").iterdir())
    assert {p.name for p in static} >= {"index.html", "query.html", "ui.js", "charts.js", "ui.css"}
    for path in static:
        relative = path.relative_to(ROOT / "streamkit").as_posix()
        assert any(fnmatch.fnmatch(relative, g) for g in globs), relative


def test_ui_without_the_extra_names_the_install_command(engine_site: Path) -> None:
    out = run_engine_only(engine_site, """
import importlib.util
import pyarrow as pa
import streamkit as sk
from streamkit.errors import MissingDependencyError
out["visible"] = importlib.util.find_spec("aiohttp") is not None
df = sk.read_stream.memory(pa.schema([("v", pa.int64())]))
for name, fn in (("serve", lambda: sk.ui.serve(0)),
                 ("start", lambda: df.write_stream.memory("x").start(ui_port=1))):
    try:
        fn()
    except MissingDependencyError as e:
        out[name] = str(e)
""")
    assert out["visible"] is False
    assert "pip install 'streamkit[ui]'" in str(out["serve"])
    assert "pip install 'streamkit[ui]'" in str(out["start"])
