"""Public test helper: a real Kinesis client that fails on purpose, on chosen calls.

:class:`ExceptionThrowingKinesisClient` wraps a REAL boto3 client (talking to LocalStack,
moto, kinesalite or AWS). On the calls named in its plan it raises the same botocore
exception class boto3 raises for that error code (a ``ClientError`` subclass); every
other call goes to the real server. ``fail_entries`` makes chosen PutRecords entries fail
the way Kinesis does: those entries are NOT sent, and the response carries an
``ErrorCode`` for them at their positions, next to the real results of the others.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from typing import Unpack

    from mypy_boto3_kinesis.type_defs import (
        CreateStreamInputTypeDef,
        DeleteStreamInputTypeDef,
        DescribeStreamSummaryInputTypeDef,
        DescribeStreamSummaryOutputTypeDef,
        EmptyResponseMetadataTypeDef,
        GetRecordsInputTypeDef,
        GetRecordsOutputTypeDef,
        GetShardIteratorInputTypeDef,
        GetShardIteratorOutputTypeDef,
        ListShardsInputTypeDef,
        ListShardsOutputTypeDef,
        MergeShardsInputTypeDef,
        PutRecordsInputTypeDef,
        PutRecordsOutputTypeDef,
        PutRecordsRequestEntryTypeDef,
        PutRecordsResultEntryTypeDef,
        SplitShardInputTypeDef,
        UpdateShardCountInputTypeDef,
        UpdateShardCountOutputTypeDef,
    )

    from streamkit_kinesis.client import KinesisApi

EntryFailer = Callable[[int, int, "PutRecordsRequestEntryTypeDef"], str | None]
"""``(call_number, index, entry) -> error code`` (or None to send the entry for real)."""


def operation_name(method: str) -> str:
    """The API operation of a boto3 method name: ``get_records`` -> ``GetRecords``."""
    return "".join(part.capitalize() for part in method.split("_"))


@dataclass(frozen=True)
class InjectedError:
    """Raise error ``code`` on the given 1-based call numbers of one client method."""

    method: str
    """boto3 method name, e.g. ``get_records``, ``get_shard_iterator``, ``put_records``."""
    code: str
    """AWS error code, e.g. ``ExpiredIteratorException``."""
    calls: frozenset[int]
    """Which calls of ``method`` fail (1 = the first call made through the wrapper)."""
    message: str = "injected by ExceptionThrowingKinesisClient"
    """Error message carried by the exception."""


class ExceptionThrowingKinesisClient:
    """A :class:`~streamkit_kinesis.client.KinesisApi` over a real client,
    with planned failures. ``calls`` counts calls per method; ``injected`` lists the
    failures raised as ``(method, call_number, code)``; ``put_records_requests`` keeps the
    entries of every PutRecords call as the caller sent them (failed ones included)."""

    def __init__(
        self,
        inner: KinesisApi,
        errors: Iterable[InjectedError] = (),
        *,
        fail_entries: EntryFailer | None = None,
    ) -> None:
        self._inner = inner
        self._errors = list(errors)
        self._fail_entries = fail_entries
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.injected: list[tuple[str, int, str]] = []
        self.put_records_requests: list[list[PutRecordsRequestEntryTypeDef]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def add(self, error: InjectedError) -> None:
        """Plan one more failure (call numbers count from the wrapper's creation)."""
        self._errors.append(error)

    def _count(self, method: str) -> int:
        with self._lock:
            self.calls[method] += 1
            number = self.calls[method]
            for err in self._errors:
                if err.method == method and number in err.calls:
                    self.injected.append((method, number, err.code))
                    raise self.error(method, err.code, err.message)
        return number

    def error(self, method: str, code: str, message: str) -> ClientError:
        """The exception boto3 raises for ``code`` on ``method`` (modeled class if any)."""
        response: Any = {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }
        operation = operation_name(method)
        factory = getattr(getattr(self._inner, "exceptions", None), "from_code", None)
        cls = factory(code) if callable(factory) else ClientError
        exc: ClientError = cls(response, operation)
        return exc

    def get_records(self, **kwargs: Unpack[GetRecordsInputTypeDef]) -> GetRecordsOutputTypeDef:
        self._count("get_records")
        return self._inner.get_records(**kwargs)

    def get_shard_iterator(
        self, **kwargs: Unpack[GetShardIteratorInputTypeDef]
    ) -> GetShardIteratorOutputTypeDef:
        self._count("get_shard_iterator")
        return self._inner.get_shard_iterator(**kwargs)

    def subscribe_to_shard(self, **kwargs: Any) -> Any:
        """SubscribeToShard (Enhanced Fan-Out), counted and failed as planned."""
        self._count("subscribe_to_shard")
        return getattr(self._inner, "subscribe_to_shard")(**kwargs)  # noqa: B009

    def list_shards(self, **kwargs: Unpack[ListShardsInputTypeDef]) -> ListShardsOutputTypeDef:
        self._count("list_shards")
        return self._inner.list_shards(**kwargs)

    def describe_stream_summary(
        self, **kwargs: Unpack[DescribeStreamSummaryInputTypeDef]
    ) -> DescribeStreamSummaryOutputTypeDef:
        self._count("describe_stream_summary")
        return self._inner.describe_stream_summary(**kwargs)

    def create_stream(
        self, **kwargs: Unpack[CreateStreamInputTypeDef]
    ) -> EmptyResponseMetadataTypeDef:
        self._count("create_stream")
        return self._inner.create_stream(**kwargs)

    def delete_stream(
        self, **kwargs: Unpack[DeleteStreamInputTypeDef]
    ) -> EmptyResponseMetadataTypeDef:
        self._count("delete_stream")
        return self._inner.delete_stream(**kwargs)

    def split_shard(self, **kwargs: Unpack[SplitShardInputTypeDef]) -> EmptyResponseMetadataTypeDef:
        self._count("split_shard")
        return self._inner.split_shard(**kwargs)

    def merge_shards(
        self, **kwargs: Unpack[MergeShardsInputTypeDef]
    ) -> EmptyResponseMetadataTypeDef:
        self._count("merge_shards")
        return self._inner.merge_shards(**kwargs)

    def update_shard_count(
        self, **kwargs: Unpack[UpdateShardCountInputTypeDef]
    ) -> UpdateShardCountOutputTypeDef:
        self._count("update_shard_count")
        return self._inner.update_shard_count(**kwargs)

    def put_records(self, **kwargs: Unpack[PutRecordsInputTypeDef]) -> PutRecordsOutputTypeDef:
        entries = list(kwargs["Records"])
        with self._lock:
            self.put_records_requests.append(entries)
        number = self._count("put_records")
        codes = [self._entry_code(number, i, e) for i, e in enumerate(entries)]
        send = [e for e, code in zip(entries, codes, strict=True) if code is None]
        results: list[PutRecordsResultEntryTypeDef] = []
        if send:
            request = kwargs.copy()
            request["Records"] = send
            real = self._inner.put_records(**request)
            results = list(real["Records"])
        merged: list[PutRecordsResultEntryTypeDef] = []
        real_results = iter(results)
        for code in codes:
            if code is None:
                merged.append(next(real_results))
            else:
                merged.append({"ErrorCode": code, "ErrorMessage": "injected entry failure"})
        failed = sum(1 for r in merged if r.get("ErrorCode"))
        return {
            "FailedRecordCount": failed,
            "Records": merged,
            "EncryptionType": "NONE",
            "ResponseMetadata": {
                "RequestId": "injected",
                "HTTPStatusCode": 200,
                "HTTPHeaders": {},
                "RetryAttempts": 0,
            },
        }

    def _entry_code(
        self, number: int, index: int, entry: PutRecordsRequestEntryTypeDef
    ) -> str | None:
        if self._fail_entries is None:
            return None
        code = self._fail_entries(number, index, entry)
        if code is not None:
            with self._lock:
                self.injected.append(("put_records.entry", number, code))
        return code
