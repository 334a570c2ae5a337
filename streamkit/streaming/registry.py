"""The registry of connector sources and sinks: how ``sk.read_stream.kinesis(...)`` finds a
connector that the engine does not import.

A connector distribution declares an entry point in the group ``streamkit.connectors``
whose target is a ``register(registry)`` function; it calls :meth:`Registry.add_source` /
:meth:`Registry.add_sink` with a name and a factory. Entry points are loaded the first time
a name is missing, so ``import streamkit`` imports no connector. A connector can also be
registered by hand (tests, a connector that is not installed as a distribution)::

    from streamkit.streaming.registry import registry
    registry.add_source("sqs", make_sqs_source)
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

from streamkit.errors import MissingDependencyError, PlanError

if TYPE_CHECKING:
    from streamkit.streaming.contracts import Sink, StreamSource

GROUP = "streamkit.connectors"
"""Entry-point group of connector distributions."""

KNOWN = {"kinesis": "kinesis", "kafka": "kafka"}
"""Connector name -> extra of ``streamkit`` that installs it (for the error message)."""


class SourceFactory(Protocol):
    """Builds a stream source from the arguments of ``sk.read_stream.<name>(...)``."""

    def __call__(self, *args: Any, **kwargs: Any) -> StreamSource: ...


class SinkFactory(Protocol):
    """Builds a sink from the arguments of ``df.write_stream.<name>(...)``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Sink: ...


class Registry:
    """Named source and sink factories; entry points of :data:`GROUP` load on first miss."""

    def __init__(self) -> None:
        self._sources: dict[str, SourceFactory] = {}
        self._sinks: dict[str, SinkFactory] = {}
        self._loaded = False

    def add_source(self, name: str, factory: SourceFactory) -> None:
        """Register (or replace) the source factory called ``name``."""
        self._sources[name] = factory

    def add_sink(self, name: str, factory: SinkFactory) -> None:
        """Register (or replace) the sink factory called ``name``."""
        self._sinks[name] = factory

    def source(self, name: str) -> SourceFactory:
        """The source factory ``name``; raises if no installed connector provides it."""
        if name not in self._sources:
            self._load()
        if name not in self._sources:
            raise self._missing("source", name)
        return self._sources[name]

    def sink(self, name: str) -> SinkFactory:
        """The sink factory ``name``; raises if no installed connector provides it."""
        if name not in self._sinks:
            self._load()
        if name not in self._sinks:
            raise self._missing("sink", name)
        return self._sinks[name]

    def names(self) -> tuple[list[str], list[str]]:
        """Registered source and sink names (after loading every entry point)."""
        self._load()
        return sorted(self._sources), sorted(self._sinks)

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for ep in entry_points(group=GROUP):
            ep.load()(self)

    def _missing(self, kind: str, name: str) -> Exception:
        if name in KNOWN:
            return MissingDependencyError(f"streamkit-{name}", KNOWN[name])
        sources, sinks = self._sources, self._sinks
        have = ", ".join(sorted(sources if kind == "source" else sinks)) or "(none)"
        return PlanError(
            f"no connector provides a {kind} called {name!r}; installed: {have}. Install the "
            f"connector's distribution or register it with streamkit.streaming.registry"
        )


registry = Registry()
"""The process-wide registry used by ``sk.read_stream`` and ``df.write_stream``."""
