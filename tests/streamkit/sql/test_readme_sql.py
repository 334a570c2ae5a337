"""The README's "### SQL" example runs in its own process and prints what its ``# ->``
comments say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[3] / "README.md"


def sql_blocks() -> list[str]:
    """The ``python`` code blocks of the README subsection "### SQL"."""
    text = README.read_text()
    start = text.index("\n### SQL\n")
    end = min(
        i
        for i in (text.find("\n## ", start + 1), text.find("\n### ", start + 1), len(text))
        if i >= 0
    )
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.DOTALL)


def test_readme_sql_example_prints_what_it_says(tmp_path: Path) -> None:
    (code,) = sql_blocks()
    assert "sk.sql(" in code
    assert "create_or_replace_temp_view" in code
    promised = [line.split("# ->", 1)[1].strip() for line in code.splitlines() if "# ->" in line]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == promised
