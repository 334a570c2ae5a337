"""Test helpers for lease code: a controllable clock and failure injection around real stores.

Failures are injected the way KCL's ``ExceptionThrowingLeaseRefresher`` does it: a wrapper
around a *real* store (or a real boto3 client) raises on chosen calls and otherwise
delegates, so everything that is not injected still goes over the wire.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from streamkit.config import AwsEndpoint
    from streamkit_kinesis.leases.dynamodb import DynamoDBLeaseStore
    from streamkit_kinesis.leases.memory import InMemoryLeaseStore
    from streamkit_kinesis.leases.model import Lease
    from streamkit_kinesis.leases.store import LeaseStore
    from streamkit_kinesis.types import ExtendedSequenceNumber


class FakeClock:
    """A monotonic clock that moves only when told to (``clock=FakeClock()``)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        """Current reading."""

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        if seconds < 0:
            raise ValueError("a monotonic clock never goes back")
        self.now += seconds


class _Injector:
    def __init__(self) -> None:
        self._plans: dict[str, list[Callable[[], BaseException]]] = {}
        self.raised: dict[str, int] = {}
        """How many injected errors were raised, by operation."""

    def inject(self, operation: str, error: Callable[[], BaseException], times: int = 1) -> None:
        self._plans.setdefault(operation, []).extend([error] * times)

    def clear(self, operation: str | None = None) -> None:
        if operation is None:
            self._plans.clear()
        else:
            self._plans.pop(operation, None)

    def check(self, operation: str) -> None:
        plan = self._plans.get(operation)
        if plan:
            self.raised[operation] = self.raised.get(operation, 0) + 1
            raise plan.pop(0)()


class ExceptionThrowingLeaseStore:
    """Wraps a real :class:`~.store.LeaseStore`; raises injected errors before delegating.

    ``inject("renew_lease", lambda: LeaseStoreUnavailableError("..."), times=2)`` makes the
    next two renewals fail without reaching the store; other calls pass through.
    """

    def __init__(self, inner: LeaseStore) -> None:
        self.inner = inner
        self._injector = _Injector()

    @property
    def raised(self) -> dict[str, int]:
        """Injected errors raised so far, by method name."""
        return self._injector.raised

    def inject(self, method: str, error: Callable[[], BaseException], times: int = 1) -> None:
        """Make the next ``times`` calls of ``method`` raise ``error()``."""
        if not hasattr(self.inner, method):
            raise AttributeError(f"lease stores have no method {method!r}")
        self._injector.inject(method, error, times)

    def clear(self, method: str | None = None) -> None:
        """Drop pending injections (all, or for one method)."""
        self._injector.clear(method)

    def call_counts(self) -> Mapping[str, int]:
        """The wrapped store's call counts."""
        return self.inner.call_counts()

    async def create_table_if_not_exists(self) -> bool:
        self._injector.check("create_table_if_not_exists")
        return await self.inner.create_table_if_not_exists()

    async def list_leases(self) -> list[Lease]:
        self._injector.check("list_leases")
        return await self.inner.list_leases()

    async def get_lease(self, lease_key: str) -> Lease | None:
        self._injector.check("get_lease")
        return await self.inner.get_lease(lease_key)

    async def create_lease_if_not_exists(self, lease: Lease) -> Lease:
        self._injector.check("create_lease_if_not_exists")
        return await self.inner.create_lease_if_not_exists(lease)

    async def renew_lease(self, lease: Lease) -> Lease:
        self._injector.check("renew_lease")
        return await self.inner.renew_lease(lease)

    async def take_lease(self, lease: Lease, owner: str) -> Lease:
        self._injector.check("take_lease")
        return await self.inner.take_lease(lease, owner)

    async def release_lease(self, lease: Lease) -> Lease:
        self._injector.check("release_lease")
        return await self.inner.release_lease(lease)

    async def update_checkpoint(self, lease: Lease, checkpoint: ExtendedSequenceNumber) -> Lease:
        self._injector.check("update_checkpoint")
        return await self.inner.update_checkpoint(lease, checkpoint)

    async def prepare_checkpoint(self, lease: Lease, pending: ExtendedSequenceNumber) -> Lease:
        self._injector.check("prepare_checkpoint")
        return await self.inner.prepare_checkpoint(lease, pending)

    async def add_child_shard_ids(self, lease_key: str, child_shard_ids: Iterable[str]) -> Lease:
        self._injector.check("add_child_shard_ids")
        return await self.inner.add_child_shard_ids(lease_key, child_shard_ids)

    async def delete_lease(self, lease_key: str) -> None:
        self._injector.check("delete_lease")
        await self.inner.delete_lease(lease_key)


def client_error(code: str, operation: str, message: str = "injected") -> ClientError:
    """A real botocore ``ClientError`` as DynamoDB would return it."""
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


class ExceptionThrowingClient:
    """Wraps a real boto3 client; chosen methods raise real botocore exceptions.

    ``inject("update_item", "ProvisionedThroughputExceededException", times=3)``; every
    other call goes to the real client. Pass it as ``DynamoDBLeaseStore(..., client=...)``
    (cast to the client type).
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._injector = _Injector()

    @property
    def raised(self) -> dict[str, int]:
        """Injected errors raised so far, by method name."""
        return self._injector.raised

    def inject(self, method: str, code: str, times: int = 1) -> None:
        """Make the next ``times`` calls of ``method`` raise ``ClientError(code)``."""
        operation = "".join(part.title() for part in method.split("_"))
        self._injector.inject(method, lambda: client_error(code, operation), times)

    def inject_error(self, method: str, error: Callable[[], BaseException], times: int = 1) -> None:
        """Make the next ``times`` calls of ``method`` raise ``error()`` (any exception)."""
        self._injector.inject(method, error, times)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._injector.check(name)
            return attr(*args, **kwargs)

        return call


async def new_store(
    backend: str, endpoint: AwsEndpoint | None, prefix: str = "leases"
) -> InMemoryLeaseStore | DynamoDBLeaseStore:
    """A fresh, created lease store: ``memory``, or DynamoDB on ``endpoint`` with a new table
    (call ``delete_table()`` on a DynamoDB store when done)."""
    from streamkit_kinesis.leases.dynamodb import DynamoDBLeaseStore
    from streamkit_kinesis.leases.memory import InMemoryLeaseStore

    if backend == "memory":
        memory = InMemoryLeaseStore()
        await memory.create_table_if_not_exists()
        return memory
    if endpoint is None:
        raise ValueError(f"backend {backend!r} needs an endpoint")
    store = DynamoDBLeaseStore(endpoint, f"{prefix}-{uuid.uuid4().hex[:12]}")
    await store.create_table_if_not_exists()
    return store
