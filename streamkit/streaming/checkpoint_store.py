"""Checkpoint stores: atomic small-file storage in a local directory or under an S3 prefix.

Both implement :class:`~streamkit.streaming.contracts.CheckpointStore`. Methods block (local
file system calls, or one boto3 request); call them through ``asyncio.to_thread`` from a loop.

- :class:`LocalCheckpointStore`: a write goes to a temporary file in the target's directory,
  is fsynced, renamed over the target with ``os.replace`` and the directory is fsynced, so a
  reader (or a restart after a crash or power loss) sees the old content or the new one.
- :class:`S3CheckpointStore`: a write is one ``PutObject``, which S3 makes visible atomically;
  S3 reads and listings are strongly consistent (read-after-write, list-after-write) since
  December 2020, so a restart sees every write that returned. Once built, an S3 outage
  (unreachable endpoint, cut connection, 5xx, throttling) stalls a call, retried for ever
  with capped, fully jittered backoff, and never fails it: a query waits for S3 to come
  back instead of dying; a compare-and-swap whose answer was lost is recognised on retry.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

from streamkit.errors import ConfigError, StreamkitError

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint
    from streamkit.streaming.contracts import CheckpointStore

T = TypeVar("T")

log = logging.getLogger(__name__)

S3_RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "OperationAborted",
    }
)
"""S3 error codes that pass by themselves (retried for ever once the store is built)."""

TEMP_PREFIX = "."
"""Temporary files start with this prefix; ``list`` skips them and so do Parquet readers."""


class CheckpointStoreError(StreamkitError):
    """The checkpoint (or sink) location cannot be used."""


class StoreUnreachableError(CheckpointStoreError):
    """The S3 endpoint of a location did not answer."""


class BucketNotFoundError(CheckpointStoreError):
    """The bucket of an ``s3://`` location does not exist."""


class InvalidStorePathError(CheckpointStoreError, ValueError):
    """A relative path is absolute, empty or leaves the store (``..``)."""


def _relative(path: str, *, allow_root: bool = False) -> PurePosixPath:
    rel = PurePosixPath(path)
    if rel.is_absolute() or ".." in rel.parts or (not rel.parts and not allow_root):
        raise InvalidStorePathError(
            f"{path!r} is not a relative path inside the store; use e.g. 'offsets/0'"
        )
    return rel


class LocalCheckpointStore:
    """A checkpoint store in a local directory (created if missing).

    ``write_bytes`` is atomic and durable when it returns (temp file + fsync + ``os.replace``
    + directory fsync). Temporary files left by a crash start with ``.`` and are never listed.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointStoreError(
                f"cannot create checkpoint directory {str(self.root)!r}: {exc}; "
                "choose a writable location"
            ) from exc

    def __repr__(self) -> str:
        return f"LocalCheckpointStore({str(self.root)!r})"

    def _path(self, relative_path: str) -> Path:
        return self.root.joinpath(*_relative(relative_path).parts)

    def write_bytes(self, relative_path: str, data: bytes) -> None:
        """Write ``data`` atomically and durably: readers see the old file or the new one."""
        target = self._path(relative_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(target.parent)

    def read_bytes(self, relative_path: str) -> bytes | None:
        """The content, or None when the file is absent."""
        try:
            return self._path(relative_path).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def swap_bytes(self, relative_path: str, expected: bytes | None, data: bytes) -> bool:
        """Compare-and-swap: write ``data`` (atomically, as ``write_bytes``) only if the
        content is ``expected`` (None: the file is absent); True if written. Exclusive
        between processes of one machine through an ``flock`` on a hidden lock file beside
        the target (not across machines on a network file system: use S3 there)."""
        import fcntl

        target = self._path(relative_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.with_name(f"{TEMP_PREFIX}{target.name}.lock"), "ab") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.read_bytes(relative_path) != expected:
                return False
            self.write_bytes(relative_path, data)
            return True

    def list(self, relative_dir: str) -> list[str]:
        """Sorted names of the files directly under ``relative_dir`` (``""``: the root)."""
        directory = self.root.joinpath(*_relative(relative_dir, allow_root=True).parts)
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(e.name for e in entries if e.is_file() and not e.name.startswith(TEMP_PREFIX))

    def delete(self, relative_path: str) -> None:
        """Remove a file if present (durable when it returns)."""
        target = self._path(relative_path)
        try:
            target.unlink()
        except FileNotFoundError:
            return
        _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> (``bucket``, ``a/b/``); the prefix is ``""`` or ends in ``/``."""
    if not url.startswith("s3://"):
        raise ConfigError(f"{url!r} is not an s3:// URL; use s3://bucket/prefix")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise ConfigError(f"{url!r} has no bucket; use s3://bucket/prefix")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


