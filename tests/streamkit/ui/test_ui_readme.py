"""The README's web UI example runs as written, in its own process, and prints what its
``# ->`` comment says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[3] / "README.md"


def ui_example() -> str:
    """The python block of the README's "### Web UI" subsection."""
    text = README.read_text()
    start = text.index("\n### Web UI\n")
    end = min(text.index("\n## ", start), text.index("\n### ", start + 1))
    blocks = re.findall(r"```python\n(.*?)```", text[start:end], flags=re.DOTALL)
    assert len(blocks) == 1
    return str(blocks[0])


def test_readme_ui_example_runs(tmp_path: Path) -> None:
    code = ui_example()
    promised = [line.split("# ->", 1)[1].strip() for line in code.splitlines() if "# ->" in line]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == promised == ["active 3"]
