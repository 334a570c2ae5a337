"""The lease-table audit's rule (KCL's hash-range hole check and confidence tracker), pure.

Expected holes come from how each table is built: the key space is cut into random
contiguous ranges (a known partition), then one range is removed or finished, or parents
overlapping their children are added, so where the hole is (or that there is none) is
known without the code under test.
"""

from __future__ import annotations

import itertools
import random

from streamkit_kinesis.leases import Lease
from streamkit_kinesis.leases.audit import (
    MAX_HASH_KEY,
    HashRangeHole,
    HoleTracker,
    find_hole,
)
from streamkit_kinesis.types import SHARD_END, HashKeyRange


def partition(rng: random.Random, parts: int) -> list[HashKeyRange]:
    cuts = sorted({rng.randint(1, MAX_HASH_KEY) for _ in range(parts - 1)})
    bounds = [0, *cuts, MAX_HASH_KEY + 1]
    return [HashKeyRange(a, b - 1) for a, b in itertools.pairwise(bounds)]


def table(ranges: list[HashKeyRange], finished: int | None = None) -> list[Lease]:
    return [
        Lease(
            f"s{i}",
            hash_key_range=r,
            checkpoint=SHARD_END if i == finished else Lease("x").checkpoint,
        )
        for i, r in enumerate(ranges)
    ]


def test_a_partition_is_complete_and_a_missing_range_is_the_hole() -> None:
    rng = random.Random(3)
    for _ in range(300):
        parts = partition(rng, rng.randint(1, 12))
        leases = table(parts)
        rng.shuffle(leases)
        assert find_hole(leases, {}) is None
        gone = rng.randrange(len(parts))
        for rest in (
            [lease for lease in leases if lease.lease_key != f"s{gone}"],  # deleted
            table(parts, finished=gone),  # at SHARD_END with no children
        ):
            hole = find_hole(rest, {})
            assert hole is not None
            before = parts[gone - 1] if gone > 0 else None
            after = parts[gone + 1] if gone + 1 < len(parts) else None
            if len(parts) > 1:
                assert hole == HashRangeHole(before, after), (gone, len(parts))


def test_unfinished_parents_overlapping_children_and_known_ranges_are_no_hole() -> None:
    rng = random.Random(5)
    for _ in range(100):
        parts = partition(rng, rng.randint(2, 8))
        leases = table(parts)
        i = rng.randrange(len(parts) - 1)  # a parent over two neighbours, not finished yet
        merged = HashKeyRange(parts[i].starting_hash_key, parts[i + 1].ending_hash_key)
        leases.append(Lease("parent", hash_key_range=merged))
        assert find_hole(leases, {}) is None
        bare = [Lease(lease.lease_key) for lease in leases]  # no ranges stored
        known = {
            lease.lease_key: lease.hash_key_range
            for lease in leases
            if lease.hash_key_range is not None
        }
        assert find_hole(bare, known) is None  # filled from the shard descriptions
        assert find_hole(bare, {}) == HashRangeHole(None, None)  # KCL: none with a range


def test_the_same_hole_three_audits_in_a_row_and_only_then_a_sync() -> None:
    a = HashRangeHole(HashKeyRange(0, 9), HashKeyRange(20, MAX_HASH_KEY))
    b = HashRangeHole(HashKeyRange(0, 9), HashKeyRange(30, MAX_HASH_KEY))
    tracker = HoleTracker(3)
    assert [tracker.observe(h) for h in (a, a, None, a, b, a, a)] == [False] * 7
    assert tracker.observe(a)  # third in a row
    assert not tracker.observe(a)  # the count restarts after a sync
    assert [tracker.observe(a) for _ in range(2)] == [False, True]