class S3CheckpointStore:
    """A checkpoint store under ``s3://bucket/prefix`` (the bucket must exist).

    Each write is a single ``PutObject`` (atomic: the old object or the new one). Listing is
    paginated and strongly consistent on S3. The bucket is checked when the store is built,
    so a wrong endpoint or bucket fails at once with :class:`StoreUnreachableError` or
    :class:`BucketNotFoundError`.
    """

    def __init__(
        self,
        url: str,
        endpoint: AwsEndpoint,
        *,
        list_page_size: int = 1000,
        retry_forever: bool = True,
        backoff_cap: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.url = url
        self.list_page_size = list_page_size
        self.endpoint = endpoint
        self.bucket, self.prefix = parse_s3_url(url)
        self._s3: Any = endpoint.client(
            "s3",
            connect_timeout=5,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
        )
        self._call(lambda: self._s3.head_bucket(Bucket=self.bucket))  # fails fast: set-up
        self._forever, self._cap, self._sleep, self._rng = retry_forever, backoff_cap, sleep, rng
        self.consecutive_errors = 0
        """Retryable failures in a row of the call in progress (0 when none failed)."""
        self.last_error: str | None = None
        """The latest retryable failure, if any."""

    def _retrying(self, request: Callable[[int], T]) -> T:
        """``request(attempt)`` until it succeeds; retryable S3 failures (see
        :func:`s3_retryable`) wait ``uniform(0, min(cap, 0.2 * 2**n))`` and try again, for
        ever (``retry_forever``; else raised typed at once). Other errors are raised."""
        attempt = 0
        while True:
            try:
                out = self._call(partial(request, attempt))
            except Exception as exc:
                cause = exc.__cause__ if isinstance(exc, CheckpointStoreError) else exc
                if not (self._forever and cause is not None and s3_retryable(cause)):
                    raise
                self.consecutive_errors += 1
                self.last_error = f"{type(cause).__name__}: {cause}"[:200]
                delay = self._rng() * min(self._cap, 0.2 * 2 ** min(attempt, 30))
                log.warning(
                    "%s unavailable (%d in a row), retrying in %.1f s: %s",
                    self.url, self.consecutive_errors, delay, self.last_error,
                )  # fmt: skip
                self._sleep(delay)
                attempt += 1
                continue
            self.consecutive_errors = 0
            return out

    def __repr__(self) -> str:
        return f"S3CheckpointStore({self.url!r}, endpoint={self.endpoint.url!r})"

    def _key(self, relative_path: str) -> str:
        return self.prefix + str(_relative(relative_path))

    def _call(self, request: Callable[[], T]) -> T:
        """Run one boto3 request, turning connection and bucket errors into typed errors."""
        from botocore.exceptions import (
            ClientError,
            ConnectionError,
            EndpointConnectionError,
            NoCredentialsError,
        )

        try:
            return request()
        except (EndpointConnectionError, ConnectionError) as exc:
            where = self.endpoint.url or "AWS"
            raise StoreUnreachableError(
                f"cannot reach the S3 endpoint {where} for {self.url!r}: {exc}; start the "
                "server (e.g. LocalStack) or pass the right AwsEndpoint / sk.configure(...) "
                "/ STREAMKIT_AWS_ENDPOINT"
            ) from exc
        except NoCredentialsError as exc:
            raise ConfigError(
                f"no AWS credentials for {self.url!r}; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY or pass an AwsEndpoint with keys"
            ) from exc
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchBucket", "404"):
                raise BucketNotFoundError(
                    f"bucket {self.bucket!r} of {self.url!r} does not exist on "
                    f"{self.endpoint.url or 'AWS'}; create it first "
                    f"(aws s3 mb s3://{self.bucket}) or choose another location"
                ) from exc
            raise CheckpointStoreError(f"S3 request on {self.url!r} failed: {exc}") from exc

    def write_bytes(self, relative_path: str, data: bytes) -> None:
        """One ``PutObject``: atomic, and durable when it returns."""
        key = self._key(relative_path)
        self._retrying(lambda _: self._s3.put_object(Bucket=self.bucket, Key=key, Body=data))

    def swap_bytes(self, relative_path: str, expected: bytes | None, data: bytes) -> bool:
        """Compare-and-swap with S3 conditional writes: ``PutObject`` with
        ``If-None-Match: *`` when ``expected`` is None, else ``GetObject``, compare the
        content, and ``PutObject`` with ``If-Match`` its ETag; True if written. Of two
        racing writers exactly one wins (AWS since 2024; LocalStack 4.9.2 enforces both).
        A refused put whose key already holds ``data`` counts as written: it is botocore's
        retry of this very put, which landed but whose answer was lost (the bodies written
        here name their writer, so another writer's bytes are never equal)."""
        key = self._key(relative_path)

        def holds_data() -> bool:
            try:
                body: bytes = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except self._s3.exceptions.NoSuchKey:
                return False
            return body == data

        def swap(attempt: int) -> bool:
            condition: dict[str, str] = {"IfNoneMatch": "*"}
            if expected is not None or attempt:
                try:
                    got = self._s3.get_object(Bucket=self.bucket, Key=key)
                except self._s3.exceptions.NoSuchKey:
                    if expected is not None:
                        return False
                else:
                    body = got["Body"].read()
                    if attempt and body == data:
                        return True  # an earlier try landed; its answer was lost
                    if body != expected:
                        return False
                    condition = {"IfMatch": got["ETag"]}
            try:
                self._s3.put_object(Bucket=self.bucket, Key=key, Body=data, **condition)
            except self._s3.exceptions.ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                    return holds_data()
                raise
            return True

        return self._retrying(swap)

    def read_bytes(self, relative_path: str) -> bytes | None:
        """The object's content, or None when it does not exist."""
        key = self._key(relative_path)

        def get() -> bytes | None:
            try:
                body: bytes = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except self._s3.exceptions.NoSuchKey:
                return None
            return body

        return self._retrying(lambda _: get())

    def list(self, relative_dir: str) -> list[str]:
        """Sorted names of the objects directly under ``relative_dir`` (all pages)."""
        rel = str(_relative(relative_dir, allow_root=True))
        prefix = self.prefix + ("" if rel == "." else f"{rel}/")

        def names() -> list[str]:
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket,
                Prefix=prefix,
                Delimiter="/",
                PaginationConfig={"PageSize": self.list_page_size},
            )
            found = [o["Key"][len(prefix) :] for page in pages for o in page.get("Contents", [])]
            return sorted(n for n in found if n and not n.startswith(TEMP_PREFIX))

        return self._retrying(lambda _: names())

    def delete(self, relative_path: str) -> None:
        """Remove the object if present (S3 deletes are idempotent)."""
        key = self._key(relative_path)
        self._retrying(lambda _: self._s3.delete_object(Bucket=self.bucket, Key=key))


def s3_retryable(exc: BaseException) -> bool:
    """True for an S3 failure that passes by itself: no connection, a cut or timed-out
    one, HTTP 5xx, throttling (:data:`S3_RETRYABLE_CODES`)."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(exc, ConnectionError | HTTPClientError):
        return True
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return code in S3_RETRYABLE_CODES or int(status) >= 500
    return False


def open_checkpoint_store(location: str, endpoint: AwsEndpoint | None = None) -> CheckpointStore:
    """The store for ``location``: ``s3://bucket/prefix`` or a local directory (created).

    S3 locations use ``endpoint``, else :func:`streamkit.config.current_endpoint` (set with
    ``sk.configure`` or ``STREAMKIT_AWS_ENDPOINT``). ``file://`` paths are local.
    """
    if location.startswith("s3://"):
        if endpoint is None:
            from streamkit.config import current_endpoint

            endpoint = current_endpoint()
        return S3CheckpointStore(location, endpoint)
    if location.startswith("file://"):
        location = location[len("file://") :]
    elif "://" in location:
        raise ConfigError(
            f"unsupported checkpoint location {location!r}; use a local path or s3://bucket/prefix"
        )
    return LocalCheckpointStore(Path(location))
