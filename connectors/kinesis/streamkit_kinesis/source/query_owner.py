"""Owner leases of a Kinesis source: one live query per app name, one live process per
worker id (:mod:`streamkit.streaming.owner` on DynamoDB items).

They live in a side table ``{app_name}-owners`` (key ``key``: ``query``, or
``worker#<worker id>``), not in the lease table: a Java KCL worker sharing the lease table
would read any extra item there as a shard lease (KCL 3.x likewise keeps its coordinator
state in a table of its own). Each item holds an :class:`OwnerRecord` written with
conditional puts, renewed by the query's owner heartbeat and released on a clean stop.

- ``query``: a second query on the same app name with another checkpoint folder (or none)
  is refused with :class:`AppInUseError` while the first is alive: the lease table mirrors
  ONE query's checkpoint. A query on the same checkpoint folder takes the item over at once
  (it holds the folder's owner lease, so the previous holder is dead or was forced out).
- ``worker#<id>``: a second live process with the same worker id is refused with
  :class:`DuplicateWorkerIdError` (else it would silently take every lease of the first).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from streamkit.streaming.owner import OwnerLease, QueryAlreadyRunningError
from streamkit_kinesis.source.errors import KinesisSourceError

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint
    from streamkit.streaming.owner import OwnerRecord, QueryIdentity


class AppInUseError(QueryAlreadyRunningError):
    """Another live query (another checkpoint folder) reads this Kinesis app name."""


class DuplicateWorkerIdError(QueryAlreadyRunningError):
    """Another live process uses this worker id (``leaseOwner``)."""


def owners_table(app_name: str) -> str:
    """The side table of an app's owner records."""
    return f"{app_name}-owners"


@dataclass(frozen=True)
class DynamoDBOwnerCell:
    """One owner item as a :class:`~streamkit.streaming.owner.RecordCell` (conditional
    puts: ``attribute_not_exists`` to create, equality on the record to swap)."""

    client: Any
    table: str
    key: str
    where: str

    def read(self) -> bytes | None:
        item = self._call(
            lambda: self.client.get_item(
                TableName=self.table, Key={"key": {"S": self.key}}, ConsistentRead=True
            )
        ).get("Item")
        return item["record"]["S"].encode() if item else None

    def swap(self, expected: bytes | None, data: bytes) -> bool:
        condition: dict[str, Any] = {
            "ConditionExpression": "attribute_not_exists(#k)",
            "ExpressionAttributeNames": {"#k": "key"},
        }
        if expected is not None:
            condition = {
                "ConditionExpression": "#r = :expected",
                "ExpressionAttributeNames": {"#r": "record"},
                "ExpressionAttributeValues": {":expected": {"S": expected.decode()}},
            }
        item = {"key": {"S": self.key}, "record": {"S": data.decode()}}
        try:
            self._call(lambda: self.client.put_item(TableName=self.table, Item=item, **condition))
        except _ConditionFailed:
            return False
        return True

    def _call(self, request: Any) -> Any:
        try:
            return request()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise _ConditionFailed from e
            raise KinesisSourceError(f"{self.where}: DynamoDB {self.table}: {e}") from e
        except BotoCoreError as e:
            raise KinesisSourceError(f"{self.where}: cannot reach DynamoDB: {e}") from e


class _ConditionFailed(Exception):
    pass


def ensure_owners_table(client: Any, table: str, timeout: float = 30.0) -> None:
    """Create the side table if missing (on-demand) and wait until it is active."""
    with contextlib.suppress(client.exceptions.ResourceInUseException):
        client.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    deadline = time.monotonic() + timeout
    while client.describe_table(TableName=table)["Table"]["TableStatus"] != "ACTIVE":
        if time.monotonic() > deadline:
            raise KinesisSourceError(f"DynamoDB table {table} did not become active")
        time.sleep(0.2)


def query_owner_leases(
    endpoint: AwsEndpoint,
    app_name: str,
    worker_id: str,
    query: QueryIdentity,
    *,
    lease_seconds: float,
    call_timeout: float = 5.0,
) -> list[OwnerLease]:
    """The app-name and worker-id owner leases of a query (see the module docstring)."""
    client = endpoint.client(
        "dynamodb",
        connect_timeout=call_timeout,
        read_timeout=call_timeout,
        retries={"mode": "standard", "max_attempts": 3},
    )
    table = owners_table(app_name)
    try:
        ensure_owners_table(client, table)
    except (ClientError, BotoCoreError) as e:
        raise KinesisSourceError(f"cannot create the owners table {table}: {e}") from e
    mine = replace(query.record(), lease_seconds=lease_seconds)

    def same_folder(other: OwnerRecord) -> bool:
        return bool(query.checkpoint) and other.scope == query.checkpoint

    app = DynamoDBOwnerCell(client, table, "query", f"Kinesis app {app_name!r}")
    worker = DynamoDBOwnerCell(
        client, table, f"worker#{worker_id}", f"worker id {worker_id!r} of Kinesis app {app_name!r}"
    )
    return [  # the worker id first: its clash is the more specific diagnosis
        OwnerLease(
            worker, mine, error=DuplicateWorkerIdError,
            advice="two live processes with one worker id take each other's leases; give "
            "each process its own worker_id (the default is unique)",
        ),
        OwnerLease(
            app, mine, compatible=same_folder, error=AppInUseError,
            advice="one streaming query per app_name (the lease table mirrors one query's "
            "checkpoint); give this query its own app_name",
        ),
    ]  # fmt: skip
