"""The README's "## Operators" examples run, each as its own process, and print what their
``# ->`` comments say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def blocks(section: str) -> list[str]:
    """The ``python`` code blocks of the README section titled ``section``."""
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end >= 0 else len(text)]
    return re.findall(r"```python\n(.*?)```", body, flags=re.DOTALL)


BLOCKS = blocks("Operators")


def test_the_section_has_an_example_per_operator() -> None:
    text = "\n".join(BLOCKS)
    for call in (
        ".drop_duplicates(",
        ".drop_duplicates_within_watermark(",
        ".filter(",
        "sk.window_time(",
        ".join(",
        ".apply_in_pandas_with_state(",
        ".transform_with_state_in_pandas(",
    ):
        assert call in text


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_operator_example_prints_what_it_says(index: int, tmp_path: Path) -> None:
    code = BLOCKS[index]
    promised = [line.split("# ->", 1)[1].strip() for line in code.splitlines() if "# ->" in line]
    assert promised, "an example must say what it prints"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == promised
