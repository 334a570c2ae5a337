"""One member of a fleet: the engine-side entry of ``STREAMKIT_FLEET=1``.

``DataStreamWriter.start()`` calls :func:`start_member` instead of starting the
single-process query when the environment says ``STREAMKIT_FLEET=1`` (``streamkit worker
job.py`` sets it). The member checks, before anything is read, that the fleet can run the
query: the plan (:meth:`~streamkit.fleet.fleet_plan.FleetPlan.of` raises its
:class:`~streamkit.errors.PlanError`), the source (it must offer ``fleet_worker``, as the
Kinesis source of ``streamkit-kinesis`` does), the sink (a file sink, whose tasks write
task-unique file names into one directory) and a checkpoint root; the static tables of
its stream-static joins are the ones the query started with
(:func:`~streamkit.fleet.static_snapshot.verify_static_sides`). The source's connector
then runs the tasks (for Kinesis, :mod:`streamkit_kinesis.fleet.worker`); this module holds
no AWS code.

The handle runs the member on its own thread and event loop, like
:class:`~streamkit.streaming.query.StreamingQuery`: ``stop()``, ``await_termination()``,
``is_active``, ``exception``. SIGTERM and SIGINT (when started from the main thread) stop
it gracefully: the batches in flight finish and are checkpointed, then the leases are
released.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

from streamkit.durations import parse_duration_ns
from streamkit.errors import ConfigError, PlanError

if TYPE_CHECKING:
    from datetime import timedelta
    from types import FrameType

    from streamkit.fleet.fleet_plan import FleetPlan
    from streamkit.plan import Plan
    from streamkit.streaming.api import DataStreamWriter
    from streamkit.streaming.contracts import Sink
    from streamkit.streaming.incremental import OutputMode
    from streamkit.streaming.owner import SwappingStore

ENV_FLEET = "STREAMKIT_FLEET"
"""``1``: ``DataStreamWriter.start()`` starts a fleet member."""
SIGNAL_POLL = 0.5
"""Seconds between two wake-ups of a thread waiting for a member (signal handlers run then)."""
ENV_WORKER_ID = "STREAMKIT_WORKER_ID"
"""This member's worker id (``leaseOwner`` in both lease tables); default ``<host>-<pid>``."""


def fleet_enabled() -> bool:
    """True when the environment asks for fleet mode (``STREAMKIT_FLEET=1``)."""
    return os.environ.get(ENV_FLEET, "") == "1"


def worker_id() -> str:
    """``$STREAMKIT_WORKER_ID``, else ``<hostname>-<pid>``."""
    return os.environ.get(ENV_WORKER_ID) or f"{socket.gethostname()}-{os.getpid()}"


def seconds(value: str | timedelta | float, what: str) -> float:
    """A duration option as seconds (``"30 seconds"``, a timedelta, or a number)."""
    if isinstance(value, int | float):
        out = float(value)
    elif isinstance(value, str):
        out = parse_duration_ns(value) / 1e9
    else:
        out = value.total_seconds()
    if out <= 0:
        raise ConfigError(f"{what} must be a positive duration, got {value!r}")
    return out


@dataclass(frozen=True)
class FleetOptions:
    """The writer's ``.fleet(...)`` options."""

    exchange_shards: int = 4
    """Shards of the exchange stream (fixed for the query's life)."""
    idle_timeout: float = 60.0
    """Seconds a source shard's reader must find nothing new at the shard's tip before it
    declares the shard idle (idle markers on the exchange), after which the shard stops
    holding the fleet watermark back until its next records. Silence alone never makes a
    shard idle: one whose reader is slow or dead holds the watermark. Also how long a new
    lease owner is waited for before its shard's idle marker is believed."""

    def __post_init__(self) -> None:
        if not isinstance(self.exchange_shards, int) or self.exchange_shards < 1:
            raise ConfigError(
                f"exchange_shards must be an integer >= 1, got {self.exchange_shards!r}"
            )
        if self.idle_timeout <= 0:
            raise ConfigError(f"idle_timeout must be > 0, got {self.idle_timeout!r}")


class TaskSinks(Protocol):
    """Builds a task's copy of the query's file sink (:meth:`BatchFileSink.for_task`)."""

    def __call__(self, task: str, *, committed_only: bool = False) -> Sink: ...


@dataclass(frozen=True)
class FleetSpec:
    """Everything a connector needs to run this member's tasks."""

    plan: Plan
    fleet_plan: FleetPlan
    mode: OutputMode
    checkpoint: str
    """The query's checkpoint root (local folder or ``s3://`` prefix)."""
    sink: TaskSinks
    """A task-unique sink: ``sink(task)`` writes files named after ``task``."""
    options: FleetOptions
    worker_id: str
    name: str
    """The query's name (chunk headers carry it)."""
    interval: float
    """Least seconds between two micro-batches of an aggregation task."""


@runtime_checkable
class FleetRun(Protocol):
    """One member's tasks, as a connector runs them."""

    async def run(self) -> None:
        """Run until :meth:`request_stop` (graceful) or a fatal error (raised)."""
        ...

    def request_stop(self) -> None:
        """Begin a graceful stop (safe from the member's event loop)."""
        ...


@runtime_checkable
class FleetSource(Protocol):
    """A stream source that can run as a fleet (the Kinesis source)."""

    def fleet_worker(self, spec: FleetSpec, right: object = None) -> FleetRun:
        """The tasks of one member of the fleet reading this source; ``right``: for a join
        of two streams, the right side's source (this one is the left)."""
        ...


