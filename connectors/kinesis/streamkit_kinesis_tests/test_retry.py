"""Backoff with full jitter, throttling classification, bounded connection retries."""

from __future__ import annotations

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from streamkit_kinesis.client import call, call_until_done
from streamkit_kinesis.errors import (
    CredentialsError,
    EndpointUnreachableError,
    InvalidRequestError,
    ShardNotFoundError,
    StreamNotFoundError,
    classify,
    error_code,
)
from streamkit_kinesis.retry import (
    Backoff,
    Health,
    Retrier,
    RetryState,
    is_retryable,
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


# -- retry for ever (issue 12, item 1) ----------------------------------------------------


def server_error(status: int, code: str = "InternalFailure") -> ClientError:
    meta = {"HTTPStatusCode": status}
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": meta},  # type: ignore[typeddict-item]
        "GetRecords",
    )


def test_retryable_is_the_outage_rule() -> None:
    outage = [
        EndpointConnectionError(endpoint_url="http://x"),
        ConnectionClosedError(endpoint_url="http://x"),
        ReadTimeoutError(endpoint_url="http://x"),
        client_error("ProvisionedThroughputExceededException"),
        client_error("LimitExceededException"),
        client_error("ServiceUnavailable"),
        server_error(502, "BadGateway"),
        server_error(500, "SomethingNew"),
        EndpointUnreachableError("http://x", 3),
    ]
    fatal = [
        client_error("ResourceNotFoundException"),
        client_error("AccessDeniedException"),
        client_error("ValidationException"),
        client_error("ExpiredIteratorException"),  # re-acquired by the reader, not re-sent
        server_error(400, "InvalidArgumentException"),
        CredentialsError("no keys"),
        ValueError("a bug"),
    ]
    assert [is_retryable(e) for e in outage] == [True] * len(outage)
    assert [is_retryable(e) for e in fatal] == [False] * len(fatal)


def test_resource_not_found_on_a_shard_call_is_a_shard_error() -> None:
    err = classify(client_error("ResourceNotFoundException"), stream="s", shard_id="shard-7")
    assert isinstance(err, ShardNotFoundError)
    assert not isinstance(err, StreamNotFoundError)
    assert (err.stream, err.shard_id) == ("s", "shard-7")
    assert isinstance(
        classify(client_error("ResourceNotFoundException"), stream="s"), StreamNotFoundError
    )
    invalid = classify(client_error("ValidationException"))
    assert isinstance(invalid, InvalidRequestError)
    assert invalid.operation == "GetRecords"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_schedule_doubles_caps_and_restarts_after_a_success() -> None:
    clock = Clock()
    draws = iter([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.25, 1.0])
    state = RetryState(
        Backoff(base=0.5, cap=3.0, max_attempts=None), rng=lambda: next(draws), clock=clock
    )
    assert state.health() == Health("reading", 0, None, None)
    delays = []
    for n in range(6):
        clock.now = 100.0 + n
        delays.append(state.failed(EndpointConnectionError(endpoint_url="http://x")))
    # ceilings 0.5, 1, 2, then capped at 3; the draw was 1.0 (the top of the range)
    assert delays == pytest.approx([0.5, 1.0, 2.0, 3.0, 3.0, 3.0])
    health = state.health()
    assert (health.state, health.consecutive_errors, health.backing_off_since) == (
        "backing off",
        6,
        100.0,
    )
    assert health.last_error is not None
    assert "EndpointConnectionError" in health.last_error
    state.succeeded()
    assert state.health().state == "reading"
    assert state.health().consecutive_errors == 0
    assert state.health().last_error is not None  # kept for the record
    # after the success the schedule starts over at base: full jitter draws 0.25 of 0.5
    assert state.failed(client_error("ThrottlingException")) == pytest.approx(0.125)
    assert state.failed("x") == pytest.approx(1.0)


def test_full_jitter_spreads_over_the_whole_range() -> None:
    """Full jitter: each delay is uniform in [0, ceiling), not ceiling/2 + jitter."""
    import random

    rng = random.Random(7)
    state = RetryState(Backoff(base=1.0, cap=8.0, max_attempts=None), rng=rng.random)
    for _ in range(10):
        state.failed("warm-up")  # ceiling now capped at 8
    delays = [state.failed("x") for _ in range(2000)]
    assert min(delays) >= 0.0
    assert max(delays) < 8.0
    assert min(delays) < 0.1
    assert max(delays) > 7.9
    assert sum(delays) / len(delays) == pytest.approx(4.0, abs=0.3)


async def test_call_until_done_rides_out_any_number_of_failures() -> None:
    slept: list[float] = []
    tries = 0
    failures: list[BaseException] = [
        *(EndpointConnectionError(endpoint_url="http://x") for _ in range(40)),
        server_error(503, "ServiceUnavailable"),
        client_error("ProvisionedThroughputExceededException"),
    ]

    async def sleep(s: float) -> None:
        slept.append(s)

    def flaky() -> str:
        nonlocal tries
        tries += 1
        if failures:
            raise failures.pop(0)
        return "ok"

    seen: list[BaseException] = []
    state = RetryState(Backoff(base=0.1, cap=2.0, max_attempts=None), rng=lambda: 1.0)
    assert await call_until_done(flaky, state, sleep=sleep, on_retry=seen.append) == "ok"
    assert tries == 43
    assert len(slept) == len(seen) == 42
    assert max(slept) == pytest.approx(2.0)  # capped
    assert state.health().state == "reading"


async def test_call_until_done_stops_at_once_on_a_fatal_error() -> None:
    async def sleep(s: float) -> None:
        raise AssertionError("a fatal error must not be retried")

    def gone() -> None:
        raise client_error("ResourceNotFoundException")

    def denied() -> None:
        raise client_error("AccessDeniedException")

    state = RetryState()
    with pytest.raises(ShardNotFoundError):
        await call_until_done(gone, state, sleep=sleep, stream="s", shard_id="shard-1")
    with pytest.raises(StreamNotFoundError):
        await call_until_done(gone, state, sleep=sleep, stream="s")
    with pytest.raises(CredentialsError):
        await call_until_done(denied, state, sleep=sleep)
    assert state.health().consecutive_errors == 0
