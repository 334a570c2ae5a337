"""The stream consumer an Enhanced Fan-Out reader subscribes through.

:class:`StreamConsumer` registers (RegisterStreamConsumer) a consumer named after the
application on the stream, or reuses the one that exists, and waits until it is ACTIVE;
its ARN is then what every SubscribeToShard names. Guarantees:

- one registration per :class:`StreamConsumer`, however many shard readers ask at once;
  a consumer registered concurrently by another worker (``ResourceInUseException``) is
  reused, and one being deleted is waited out and registered again;
- never deregistered implicitly: :meth:`StreamConsumer.deregister` (or
  ``streamkit stream deregister-consumer``) is the only way, since other workers of the
  application share the consumer and EFO is charged per consumer-shard-hour;
- outages (unreachable endpoint, 5xx, throttling) are retried for ever with the
  project's backoff; a missing stream and rejected credentials raise typed errors, and a
  consumer that does not become ACTIVE within ``ready_timeout`` raises
  :class:`~streamkit_kinesis.errors.KinesisError` naming the fix.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Protocol

from streamkit_kinesis.client import call_until_done, endpoint_url
from streamkit_kinesis.errors import KinesisError, error_code
from streamkit_kinesis.retry import OUTAGE_BACKOFF, RetryState, Sleep

if TYPE_CHECKING:
    from collections.abc import Callable

    from streamkit_kinesis.client import KinesisApi

READY_TIMEOUT = 120.0
"""How long a new consumer may stay CREATING (AWS: usually a few seconds)."""
POLL_INTERVAL = 0.5
"""Time between DescribeStreamConsumer calls while waiting for ACTIVE."""


def code_of(exc: BaseException) -> str | None:
    """The AWS error code of ``exc`` or of the botocore error it was typed from."""
    cause = exc.__cause__
    return error_code(exc) or (error_code(cause) if cause is not None else None)


class FanoutApi(Protocol):
    """The Enhanced Fan-Out calls of a boto3 Kinesis client (beyond :class:`KinesisApi`)."""

    def register_stream_consumer(self, **kwargs: Any) -> Any: ...

    def describe_stream_consumer(self, **kwargs: Any) -> Any: ...

    def deregister_stream_consumer(self, **kwargs: Any) -> Any: ...

    def subscribe_to_shard(self, **kwargs: Any) -> Any: ...


def fanout_api(client: KinesisApi) -> FanoutApi:
    """``client`` as a :class:`FanoutApi`, refused with a clear message when it has no
    SubscribeToShard (e.g. a test wrapper around polling calls only)."""
    if not callable(getattr(client, "subscribe_to_shard", None)):
        raise KinesisError(
            f"{type(client).__name__} has no subscribe_to_shard: retrieval='fanout' needs a "
            "boto3 Kinesis client (streamkit_kinesis.client.kinesis_client)"
        )
    api: FanoutApi = client  # type: ignore[assignment]
    return api


class StreamConsumer:
    """The registered stream consumer ``name`` of ``stream`` (see the module docstring)."""

    def __init__(
        self,
        client: KinesisApi,
        stream: str,
        name: str,
        *,
        ready_timeout: float = READY_TIMEOUT,
        poll_interval: float = POLL_INTERVAL,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not name:
            raise KinesisError("a stream consumer needs a non-empty name (the app_name)")
        self._client, self._api = client, fanout_api(client)
        self.stream, self.name = stream, name
        self._ready_timeout, self._poll = ready_timeout, poll_interval
        self._sleep, self._clock = sleep, clock
        self._retry = RetryState(OUTAGE_BACKOFF, clock=clock)
        self._url = endpoint_url(client)
        self._arn: asyncio.Future[str] | None = None
        self.registrations = 0
        """RegisterStreamConsumer calls that created the consumer (0 when it was reused)."""

    async def arn(self) -> str:
        """The consumer's ARN once it is ACTIVE (registered on the first call)."""
        if self._arn is None or (self._arn.done() and self._arn.exception() is not None):
            self._arn = asyncio.ensure_future(self._register())
        return await asyncio.shield(self._arn)

    def forget(self) -> None:
        """Look the consumer up again on the next :meth:`arn` (it was found gone)."""
        self._arn = None

    async def deregister(self) -> bool:
        """DeregisterStreamConsumer; False when there is none, or it is already being
        deleted. A consumer still CREATING is waited for first. Subscriptions through it
        end (their readers fail with a typed error): stop the consumers first."""
        stream_arn = await self._stream_arn()
        self._arn = None
        while True:
            described = await self._describe(stream_arn)
            if described is None or described[0] == "DELETING":
                return False
            if described[0] == "ACTIVE":
                try:
                    await self._call(
                        lambda: self._api.deregister_stream_consumer(
                            StreamARN=stream_arn, ConsumerName=self.name
                        )
                    )
                except Exception as exc:
                    if code_of(exc) not in {"ResourceInUseException", "ResourceNotFoundException"}:
                        raise
                    continue  # changed meanwhile: look again
                return True
            await self._sleep(self._poll)

    async def _register(self) -> str:
        stream_arn = await self._stream_arn()
        deadline = self._clock() + self._ready_timeout
        while True:
            described = await self._describe(stream_arn)
            if described is None:
                await self._create(stream_arn)
                continue
            status, arn = described
            if status == "ACTIVE":
                return arn
            if self._clock() > deadline:
                raise KinesisError(
                    f"stream consumer {self.name!r} of {self.stream!r} is still {status} after "
                    f"{self._ready_timeout:.0f} s; check it with DescribeStreamConsumer, or "
                    "deregister it (streamkit stream deregister-consumer) and start again"
                )
            await self._sleep(self._poll)

    async def _describe(self, stream_arn: str) -> tuple[str, str] | None:
        """(status, ARN) of the consumer, None if it does not exist."""
        try:
            out = await self._call(
                lambda: self._api.describe_stream_consumer(
                    StreamARN=stream_arn, ConsumerName=self.name
                )
            )
        except Exception as exc:
            if code_of(exc) == "ResourceNotFoundException":
                return None
            raise
        desc = out["ConsumerDescription"]
        return str(desc["ConsumerStatus"]), str(desc["ConsumerARN"])

    async def _create(self, stream_arn: str) -> None:
        try:
            await self._call(
                lambda: self._api.register_stream_consumer(
                    StreamARN=stream_arn, ConsumerName=self.name
                )
            )
            self.registrations += 1
        except Exception as exc:
            if code_of(exc) != "ResourceInUseException":  # another worker registered it
                raise

    async def _stream_arn(self) -> str:
        out = await self._call(lambda: self._client.describe_stream_summary(StreamName=self.stream))
        return str(out["StreamDescriptionSummary"]["StreamARN"])

    async def _call(self, fn: Callable[[], Any]) -> Any:
        return await call_until_done(
            fn, self._retry, sleep=self._sleep, stream=self.stream, url=self._url
        )
