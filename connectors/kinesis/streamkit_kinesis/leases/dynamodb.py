"""The DynamoDB lease store: KCL's lease table, written with conditional updates.

boto3 is synchronous; every request runs in a worker thread (the default executor, or the
store's own one for a :meth:`~DynamoDBLeaseStore.renewal_lane`) and is counted by operation
in :attr:`DynamoDBLeaseStore.calls` (one count per API request; a paged scan counts each
page). Every write carries a ``ConditionExpression`` and returns the item as stored
(``ReturnValues=ALL_NEW``), so the lease a method returns is the table's view.
"""

from __future__ import annotations

import asyncio
import functools
import re
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from streamkit.errors import ConfigError

from . import dynamodb_items as items
from .errors import (
    LeaseConflictError,
    LeaseLostError,
    LeaseNotFoundError,
    LeaseStoreError,
    LeaseStoreUnavailableError,
)
from .memory import conflict_message, describe, lost_message
from .metrics import CallCounter
from .model import LEADER_LEASE_KEY, Lease, check_checkpoint_advance, check_pending_checkpoint

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef, ScanOutputTypeDef

    from streamkit.config import AwsEndpoint
    from streamkit_kinesis.types import ExtendedSequenceNumber

T = TypeVar("T")

LANE_THREADS = 20
"""Threads of a store's renewal lane by default (KCL's ``maxLeaseRenewalThreads``)."""

TRANSIENT_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "LimitExceededException",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionConflictException",
    }
)
"""DynamoDB error codes that mean "try again later"."""


class _ConditionFailed(Exception):
    """A ConditionalCheckFailedException, mapped to a typed error by the caller."""


class _TableState:
    """Whether a store (and its renewal lane) has seen its table ACTIVE, with no call
    since answering that the table does not exist.

    ``lock`` makes concurrent ensures of one store send their calls once; ``generation``
    counts the times the table was known gone (deleted, or answered missing), so an ensure
    that overlapped a deletion does not record the table as ACTIVE."""

    def __init__(self) -> None:
        self.active = False
        self.generation = 0
        self.lock = asyncio.Lock()

    def forget(self) -> None:
        """The table is gone (or may be): the next ensure makes its calls again."""
        self.active = False
        self.generation += 1


def _names(*expressions: str) -> dict[str, str]:
    used = {token for e in expressions for token in re.findall(r"#\w+", e)}
    return {k: v for k, v in items.NAMES.items() if k in used}


def _owner_condition(owner: str | None) -> tuple[str, dict[str, AttributeValueTypeDef]]:
    if owner is None:
        return "attribute_not_exists(#leaseOwner)", {}
    return "#leaseOwner = :owner", {":owner": items.s(owner)}


