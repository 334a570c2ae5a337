"""W4's floor: what the least per-key work of a keyed merge costs at 10k and at 5M keys.

W4 (``state_store.py``) asks for a 100k-row batch at 5M keys held within 1.5x of one at
10k. Uniform draws touch ~10,000 keys at 10k and ~99,000 at 5M, and at 5M the state is far
larger than the CPU caches. This measures, with numpy only and no streamkit code, the work
no keyed store can skip for a batch of additive aggregates (count, sum): find each touched
key's slot through a hash table (one random read of a table twice the keys), read its
state, add, write it back, and gather the touched keys' rows for the delta and the output.
Each stage is one whole-array numpy gather or scatter (no sort, no group-by, no Python loop
per row), so the figure is the memory traffic, with little else; where it simplifies (a
key drawn twice keeps one addition; the rows out are one per row drawn) it does the same
work or more at 10k, which only lowers the ratio.

    .venv/bin/python bench/w4_floor.py [--keys 10000 5000000] [--rows 100000] [--repeat 9]

Prints, per key count, the median CPU ms per batch and keys touched, and the 5M / 10k
ratio. A store's batch costs this floor plus what does not depend on the keys (reading
the file, the commit); a floor ratio far above 1.5 means W4's 1.5x on uniform draws is met
only while those fixed costs dominate the 10k batch, and a faster merge moves it away.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

MUL = np.uint64(0x9E3779B97F4A7C15)


def batch_cost(keys: int, rows: int, repeat: int, seed: int) -> tuple[float, int]:
    """Median CPU seconds of one batch's floor work at ``keys`` keys held; keys touched."""
    rng = np.random.default_rng(seed)
    size = 1 << int(np.ceil(np.log2(2 * keys)))  # a hash table at load <= 1/2
    shift = np.uint64(64 - int(np.log2(size)))
    slot_of_cell = np.full(size, -1, np.int64)
    user = np.arange(keys, dtype=np.int64)
    # place every key (linear probing, done once, untimed)
    for k, home_cell in enumerate(((user.astype(np.uint64) * MUL) >> shift).tolist()):
        cell = home_cell
        while slot_of_cell[cell] >= 0:
            cell = (cell + 1) % size
        slot_of_cell[cell] = k
    window = np.full(keys, 1_704_067_200_000_000, np.int64)
    count = np.ones(keys, np.int64)
    total = rng.random(keys)
    costs, touched = [], 0
    for _ in range(repeat):
        users = rng.integers(0, keys, rows)
        values = rng.random(rows)
        started = time.process_time()
        cell = ((users.astype(np.uint64) * MUL) >> shift).astype(np.int64)
        slots = slot_of_cell[cell]  # the probe: one random read per row
        # rows whose key is further down its chain step on together, one cell per pass
        pending = np.flatnonzero(user[slots] != users)
        while pending.size:
            cell[pending] = (cell[pending] + 1) & (size - 1)
            slots[pending] = slot_of_cell[cell[pending]]
            pending = pending[user[slots[pending]] != users[pending]]
        old_count, old_total = count[slots], total[slots]  # read each touched state
        count[slots] = old_count + 1  # and write it back (a key drawn twice in a batch
        total[slots] = old_total + values  # keeps one addition: the same memory traffic)
        # the rows out, for the delta and the output: one per row drawn, which at 10k keys
        # gathers ~10x the rows a store writes; that only lowers the ratio below
        delta = (window[slots], user[slots], count[slots], total[slots])
        costs.append(time.process_time() - started)
        touched = int(np.unique(slots).size)
        assert delta[1].size == rows
    return statistics.median(costs), touched


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", type=int, nargs="+", default=[10_000, 5_000_000])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=9)
    args = p.parse_args()
    results = {}
    for keys in args.keys:
        cost, touched = batch_cost(keys, args.rows, args.repeat, seed=keys)
        results[keys] = cost
        print(f"{keys:>10,} keys: {cost * 1e3:6.1f} ms CPU per batch, {touched:,} keys touched")
    low, high = min(args.keys), max(args.keys)
    print(f"floor ratio {high:,} / {low:,} keys: {results[high] / results[low]:.2f}x")


if __name__ == "__main__":
    main()
