"""The command line the Kinesis record benches share: ``--records N --reps R``, the
report printed, the outcome kept as ``bench/results/<name>_<UTC time>.json``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def run(
    name: str,
    doc: str | None,
    main: Callable[[argparse.Namespace], dict[str, Any]],
    report: Callable[[dict[str, Any]], str],
    options: Callable[[argparse.ArgumentParser], object] | None = None,
) -> Path:
    """Parse the arguments (``options`` adds the bench's own), run ``main``, print
    ``report`` of its outcome, save it."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--reps", type=int, default=3)
    if options is not None:
        options(p)
    outcome = main(p.parse_args())
    print(report(outcome))
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    path = RESULTS_DIR / f"{name}_{stamp}.json"
    path.write_text(json.dumps(outcome, indent=1, default=str))
    print(f"wrote {path}", file=sys.stderr, flush=True)
    return path
