"""A CloudWatch metrics publisher: values are merged in memory and sent by a background
thread with batched ``PutMetricData`` calls, the way the KCL's ``CloudWatchMetricsFactory``
does (``metricsBufferTimeMillis``, ``metricsMaxQueueSize``, ``metricsLevel``,
``metricsEnabledDimensions``).

Needs boto3 (``pip install 'streamkit[cloudwatch]'``). Guarantees:

1. :meth:`CloudWatchPublisher.add` never blocks on the network nor raises for a CloudWatch
   problem: it merges the value under a lock and returns (microseconds).
2. Every ``interval`` seconds, and on :meth:`~CloudWatchPublisher.flush` and
   :meth:`~CloudWatchPublisher.stop`, the merged data are queued and sent in requests of at
   most 1000 data and 1 MB (:func:`~streamkit.metrics.cloudwatch_data.split_requests`).
3. A transient failure (connection refused or reset, timeout, throttling, 5xx) keeps the
   data queued and retries with exponential back-off up to ``max_backoff`` seconds. A
   request CloudWatch rejects as invalid is dropped and counted in ``rejected``.
4. At most ``max_queue_size`` data wait: past that the oldest are dropped and counted in
   ``dropped`` (an outage costs the oldest figures, never memory or the query). Within
   one interval at most ``max_queue_size`` distinct metrics are merged; values of further
   new metrics are dropped and counted too.
5. :meth:`~CloudWatchPublisher.stop` publishes what was added before it, trying for at
   most ``stop_timeout`` seconds (plus a call in flight, at most ``call_timeout``); what
   it could not send is counted in ``dropped``.
6. A value CloudWatch would reject (a metric name over 255 characters) is not added; it
   is counted in ``rejected``, so it cannot spoil the request of 999 good ones. Dimension
   values are cut to 1024 characters.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Self

from streamkit.metrics.cloudwatch_data import (
    ALL_DIMENSIONS,
    MAX_NAME_LENGTH,
    Accumulator,
    MetricKey,
    MetricsLevel,
    filter_dimensions,
    split_requests,
)

if TYPE_CHECKING:
    from types import TracebackType

    from streamkit.config import AwsEndpoint

log = logging.getLogger(__name__)

TRANSIENT_CODES = frozenset({
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "ServiceUnavailable",
    "InternalFailure", "InternalServiceError", "RequestTimeout", "RequestTimeoutException",
})  # fmt: skip
"""``ClientError`` codes retried with back-off (any 5xx and 429 are retried as well)."""


@dataclass(frozen=True)
class PublisherStats:
    """What a :class:`CloudWatchPublisher` did since it was created."""

    calls: int
    """Successful ``PutMetricData`` calls."""
    sent: int
    """Metric data those calls carried."""
    failures: int
    """Calls that failed transiently (their data stayed queued)."""
    rejected: int
    """Data dropped because CloudWatch rejected their request as invalid."""
    dropped: int
    """Data dropped: the oldest past ``max_queue_size``, or unsent when ``stop`` gave up."""
    queued: int
    """Data waiting to be sent now."""


def is_transient(error: Exception) -> bool:
    """True for failures worth retrying: no HTTP answer at all (connection refused or
    reset, timeout), throttling, or a server error. botocore's own validation of a request
    is not: sending it again would fail the same way."""
    if any(c.__name__ == "ParamValidationError" for c in type(error).__mro__):
        return False
    response = getattr(error, "response", None)
    if not isinstance(response, Mapping):
        return True
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code in TRANSIENT_CODES or status >= 500 or status == 429


class CloudWatchPublisher:
    """Publishes metric data to CloudWatch from a background thread (see the module
    docstring for its guarantees). Use as a context manager or call :meth:`start` and
    :meth:`stop`.

    ``endpoint`` (default: :meth:`AwsEndpoint.from_env`) or a ready boto3 ``client``;
    ``level`` and ``enabled_dimensions`` filter as the KCL's ``MetricsConfig`` does
    (``{"ALL"}`` keeps every dimension; ``Operation`` is always kept). ``call_timeout``
    bounds one ``PutMetricData`` call (a timed-out call is retried). ``clock`` (monotonic
    seconds) times back-off and the stop deadline; ``now`` stamps the data.
    """

    def __init__(
        self,
        endpoint: AwsEndpoint | None = None,
        *,
        client: Any = None,
        level: MetricsLevel | str = MetricsLevel.DETAILED,
        enabled_dimensions: Iterable[str] = (ALL_DIMENSIONS,),
        interval: float = 10.0,
        max_queue_size: int = 10_000,
        max_backoff: float = 30.0,
        stop_timeout: float = 10.0,
        call_timeout: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.level = MetricsLevel.of(level)
        self.enabled_dimensions = frozenset(enabled_dimensions)
        self.interval, self.max_queue_size = interval, max_queue_size
        self.max_backoff, self.stop_timeout = max_backoff, stop_timeout
        self.call_timeout = call_timeout
        self._endpoint, self._client = endpoint, client
        self._clock, self._now = clock, now
        self._lock = threading.Condition()
        self._merged = Accumulator()
        self._queue: deque[tuple[str, dict[str, Any]]] = deque()
        self._counts = {"calls": 0, "sent": 0, "failures": 0, "rejected": 0, "dropped": 0}
        self._wake = threading.Event()
        self._stopping = False
        self._started = self._cycles = 0
        self._thread: threading.Thread | None = None

    # -- recording (any thread) ------------------------------------------------------
    def enabled(self, level: MetricsLevel) -> bool:
        """Whether a metric of ``level`` is published (skip computing it otherwise)."""
        return self.level is not MetricsLevel.NONE and level >= self.level

    def add(
        self,
        namespace: str,
        name: str,
        value: float,
        unit: str = "Count",
        *,
        dimensions: Mapping[str, str] | None = None,
        level: MetricsLevel = MetricsLevel.SUMMARY,
        count: int = 1,
    ) -> None:
        """Merge ``count`` samples of ``value`` for metric ``name`` (non-finite values are
        ignored). Cheap and never raises for CloudWatch's sake; sent at the next flush."""
        if not self.enabled(level) or not math.isfinite(value):
            return
        if not 0 < len(name) <= MAX_NAME_LENGTH or not namespace:
            with self._lock:
                self._counts["rejected"] += 1
            return
        dims = filter_dimensions(dimensions or {}, self.enabled_dimensions)
        key = MetricKey(namespace, name, dims, unit)
        with self._lock:
            if len(self._merged) >= self.max_queue_size and key not in self._merged:
                self._counts["dropped"] += 1
                return
            self._merged.add(key, value, count)

    @property
    def client(self) -> Any:
        """The boto3 CloudWatch client (made on first use)."""
        if self._client is None:
            from streamkit.config import AwsEndpoint

            endpoint = self._endpoint or AwsEndpoint.from_env()
            self._client = endpoint.client(
                "cloudwatch",
                retries={"max_attempts": 1, "mode": "standard"},
                connect_timeout=2,
                read_timeout=self.call_timeout,
            )
        return self._client

    def stats(self) -> PublisherStats:
        """A snapshot of the counters."""
        with self._lock:
            return PublisherStats(**self._counts, queued=len(self._queue))

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> Self:
        """Make the client and start the publishing thread (idempotent)."""
        _ = self.client
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="streamkit-cloudwatch", daemon=True
                )
                self._thread.start()
        return self

    def flush(self, timeout: float = 30.0) -> bool:
        """Send what was added before this call now; True once it all reached CloudWatch,
        False if a send failed (the data stay queued and are retried) or on timeout."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                return not self._queue and not len(self._merged)
            target = self._started + 1  # a cycle under way may have drained before this call
            self._wake.set()
            done = self._lock.wait_for(lambda: self._cycles >= target, timeout)
            return done and not self._queue

    def stop(self, timeout: float | None = None) -> None:
        """Publish what was added so far (for at most ``stop_timeout`` seconds) and end the
        thread. Data it cannot send in time are counted in ``dropped``."""
        with self._lock:
            thread, self._stopping = self._thread, True
        self._wake.set()
        if thread is not None:
            thread.join(timeout if timeout is not None else self.stop_timeout + 15)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- the publishing thread -----------------------------------------------------------
    def _run(self) -> None:
        delay, failures = self.interval, 0
        while self._wait(delay):
            sent = self._cycle()
            failures = 0 if sent else failures + 1
            delay = self.interval if sent else min(self.max_backoff, 0.5 * 2 ** (failures - 1))
        self._final()

    def _wait(self, delay: float) -> bool:
        """Sleep ``delay`` seconds or until woken; False once stopping."""
        self._wake.wait(delay)
        self._wake.clear()
        return not self._stopping

    def _cycle(self) -> bool:
        """Drain and send once; False when a send failed (or anything else went wrong,
        which is logged: the thread never dies of it)."""
        with self._lock:
            self._started += 1
        try:
            self._drain()
            sent = self._send_queued()
        except Exception:
            log.exception("CloudWatch publisher: unexpected error, retrying later")
            sent = False
        with self._lock:
            self._cycles += 1
            self._lock.notify_all()
        return sent

    def _final(self) -> None:
        """Send everything left until it is out or ``stop_timeout`` is spent."""
        deadline, failures = self._clock() + self.stop_timeout, 0
        while not self._cycle():
            failures += 1
            pause = min(self.max_backoff, 0.25 * 2 ** (failures - 1))
            if self._clock() + pause >= deadline:
                break
            threading.Event().wait(pause)
        with self._lock:
            if self._queue:
                log.warning("CloudWatch: %d metric data not sent before stop", len(self._queue))
                self._counts["dropped"] += len(self._queue)
                self._queue.clear()
            self._started += 1
            self._cycles += 1
            self._lock.notify_all()

    def _drain(self) -> None:
        """Move the merged data to the send queue; drop the oldest past the bound."""
        with self._lock:
            self._queue.extend(self._merged.drain(self._now()))
            excess = len(self._queue) - self.max_queue_size
            for _ in range(max(excess, 0)):
                self._queue.popleft()
            self._counts["dropped"] += max(excess, 0)

    def _send_queued(self) -> bool:
        """Send the queue front to back; False at the first transient failure."""
        while True:
            with self._lock:
                request = next(split_requests(self._queue), None)
            if request is None:
                return True
            namespace, data = request
            try:
                self.client.put_metric_data(Namespace=namespace, MetricData=data)
            except Exception as e:
                if is_transient(e):
                    log.info("CloudWatch: PutMetricData failed, retrying later: %s", e)
                    with self._lock:
                        self._counts["failures"] += 1
                    return False
                log.warning("CloudWatch rejected %d metric data: %s", len(data), e)
                self._done(len(data), "rejected")
            else:
                self._done(len(data), "sent")

    def _done(self, n: int, outcome: str) -> None:
        with self._lock:
            for _ in range(n):
                self._queue.popleft()
            self._counts[outcome] += n
            self._counts["calls"] += outcome == "sent"
