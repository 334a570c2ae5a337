"""``streamkit status APP`` on a fleet, against LocalStack's DynamoDB: two real lease tables
(``APP`` and ``APP-exchange``) written with the project's lease store, task status files
written here as the fleet's tasks write them (FLEET.md point 10). Expected owners,
watermarks and totals are worked out by hand in the comments, not by the code under test.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import TYPE_CHECKING, Any

import pytest
from streamkit_kinesis.leases import DynamoDBLeaseStore, Lease
from streamkit_kinesis.types import SHARD_END

from streamkit.cli.fleet_status import TaskStatus

from .conftest import Cli, unique

if TYPE_CHECKING:
    from pathlib import Path

    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack]

JAN_1_2026_MS = 1_767_225_600_000  # (56 * 365 + 14 leap days) * 86,400 s, in ms


def shard(i: int) -> str:
    return f"shardId-{i:012d}"


async def lease_table(endpoint: AwsEndpoint, table: str, owners: dict[int, str | None],
                      finished: dict[int, str] | None = None) -> None:  # fmt: skip
    """Leases ``shard(i)`` owned by ``owners[i]`` (None: free), and ``finished`` ones owned
    but checkpointed at SHARD_END."""
    store = DynamoDBLeaseStore(endpoint, table)
    await store.create_table_if_not_exists()
    for i, owner in {**owners, **(finished or {})}.items():
        lease = await store.create_lease_if_not_exists(Lease(lease_key=shard(i)))
        if owner is not None:
            lease = await store.take_lease(lease, owner)
        if i in (finished or {}):
            await store.update_checkpoint(lease, SHARD_END)


def status_file(root: Path, kind: str, i: int, worker: str, **fields: Any) -> None:
    values = {"kind": kind, "shard": shard(i), "worker": worker, "batch": 0,
              "watermark_ms": None, "lag_ms": None, "rows": 0, "duplicates_dropped": 0,
              "updated": "2026-01-01T00:01:00+00:00"} | fields  # fmt: skip
    folder = root / "fleet" / "tasks"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{kind}-{shard(i)}.json").write_text(json.dumps(values))


@pytest.fixture
def cli(localstack_endpoint: AwsEndpoint) -> Cli:
    return Cli(localstack_endpoint)


@pytest.fixture
def fleet(cli: Cli, tmp_path: Path) -> tuple[str, Path]:
    """Source table: w-a holds shards 0 and 1, w-b shard 2, shard 3 free, shard 4 finished
    (still naming w-c). Exchange table: w-b holds 0, w-a holds 1. Status files for source
    0, 1, 2 (2's last batch by w-old, before w-b took it) and aggregation 0, 1, plus one
    damaged file. w-a's files carry its refused claims: 5 from a previous process of w-a
    (counting since 00:00:00), and from the current one (since 00:01:00) 2, then 1 in the
    file written last (a task that read the count before the second refusal but wrote
    after the other task); w-b's none (written before workers reported them). Only the
    rule "largest count of the newest process" gives 2: the newest file says 1, the first
    file listed 1, the smallest 1, the largest 5."""
    app = unique("fleet")
    asyncio.run(lease_table(cli.endpoint, app, {0: "w-a", 1: "w-a", 2: "w-b", 3: None},
                            finished={4: "w-c"}))  # fmt: skip
    asyncio.run(lease_table(cli.endpoint, f"{app}-exchange", {0: "w-b", 1: "w-a"}))
    root = tmp_path / "ck"
    status_file(root, "source", 0, "w-a", batch=7, lag_ms=1200, rows=500,
                watermark_ms=JAN_1_2026_MS + 20_000, refused_claims=5,
                claims_since="2026-01-01T00:00:00+00:00",
                updated="2026-01-01T00:00:50+00:00")  # fmt: skip
    status_file(root, "source", 1, "w-a", batch=6, lag_ms=0, rows=400,
                watermark_ms=JAN_1_2026_MS + 40_000, refused_claims=2,
                claims_since="2026-01-01T00:01:00+00:00",
                updated="2026-01-01T00:02:00+00:00")  # fmt: skip
    status_file(root, "source", 2, "w-old", batch=3, lag_ms=86_000, rows=90,
                watermark_ms=JAN_1_2026_MS + 15_500)  # fmt: skip
    status_file(root, "aggregation", 0, "w-b", batch=11, rows=12, duplicates_dropped=2,
                watermark_ms=JAN_1_2026_MS + 30_000)  # fmt: skip
    status_file(root, "aggregation", 1, "w-a", batch=9, rows=8, duplicates_dropped=3,
                watermark_ms=JAN_1_2026_MS + 15_500, refused_claims=1,
                claims_since="2026-01-01T00:01:00+00:00",
                updated="2026-01-01T00:03:00+00:00")  # fmt: skip
    (root / "fleet" / "tasks" / "aggregation-broken.json").write_text('{"kind": "aggreg')
    return app, root


def test_json_shows_owners_from_both_tables_and_the_fleet_watermark(
    cli: Cli, fleet: tuple[str, Path]
) -> None:
    app, root = fleet
    out = cli("status", app, "--checkpoint", str(root), "--json")
    assert out.exit_code == 0, out.output
    view = json.loads(out.output)
    # w-c's only lease is finished: it holds no task; shard 3 is free. Refused claims:
    # w-a's current process (since 00:01:00) reached 2; w-b's files carry no count
    assert view["workers"] == {
        "w-a": {"source": [shard(0), shard(1)], "aggregation": [shard(1)], "refused_claims": 2},
        "w-b": {"source": [shard(2)], "aggregation": [shard(0)], "refused_claims": None},
    }
    # min(00:00:30, 00:00:15.5) over the aggregation tasks; 2 + 3 duplicates
    assert view["fleet_watermark_ms"] == JAN_1_2026_MS + 15_500
    assert view["duplicates_dropped"] == 5
    rows = {(r["kind"], r["shard"]): r for r in view["tasks"]}
    assert set(rows) == {("source", shard(i)) for i in range(4)} | {
        ("aggregation", shard(0)), ("aggregation", shard(1))}  # fmt: skip
    assert rows["source", shard(0)]["lag_ms"] == 1200
    assert rows["source", shard(2)]["owner"] == "w-b"  # the lease, not the stale file
    assert rows["source", shard(2)]["last_batch_by"] == "w-old"
    assert rows["source", shard(3)]["owner"] is None
    assert rows["source", shard(3)]["batch"] is None
    assert rows["aggregation", shard(0)]["watermark_ms"] == JAN_1_2026_MS + 30_000
    assert [s.split(":")[0] for s in view["skipped_status_files"]] == [
        "fleet/tasks/aggregation-broken.json"]  # fmt: skip


def test_table_output(cli: Cli, fleet: tuple[str, Path]) -> None:
    app, root = fleet
    out = cli("status", app, "--checkpoint", str(root))
    assert out.exit_code == 0, out.output
    text = out.output
    assert "fleet watermark: 2026-01-01 00:00:15.500 (min of 2 aggregation task(s))" in text
    assert "duplicates dropped: 5" in text
    assert re.search(rf"w-a\s*│\s*{shard(0)}, {shard(1)}\s*│\s*{shard(1)}\s*│\s*2\s*│", text), text
    assert re.search(rf"w-b\s*│\s*{shard(2)}\s*│\s*{shard(0)}\s*│\s*-\s*│", text), text
    assert re.search(rf"source\s*│\s*{shard(2)}\s*│\s*w-b \(last batch by w-old\)\s*│\s*3\s*│"
                     r"\s*86,000 ms", text), text  # fmt: skip
    assert re.search(rf"source\s*│\s*{shard(3)}\s*│\s*\(free\)", text), text
    assert "w-c" not in text
    assert "skipped fleet/tasks/aggregation-broken.json" in text


def test_a_join_of_two_streams_shows_both_streams_shards(cli: Cli, tmp_path: Path) -> None:
    """A join's fleet: the left stream's leases in ``APP``, the right stream's in
    ``APP-right`` (the same shard ids), status files ``source-<stream>-<shard>.json`` with
    ``shard`` = ``<stream>/<shard>``. w-a holds left 0 and 1, w-b right 0, right 1 free."""
    app = unique("fleet-join")
    asyncio.run(lease_table(cli.endpoint, app, {0: "w-a", 1: "w-a"}))
    asyncio.run(lease_table(cli.endpoint, f"{app}-right", {0: "w-b", 1: None}))
    asyncio.run(lease_table(cli.endpoint, f"{app}-exchange", {0: "w-b"}))
    folder = tmp_path / "fleet" / "tasks"
    folder.mkdir(parents=True)
    for side, i, worker, lag in (("left", 0, "w-a", 10), ("right", 0, "w-b", 20)):
        body = {"kind": "source", "shard": f"{side}/{shard(i)}", "worker": worker, "batch": 1,
                "watermark_ms": None, "lag_ms": lag, "rows": 3, "duplicates_dropped": 0,
                "updated": "2026-01-01T00:01:00+00:00"}  # fmt: skip
        (folder / f"source-{side}-{shard(i)}.json").write_text(json.dumps(body))
    out = cli("status", app, "--checkpoint", str(tmp_path), "--json")
    assert out.exit_code == 0, out.output
    view = json.loads(out.output)
    assert view["workers"] == {
        "w-a": {"source": [f"left/{shard(0)}", f"left/{shard(1)}"], "aggregation": [],
                "refused_claims": None},
        "w-b": {"source": [f"right/{shard(0)}"], "aggregation": [shard(0)],
                "refused_claims": None},
    }  # fmt: skip
    rows = {(r["kind"], r["shard"]): r for r in view["tasks"]}
    assert set(rows) == {("source", f"{side}/{shard(i)}") for side in ("left", "right")
                         for i in (0, 1)} | {("aggregation", shard(0))}  # fmt: skip
    assert rows["source", f"right/{shard(0)}"]["lag_ms"] == 20
    assert rows["source", f"left/{shard(0)}"]["lag_ms"] == 10
    assert rows["source", f"right/{shard(1)}"]["owner"] is None


def test_status_files_alone_and_a_task_without_watermark(cli: Cli, tmp_path: Path) -> None:
    app = unique("fleet-files")  # no lease table at all
    status_file(tmp_path, "aggregation", 0, "w-a", watermark_ms=JAN_1_2026_MS)
    status_file(tmp_path, "aggregation", 1, "w-b", watermark_ms=None, duplicates_dropped=4)
    out = cli("status", app, "--checkpoint", str(tmp_path), "--json")
    assert out.exit_code == 0, out.output
    view = json.loads(out.output)
    # one aggregation task has no watermark yet: no window is closed fleet-wide
    assert view["fleet_watermark_ms"] is None
    assert view["duplicates_dropped"] == 4
    assert view["workers"] == {}
    assert view["exchange_table"] is False
    text = cli("status", app, "--checkpoint", str(tmp_path)).output
    assert "fleet watermark: none yet" in text
    assert f"no lease table '{app}-exchange'" in text
    assert "(no lease)" in text


def test_no_fleet_needs_stream_or_checkpoint(cli: Cli, tmp_path: Path) -> None:
    app = unique("nofleet")
    plain = cli("status", app)
    assert plain.exit_code == 2, plain.output
    assert "--stream is needed" in plain.output
    as_json = cli("status", app, "--json")
    assert as_json.exit_code == 3, as_json.output
    assert "shows no fleet" in as_json.output
    missing = cli("status", app, "--checkpoint", str(tmp_path / "nope"))
    assert missing.exit_code == 3
    assert "no checkpoint root" in missing.output


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [({"kind": "sink"}, "kind 'sink'"), ({"batch": True}, "batch is True"),
     ({"lag_ms": "5"}, "lag_ms is '5'"), ({"worker": None}, "worker is missing"),
     ({"refused_claims": "1"}, "refused_claims is '1'"),
     ({"claims_since": "garbage"}, "claims_since is 'garbage'"),
     ({"claims_since": "2026-01-01T00:00:00"}, "not an ISO 8601 time with an offset")],
)  # fmt: skip
def test_a_damaged_status_file_is_named(fields: dict[str, Any], complaint: str) -> None:
    good = {"kind": "source", "shard": "s", "worker": "w", "batch": 1, "watermark_ms": None,
            "lag_ms": None, "rows": 0, "duplicates_dropped": 0, "updated": "t"}  # fmt: skip
    assert TaskStatus.parse(json.dumps(good).encode()).batch == 1
    with pytest.raises(ValueError, match=re.escape(complaint)):
        TaskStatus.parse(json.dumps(good | fields).encode())


def test_status_files_under_an_s3_checkpoint_root(cli: Cli) -> None:
    app, bucket = unique("fleet-s3"), unique("fleet-ck")
    s3 = cli.endpoint.client("s3")
    s3.create_bucket(Bucket=bucket)
    for i, mark, dups in ((0, JAN_1_2026_MS + 61_000, 1), (1, JAN_1_2026_MS + 59_999, 0)):
        body = {"kind": "aggregation", "shard": shard(i), "worker": "w-s3", "batch": 2,
                "watermark_ms": mark, "lag_ms": 0, "rows": 1, "duplicates_dropped": dups,
                "updated": "2026-01-01T00:02:00+00:00"}  # fmt: skip
        s3.put_object(Bucket=bucket, Key=f"jobs/ck/fleet/tasks/aggregation-{shard(i)}.json",
                      Body=json.dumps(body).encode())  # fmt: skip
    out = cli("status", app, "--checkpoint", f"s3://{bucket}/jobs/ck", "--json")
    assert out.exit_code == 0, out.output
    view = json.loads(out.output)
    assert view["fleet_watermark_ms"] == JAN_1_2026_MS + 59_999  # min(00:01:01, 00:00:59.999)
    assert view["duplicates_dropped"] == 1
    missing = cli("status", app, "--checkpoint", f"s3://{unique('no-bucket')}/ck")
    assert missing.exit_code == 1
    assert "does not exist" in missing.output
