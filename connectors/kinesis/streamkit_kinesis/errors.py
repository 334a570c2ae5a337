"""Typed Kinesis errors, and the one place where botocore exceptions are classified.

Every message says what went wrong and what to do. :func:`classify` turns a botocore
exception into one of these (or returns ``None`` when the caller should handle it, e.g.
throttling), so callers raise one clear error instead of a stack-trace storm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from streamkit.errors import StreamkitError

if TYPE_CHECKING:
    from collections.abc import Sequence

CREDENTIAL_ERROR_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "AccessDeniedException",
    }
)
"""Error codes meaning the credentials were missing, wrong, expired or not allowed."""

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    EndpointConnectionError,  # also covers ConnectionClosedError's siblings
    ConnectTimeoutError,
    ConnectionClosedError,
    ReadTimeoutError,
    BotocoreConnectionError,
    HTTPClientError,  # a connection reset or cut mid-response
)
"""botocore exceptions meaning the endpoint could not be reached (worth a few retries)."""

INVALID_REQUEST_CODES = frozenset(
    {
        "ValidationException",
        "InvalidArgumentException",
        "SerializationException",
        "MissingParameter",
        "InvalidParameterValue",
        "InvalidParameterCombination",
    }
)
"""Error codes meaning the request itself is wrong: retrying cannot help."""


class KinesisError(StreamkitError):
    """Base class of the Kinesis connector's errors."""


class StreamNotFoundError(KinesisError):
    """The stream (or a shard of it) does not exist on this endpoint."""

    def __init__(self, stream: str, detail: str = "") -> None:
        self.stream = stream
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"Kinesis stream {stream!r} not found{extra}; create it with "
            f"`streamkit stream create {stream}` or StreamAdmin.create_stream({stream!r}, shards)"
        )


class ShardNotFoundError(KinesisError):
    """One shard of an existing stream is gone (trimmed after the retention period, or
    never there): GetShardIterator / GetRecords answered ResourceNotFoundException.

    Not retried: for a consumer this is the shard's end (KCL treats it so), not an outage.
    """

    def __init__(self, stream: str, shard_id: str, detail: str = "") -> None:
        self.stream = stream
        self.shard_id = shard_id
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"shard {shard_id} of Kinesis stream {stream!r} not found{extra}; it was trimmed "
            f"after the retention period or deleted by a reshard"
        )


class InvalidRequestError(KinesisError):
    """Kinesis rejected a request as invalid (validation, bad argument): not retried."""

    def __init__(self, operation: str, code: str, detail: str) -> None:
        self.operation = operation
        self.code = code
        super().__init__(f"{operation} rejected as invalid ({code}: {detail})")


class EndpointUnreachableError(KinesisError):
    """The endpoint did not answer after a bounded number of attempts."""

    def __init__(self, url: str | None, attempts: int, cause: str = "") -> None:
        self.url = url
        self.attempts = attempts
        where = url or "the default AWS endpoint"
        why = f": {cause}" if cause else ""
        super().__init__(
            f"cannot reach Kinesis at {where} after {attempts} attempt(s){why}; start LocalStack "
            f"(or the docker compose file in docker/) or set STREAMKIT_AWS_ENDPOINT to a "
            f"reachable endpoint"
        )


class CredentialsError(KinesisError):
    """Credentials are missing or were rejected by the endpoint."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"AWS credentials missing or rejected ({detail}); set AWS_ACCESS_KEY_ID and "
            f"AWS_SECRET_ACCESS_KEY (any value works for LocalStack and moto) or a profile"
        )


class RecordTooLargeError(KinesisError, ValueError):
    """A record (payload plus partition key) exceeds the per-record limit; it was not sent."""

    def __init__(self, size: int, limit: int, partition_key: str) -> None:
        self.size = size
        self.limit = limit
        self.partition_key = partition_key
        super().__init__(
            f"record of {size} bytes (data + partition key {partition_key[:40]!r}) exceeds "
            f"the Kinesis limit of {limit} bytes; split the payload or store it elsewhere "
            f"(e.g. S3) and send a reference"
        )


class InvalidRecordError(KinesisError, ValueError):
    """A record's partition key or explicit hash key is invalid; it was not sent."""


@dataclass(frozen=True)
class FailedRecord:
    """A record the producer gave up on."""

    partition_key: str
    """Partition key of the record."""
    size: int
    """Payload plus partition key, in bytes."""
    error_code: str
    """Last ErrorCode returned for it (e.g. ``ProvisionedThroughputExceededException``)."""
    error_message: str
    """Last ErrorMessage returned for it."""
    attempts: int
    """How many PutRecords calls carried it."""


class PutRecordsFailedError(KinesisError):
    """Some records were not written after the bounded retries; ``failures`` lists them."""

    def __init__(self, stream: str, failures: Sequence[FailedRecord]) -> None:
        self.stream = stream
        self.failures = tuple(failures)
        codes = sorted({f.error_code for f in self.failures})
        super().__init__(
            f"{len(self.failures)} record(s) not written to stream {stream!r} after retries "
            f"(error codes: {', '.join(codes)}); the stream is throttled or failing: add "
            f"shards, slow down, or raise max_attempts"
        )


class ThrottledError(KinesisError):
    """A call stayed throttled through every allowed retry."""

    def __init__(self, operation: str, attempts: int, code: str) -> None:
        self.operation = operation
        self.attempts = attempts
        super().__init__(
            f"{operation} still throttled ({code}) after {attempts} attempt(s); the stream or "
            f"account limit is exceeded: reduce the call rate or add shards"
        )


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ``ClientError`` (``None`` for anything else)."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def error_message(exc: BaseException) -> str:
    """The server's error message of a ``ClientError``, else ``str(exc)``."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Message", "")) or str(exc)
    return str(exc)


def is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` means the endpoint could not be reached (retry a few times)."""
    return isinstance(exc, CONNECTION_ERRORS)


def classify(
    exc: BaseException,
    *,
    stream: str | None = None,
    url: str | None = None,
    attempts: int = 1,
    shard_id: str | None = None,
) -> KinesisError | None:
    """Translate a botocore exception into a typed error, or ``None`` if it is not one of
    missing stream or shard / bad credentials / unreachable endpoint / invalid request (the
    caller decides then). With ``shard_id`` (a call on one shard: GetShardIterator,
    GetRecords) ResourceNotFoundException means that shard is gone:
    :class:`ShardNotFoundError`."""
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return CredentialsError(str(exc))
    if is_connection_error(exc):
        return EndpointUnreachableError(url, attempts, str(exc))
    code = error_code(exc)
    if code == "ResourceNotFoundException":
        if shard_id is not None:
            return ShardNotFoundError(stream or "?", shard_id, error_message(exc))
        return StreamNotFoundError(stream or "?", error_message(exc))
    if code in CREDENTIAL_ERROR_CODES:
        return CredentialsError(f"{code}: {error_message(exc)}")
    if code in INVALID_REQUEST_CODES:
        operation = getattr(exc, "operation_name", None) or "request"
        return InvalidRequestError(str(operation), code, error_message(exc))
    return None


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of a botocore ``ClientError`` (``None`` for anything else)."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None
