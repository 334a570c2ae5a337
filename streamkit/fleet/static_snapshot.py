"""The static sides of a fleet query: one snapshot for the query's life, verified at start.

After a takeover the new owner of a source shard re-reads the range the dead owner was
emitting and joins it again. If the two owners joined against different rows of a static
table, the exchange partitions that got the first owner's chunks keep rows of one snapshot
and the others rows of the other (rows counted twice or lost; a part count that changed
stops the partition's aggregation task for good), and a stateless file sink keeps both
attempts' files. So on a fleet the static sides never change while the query lives:

- :meth:`~streamkit.fleet.fleet_plan.FleetPlan.of` refuses a static side that reads a
  reloading table (``reload_every``);
- :func:`verify_static_sides`, at every worker start, fingerprints each side's rows
  (:func:`fingerprint`) and records the fingerprints in :data:`STATIC_FILE` under the
  query's checkpoint root if no start recorded them yet (a compare-and-swap against an
  absent file: local ``flock``, S3 ``If-None-Match: *``); a start whose fingerprints differ
  from the recorded ones raises :class:`StaticSideChangedError` before anything is read.
  The worker then joins every batch against the rows it fingerprinted (a side without a
  reloading table is computed once and never again).

Cost: once per worker start, one sort of each static table by all its columns, one
uncompressed Arrow IPC serialisation and a SHA-256 over it (linear in the table's size:
small for dimension tables: 0.05 / 0.6 CPU s for 100,000 / 1,000,000 rows of three
columns, 2.4 / 24 MB, measured once on a loaded 2-core box), plus one read (and at the
first start one write) of a small file in the checkpoint store.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from typing import TYPE_CHECKING

import polars as pl

from streamkit.errors import StreamkitError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from streamkit.streaming.owner import SwappingStore
    from streamkit.streaming.static_sides import StaticSide

STATIC_FILE = "static-sides"
"""The fingerprints' record in a fleet query's checkpoint root (JSON)."""


class StaticSideChangedError(StreamkitError):
    """A static side's rows differ from the rows the fleet query started with."""


def fingerprint(rows: pl.DataFrame) -> str:
    """SHA-256 (hex) of ``rows`` independent of their order and of how they are chunked:
    sorted by every column (plan order when a column cannot be sorted), categoricals as
    strings, as an uncompressed Arrow IPC stream at polars' oldest compatibility level
    (contiguous string buffers). Equal for equal rows with one polars version."""
    canon = rows.with_columns(pl.col(pl.Categorical, pl.Enum).cast(pl.String))
    with contextlib.suppress(pl.exceptions.PolarsError):  # no order: keep the plan's
        canon = canon.sort(canon.columns, nulls_last=True, maintain_order=True)
    out = io.BytesIO()
    canon.rechunk().write_ipc_stream(
        out, compression="uncompressed", compat_level=pl.CompatLevel.oldest()
    )
    return hashlib.sha256(out.getvalue()).hexdigest()


def _entries(sides: Sequence[StaticSide]) -> list[tuple[str, str, int]]:
    """(description, fingerprint, rows) of each side, its rows pinned now."""
    return [
        (side.plan.describe(), fingerprint(rows := side.snapshot()), rows.height) for side in sides
    ]


def _changes(first: list[tuple[str, str, int]], now: list[tuple[str, str, int]]) -> list[str]:
    if len(first) != len(now):
        return [f"the query had {len(first)} static side(s) and now has {len(now)}"]
    out = []
    for i, ((_, sha0, rows0), (side, sha, rows)) in enumerate(zip(first, now, strict=True)):
        if sha != sha0:
            counts = f"{rows} rows now, {rows0} then" if rows != rows0 else "other rows"
            out.append(f"static side {i} ({side}): {counts}")
    return out


def verify_static_sides(sides: Sequence[StaticSide], store: SwappingStore, where: str) -> None:
    """Pin each side's rows, record their fingerprints in ``store`` (the query's checkpoint
    root, described by ``where``) if absent, else check them against the record; raises
    :class:`StaticSideChangedError` naming the sides that changed. No sides: nothing."""
    if not sides:
        return
    now = _entries(sides)
    record = [{"side": side, "sha256": sha, "rows": rows} for side, sha, rows in now]
    if store.swap_bytes(STATIC_FILE, None, json.dumps({"sides": record}).encode()):
        return
    raw = store.read_bytes(STATIC_FILE)
    try:
        first = [(str(e["side"]), str(e["sha256"]), int(e["rows"]))
                 for e in json.loads(raw or b"")["sides"]]  # fmt: skip
    except (ValueError, KeyError, TypeError) as exc:
        raise StaticSideChangedError(
            f"{where}/{STATIC_FILE} is damaged ({exc}); it holds the fingerprints of the "
            "static tables the query started with: restore it, or start the fleet on a new "
            "checkpoint root"
        ) from exc
    changed = _changes(first, now)
    if changed:
        raise StaticSideChangedError(
            "a static table of this fleet query changed since the query started ("
            + "; ".join(changed)
            + f"; fingerprints in {where}/{STATIC_FILE}). On a fleet a static side is one "
            "snapshot for the query's life: a range re-read after a takeover must join "
            "against the same rows. Put the table back as it was, or start the fleet on a new "
            "checkpoint root to pick up the new table (or run the query as one process)"
        )
