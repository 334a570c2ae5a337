"""Which shards of an ``end_offsets`` target another live worker reads.

A shard this worker has not held for ``give_up`` seconds (``failover_time + 2 *
take_interval + 1``: long enough for any free or expired lease to have been taken here)
is read by another worker; :meth:`KinesisStreamSource.reached` leaves it out, else an
``available_now`` query would wait for ever. A shard held again counts again.

A shard waiting for its parents is not counted as unheld while a parent of it is held
here, or is itself waiting (a grandchild): no worker may read a child before every parent
is read to its end and checkpointed at SHARD_END, and this worker reads that parent, so
the child's lease (created by this worker when the parent ends) cannot be held anywhere
yet. Its clock starts when the last such parent is released here (finished, or lost):
from then on the rule above applies. So a parent backlog of any length keeps its
children (lease-less at the call, :func:`~.tips.tip_scope`) in the target.

Each new target replaces the watched shards: a shard absent from it is retired (dropped
from the clocks and the lineage, so a tick costs O(current target x depth) however often
the stream reshards). A shard leaves the target only when it is neither held here, nor
has an unfinished lease, nor descends lease-less from such a shard: its lease is finished
(its records committed by whoever read it; here, the query's offsets are at SHARD_END)
or it has left the listing. So a target taken earlier (a predicate still waiting on it)
may leave it out like a given-up shard. The last :data:`RETIRED_KEPT` retired ids are
kept for that (bounded memory); a shard listed again is watched again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence


RETIRED_KEPT = 4096
"""How many retired shard ids are remembered (oldest forgotten first)."""


class UnheldShards:
    """How long each watched shard has not been held here; which ones are given up."""

    def __init__(self, give_up: float) -> None:
        self.give_up = give_up
        """Seconds unheld after which a shard is left out."""
        self.watched: set[str] = set()
        self.given_up: frozenset[str] = frozenset()
        """Watched shards unheld for more than :attr:`give_up` (as of the last tick)."""
        self._since: dict[str, float] = {}
        self._parents: dict[str, tuple[str, ...]] = {}
        self._retired: dict[str, None] = {}  # insertion-ordered: oldest first

    def left_out(self, shard_id: str) -> bool:
        """True when ``shard_id`` is given up or retired (see the module docstring)."""
        return shard_id in self.given_up or shard_id in self._retired

    def watch(
        self, shard_ids: Iterable[str], parents: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        """Track ``shard_ids`` from now on (the shards of a new target), each with its
        ``parents`` (as listed; absent: none known); the shards of earlier targets that
        are not among them are retired (see the module docstring)."""
        new = set(shard_ids)
        for shard_id in self.watched - new:
            self._since.pop(shard_id, None)
            self._retired[shard_id] = None
        while len(self._retired) > RETIRED_KEPT:
            del self._retired[next(iter(self._retired))]
        self._parents = {s: p for s, p in self._parents.items() if s in new}
        for shard_id in new:
            self._retired.pop(shard_id, None)
            known = (parents or {}).get(shard_id)
            if known:
                self._parents[shard_id] = tuple(known)
        self.watched = new
        self.given_up = self.given_up & new

    def tick(self, held: frozenset[str], now: float) -> None:
        """Record which watched shards are ``held`` at ``now`` (a shard waiting for a
        parent held here counts as held, see the module docstring)."""
        waiting = self.waiting(held)
        for shard_id in self.watched:
            if shard_id in held or shard_id in waiting:
                self._since.pop(shard_id, None)
            else:
                self._since.setdefault(shard_id, now)
        self.given_up = frozenset(s for s, t in self._since.items() if now - t > self.give_up)

    def waiting(self, held: frozenset[str]) -> set[str]:
        """The watched shards with a parent ``held`` here or waiting itself. O(watched x
        depth of the lineage) dict and set lookups (a pass adds a generation)."""
        found: set[str] = set()
        grew = True
        while grew:
            grew = False
            for shard_id, parents in self._parents.items():
                if shard_id not in found and any(p in held or p in found for p in parents):
                    found.add(shard_id)
                    grew = True
        return found
