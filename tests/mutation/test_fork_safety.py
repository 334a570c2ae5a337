"""`make mutation`'s fork server collects the test selection once and forks a child per
mutant (``forkserver_warmup = collect``). Polars' thread pool does not survive fork(): a
child forked after a parallel query hangs. So collecting the selection must run no query.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.mutation.targets import GROUPS

REPO = Path(__file__).resolve().parents[2]

PROBE = textwrap.dedent(
    """
    import os, sys
    import pytest
    code = pytest.main(["--collect-only", "-qqq", "-p", "no:cacheprovider", *sys.argv[1:]])
    tasks = os.listdir("/proc/self/task")
    print(sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in tasks))
    sys.exit(code)
    """
)


def test_collecting_the_selection_starts_no_polars_thread_pool() -> None:
    for group in GROUPS:
        root = REPO / group.root
        done = subprocess.run(
            [sys.executable, "-c", PROBE, "-m", "not integration", *group.tests()],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        threads = done.stdout.strip().splitlines()[-1]
        # polars names its pool's workers polars-0, polars-1, ...
        assert "'polars-0'" not in threads, (group.name, threads)
