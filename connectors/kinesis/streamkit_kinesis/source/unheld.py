"""Which shards of an ``end_offsets`` target another live worker reads.

A shard this worker has not held for ``give_up`` seconds (``failover_time + 2 *
take_interval + 1``: long enough for any free or expired lease to have been taken here)
is read by another worker; :meth:`KinesisStreamSource.reached` leaves it out, else an
``available_now`` query would wait for ever. A shard held again counts again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable


class UnheldShards:
    """How long each watched shard has not been held here; which ones are given up."""

    def __init__(self, give_up: float) -> None:
        self.give_up = give_up
        """Seconds unheld after which a shard is left out."""
        self.watched: set[str] = set()
        self.given_up: frozenset[str] = frozenset()
        """Watched shards unheld for more than :attr:`give_up` (as of the last tick)."""
        self._since: dict[str, float] = {}

    def watch(self, shard_ids: Iterable[str]) -> None:
        """Track ``shard_ids`` from now on (the shards of a target)."""
        self.watched.update(shard_ids)

    def tick(self, held: frozenset[str], now: float) -> None:
        """Record which watched shards are ``held`` at ``now``."""
        for shard_id in self.watched:
            if shard_id in held:
                self._since.pop(shard_id, None)
            else:
                self._since.setdefault(shard_id, now)
        self.given_up = frozenset(s for s, t in self._since.items() if now - t > self.give_up)
