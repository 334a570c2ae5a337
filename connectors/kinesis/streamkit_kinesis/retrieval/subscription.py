"""One SubscribeToShard call, read in a thread of its own, its events handed to asyncio.

boto3's SubscribeToShard answer is a blocking HTTP/1.1 event stream. :class:`Subscription`
makes the call and reads the stream in a dedicated daemon thread (not the loop's default
executor, whose few workers the other blocking calls share: a subscription holds its
thread for minutes). Each event's JSON payload is taken raw and parsed into Arrow
columns (:func:`~.columnar.parse_answer`), off botocore's generic parser, and put on an
asyncio queue as one :class:`Item`. The queue is bounded: a slow consumer stops the
thread reading (TCP flow control then slows the server), so memory stays bounded.

Item kinds: ``event`` (a parsed event), ``error`` (the call failed, or the stream broke:
the exception), ``end`` (the server ended the stream) and ``expired`` (``lifetime`` ran
out; checked after each event: servers send one at least every 5 s). After ``error``,
``end`` or ``expired`` nothing follows. :meth:`Subscription.close` closes the socket;
items not yet taken are dropped (the reader resumes from what it delivered).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from streamkit_kinesis.retrieval.columnar import ColumnarRecords, from_parsed, parse_answer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from streamkit_kinesis.retrieval.registration import FanoutApi

QUEUE_DEPTH = 4
"""Events read ahead of the consumer at most."""

ItemKind = Literal["event", "error", "end", "expired"]


@dataclass(frozen=True)
class Item:
    """What the thread hands over: an event, or how the subscription stopped."""

    kind: ItemKind
    event: ColumnarRecords | None = None
    error: BaseException | None = None


class StreamBroken(ConnectionError):
    """The event stream broke while being read (connection reset, response cut short, read
    timeout): a transient fault, resumed by a new subscription."""


class Subscription:
    """One SubscribeToShard of ``shard_id`` from ``position`` (a StartingPosition dict)."""

    def __init__(
        self,
        api: FanoutApi,
        consumer_arn: str,
        shard_id: str,
        position: dict[str, Any],
        *,
        lifetime: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api, self._arn, self._shard, self._position = api, consumer_arn, shard_id, position
        self._lifetime, self._clock = lifetime, clock
        self._loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Item] = asyncio.Queue(QUEUE_DEPTH)
        self._closed = threading.Event()
        self._stream: Any = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"subscribe-{shard_id}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop reading and close the connection (returns at once; idempotent)."""
        self._closed.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        while not self.queue.empty():  # unblock a put waiting for room
            self.queue.get_nowait()

    # -- in the thread ------------------------------------------------------------------

    def _run(self) -> None:
        started = self._clock()
        try:
            out = self._api.subscribe_to_shard(
                ConsumerARN=self._arn, ShardId=self._shard, StartingPosition=self._position
            )
        except Exception as exc:
            self._put(Item("error", error=exc))
            return
        with self._lock:
            self._stream = out["EventStream"]
        if self._closed.is_set():
            self._stream.close()
            return
        try:
            for event in _events(self._stream):
                if not self._put(Item("event", event)):
                    return
                if self._clock() - started >= self._lifetime:
                    self._put(Item("expired"))
                    return
        except Exception as exc:
            self._put(Item("error", error=exc))
            return
        finally:
            with contextlib.suppress(Exception):
                self._stream.close()
        self._put(Item("end"))

    def _put(self, item: Item) -> bool:
        """Hand ``item`` over (waiting for room); False once closed or the loop is gone."""
        while not self._closed.is_set():
            try:
                fut = asyncio.run_coroutine_threadsafe(self.queue.put(item), self._loop)
            except RuntimeError:  # the loop is closed
                return False
            try:
                fut.result(timeout=1.0)
            except TimeoutError:
                fut.cancel()
                continue
            except Exception:
                return False
            return True
        return False


def _events(stream: Any) -> Iterator[ColumnarRecords]:
    """The SubscribeToShardEvent payloads of a botocore EventStream, as columns.

    Raw messages are read from the stream's own message generator (payloads parsed by
    Arrow); an exception message is raised as botocore raises it (an ``EventStreamError``
    with the error code), and a broken connection as :class:`StreamBroken`. A botocore
    without that generator falls back to its parsed events.
    """
    raw = getattr(stream, "_event_generator", None)
    parse = getattr(stream, "_parse_event", None)
    try:
        if raw is None or parse is None:
            for parsed in stream:
                if "SubscribeToShardEvent" in parsed:
                    yield from_parsed(parsed["SubscribeToShardEvent"])
            return
        for message in raw:
            headers = message.headers
            if (
                headers.get(":message-type") == "event"
                and headers.get(":event-type") == "SubscribeToShardEvent"
            ):
                yield parse_answer(bytes(message.payload), event=True)
            elif headers.get(":message-type") != "event":
                parse(message)  # raises the server's error, typed by its code
    except OSError as exc:
        raise StreamBroken(f"subscription stream broke: {exc!r}") from exc
    except Exception as exc:
        if _is_transport_error(exc):
            raise StreamBroken(f"subscription stream broke: {exc!r}") from exc
        raise


def _is_transport_error(exc: BaseException) -> bool:
    """urllib3 / http.client errors of a connection cut or cut short mid-stream."""
    module = type(exc).__module__
    return module.startswith(("urllib3", "http.client"))
