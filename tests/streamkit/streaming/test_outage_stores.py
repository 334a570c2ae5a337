"""Store outages stall, never corrupt, never kill (issue 12, item 1): the S3 checkpoint
store behind a TCP proxy that is cut (LocalStack), and an owner-lease renewal whose answer
was lost mid-outage."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest

from streamkit.streaming.checkpoint_store import (
    LocalCheckpointStore,
    S3CheckpointStore,
    StoreUnreachableError,
    s3_retryable,
)
from streamkit.streaming.owner import OwnerLease, OwnerLostError, OwnerRecord, StoreCell
from streamkit.testing.proxy import TcpProxy

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path
    from typing import Any

    from streamkit.config import AwsEndpoint


class LostAnswerCell(StoreCell):
    """A real local owner file whose next swap lands but then fails, as a call whose
    connection is cut after the server applied it."""

    lose_next = False

    def swap(self, expected: bytes | None, data: bytes) -> bool:
        done = super().swap(expected, data)
        if self.lose_next:
            self.lose_next = False
            raise StoreUnreachableError("connection cut before the answer came")
        return done


def test_a_renewal_that_landed_without_an_answer_is_adopted_not_a_loss(tmp_path: Path) -> None:
    folder = LocalCheckpointStore(tmp_path)
    cell = LostAnswerCell(folder, "test folder")
    mine = OwnerRecord("q", "token-q", "host", 1, "2025-01-01T00:00:00+00:00", lease_seconds=9)
    lease = OwnerLease(cell, mine)
    lease.acquire()
    cell.lose_next = True
    with pytest.raises(StoreUnreachableError):
        lease.renew()  # landed (heartbeat 1 stored), answer lost
    lease.renew()  # must recognise its own write, not report a takeover
    lease.renew()
    stored = cell.read()
    assert stored is not None
    assert OwnerRecord.from_bytes(stored).heartbeat == 2
    assert OwnerRecord.from_bytes(stored).token == "token-q"
    # a real takeover is still a loss
    intruder = replace(mine, token="token-other", heartbeat=0)
    folder.write_bytes(cell.path, intruder.to_bytes())
    with pytest.raises(OwnerLostError):
        lease.renew()


def test_s3_outage_classification() -> None:
    from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError

    def err(code: str, status: int) -> ClientError:
        response: Any = {
            "Error": {"Code": code, "Message": "m"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        return ClientError(response, "PutObject")

    assert s3_retryable(EndpointConnectionError(endpoint_url="http://x"))
    assert s3_retryable(ConnectionClosedError(endpoint_url="http://x"))
    assert s3_retryable(err("SlowDown", 503))
    assert s3_retryable(err("Whatever", 500))
    assert not s3_retryable(err("AccessDenied", 403))
    assert not s3_retryable(err("NoSuchBucket", 404))
    assert not s3_retryable(ValueError("bug"))


@pytest.fixture
def proxied(localstack_endpoint: AwsEndpoint) -> Iterator[tuple[TcpProxy, AwsEndpoint]]:
    with TcpProxy.to_url(str(localstack_endpoint.url)) as proxy:
        yield proxy, replace(localstack_endpoint, url=proxy.url)


def in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # reported by the test
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def retrying(store: S3CheckpointStore, thread: threading.Thread) -> Callable[[], bool]:
    return lambda: store.consecutive_errors >= 3 or not thread.is_alive()


def wait_for(check: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    end = time.monotonic() + limit
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.integration
@pytest.mark.localstack
def test_s3_store_calls_stall_through_a_cut_and_complete_after(
    proxied: tuple[TcpProxy, AwsEndpoint], localstack_endpoint: AwsEndpoint, bucket: str
) -> None:
    proxy, endpoint = proxied
    url = f"s3://{bucket}/ck"
    store = S3CheckpointStore(url, endpoint, backoff_cap=0.5)
    direct = S3CheckpointStore(url, localstack_endpoint)
    store.write_bytes("offsets/0", b"v0")
    cases: list[tuple[str, Callable[[], object], Callable[[object], bool]]] = [
        ("write", lambda: store.write_bytes("offsets/1", b"v1"),
         lambda out: out is None and direct.read_bytes("offsets/1") == b"v1"),
        ("swap", lambda: store.swap_bytes("owner", None, b"r1"),
         lambda out: out is True and direct.read_bytes("owner") == b"r1"),
        ("list", lambda: store.list("offsets"), lambda out: out == ["0", "1"]),
    ]  # fmt: skip
    for name, call, check in cases:
        proxy.cut()
        thread, out = in_thread(call)
        wait_for(retrying(store, thread), f"{name} retries")
        assert thread.is_alive(), f"{name} ended during the outage: {out}"
        assert store.last_error is not None
        proxy.restore()
        thread.join(60)
        assert not thread.is_alive()
        assert check(out[0]), f"{name}: {out}"
        assert store.consecutive_errors == 0
    assert direct.read_bytes("offsets/0") == b"v0"  # nothing else touched


@pytest.mark.integration
@pytest.mark.localstack
def test_s3_store_still_fails_fast_when_built_against_a_dead_endpoint(
    proxied: tuple[TcpProxy, AwsEndpoint], bucket: str
) -> None:
    proxy, endpoint = proxied
    proxy.cut()
    started = time.monotonic()
    with pytest.raises(StoreUnreachableError, match="cannot reach the S3 endpoint"):
        S3CheckpointStore(f"s3://{bucket}/ck", endpoint)
    assert time.monotonic() - started < 30


class RetriedPuts:
    """The store's real S3 ``put_object``, each conditional call sent twice while
    ``armed``: the first lands and its answer is dropped, the second is what botocore's
    own retry of a lost answer sends, and its answer (a 412 from the server) is returned."""

    def __init__(self, store: S3CheckpointStore) -> None:
        self.put = store._s3.put_object
        self.armed = True
        store._s3.put_object = self

    def __call__(self, **kwargs: Any) -> Any:
        conditional = "IfMatch" in kwargs or "IfNoneMatch" in kwargs
        if self.armed and conditional:
            self.put(**kwargs)  # landed; the answer is lost on the way back
        return self.put(**kwargs)


@pytest.mark.integration
@pytest.mark.localstack
def test_s3_swap_whose_answer_was_lost_and_retried_by_botocore_counts_as_written(
    localstack_endpoint: AwsEndpoint, bucket: str
) -> None:
    """A conditional put that landed but whose answer was lost, retried by botocore and
    refused (412) because of its own write, is a success; another writer's content still
    refuses the swap (a fence would otherwise refuse its own claim and fail the worker)."""
    store = S3CheckpointStore(f"s3://{bucket}/lost-answer", localstack_endpoint)
    direct = S3CheckpointStore(f"s3://{bucket}/lost-answer", localstack_endpoint)
    retried = RetriedPuts(store)
    assert store.swap_bytes("fence", None, b"epoch 1 worker a") is True  # If-None-Match
    assert direct.read_bytes("fence") == b"epoch 1 worker a"
    assert store.swap_bytes("fence", b"epoch 1 worker a", b"epoch 2 worker a") is True  # If-Match
    assert direct.read_bytes("fence") == b"epoch 2 worker a"
    retried.armed = False
    assert direct.swap_bytes("fence", b"epoch 2 worker a", b"epoch 3 worker b") is True
    assert store.swap_bytes("fence", b"epoch 2 worker a", b"epoch 3 worker a") is False
    assert store.swap_bytes("fence", None, b"epoch 4 worker a") is False
    assert direct.read_bytes("fence") == b"epoch 3 worker b"
