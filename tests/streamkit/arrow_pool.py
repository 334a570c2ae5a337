"""What a piece of code takes from Arrow's default memory pool, counted in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def default_pool_bytes_in_child(target: str, directory: Path) -> int:
    """Bytes counted by ``target`` (``"module:function"``: called with ``directory``, it
    returns a tuple whose last item is what it took from ``pa.default_memory_pool()``), run in
    a new interpreter. The pool is process-wide: threads left by other tests (or by other
    modules of a pytest-xdist worker) must not add to the count."""
    module, function = target.split(":")
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        f"from {module} import {function} as run\n"
        "print(run(Path(sys.argv[1]))[-1])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(directory)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])
