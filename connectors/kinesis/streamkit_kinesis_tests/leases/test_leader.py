"""Write-free leader decision (issue 12, item 10): KCL 2.x's deterministic shuffle of the
lease owners, decided from each take cycle's scan. The shuffle is checked against a JVM
(``Collections.shuffle`` with ``new Random(1947)``); the coordinator runs on memory and on
real DynamoDB servers, with an injected clock."""

from __future__ import annotations

import random
import shutil
import subprocess
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.leases import DynamoDBLeaseStore, Lease, LeaseCoordinator, LeaseStore
from streamkit_kinesis.leases.leader import elect_leaders, java_shuffle, java_sorted
from streamkit_kinesis.testing.leases import FakeClock, new_store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param(
        "localstack", id="localstack", marks=[pytest.mark.integration, pytest.mark.localstack]
    ),
]
FAILOVER = 10.0

JAVA_SHUFFLE = """
import java.io.*;
import java.nio.charset.StandardCharsets;
import java.util.*;

public class Shuffle {
    public static void main(String[] args) throws IOException {
        BufferedReader in = new BufferedReader(
            new InputStreamReader(System.in, StandardCharsets.UTF_8));
        PrintStream out = new PrintStream(System.out, true, "UTF-8");
        String line;
        while ((line = in.readLine()) != null) {
            List<String> ids = new ArrayList<>(Arrays.asList(line.split("\\t", -1)));
            Collections.sort(ids);
            Collections.shuffle(ids, new Random(1947));
            out.println(String.join("\\t", ids));
        }
    }
}
"""


def random_ids(rng: random.Random) -> list[str]:
    alphabet = "abcXYZ019-:.é中\U0001f600\uff21"
    n = rng.randint(1, 40)
    ids = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(n)}
    return sorted(ids)


@pytest.mark.skipif(shutil.which("java") is None, reason="needs a JVM (the KCL peer's)")
def test_the_shuffle_is_javas_bit_for_bit(tmp_path: Path) -> None:
    """The same ids give the same order as Java's sort + shuffle with seed 1947, so a
    streamkit worker elects the leader a KCL 2.x worker on the same table elects."""
    source = tmp_path / "Shuffle.java"
    source.write_text(JAVA_SHUFFLE)
    rng = random.Random(7)
    cases = [random_ids(rng) for _ in range(300)]
    cases += [[f"worker-{i}" for i in range(n)] for n in (1, 2, 3, 8, 16, 17, 64)]
    stdin = "".join("\t".join(ids) + "\n" for ids in cases)
    done = subprocess.run(
        ["java", str(source)], input=stdin.encode(), capture_output=True, timeout=120, check=True
    )
    expected = [line.split("\t") for line in done.stdout.decode().splitlines()]
    assert len(expected) == len(cases)
    for ids, java in zip(cases, expected, strict=True):
        assert java_shuffle(java_sorted(ids)) == java, ids
        assert elect_leaders(ids) == {java[0]}


def test_no_owner_means_every_worker_leads() -> None:
    assert elect_leaders([]) == frozenset()
    assert elect_leaders(["b", "a", "b"], count=5) == {"a", "b"}


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[LeaseStore]:
    backend: str = request.param
    endpoint = None if backend == "memory" else request.getfixturevalue(f"{backend}_endpoint")
    created = await new_store(backend, endpoint, prefix="leader")
    for i in range(4):
        await created.create_lease_if_not_exists(Lease(f"shard-{i}"))
    yield created
    if isinstance(created, DynamoDBLeaseStore):
        await created.delete_table()


def leading(c: LeaseCoordinator) -> bool:
    return c.is_leader


def coordinators(
    store: LeaseStore, clock: FakeClock, ids: str, max_leases: int = 2
) -> list[LeaseCoordinator]:
    return [
        LeaseCoordinator(
            store, w, failover_time=FAILOVER, clock=clock, elect_leader=True, max_leases=max_leases
        )
        for w in ids
    ]


async def test_one_leader_from_the_scan_with_no_write_and_no_extra_read(store: LeaseStore) -> None:
    """Fresh table: everyone leads until leases are owned (KCL's rule); then exactly the
    worker KCL's shuffle picks, on every worker, for minutes of renewals and take cycles,
    and the election adds no call: writes are renewals and takes only, reads the scans."""
    clock = FakeClock()
    a, b = coordinators(store, clock, "AB")
    for c in (a, b):
        await c.start(background=False)
    assert (a.is_leader, b.is_leader) == (False, False)  # before any scan
    await a.take_once()
    assert a.is_leader  # nobody owned a lease in its scan: it leads
    await b.take_once()
    await a.take_once()
    expected = min(elect_leaders("AB"))
    assert [c.worker_id for c in (a, b) if c.is_leader] in ([expected], ["A", "B"])
    before = dict(store.call_counts())
    for i in range(36):  # two minutes of KCL's cadence: renew every 10/3 s, take every 20 s
        clock.advance(FAILOVER / 3)
        for c in (a, b):
            await c.renew_once()
        if i % 6 == 5:
            for c in (a, b):
                await c.take_once()
            assert [c.worker_id for c in (a, b) if c.is_leader] == [expected]
            assert a.metrics().is_leader == (expected == "A")
    counts = store.call_counts().items()
    calls = {op: n - before.get(op, 0) for op, n in counts if n - before.get(op, 0)}
    assert calls == {"UpdateItem": 36 * 4, "Scan": 12}, calls
    assert len(await store.list_leases()) == 4  # no leader item


async def test_a_dead_leaders_role_moves_once_its_leases_expire(store: LeaseStore) -> None:
    """With ``max_leases=1`` nobody takes the dead leader's lease: it stays owned by the
    dead worker in the table (where KCL's rule would keep electing it), yet the role
    moves to a live worker once the lease is expired."""
    clock = FakeClock()
    workers = coordinators(store, clock, "ABC", max_leases=1)
    for c in workers:
        await c.start(background=False)
    for _ in range(3):
        for c in workers:
            await c.take_once()
    by_id = {c.worker_id: c for c in workers}
    table = await store.list_leases()
    owners = {lease.lease_owner for lease in table if lease.lease_owner is not None}
    assert owners == set(by_id)
    leader = min(elect_leaders(owners))
    assert [c.worker_id for c in workers if c.is_leader] == [leader]
    dead = by_id.pop(leader)
    await dead.stop()  # a crash: no release, its leases stay owned in the table
    survivors = list(by_id.values())
    clock.advance(FAILOVER / 2)
    for c in survivors:
        await c.renew_once()
        await c.take_once()
    assert not any(c.is_leader for c in survivors)  # the dead one is not expired yet
    for _ in range(4):
        clock.advance(FAILOVER / 3)
        for c in survivors:
            await c.renew_once()
            await c.take_once()
    table = await store.list_leases()
    assert leader in {lease.lease_owner for lease in table}  # never taken
    successor = min(elect_leaders(by_id))
    assert [c.worker_id for c in survivors if c.is_leader] == [successor]


async def test_a_graceful_stop_hands_the_role_on_at_the_next_scan(store: LeaseStore) -> None:
    clock = FakeClock()
    a, b = coordinators(store, clock, "AB")
    for _ in range(2):
        for c in (a, b):
            await c.start(background=False)
            await c.take_once()
    leader, other = (a, b) if a.is_leader else (b, a)
    assert leader.is_leader
    assert not other.is_leader
    await leader.release_all()
    await other.take_once()
    assert (leading(leader), leading(other)) == (False, True)
    plain = LeaseCoordinator(store, "C", failover_time=FAILOVER, clock=clock)
    assert plain.is_leader  # without an election every worker does the leader's work