class DynamoDBLeaseStore:
    """A :class:`~.store.LeaseStore` on a DynamoDB table (AWS, LocalStack, moto, ...).

    ``client`` may be given to wrap a real client (failure injection in tests); otherwise
    one is built from ``endpoint`` with ``call_timeout`` seconds for connect and read, and
    botocore's standard retry mode (3 attempts), so no call can hang past a failover period.
    ``threads`` > 0 gives the store its own thread pool of that size; 0 runs calls on
    asyncio's default executor. The client's HTTP connection pool holds ``max(10,
    threads)`` connections plus :data:`LANE_THREADS` for the renewal lane, which shares it.

    :meth:`create_table_if_not_exists` makes its calls once per store: after it saw the
    table ACTIVE, the next ones return False at once, until a call of this store or its
    renewal lane is answered that the table does not exist (deleted meanwhile: that call
    fails with the "does not exist" error, and the next one creates the table again) or
    :meth:`delete_table` drops it. Concurrent calls make the calls once, and one that
    overlapped a :meth:`delete_table` leaves the table unknown.
    """

    def __init__(
        self,
        endpoint: AwsEndpoint,
        table_name: str,
        *,
        client: DynamoDBClient | None = None,
        call_timeout: float = 5.0,
        threads: int = 0,
        calls: CallCounter | None = None,
        table: _TableState | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.table_name = table_name
        self._table = table or _TableState()
        self.calls = calls or CallCounter()
        """DynamoDB API calls by operation name (``UpdateItem``, ``Scan``, ...)."""
        self._call_timeout = call_timeout
        self._threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self._client: DynamoDBClient = client or endpoint.client(
            "dynamodb",
            connect_timeout=call_timeout,
            read_timeout=call_timeout,
            retries={"mode": "standard", "max_attempts": 3},
            max_pool_connections=max(10, threads) + LANE_THREADS,
        )

    def renewal_lane(self, threads: int = LANE_THREADS) -> DynamoDBLeaseStore:
        """The same table through a dedicated thread pool, sharing :attr:`calls` and this
        store's boto3 client (thread-safe; its connection pool has room for the lane's
        threads besides this store's): renewals sent through it never queue behind
        GetRecords, decoding, engine or sink work on the default executor. An injected
        ``client`` (failure injection in tests) is shared the same way, so injected
        failures reach the lane too. Call :meth:`close` on the lane when done (it re-opens
        on the next call).
        """
        return DynamoDBLeaseStore(
            self.endpoint,
            self.table_name,
            client=self._client,
            call_timeout=self._call_timeout,
            threads=threads,
            calls=self.calls,
            table=self._table,
        )

    def close(self) -> None:
        """Shut down this store's own thread pool, if any (idle threads exit at once)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)

    def call_counts(self) -> Mapping[str, int]:
        """DynamoDB calls made so far, by operation."""
        return self.calls.snapshot()

    def _pool(self) -> ThreadPoolExecutor | None:
        if self._threads > 0 and self._executor is None:
            self._executor = ThreadPoolExecutor(self._threads, f"leases-{self.table_name}")
        return self._executor

    async def _call(self, operation: str, fn: Callable[[], T]) -> T:
        self.calls.record(operation)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool(), fn)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code == "ConditionalCheckFailedException":
                raise _ConditionFailed(code) from e
            raise self._translate(operation, code, e) from e
        except NoCredentialsError as e:
            raise ConfigError(
                f"no AWS credentials for DynamoDB ({operation} on {self.table_name}); set "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or use AwsEndpoint.local(url)"
            ) from e
        except BotoCoreError as e:
            where = self.endpoint.url or f"AWS {self.endpoint.region}"
            raise LeaseStoreUnavailableError(
                f"DynamoDB at {where} did not answer {operation} on {self.table_name}: {e}; "
                "will retry on the next cycle"
            ) from e

    def _translate(self, operation: str, code: str, e: ClientError) -> Exception:
        if code in TRANSIENT_CODES:
            return LeaseStoreUnavailableError(
                f"DynamoDB {operation} on {self.table_name} failed transiently ({code}); "
                "will retry on the next cycle"
            )
        if code == "ResourceNotFoundException":
            self._table.forget()
            return LeaseStoreError(
                f"lease table {self.table_name!r} does not exist at "
                f"{self.endpoint.url or 'AWS'}; call create_table_if_not_exists() first"
            )
        return LeaseStoreError(f"DynamoDB {operation} on {self.table_name} failed: {e}")

    async def create_table_if_not_exists(self, timeout: float = 60.0) -> bool:
        """Create the table (hash key ``leaseKey``, on-demand) and wait until it is ACTIVE;
        no call when this store knows it ACTIVE already (see the class docstring).
        Concurrent calls of one store (and its renewal lane) make the calls once."""
        async with self._table.lock:
            return await self._ensure_table(timeout)

    async def _ensure_table(self, timeout: float) -> bool:
        if self._table.active:
            return False
        generation = self._table.generation
        created = True
        try:
            await self._call(
                "CreateTable",
                lambda: self._client.create_table(
                    TableName=self.table_name,
                    KeySchema=[{"AttributeName": items.KEY, "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": items.KEY, "AttributeType": "S"}],
                    BillingMode="PAY_PER_REQUEST",
                ),
            )
        except LeaseStoreError as e:
            cause = e.__cause__
            if not (isinstance(cause, ClientError) and _code(cause) == "ResourceInUseException"):
                raise
            created = False
        await self._wait_active(timeout)
        # a delete_table (or a "does not exist") meanwhile: the table may be gone again
        self._table.active = self._table.generation == generation
        return created

    async def _wait_active(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            described = await self._call(
                "DescribeTable", lambda: self._client.describe_table(TableName=self.table_name)
            )
            if described["Table"].get("TableStatus") == "ACTIVE":
                return
            if loop.time() > deadline:
                raise LeaseStoreError(
                    f"lease table {self.table_name!r} not ACTIVE after {timeout:.0f}s"
                )
            await asyncio.sleep(0.2)

    async def delete_table(self) -> None:
        """Delete the whole lease table (tests and tooling); no error if it is absent."""
        self._table.forget()
        try:
            await self._call(
                "DeleteTable", lambda: self._client.delete_table(TableName=self.table_name)
            )
        except LeaseStoreError as e:
            cause = e.__cause__
            if not (isinstance(cause, ClientError) and _code(cause) == "ResourceNotFoundException"):
                raise

    async def list_leases(self) -> list[Lease]:
        """All shard leases (eventually consistent scan, every page, as KCL), ordered by
        key; a legacy leader item (:data:`~.model.LEADER_LEASE_KEY`) is left out.

        Half the read units of a consistent scan. A stale item costs nothing in safety:
        every write is conditional on the counter, and a stale counter only delays expiry.
        """
        leases: list[Lease] = []
        start: dict[str, AttributeValueTypeDef] | None = None
        while True:
            page = await self._call("Scan", functools.partial(self._scan_page, start))
            leases.extend(items.from_item(i) for i in page.get("Items", []))
            start = dict(page["LastEvaluatedKey"]) if page.get("LastEvaluatedKey") else None
            if start is None:
                shards = [x for x in leases if x.lease_key != LEADER_LEASE_KEY]
                return sorted(shards, key=lambda lease: lease.lease_key)

    def _scan_page(self, start: dict[str, AttributeValueTypeDef] | None) -> ScanOutputTypeDef:
        if start is None:
            return self._client.scan(TableName=self.table_name)
        return self._client.scan(TableName=self.table_name, ExclusiveStartKey=start)

    async def get_lease(self, lease_key: str) -> Lease | None:
        """The lease (strongly consistent read) or None."""
        got = await self._call(
            "GetItem",
            lambda: self._client.get_item(
                TableName=self.table_name, Key=items.key_of(lease_key), ConsistentRead=True
            ),
        )
        item = got.get("Item")
        return None if item is None else items.from_item(item)

    async def create_lease_if_not_exists(self, lease: Lease) -> Lease:
        """Put the item on ``attribute_not_exists(leaseKey)``; else LeaseConflictError."""
        try:
            await self._call(
                "PutItem",
                lambda: self._client.put_item(
                    TableName=self.table_name,
                    Item=items.to_item(lease),
                    ConditionExpression="attribute_not_exists(#leaseKey)",
                    ExpressionAttributeNames=_names("#leaseKey"),
                ),
            )
        except _ConditionFailed:
            current = await self.get_lease(lease.lease_key)
            raise LeaseConflictError(
                f"lease {lease.lease_key} already exists ({describe(current)})",
                lease.lease_key,
                current,
            ) from None
        return lease

    async def _update(
        self,
        lease_key: str,
        update: str,
        condition: str,
        values: dict[str, AttributeValueTypeDef],
    ) -> Lease:
        """Conditional UpdateItem returning the new lease; raises _ConditionFailed."""
        done = await self._call(
            "UpdateItem",
            lambda: self._client.update_item(
                TableName=self.table_name,
                Key=items.key_of(lease_key),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=_names(update, condition),
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            ),
        )
        return items.from_item(done["Attributes"])

    async def _owned_update(
        self,
        action: str,
        lease: Lease,
        update: str,
        values: dict[str, AttributeValueTypeDef],
        extra_condition: str = "",
    ) -> Lease:
        owner_cond, owner_values = _owner_condition(lease.lease_owner)
        condition = f"#leaseCounter = :counter AND {owner_cond}{extra_condition}"
        try:
            return await self._update(
                lease.lease_key,
                update,
                condition,
                {**values, **owner_values, ":counter": items.n(lease.lease_counter)},
            )
        except _ConditionFailed:
            current = await self.get_lease(lease.lease_key)
            raise LeaseLostError(lost_message(action, lease, current)) from None

    async def renew_lease(self, lease: Lease) -> Lease:
        """Counter + 1 on owner and counter; else LeaseLostError."""
        return await self._owned_update(
            "renew",
            lease,
            "SET #leaseCounter = :next",
            {":next": items.n(lease.lease_counter + 1)},
        )

    async def take_lease(self, lease: Lease, owner: str) -> Lease:
        """Take on counter; else LeaseConflictError."""
        taken = lease.taken_by(owner)
        try:
            return await self._update(
                lease.lease_key,
                "SET #leaseOwner = :owner, #leaseCounter = :next, "
                "#ownerSwitchesSinceCheckpoint = :switches",
                "#leaseCounter = :counter",
                {
                    ":owner": items.s(owner),
                    ":next": items.n(taken.lease_counter),
                    ":switches": items.n(taken.owner_switches_since_checkpoint),
                    ":counter": items.n(lease.lease_counter),
                },
            )
        except _ConditionFailed:
            current = await self.get_lease(lease.lease_key)
            raise LeaseConflictError(
                conflict_message(lease, current), lease.lease_key, current
            ) from None

    async def release_lease(self, lease: Lease) -> Lease:
        """Remove the owner (counter + 1) on owner and counter; else LeaseLostError."""
        return await self._owned_update(
            "release",
            lease,
            "REMOVE #leaseOwner SET #leaseCounter = :next",
            {":next": items.n(lease.lease_counter + 1)},
        )

    async def update_checkpoint(self, lease: Lease, checkpoint: ExtendedSequenceNumber) -> Lease:
        """Checkpoint on owner, counter and stored checkpoint; only forward.

        Like KCL's checkpoint, it also removes a pending (prepared) checkpoint that a KCL
        worker may have left: the final checkpoint supersedes it.
        """
        check_checkpoint_advance(lease.lease_key, lease.checkpoint, checkpoint)
        return await self._owned_update(
            "checkpoint",
            lease,
            "SET #checkpoint = :cp, #checkpointSubSequenceNumber = :sub, "
            "#ownerSwitchesSinceCheckpoint = :zero, #leaseCounter = :next "
            "REMOVE #pendingCheckpoint, #pendingCheckpointSubSequenceNumber, "
            "#pendingCheckpointState",
            {
                ":cp": items.s(checkpoint.sequence_number),
                ":sub": items.n(checkpoint.sub_sequence_number),
                ":zero": items.n(0),
                ":next": items.n(lease.lease_counter + 1),
                ":oldcp": items.s(lease.checkpoint.sequence_number),
                ":oldsub": items.n(lease.checkpoint.sub_sequence_number),
            },
            " AND #checkpoint = :oldcp AND #checkpointSubSequenceNumber = :oldsub",
        )

    async def prepare_checkpoint(self, lease: Lease, pending: ExtendedSequenceNumber) -> Lease:
        """Write ``pendingCheckpoint`` (counter + 1) on owner, counter and stored checkpoint.

        KCL's ``prepareCheckpoint``: the checkpoint and owner switches stay; a KCL
        ``pendingCheckpointState`` is removed (this store prepares no application state).
        """
        check_pending_checkpoint(lease.lease_key, lease.checkpoint, pending)
        return await self._owned_update(
            "prepare a checkpoint on",
            lease,
            "SET #pendingCheckpoint = :pcp, #pendingCheckpointSubSequenceNumber = :psub, "
            "#leaseCounter = :next REMOVE #pendingCheckpointState",
            {
                ":pcp": items.s(pending.sequence_number),
                ":psub": items.n(pending.sub_sequence_number),
                ":next": items.n(lease.lease_counter + 1),
                ":oldcp": items.s(lease.checkpoint.sequence_number),
                ":oldsub": items.n(lease.checkpoint.sub_sequence_number),
            },
            " AND #checkpoint = :oldcp AND #checkpointSubSequenceNumber = :oldsub",
        )

    async def add_child_shard_ids(self, lease_key: str, child_shard_ids: Iterable[str]) -> Lease:
        """``ADD childShardIds`` (set union) on existence; else LeaseNotFoundError."""
        children = sorted(set(child_shard_ids))
        try:
            if not children:
                current = await self.get_lease(lease_key)
                if current is None:
                    raise _ConditionFailed(lease_key)
                return current
            return await self._update(
                lease_key,
                "ADD #childShardIds :children",
                "attribute_exists(#leaseKey)",
                {":children": {"SS": children}},
            )
        except _ConditionFailed:
            raise LeaseNotFoundError(
                f"cannot record children of lease {lease_key}: no such lease"
            ) from None

    async def delete_lease(self, lease_key: str) -> None:
        """Delete the item if present."""
        await self._call(
            "DeleteItem",
            lambda: self._client.delete_item(
                TableName=self.table_name, Key=items.key_of(lease_key)
            ),
        )


def _code(e: ClientError) -> str:
    return e.response.get("Error", {}).get("Code", "")
