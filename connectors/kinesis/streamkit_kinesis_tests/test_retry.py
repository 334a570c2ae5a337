"""Backoff with full jitter, throttling classification, bounded connection retries."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from streamkit_kinesis.client import call
from streamkit_kinesis.errors import (
    CredentialsError,
    EndpointUnreachableError,
    StreamNotFoundError,
    classify,
    error_code,
)
from streamkit_kinesis.retry import (
    Backoff,
    Retrier,
    is_throttling,
    is_transient,
)


def client_error(code: str, operation: str = "GetRecords") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"msg {code}"}}, operation)


def test_ceiling_doubles_then_caps() -> None:
    b = Backoff(base=0.1, cap=1.0)
    assert [b.ceiling(a) for a in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert b.ceiling(10_000) == 1.0


def test_full_jitter_scales_the_ceiling_by_the_draw() -> None:
    b = Backoff(base=0.1, cap=10.0)
    assert b.delay(3, rng=lambda: 0.0) == 0.0
    assert b.delay(3, rng=lambda: 0.5) == pytest.approx(0.4)
    assert b.delay(3, rng=lambda: 0.999) < b.ceiling(3)


def test_exhausted_counts_total_tries() -> None:
    assert not Backoff(max_attempts=3).exhausted(2)
    assert Backoff(max_attempts=3).exhausted(3)
    assert not Backoff(max_attempts=None).exhausted(10**9)


async def test_retrier_sleeps_the_drawn_delay() -> None:
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    r = Retrier(Backoff(base=1.0, cap=8.0), sleep=sleep, rng=lambda: 0.25)
    for attempt in range(4):
        await r.wait(attempt)
    assert slept == [0.25, 0.5, 1.0, 2.0]


@pytest.mark.parametrize(
    "code",
    ["ProvisionedThroughputExceededException", "LimitExceededException", "ThrottlingException"],
)
def test_throttling_codes(code: str) -> None:
    assert is_throttling(client_error(code))
    assert is_throttling(code)
    assert not is_transient(code)


def test_other_errors_are_not_throttling() -> None:
    assert not is_throttling(client_error("ExpiredIteratorException"))
    assert not is_throttling(ValueError("x"))
    assert is_transient(client_error("InternalFailure"))


def test_classify_missing_stream_names_it() -> None:
    err = classify(client_error("ResourceNotFoundException", "DescribeStreamSummary"), stream="s1")
    assert isinstance(err, StreamNotFoundError)
    assert err.stream == "s1"
    assert "'s1'" in str(err)
    assert "create" in str(err)


@pytest.mark.parametrize("code", ["UnrecognizedClientException", "InvalidSignatureException"])
def test_classify_rejected_credentials(code: str) -> None:
    assert isinstance(classify(client_error(code)), CredentialsError)


def test_classify_no_credentials() -> None:
    assert isinstance(classify(NoCredentialsError()), CredentialsError)


def test_classify_unreachable_names_the_url() -> None:
    exc = EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
    err = classify(exc, url="http://127.0.0.1:9", attempts=3)
    assert isinstance(err, EndpointUnreachableError)
    assert err.url == "http://127.0.0.1:9"
    assert err.attempts == 3
    assert "STREAMKIT_AWS_ENDPOINT" in str(err)
    assert "LocalStack" in str(err)


def test_classify_leaves_throttling_to_the_caller() -> None:
    assert classify(client_error("ProvisionedThroughputExceededException")) is None
    assert error_code(client_error("X")) == "X"
    assert error_code(ValueError()) is None


async def test_call_retries_connection_errors_a_bounded_number_of_times() -> None:
    slept: list[float] = []
    tries = 0

    async def sleep(s: float) -> None:
        slept.append(s)

    def unreachable() -> int:
        nonlocal tries
        tries += 1
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")

    retrier = Retrier(Backoff(base=0.2, cap=1.0, max_attempts=3), sleep=sleep, rng=lambda: 1.0)
    with pytest.raises(EndpointUnreachableError) as info:
        await call(unreachable, url="http://127.0.0.1:9", retrier=retrier)
    assert tries == 3
    assert slept == pytest.approx([0.2, 0.4])
    assert info.value.attempts == 3


async def test_call_recovers_when_the_endpoint_comes_back() -> None:
    tries = 0

    async def sleep(s: float) -> None:
        return None

    def flaky() -> str:
        nonlocal tries
        tries += 1
        if tries < 3:
            raise EndpointConnectionError(endpoint_url="http://x")
        return "ok"

    retrier = Retrier(Backoff(max_attempts=3), sleep=sleep)
    assert await call(flaky, retrier=retrier) == "ok"


async def test_call_passes_other_errors_through_unchanged() -> None:
    def throttled() -> None:
        raise client_error("ProvisionedThroughputExceededException")

    with pytest.raises(ClientError) as info:
        await call(throttled)
    assert error_code(info.value) == "ProvisionedThroughputExceededException"


async def test_call_raises_typed_missing_stream() -> None:
    def missing() -> None:
        raise client_error("ResourceNotFoundException")

    with pytest.raises(StreamNotFoundError, match="'nope'"):
        await call(missing, stream="nope")
