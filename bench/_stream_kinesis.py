"""W3 fed from Kinesis (kinesalite): rows/s end to end, through a ``KinesisStreamSource``.

Skipped, with a notice, while ``streamkit.connectors.kinesis.stream_source`` does not exist.
"""

from __future__ import annotations

import importlib.util
from typing import Any

SOURCE_MODULE = "streamkit.connectors.kinesis.stream_source"


def run_kinesis(records: int, seed: int, very_late: float) -> dict[str, Any]:
    """Produce ``records`` W3 rows to a 4-shard kinesalite stream and run W3 over them."""
    if importlib.util.find_spec(SOURCE_MODULE) is None:
        return {
            "skipped": True,
            "line": f"Kinesis: skipped, {SOURCE_MODULE} is not there yet.",
        }
    raise NotImplementedError("the Kinesis stream source exists now: wire it in here")