class FleetMember:
    """Handle of a started fleet member (see the module docstring)."""

    def __init__(self, run: FleetRun, name: str) -> None:
        self.name = name
        self._run = run
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._stop_asked = False
        self._thread = threading.Thread(target=self._main, name=f"fleet-{name}", daemon=True)

    def start(self) -> FleetMember:
        """Start the member's tasks in the background."""
        self._thread.start()
        return self

    def request_stop(self) -> None:
        """Begin a graceful stop without waiting (safe in a signal handler)."""
        self._stop_asked = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._run.request_stop)

    def stop(self, timeout: float | None = 60.0) -> None:
        """Stop gracefully: batches in flight finish and are checkpointed, leases released."""
        self.request_stop()
        self._thread.join(timeout)

    def await_termination(self, timeout: float | None = None) -> bool:
        """Wait for the member to end; re-raises its error. False if still running.

        Waits in slices of :data:`SIGNAL_POLL` seconds: Python runs a signal handler only
        in the main thread, and a signal that the kernel delivered to another thread (any
        of the member's) does not wake a main thread blocked in an untimed wait, so a
        SIGTERM could otherwise wait for ever."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = (
                SIGNAL_POLL if deadline is None else min(SIGNAL_POLL, deadline - time.monotonic())
            )
            finished = self._done.wait(max(left, 0.0))
            if finished or (deadline is not None and time.monotonic() >= deadline):
                break
        if finished and self._error is not None:
            raise self._error
        return finished

    @property
    def is_active(self) -> bool:
        """True while the member runs."""
        return self._thread.is_alive()

    @property
    def exception(self) -> BaseException | None:
        """The error that stopped the member, if any."""
        return self._error

    def _main(self) -> None:
        async def body() -> None:
            self._loop = asyncio.get_running_loop()
            if self._stop_asked:
                self._run.request_stop()
            await self._run.run()

        try:
            asyncio.run(body())
        except BaseException as e:  # stored and re-raised to the caller
            self._error = e
        finally:
            self._done.set()

    def __repr__(self) -> str:
        state = "active" if self.is_active else "stopped"
        return f"<FleetMember {self.name} {state}>"


def start_member(writer: DataStreamWriter, options: FleetOptions | None = None) -> FleetMember:
    """Check that the fleet can run ``writer``'s query (refusing it with what to do), then
    start this process's member of the fleet and return its handle."""
    from streamkit.fleet.fleet_plan import FleetPlan

    parts = writer.fleet_parts()
    fleet_plan = FleetPlan.of(parts.plan, parts.mode)  # a PlanError names what cannot run
    source: object = parts.source
    right: object = None
    if fleet_plan.joined is not None:
        source, right = _join_sides(source)
    if not isinstance(source, FleetSource):
        described = getattr(source, "describe", lambda: type(source).__name__)()
        raise PlanError(
            f"fleet mode ({ENV_FLEET}=1) runs queries that read a Kinesis stream, but this "
            f"one reads {described}. Read the stream with sk.read_stream.kinesis(...), or "
            f"unset {ENV_FLEET} (run `streamkit run`, not `streamkit worker`) to run the "
            "query in one process"
        )
    if parts.checkpoint is None:
        raise PlanError(
            "a fleet needs a checkpoint root shared by its workers: set "
            ".checkpoint(path) (an s3:// prefix for workers on several machines)"
        )
    probe = parts.sink_factory()
    if not callable(getattr(probe, "for_task", None)):
        raise PlanError(
            f"a fleet writes to a file sink that every task can share ({type(probe).__name__} "
            "cannot): use .parquet(path) or .json(path) on a path all workers reach"
        )
    factory = parts.sink_factory
    if fleet_plan.static:  # one snapshot for the query's life, checked before any read
        from streamkit.fleet.static_snapshot import verify_static_sides
        from streamkit.streaming.checkpoint_store import open_checkpoint_store

        store = cast("SwappingStore", open_checkpoint_store(parts.checkpoint))
        verify_static_sides(fleet_plan.static, store, parts.checkpoint)

    def task_sink(task: str, *, committed_only: bool = False) -> Sink:
        sink: Any = factory()
        out: Sink = sink.for_task(task, committed_only=committed_only)
        return out

    spec = FleetSpec(
        plan=parts.plan,
        fleet_plan=fleet_plan,
        mode=parts.mode,
        checkpoint=parts.checkpoint,
        sink=task_sink,
        options=options or parts.options,
        worker_id=worker_id(),
        name=parts.name,
        interval=parts.interval,
    )
    run = source.fleet_worker(spec) if right is None else source.fleet_worker(spec, right)
    member = FleetMember(run, parts.name)
    _stop_on_signals(member)
    return member.start()


def _join_sides(source: object) -> tuple[object, object]:
    """The left and right sources of a join of two streams (both must be fleet sources:
    the left one runs the member, given the right)."""
    from streamkit.streaming.sources.joined import JoinedSources

    if not isinstance(source, JoinedSources):
        raise PlanError("a join of two streams on a fleet reads two streams (internal error)")
    left, right = source.sides
    for side, s in (("left", left), ("right", right)):
        if not isinstance(s, FleetSource):
            described = getattr(s, "describe", lambda s=s: type(s).__name__)()
            raise PlanError(
                f"fleet mode ({ENV_FLEET}=1) joins two Kinesis streams, but the {side} side "
                f"reads {described}. Read both with sk.read_stream.kinesis(...), or unset "
                f"{ENV_FLEET} (run `streamkit run`) to run the query in one process"
            )
    return left, right


def _stop_on_signals(member: FleetMember) -> None:
    """SIGTERM and SIGINT stop ``member`` gracefully (a second SIGINT interrupts)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and member._stop_asked:
            raise KeyboardInterrupt
        member.request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
